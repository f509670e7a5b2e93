"""``qiot run``: build the network, start every service, run each key mode, keep the results.

The order is the ipmininet one: controller, network, shaping, broker, then per mode the platform
and the devices; teardown runs in ``finally`` in reverse order, whatever happened. The metadata is
written at the start (status ``running``) and rewritten at the end with ``completed``,
``interrupted`` (Ctrl-C or SIGTERM) or ``failed``, and the derived result files of a mode are
computed even when the mode was cut short, so nothing captured is lost.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import capture, results
from harness.broker import MQTT_PORT
from harness.clock import EmulatedClock
from harness.process import ManagedProcess
from harness.scenario import Scenario
from harness.state import RunState
from harness.shaping import GW_WIRELESS_INTF
from harness.testbed import Testbed

MODES = ("qkd", "dkg")

#: Devices and platform need a moment after READY before the first emulated wake (wall seconds).
START_LEAD_WALL_S = 0.5


class RunInterrupted(Exception):
    """The run was stopped by the user (Ctrl-C) or by SIGTERM."""


@dataclass
class RunOptions:
    """What the user asked for on the command line, on top of the scenario."""

    scenario: Scenario
    modes: tuple[str, ...]
    out_dir: Path
    hours: float
    time_scale: float
    devices: int
    seed: int
    progress: Callable[[str, float, dict], None] | None = None  # (mode, fraction, counters)


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    summaries: dict = field(default_factory=dict)


def make_run_dir(base: Path, scenario_name: str) -> tuple[str, Path]:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{scenario_name}-{stamp}"
    run_dir = base / run_id
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{run_id}-{suffix}"
    (run_dir / "logs").mkdir(parents=True)
    return run_dir.name, run_dir


class RowCounter:
    """Counts the data rows of a CSV that another process appends to, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.newlines = path, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(chunk)
        self.newlines += chunk.count(b"\n")
        return max(0, self.newlines - 1)  # minus the header


def run(options: RunOptions) -> RunOutcome:
    """Execute a run; always leaves a run directory with metadata saying how it ended."""
    scenario = options.scenario.with_overrides({"devices.count": options.devices, "run.hours": options.hours,
                                                "run.time_scale": options.time_scale, "run.seed": options.seed})
    run_id, run_dir = make_run_dir(options.out_dir, scenario.name)
    bed = Testbed(scenario, run_dir, RunState(run_id), seed=options.seed, modes=options.modes)
    metadata = dict(results.base_metadata(), run_id=run_id, status="running",
                    started=datetime.now(timezone.utc).isoformat(), command=sys.argv,
                    scenario_file=str(scenario.path), scenario=scenario.data, modes=list(options.modes),
                    capabilities=bed.caps.as_dict(), mechanisms=bed.mechanisms(), mqtt_port=MQTT_PORT,
                    mode_results={})
    results.write_json_atomic(run_dir / "metadata.json", metadata)
    status = "failed"
    try:
        bed.up()
        metadata.update(bed.facts)
        for mode in options.modes:
            mode_result = metadata["mode_results"][mode] = {"status": "running"}
            results.write_json_atomic(run_dir / "metadata.json", metadata)
            mode_dir = run_dir / mode
            mode_dir.mkdir(exist_ok=True)  # the QKD folder may already hold the key-path capture
            try:
                _run_mode(mode, mode_dir, bed, options, mode_result)
                mode_result["status"] = "completed"
            except (KeyboardInterrupt, RunInterrupted):
                mode_result["status"] = "interrupted"
                raise
            except BaseException:
                mode_result["status"] = "failed"
                raise
            finally:
                mode_result["summary"] = results.finalize_mode(mode_dir, mode, options.devices,
                                                               scenario.section("devices")["energy_interval_s"])
                if mode == "qkd" and "clock_epoch" in mode_result:
                    _write_key_series(bed, mode_dir, mode_result["clock_epoch"], options)
        status = "completed"
    except (KeyboardInterrupt, RunInterrupted):
        status = "interrupted"
    finally:
        bed.down()
        if bed.key_capture is not None:
            metadata["capture_keys"] = capture.capture_counters(bed.key_capture.log_path)
        metadata.update(status=status, ended=datetime.now(timezone.utc).isoformat())
        results.write_json_atomic(run_dir / "metadata.json", metadata)
        bed.state.forget()
        _analyze(run_dir, scenario, metadata)
    summaries = {m: r.get("summary") for m, r in metadata["mode_results"].items()}
    return RunOutcome(run_dir, status, summaries)


def _write_key_series(bed: Testbed, mode_dir: Path, mode_epoch: float, options: RunOptions) -> None:
    """``keys.csv`` of the QKD mode from Bob's buffer log, moved onto the mode's clock."""
    offset_s = (mode_epoch - bed.facts["qkd_clock_epoch"]) * options.time_scale
    series = results.key_series(results.read_csv(bed.run_dir / "qkd-link" / "bob" / "buffer.csv"),
                                results.read_csv(mode_dir / "sent.csv"), offset_s, options.hours * 3600.0)
    series.to_csv(mode_dir / "keys.csv", index=False)


def _analyze(run_dir: Path, scenario: Scenario, metadata: dict) -> None:
    """Derive the per-interval series and the capture cross-check from what was stored.

    Runs after teardown, from files only; a failure here must not cost the run its raw results,
    so it is recorded in the metadata instead of raised.
    """
    from harness.analysis.analyze import analyze_run

    try:
        analyze_run(run_dir, interval_s=scenario.section("devices")["energy_interval_s"])
        metadata["analysis"] = "analysis.json"
    except Exception as exc:  # recorded, and the raw files stay for `qiot analyze` later
        metadata["analysis"] = f"failed: {type(exc).__name__}: {exc}"
    results.write_json_atomic(run_dir / "metadata.json", metadata)


