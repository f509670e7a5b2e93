"""The device fleet of one mode: every device of the run hosted in one process, on the real network.

A Python interpreter per device costs 20-30 MiB (platform-notes), so the devices share this process:
each wake runs on a worker thread that first enters its device's network namespace (``setns``
affects only that thread) and then opens its sockets there, so the device's traffic leaves from its
own address over its own shaped link. Run as ``python -m harness.devices.fleet --config
RUN_DIR/config/run.json --role devices-qkd --clock-epoch E``; prints ``READY`` once every device is
set up, appends one row per publish to ``sent.csv`` (flushed, so a crash keeps what was sent) and
the energy rows to ``energy.csv``, writes ``fleet.json`` (how late wakes started, failures) every
few seconds and at the end (``complete`` true), and exits when every device has reached the end of the mode, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import json
import queue
import resource
import signal
import sys
import threading
from pathlib import Path

from harness.clock import EmulatedClock
from harness.daemon import Daemon, python_daemon
from harness.devices.agent import DeviceAgent, SentRecord
from harness.devices.scheduler import WakeScheduler
from harness.devices.transport import NetworkTransport
from harness.emulator import fleet_settings
from harness.energy import DeviceProfile, IntervalRow, write_energy_csv
from harness.energy.wakecycle import assumed_outcome, check_plan
from harness.health import Reservoir, percentile
from harness.enums import Mode, values
from harness.netns import enter_namespace

#: fleet.json is rewritten this often (wall s) while the fleet runs: a killed fleet keeps its figures.
SNAPSHOT_EVERY_S = 5


class ExchangeStats:
    """How much longer each network exchange took than the shaped link explains (emulation health),
    overall and per wake step (which step is slow tells a structural cost from an overloaded host)."""

    #: Excess samples kept (a uniform sample of the whole run), overall and per step.
    SAMPLES = 200_000

    def __init__(self, profile: DeviceProfile, rtt_s: float) -> None:
        self.profile, self.rtt_s = profile, rtt_s
        self.excess_ms = Reservoir(self.SAMPLES)
        self.by_step: dict[str, Reservoir] = {}
        self.step_sum_s: dict[str, float] = {}
        self.step_max_ms: dict[str, float] = {}
        self.failed = 0
        self._lock = threading.Lock()

    def __call__(self, step, outcome, ok: bool) -> None:
        expected = assumed_outcome(self.profile, step, self.rtt_s).duration_s
        with self._lock:
            if not ok:
                self.failed += 1
                return
            excess = 1000.0 * (outcome.duration_s - expected)
            self.excess_ms.add(excess)
            self.by_step.setdefault(step.name, Reservoir(self.SAMPLES)).add(excess)
            # Exchanges faster than assumed do not pay back another's delay: count the delays only.
            self.step_sum_s[step.name] = self.step_sum_s.get(step.name, 0.0) + max(0.0, excess) / 1000.0
            self.step_max_ms[step.name] = max(self.step_max_ms.get(step.name, excess), excess)

    @property
    def excess_sum_s(self) -> float:
        return sum(self.step_sum_s.values())

    def as_dict(self) -> dict:
        # Copied under the lock, computed outside it: wake threads must not wait for percentiles.
        with self._lock:
            count, failed, samples = self.excess_ms.seen, self.failed, list(self.excess_ms.values)
            steps = {name: (r.seen, list(r.values), self.step_max_ms[name], self.step_sum_s[name])
                     for name, r in sorted(self.by_step.items())}
        return {"count": count, "failed": failed,
                "excess_sum_s": round(sum(total for *_, total in steps.values()), 3),
                "excess_p50_ms": percentile(samples, 50), "excess_p95_ms": percentile(samples, 95),
                "excess_max_ms": max((peak for _, _, peak, _ in steps.values()), default=0.0),
                "by_step": {name: {"count": seen, "excess_p50_ms": percentile(values, 50),
                                   "excess_p95_ms": percentile(values, 95), "excess_max_ms": peak,
                                   "excess_sum_s": round(total, 3)}
                            for name, (seen, values, peak, total) in steps.items()}}


class CsvSink:
    """``sent.csv`` and ``energy.csv`` of one mode, written by one writer thread.

    Wake threads only queue their rows: a lock held across a write and a flush made dozens of wake
    threads queue behind it whenever the writer waited for the interpreter lock (measured: 18 of 64
    wake threads blocked there in an overloaded 1,000-device run). The writer flushes after every
    batch it takes off the queue, so what a crash loses is the last fraction of a second.
    """

    def __init__(self, mode_dir: Path) -> None:
        mode_dir.mkdir(parents=True, exist_ok=True)
        path = mode_dir / "sent.csv"
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._energy_path = mode_dir / "energy.csv"
        if new:
            self._writer.writerow(SentRecord.FIELDS)
            self._file.flush()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="csv-writer", daemon=True)
        self._thread.start()

    def sent(self, record: SentRecord) -> None:
        self._queue.put(("sent", record.row()))

    def energy(self, rows: list[IntervalRow]) -> None:
        if rows:
            self._queue.put(("energy", rows))

    def _write(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:  # everything queued meanwhile goes out in the same flush
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            energy: list[IntervalRow] = []
            for kind, item in batch:
                if kind == "sent":
                    self._writer.writerow(item)
                elif kind == "energy":
                    energy += item
            self._file.flush()
            if energy:
                write_energy_csv(self._energy_path, energy, append=True)
            if any(kind == "close" for kind, _ in batch):
                return

    def close(self) -> None:
        """Write what is queued and close the files."""
        self._queue.put(("close", None))
        self._thread.join()
        self._file.close()


def fleet_daemon(config, mode: str, clock_args, requires: tuple[str, ...]) -> Daemon:
    """The fleet of one mode, in the root namespace (its threads enter the devices' namespaces)."""
    return python_daemon(config, f"devices-{mode}", "harness.devices.fleet", host=None, requires=requires,
                         runtime_args=clock_args, ready_timeout_s=30.0 + 0.01 * config.devices.count)


def _mode_of(role: str) -> str | None:
    mode = role.removeprefix("devices-")
    return mode if role.startswith("devices-") and mode in values(Mode) else None


def check(config, role: str) -> list[str]:
    """Pre-start check of a fleet's part of the run configuration."""
    if _mode_of(role) is None:
        return [f"unknown role {role!r} (known: {', '.join(f'devices-{m}' for m in values(Mode))})"]
    try:
        profile = DeviceProfile.load(config.devices.energy_profile)
        check_plan(profile, config.kme.wireless_transport, config.devices)
    except ValueError as exc:  # ProfileError included
        return [str(exc)]
    return []


def run_fleet(config, mode: str, clock: EmulatedClock, stop: threading.Event) -> dict:
    """Run every device of ``config`` in ``mode`` to the end of the mode; return the fleet's report."""
    from harness.keyservices import relay_url

    hosts = config.read_hosts()
    site = config.site
    profile = DeviceProfile.load(config.devices.energy_profile)
    transport = NetworkTransport((site.dc_ip, site.ports.mqtt), config.devices.mqtt_qos,
                                 relay_url(config) if mode == Mode.QKD else None, config.pki_dir)
    sink = CsvSink(config.mode_dir(mode))
    exchanges = ExchangeStats(profile, config.wireless.rtt_s)
    agents = [DeviceAgent(name, Mode(mode), config.devices, config.kme.wireless_transport,
                          config.qkd.refresh_period_s, profile, transport, sink, config.run.seed,
                          on_exchange=exchanges)
              for name in site.device_names()]
    missing = [agent.device_id for agent in agents if agent.device_id not in hosts]
    if missing:
        raise ValueError(f"no namespace for devices {', '.join(missing[:5])} in hosts.json")
    scheduler = WakeScheduler(clock, workers=min(fleet_settings().max_workers, len(agents)),
                              enter=lambda agent: enter_namespace(hosts[agent.device_id]), stop=stop)
    print(f"READY devices={len(agents)}", flush=True)
    done = threading.Event()
    fleet_json = config.mode_dir(mode) / "fleet.json"

    def report() -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"devices": len(agents), "workers": scheduler.workers,
                "lag": scheduler.lag.as_dict(config.run.time_scale), "exchanges": exchanges.as_dict(),
                "failures": list(scheduler.failures),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
                # Failed key refreshes (a relay or KME away, an outage): retried with backoff.
                "key_failures": {a.device_id: a.keys.failed_total for a in agents if a.keys.failed_total},
                "complete": done.is_set()}

    def write_report() -> dict:
        snapshot = report()
        tmp = fleet_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot, indent=1) + "\n", encoding="utf-8")
        tmp.replace(fleet_json)
        return snapshot

    def report_progress() -> None:
        # One line a second: the run follows the devices' wakes (readings may wait in queues). Every
        # few seconds fleet.json too, so a fleet that is killed leaves its health figures so far.
        ticks = 0
        while not done.wait(1.0):
            print(f"PROGRESS wakes={scheduler.lag.wakes}", flush=True)
            ticks += 1
            if ticks % SNAPSHOT_EVERY_S == 0:
                write_report()

    progress = threading.Thread(target=report_progress, name="progress", daemon=True)
    progress.start()
    try:
        scheduler.run(agents, config.duration_s)
    finally:
        done.set()
        progress.join()
        sink.close()
        print(f"PROGRESS wakes={scheduler.lag.wakes}", flush=True)
    return write_report()


def main(argv: list[str] | None = None) -> int:
    from harness import runconfig

    parser = argparse.ArgumentParser(prog="python -m harness.devices.fleet", description=__doc__.splitlines()[0])
    runconfig.add_role_arguments(parser)
    runconfig.add_log_level_argument(parser)
    args = parser.parse_args(argv)
    try:
        config = runconfig.read(args.config)
        problems = check(config, args.role or "")
        if problems:
            raise ValueError("; ".join(problems))
    except ValueError as exc:
        print(f"error: fleet: {exc}", file=sys.stderr)
        return 2
    runconfig.configure_logging(runconfig.log_level_of(args.log_level, config))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    clock = EmulatedClock(args.clock_epoch, config.run.time_scale)
    report = run_fleet(config, _mode_of(args.role), clock, stop)
    for failure in report["failures"]:
        print(f"fleet: device failed: {failure}", flush=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
