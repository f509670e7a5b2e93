"""qiot compare: QKD vs DKG (and across runs): n and 95% CI per side, differences with CI and p, paper column."""

from __future__ import annotations

import json
import math
import shutil
from io import StringIO
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as sp

from harness.analysis.cli import COMMANDS, compare
from harness.analysis.compare import COMPARE_COLUMNS, CompareError, compare_runs, headline, render_table
from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION
from harness.analysis.stats import proportion_ci

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"
T_975_DOF_1, T_975_DOF_2 = 12.706205, 4.302653  # Student t tables, two-sided 95%


def _value(frame, label, metric, column="mean"):
    return frame[(frame.label == label) & (frame.metric == metric)][column].iloc[0]


@pytest.fixture()
def run_copy(tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


def _edit_metadata(run: Path, **changes) -> None:
    meta = json.loads((run / "metadata.json").read_text())
    meta.update(changes)
    (run / "metadata.json").write_text(json.dumps(meta))


def test_energy_sample_is_one_device_over_the_mode():
    frame = compare_runs([FIXTURE]).frame
    assert tuple(frame.columns) == COMPARE_COLUMNS and (frame.schema_version == ANALYSIS_SCHEMA_VERSION).all()
    assert set(frame.label) == {"hpn/qkd", "hpn/dkg"} and (frame.baseline == "hpn/dkg").all()
    # RDC per device (two equal-length hourly rows each, %): qkd d1 (2.0+2.2)/2 = 2.1, d2 1.9 -> 2.0;
    # dkg d1 2.6, d2 2.4 -> 2.5. n = 2 devices (not 4 rows), 4 device-hours.
    assert _value(frame, "hpn/qkd", "rdc") == pytest.approx(2.0)
    assert _value(frame, "hpn/dkg", "rdc") == pytest.approx(2.5)
    assert _value(frame, "hpn/qkd", "rdc", "n") == 2
    assert _value(frame, "hpn/qkd", "rdc", "device_hours") == pytest.approx(4.0)
    # sd of (2.1, 1.9) = 0.141421, sem 0.1, t(0.975, 1) = 12.706205
    assert _value(frame, "hpn/qkd", "rdc", "ci95_half") == pytest.approx(T_975_DOF_1 * 0.1, rel=1e-5)
    assert _value(frame, "hpn/qkd", "rdc", "ci_method") == "95% CI, Student t over 2 devices"
    # Battery life per device: duration-weighted harmonic mean, 1 / (0.5/100 + 0.5/90) = 94.7368 (d1),
    # 1 / (0.5/110 + 0.5/100) = 104.7619 (d2); dkg 77.4194 and 82.4242.
    assert _value(frame, "hpn/qkd", "battery_life_days") == pytest.approx((94.736842 + 104.761905) / 2, rel=1e-6)
    assert _value(frame, "hpn/qkd", "battery_life_days", "rel_diff_pct") == pytest.approx(
        100 * ((94.736842 + 104.761905) / (77.419355 + 82.424242) - 1), rel=1e-5)


def test_rdc_difference_is_welch_over_devices():
    frame = compare_runs([FIXTURE]).frame
    # diff -0.5; each side's variance 0.02 over 2 devices: se = sqrt(0.01 + 0.01), Welch df = 2
    se = math.sqrt(0.02)
    assert _value(frame, "hpn/qkd", "rdc", "diff") == pytest.approx(-0.5)
    assert _value(frame, "hpn/qkd", "rdc", "diff_ci95_low") == pytest.approx(-0.5 - T_975_DOF_2 * se, rel=1e-5)
    assert _value(frame, "hpn/qkd", "rdc", "diff_ci95_high") == pytest.approx(-0.5 + T_975_DOF_2 * se, rel=1e-5)
    # t with 2 df has CDF 1/2 + t / (2 sqrt(2 + t^2)): two-sided p = 1 - |t| / sqrt(2 + t^2)
    t = 0.5 / se
    assert _value(frame, "hpn/qkd", "rdc", "p_value") == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)
    assert not _value(frame, "hpn/qkd", "rdc", "significant")
    assert _value(frame, "hpn/qkd", "rdc", "rel_diff_pct") == pytest.approx(-20.0)
    assert _value(frame, "hpn/qkd", "rdc", "test") == "Welch t over 2 vs 2 devices"
    assert math.isnan(_value(frame, "hpn/dkg", "rdc", "diff"))        # the baseline has no difference


