"""Benchmark: where a run's wall time goes, measured from the metadata of real runs, and the costs of
``experiments/walltime.toml`` fitted to them.

For each run directory (status ``completed``) it splits ``started`` .. ``ended`` with the clock epoch
of each mode (``mode_results.<mode>.clock_epoch``: when that mode's devices started):

- bring-up: ``started`` to the first mode's epoch, less the first device keys' distillation
  (:func:`harness.walltime.first_keys_wall_s`: the warm-up and the missing keys) when the QKD mode runs first;
- end of a mode: from its emulated end (epoch + hours / time scale) to the next mode's epoch, and
  for the last mode to ``ended`` (which includes the teardown);
- analysis and figures: ``ended`` to the newest of ``metadata.json``, ``analysis.json`` and
  ``figures/*`` (file times: only meaningful in the run's own directory, not in a copy).

Then it fits ``bring_up_s + bring_up_per_device_s * devices``, ``mode_end_s`` (the mean gap between
modes), ``teardown_per_device_s`` (what the last mode's end adds, per device) and ``analysis_s +
analysis_per_message_s * messages`` by least squares, prints them next to the settings file's
figures, and prints each run's actual and estimated wall time. Nothing is asserted.

Usage: ``python benchmarks/bench_walltime.py RUN_DIR [RUN_DIR ...]``
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from harness import walltime
from harness.enums import Mode
from harness.scenario import ScenarioSettings
from harness.settings import from_table


def decompose(run_dir: Path) -> dict | None:
    """The parts of one run's wall time, or None for a run that did not complete."""
    metadata = json.loads((run_dir / "metadata.json").read_text())
    if metadata.get("status") != "completed" or not metadata.get("ended"):
        return None
    settings = from_table(ScenarioSettings, metadata["scenario"], user=False)
    started = datetime.fromisoformat(metadata["started"]).timestamp()
    ended = datetime.fromisoformat(metadata["ended"]).timestamp()
    modes = list(metadata["modes"])
    epochs = [metadata["mode_results"][mode]["clock_epoch"] for mode in modes]
    mode_wall = settings.run.hours * 3600.0 / settings.run.time_scale
    first_keys = (walltime.first_keys_wall_s(settings.qkd, settings.devices.count, settings.run.time_scale,
                                             walltime.load_settings().costs) if modes[0] == Mode.QKD else 0.0)
    ends = [nxt - (epoch + mode_wall) for epoch, nxt in zip(epochs, epochs[1:])]
    newest = max((p.stat().st_mtime for p in [run_dir / "metadata.json", run_dir / "analysis.json",
                                               *(run_dir / "figures").glob("*")] if p.exists()), default=ended)
    return {"run": run_dir.name, "devices": settings.devices.count, "modes": modes, "hours": settings.run.hours,
            "time_scale": settings.run.time_scale, "faults": len(metadata.get("faults", [])),
            "wall_s": ended - started + max(0.0, newest - ended), "bring_up_s": epochs[0] - started - first_keys,
            "between_modes_s": ends, "last_end_s": ended - (epochs[-1] + mode_wall),
            "analysis_s": newest - ended if newest > ended else math.nan,
            "messages": settings.devices.count * len(modes) * math.floor(settings.run.hours * 3600.0
                                                                         / settings.devices.wake_period_s),
            "settings": settings}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope by least squares (slope 0 when every x is the same)."""
    if len(set(xs)) < 2:
        return float(np.mean(ys)), 0.0
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(intercept), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    runs = [r for r in (decompose(d) for d in args.run_dirs) if r is not None]
    if not runs:
        raise SystemExit("no completed run among the directories given")
    for r in runs:
        print(f"{r['run']}: {r['devices']} devices, {'+'.join(r['modes'])}, {r['hours']:g} h at x{r['time_scale']:g}, "
              f"{r['faults']} faults: wall {r['wall_s']:.1f} s; bring-up {r['bring_up_s']:.2f} s, between modes "
              f"{', '.join(f'{s:.2f}' for s in r['between_modes_s']) or '-'} s, last end {r['last_end_s']:.2f} s, "
              f"analysis {r['analysis_s']:.2f} s, {r['messages']} messages")
    bring_up = fit_line([r["devices"] for r in runs], [r["bring_up_s"] for r in runs])
    gaps = [s for r in runs for s in r["between_modes_s"]]
    mode_end = float(np.mean(gaps)) if gaps else float(np.mean([r["last_end_s"] for r in runs]))
    _, teardown = fit_line([r["devices"] for r in runs], [r["last_end_s"] - mode_end for r in runs])
    analysed = [r for r in runs if not math.isnan(r["analysis_s"])]
    analysis = fit_line([r["messages"] for r in analysed], [r["analysis_s"] for r in analysed]) if analysed else None
    current = walltime.load_settings().costs
    print(f"\nfitted from {len(runs)} runs (current {walltime.WALLTIME_LABEL} in brackets):")
    print(f"  bring_up_s = {bring_up[0]:.2f} ({current.bring_up_s:g}), "
          f"bring_up_per_device_s = {bring_up[1]:.4f} ({current.bring_up_per_device_s:g})")
    print(f"  mode_end_s = {mode_end:.2f} ({current.mode_end_s:g}) from {len(gaps)} gaps between modes, "
          f"teardown_per_device_s = {max(teardown, 0.0):.4f} ({current.teardown_per_device_s:g})")
    if analysis:
        print(f"  analysis_s = {analysis[0]:.2f} ({current.analysis_s:g}), analysis_per_message_s = "
              f"{analysis[1]:.6f} ({current.analysis_per_message_s:g}) from {len(analysed)} runs")
    print("\nactual vs estimated with the current settings file:")
    for r in runs:
        expected = walltime.estimate(r["settings"], r["modes"], current).total_s
        print(f"  {r['run']}: {r['wall_s']:.1f} s actual, {expected:.1f} s estimated "
              f"({100 * (expected - r['wall_s']) / r['wall_s']:+.0f} %)")


if __name__ == "__main__":
    main()
