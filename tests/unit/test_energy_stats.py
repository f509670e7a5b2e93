"""The energy part of a mode summary: one sample per device over the whole mode, Student-t 95% intervals."""

import math

import pandas as pd
import pytest

from harness.energy.energest import DeviceTimeline
from harness.energy.profile import DeviceProfile
from harness.results import summarize_energy

T_975_DOF_1 = 12.706205  # Student t table, two-sided 95%, 1 degree of freedom


def _rows():
    """Two devices, two full 100 s intervals (1 s / 3 s listening each) and a partial 50 s one, all listening."""
    profile = DeviceProfile.load("fipy")
    rows = []
    for device, listen in (("d1", 1.0), ("d2", 3.0)):
        tl = DeviceTimeline(profile, device, interval_s=100.0)
        for _ in range(2):
            tl.charge("radio_listen", listen)
            tl.sleep_until(tl.now - listen + 100.0)
        tl.charge("radio_listen", 50.0)
        rows += tl.rows + [tl.partial_row()]
    return rows


def test_partial_rows_count_by_their_length():
    summary = summarize_energy(_rows())
    # whole-mode RDC per device: d1 (1 + 1 + 50) / 250 = 0.208, d2 (3 + 3 + 50) / 250 = 0.224
    assert summary["energy_devices"] == 2
    assert summary["device_hours"] == pytest.approx(500 / 3600)
    assert summary["rdc_mean"] == pytest.approx(0.216)
    assert summary["rdc_ci95"] == pytest.approx(T_975_DOF_1 * 0.008, rel=1e-5)     # sd 0.011314 / sqrt(2)
    assert summary["energy_ci_method"] == "95% CI, Student t over 2 devices"


def test_a_table_and_rows_in_memory_give_the_same_summary():
    rows = _rows()
    table = pd.DataFrame([row.as_csv() for row in rows])
    assert summarize_energy(table) == summarize_energy(rows)
    assert summarize_energy([]) == {} and summarize_energy(pd.DataFrame()) == {}


def test_energy_summary_sums_energy_per_device():
    rows = _rows()
    per_device = {}
    for row in rows:
        per_device[row.device] = per_device.get(row.device, 0.0) + row.energy_j
    summary = summarize_energy(rows)
    assert summary["energy_j_mean"] == pytest.approx(sum(per_device.values()) / 2)
    assert math.isfinite(summary["battery_life_days_ci95"]) and summary["battery_life_days_ci95"] > 0
