"""Scenarios: every parameter of a run, read from a TOML file into typed, checked settings.

A scenario is named (``hpn``, ``bcn``: files in ``experiments/``) or given as a path to the user's
own file. Each section belongs to the part of qiot that uses it, which declares it as a settings
dataclass (:mod:`harness.settings`): ``[fibre]`` and ``[wireless]`` (:mod:`harness.links`), ``[qkd]``
(:mod:`harness.qkd.config`), ``[devices]`` (:mod:`harness.devices.config`), ``[kme]``
(:mod:`harness.kme.config`), ``[run]`` (here). A typo or an out-of-range value is reported as
``file: [section] key must be ...`` instead of surfacing later as a traceback. Values that come from
the literature carry their source as a comment in the scenario file itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.capture import CaptureSettings
from harness.devices.config import DeviceSettings
from harness.faults import FaultSpec
from harness.kme.config import KmeSettings
from harness.links import FibreSettings, WirelessShape
from harness.qkd.config import QkdLinkConfig
from harness.settings import SettingsError, from_table, read_toml, setting, subsection, to_table, with_values

#: Folder holding the shipped scenario files (``experiments/`` at the project root).
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
#: The scenario every command uses when ``--scenario`` is not given (``run``, ``kme``, ``qkd``,
#: ``capacity``, ``sweep``): the paper's Bristol City Network link.
DEFAULT_SCENARIO = "bcn"
#: Log levels of the run's daemons (``[run] log_level``), quietest last.
LOG_LEVELS = ("debug", "info", "warning", "error")


class ScenarioError(SettingsError):
    """A scenario file is missing, unreadable or holds a bad value; the message names file and key."""


@dataclass(frozen=True, kw_only=True)
class ScenarioInfo:
    """The scenario's ``[scenario]`` table."""

    name: str = setting(doc="short name, used in result folder names")
    description: str = setting("", doc="one line shown by `qiot scenarios`")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The scenario's ``[run]`` table: how long, how fast, which seed."""

    hours: float = setting(doc="emulated run length per mode, h", above=0.0)
    time_scale: float = setting(1.0, doc="emulated seconds per wall second for sleeps and periodic work",
                                minimum=0.001)
    seed: int = setting(1, doc="seed of every random choice of the run")
    log_level: str = setting("info", doc="log level of the run's daemons (logs/<daemon>.log); "
                                         "`qiot run --verbose` sets debug", choices=LOG_LEVELS)


@dataclass(frozen=True, kw_only=True)
class ScenarioSettings:
    """A whole scenario file."""

    scenario: ScenarioInfo = subsection(ScenarioInfo)
    fibre: FibreSettings = subsection(FibreSettings)
    qkd: QkdLinkConfig = subsection(QkdLinkConfig)
    devices: DeviceSettings = subsection(DeviceSettings)
    kme: KmeSettings = subsection(KmeSettings)
    wireless: WirelessShape = subsection(WirelessShape)
    run: RunSettings = subsection(RunSettings)
    capture: CaptureSettings = subsection(CaptureSettings)
    faults: tuple[FaultSpec, ...] = setting((), doc="[[faults]]: faults injected during each mode")


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the file it came from and its typed settings."""

    path: Path
    settings: ScenarioSettings

    @property
    def name(self) -> str:
        return self.settings.scenario.name

    @property
    def data(self) -> dict[str, Any]:
        """Every section as plain tables (what metadata.json records as the scenario used)."""
        return to_table(self.settings)

    def section(self, name: str) -> dict[str, Any]:
        """One section as a plain table, defaults included."""
        return to_table(getattr(self.settings, name))

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Scenario":
        """A copy with ``{"section.key": value}`` overrides applied and checked again."""
        changed = with_values(self.settings, overrides, path=self.path, error=ScenarioError)
        return Scenario(self.path, _derive(changed, self.path))


def resolve_path(name_or_path: str) -> Path:
    """Turn a scenario name (``bcn``) or a file path into the path of an existing file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in name_or_path:
        if not candidate.is_file():
            raise ScenarioError(f"{name_or_path}: no such scenario file")
        return candidate
    shipped = EXPERIMENTS_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        known = ", ".join(available()) or "none"
        raise ScenarioError(f"unknown scenario {name_or_path!r} (known: {known}; or give a path to a .toml file)")
    return shipped


def available() -> list[str]:
    """Names of the scenarios shipped in ``experiments/`` (files with a ``[scenario]`` table; other
    settings files live there too, e.g. ``paper.toml``)."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml") if _is_scenario(p))


def _is_scenario(path: Path) -> bool:
    try:
        return "scenario" in read_toml(path)
    except SettingsError:
        return True  # a broken scenario is still listed, so `qiot scenarios` can say what is wrong


def load(name_or_path: str) -> Scenario:
    """Read and validate a scenario; raise :class:`ScenarioError` naming file and key on any problem."""
    from harness.energy.profile import DeviceProfile
    from harness.energy.wakecycle import check_plan

    path = resolve_path(name_or_path)
    settings = _derive(from_table(ScenarioSettings, read_toml(path, ScenarioError), path=path, error=ScenarioError),
                       path)
    try:  # what the scenario's device cannot do is refused now, not by every device at every wake
        check_plan(DeviceProfile.load(settings.devices.energy_profile), settings.kme.wireless_transport,
                   settings.devices)
    except ValueError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return Scenario(path, settings)


def _derive(settings: ScenarioSettings, path: Path) -> ScenarioSettings:
    """Fill in derived values and check what needs another part of qiot (the device profile file)."""
    from harness.energy.profile import DeviceProfile, ProfileError

    try:
        DeviceProfile.load(settings.devices.energy_profile)
    except ProfileError as exc:
        raise ScenarioError(f"{path}: [devices] energy_profile: {exc}") from None
    return dataclasses.replace(settings, qkd=settings.qkd.replace(loss_db=settings.fibre.loss_db))
