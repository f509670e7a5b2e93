"""Emulation health: did the emulator keep up, so that the run's figures mean what they say?

An emulation on a shared 2-core machine can fall behind without failing: device wakes start late,
packets wait in the shaper longer than the configured delay, every exchange takes longer than the
network would take, and the energy model charges that time to the devices' radios. A run measures
each of these and compares it with thresholds measured on healthy and overloaded runs of this
machine (``experiments/health.toml``, each threshold with how it was derived):

- ``wake_lag_steady_p95_s`` and ``startup_share``: how late device wakes started against their
  emulated time, in wall seconds (the fleet's scheduler, per window of emulated minutes holding
  at least a hundred wakes). Devices that all make their first key exchange within the first wake
  period can leave a backlog that drains over some minutes; the lag once it has drained (the worst
  window's 95th percentile from then on) is judged
  against ``wake_lag_p95_s``, and the time it took to drain, as a share of the mode, against
  ``startup_share``. A late start does not itself bias the figures (a wake is charged at its
  scheduled time; what the network took is the host share below), but a run that spends most of
  its time catching up does not run at the emulated pace. The whole mode's p95 and maximum, and the
  minute the wakes caught up, are reported beside them; so is the part of the lag that was the
  devices' own (a wake that took longer than wake period / time scale of wall time delays its
  device's next one: the network is not accelerated) and the host's part, and a degraded reason
  says which of the two it was (``_lag_cause``);
- ``exchange_host_share_pct``: what the host adds to the devices' network exchanges beyond what the
  shaped link's round trips and air time explain, as a share of the devices' radio-on time: the bias
  the host can have put into the radio duty cycle, so its threshold is set against the effect being
  measured. The host's part is the median excess per exchange times the exchanges: the configured
  wireless loss makes some exchanges wait for TCP retransmissions (200 ms and more), which is the
  modelled radio's behaviour and charged to the device on purpose, but at a loss of a few percent
  most exchanges lose nothing, so the median is the host's alone. The whole excess (loss recovery
  included) and the 50th/95th percentile and maximum (ms, overall and per wake step) are reported
  beside it;
- ``cpu_saturated_fraction``: the share of 1 s samples in which the machine's CPUs were busier than
  the threshold (``/proc/stat``, sampled by the run);
- ``shaper_late_p95_ms``: how late the fallback shaper released packets against their due time (the
  shaper's own count, where the shaper runs).

A mode is ``degraded`` if any figure exceeds its threshold; the run is as healthy as its worst mode.
Pure code: the sampling of ``/proc/stat`` is :class:`CpuSampler`, which reads a file and nothing else.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.scenario import EXPERIMENTS_DIR
from harness.settings import SettingsError, from_table, read_toml, setting

HEALTH_FILE = EXPERIMENTS_DIR / "health.toml"
OK, DEGRADED, NOT_MEASURED = "ok", "degraded", "not measured"


@dataclass(frozen=True, kw_only=True)
class HealthThresholds:
    """Where a figure stops being healthy (``experiments/health.toml`` gives each one's measurement)."""

    wake_lag_p95_s: float = setting(doc="device wakes late by more than this (wall s, 95th percentile of each "
                                        "window of >= 100 wakes once a start-up backlog has drained)", above=0.0)
    startup_share: float = setting(doc="the start-up backlog took more than this share of the mode to drain",
                                   above=0.0, maximum=1.0)
    exchange_host_share_pct: float = setting(doc="the host's median added time per exchange times the exchanges, "
                                                 "as a share of the devices' radio-on time, above this (%)",
                                             above=0.0)
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


class Reservoir:
    """A uniform sample of at most ``size`` values out of however many were offered (Vitter's
    algorithm R): percentiles of a long run then describe all of it, not its first ``size`` values.
    Not thread-safe: its owner locks. Seeded, so a rerun samples alike."""

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size, self.seen, self.values = size, 0, []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self._random.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value


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


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, its waited-for children included."""
    import os

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class ProcessCpu:
    """CPU seconds each named process used between :meth:`start` and :meth:`stop` (which ate the cores)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.before: dict[str, float] = {}
        self.started = 0.0

    def start(self) -> "ProcessCpu":
        self.started = time.monotonic()
        self.before = {name: cpu for name, pid in self.pids.items() if (cpu := process_cpu_s(pid)) is not None}
        return self

    def stop(self, extra: dict[str, int] | None = None) -> dict:
        """Per process: CPU seconds and the share of one core over the span (``extra``: processes
        that started during it, counted from zero)."""
        wall = max(1e-9, time.monotonic() - self.started)
        out = {}
        for name, pid in {**self.pids, **(extra or {})}.items():
            cpu = process_cpu_s(pid)
            if cpu is not None:
                used = cpu - self.before.get(name, 0.0)
                out[name] = {"cpu_s": round(used, 2), "cores": round(used / wall, 3)}
        return out


def assess(fleet: dict | None, cpu_samples: list[float], shaper: dict | None,
           thresholds: HealthThresholds, radio_on_s: float | None = None) -> dict:
    """One mode's health: its figures, the thresholds and ``ok`` / ``degraded`` with the reasons.
    ``radio_on_s``: the devices' radio-on time over the mode (transmit plus listen, emulated seconds),
    what the exchanges' excess is a share of; without it the share is not assessed."""
    figures: dict = {}
    reasons: list[str] = []
    if fleet:
        figures["wake_lag_p95_s"] = fleet["lag"]["p95_wall_s"]
        figures["wake_lag_max_s"] = fleet["lag"]["max_wall_s"]
        figures.update(_steady_lag(fleet["lag"], thresholds.wake_lag_p95_s))
        if fleet["lag"].get("wakes") and "overrun_wakes" in fleet["lag"]:
            figures["wake_overrun_share"] = fleet["lag"]["overrun_wakes"] / fleet["lag"]["wakes"]
            figures.update(_steady_lag(fleet["lag"], thresholds.wake_lag_p95_s, column=4, prefix="wake_lag_host"))
        figures["exchange_excess_p50_ms"] = fleet["exchanges"]["excess_p50_ms"]
        figures["exchange_excess_p95_ms"] = fleet["exchanges"]["excess_p95_ms"]
        figures["exchanges"] = fleet["exchanges"]["count"]
        if radio_on_s:
            exchanges = fleet["exchanges"]
            figures["radio_on_s"] = radio_on_s
            figures["exchange_host_share_pct"] = (100.0 * max(0.0, exchanges["excess_p50_ms"]) / 1000.0
                                                  * exchanges["count"] / radio_on_s)
            if "excess_sum_s" in exchanges:
                figures["exchange_excess_s"] = exchanges["excess_sum_s"]
                figures["exchange_excess_share_pct"] = 100.0 * exchanges["excess_sum_s"] / radio_on_s
    if cpu_samples:
        saturated = sum(1 for s in cpu_samples if s > thresholds.cpu_busy_pct) / len(cpu_samples)
        figures.update(cpu_busy_mean_pct=float(np.mean(cpu_samples)), cpu_saturated_fraction=saturated,
                       cpu_samples=len(cpu_samples))
    if shaper:
        figures["shaper_late_p95_ms"] = shaper.get("late_p95_ms", 0.0)
        figures["shaper_packets"] = shaper.get("packets", 0)
    for key, limit in (("wake_lag_steady_p95_s", thresholds.wake_lag_p95_s),
                       ("startup_share", thresholds.startup_share),
                       ("exchange_host_share_pct", thresholds.exchange_host_share_pct),
                       ("cpu_saturated_fraction", thresholds.cpu_saturated_fraction),
                       ("shaper_late_p95_ms", thresholds.shaper_late_p95_ms)):
        if key in figures and figures[key] > limit:
            reasons.append(f"{key} {figures[key]:.3g} > {limit:g}{_lag_cause(key, figures, thresholds)}")
    # Without the fleet's own figures (a fleet killed before its first report) nothing says the
    # devices kept up: CPU figures alone can condemn a mode, never clear it.
    measured = bool(fleet)
    status = DEGRADED if reasons else OK if measured else NOT_MEASURED
    return {"status": status, "figures": figures,
            "thresholds": {k: getattr(thresholds, k) for k in thresholds.__dataclass_fields__},
            "reasons": reasons, "measured_at": time.time()}


def _steady_lag(lag: dict, limit_s: float, column: int = 3, prefix: str = "wake_lag") -> dict:
    """The lag once the wakes have caught up: the first window of emulated minutes from which every
    window's p95 (``column`` of a window: 3 the whole lag, 4 the host's part) stays within ``limit_s``,
    the worst p95 from then on, and the share of the mode before it. A fleet report without windows
    (older runs) is judged on its whole p95."""
    windows = [w for w in lag.get("windows") or [] if len(w) > column]
    if not windows:
        return {f"{prefix}_steady_p95_s": lag["p95_wall_s"]} if column == 3 else {}
    settled = None
    for window in windows:
        if window[column] > limit_s:
            settled = None
        elif settled is None:
            settled = window[0]
    start, span = windows[0][0], windows[-1][1] + 1 - windows[0][0]
    if settled is None:  # never caught up: the last window's lag stands for the mode
        return {f"{prefix}_steady_p95_s": windows[-1][column], f"{prefix}_caught_up_min": None,
                f"{prefix}_startup_share" if column != 3 else "startup_share": 1.0}
    return {f"{prefix}_steady_p95_s": max(w[column] for w in windows if w[0] >= settled),
            f"{prefix}_caught_up_min": settled,
            f"{prefix}_startup_share" if column != 3 else "startup_share": (settled - start) / span}


def _lag_cause(key: str, figures: dict, thresholds: HealthThresholds) -> str:
    """Why the wakes lagged, where the figures tell: the devices' own wakes outran their wall budget
    (wake period / time scale: the network is not accelerated) while the host kept up."""
    if key not in ("wake_lag_steady_p95_s", "startup_share") or "wake_lag_host_steady_p95_s" not in figures:
        return ""
    host_ok = (figures["wake_lag_host_steady_p95_s"] <= thresholds.wake_lag_p95_s
               and figures.get("wake_lag_host_startup_share", 0.0) <= thresholds.startup_share
               # a wake's duration counts as its device's: a host that slowed the wakes down shows here
               and figures.get("cpu_saturated_fraction", 0.0) <= thresholds.cpu_saturated_fraction
               and figures.get("exchange_host_share_pct", 0.0) <= thresholds.exchange_host_share_pct)
    if not host_ok:
        return " (the host fell behind)"
    return (f" (the devices' own wakes outran wake period / time scale in {figures['wake_overrun_share']:.1%} "
            f"of wakes, the host kept up: a lower --time-scale keeps the schedule)")


def worst(modes: dict[str, dict]) -> dict:
    """The run's health from its modes' (the worst status; every mode's reasons)."""
    statuses = [m["status"] for m in modes.values()]
    status = DEGRADED if DEGRADED in statuses else NOT_MEASURED if NOT_MEASURED in statuses or not statuses else OK
    return {"status": status, "modes": modes,
            "reasons": [f"{mode}: {r}" for mode, m in modes.items() for r in m["reasons"]],
            "thresholds_file": str(HEALTH_FILE.relative_to(HEALTH_FILE.parent.parent))}
