"""``qiot run``: configure the run, bring the testbed up, run each key mode, keep the results.

The run configuration is built once from the scenario and the command line and written to
``config/run.json``; every daemon of every mode is declared before anything starts, so every
pre-start check runs first (:meth:`harness.testbed.Testbed.prepare`). The metadata is written at the
start (status ``running``) and rewritten at the end with ``completed``, ``interrupted`` (with the
signal) or ``failed`` (with the reason); the derived result files of a mode are computed even when
the mode was cut short, so nothing captured is lost. Stopping follows Flent's runner: the signal
handlers only set the run's :class:`~harness.lifecycle.StopRequest`, every wait of the run polls it,
and teardown, which polls nothing, always completes.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import capture, health, results, runconfig
from harness.clock import EmulatedClock
from harness.devices.fleet import fleet_daemon
from harness.enums import Mode
from harness.faultinjector import FaultInjector
from harness.health import CpuSampler, ProcessCpu
from harness.iotplatform import platform_daemon
from harness.lifecycle import Interrupted, StopRequest
from harness.runconfig import RunConfig
from harness.scenario import Scenario
from harness.state import RunState
from harness.testbed import Testbed

#: Devices and platform need a moment after READY before the first emulated wake (wall seconds).
START_LEAD_WALL_S = 0.5


@dataclass
class RunOptions:
    """What the user asked for: the scenario with the command line's overrides already applied."""

    scenario: Scenario
    modes: tuple[str, ...]
    out_dir: Path
    progress: Callable[[str, float, dict], None] | None = None  # (mode, fraction, counters)


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    summaries: dict = field(default_factory=dict)
    reason: str = ""


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


class FleetProgress:
    """The device fleet's wakes so far, from the ``PROGRESS wakes=N`` lines of its log (new bytes only)."""

    def __init__(self, log_path: Path) -> None:
        self.path, self.offset, self.wakes = log_path, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.wakes
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            if line.startswith("PROGRESS wakes="):
                self.wakes = int(line.split("=", 1)[1])
        return self.wakes


class ModeClocks:
    """The emulated clock of each mode, made when its devices start (the fleet gets its epoch)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.clocks: dict[str, EmulatedClock] = {}

    def start(self, mode: str) -> list[str]:
        # The clock starts a little in the future, so the first wakes are not already in the past
        # by the time every device is set up.
        epoch = time.time() + START_LEAD_WALL_S + 0.001 * self.config.devices.count
        self.clocks[mode] = EmulatedClock(epoch, self.config.run.time_scale)
        return ["--clock-epoch", repr(epoch)]


def declare_modes(bed: Testbed, clocks: ModeClocks) -> None:
    """Every mode's daemons: its captures, its platform, and its device fleet (which needs them all)."""
    config = bed.config
    for mode in config.modes:
        captures = capture.mode_captures(config, mode)
        platform = platform_daemon(config, mode)
        needs = [platform.name] + [c.name for c in captures] + (["relay"] if mode == Mode.QKD else [])
        needs += [name for name in ("shaper",) if name in bed.daemons]
        bed.daemons.add(*captures, platform,
                        fleet_daemon(config, mode, lambda mode=mode: clocks.start(mode), tuple(needs)))


