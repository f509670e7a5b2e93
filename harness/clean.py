"""``qiot clean``: remove what qiot runs left behind, and nothing else.

Only resources that a run recorded (``harness.state``) or tagged are touched: processes whose PID
*and* kernel start time match the record (so a recycled PID is never killed), the namespaces held
by recorded host shells, OVS bridges carrying ``external_ids:qiot-run``, and root-namespace
interfaces whose alias starts with ``qiot:``. Running it twice is harmless.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.state import INTERFACE_ALIAS_PREFIX, owner_alive, process_start_time, read_records, state_files


@dataclass
class CleanReport:
    processes: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.processes or self.bridges or self.interfaces or self.runs)


def _kill_recorded(pid: int, start_time: int | None) -> bool:
    """Kill ``pid`` (and its group) only if it is still the process that was recorded."""
    if start_time is None or process_start_time(pid) != start_time:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and process_start_time(pid) == start_time:
            time.sleep(0.05)
        if process_start_time(pid) != start_time:
            return True
    return True


def _tagged_bridges() -> list[str]:
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "--bare", "--columns=name,external_ids", "list", "bridge"],
                         capture_output=True, text=True)
    bridges, name = [], None
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line:
            name = None
        elif name is None:
            name = line
        elif "qiot-run=" in line:
            bridges.append(name)
    return bridges


def _tagged_interfaces() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():
        if f"alias {INTERFACE_ALIAS_PREFIX}" in line:
            names.append(line.split(":", 2)[1].strip().split("@")[0])
    return names


def clean(state_dir: Path | None = None, force: bool = False) -> CleanReport:
    """Remove every recorded or tagged qiot resource of runs that ended; return what was removed.

    A run whose owning process still lives is left alone (listed in ``report.live``), and so are
    the tagged bridges and interfaces, which may be its own, unless ``force`` is given.
    """
    report = CleanReport()
    recorded_bridges, recorded_interfaces = set(), set()
    for path in state_files(state_dir):
        records = list(read_records(path))
        owner = owner_alive(records)
        if owner is not None and not force:
            report.live.append(f"{path.stem} (pid {owner.pid})")
            continue
        # Services first, then the namespaces' shells: a namespace disappears with its last process.
        for record in sorted(records, key=lambda r: r.kind == "netns"):
            if record.kind in ("process", "netns") and record.pid:
                if _kill_recorded(record.pid, record.start_time):
                    report.processes.append(f"{record.name} (pid {record.pid})")
            elif record.kind == "bridge":
                recorded_bridges.add(record.name)
            elif record.kind == "interface":
                recorded_interfaces.add(record.name)
        report.runs.append(path.stem)
        path.unlink(missing_ok=True)
    if report.live:
        return report  # the tags of a live run look exactly like leftovers: touch none of them
    ovs_up = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0
    if ovs_up:
        existing = set(subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                      text=True).stdout.split())
        for bridge in sorted((recorded_bridges & existing) | set(_tagged_bridges())):
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", bridge], capture_output=True)
            report.bridges.append(bridge)
    for intf in sorted(recorded_interfaces | set(_tagged_interfaces())):
        if subprocess.run(["ip", "link", "del", "dev", intf], capture_output=True).returncode == 0:
            report.interfaces.append(intf)
    return report
