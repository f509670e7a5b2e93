"""Result integrity: damaged, incomplete or unknown-version run directories are refused or flagged, never
silently turned into figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from harness.analysis.analyze import analyze_run
from harness.analysis.cli import analyze, compare, plot
from harness.analysis.compare import compare_runs
from harness.analysis.plots import plot_run
from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION, RunDirError, open_run
from harness.results import SCHEMA_VERSION

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"


@pytest.fixture()
def run(tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


def _metadata(run: Path, **changes) -> None:
    meta = json.loads((run / "metadata.json").read_text())
    meta.update(changes)
    (run / "metadata.json").write_text(json.dumps(meta))


def _one_line_error(args: list[str], command=compare) -> str:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_messages_cut_mid_row_are_refused(run):
    path = run / "qkd" / "messages.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])           # the cut falls inside a row
    with pytest.raises(RunDirError, match="truncated"):
        compare_runs([run])
    assert "messages.csv" in _one_line_error([str(run)])


def test_messages_cut_at_a_row_boundary_disagree_with_sent_csv(run):
    path = run / "qkd" / "messages.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:7]))                 # header + 6 of 12 readings, cleanly cut
    with pytest.raises(RunDirError, match="6 rows but sent.csv has 12"):
        compare_runs([run])
    (run / "qkd" / "sent.csv").unlink()                 # summary.csv still knows how many were sent
    with pytest.raises(RunDirError, match="summary.csv says sent = 12"):
        compare_runs([run])
    (run / "qkd" / "summary.csv").unlink()
    (run / "qkd" / "received.csv").unlink()
    (run / "qkd" / "energy.csv").unlink()
    _metadata(run, status="interrupted")
    # with nothing to check against, the six readings are all there is: no loss is invented
    frame = compare_runs([run]).frame
    loss = frame[(frame.label == "hpn/qkd") & (frame.metric == "loss_pct")].iloc[0]
    assert loss["n"] == 6 and loss["mean"] == 0.0


def test_a_deleted_mode_file_is_refused_not_dropped(run):
    (run / "dkg" / "messages.csv").unlink()
    with pytest.raises(RunDirError, match=r"dkg/messages.csv: missing, although dkg/energy.csv is there"):
        open_run(run)
    _one_line_error([str(run)])
    _one_line_error([str(run)], plot)
    _one_line_error([str(run)], analyze)


def test_a_completed_run_must_have_every_mode_and_its_energy(run):
    (run / "qkd" / "energy.csv").unlink()
    with pytest.raises(RunDirError, match="energy.csv: missing"):
        compare_runs([run])
    shutil.rmtree(run / "dkg")
    with pytest.raises(RunDirError, match="no results for mode dkg"):
        open_run(run)


def test_an_interrupted_run_is_flagged_where_it_is_short(run):
    shutil.rmtree(run / "dkg")
    _metadata(run, status="interrupted", mode_results={"qkd": {"status": "interrupted"}})
    comparison = compare_runs([run])
    assert set(comparison.frame.label) == {"hpn/qkd"}
    assert any("dkg: no results" in w for w in comparison.warnings)
    assert any("mode ended 'interrupted'" in w for w in comparison.warnings)
    report = analyze_run(run)
    assert any("dkg: no results" in w for w in report["warnings"])
    assert json.loads((run / "analysis.json").read_text())["warnings"] == report["warnings"]


def test_energy_rows_that_stop_short_are_flagged(run):
    path = run / "dkg" / "energy.csv"
    energy = pd.read_csv(path)
    energy[~((energy.device == "d2") & (energy.interval == 1))].to_csv(path, index=False)
    report = analyze_run(run)
    assert any("device d2 has energy rows for 1 h of 2 h" in w for w in report["warnings"])
    result = CliRunner().invoke(compare, [str(run)])
    assert result.exit_code == 0 and "warning:" in result.output and "device d2" in result.output


@pytest.mark.parametrize("version, message", [(99, "newer than this qiot reads"), ("2", "not a version number"),
                                              (0, "not a version number"), (True, "not a version number")])
def test_unknown_run_schema_versions_are_refused(run, version, message):
    _metadata(run, schema_version=version)
    with pytest.raises(RunDirError, match=message):
        open_run(run)
    assert message in _one_line_error([str(run)])


def test_an_older_run_is_upgraded_on_read(run):
    _metadata(run, schema_version=1)
    for mode in ("qkd", "dkg"):                     # version 1 messages.csv had no queue columns
        path = run / mode / "messages.csv"
        pd.read_csv(path).drop(columns=["queued_s", "error"]).to_csv(path, index=False)
    old = open_run(run)
    assert old.schema_version == 1 and {"queued_s", "error"} <= set(old.messages("qkd").columns)
    columns = ["label", "metric", "mean", "ci95_low", "ci95_high", "p_value"]
    upgraded = compare_runs([run]).frame[columns]
    current = compare_runs([FIXTURE]).frame[columns]
    pd.testing.assert_frame_equal(upgraded, current)
    assert SCHEMA_VERSION == 2


def test_analysis_files_of_unknown_or_older_versions(run):
    analyze_run(run)
    report = json.loads((run / "analysis.json").read_text())
    (run / "analysis.json").write_text(json.dumps(dict(report, schema_version=99)))
    assert "analysis.json: schema_version 99 is newer" in _one_line_error([str(run)], plot)
    assert "analysis.json: schema_version 99 is newer" in _one_line_error([str(run)])   # compare reads wire.csv
    (run / "analysis.json").write_text(json.dumps(dict(report, schema_version=1)))
    (run / "qkd" / "series.csv").write_text("interval\n0\n")     # a stale, older series
    plot_run(run)                                                # derived again before drawing
    assert json.loads((run / "analysis.json").read_text())["schema_version"] == ANALYSIS_SCHEMA_VERSION
    assert "faults" in pd.read_csv(run / "qkd" / "series.csv").columns


def test_rederive_repairs_a_damaged_messages_csv(run):
    before = compare_runs([FIXTURE]).frame[["label", "metric", "mean", "n"]]
    data = (run / "qkd" / "messages.csv").read_bytes()
    (run / "qkd" / "messages.csv").write_bytes(data[: len(data) // 2])
    (run / "dkg" / "messages.csv").unlink()
    assert "qiot analyze --rederive" in _one_line_error([str(run)])
    result = CliRunner().invoke(analyze, [str(run), "--rederive"])
    assert result.exit_code == 0, result.output
    assert "qkd: messages.csv and summary.csv rebuilt" in result.output
    after = compare_runs([run]).frame
    after = after[~after.metric.str.startswith("wire_")]        # the analysis ran: wire.csv is new
    pd.testing.assert_frame_equal(after[["label", "metric", "mean", "n"]].reset_index(drop=True), before)


def test_rederive_keeps_the_accounting_of_an_older_run(run):
    _metadata(run, schema_version=1)
    sent = pd.read_csv(run / "qkd" / "sent.csv", dtype={"error": str})
    sent.loc[sent.acked == 0, "error"] = "queue overflow: 4 readings"
    sent.to_csv(run / "qkd" / "sent.csv", index=False)
    (run / "qkd" / "messages.csv").unlink()
    CliRunner().invoke(analyze, [str(run), "--rederive"])
    frame = compare_runs([run]).frame
    dropped = frame[(frame.label == "hpn/qkd") & (frame.metric == "dropped_overflow_pct")]["mean"].iloc[0]
    assert dropped == pytest.approx(100 / 12)       # the version-1 upgrade does not blank the errors
    empty = run.parent / "empty"
    empty.mkdir()
    (empty / "metadata.json").write_text("{}")
    assert "no <mode>/sent.csv" in _one_line_error([str(empty), "--rederive"], analyze)