def run(options: RunOptions, stop: StopRequest) -> RunOutcome:
    """Execute a run; always leaves a run directory with metadata saying how it ended."""
    scenario = options.scenario
    run_id, run_dir = make_run_dir(options.out_dir, scenario.name)
    config = runconfig.build(scenario, run_id=run_id, run_dir=run_dir, modes=options.modes)
    bed = Testbed(config, RunState(run_id), stop)
    clocks = ModeClocks(config)
    metadata = dict(results.base_metadata(), run_id=run_id, status="running",
                    started=datetime.now(timezone.utc).isoformat(), command=sys.argv,
                    scenario_file=str(scenario.path), scenario=scenario.data, modes=list(config.modes),
                    run_config=str(config.config_file.relative_to(run_dir)),
                    energy_interval_s=config.devices.energy_interval_s,
                    capabilities=bed.caps.as_dict(), mechanisms=bed.mechanisms(), mqtt_port=config.site.ports.mqtt,
                    mode_results={})
    results.write_json_atomic(run_dir / "metadata.json", metadata)
    status = "failed"
    try:
        declare_modes(bed, clocks)
        bed.up()
        metadata.update(bed.facts)
        for mode in config.modes:
            _run_mode(mode, bed, clocks, options, metadata)
        status = "completed"
    except Interrupted as exc:
        status = "interrupted"
        metadata["stop_signal"] = exc.signal_name
    except Exception as exc:  # recorded as the reason; the CLI prints it as one line
        metadata["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        # Teardown polls no stop request: a second Ctrl-C cannot cut it short.
        bed.down()
        keys_log = config.logs_dir / "capture-qkd-keys.log"
        if keys_log.exists():
            metadata["capture_keys"] = capture.capture_counters(keys_log)
        metadata.update(status=status, ended=datetime.now(timezone.utc).isoformat())
        results.write_json_atomic(run_dir / "metadata.json", metadata)
        bed.state.forget()
        _analyze(config, metadata)
    summaries = {m: r.get("summary") for m, r in metadata["mode_results"].items()}
    return RunOutcome(run_dir, status, summaries, metadata.get("failure", ""))


def _run_mode(mode: str, bed: Testbed, clocks: ModeClocks, options: RunOptions, metadata: dict) -> None:
    """One key mode, its status and summary recorded in the metadata however it ends."""
    config = bed.config
    record = metadata["mode_results"][mode] = {"status": "running"}
    results.write_json_atomic(config.path / "metadata.json", metadata)
    config.mode_dir(mode).mkdir(exist_ok=True)  # the QKD folder may already hold the key-path capture
    injector: list[FaultInjector] = []
    cpu = CpuSampler().start()
    processes = ProcessCpu(_running_pids(bed)).start()
    try:
        _devices_until_the_end(mode, bed, clocks, options, record, injector)
        record["status"] = "completed"
    except Interrupted:
        record["status"] = "interrupted"
        raise
    except BaseException:
        record["status"] = "failed"
        raise
    finally:
        # Whatever happened, what the faults broke is mended, the mode's daemons stop now and its
        # derived files are written.
        if injector:
            metadata.setdefault("faults", []).extend(injector[0].finish())
        record["health"] = _mode_health(config, mode, cpu.stop())
        record["health"]["processes"] = processes.stop(_running_pids(bed))
        metadata["emulation_health"] = health.worst({m: r["health"] for m, r in metadata["mode_results"].items()
                                                     if "health" in r})
        names = [n for n in bed.daemons.daemons if n.endswith(f"-{mode}") or n.startswith(f"capture-{mode}-")]
        bed.daemons.stop(*names)
        record["capture"] = {n: capture.capture_counters(bed.daemons[n].log_path)
                             for n in names if n.startswith("capture-")}
        record["summary"] = results.finalize_mode(config.mode_dir(mode), mode, config.devices.count,
                                                  config.devices.energy_interval_s)
        if mode == Mode.QKD and mode in clocks.clocks:
            record["clock_epoch"] = clocks.clocks[mode].epoch_wall
            _write_key_series(bed, config.mode_dir(mode), clocks.clocks[mode].epoch_wall)


def _devices_until_the_end(mode: str, bed: Testbed, clocks: ModeClocks, options: RunOptions, record: dict,
                           injector: list) -> None:
    """Start the mode's devices (and what they need), the mode's faults, and follow the devices to the
    end of the mode."""
    config, stop = bed.config, bed.stop
    fleet = bed.daemons[f"devices-{mode}"]
    bed.daemons.start(fleet.name)
    record["clock_epoch"] = clocks.clocks[mode].epoch_wall
    injector.append(FaultInjector(bed, mode, clocks.clocks[mode], stop).start())
    wakes, received = FleetProgress(fleet.log_path), RowCounter(config.mode_dir(mode) / "received.csv")
    devices, hours = config.devices, config.run.hours
    # Progress is what the devices have done (they may lag the clock when the machine is too slow
    # for the time scale), so the bar's ETA is honest.
    expected_wakes = max(1, devices.count * int(config.duration_s // devices.wake_period_s))

    def report(count: int, fraction: float | None = None) -> None:
        if options.progress:
            fraction = min(1.0, count / expected_wakes) if fraction is None else fraction
            options.progress(mode, fraction, {"emulated_h": fraction * hours, "hours": hours,
                                              "devices": devices.count, "wakes": count, "received": received()})

    # Devices may fall behind the clock when the machine cannot keep up with the time scale; the
    # run then simply takes longer. What must not happen is a fleet that stops making progress.
    clock = clocks.clocks[mode]
    stall_s = max(60.0, 3 * devices.publish_timeout_s, 3 * devices.wake_period_s / config.run.time_scale)
    last_count, last_change = -1, time.monotonic()
    while fleet.running:
        count = wakes()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > stall_s and clock.now() > devices.wake_period_s:
            raise RuntimeError(f"devices of mode {mode} made no progress for {stall_s:.0f} s (see {fleet.log_path})")
        report(count)
        if stop.wait(0.5):
            stop.check()
    if fleet.popen.returncode != 0:
        raise RuntimeError(f"device fleet of mode {mode} failed (exit {fleet.popen.returncode}): "
                           f"{fleet.log_tail(3)}")
    # Let the last readings reach the platform before it stops recording.
    if stop.wait(min(2.0, devices.publish_timeout_s)):
        stop.check()
    report(wakes(), fraction=1.0)


def _running_pids(bed: Testbed) -> dict[str, int]:
    """The run's daemons that are running, and Open vSwitch's datapath process (where the CPU goes)."""
    pids = {name: d.pid for name, d in bed.daemons.daemons.items() if d.running}
    try:
        pids["ovs-vswitchd"] = int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())
    except (OSError, ValueError):
        pass
    return pids


def _mode_health(config: RunConfig, mode: str, cpu_samples: list[float]) -> dict:
    """Did the emulator keep up during the mode (the fleet's and the CPU's figures)?"""
    fleet_path = config.mode_dir(mode) / "fleet.json"
    try:
        fleet = json.loads(fleet_path.read_text()) if fleet_path.exists() else None
    except ValueError:
        fleet = None
    return health.assess(fleet, cpu_samples, None, health.load_thresholds(), _radio_on_s(config.mode_dir(mode)))


def _radio_on_s(mode_dir: Path) -> float | None:
    """The devices' radio-on time (transmit plus listen, emulated s) over the mode, from energy.csv."""
    try:
        with open(mode_dir / "energy.csv", newline="", encoding="utf-8") as handle:
            return sum(float(row["t_radio_tx_s"]) + float(row["t_radio_listen_s"]) for row in csv.DictReader(handle))
    except (OSError, KeyError, ValueError):
        return None


def _write_key_series(bed: Testbed, mode_dir: Path, mode_epoch: float) -> None:
    """``keys.csv`` of the QKD mode from Bob's buffer log, moved onto the mode's clock."""
    config = bed.config
    if "qkd_clock_epoch" not in bed.facts:
        return
    offset_s = (mode_epoch - bed.facts["qkd_clock_epoch"]) * config.run.time_scale
    series = results.key_series(results.read_csv(config.link_dir / "bob" / "buffer.csv"),
                                results.read_csv(mode_dir / "sent.csv"), offset_s, config.duration_s)
    series.to_csv(mode_dir / "keys.csv", index=False)


def _analyze(config: RunConfig, metadata: dict) -> None:
    """Derive the per-interval series, the capture cross-check and the figures from what was stored.

    Runs after teardown, from files only; a failure here must not cost the run its raw results,
    so it is recorded in the metadata instead of raised.
    """
    from harness.analysis.analyze import analyze_run
    from harness.analysis.plots import plot_run

    try:
        analyze_run(config.path, interval_s=config.devices.energy_interval_s)
        metadata["analysis"] = "analysis.json"
    except Exception as exc:  # recorded, and the raw files stay for `qiot analyze` later
        metadata["analysis"] = f"failed: {type(exc).__name__}: {exc}"
    results.write_json_atomic(config.path / "metadata.json", metadata)
    try:
        plot_run(config.path)
    except Exception as exc:  # figures can always be drawn later from the stored files: `qiot plot`
        metadata["figures"] = f"failed: {type(exc).__name__}: {exc}"
        results.write_json_atomic(config.path / "metadata.json", metadata)
