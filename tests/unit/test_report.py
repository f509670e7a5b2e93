"""qiot report: one self-contained HTML page per run, from the stored results only, that a browser renders."""

from __future__ import annotations

import base64
import html as html_text
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from harness.analysis.cli import capacity, report
from harness.analysis.paper import load_paper
from harness.analysis.report import FIGURE_CAPTIONS, build_report, external_references, write_report
from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION, RunDirError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_real"
#: matplotlib's default line colours, which only the figures use on the page (QKD, DKG).
QKD_BLUE, DKG_RED = (31, 119, 180), (214, 39, 40)


def _copy(tmp_path: Path, name: str = "run") -> Path:
    run = tmp_path / name
    shutil.copytree(FIXTURE, run)
    return run


def _edit_metadata(run: Path, **changes) -> None:
    metadata = json.loads((run / "metadata.json").read_text())
    metadata.update(changes)
    (run / "metadata.json").write_text(json.dumps(metadata))


def _cell_texts(html: str) -> list[str]:
    return [html_text.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str]:
    run = _copy(tmp_path_factory.mktemp("report"))
    path = write_report(run)
    return path, path.read_text(encoding="utf-8")


def test_headline_table_holds_the_stored_figures_with_n_ci_p_and_the_paper(page):
    _, html = page
    table = html[html.index('id="headline-table"'):html.index("</table>", html.index('id="headline-table"'))]
    cells = _cell_texts(table)
    qkd = pd.read_csv(FIXTURE / "qkd" / "summary.csv").iloc[0]
    dkg = pd.read_csv(FIXTURE / "dkg" / "summary.csv").iloc[0]
    # RDC row: mean ± half width in % with n = devices, for both modes, from summary.csv (fraction 0-1)
    row = cells[cells.index("rdc [%]"):][:7]
    assert row[1].startswith(f"{qkd.rdc_mean * 100:.4g} ± {qkd.rdc_ci95 * 100:.3g}") and row[1].endswith("(n=3)")
    assert row[2].startswith(f"{dkg.rdc_mean * 100:.4g} ± ") and row[2].endswith("(n=3)")
    difference = (qkd.rdc_mean - dkg.rdc_mean) * 100
    assert row[3].startswith(f"{difference:+.3g}"[:5]) and re.fullmatch(r"[+-]\S+ \[[+-]\S+, [+-]\S+\]", row[3])
    assert row[4] == f"{100 * (qkd.rdc_mean - dkg.rdc_mean) / dkg.rdc_mean:+.1f}%"
    assert re.fullmatch(r"<0\.001|0\.\d{3}( n\.s\.)?", row[5])
    paper = load_paper().qkd_vs_dkg
    assert row[6] == paper["rdc"].text
    latency = cells[cells.index("latency_ms [ms]"):][:7]
    assert latency[1].endswith(f"(n={int(qkd.received)})") and latency[6] == paper["latency_ms"].text
    text = html_text.unescape(html)
    assert paper["rdc"].source in text and paper["battery_life_days"].source in text   # sources shown
    assert "Fig. 2d point, bcn: 7 dB, 1220 bit/s" in text


def test_every_figure_is_embedded_and_the_page_references_nothing_outside(page):
    _, html = page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(FIGURE_CAPTIONS) == 5
    for data in images:
        width, height = Image.open(io.BytesIO(base64.b64decode(data))).size
        assert width > 300 and height > 200
    for caption in FIGURE_CAPTIONS.values():
        assert caption in html_text.unescape(html)
    assert external_references(html) == []
    assert "Content-Security-Policy" in html and "default-src 'none'" in html and "<script" not in html


def test_external_reference_check_finds_every_kind():
    html = ('<img src="http://x/a.png"><link rel="stylesheet" href="https://cdn/x.css"><a href="#ok">k</a>'
            '<div style="background: url(\'//fonts/x.woff\')"></div><style>@import "https://f/y.css"; '
            'p { background: url(data:image/png;base64,AA==) }</style><img src="data:image/png;base64,AA==">')
    assert external_references(html) == ["http://x/a.png", "https://cdn/x.css", "//fonts/x.woff", "https://f/y.css"]


def test_page_shows_scenario_capabilities_mechanisms_modes_and_provenance(page):
    path, html = page
    metadata = json.loads((FIXTURE / "metadata.json").read_text())
    cells = _cell_texts(html)
    assert "[fibre]" in html and "loss_db" in cells and "calibration.a_s" in cells
    assert "shaping.wireless_delay" in cells and metadata["mechanisms"]["shaping"]["wireless_loss"] in cells
    assert "switch_datapath" in cells and "nfqueue" in cells
    assert metadata["git_commit"] in cells and metadata["run_id"] in html
    assert "run schema version" in cells and str(ANALYSIS_SCHEMA_VERSION) in html
    fleet = json.loads((FIXTURE / "qkd" / "fleet.json").read_text())
    assert "wake lag late_wakes" in cells and "capture-qkd-keys" in cells
    assert f"{fleet['lag']['p95_s']:.6g}" in cells
    assert "not measured" in html and "Faults: none recorded." in html
    assert 'id="status-banner"' not in html and "completed" in html


