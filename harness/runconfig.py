"""The run configuration: one typed, immutable description of a run, built once, read by every daemon.

``qiot run`` builds a :class:`RunConfig` from the scenario and the command-line overrides
(:func:`build`) and writes it to ``RUN_DIR/config/run.json`` before anything starts. Every daemon
of the run is started as ``python -m MODULE --config RUN_DIR/config/run.json --role NAME`` and reads
its part from that file (:func:`read`): no layer copies a scenario field into another's argument
list. Each part is owned by the core that uses it (``devices``: :mod:`harness.devices.config`,
``qkd``: :mod:`harness.qkd.config`, ``kme``: :mod:`harness.kme.config`, links: :mod:`harness.links`,
the Fig. 1 ``site``: :mod:`topologies.fig1`). Facts only known once the run is going (namespace
PIDs, the clock epochs of each mode) are not configuration: they reach a daemon as ``--clock-epoch``
and through ``RUN_DIR/config/hosts.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.capture import CaptureSettings
from harness.devices.config import DeviceSettings
from harness.enums import MODES, Mode
from harness.faults import FaultSpec
from harness.kme.config import KmeSettings
from harness.links import FibreSettings, WirelessShape
from harness.qkd.config import QkdLinkConfig
from harness.scenario import LOG_LEVELS, RunSettings, Scenario
from harness.settings import SettingsError, from_table, setting, subsection, to_table
from topologies.fig1 import Fig1Site

#: Version of the run.json format; bumped when a field changes meaning.
RUN_CONFIG_VERSION = 1
RUN_CONFIG_NAME = "run.json"
HOSTS_NAME = "hosts.json"
#: The format of the log lines qiot's own daemons write to their ``logs/<daemon>.log``.
DAEMON_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The log level of a daemon started on its own (outside a run) without ``--log-level``.
STANDALONE_LOG_LEVEL = "warning"


class RunConfigError(SettingsError):
    """run.json is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True, kw_only=True)
