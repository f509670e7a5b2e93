"""What this machine's emulator can carry: ``experiments/emulator.toml``, measured on it.

Three sections, each figure with how it was measured: ``[access_switch]`` (ports before stations are
grouped into cells, read by :mod:`harness.stations`), ``[fleet]`` (wakes in flight at once in the
device fleet) and ``[memory]`` (what a device costs, from which the ``--devices`` limit follows).

Every emulated device costs the host memory: its network namespace, veth pair and bridge port, its
sockets and TLS state in the fleet, its session at the broker, its entries in the controller and the
key path. ``experiments/emulator.toml`` ``[memory]`` holds the measured cost per device and what the
rest of a run needs (how each was measured is written there); the limit is what fits into this
machine's memory (``/proc/meminfo`` ``MemTotal``), capped by the address plan of the wireless subnet.
Pure code: reads two files, imports nothing from Mininet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.scenario import EXPERIMENTS_DIR
from harness.settings import SettingsError, from_table, read_toml, setting

EMULATOR_FILE = EXPERIMENTS_DIR / "emulator.toml"
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True, kw_only=True)
class AccessSwitchSettings:
    """``[access_switch]``: the wireless access switch of the Fig. 1 site."""

    max_ports: int = setting(doc="access-switch ports for stations before they are grouped into cells", minimum=1)
    announce_per_s: float = setting(doc="stations' gratuitous ARPs sent per second once every station is "
                                        "configured (the controller's packet-in burst)", above=0.0)


@dataclass(frozen=True, kw_only=True)
class FleetSettings:
    """``[fleet]``: the device fleet process (``harness/devices/fleet.py``)."""

    max_workers: int = setting(doc="device wakes in flight at once in one fleet process (its threads)", minimum=1)
    max_processes: int = setting(doc="fleet processes (shards) at most; a fleet uses one per max_workers "
                                     "devices up to this", minimum=1)


@dataclass(frozen=True, kw_only=True)
class MemorySettings:
    """``experiments/emulator.toml`` ``[memory]``: what a run costs the host's memory."""

    per_device_kib: float = setting(doc="host memory one emulated device costs over a whole run, KiB "
                                        "(measured: see emulator.toml)", above=0.0)
    reserve_mib: float = setting(doc="memory kept for the rest of a run (Open vSwitch, the QKD link, the "
                                     "daemons, the post-run analysis) and the system, MiB", minimum=0.0)


def _section(kind, name: str, path: Path):
    return from_table(kind, read_toml(path).get(name, {}), path=path, where=(name,), error=SettingsError)


def access_switch_settings(path: Path = EMULATOR_FILE) -> AccessSwitchSettings:
    return _section(AccessSwitchSettings, "access_switch", path)


def fleet_settings(path: Path = EMULATOR_FILE) -> FleetSettings:
    return _section(FleetSettings, "fleet", path)


def memory_settings(path: Path = EMULATOR_FILE) -> MemorySettings:
    return _section(MemorySettings, "memory", path)


def mem_total_kib(meminfo: Path = MEMINFO) -> int:
    """The machine's memory (``MemTotal``), KiB."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise SettingsError(f"{meminfo}: no MemTotal line")


@dataclass(frozen=True)
class DeviceLimit:
    """The most devices a run may have here, and what bounds it."""

    devices: int
    reason: str

    def check(self, count: int) -> None:
        """Raise :class:`SettingsError` (a one-line message) if ``count`` devices exceed the limit."""
        if count > self.devices:
            raise SettingsError(f"{count} devices are more than this machine can emulate: at most "
                                f"{self.devices} ({self.reason})")


def device_limit(address_limit: int, settings: MemorySettings | None = None,
                 total_kib: int | None = None) -> DeviceLimit:
    """The ``--devices`` limit: what fits into memory, and at most ``address_limit`` (the addresses the
    wireless subnet has for devices).

    :param address_limit: devices the topology's address plan can number
    :param settings: the memory figures (default: ``experiments/emulator.toml``)
    :param total_kib: the machine's memory in KiB (default: ``/proc/meminfo``)
    """
    settings = settings or memory_settings()
    total_kib = mem_total_kib() if total_kib is None else total_kib
    usable_kib = max(0.0, total_kib - settings.reserve_mib * 1024.0)
    by_memory = int(usable_kib // settings.per_device_kib)
    memory = (f"{total_kib / 1024**2:.1f} GiB of memory, {settings.reserve_mib / 1024:.1f} GiB kept for the "
              f"rest of the run, {settings.per_device_kib:g} KiB per device measured, "
              f"{EMULATOR_FILE.name} [memory]")
    if by_memory < address_limit:
        return DeviceLimit(max(1, by_memory), memory)
    return DeviceLimit(address_limit, f"the wireless subnet's addresses; memory would allow {by_memory}: {memory}")
