"""Side-by-side comparison of modes and runs: each figure with n and its 95% CI, and each difference
to a baseline with its 95% CI, p-value and the paper's figure.

Every (run, mode) pair is one side, labelled ``<scenario>/<mode>`` (plus the run folder's name when
two runs share a scenario), so QKD vs DKG of one run and HPN vs BCN across runs read the same way.
Differences are taken against one baseline side (by default the first DKG side: the paper reports
QKD relative to DKG). All figures come from :mod:`harness.analysis.stats` (what one sample is, and
which interval and test, is stated there and printed with the table); the paper's figures come
from ``experiments/paper.toml`` (:mod:`harness.analysis.paper`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.paper import PaperError, load_paper
from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION, RunDir, RunDirError, open_run
from harness.analysis.stats import METRICS, Samples, difference, estimate, mode_samples

#: Columns of the long-format result (CSV/JSON output of ``qiot compare``; docs/results.md).
COMPARE_COLUMNS = ("schema_version", "label", "run", "scenario", "mode", "status", "emulation", "metric", "unit",
                   "n", "device_hours", "mean", "ci95_low", "ci95_high", "ci95_half", "ci_method", "baseline",
                   "diff", "diff_ci95_low", "diff_ci95_high", "p_value", "significant", "test", "rel_diff_pct",
                   "paper", "paper_source")
#: Metrics of the terminal table (every metric is in the exports). Accounting rows are shown only
#: where some side has a non-zero count; wire rows only with a broker capture.
TABLE_METRICS = ("rdc", "battery_life_days", "energy_j", "latency_ms", "loss_pct", "lost_network_pct",
                 "not_published_pct", "dropped_overflow_pct", "delivered_late_pct", "wire_latency_ms",
                 "wire_loss_pct")
#: The figures printed at the end of ``qiot run`` (:func:`headline`).
HEADLINE_METRICS = ("rdc", "battery_life_days", "latency_ms", "loss_pct")
_ACCOUNTING = ("lost_network_pct", "not_published_pct", "dropped_overflow_pct", "delivered_late_pct")


class CompareError(ValueError):
    """Bad comparison request (e.g. an unknown baseline label)."""


@dataclass
class Side:
    """One (run, mode) being compared, with its samples."""

    run: RunDir
    mode: str
    label: str
    samples: Samples


@dataclass
class Comparison:
    """The result of :func:`compare_runs`: the long table, the baseline label and what was flagged."""

    frame: pd.DataFrame
    baseline: str
    sides: list[Side]
    warnings: list[str] = field(default_factory=list)


def mode_samples_of(run: RunDir, mode: str) -> Samples:
    """The samples of one mode of a stored run (wire figures when wire.csv holds a broker capture)."""
    wire_path = run.mode_dir(mode) / "wire.csv"
    wire = None
    if wire_path.is_file():
        run.analysis_version()  # refuses derived files of a newer, unknown version
        wire = pd.read_csv(wire_path)
    return mode_samples(run.messages(mode), run.energy(mode), wire)


def _labels(runs: list[RunDir]) -> list[tuple[RunDir, str, str]]:
    """(run, mode, label) for every mode of every run; the folder name disambiguates repeats."""
    pairs = [(run, mode) for run in runs for mode in run.modes]
    base = [f"{run.scenario_name}/{mode}" for run, mode in pairs]
    labels = []
    for (run, mode), label in zip(pairs, base):
        labels.append(f"{label} ({run.path.name})" if base.count(label) > 1 else label)
    if len(set(labels)) != len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return [(run, mode, label) for (run, mode), label in zip(pairs, labels)]


def compare_runs(paths: list[str | Path], baseline: str | None = None) -> Comparison:
    """Compare every mode of every run in ``paths`` against ``baseline`` (default: the first DKG side)."""
    runs = [open_run(p) for p in paths]
    sides = [Side(run, mode, label, mode_samples_of(run, mode)) for run, mode, label in _labels(runs)]
    names = [side.label for side in sides]
    if baseline is None:
        baseline = next((side.label for side in sides if side.mode == "dkg"), names[0])
    elif baseline not in names:
        raise CompareError(f"baseline {baseline!r} is not one of: {', '.join(names)}")
    base = next(side for side in sides if side.label == baseline)
    paper = load_paper()
    rows = []
    for side in sides:
        for name in METRICS:
            value = estimate(side.samples, name)
            if value is None:
                continue
            row = _row(side, name, value, baseline)
            if side is not base:
                found = difference(side.samples, base.samples, name)
                if found is not None:
                    row.update(diff=found.diff, diff_ci95_low=found.low, diff_ci95_high=found.high,
                               p_value=found.p_value, significant=found.significant, test=found.method,
                               rel_diff_pct=found.rel_pct)
                figure = paper.for_difference(name, side.mode, base.mode)
                if figure is not None:
                    row.update(paper=figure.text, paper_source=figure.source)
            rows.append(row)
    warnings = [f"{run.path.name}: {text}" for run in runs for text in run.warnings]
    return Comparison(pd.DataFrame(rows, columns=list(COMPARE_COLUMNS)), baseline, sides, warnings)


def _row(side: Side, name: str, value, baseline: str) -> dict:
    metric = METRICS[name]
    return {"schema_version": ANALYSIS_SCHEMA_VERSION, "label": side.label, "run": str(side.run.path),
            "scenario": side.run.scenario_name, "mode": side.mode, "status": side.run.status,
            "emulation": side.run.emulation, "metric": name, "unit": metric.unit, "n": value.n,
            "device_hours": side.samples.device_hours if metric.kind == "device" else math.nan,
            "mean": value.mean, "ci95_low": value.low, "ci95_high": value.high, "ci95_half": value.half_width,
            "ci_method": value.method, "baseline": baseline, "diff": math.nan, "diff_ci95_low": math.nan,
            "diff_ci95_high": math.nan, "p_value": math.nan, "significant": None, "test": "",
            "rel_diff_pct": math.nan, "paper": "", "paper_source": ""}


def shown_metrics(frame: pd.DataFrame, metrics: tuple[str, ...] = TABLE_METRICS) -> list[str]:
    """The ``metrics`` worth a table row: present in ``frame``, accounting ones only where some side
    has a non-zero count (the terminal table and the HTML report show the same rows)."""
    present = set(frame["metric"])
    shown = []
    for name in metrics:
        if name not in present:
            continue
        if name in _ACCOUNTING and not (frame.loc[frame["metric"] == name, "mean"].fillna(0) > 0).any():
            continue  # nothing of that kind happened on any side: a row of zeros says nothing
        shown.append(name)
    return shown


def render_table(comparison: Comparison, metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """Terminal tables: each side's figures (mean ± CI half width, or [low, high] for proportions,
    with n), then each difference to the baseline with its CI, relative difference, p and the paper."""
    frame, baseline = comparison.frame, comparison.baseline
    labels = [side.label for side in comparison.sides]
    shown = shown_metrics(frame, metrics)
    lines = [_side_line(side) for side in comparison.sides] + [""]
    table = [["metric"] + labels]
    for name in shown:
        rows = frame[frame["metric"] == name].set_index("label")
        table.append([f"{name} [{METRICS[name].unit}]"] + [estimate_text(rows.loc[label]) if label in rows.index
                                                           else "-" for label in labels])
    lines += _grid(table)
    diffs = [[f"difference to {baseline}", "diff [95% CI]", "rel.", "p", "paper"]]
    for label in labels:
        if label == baseline:
            continue
        for name in shown:
            rows = frame[(frame["metric"] == name) & (frame["label"] == label)]
            if rows.empty or not math.isfinite(rows["diff"].iloc[0]):
                continue
            diffs.append([f"{label} {name} [{METRICS[name].unit}]", *difference_texts(rows.iloc[0]),
                          rows.iloc[0]["paper"] or ""])
    if len(diffs) > 1:
        lines += [""] + _grid(diffs)
    lines += ["", *method_lines(frame)]
    for side in comparison.sides:
        if side.run.degraded:
            lines.append(f"DEGRADED: {side.label} comes from a run whose emulation fell behind "
                         f"(metadata emulation_health): its figures are suspect.")
        if side.run.status != "completed":
            lines.append(f"note: {side.label} comes from a run with status {side.run.status!r}.")
    lines += [f"warning: {text}" for text in comparison.warnings]
    return "\n".join(lines)


def _side_line(side: Side) -> str:
    counts, devices = side.samples.counts, side.samples.devices
    energy = f"{len(devices)} devices, {side.samples.device_hours:.4g} device-h" if len(devices) else "no energy rows"
    return (f"{side.label}: {side.run.path.name} ({side.run.status}, emulation {side.run.emulation}): "
            f"{energy}, {counts['readings']} readings, {counts['received']} received")


def method_lines(frame: pd.DataFrame) -> list[str]:
    """Name every interval and test used (one line each), from the rows' own method texts."""
    groups = (("energy", "rdc"), ("latency", "latency_ms"), ("loss", "loss_pct"))
    methods = frame.drop_duplicates("metric").set_index("metric")["ci_method"]
    text = ["intervals: " + "; ".join(f"{what}: {methods[name]}" for what, name in groups if name in methods.index)]
    tests = frame[frame["test"] != ""].drop_duplicates("metric").set_index("metric")["test"]
    if len(tests):
        text.append("differences: " + "; ".join(f"{what}: {tests[name]}" for what, name in groups
                                                if name in tests.index))
        text.append("n.s. = not significant at 5% (p >= 0.05); rel. = difference relative to the baseline; "
                    "paper: experiments/paper.toml")
    return text


