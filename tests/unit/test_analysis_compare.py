"""qiot compare: QKD vs DKG (and across runs) with means, 95% CIs and relative differences."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from harness.analysis.cli import COMMANDS, compare
from harness.analysis.compare import COMPARE_COLUMNS, CompareError, compare_runs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"


def _value(frame, label, metric, column="mean"):
    return frame[(frame.label == label) & (frame.metric == metric)][column].iloc[0]


def test_qkd_vs_dkg_hand_counted():
    frame = compare_runs([FIXTURE])
    assert tuple(frame.columns) == COMPARE_COLUMNS
    assert set(frame.label) == {"hpn/qkd", "hpn/dkg"} and (frame.baseline == "hpn/dkg").all()
    # RDC samples (energy.csv rows, %): qkd 2.0 2.2 1.8 2.0 -> 2.0; dkg 2.5 2.7 2.3 2.5 -> 2.5
    assert _value(frame, "hpn/qkd", "rdc") == pytest.approx(2.0)
    assert _value(frame, "hpn/dkg", "rdc") == pytest.approx(2.5)
    assert _value(frame, "hpn/qkd", "rdc", "rel_diff_pct") == pytest.approx(-20.0)
    # sd 0.16330, sem 0.08165, t(0.975, 3) 3.182446
    assert _value(frame, "hpn/qkd", "rdc", "ci95_half") == pytest.approx(0.259846, rel=1e-4)
    assert _value(frame, "hpn/qkd", "battery_life_days") == pytest.approx(100.0)
    assert _value(frame, "hpn/qkd", "battery_life_days", "rel_diff_pct") == pytest.approx(25.0)
    # app latency: 10 captured messages at wire+2 ms (sum 167) + d1/5 at 20 ms = 187 / 11
    assert _value(frame, "hpn/qkd", "latency_ms") == pytest.approx(17.0)
    assert _value(frame, "hpn/qkd", "latency_ms", "n") == 11
    assert _value(frame, "hpn/dkg", "latency_ms") == pytest.approx(13.0)
    assert _value(frame, "hpn/qkd", "loss_pct") == pytest.approx(100 / 12)
    assert _value(frame, "hpn/qkd", "loss_pct", "diff") == pytest.approx(100 / 12)
    # no wire.csv yet (analysis not run): no wire metrics
    assert "wire_latency_ms" not in set(frame.metric)


def test_runs_of_different_scenarios_are_labelled(tmp_path):
    other = tmp_path / "bcn_run"
    shutil.copytree(FIXTURE, other)
    meta = json.loads((other / "metadata.json").read_text())
    meta["scenario"]["scenario"]["name"] = "bcn"
    (other / "metadata.json").write_text(json.dumps(meta))
    frame = compare_runs([FIXTURE, other], baseline="hpn/qkd")
    assert set(frame.label) == {"hpn/qkd", "hpn/dkg", "bcn/qkd", "bcn/dkg"}
    assert _value(frame, "bcn/dkg", "rdc", "rel_diff_pct") == pytest.approx(25.0)
    with pytest.raises(CompareError):
        compare_runs([FIXTURE], baseline="nope/qkd")
    same = compare_runs([FIXTURE, FIXTURE])
    assert len(set(same.label)) == 4            # repeated runs still get distinct labels


def _cli():
    @click.group()
    def group():
        pass
    for command in COMMANDS:
        group.add_command(command)
    return group


def test_compare_cli_formats(tmp_path):
    runner = CliRunner()
    table = runner.invoke(compare, [str(FIXTURE)])
    assert table.exit_code == 0 and "-20.0%" in table.output and "hpn/dkg" in table.output
    as_csv = runner.invoke(compare, [str(FIXTURE), "--format", "csv"])
    frame = pd.read_csv(StringIO(as_csv.output))
    assert tuple(frame.columns) == COMPARE_COLUMNS and len(frame) == 8
    out = tmp_path / "c.json"
    as_json = runner.invoke(_cli(), ["compare", str(FIXTURE), "--format", "json", "-o", str(out)])
    assert as_json.exit_code == 0
    records = json.loads(out.read_text())
    assert {r["metric"] for r in records} >= {"rdc", "battery_life_days", "latency_ms", "loss_pct"}


@pytest.mark.parametrize("args", [["/nonexistent/run"], ["{tmp}"], [str(FIXTURE), "--baseline", "x/y"]])
def test_compare_cli_errors_are_one_line(tmp_path, args):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(compare, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1


def test_interrupted_run_without_energy_is_compared_and_noted(tmp_path):
    run = tmp_path / "cut"
    shutil.copytree(FIXTURE, run)
    meta = json.loads((run / "metadata.json").read_text())
    meta["status"] = "interrupted"
    (run / "metadata.json").write_text(json.dumps(meta))
    (run / "dkg" / "energy.csv").unlink()
    frame = compare_runs([run])
    assert "rdc" not in set(frame[frame.label == "hpn/dkg"].metric)
    assert _value(frame, "hpn/dkg", "latency_ms") == pytest.approx(13.0)
    result = CliRunner().invoke(compare, [str(run)])
    assert result.exit_code == 0 and "status 'interrupted'" in result.output
