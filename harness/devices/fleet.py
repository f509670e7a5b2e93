"""Host many emulated devices in one process, each thread inside its own device's namespace.

A Python interpreter per device costs 20-30 MiB (platform-notes), so devices share this process:
each device thread first enters its Mininet host's network namespace (``setns`` affects only that
thread), then creates its sockets there, so its traffic leaves from its own address over its own
shaped link. Run as ``python -m harness.devices.fleet SPEC.json``; prints ``READY`` once every
thread is in its namespace, appends one row per publish to ``sent.csv`` (flushed, so a crash keeps
what was sent), and exits when every device has reached the end of the run or on SIGTERM.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
from pathlib import Path

from harness.clock import EmulatedClock
from harness.devices.agent import DeviceAgent, DeviceConfig, SentRecord
from harness.devices.keysteps import DkgKeySteps, KeySteps, QkdKeySteps
from harness.energy import DeviceProfile, IntervalRow, write_energy_csv
from harness.netns import enter_netns


class SentLog:
    """Thread-safe, line-flushed CSV of every device's publishes."""

    def __init__(self, path: Path) -> None:
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._lock = threading.Lock()
        if new:
            self._writer.writerow(SentRecord.FIELDS)
            self._file.flush()

    def __call__(self, record: SentRecord) -> None:
        with self._lock:
            self._writer.writerow(record.row())
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class EnergyLog:
    """Thread-safe appender of energy rows to ``energy.csv``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, rows: list[IntervalRow]) -> None:
        if rows:
            with self._lock:
                write_energy_csv(self.path, rows, append=True)


def key_steps_for(config: DeviceConfig, spec: dict, timeline_charge) -> KeySteps:
    """The key steps of the configured mode for one device."""
    if config.mode == "dkg":
        return DkgKeySteps(config.device_id, config.dkg_curve, config.broker_host, config.broker_port,
                           config.mqtt_qos)
    from harness.kme.pki import provision_device

    credentials = provision_device(Path(spec["pki_dir"]), config.device_id)
    return QkdKeySteps(config.device_id, config.qkd_transport, spec["relay_url"], credentials, timeline_charge)


def run_fleet(spec: dict) -> int:
    """Run every device of ``spec`` to the end of the run; return the number of devices that failed."""
    clock = EmulatedClock(spec["clock_epoch"], spec["time_scale"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log = SentLog(Path(spec["out_dir"]) / "sent.csv")
    energy_log = EnergyLog(Path(spec["out_dir"]) / "energy.csv")
    profile = DeviceProfile.load(spec["energy_profile"])
    if spec.get("profile_overrides"):
        profile = profile.with_values(spec["profile_overrides"])
    entered = threading.Barrier(len(spec["devices"]) + 1)
    failures: list[str] = []

    def device_main(device: dict) -> None:
        try:
            enter_netns(device["netns_pid"])
        except OSError as exc:
            failures.append(f"{device['config']['device_id']}: {exc}")
            entered.wait()
            return
        entered.wait()
        try:
            config = DeviceConfig(**device["config"])
            agent = DeviceAgent(config, profile, None, clock, spec["end_emul_s"], log, energy_log, stop)
            agent.keys = key_steps_for(config, spec, lambda ops: [agent.timeline.compute(op) for op in ops])
            agent.run()
        except Exception as exc:  # one broken device must not end the others' run; it is reported
            failures.append(f"{device['config']['device_id']}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=device_main, args=(d,), name=d["config"]["device_id"], daemon=True)
               for d in spec["devices"]]
    for thread in threads:
        thread.start()
    entered.wait()
    if failures:
        print("fleet: could not enter namespaces: " + "; ".join(failures), flush=True)
        stop.set()
    else:
        print(f"READY devices={len(threads)}", flush=True)
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)
    log.close()
    for failure in failures:
        print(f"fleet: device failed: {failure}", flush=True)
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.devices.fleet SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    return 1 if run_fleet(spec) else 0


if __name__ == "__main__":
    sys.exit(main())
