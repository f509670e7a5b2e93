"""The energy part of a mode summary: Student-t 95% intervals over full intervals only."""

import math

import pytest

from harness.energy.energest import DeviceTimeline
from harness.energy.profile import DeviceProfile
from harness.energy.stats import summarize_energy
from harness.results import mean_ci95

T_975_DOF_3, T_975_DOF_4 = 3.1824, 2.7764  # Student t tables, two-sided 95%


def test_mean_ci95_by_hand():
    mean, half = mean_ci95([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(T_975_DOF_4 * math.sqrt(2.5) / math.sqrt(5), rel=1e-4)
    assert math.isnan(mean_ci95([4.0])[1])
    assert math.isnan(mean_ci95([])[0])


def test_summarize_energy_leaves_out_partial_intervals():
    profile = DeviceProfile.load("fipy")
    rows = []
    for device, listen in (("d1", 1.0), ("d2", 3.0)):
        tl = DeviceTimeline(profile, device, interval_s=100.0)
        for _ in range(2):
            tl.charge("radio_listen", listen)
            tl.sleep_until(tl.now - listen + 100.0)
        tl.charge("radio_listen", 50.0)  # a partial interval with a very different RDC
        rows += tl.rows + [tl.partial_row()]
    summary = summarize_energy(rows, interval_s=100.0)
    assert summary["energy_samples"] == 4
    assert summary["rdc_mean"] == pytest.approx(0.02)
    assert summary["rdc_ci95"] == pytest.approx(T_975_DOF_3 * (0.02 / math.sqrt(3)) / 2, rel=1e-4)
    assert summarize_energy(rows)["energy_samples"] == 6
    with pytest.raises(ValueError):
        summarize_energy([])
