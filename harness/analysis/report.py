"""``qiot report``: one self-contained HTML page per run, built only from the files stored in it.

The page holds what a reader needs to judge a run without the terminal: its status (an interrupted,
failed or unfinished run says so at the top, with the reason), the headline table of
:mod:`harness.analysis.compare` (n, 95% CI, the difference to DKG with its CI and p, and the paper's
figure with its source), Fig. 2a-e of :mod:`harness.analysis.plots`, the scenario as used, the
capabilities and mechanisms of the emulation, its health and faults when the run recorded them, how
each mode went (captures, device wake lag and failures), the integrity warnings, and provenance.

Self-contained: the figures are embedded as base64 PNG, the style is inline, there is no script,
and a Content-Security-Policy forbids the browser from fetching anything (the page works offline and
from a mail attachment). The figures are drawn afresh into a temporary folder each time (the run's
``figures/`` is neither read nor written), so the page always matches the stored data; like
``qiot plot``, a run without a current analysis is analysed first.

The page is rendered with Jinja2 (template ``report.html.j2`` beside this module; autoescaping on,
so no text from a run can inject markup).
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable

from harness.analysis.analyze import analyze_run
from harness.analysis.rundir import RunDir, RunDirError, open_run, read_json_object, read_metadata

#: File name of the page inside the run directory (``qiot report`` default).
REPORT_NAME = "report.html"
#: What each figure shows (plots.py draws them; the stem is the figure's file name).
FIGURE_CAPTIONS = {
    "fig2a_rdc": "Fig. 2a: radio duty cycle per interval, mean over devices with its 95% CI band",
    "fig2b_battery": "Fig. 2b: projected battery lifetime per interval, mean over devices with its 95% CI band",
    "fig2c_latency_loss": "Fig. 2c: one-way latency (band: 95% CI) and packet loss (dashed) per interval",
    "fig2d_capacity": "Fig. 2d: QKD capacity versus optical loss from the run's calibration (markers: the paper)",
    "fig2e_key_response": "Fig. 2e: a Clavis2 KeyResponse datagram from the run's captures",
}
_TEMPLATE = "report.html.j2"
_STATUS_TEXT = {
    "completed": "",
    "interrupted": "INTERRUPTED: the run was stopped before its end; its figures cover only part of it.",
    "failed": "FAILED: the run did not finish; its figures cover only what was recorded before the failure.",
    "running": "UNFINISHED: the run had not recorded its end (still going, or killed without teardown).",
}


@dataclass
class Figure:
    """One embedded figure: file stem, caption and the PNG as a ``data:`` URI."""

    stem: str
    caption: str
    data_uri: str


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as ``(dotted.key, text)`` rows; lists of scalars as one comma-joined text,
    other lists as compact JSON."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, value_text(value))]


def value_text(value: Any) -> str:
    """A metadata value as the page shows it (numbers to 6 significant digits, JSON for structures)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.3f}"  # e.g. epoch times keep their ms
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return ", ".join(value_text(v) for v in value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def draw_figures(run_dir: Path) -> tuple[list[Figure], list[str]]:
    """Fig. 2a-e of the run as embedded PNGs (drawn in a temporary folder), and the notes on
    figures that could not be drawn."""
    from harness.analysis.plots import plot_run

    with tempfile.TemporaryDirectory(prefix="qiot-report-") as tmp:
        written, skipped = plot_run(run_dir, tmp, formats=("png",))
        figures = [Figure(p.stem, FIGURE_CAPTIONS.get(p.stem, p.stem), _embed(p)) for p in sorted(written)]
    return figures, skipped


def headline_table(run_dir: Path) -> dict[str, Any]:
    """The comparison of the run's modes as table rows for the page (see :mod:`compare`)."""
    from harness.analysis.compare import (METRICS, compare_runs, difference_texts, estimate_text, method_lines,
                                          shown_metrics)

    comparison = compare_runs([run_dir])
    frame, baseline = comparison.frame, comparison.baseline
    labels = [side.label for side in comparison.sides]
    others = [label for label in labels if label != baseline]
    rows = []
    for name in shown_metrics(frame):
        metric_rows = frame[frame["metric"] == name].set_index("label")
        row = {"metric": name, "unit": METRICS[name].unit, "sample": METRICS[name].sample,
               "sides": [estimate_text(metric_rows.loc[label]) if label in metric_rows.index else "–"
                         for label in labels], "diffs": []}
        for label in others:
            side = metric_rows.loc[label] if label in metric_rows.index else None
            if side is None or not math.isfinite(side["diff"]):
                row["diffs"].append({"text": "–", "rel": "", "p": "", "significant": False, "paper": "",
                                     "source": ""})
                continue
            diff, rel, p_text = difference_texts(side)
            row["diffs"].append({"text": diff, "rel": rel, "p": p_text, "significant": bool(side["significant"]),
                                 "paper": side["paper"] or "", "source": side["paper_source"] or ""})
        rows.append(row)
    sides = [{"label": s.label, "devices": len(s.samples.devices), "device_hours": s.samples.device_hours,
              "readings": s.samples.counts["readings"], "received": s.samples.counts["received"]}
             for s in comparison.sides]
    return {"labels": labels, "baseline": baseline, "others": others, "rows": rows, "sides": sides,
            "methods": method_lines(frame), "warnings": comparison.warnings}


def capacity_point(scenario_name: str) -> str:
    """The paper's Fig. 2d point for the scenario, as one sentence ('' when paper.toml has none)."""
    from harness.analysis.paper import load_paper

    point = load_paper().capacity.get(scenario_name)
    if point is None:
        return ""
    return (f"{point.scenario}: {point.loss_db:g} dB, {point.key_rate_bps:g} bit/s: ~{point.devices_per_30_min:,.0f} "
            f"devices per 30 min, {point.buffer_devices:,.0f} every ~{point.buffer_fill_min:g} min "
            f"(source: {point.source})")


def mode_rows(run: RunDir) -> list[dict[str, Any]]:
    """How each listed mode went: status, summary counts, capture counters, wake lag, device failures."""
    results = run.metadata.get("mode_results") if isinstance(run.metadata.get("mode_results"), dict) else {}
    listed = run.metadata.get("modes") if isinstance(run.metadata.get("modes"), list) else run.modes
    rows = []
    for mode in [str(m) for m in listed]:
        record = results.get(mode) if isinstance(results.get(mode), dict) else {}
        folder = run.path / mode
        fleet = read_json_object(folder / "fleet.json") if (folder / "fleet.json").is_file() else {}
        summary = record.get("summary") if isinstance(record.get("summary"), dict) else {}
        counts = [(key, summary[key]) for key in ("sent", "received", "lost_network", "not_published",
                                                  "dropped_queue_overflow", "delivered_late", "decrypt_ok",
                                                  "decrypt_failures") if key in summary]
        captures = record.get("capture") if isinstance(record.get("capture"), dict) else {}
        rows.append({"mode": mode, "status": str(record.get("status", "no record")),
                     "counts": [(k, value_text(v)) for k, v in counts],
                     "captures": [(name, c) for name, c in captures.items() if isinstance(c, dict)],
                     "lag": flatten(fleet.get("lag")) if isinstance(fleet.get("lag"), dict) else [],
                     "failures": [str(f) for f in fleet.get("failures") or []],
                     "has_results": mode in run.modes})
    return rows


def wall_time_text(epoch_s: Any) -> str:
    """A wall-clock epoch time as UTC ISO 8601 with milliseconds ('' when absent, as is otherwise)."""
    if isinstance(epoch_s, bool) or not isinstance(epoch_s, (int, float)) or not math.isfinite(epoch_s):
        return "" if epoch_s is None else value_text(epoch_s)
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _faults(metadata: dict) -> list[dict[str, str]]:
    listed = metadata.get("faults") if isinstance(metadata.get("faults"), list) else []
    rows = []
    for fault in (f for f in listed if isinstance(f, dict)):
        row = {key: "" if fault.get(key) is None else value_text(fault.get(key))
               for key in ("kind", "target", "mode", "at_s", "duration_s")}
        row.update(injected_wall=wall_time_text(fault.get("injected_wall")),
                   recovered_wall=wall_time_text(fault.get("recovered_wall")))
        rows.append(row)
    return rows


def _status(metadata: dict) -> dict[str, str]:
    status = str(metadata.get("status", "unknown"))
    detail = ""
    if status == "interrupted" and metadata.get("stop_signal"):
        detail = f"stopped by {metadata['stop_signal']}"
    elif status == "failed":
        detail = str(metadata.get("failure") or "no reason recorded (see logs/)")
    return {"status": status, "banner": _STATUS_TEXT.get(status, f"status {status!r}: not a completed run."),
            "detail": detail}


def _provenance(root: Path, metadata: dict, analysis: dict) -> list[tuple[str, str]]:
    from harness.results import git_commit

    command = metadata.get("command")
    rows = [("run", str(metadata.get("run_id") or root.name)), ("run directory", str(root.resolve())),
            ("qiot commit (run)", str(metadata.get("git_commit", "unknown"))),
            ("qiot version (run)", str(metadata.get("qiot_version", "?"))),
            ("started", str(metadata.get("started", "?"))), ("ended", str(metadata.get("ended", "not recorded"))),
            ("command", shlex.join(map(str, command)) if isinstance(command, list) else str(command or "?")),
            ("scenario file", str(metadata.get("scenario_file", "?"))),
            ("run configuration", str(metadata.get("run_config", "not recorded"))),
            ("host", " · ".join(f"{key} {metadata[key]}" for key in ("hostname", "kernel", "python")
                                if key in metadata)),
            ("run schema version", str(metadata.get("schema_version", 1))),
            ("analysis", f"schema {analysis.get('schema_version', '?')}, generated {analysis.get('generated_at', '?')}, "
                         f"series interval {value_text(analysis.get('interval_s'))} s "
                         f"({analysis.get('interval_source', '?')})" if analysis else "none"),
            ("report", f"generated {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} "
                       f"by qiot commit {git_commit()}")]
    return rows


def report_context(run_dir: str | Path) -> dict[str, Any]:
    """Everything the page shows, read from the run directory (figures drawn, analysis run if needed).

    A completed run whose results are damaged is refused (:class:`RunDirError`, as every analysis
    command does); an unfinished one still gets a page that says why it has no figures.
    """
    root = Path(run_dir)
    metadata = read_metadata(root)
    status = _status(metadata)
    context: dict[str, Any] = {"status": status, "results_error": "", "figures": [],
                               "skipped": [], "headline": None, "modes": [], "warnings": []}
    try:
        run = open_run(root)
        if run.needs_analysis():
            analyze_run(root)
        context["headline"] = headline_table(root)   # refuses damaged results before any drawing
        context["figures"], context["skipped"] = draw_figures(root)
        context["modes"] = mode_rows(run)
    except RunDirError as exc:
        if status["status"] == "completed":
            raise
        context["results_error"] = str(exc).splitlines()[0]
        context["modes"] = mode_rows(RunDir(root, metadata))
    analysis_path = root / "analysis.json"
    analysis = read_json_object(analysis_path) if analysis_path.is_file() else {}
    scenario = metadata.get("scenario") if isinstance(metadata.get("scenario"), dict) else {}
    health = metadata.get("emulation_health") if isinstance(metadata.get("emulation_health"), dict) else None
    # The comparison's warnings are this reading's; without results, the last analysis's are all there is.
    warnings = (list(context["headline"]["warnings"]) if context["headline"]
                else [str(w) for w in analysis.get("warnings", [])])
    context.update(
        title=f"qiot run {metadata.get('run_id') or root.name}",
        scenario_name=str(scenario.get("scenario", {}).get("name", "?")),
        scenario_description=str(scenario.get("scenario", {}).get("description", "")),
        scenario_sections=[(name, flatten(body)) for name, body in scenario.items()
                           if name != "scenario" and isinstance(body, dict)],
        capabilities=flatten(metadata.get("capabilities") or {}),
        mechanisms=flatten(metadata.get("mechanisms") or {}),
        health_status=str(health.get("status", "?")) if health else "not measured",
        health_rows=[row for row in flatten(health) if row[0] != "status"] if health else [],
        faults=_faults(metadata), faults_recorded="faults" in metadata,
        capacity_point=capacity_point(str(scenario.get("scenario", {}).get("name", ""))),
        provenance=_provenance(root, metadata, analysis), warnings=warnings,
        modes_text=", ".join(map(str, metadata.get("modes") or [])),
        hours=scenario.get("run", {}).get("hours"), devices=scenario.get("devices", {}).get("count"))
    return context


def render(context: dict[str, Any]) -> str:
    """The HTML page of :func:`report_context`'s ``context``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(_TEMPLATE).render(**context)


def build_report(run_dir: str | Path) -> str:
    """The self-contained HTML report of the run at ``run_dir``."""
    return render(report_context(run_dir))


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    read_metadata(Path(run_dir))  # a missing or foreign run directory is named as such first
    path = Path(out) if out else Path(run_dir) / REPORT_NAME
    if not path.parent.is_dir():
        raise OSError(f"{path.parent}: no such directory for the report")
    path.write_text(build_report(run_dir), encoding="utf-8")
    return path


def external_references(html: str) -> list[str]:
    """Every URL the page would make a browser fetch or follow outside itself (``data:`` URIs and
    ``#fragment`` links are inside it): the check that the report is self-contained."""
    found: list[str] = []
    css_url = re.compile(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", re.I)

    def check(value: str | None) -> None:
        if value is None:
            return
        value = value.strip()
        if value and not value.startswith(("data:", "#")):
            found.append(value)

    class Parser(HTMLParser):
        in_style = False

        def handle_starttag(self, tag: str, attrs: Iterable[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                if name in ("src", "href", "srcset", "action", "formaction", "poster", "data", "background",
                            "xlink:href", "manifest", "ping", "cite", "longdesc"):
                    check(value)
                elif name == "style" and value:
                    for match in css_url.finditer(value):
                        check(match.group(1) or match.group(2))
            self.in_style = tag == "style"

        def handle_endtag(self, tag: str) -> None:
            self.in_style = False

        def handle_data(self, data: str) -> None:
            if self.in_style:
                for match in css_url.finditer(data):
                    check(match.group(1) or match.group(2))

    Parser().feed(html)
    return found