def _run_mode(mode: str, mode_dir: Path, bed: Testbed, options: RunOptions, record: dict) -> None:
    """One key mode: captures, platform and device fleet until the emulated end.

    ``record`` (the mode's entry in the metadata) gets the mode clock's epoch as soon as it exists,
    so an interrupted mode can still be put on its time axis, and the capture counters at the end.
    """
    from topologies.fig1 import DC_IP as dc_ip, device_name

    scenario, net, processes, run_dir = bed.scenario, bed.net, bed.processes, bed.run_dir
    devices_cfg = scenario.section("devices")
    logs = run_dir / "logs"
    captures = [
        capture.tcpdump(f"capture-{mode}-dc", net.netns_pid("dc"), "dc-eth0", mode_dir / "pcap" / "dc.pcap",
                        f"tcp port {MQTT_PORT}", logs),
        capture.tcpdump(f"capture-{mode}-gw", net.netns_pid("gw"), GW_WIRELESS_INTF,
                        mode_dir / "pcap" / "gw-wlan.pcap", f"tcp port {MQTT_PORT} or tcp port {bed.relay_port}", logs),
    ]
    processes.start(*captures)
    platform = ManagedProcess(
        name=f"platform-{mode}", start_order=40, netns_pid=net.netns_pid("dc"),
        argv=[sys.executable, "-m", "harness.iotplatform", "--mode", mode, "--broker", f"{dc_ip}:{MQTT_PORT}",
              "--qos", str(devices_cfg["mqtt_qos"]), "--out", str(mode_dir), "--client-id", f"qiot-platform-{mode}"]
             + bed.platform_key_args(mode),
        log_path=logs / f"platform-{mode}.log")
    processes.start(platform)
    end_emul_s = options.hours * 3600.0
    # The clock starts a little in the future, so the devices' first wake-ups are not in the past
    # by the time every device thread is in its namespace.
    clock = EmulatedClock(time.time() + START_LEAD_WALL_S + 0.01 * options.devices, options.time_scale)
    record["clock_epoch"] = clock.epoch_wall
    spec = {"clock_epoch": clock.epoch_wall, "time_scale": clock.time_scale, "end_emul_s": end_emul_s,
            "out_dir": str(mode_dir), "energy_profile": devices_cfg["energy_profile"],
            # The device's radio model sends at the scenario's wireless rate.
            "profile_overrides": {"radio.phy_rate_mbit": scenario.section("wireless")["rate_mbit"]},
            **bed.device_key_spec(mode),
            "devices": [{"netns_pid": net.netns_pid(device_name(i)),
                         "config": {"device_id": device_name(i), "index": i, "mode": mode,
                                    "broker_host": dc_ip, "broker_port": MQTT_PORT,
                                    "wake_period_s": devices_cfg["wake_period_s"],
                                    "mqtt_qos": devices_cfg["mqtt_qos"],
                                    "publish_timeout_s": devices_cfg["publish_timeout_s"],
                                    "refresh_period_s": scenario.section("qkd")["refresh_period_s"],
                                    "energy_interval_s": devices_cfg["energy_interval_s"],
                                    "qkd_transport": scenario.section("kme")["wireless_transport"],
                                    "dkg_curve": devices_cfg["dkg_curve"],
                                    "seed": options.seed}}
                        for i in range(1, options.devices + 1)]}
    spec_path = run_dir / "config" / f"fleet-{mode}.json"
    spec_path.parent.mkdir(exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    fleet = ManagedProcess(name=f"devices-{mode}", start_order=60,
                           argv=[sys.executable, "-m", "harness.devices.fleet", str(spec_path)],
                           log_path=logs / f"devices-{mode}.log", ready_timeout_s=30.0 + 0.2 * options.devices)
    processes.start(fleet)
    sent, received = RowCounter(mode_dir / "sent.csv"), RowCounter(mode_dir / "received.csv")

    # Progress is what the devices have done (they may lag the clock when the machine is too slow
    # for the time scale), so the bar's ETA is honest.
    expected_wakes = max(1, options.devices * int(end_emul_s // devices_cfg["wake_period_s"]))

    def report(count: int, fraction: float | None = None) -> None:
        if options.progress:
            fraction = min(1.0, count / expected_wakes) if fraction is None else fraction
            options.progress(mode, fraction, {"emulated_h": fraction * options.hours, "hours": options.hours,
                                              "devices": options.devices, "sent": count, "received": received()})

    # Devices may fall behind the clock when the machine cannot keep up with the time scale; the
    # run then simply takes longer. What must not happen is a fleet that stops making progress.
    stall_s = max(60.0, 3 * devices_cfg["publish_timeout_s"], 3 * devices_cfg["wake_period_s"] / options.time_scale)
    last_count, last_change = -1, time.monotonic()
    while fleet.running:
        count = sent()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > stall_s and clock.now() > devices_cfg["wake_period_s"]:
            raise RuntimeError(f"devices of mode {mode} made no progress for {stall_s:.0f} s "
                               f"(see {fleet.log_path})")
        report(count)
        time.sleep(0.5)
    if fleet.popen.returncode != 0:
        raise RuntimeError(f"device fleet of mode {mode} failed (exit {fleet.popen.returncode}):\n{fleet.log_tail()}")
    # Let the last readings reach the platform before it stops recording.
    time.sleep(min(2.0, devices_cfg["publish_timeout_s"]))
    platform.stop()
    for process in captures:
        process.stop()
    report(sent(), fraction=1.0)
    record["capture"] = {c.name: capture.capture_counters(c.log_path) for c in captures}