def test_interrupted_and_failed_runs_say_so_at_the_top(tmp_path):
    run = _copy(tmp_path)
    _edit_metadata(run, status="interrupted", stop_signal="SIGINT")
    html = build_report(run)
    banner = html.index('id="status-banner"')
    assert banner < html.index('id="headline"')
    assert "INTERRUPTED" in html[banner:banner + 300] and "stopped by SIGINT" in html[banner:banner + 400]

    failed = _copy(tmp_path, "failed")
    for mode in ("qkd", "dkg"):
        shutil.rmtree(failed / mode)   # failed before any mode: no results at all
    _edit_metadata(failed, status="failed", failure="RuntimeError: broker did not start", mode_results={})
    html = build_report(failed)
    assert "FAILED" in html and "RuntimeError: broker did not start" in html
    assert "No results to show" in html and "<img" not in html
    assert 'id="headline"' not in html and "[qkd]" in html          # the scenario is still there


def test_emulation_health_and_faults_are_shown(tmp_path):
    run = _copy(tmp_path)
    faults = [{"kind": "wireless_outage", "target": "d1,d2", "at_s": 60.0, "duration_s": 30.0,
               "injected_wall": 1796162200.5, "recovered_wall": 1796162201.5},
              {"kind": "kme_restart", "target": "bob", "mode": "qkd", "at_s": 120.0, "duration_s": 10.0}]
    _edit_metadata(run, emulation_health={"status": "degraded", "lag_p95_s": 4.2, "thresholds": {"lag_p95_s": 1.0}},
                   faults=faults)
    html = build_report(run)
    assert 'id="degraded-banner"' in html
    cells = _cell_texts(html)
    assert "lag_p95_s" in cells and "4.2" in cells and "thresholds.lag_p95_s" in cells
    table = _cell_texts(html[html.index('id="faults"'):])
    assert table[:7] == ["wireless_outage", "d1,d2", "all", "60", "30", "2026-12-01T21:56:40.500Z",
                         "2026-12-01T21:56:41.500Z"]
    assert table[7:12] == ["kme_restart", "bob", "qkd", "120", "10"]


def test_text_from_the_run_is_escaped(tmp_path):
    run = _copy(tmp_path)
    metadata = json.loads((run / "metadata.json").read_text())
    metadata["scenario"]["scenario"]["description"] = '<script>alert(1)</script><img src="http://evil/x">'
    (run / "metadata.json").write_text(json.dumps(metadata))
    html = build_report(run)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    assert external_references(html) == []


def test_a_damaged_completed_run_is_refused(tmp_path):
    run = _copy(tmp_path)
    messages = run / "qkd" / "messages.csv"
    messages.write_text(messages.read_text()[:-1])          # last row cut: no newline
    with pytest.raises(RunDirError, match="messages.csv"):
        build_report(run)
    result = CliRunner().invoke(report, [str(run)])
    assert result.exit_code == 1 and "messages.csv" in result.output and "Traceback" not in result.output
    assert not (run / "report.html").exists()


def test_report_cli(tmp_path):
    run = _copy(tmp_path)
    out = tmp_path / "page.html"
    result = CliRunner().invoke(report, [str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and out.read_text().startswith("<!DOCTYPE html>")
    assert not (run / "figures").exists()      # figures are drawn for the page only
    bad = CliRunner().invoke(report, [str(tmp_path / "nope")])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "not a directory" in bad.output
    missing_dir = CliRunner().invoke(report, [str(run), "--out", str(tmp_path / "no" / "page.html")])
    assert missing_dir.exit_code == 1 and "no such directory" in missing_dir.output


def test_capacity_exports_carry_the_schema_version():
    runner = CliRunner()
    text = runner.invoke(capacity, ["--scenario", "bcn", "--loss-db", "4,7", "--format", "csv"]).output
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame.columns[:2]) == ["schema_version", "loss_db"] and (frame.schema_version == ANALYSIS_SCHEMA_VERSION).all()
    data = json.loads(runner.invoke(capacity, ["--scenario", "bcn", "--loss-db", "7", "--format", "json"]).output)
    assert data["schema_version"] == ANALYSIS_SCHEMA_VERSION and data["scenario"] == "bcn" and len(data["curve"]) == 1


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(page, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("QIOT_REQUIRE_NET") == "1":
            pytest.fail("the render test is required but chromium is not installed (install.sh installs it)")
        pytest.skip("chromium not installed (Debian package `chromium`, installed by install.sh)")
    path, _ = page
    shot = tmp_path / "report.png"
    width, height = 1280, 3600
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
                           f"--window-size={width},{height}", f"--screenshot={shot}", path.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (width, height)
    pixels = image.getcolors(maxcolors=width * height)

    def near(target, tolerance=30):
        return sum(count for count, colour in pixels if all(abs(a - b) <= tolerance for a, b in zip(colour, target)))

    white = sum(count for count, colour in pixels if colour == (255, 255, 255))
    assert len(pixels) > 500                       # text, tables and figures, not a blank or error page
    assert white < 0.97 * width * height
    assert near(QKD_BLUE) > 200 and near(DKG_RED) > 50   # the embedded figures were decoded and drawn
