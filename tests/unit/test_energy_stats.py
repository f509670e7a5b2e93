"""Student-t 95% confidence intervals and the energy part of a mode summary."""

import math

import pytest

from harness.energy.energest import DeviceTimeline
from harness.energy.profile import DeviceProfile
from harness.energy.stats import mean_ci95, summarize_energy, t_quantile


@pytest.mark.parametrize("dof,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622),
                                          (30, 2.0423), (120, 1.9799), (5000, 1.9604)])
def test_t_quantile_matches_tables(dof, expected):
    assert t_quantile(0.95, dof) == pytest.approx(expected, abs=2e-4)


def test_mean_ci95_by_hand():
    mean, half = mean_ci95([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(2.7764 * math.sqrt(2.5) / math.sqrt(5), rel=1e-4)
    assert math.isnan(mean_ci95([4.0])[1])
    with pytest.raises(ValueError):
        mean_ci95([])


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
    assert summary["energy_rows"] == 4
    assert summary["rdc_mean"] == pytest.approx(0.02)
    assert summary["rdc_ci95"] == pytest.approx(t_quantile(0.95, 3) * (0.02 / math.sqrt(3)) / 2, rel=1e-6)
    assert summary["battery_life_days_mean"] > 0
    assert summarize_energy(rows)["energy_rows"] == 6
