"""``qiot clean``: remove what qiot runs left behind, and nothing else.

Only resources that a run recorded (``harness.state``) or tagged are touched: processes whose PID
*and* kernel start time match the record (so a recycled PID is never killed), the namespaces held
by recorded host shells, OVS bridges carrying ``external_ids:qiot_run``, and root-namespace
interfaces whose alias starts with ``qiot-run:``; and of those only the ones whose owning qiot process
is dead, whichever state folder recorded them (``--force`` also takes the live runs of the state
folder it cleans, never those recorded elsewhere). Running it twice is harmless.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.state import (BRIDGE_OWNER_KEY, BRIDGE_RUN_KEY, INTERFACE_ALIAS_PREFIX, owner_alive, parse_interface_alias, process_start_time,
                           read_records, state_files, tag_owner_alive)


@dataclass
class CleanReport:
    processes: list[str] = field(default_factory=list)
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.processes or self.bridges or self.interfaces or self.namespaces or self.runs)


def _kill_recorded(pid: int, start_time: int | None) -> bool:
    """Kill ``pid`` (and its group) if it is still the process that was recorded; True if it is gone now
    because of us, False if it was not ours (any more) or survived SIGKILL."""
    if not _alive(pid, start_time):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _alive(pid, start_time):
            time.sleep(0.05)
        if not _alive(pid, start_time):
            return True
    return False


def _alive(pid: int, start_time: int | None) -> bool:
    """The recorded process still runs: same PID and start time, and not a zombie awaiting its parent."""
    if start_time is None or process_start_time(pid) != start_time:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _tagged_bridges() -> list[tuple[str, str, str | None]]:
    """(bridge, run id, owner tag or None) of every OVS bridge a qiot run tagged."""
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "--format=json", "--columns=name,external_ids",
                          "list", "bridge"], capture_output=True, text=True)
    try:
        rows = json.loads(out.stdout or "{}").get("data", [])
    except ValueError:
        return []
    bridges = []
    for name, external_ids in rows:
        ids = dict(external_ids[1]) if isinstance(external_ids, list) and external_ids[0] == "map" else {}
        if BRIDGE_RUN_KEY in ids:
            bridges.append((name, ids[BRIDGE_RUN_KEY], ids.get(BRIDGE_OWNER_KEY)))
    return bridges


def _tagged_interfaces() -> list[tuple[str, str, str | None]]:
    """(interface, run id, owner tag or None) of every root-namespace interface a qiot run tagged."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        marker = f"alias {INTERFACE_ALIAS_PREFIX}"
        if marker in line:
            name = line.split(":", 2)[1].strip().split("@")[0]
            run_id, owner = parse_interface_alias(line[line.index(marker) + len("alias "):].split()[0])
            found.append((name, run_id, owner))
    return found


def clean(state_dir: Path | None = None, force: bool = False) -> CleanReport:
    """Remove every recorded or tagged qiot resource of runs that ended; return what was removed.

    A run whose owning process still lives is left alone (listed in ``report.live``), and so are
    the bridges and interfaces tagged with a living owner. ``force`` removes the live runs recorded in
    this state folder too, but never the resources of a live run recorded elsewhere (another user's,
    a test's own folder): their tags name a living owner.
    """
    report = CleanReport()
    recorded_bridges, recorded_interfaces, live_runs, cleaned_runs = set(), set(), set(), set()
    for path in state_files(state_dir):
        records = list(read_records(path))
        owner = owner_alive(records)
        if owner is not None and not force:
            report.live.append(f"{path.stem} (pid {owner.pid})")
            live_runs.add(path.stem)
            continue
        cleaned_runs.add(path.stem)
        # Services first, then the namespaces' shells: a namespace disappears with its last process.
        for record in sorted(records, key=lambda r: r.kind == "netns"):
            if record.kind in ("process", "netns") and record.pid:
                if _kill_recorded(record.pid, record.start_time):
                    report.processes.append(f"{record.name} (pid {record.pid})")
            elif record.kind == "nft_table":
                family, _, name = record.name.partition(" ")
                subprocess.run(["nft", "delete", "table", family, name], capture_output=True)
            elif record.kind == "named_netns":
                if subprocess.run(["ip", "netns", "del", record.name], capture_output=True).returncode == 0:
                    report.namespaces.append(record.name)
            elif record.kind == "bridge":
                recorded_bridges.add(record.name)
            elif record.kind == "interface":
                recorded_interfaces.add(record.name)
        report.runs.append(path.stem)
        path.unlink(missing_ok=True)

    def alive(run_id: str, owner: str | None) -> bool:
        if run_id in cleaned_runs:
            return False
        return run_id in live_runs or (owner is not None and tag_owner_alive(owner))

    ovs_up = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True).returncode == 0
    if ovs_up:
        tagged = _tagged_bridges()
        spared = {name for name, run_id, owner in tagged if alive(run_id, owner)}
        existing = set(subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                      text=True).stdout.split())
        for bridge in sorted(((recorded_bridges & existing) | {name for name, _, _ in tagged}) - spared):
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", bridge], capture_output=True)
            report.bridges.append(bridge)
    tagged = _tagged_interfaces()
    spared = {name for name, run_id, owner in tagged if alive(run_id, owner)}
    for intf in sorted((recorded_interfaces | {name for name, _, _ in tagged}) - spared):
        if subprocess.run(["ip", "link", "del", "dev", intf], capture_output=True).returncode == 0:
            report.interfaces.append(intf)
    return report
