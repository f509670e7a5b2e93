"""Side-by-side comparison of modes and runs: RDC, battery life, latency and loss with 95% CIs.

Every (run, mode) pair becomes one labelled column, ``<scenario>/<mode>`` (plus the run folder's
name when two runs share a scenario), so QKD vs DKG of one run and HPN vs BCN across runs read the
same way. The sample for each figure is stated in :data:`METRICS`; relative differences are taken
against one baseline column (by default the first DKG column: the paper reports QKD relative to DKG).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.analysis.rundir import RunDir, open_run
from harness.analysis.stats import Estimate, mean_ci, proportion_ci, relative_difference

#: metric -> (unit, what one sample is). The order is the table's row order.
METRICS = {
    "rdc": ("%", "one device over one full energy-accounting interval (energy.csv row)"),
    "battery_life_days": ("days", "one device over one full energy-accounting interval (energy.csv row)"),
    "latency_ms": ("ms", "one received message, application record (messages.csv)"),
    "loss_pct": ("%", "proportion of messages not received, Wilson interval (messages.csv)"),
    "wire_latency_ms": ("ms", "one message seen in the broker-side capture (wire.csv)"),
    "wire_loss_pct": ("%", "proportion of messages not in the broker-side capture (wire.csv)"),
}

_PROPORTIONS = ("loss_pct", "wire_loss_pct")

#: Columns of the long-format result (CSV/JSON output of ``qiot compare``).
COMPARE_COLUMNS = ("label", "run", "scenario", "mode", "status", "metric", "unit", "mean", "ci95_low",
                   "ci95_high", "ci95_half", "n", "baseline", "diff", "rel_diff_pct")


class CompareError(ValueError):
    """Bad comparison request (e.g. an unknown baseline label)."""


def mode_metrics(run: RunDir, mode: str) -> dict[str, Estimate]:
    """The :data:`METRICS` of one mode of one run (wire metrics only when wire.csv holds a capture)."""
    messages = run.messages(mode)
    energy = run.energy(mode) if (run.mode_dir(mode) / "energy.csv").is_file() else None
    out: dict[str, Estimate] = {}
    if energy is not None and len(energy):
        # Like the energy summary (harness.energy.stats): partial first/last rows are left out
        # when full-length rows exist, so they do not skew the spread.
        duration = energy["t_end_s"] - energy["t_start_s"]
        full = energy[duration >= duration.max() * (1 - 1e-9)]
        energy = full if len(full) else energy
        out["rdc"] = _scaled(mean_ci(energy["rdc"]), 100.0)
        out["battery_life_days"] = mean_ci(energy["battery_life_days"])
    out["latency_ms"] = mean_ci(messages.loc[messages["received"] == 1, "latency_ms"])
    out["loss_pct"] = _scaled(proportion_ci(int((messages["received"] != 1).sum()), len(messages)), 100.0)
    wire_path = run.mode_dir(mode) / "wire.csv"
    if wire_path.is_file():
        wire = pd.read_csv(wire_path)
        if "broker_seen" in wire and wire["broker_seen"].notna().any():
            seen = wire["broker_seen"] == 1
            out["wire_latency_ms"] = mean_ci(wire.loc[seen, "wire_latency_ms"])
            out["wire_loss_pct"] = _scaled(proportion_ci(int((~seen).sum()), len(wire)), 100.0)
    return out


def _scaled(estimate: Estimate, factor: float) -> Estimate:
    return Estimate(estimate.mean * factor, estimate.low * factor, estimate.high * factor, estimate.n)


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


def compare_runs(paths: list[str | Path], baseline: str | None = None) -> pd.DataFrame:
    """Compare every mode of every run in ``paths``; long format, :data:`COMPARE_COLUMNS`."""
    runs = [open_run(p) for p in paths]
    labelled = _labels(runs)
    names = [label for _, _, label in labelled]
    if baseline is None:
        baseline = next((label for _, mode, label in labelled if mode == "dkg"), names[0])
    elif baseline not in names:
        raise CompareError(f"baseline {baseline!r} is not one of: {', '.join(names)}")
    rows = []
    for run, mode, label in labelled:
        for metric, estimate in mode_metrics(run, mode).items():
            rows.append({"label": label, "run": str(run.path), "scenario": run.scenario_name, "mode": mode,
                         "status": run.metadata.get("status", "?"), "metric": metric,
                         "unit": METRICS[metric][0], "mean": estimate.mean, "ci95_low": estimate.low,
                         "ci95_high": estimate.high, "ci95_half": estimate.half_width, "n": estimate.n,
                         "baseline": baseline})
    frame = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    reference = frame[frame["label"] == baseline].set_index("metric")["mean"]
    frame["diff"] = [m - reference.get(metric, math.nan) for metric, m in zip(frame["metric"], frame["mean"])]
    frame["rel_diff_pct"] = [100 * relative_difference(m, reference.get(metric, math.nan))
                             for metric, m in zip(frame["metric"], frame["mean"])]
    return frame


def render_table(frame: pd.DataFrame) -> str:
    """Terminal table: one row per metric, one column per label: ``mean ± ci95_half (rel. diff)``;
    proportions show ``mean [low, high]`` since their interval is asymmetric."""
    labels = list(dict.fromkeys(frame["label"]))
    baseline = frame["baseline"].iloc[0] if len(frame) else ""
    header = ["metric"] + labels
    lines = [header]
    for metric, (unit, _) in METRICS.items():
        rows = frame[frame["metric"] == metric].set_index("label")
        if rows.empty:
            continue
        cells = [f"{metric} [{unit}]"]
        for label in labels:
            if label not in rows.index:
                cells.append("-")
                continue
            row = rows.loc[label]
            if metric in _PROPORTIONS:  # Wilson intervals are asymmetric: show both ends
                cell = f"{_fmt(row['mean'])} [{_fmt(row['ci95_low'])}, {_fmt(row['ci95_high'])}]"
            else:
                cell = f"{_fmt(row['mean'])} ± {_fmt(row['ci95_half'])}"
            if label != baseline and math.isfinite(row["rel_diff_pct"]):
                cell += f" ({row['rel_diff_pct']:+.1f}%)"
            cells.append(cell)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append(f"\n95% confidence intervals; (x%) = relative difference to {baseline}.")
    unfinished = frame[frame["status"] != "completed"][["label", "status"]].drop_duplicates()
    for label, status in unfinished.itertuples(index=False):
        text.append(f"note: {label} comes from a run with status {status!r}.")
    return "\n".join(text)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def to_json(frame: pd.DataFrame) -> str:
    """JSON list of row objects (NaN written as null)."""
    records = json.loads(frame.to_json(orient="records"))
    return json.dumps(records, indent=2)
