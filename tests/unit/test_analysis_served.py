"""Keys served per refresh period from the relay's fetch log (the emulated Fig. 2d points)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.served import expected_renewals, keys_served, served_lines

RATE, KEY_BITS, PERIOD = 1220.0, 256, 1800.0
PER_PERIOD = RATE * PERIOD / KEY_BITS          # 8,578.1 keys distilled per period at bcn's rate


def fetches(rows):
    return pd.DataFrame(rows, columns=["t_emul", "device", "outcome", "key_id"])


def test_expected_renewals_count_the_buffer_once_and_never_more_than_the_devices():
    assert expected_renewals(1, RATE, KEY_BITS, PERIOD, 3906, 13_000, True) == pytest.approx(3906 + PER_PERIOD)
    assert expected_renewals(2, RATE, KEY_BITS, PERIOD, 3906, 13_000, True) == pytest.approx(PER_PERIOD)
    assert expected_renewals(1, RATE, KEY_BITS, PERIOD, 3906, 13_000, False) == pytest.approx(PER_PERIOD)
    assert expected_renewals(2, 1880.0, KEY_BITS, PERIOD, 3906, 13_000, True) == 13_000  # hpn: all served


def test_fetches_are_counted_per_period_on_the_mode_clock():
    start = 3600.0  # the mode began an hour into the link's clock (its warm-up)
    log = fetches([
        (start - 5.0, "d1", "renewed", "k0"),           # before the mode: not counted
        (start + 10.0, "d1", "renewed", "k1"), (start + 20.0, "d2", "refused", ""),
        (start + 1799.9, "d3", "current", "k3"),
        (start + 1800.0, "d2", "renewed", "k4"), (start + 2000.0, "d1", "renewed", "k5"),
        (start + 2100.0, "d3", "refused", ""), (start + 2160.0, "d3", "refused", ""),  # a retry
        (start + 3600.0, "d3", "renewed", "k6"),        # the mode's end: not counted
    ])
    table = keys_served(log, start, 3600.0, PERIOD, RATE, KEY_BITS, 0, 3, False)
    assert list(table["period"]) == [1, 2] and table["complete"].all()
    first, second = table.iloc[0], table.iloc[1]
    assert (first.renewed, first.refused, first.current, first.fetches, first.devices) == (1, 1, 1, 3, 3)
    assert (first.devices_refused, second.devices_refused) == (1, 1)  # d2, then d3 (refused twice: one device)
    assert (second.renewed, second.refused, second.fetches) == (2, 2, 4)
    assert second.expected_renewed == 3  # three devices: the link could serve them all
    assert second.renewed_vs_expected_pct == pytest.approx(100 * (2 - 3) / 3)


def test_a_period_the_run_does_not_cover_is_partial_and_not_compared():
    log = fetches([(100.0, "d1", "renewed", "k1"), (2000.0, "d1", "refused", "")])
    table = keys_served(log, 0.0, 2700.0, PERIOD, RATE, KEY_BITS, 3906, 13_000, True)
    assert list(table["complete"]) == [True, False] and table.iloc[1]["to_s"] == 2700.0
    assert math.isnan(table.iloc[1]["expected_renewed"]) and math.isnan(table.iloc[1]["renewed_vs_expected_pct"])
    lines = served_lines(table, 7.0)
    assert "period 1 (0-30 min, 7 dB): 1 renewed, 0 devices refused" in lines[0] and "model 12,484" in lines[0]
    assert lines[1].endswith("(period not complete)")


def test_an_unknown_outcome_is_an_error_not_a_silent_zero():
    with pytest.raises(ValueError, match="unknown outcome"):
        keys_served(fetches([(1.0, "d1", "stolen", "")]), 0.0, 1800.0, PERIOD, RATE, KEY_BITS, 0, 1, False)


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"


def test_the_run_analysis_and_fig2d_carry_the_emulated_points(tmp_path, monkeypatch):
    from harness.analysis import plots
    from harness.analysis.analyze import analyze_run

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    meta = json.loads((run / "metadata.json").read_text())
    meta["qkd_clock_epoch"] = 1_000.0
    meta["mode_results"]["qkd"]["clock_epoch"] = 1_010.0   # time scale 1: the mode starts at 10 s
    meta["scenario"]["devices"]["wake_period_s"] = 1800.0   # a capacity experiment: a wake per period
    (run / "metadata.json").write_text(json.dumps(meta))
    (run / "qkd" / "relay.csv").write_text(
        "t_emul,device,outcome,key_id\n20.0,d1,renewed,a\n30.0,d2,renewed,b\n"
        "1830.0,d1,renewed,c\n1840.0,d2,refused,\n")
    report = analyze_run(run)
    served = report["modes"]["qkd"]["keys_served"]
    # The fixture's mode lasts 2 h: four periods, the last two without fetches.
    assert [(p["period"], p["renewed"], p["refused"]) for p in served] == [(1, 2, 0), (2, 1, 1), (3, 0, 0), (4, 0, 0)]
    assert (run / "qkd" / "keys_served.csv").is_file() and "keys_served" not in report["modes"]["dkg"]
    from harness.analysis.compare import headline

    summary = headline(run)  # what `qiot run` prints at its end
    assert "keys served, period 2 (30-60 min, 4 dB): 1 renewed, 1 devices refused (kept their key; 1 refused" in summary
    assert "model 2 (-50.0 %)" in summary  # two devices: the link could have served both

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, stem, formats=plots.FORMATS:
                        figures.__setitem__(Path(stem).name, fig) or [Path(stem).with_suffix(".png")])
    plots.plot_run(run)
    fig = figures["fig2d_capacity"]
    texts = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert "run, period 2: 1 renewed, 1 devices refused" in texts and "period 1:" not in texts  # period 1: the buffer
    assert "run, period 4: 0 renewed, every device due served" in texts
    assert "diamonds: this run" in fig.axes[0].get_title()
    for f in figures.values():
        plots.plt.close(f)


def test_fig2d_shows_no_emulated_points_for_a_run_that_is_not_a_capacity_experiment(tmp_path, monkeypatch):
    """A run whose devices wake every minute renews only the few keys they ask for: no point."""
    from harness.analysis import plots

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    meta = json.loads((run / "metadata.json").read_text())
    meta.update(qkd_clock_epoch=1_000.0)
    meta["mode_results"]["qkd"]["clock_epoch"] = 1_010.0
    (run / "metadata.json").write_text(json.dumps(meta))
    (run / "qkd" / "relay.csv").write_text("t_emul,device,outcome,key_id\n1830.0,d1,renewed,c\n")
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, stem, formats=plots.FORMATS:
                        figures.__setitem__(Path(stem).name, fig) or [Path(stem).with_suffix(".png")])
    plots.plot_run(run)
    assert not [t for t in figures["fig2d_capacity"].axes[0].texts if t.get_text().startswith("run, period")]
    for f in figures.values():
        plots.plt.close(f)
