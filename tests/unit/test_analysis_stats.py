"""The one statistics module: intervals and tests against hand and published values, and what one sample is."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from harness.analysis.stats import (Difference, difference, estimate, estimates, mean_ci, mode_samples,
                                    per_device_energy, proportion_ci, proportion_difference, reading_counts,
                                    relative_difference, welch_difference)


def test_mean_ci_by_hand():
    est = mean_ci([1, 2, 3, 4], "devices")
    # sd = 1.2910, sem = 0.6455, t(0.975, 3) = 3.182446
    assert est.mean == 2.5 and est.half_width == pytest.approx(3.182446 * 0.645497, rel=1e-5)
    assert est.method == "95% CI, Student t over 4 devices" and est.n == 4
    assert math.isnan(mean_ci([5.0]).half_width) and mean_ci([]).n == 0
    assert mean_ci([1.0, math.inf, 3.0]).mean == 2.0          # an infinite lifetime is left out


def test_wilson_interval_by_hand():
    wilson = proportion_ci(1, 10)
    # Wilson (1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.959964
    z, n, p = 1.959964, 10, 0.1
    centre, spread = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (wilson.low, wilson.high) == pytest.approx(((centre - spread) / (1 + z * z / n),
                                                       (centre + spread) / (1 + z * z / n)), rel=1e-6)
    assert proportion_ci(0, 10).low == 0.0 and proportion_ci(10, 10).high == 1.0
    assert proportion_ci(0, 10).high == pytest.approx(0.277533, abs=1e-6)   # stays wide with no loss
    assert math.isnan(proportion_ci(0, 0).mean)
    with pytest.raises(ValueError):
        proportion_ci(11, 10)


@pytest.mark.parametrize("counts, low, high", [
    # Newcombe (1998), Stat. Med. 17:873, Table II, method 10 (hybrid score)
    ((56, 70, 48, 80), 0.0524, 0.3339),
    ((9, 10, 3, 10), 0.1705, 0.8090),
    ((5, 56, 0, 29), -0.0381, 0.1926),
    ((0, 10, 0, 20), -0.1611, 0.2775),
])
def test_newcombe_interval_against_the_published_table(counts, low, high):
    found = proportion_difference(*counts)
    assert (found.low, found.high) == pytest.approx((low, high), abs=6e-5)
    assert found.diff == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])


def test_fisher_exact_p_by_hand():
    # 2 of 3 vs 0 of 3: tables as or more extreme, two-sided: C(3,2)C(3,0)/C(6,2) twice = 2 * 3/15
    assert proportion_difference(2, 3, 0, 3).p_value == pytest.approx(0.4)
    assert proportion_difference(0, 180, 0, 180).p_value == pytest.approx(1.0)


def test_welch_by_hand():
    a, b = [1, 2, 3, 4], [2, 3, 4, 5, 9]
    # means 2.5 and 4.6; variances 5/3 and 7.3; se^2 = 5/12 + 7.3/5; Welch-Satterthwaite df
    se2 = 5 / 12 + 7.3 / 5
    df = se2 ** 2 / ((5 / 12) ** 2 / 3 + (7.3 / 5) ** 2 / 4)
    found = welch_difference(a, b, "devices")
    assert found.diff == pytest.approx(-2.1)
    assert found.p_value == pytest.approx(2 * sp.t.sf(2.1 / math.sqrt(se2), df), rel=1e-9)
    half = sp.t.ppf(0.975, df) * math.sqrt(se2)
    assert (found.low, found.high) == pytest.approx((-2.1 - half, -2.1 + half), rel=1e-9)
    assert found.rel_pct == pytest.approx(100 * (2.5 / 4.6 - 1))
    assert found.method == "Welch t over 4 vs 5 devices" and not found.significant


def test_welch_without_enough_data_says_so():
    one = welch_difference([1.0], [2.0, 3.0])
    assert one.diff == -1.5 and math.isnan(one.p_value) and "too few" in one.method and not one.significant
    flat = welch_difference([2.0, 2.0], [2.0, 2.0])
    assert math.isnan(flat.p_value) and "no spread" in flat.method
    assert Difference(1.0, 0.5, 1.5, 0.01, "x").significant


def test_relative_difference():
    assert relative_difference(2.0, 2.5) == pytest.approx(-0.2) and math.isnan(relative_difference(1, 0))


def test_per_device_energy_combines_rows_exactly():
    rows = pd.DataFrame({"device": ["a", "a", "b", "c"], "t_start_s": [0.0, 1800.0, 0.0, 5.0],
                         "t_end_s": [1800.0, 3600.0, 900.0, 5.0], "rdc": [0.01, 0.03, 0.02, 0.5],
                         "energy_j": [1.0, 2.0, 0.5, 0.0], "avg_current_ma": [1.0, 2.0, 1.5, 9.0],
                         "battery_life_days": [100.0, 50.0, math.inf, 10.0]})
    devices = per_device_energy(rows).set_index("device")
    # a: two half hours; lifetime 1 / (0.5/100 + 0.5/50) = 66.67 d, RDC 0.02, 3 J, 1 device-hour
    assert devices.loc["a", "battery_life_days"] == pytest.approx(200 / 3)
    assert devices.loc["a", "rdc"] == pytest.approx(0.02) and devices.loc["a", "energy_j"] == pytest.approx(3.0)
    assert devices.loc["a", "avg_current_ma"] == pytest.approx(1.5) and devices.loc["a", "hours"] == pytest.approx(1.0)
    assert math.isinf(devices.loc["b", "battery_life_days"]) and devices.loc["b", "hours"] == pytest.approx(0.25)
    assert devices.loc["c", "rdc"] == pytest.approx(0.5) and devices.loc["c", "hours"] == 0.0  # zero length
    assert per_device_energy(None).empty


def _messages(rows):
    return pd.DataFrame(rows, columns=["device", "seq", "t_emul", "t_sent", "t_received", "latency_ms",
                                       "received", "queued_s", "error"])


def test_reading_counts_keep_the_kinds_of_loss_apart():
    messages = _messages([
        ["d1", 0, 0.0, 10.0, 10.01, 10.0, 1, 0.0, ""],                            # on time
        ["d1", 1, 60.0, 200.0, 200.02, 20.0, 1, 130.0, ""],                        # late, after the queue
        ["d1", 2, 120.0, 130.0, None, None, 0, 0.0, "publish timed out"],          # lost on the network
        ["d2", 0, 0.0, None, None, None, 0, 0.0, "key step: 503 not enough keys"],  # never published
        ["d2", 1, 60.0, None, None, None, 0, 0.0, "queue overflow: 16 readings"],   # dropped by the queue
    ])
    assert reading_counts(messages) == {"readings": 5, "received": 2, "lost": 3, "lost_network": 1,
                                        "not_published": 1, "dropped_queue_overflow": 1, "delivered_late": 1}
    older = messages.drop(columns=["queued_s", "error"])          # a run before the device queue
    counts = reading_counts(older)
    assert counts["delivered_late"] == 0 and counts["dropped_queue_overflow"] == 0
    assert counts["not_published"] == 2 and counts["lost"] == 3


def test_estimates_and_differences_of_two_sides():
    energy = pd.DataFrame({"device": ["a", "b", "c"], "t_start_s": [0.0] * 3, "t_end_s": [3600.0] * 3,
                           "rdc": [0.01, 0.02, 0.03], "energy_j": [1.0] * 3, "avg_current_ma": [1.0] * 3,
                           "battery_life_days": [100.0] * 3})
    messages = _messages([["a", i, float(i), 1.0, 1.01, 10.0 + i, 1, 0.0, ""] for i in range(5)])
    side = mode_samples(messages, energy)
    base = mode_samples(messages, energy.assign(rdc=[0.02, 0.03, 0.04]))
    found = estimates(side)
    assert found["rdc"].mean == pytest.approx(2.0) and found["rdc"].n == 3          # percent, over devices
    assert estimate(side, "rdc", display_units=False).mean == pytest.approx(0.02)  # the files' fraction
    assert found["latency_ms"].n == 5 and found["loss_pct"].mean == 0.0
    assert "wire_latency_ms" not in found and estimate(mode_samples(messages), "rdc") is None
    rdc = difference(side, base, "rdc")
    assert rdc.diff == pytest.approx(-1.0) and rdc.rel_pct == pytest.approx(-100 / 3)
    assert difference(side, mode_samples(messages), "rdc") is None
    assert side.device_hours == pytest.approx(3.0)
    assert np.isfinite(difference(side, base, "latency_ms").diff)
