"""The device fleet of one mode: every device of the run hosted in one process, on the real network.

A Python interpreter per device costs 20-30 MiB (platform-notes), so the devices share this process:
each wake runs on a worker thread that first enters its device's network namespace (``setns``
affects only that thread) and then opens its sockets there, so the device's traffic leaves from its
own address over its own shaped link. Run as ``python -m harness.devices.fleet --config
RUN_DIR/config/run.json --role devices-qkd --clock-epoch E``; prints ``READY`` once every device is
set up, appends one row per publish to ``sent.csv`` (flushed, so a crash keeps what was sent) and
the energy rows to ``energy.csv``, writes ``fleet.json`` (how late wakes started, failures) at the
end, and exits when every device has reached the end of the mode, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import json
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
from harness.energy import DeviceProfile, IntervalRow, write_energy_csv
from harness.energy.wakecycle import assumed_outcome, check_plan
from harness.health import percentile
from harness.enums import Mode, values
from harness.netns import enter_namespace

#: Most wakes in flight at once. A wake spends ~tens of ms waiting on the network; 64 threads cover
#: hundreds of wakes per second (engineering choice, not a device property).
MAX_WORKERS = 64


class ExchangeStats:
    """How much longer each network exchange took than the shaped link explains (emulation health)."""

    def __init__(self, profile: DeviceProfile, rtt_s: float) -> None:
        self.profile, self.rtt_s = profile, rtt_s
        self.excess_ms: list[float] = []
        self.failed = 0
        self._lock = threading.Lock()

    def __call__(self, step, outcome, ok: bool) -> None:
        expected = assumed_outcome(self.profile, step, self.rtt_s).duration_s
        with self._lock:
            if not ok:
                self.failed += 1
            elif len(self.excess_ms) < 200_000:
                self.excess_ms.append(1000.0 * (outcome.duration_s - expected))

    def as_dict(self) -> dict:
        return {"count": len(self.excess_ms), "failed": self.failed,
                "excess_p50_ms": percentile(self.excess_ms, 50), "excess_p95_ms": percentile(self.excess_ms, 95)}


class CsvSink:
    """Thread-safe, line-flushed ``sent.csv`` and appending ``energy.csv`` of one mode."""

    def __init__(self, mode_dir: Path) -> None:
        mode_dir.mkdir(parents=True, exist_ok=True)
        path = mode_dir / "sent.csv"
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._energy_path = mode_dir / "energy.csv"
        self._lock = threading.Lock()
        if new:
            self._writer.writerow(SentRecord.FIELDS)
            self._file.flush()

    def sent(self, record: SentRecord) -> None:
        with self._lock:
            self._writer.writerow(record.row())
            self._file.flush()

    def energy(self, rows: list[IntervalRow]) -> None:
        if rows:
            with self._lock:
                write_energy_csv(self._energy_path, rows, append=True)

    def close(self) -> None:
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
    scheduler = WakeScheduler(clock, workers=min(MAX_WORKERS, len(agents)),
                              enter=lambda agent: enter_namespace(hosts[agent.device_id]), stop=stop)
    print(f"READY devices={len(agents)}", flush=True)
    done = threading.Event()

    def report_progress() -> None:
        # One line a second: the run follows the devices' wakes (readings may wait in queues).
        while not done.wait(1.0):
            print(f"PROGRESS wakes={scheduler.lag.wakes}", flush=True)

    threading.Thread(target=report_progress, name="progress", daemon=True).start()
    try:
        scheduler.run(agents, config.duration_s)
    finally:
        done.set()
        sink.close()
        print(f"PROGRESS wakes={scheduler.lag.wakes}", flush=True)
    report = {"devices": len(agents), "workers": scheduler.workers,
              "lag": scheduler.lag.as_dict(config.run.time_scale), "exchanges": exchanges.as_dict(),
              "failures": scheduler.failures,
              "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2),
              "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              # Failed key refreshes (a relay or KME away, an outage): retried with backoff.
              "key_failures": {a.device_id: a.keys.failed_total for a in agents if a.keys.failed_total}}
    (config.mode_dir(mode) / "fleet.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


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
