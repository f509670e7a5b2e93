"""The device fleet of one mode: every device of the run hosted in a few processes, on the real network.

A Python interpreter per device costs 20-30 MiB (platform-notes), so devices share processes: each
wake runs on a worker thread that first enters its device's network namespace (``setns`` affects
only that thread) and then opens its sockets there, so the device's traffic leaves from its own
address over its own shaped link. One process's threads convoy on its interpreter lock past ~16, so
the devices are spread over shard processes (:mod:`harness.devices.shards`), every K-th device in
each. Run as ``python -m harness.devices.fleet --config RUN_DIR/config/run.json --role devices-qkd
--clock-epoch E``: the coordinator starts its shards (the same command with ``--shard k/K``), prints
``READY`` once every device is set up; the shards append one row per publish to ``sent.csv`` and the
energy rows to ``energy.csv`` (flushed, so a crash keeps what was sent); the coordinator writes
``fleet.json`` (how late wakes started, failures) every few seconds and at the end (``complete``
true), and exits when every device has reached the end of the mode, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import queue
import resource
import signal
import sys
import threading
from pathlib import Path

from harness.clock import EmulatedClock
from harness.daemon import Daemon, python_daemon
from harness.devices.agent import DeviceAgent, SentRecord
from harness.devices import shards
from harness.devices.scheduler import WakeScheduler
from harness.devices.transport import NetworkTransport
from harness.emulator import fleet_settings
from harness.energy import ENERGY_CSV_COLUMNS, DeviceProfile, IntervalRow, write_energy_csv
from harness.energy.wakecycle import assumed_outcome, check_plan
from harness.health import Reservoir, percentile
from harness.enums import Mode, values
from harness.netns import enter_namespace

#: fleet.json is rewritten this often (wall s) while the fleet runs: a killed fleet keeps its figures.
SNAPSHOT_EVERY_S = 5


def exchange_excess_ms(profile: DeviceProfile, rtt_s: float, step, outcome) -> float:
    """How much longer (ms) one exchange took than the shaped link's round trips and air time explain."""
    return 1000.0 * (outcome.duration_s - assumed_outcome(profile, step, rtt_s).duration_s)


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
        self.add(step.name, exchange_excess_ms(self.profile, self.rtt_s, step, outcome) if ok else None)

    def add(self, step_name: str, excess_ms: float | None) -> None:
        """One exchange of step ``step_name``: ``excess_ms`` beyond the assumed time, None if it failed."""
        with self._lock:
            if excess_ms is None:
                self.failed += 1
                return
            self.excess_ms.add(excess_ms)
            self.by_step.setdefault(step_name, Reservoir(self.SAMPLES)).add(excess_ms)
            # Exchanges faster than assumed do not pay back another's delay: count the delays only.
            self.step_sum_s[step_name] = self.step_sum_s.get(step_name, 0.0) + max(0.0, excess_ms) / 1000.0
            self.step_max_ms[step_name] = max(self.step_max_ms.get(step_name, excess_ms), excess_ms)

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
    """``sent.csv`` and ``energy.csv`` of one mode, written by one writer thread per process.

    Wake threads only queue their rows: a lock held across a write and a flush made dozens of wake
    threads queue behind it whenever the writer waited for the interpreter lock (measured: 18 of 64
    wake threads blocked there in an overloaded 1,000-device run). The writer writes every batch it
    takes off the queue with one ``write`` to a file opened for appending, so the shards of a fleet
    share the files without interleaving rows and a crash loses at most the last fraction of a second.
    """

    def __init__(self, mode_dir: Path) -> None:
        self.prepare(mode_dir)
        self._sent_fd = os.open(mode_dir / "sent.csv", os.O_WRONLY | os.O_APPEND)
        self._energy_fd = os.open(mode_dir / "energy.csv", os.O_WRONLY | os.O_APPEND)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="csv-writer", daemon=True)
        self._thread.start()

    @staticmethod
    def prepare(mode_dir: Path) -> None:
        """Create both files with their headers unless they exist (before shards share them)."""
        mode_dir.mkdir(parents=True, exist_ok=True)
        sent = mode_dir / "sent.csv"
        if not sent.exists() or sent.stat().st_size == 0:
            with open(sent, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(SentRecord.FIELDS)
        write_energy_csv(mode_dir / "energy.csv", [], append=True)  # the header, if the file is new

    def sent(self, record: SentRecord) -> None:
        self._queue.put(("sent", record.row()))

    def energy(self, rows: list[IntervalRow]) -> None:
        if rows:
            self._queue.put(("energy", rows))

    def _write(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:  # everything queued meanwhile goes out in the same write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            sent, energy = io.StringIO(), io.StringIO()
            sent_writer = csv.writer(sent)
            energy_writer = csv.DictWriter(energy, fieldnames=ENERGY_CSV_COLUMNS)
            for kind, item in batch:
                if kind == "sent":
                    sent_writer.writerow(item)
                elif kind == "energy":
                    energy_writer.writerows(row.as_csv() for row in item)
            for fd, text in ((self._sent_fd, sent.getvalue()), (self._energy_fd, energy.getvalue())):
                if text:
                    _write_all(fd, text.encode("utf-8"))
            if any(kind == "close" for kind, _ in batch):
                return

    def close(self) -> None:
        """Write what is queued and close the files."""
        self._queue.put(("close", None))
        self._thread.join()
        os.close(self._sent_fd)
        os.close(self._energy_fd)


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes a whole write at once; the loop only guards against a short write.
    while data:
        data = data[os.write(fd, data):]


def fleet_daemon(config, mode: str, clock_args, requires: tuple[str, ...]) -> Daemon:
    """The fleet of one mode, in the root namespace (its threads enter the devices' namespaces)."""
    # Stopped, the shards finish their wakes in flight and account their devices (the coordinator
    # escalates after shards.STOP_GRACE_S): the daemon waits that long before it kills the group.
    return python_daemon(config, f"devices-{mode}", "harness.devices.fleet", host=None, requires=requires,
                         runtime_args=clock_args, ready_timeout_s=ready_timeout_s(config.devices.count),
                         stop_timeout_s=shards.STOP_GRACE_S + 5.0)


def ready_timeout_s(devices: int) -> float:
    """How long the fleet may take to set up ``devices`` (its daemon's readiness limit)."""
    return 30.0 + 0.01 * devices


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


def run_shard(config, mode: str, clock: EmulatedClock, stop: threading.Event, shard: tuple[int, int],
              out: shards.LineEmitter) -> list[str]:
    """Host every ``shard[1]``-th device of ``config`` (from the ``shard[0]``-th) in ``mode`` to the
    end of the mode, reporting on ``out`` (:mod:`harness.devices.shards`); return the failures."""
    from harness.keyservices import relay_url

    index, count = shard
    hosts = config.read_hosts()
    site = config.site
    profile = DeviceProfile.load(config.devices.energy_profile)
    transport = NetworkTransport((site.dc_ip, site.ports.mqtt), config.devices.mqtt_qos,
                                 relay_url(config) if mode == Mode.QKD else None, config.pki_dir)
    sink = CsvSink(config.mode_dir(mode))
    rtt_s = config.wireless.rtt_s

    def on_exchange(step, outcome, ok: bool) -> None:
        out.emit("X", step.name, f"{exchange_excess_ms(profile, rtt_s, step, outcome):.3f}" if ok else "-")

    agents = [DeviceAgent(name, Mode(mode), config.devices, config.kme.wireless_transport,
                          config.qkd.refresh_period_s, profile, transport, sink, config.run.seed,
                          on_exchange=on_exchange)
              for name in site.device_names()[index::count]]
    missing = [agent.device_id for agent in agents if agent.device_id not in hosts]
    if missing:
        raise ValueError(f"no namespace for devices {', '.join(missing[:5])} in hosts.json")
    scheduler = WakeScheduler(clock, workers=min(fleet_settings().max_workers, len(agents)),
                              enter=lambda agent: enter_namespace(hosts[agent.device_id]), stop=stop,
                              lag=shards.EmittedLag(out), on_failure=lambda text: out.emit("F", shards.quote(text)))
    key_failures: dict[str, int] = {}

    def report_usage() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.emit("C", round(usage.ru_utime + usage.ru_stime, 2), round(usage.ru_maxrss / 1024, 1))
        for agent in agents:  # failed key refreshes (a relay or KME away, an outage): retried with backoff
            if agent.keys.failed_total != key_failures.get(agent.device_id, 0):
                key_failures[agent.device_id] = agent.keys.failed_total
                out.emit("K", agent.device_id, agent.keys.failed_total)

    done = threading.Event()

    def report_periodically() -> None:
        while not done.wait(SNAPSHOT_EVERY_S):
            report_usage()

    out.emit("READY", f"devices={len(agents)}")
    reporter = threading.Thread(target=report_periodically, name="usage", daemon=True)
    reporter.start()
    try:
        scheduler.run(agents, config.duration_s)
    finally:
        done.set()
        reporter.join()
        sink.close()
        report_usage()
    return list(scheduler.failures)


def coordinate(config, mode: str, stop: threading.Event, argv_for) -> dict:
    """Run the fleet of ``mode`` as shard processes (``argv_for(k, K)`` starts shard k of K) until
    every device reached the end of the mode or ``stop`` is set; return the fleet's report."""
    settings = fleet_settings()
    profile = DeviceProfile.load(config.devices.energy_profile)
    devices = config.devices.count
    count = shards.shard_count(devices, settings.max_workers, settings.max_processes)
    CsvSink.prepare(config.mode_dir(mode))  # headers first: the shards only append
    aggregate = shards.Aggregate(exchanges=ExchangeStats(profile, config.wireless.rtt_s))
    shard_set = shards.ShardSet(argv_for, count, aggregate)
    fleet_json = config.mode_dir(mode) / "fleet.json"
    started = resource.getrusage(resource.RUSAGE_SELF)
    done = threading.Event()

    def report() -> dict:
        with shard_set.lock():
            states = [aggregate.shards[k] for k in sorted(aggregate.shards)]
            failures, key_failures = list(aggregate.failures), dict(sorted(aggregate.key_failures.items()))
        own = resource.getrusage(resource.RUSAGE_SELF)
        own_cpu = own.ru_utime + own.ru_stime - started.ru_utime - started.ru_stime
        return {"devices": devices, "shards": count,
                "workers": sum(min(settings.max_workers, s.devices) for s in states),
                "lag": aggregate.lag.as_dict(config.run.time_scale), "exchanges": aggregate.exchanges.as_dict(),
                "failures": failures,
                "cpu_s": round(own_cpu + sum(s.cpu_s for s in states), 2),
                "max_rss_mib": round(own.ru_maxrss / 1024 + sum(s.max_rss_mib for s in states), 1),
                "by_shard": [{"devices": s.devices, "cpu_s": s.cpu_s, "max_rss_mib": s.max_rss_mib,
                              "exit_code": s.exit_code} for s in states],
                "key_failures": key_failures,
                "complete": done.is_set() and all(s.ended for s in states)}

    def report_progress() -> None:
        # One line a second: the run follows the devices' wakes (readings may wait in queues). Every
        # few seconds fleet.json too, so a fleet that is killed leaves its health figures so far.
        ticks = 0
        while not done.wait(1.0):
            print(f"PROGRESS wakes={aggregate.lag.wakes}", flush=True)
            ticks += 1
            if ticks % SNAPSHOT_EVERY_S == 0:
                shards.write_json_atomically(fleet_json, report())

    shard_set.start()
    try:
        # A little inside the daemon's own limit, so that the reason is the fleet's, not a kill.
        if not shard_set.wait_ready(ready_timeout_s(devices) - 5.0, stop):
            if stop.is_set():
                raise InterruptedError("stopped before the devices were set up")
            raise RuntimeError("shards did not set up their devices: "
                               + ("; ".join(aggregate.failures) or "timed out"))
        print(f"READY devices={devices} shards={count}", flush=True)
        progress = threading.Thread(target=report_progress, name="progress", daemon=True)
        progress.start()
        try:
            shard_set.wait(stop)
        finally:
            done.set()
            progress.join()
    finally:
        stop.set()
        shard_set.wait(stop)  # a failed start stops the shards already running
        print(f"PROGRESS wakes={aggregate.lag.wakes}", flush=True)
        snapshot = report()
        shards.write_json_atomically(fleet_json, snapshot)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    from harness import runconfig

    parser = argparse.ArgumentParser(prog="python -m harness.devices.fleet", description=__doc__.splitlines()[0])
    runconfig.add_role_arguments(parser)
    runconfig.add_log_level_argument(parser)
    parser.add_argument("--shard", default=None,
                        help="k/K: host every K-th device from the k-th (started by the fleet's coordinator)")
    args = parser.parse_args(argv)
    try:
        config = runconfig.read(args.config)
        problems = check(config, args.role or "")
        if problems:
            raise ValueError("; ".join(problems))
        shard = shards.parse_shard(args.shard) if args.shard is not None else None
        if args.clock_epoch is None:
            raise ValueError("--clock-epoch is required (the mode clock's emulated time 0)")
    except ValueError as exc:
        print(f"error: fleet: {exc}", file=sys.stderr)
        return 2
    runconfig.configure_logging(runconfig.log_level_of(args.log_level, config))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mode = _mode_of(args.role)
    if shard is not None:
        shards.die_with_coordinator()
        out = shards.LineEmitter()
        try:
            run_shard(config, mode, EmulatedClock(args.clock_epoch, config.run.time_scale), stop, shard, out)
            out.emit(shards.END)
        finally:
            out.close()
        return 0

    def argv_for(index: int, count: int) -> list[str]:
        return [sys.executable, "-m", "harness.devices.fleet", "--config", str(args.config), "--role", args.role,
                "--clock-epoch", repr(args.clock_epoch), "--shard", f"{index}/{count}",
                *(["--log-level", args.log_level] if args.log_level else [])]

    try:
        report = coordinate(config, mode, stop, argv_for)
    except (RuntimeError, InterruptedError) as exc:
        print(f"error: fleet: {exc}", file=sys.stderr)
        return 1
    for failure in report["failures"]:
        print(f"fleet: device failed: {failure}", flush=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