class ControllerPorts:
    """The SDN controller's loopback ports, chosen free when the run is configured."""

    openflow: int = setting(doc="OpenFlow 1.3 listener the switches connect to", minimum=1, maximum=65535)
    rest: int = setting(doc="northbound REST API (devices, keys, counters)", minimum=1, maximum=65535)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run and its daemons need, from the scenario and the command line."""

    version: int = setting(RUN_CONFIG_VERSION, doc="run.json format version")
    run_id: str = setting(doc="the run's name: <scenario>-<UTC time>")
    run_dir: str = setting(doc="the run directory")
    scenario_name: str = setting(doc="the scenario's [scenario] name")
    scenario_file: str = setting(doc="the scenario file the run was built from")
    modes: tuple[Mode, ...] = setting(doc="key modes, in the order they run (none: a testbed without devices)")
    run: RunSettings = subsection(RunSettings)
    fibre: FibreSettings = subsection(FibreSettings)
    wireless: WirelessShape = subsection(WirelessShape)
    qkd: QkdLinkConfig = subsection(QkdLinkConfig)
    devices: DeviceSettings = subsection(DeviceSettings)
    kme: KmeSettings = subsection(KmeSettings)
    capture: CaptureSettings = subsection(CaptureSettings)
    faults: tuple[FaultSpec, ...] = setting((), doc="faults injected during each mode")
    site: Fig1Site = subsection(Fig1Site)
    controller: ControllerPorts = subsection(ControllerPorts)

    def __post_init__(self) -> None:
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes must be distinct, got {self.modes!r}")
        if self.site.devices != self.devices.count:
            raise ValueError("site.devices and devices.count disagree")

    # --- places ---------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    @property
    def config_dir(self) -> Path:
        return self.path / "config"

    @property
    def config_file(self) -> Path:
        return self.config_dir / RUN_CONFIG_NAME

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    @property
    def link_dir(self) -> Path:
        """The QKD link's per-block records (``qkd-link/alice``, ``qkd-link/bob``)."""
        return self.path / "qkd-link"

    def mode_dir(self, mode: str) -> Path:
        return self.path / Mode(mode).value

    @property
    def duration_s(self) -> float:
        """Emulated length of each mode, seconds."""
        return self.run.hours * 3600.0

    # --- files ----------------------------------------------------------------------------------
    def write(self) -> Path:
        """Write ``config/run.json`` (atomically) and return its path."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(to_table(self), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.config_file)
        return self.config_file

    def write_hosts(self, netns: dict[str, str]) -> Path:
        """Write ``config/hosts.json``: host name -> path of its network namespace (``/proc/PID/ns/net``)."""
        path = self.config_dir / HOSTS_NAME
        path.write_text(json.dumps(netns, indent=1) + "\n", encoding="utf-8")
        return path

    def read_hosts(self) -> dict[str, str]:
        path = self.config_dir / HOSTS_NAME
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunConfigError(f"{path}: cannot read the run's hosts: {exc}") from None


def overridden(scenario: Scenario, *, hours: float | None = None, devices: int | None = None,
               time_scale: float | None = None, seed: int | None = None, log_level: str | None = None,
               faults: tuple[FaultSpec, ...] = ()) -> Scenario:
    """``scenario`` with the command line's overrides (None: keep the scenario's value), checked again."""
    overrides: dict[str, Any] = {key: value for key, value in (
        ("run.hours", hours), ("devices.count", devices), ("run.time_scale", time_scale), ("run.seed", seed),
        ("run.log_level", log_level)) if value is not None}
    if faults:
        overrides["faults"] = tuple(scenario.settings.faults) + tuple(faults)
    return scenario.with_overrides(overrides) if overrides else scenario


#: Interval lengths energy.csv rows may take, seconds: readable round figures.
_ROUND_INTERVALS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: Fewest energy rows per device a run should have, so Fig. 2a-b show a curve, not a dot (issue 11).
MIN_ENERGY_ROWS = 12


def suited_energy_interval(duration_s: float, preferred_s: float) -> float:
    """The scenario's energy interval, or a round shorter one that gives a run of ``duration_s`` at
    least :data:`MIN_ENERGY_ROWS` rows per device."""
    limit = min(preferred_s, duration_s / MIN_ENERGY_ROWS)
    if preferred_s <= limit:
        return preferred_s
    fitting = [float(s) for s in _ROUND_INTERVALS_S if s <= limit]
    return fitting[-1] if fitting else max(limit, 1.0)


def build(scenario: Scenario, *, run_id: str, run_dir: Path, modes: tuple[str, ...] = MODES,
          rogue_hosts: int = 0) -> RunConfig:
    """The run configuration of ``scenario`` (with its overrides applied: :func:`overridden`); the
    energy interval is shortened for a short run (:func:`suited_energy_interval`)."""
    settings = scenario.settings
    interval = suited_energy_interval(settings.run.hours * 3600.0, settings.devices.energy_interval_s)
    devices = dataclasses.replace(settings.devices, energy_interval_s=interval)
    return RunConfig(run_id=run_id, run_dir=str(run_dir), scenario_name=settings.scenario.name,
                     scenario_file=str(scenario.path), modes=tuple(Mode(m) for m in modes), run=settings.run,
                     fibre=settings.fibre, wireless=settings.wireless, qkd=settings.qkd, devices=devices,
                     kme=settings.kme, capture=settings.capture, faults=settings.faults,
                     site=Fig1Site(devices=settings.devices.count, optical_switch=settings.fibre.optical_switch,
                                   rogue_hosts=rogue_hosts),
                     controller=ControllerPorts(openflow=free_tcp_port(), rest=free_tcp_port()))


def free_tcp_port() -> int:
    """A currently free TCP port on loopback."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_role_arguments(parser) -> None:
    """The options every daemon of a run takes: ``--config RUN_DIR/config/run.json --role NAME``."""
    parser.add_argument("--config", type=Path, help="the run's config/run.json")
    parser.add_argument("--role", help="this daemon's name in the run (its part of run.json)")
    parser.add_argument("--clock-epoch", type=float, default=None,
                        help="wall-clock time (epoch s) of emulated time 0 of the clock this daemon follows")


def add_log_level_argument(parser, standalone: str = STANDALONE_LOG_LEVEL) -> None:
    """``--log-level``: a daemon of a run logs at the run's ``[run] log_level`` unless this is given;
    started on its own, at ``standalone``."""
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default=None,
                        help=f"log level (default: the run's [run] log_level; standalone: {standalone})")


def log_level_of(option: str | None, config: RunConfig) -> str:
    """A daemon's log level in a run: its ``--log-level`` if given, else the run's ``[run] log_level``."""
    return option or config.run.log_level


def configure_logging(level: str | None) -> None:
    """Set up a daemon's own logging at ``level`` (one of :data:`harness.scenario.LOG_LEVELS`, any case;
    None: :data:`STANDALONE_LOG_LEVEL`) in the common format, on stderr, which a run sends to the
    daemon's log."""
    logging.basicConfig(level=(level or STANDALONE_LOG_LEVEL).upper(), format=DAEMON_LOG_FORMAT)


def read(path: str | Path) -> RunConfig:
    """Read a ``run.json``; raise :class:`RunConfigError` naming the file on any problem."""
    path = Path(path)
    try:
        table: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunConfigError(f"{path}: cannot read the run configuration: {exc}") from None
    if table.get("version") != RUN_CONFIG_VERSION:
        raise RunConfigError(f"{path}: run configuration version {table.get('version')!r}, "
                             f"this qiot reads version {RUN_CONFIG_VERSION}")
    return from_table(RunConfig, table, path=path, user=False, error=RunConfigError)