def test_latency_over_messages_and_loss_as_a_pooled_proportion():
    frame = compare_runs([FIXTURE]).frame
    # app latency: 10 captured messages at wire+2 ms (sum 167) + d1/5 at 20 ms = 187 / 11
    assert _value(frame, "hpn/qkd", "latency_ms") == pytest.approx(17.0, abs=1e-3)
    assert _value(frame, "hpn/qkd", "latency_ms", "n") == 11
    assert _value(frame, "hpn/dkg", "latency_ms") == pytest.approx(13.0, abs=1e-3)
    # Welch by hand: qkd variance 110/10 over 11, dkg (6 x 12 ms, 6 x 14 ms) variance 12/11 over 12
    var_q, var_d = 11.0 / 11, (12 / 11) / 12
    df = (var_q + var_d) ** 2 / (var_q ** 2 / 10 + var_d ** 2 / 11)
    p = 2 * sp.t.sf(4.0 / math.sqrt(var_q + var_d), df)
    assert _value(frame, "hpn/qkd", "latency_ms", "diff") == pytest.approx(4.0, abs=1e-3)
    assert _value(frame, "hpn/qkd", "latency_ms", "p_value") == pytest.approx(p, rel=1e-3)
    assert _value(frame, "hpn/qkd", "latency_ms", "significant")
    # loss: 1 of 12 vs 0 of 12 readings; Newcombe from the two Wilson intervals, Fisher exact p = 1
    assert _value(frame, "hpn/qkd", "loss_pct") == pytest.approx(100 / 12)
    assert _value(frame, "hpn/qkd", "loss_pct", "n") == 12
    assert _value(frame, "hpn/qkd", "loss_pct", "ci_method") == "95% CI, Wilson score over 12 readings"
    q, d = proportion_ci(1, 12), proportion_ci(0, 12)
    low = q.mean - math.hypot(q.mean - q.low, d.high)
    assert _value(frame, "hpn/qkd", "loss_pct", "diff_ci95_low") == pytest.approx(100 * low, rel=1e-6)
    assert _value(frame, "hpn/qkd", "loss_pct", "diff_ci95_high") == pytest.approx(100 * q.high, rel=1e-6)
    assert _value(frame, "hpn/qkd", "loss_pct", "p_value") == pytest.approx(1.0)
    assert "wire_latency_ms" not in set(frame.metric)        # no wire.csv yet (analysis not run)


def test_paper_column_only_for_qkd_against_dkg():
    frame = compare_runs([FIXTURE]).frame
    assert _value(frame, "hpn/qkd", "rdc", "paper") == "-18%"
    assert _value(frame, "hpn/qkd", "battery_life_days", "paper") == "> +18%"
    assert _value(frame, "hpn/qkd", "loss_pct", "paper") == "insignificantly higher"
    assert "paper.txt" in _value(frame, "hpn/qkd", "rdc", "paper_source")
    assert _value(frame, "hpn/dkg", "rdc", "paper") == ""
    reversed_ = compare_runs([FIXTURE], baseline="hpn/qkd").frame       # DKG relative to QKD: not the paper's
    assert _value(reversed_, "hpn/dkg", "rdc", "paper") == ""


def test_table_shows_n_ci_p_and_marks_not_significant():
    text = render_table(compare_runs([FIXTURE]))
    assert "2 ± 1.271 (n=2)" in text and "8.333 [1.487, 35.39] (n=12)" in text
    rdc_line = next(line for line in text.splitlines() if line.startswith("hpn/qkd rdc"))
    assert "-20.0%" in rdc_line and "0.072 n.s." in rdc_line and "-18%" in rdc_line
    latency_line = next(line for line in text.splitlines() if line.startswith("hpn/qkd latency_ms"))
    assert "n.s." not in latency_line
    assert "Student t over 2 devices" in text and "Welch t" in text and "Newcombe" in text
    assert "2 devices, 4 device-h, 12 readings" in text


def test_runs_of_different_scenarios_are_labelled(run_copy):
    meta = json.loads((run_copy / "metadata.json").read_text())
    meta["scenario"]["scenario"]["name"] = "bcn"
    (run_copy / "metadata.json").write_text(json.dumps(meta))
    comparison = compare_runs([FIXTURE, run_copy], baseline="hpn/qkd")
    frame = comparison.frame
    assert set(frame.label) == {"hpn/qkd", "hpn/dkg", "bcn/qkd", "bcn/dkg"}
    assert _value(frame, "bcn/dkg", "rdc", "rel_diff_pct") == pytest.approx(25.0)
    assert _value(frame, "bcn/qkd", "rdc", "diff") == pytest.approx(0.0)
    assert _value(frame, "bcn/qkd", "rdc", "p_value") == pytest.approx(1.0)   # identical samples
    with pytest.raises(CompareError):
        compare_runs([FIXTURE], baseline="nope/qkd")
    same = compare_runs([FIXTURE, FIXTURE])
    assert len(set(same.frame.label)) == 4            # repeated runs still get distinct labels


def _cli():
    @click.group()
    def group():
        pass
    for command in COMMANDS:
        group.add_command(command)
    return group


