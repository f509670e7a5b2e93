"""qiot plot: every figure renders from the stored fixture run (PNG and PDF) and says where it comes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.analysis import plots
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


@pytest.fixture()
def drawn(tmp_path, monkeypatch):
    """Run plot_run on a fixture copy and keep the matplotlib figures instead of writing files."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    figures = {}

    def keep(fig, stem, formats=plots.FORMATS):
        figures[Path(stem).name] = fig
        return [Path(stem).with_suffix(".png")]

    monkeypatch.setattr(plots, "_save", keep)

    def draw(**metadata):
        meta = json.loads((run / "metadata.json").read_text())
        meta.update(metadata)
        (run / "metadata.json").write_text(json.dumps(meta))
        _close(figures)
        plot_run(run)
        return figures
    yield draw
    _close(figures)


def _close(figures: dict) -> None:
    for fig in figures.values():
        plots.plt.close(fig)
    figures.clear()


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.texts)


def test_every_figure_carries_its_provenance(drawn):
    figures = drawn()
    assert set(figures) == set(FIGURES)
    for name, fig in figures.items():
        text = _texts(fig)
        parts = ("scenario hpn", "qiot f1x7ure")
        if name != "fig2d_capacity":          # 2d is the calibration's model, not a measurement of the run
            parts += ("2 devices", "2 h emulated", "run hpn-fixture")
        for part in parts:
            assert part in text, (name, part)
        assert "DEGRADED" not in text


def test_a_degraded_run_is_marked_on_every_measured_figure(drawn):
    figures = drawn(emulation_health={"status": "degraded"})
    for name, fig in figures.items():
        assert ("DEGRADED EMULATION" in _texts(fig)) == (name != "fig2d_capacity"), name


def test_loss_axis_never_goes_below_zero(drawn):
    loss_axis = drawn()["fig2c_latency_loss"].axes[1]
    low, high = loss_axis.get_ylim()
    assert low == 0.0 and high >= 100 / 6          # the second hour lost 1 of 6 readings (16.7%)


def test_faults_are_shaded_on_fig2a_to_c(drawn):
    figures = drawn(faults=[{"kind": "fibre_cut", "target": "bob", "at_s": 1800.0, "duration_s": 1800.0,
                             "injected_wall": 1.0, "recovered_wall": 2.0}])
    for name in ("fig2a_rdc", "fig2b_battery", "fig2c_latency_loss"):
        ax = figures[name].axes[0]
        spans = [p for p in ax.patches if p.get_label() == "fault: fibre_cut@bob"]
        assert len(spans) == 1, name
        start, width = spans[0].get_x(), spans[0].get_width()
        assert (start, start + width) == pytest.approx((0.5, 1.0))     # emulated hours
    assert not [p for p in drawn(faults=[])["fig2a_rdc"].axes[0].patches if "fault" in p.get_label()]


def test_each_fault_kind_has_its_own_colour(drawn):
    from matplotlib.colors import to_rgb

    faults = [{"kind": kind, "target": "", "at_s": 600.0 * i, "duration_s": 300.0, "injected_wall": 1.0,
               "recovered_wall": 2.0} for i, kind in enumerate(("fibre_cut", "broker_restart", "fibre_cut"))]
    ax = drawn(faults=faults)["fig2a_rdc"].axes[0]
    colours = {p.get_label(): to_rgb(p.get_facecolor()[:3]) for p in ax.patches if str(p.get_label()).startswith("fault")}
    assert set(colours) == {"fault: fibre_cut", "fault: broker_restart"}
    assert colours["fault: fibre_cut"] != colours["fault: broker_restart"]


def test_short_runs_get_a_curve_not_a_dot(drawn):
    figures = drawn(energy_interval_s=600.0)
    lines = figures["fig2a_rdc"].axes[0].get_lines()
    assert {len(line.get_xdata()) for line in lines} == {12}