def _grid(table: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    text.insert(1, "  ".join("-" * w for w in widths))
    return text


def estimate_text(row) -> str:
    """One side's figure of a comparison row: ``mean ± half width (n=...)``, proportions ``mean [low, high]``."""
    if METRICS[row["metric"]].kind == "proportion":
        cell = f"{_fmt(row['mean'])} [{_fmt(row['ci95_low'])}, {_fmt(row['ci95_high'])}]"  # Wilson: asymmetric
    else:
        cell = f"{_fmt(row['mean'])} ± {_fmt(row['ci95_half'])}"
    return f"{cell} (n={int(row['n'])})"


def difference_texts(row) -> tuple[str, str, str]:
    """A comparison row's difference to the baseline as text: ``diff [low, high]``, the relative
    difference and the p-value (``n.s.`` when not significant at 5%)."""
    return (f"{_signed(row['diff'])} [{_signed(row['diff_ci95_low'])}, {_signed(row['diff_ci95_high'])}]",
            _pct(row["rel_diff_pct"]), _p_cell(row))


def _p_cell(row) -> str:
    p = row["p_value"]
    if not isinstance(p, float) or not math.isfinite(p):
        return "n/a"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return text if row["significant"] else f"{text} n.s."


def _fmt(value: float) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def _signed(value: float) -> str:
    text = _fmt(value)
    return text if text in ("n/a", "0") or text.startswith("-") else f"+{text}"


def _pct(value: float) -> str:
    return f"{value:+.1f}%" if isinstance(value, float) and math.isfinite(value) else "n/a"


def to_records(comparison: Comparison) -> dict:
    """The JSON export: ``schema_version``, ``baseline``, ``warnings``, ``metrics`` (unit and what
    one sample is, per metric present) and ``rows`` (NaN as null)."""
    rows = json.loads(comparison.frame.to_json(orient="records"))
    present = dict.fromkeys(comparison.frame["metric"])
    metrics = {name: {"unit": METRICS[name].unit, "sample": METRICS[name].sample} for name in present}
    return {"schema_version": ANALYSIS_SCHEMA_VERSION, "baseline": comparison.baseline,
            "warnings": comparison.warnings, "metrics": metrics, "rows": rows}


def to_json(comparison: Comparison) -> str:
    """:func:`to_records` as indented JSON text."""
    return json.dumps(to_records(comparison), indent=2)


def to_csv(comparison: Comparison) -> str:
    """The CSV export: :data:`COMPARE_COLUMNS`, one row per (side, metric)."""
    return comparison.frame.to_csv(index=False)


def headline(run_dir: str | Path) -> str:
    """The table ``qiot run`` prints at its end: RDC, battery life, latency and loss of each mode with n
    and CI, QKD's difference to DKG with CI, p and the paper's figure, and where the figures are.

    Never raises for a damaged run or paper.toml: it then says, in one line, why there is no table.
    """
    root = Path(run_dir)
    try:
        comparison = compare_runs([root])
    except (RunDirError, CompareError, PaperError) as exc:
        return f"results: no summary table for {root}: {str(exc).splitlines()[0]}"
    lines = [render_table(comparison, HEADLINE_METRICS), _capacity_line(comparison.sides[0].run),
             *_served_lines(comparison.sides[0].run)]
    figures = sorted((root / "figures").glob("*.png")) if (root / "figures").is_dir() else []
    if figures:
        lines.append(f"figures: {root / 'figures'}/ ({', '.join(p.name for p in figures)}; PDF beside each)")
    else:
        lines.append(f"figures: not drawn yet; `qiot plot {root}` writes them to {root / 'figures'}/")
    return "\n".join(line for line in lines if line)


def _served_lines(run: RunDir) -> list[str]:
    """A capacity experiment's keys served per refresh period, as its analysis stored them."""
    from harness.analysis.served import measures_capacity, served_lines

    table = run.keys_served() if measures_capacity(run.scenario) else None
    if table is None or table.empty:
        return []
    return served_lines(table, float(run.scenario.get("fibre", {}).get("loss_db", math.nan)))


def _capacity_line(run: RunDir) -> str:
    """The paper's Fig. 2d point for the run's scenario (compare with ``qiot capacity``), if it has one."""
    point = load_paper().capacity.get(run.scenario_name)
    if point is None:
        return ""
    return (f"paper, Fig. 2d ({point.scenario}, {point.loss_db:g} dB, {point.key_rate_bps:g} bit/s): "
            f"~{point.devices_per_30_min:,.0f} devices per 30 min, {point.buffer_devices:,.0f} every "
            f"~{point.buffer_fill_min:g} min; the model: `qiot capacity --scenario {point.scenario}`")