def test_compare_cli_formats_carry_a_schema_version(tmp_path):
    runner = CliRunner()
    table = runner.invoke(compare, [str(FIXTURE)])
    assert table.exit_code == 0 and "-20.0%" in table.output and "hpn/dkg" in table.output
    as_csv = runner.invoke(compare, [str(FIXTURE), "--format", "csv"])
    frame = pd.read_csv(StringIO(as_csv.output))
    assert tuple(frame.columns) == COMPARE_COLUMNS and (frame.schema_version == ANALYSIS_SCHEMA_VERSION).all()
    assert len(frame) == 2 * 10          # per side: 4 energy, latency, loss and 4 accounting metrics
    out = tmp_path / "c.json"
    as_json = runner.invoke(_cli(), ["compare", str(FIXTURE), "--format", "json", "-o", str(out)])
    assert as_json.exit_code == 0
    data = json.loads(out.read_text())
    assert data["schema_version"] == ANALYSIS_SCHEMA_VERSION and data["baseline"] == "hpn/dkg"
    assert {r["metric"] for r in data["rows"]} >= {"rdc", "battery_life_days", "latency_ms", "loss_pct"}
    assert data["metrics"]["rdc"]["sample"].startswith("one device over the mode")
    baseline_row = next(r for r in data["rows"] if r["label"] == "hpn/dkg")
    assert baseline_row["p_value"] is None                              # NaN is written as null


@pytest.mark.parametrize("args", [["/nonexistent/run"], ["{tmp}"], [str(FIXTURE), "--baseline", "x/y"]])
def test_compare_cli_errors_are_one_line(tmp_path, args):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(compare, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1


def test_interrupted_run_without_energy_is_compared_and_noted(run_copy):
    _edit_metadata(run_copy, status="interrupted")
    (run_copy / "dkg" / "energy.csv").unlink()
    comparison = compare_runs([run_copy])
    frame = comparison.frame
    assert "rdc" not in set(frame[frame.label == "hpn/dkg"].metric)
    assert math.isnan(_value(frame, "hpn/qkd", "rdc", "diff"))      # nothing to take it against
    assert _value(frame, "hpn/dkg", "latency_ms") == pytest.approx(13.0, abs=1e-3)
    assert any("no energy.csv" in w for w in comparison.warnings)
    result = CliRunner().invoke(compare, [str(run_copy)])
    assert result.exit_code == 0 and "status 'interrupted'" in result.output and "warning:" in result.output


def test_degraded_run_is_marked(run_copy):
    _edit_metadata(run_copy, emulation_health={"status": "degraded", "wake_lag_p95_s": 4.2})
    comparison = compare_runs([run_copy])
    assert set(comparison.frame.emulation) == {"degraded"}
    text = render_table(comparison)
    assert "DEGRADED: hpn/qkd" in text and "DEGRADED: hpn/dkg" in text
    assert any("emulation degraded" in w for w in comparison.warnings)
    clean = compare_runs([FIXTURE])
    assert set(clean.frame.emulation) == {"not measured"} and "DEGRADED" not in render_table(clean)


def test_accounting_rows_appear_when_something_happened(run_copy):
    from harness.results import finalize_mode
    sent = pd.read_csv(run_copy / "dkg" / "sent.csv", dtype={"error": str})
    sent.loc[0, ["t_sent", "acked", "error"]] = [math.nan, 0, "queue overflow: 8 readings queued"]
    sent.loc[1, "queued_s"] = 120.0                       # delivered, after two minutes in the queue
    sent.to_csv(run_copy / "dkg" / "sent.csv", index=False)
    received = pd.read_csv(run_copy / "dkg" / "received.csv")
    received = received[~((received.device == sent.device[0]) & (received.seq == sent.seq[0]))]
    received.to_csv(run_copy / "dkg" / "received.csv", index=False)
    finalize_mode(run_copy / "dkg", "dkg", 2)
    frame = compare_runs([run_copy]).frame
    assert _value(frame, "hpn/dkg", "dropped_overflow_pct") == pytest.approx(100 / 12)
    assert _value(frame, "hpn/dkg", "delivered_late_pct") == pytest.approx(100 / 12)
    assert _value(frame, "hpn/dkg", "lost_network_pct") == 0.0
    assert _value(frame, "hpn/qkd", "lost_network_pct") == pytest.approx(100 / 12)   # d2/4, wireless
    text = render_table(compare_runs([run_copy]))
    assert "dropped_overflow_pct" in text and "not_published_pct" not in text


def test_headline_for_the_end_of_a_run(run_copy):
    text = headline(run_copy)
    for word in ("rdc [%]", "battery_life_days", "latency_ms", "loss_pct", "-18%", "n.s.", "figures: not drawn"):
        assert word in text, word
    assert "energy_j" not in text                    # the headline keeps to the paper's four figures
    assert "paper, Fig. 2d (hpn, 4 dB" in text
    from harness.analysis.plots import plot_run
    plot_run(run_copy)
    assert f"figures: {run_copy / 'figures'}/" in headline(run_copy)
    (run_copy / "dkg" / "messages.csv").unlink()
    broken = headline(run_copy)
    assert broken.startswith("results: no summary table") and len(broken.splitlines()) == 1
