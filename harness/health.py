"""Emulation health: did the emulator keep up, so that the run's figures mean what they say?

An emulation on a shared 2-core machine can fall behind without failing: device wakes start late,
packets wait in the shaper longer than the configured delay, every exchange takes longer than the
network would take, and the energy model charges that time to the devices' radios. A run measures
each of these and compares it with thresholds measured on healthy and overloaded runs of this
machine (``experiments/health.toml``, each threshold with how it was derived):

- ``wake_lag_p95_s``: how late device wakes started against their emulated time, in wall seconds
  (the fleet's scheduler);
- ``exchange_excess_p95_ms``: how much longer the devices' network exchanges took than the shaped
  link's round trips and air time allow (the fleet, per exchange);
- ``cpu_saturated_fraction``: the share of 1 s samples in which the machine's CPUs were busier than
  the threshold (``/proc/stat``, sampled by the run);
- ``shaper_late_p95_ms``: how late the fallback shaper released packets against their due time (the
  shaper's own count, where the shaper runs).

A mode is ``degraded`` if any figure exceeds its threshold; the run is as healthy as its worst mode.
Pure code: the sampling of ``/proc/stat`` is :class:`CpuSampler`, which reads a file and nothing else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.scenario import EXPERIMENTS_DIR
from harness.settings import SettingsError, from_table, read_toml, setting

HEALTH_FILE = EXPERIMENTS_DIR / "health.toml"
OK, DEGRADED = "ok", "degraded"


@dataclass(frozen=True, kw_only=True)
class HealthThresholds:
    """Where a figure stops being healthy (``experiments/health.toml`` gives each one's measurement)."""

    wake_lag_p95_s: float = setting(doc="device wakes late by more than this (wall s, 95th percentile)", above=0.0)
    exchange_excess_p95_ms: float = setting(doc="network exchanges longer than the shaped link explains by "
                                                "more than this (ms, 95th percentile)", above=0.0)
    cpu_busy_pct: float = setting(doc="a 1 s CPU sample counts as saturated above this busy share (%)",
                                  above=0.0, maximum=100.0)
    cpu_saturated_fraction: float = setting(doc="degraded when more than this share of the samples is saturated",
                                            minimum=0.0, maximum=1.0)
    shaper_late_p95_ms: float = setting(doc="packets released later than due by more than this (ms, 95th "
                                            "percentile)", above=0.0)


def load_thresholds(path: Path = HEALTH_FILE) -> HealthThresholds:
    table = read_toml(path)
    return from_table(HealthThresholds, table.get("thresholds", {}), path=path, where=("thresholds",),
                      error=SettingsError)


def percentile(values, q: float) -> float:
    values = np.asarray(list(values), dtype=float)
    return float(np.percentile(values, q)) if values.size else 0.0


class CpuSampler:
    """Samples the machine's CPU busy share once a second from ``/proc/stat`` in a thread."""

    def __init__(self, interval_s: float = 1.0, stat_path: str = "/proc/stat") -> None:
        self.interval_s, self.stat_path = interval_s, stat_path
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[int, int]:
        fields = Path(self.stat_path).read_text().split("\n", 1)[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    def _run(self) -> None:
        total, idle = self._read()
        while not self._stop.wait(self.interval_s):
            now_total, now_idle = self._read()
            span = now_total - total
            if span > 0:
                self.samples.append(100.0 * (1.0 - (now_idle - idle) / span))
            total, idle = now_total, now_idle

    def start(self) -> "CpuSampler":
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.samples


def assess(fleet: dict | None, cpu_samples: list[float], shaper: dict | None,
           thresholds: HealthThresholds) -> dict:
    """One mode's health: its figures, the thresholds and ``ok`` / ``degraded`` with the reasons."""
    figures: dict = {}
    reasons: list[str] = []
    if fleet:
        figures["wake_lag_p95_s"] = fleet["lag"]["p95_wall_s"]
        figures["wake_lag_max_s"] = fleet["lag"]["max_wall_s"]
        figures["exchange_excess_p50_ms"] = fleet["exchanges"]["excess_p50_ms"]
        figures["exchange_excess_p95_ms"] = fleet["exchanges"]["excess_p95_ms"]
        figures["exchanges"] = fleet["exchanges"]["count"]
    if cpu_samples:
        saturated = sum(1 for s in cpu_samples if s > thresholds.cpu_busy_pct) / len(cpu_samples)
        figures.update(cpu_busy_mean_pct=float(np.mean(cpu_samples)), cpu_saturated_fraction=saturated,
                       cpu_samples=len(cpu_samples))
    if shaper:
        figures["shaper_late_p95_ms"] = shaper.get("late_p95_ms", 0.0)
        figures["shaper_packets"] = shaper.get("packets", 0)
    for key, limit in (("wake_lag_p95_s", thresholds.wake_lag_p95_s),
                       ("exchange_excess_p95_ms", thresholds.exchange_excess_p95_ms),
                       ("cpu_saturated_fraction", thresholds.cpu_saturated_fraction),
                       ("shaper_late_p95_ms", thresholds.shaper_late_p95_ms)):
        if key in figures and figures[key] > limit:
            reasons.append(f"{key} {figures[key]:.3g} > {limit:g}")
    measured = bool(figures)
    return {"status": (DEGRADED if reasons else OK) if measured else "not measured", "figures": figures,
            "thresholds": {k: getattr(thresholds, k) for k in thresholds.__dataclass_fields__},
            "reasons": reasons, "measured_at": time.time()}


def worst(modes: dict[str, dict]) -> dict:
    """The run's health from its modes' (the worst status; every mode's reasons)."""
    statuses = [m["status"] for m in modes.values()]
    status = DEGRADED if DEGRADED in statuses else OK if OK in statuses else "not measured"
    return {"status": status, "modes": modes,
            "reasons": [f"{mode}: {r}" for mode, m in modes.items() for r in m["reasons"]],
            "thresholds_file": str(HEALTH_FILE.relative_to(HEALTH_FILE.parent.parent))}
