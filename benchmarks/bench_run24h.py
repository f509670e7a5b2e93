"""Benchmark: a 24 h emulated ``bcn`` run in both modes, and acceleration versus real time.

Prints (does not assert) the wall time of ``qiot run --hours 24`` at a given time scale, the memory
of the run's processes sampled over the run (it should stay flat), and the latency distribution of
that accelerated run next to an unaccelerated slice of the same scenario: acceleration compresses
sleep, never the network, so the two distributions must agree.

Usage (as root, from the checkout)::

    .venv/bin/python benchmarks/bench_run24h.py [--devices 50] [--time-scale 300] [--slice-hours 0.1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from harness.state import STATE_DIR, read_records


def sample_memory(stop: threading.Event, samples: list, interval_s: float = 10.0) -> None:
    """Total RSS (MiB) of every process the running qiot run recorded, every ``interval_s``."""
    start = time.monotonic()
    while not stop.wait(interval_s):
        total_kib = 0
        for state_file in STATE_DIR.glob("*.jsonl"):
            for record in read_records(state_file):
                if record.kind != "process" or not record.pid:
                    continue
                try:
                    status = Path(f"/proc/{record.pid}/status").read_text()
                except OSError:
                    continue
                total_kib += next((int(line.split()[1]) for line in status.splitlines()
                                   if line.startswith("VmRSS:")), 0)
        samples.append((time.monotonic() - start, total_kib / 1024))


def run(out: Path, hours: float, devices: int, time_scale: float) -> tuple[Path, float, list]:
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(stop, samples), daemon=True)
    sampler.start()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--scenario", "bcn", "--hours", str(hours),
                             "--devices", str(devices), "--time-scale", str(time_scale), "--mode", "both", "--yes",
                             "--out", str(out), "--quiet"], capture_output=True, text=True)
    wall = time.monotonic() - started
    stop.set()
    if result.returncode != 0:
        sys.exit(f"qiot run failed:\n{result.stdout}\n{result.stderr}")
    run_dir = sorted(p for p in out.iterdir() if p.is_dir())[-1]
    return run_dir, wall, samples


def latency(run_dir: Path, mode: str) -> pd.Series:
    messages = pd.read_csv(run_dir / mode / "messages.csv")
    return messages.loc[messages["received"] == 1, "latency_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--time-scale", type=float, default=300.0)
    parser.add_argument("--slice-hours", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    day_dir, day_wall, memory = run(args.out, 24.0, args.devices, args.time_scale)
    print(f"24 h bcn, {args.devices} devices, both modes, time scale {args.time_scale:g}: "
          f"{day_wall:.0f} s wall ({day_wall / 60:.1f} min) -> {day_dir}")
    if memory:
        mib = [m for _, m in memory]
        third = max(1, len(mib) // 3)
        print(f"  memory of the run's processes: first third mean {sum(mib[:third]) / third:.0f} MiB, "
              f"last third mean {sum(mib[-third:]) / third:.0f} MiB, max {max(mib):.0f} MiB ({len(mib)} samples)")
    slice_dir, slice_wall, _ = run(args.out, args.slice_hours, args.devices, 1.0)
    print(f"unaccelerated slice: {args.slice_hours:g} h in {slice_wall:.0f} s -> {slice_dir}")
    metadata = json.loads((day_dir / "metadata.json").read_text())
    for mode in ("qkd", "dkg"):
        fast, real = latency(day_dir, mode), latency(slice_dir, mode)
        print(f"  {mode} latency ms   accelerated: n={len(fast)} p50={fast.median():.2f} p95={fast.quantile(.95):.2f} "
              f"mean={fast.mean():.2f} | real time: n={len(real)} p50={real.median():.2f} "
              f"p95={real.quantile(.95):.2f} mean={real.mean():.2f}")
        summary = metadata["mode_results"][mode]["summary"]
        print(f"  {mode} 24 h: loss {summary['loss_pct']:.3f}%, RDC {100 * summary['rdc_mean']:.3f}% "
              f"(+/- {100 * summary['rdc_ci95']:.3f}), battery {summary['battery_life_days_mean']:.1f} days "
              f"(+/- {summary['battery_life_days_ci95']:.1f})")
    try:
        from scipy import stats

        for mode in ("qkd", "dkg"):
            ks = stats.ks_2samp(latency(day_dir, mode), latency(slice_dir, mode))
            print(f"  {mode}: two-sample KS statistic {ks.statistic:.3f} (p={ks.pvalue:.3f})")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
