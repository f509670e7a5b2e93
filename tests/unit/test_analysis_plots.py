"""qiot plot: every figure renders from the stored fixture run (PNG and PDF)."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from harness.analysis.cli import analyze, plot
from harness.analysis.plots import plot_run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"
FIGURES = ("fig2a_rdc", "fig2b_battery", "fig2c_latency_loss", "fig2d_capacity", "fig2e_key_response")


def test_plot_renders_every_figure(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    written, skipped = plot_run(run)            # no series.csv yet: the analysis runs first
    assert skipped == []
    assert (run / "qkd" / "series.csv").is_file()
    names = {p.name for p in written}
    for stem in FIGURES:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            path = run / "figures" / f"{stem}.{ext}"
            assert path.name in names and path.read_bytes()[:4] == magic and path.stat().st_size > 1000


def test_plot_cli_without_key_capture(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "qkd" / "pcap" / "keys.pcap").unlink()
    runner = CliRunner()
    assert runner.invoke(analyze, [str(run), "--interval-s", "1800"]).exit_code == 0
    out = tmp_path / "figs"
    result = runner.invoke(plot, [str(run), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped fig2e" in result.output
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{s}.png" for s in FIGURES[:4])


def test_plot_cli_bad_run_dir(tmp_path):
    result = CliRunner().invoke(plot, [str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output


def test_cli_default_interval_matches_series():
    from harness.analysis import cli, series
    assert cli.DEFAULT_INTERVAL_S == series.DEFAULT_INTERVAL_S
