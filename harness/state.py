"""What a run has made on this machine, recorded as it is made, so ``qiot clean`` removes only that.

Each run appends JSON lines to ``/run/qiot/<run_id>.jsonl``: its owner (the qiot process), processes
(PID plus the kernel's start time of that PID, so a recycled PID is never mistaken for ours),
interfaces, OVS bridges and host namespaces. Bridges and interfaces are also tagged with the run id
and the owner (:func:`owner_tag`: bridge ``external_ids:qiot_run``/``qiot_owner``, interface alias
``qiot-run:<run_id>:<pid>:<start>``), so ``qiot clean`` can tell a live run's resources from leftovers
even when the record is in another state folder or lost. Records are appended and flushed
immediately: a crash a moment after a resource was made still leaves its record behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: Where run records live: tmpfs, so a reboot (which also removes namespaces and veths) clears it.
STATE_DIR = Path(os.environ.get("QIOT_STATE_DIR", "/run/qiot"))

INTERFACE_ALIAS_PREFIX = "qiot-run:"
#: The OVS bridge ``external_ids`` keys naming a bridge's run and its owner.
BRIDGE_RUN_KEY, BRIDGE_OWNER_KEY = "qiot_run", "qiot_owner"


def owner_tag(pid: int | None = None) -> str:
    """``<pid>:<start time>`` of the owning process (this one by default): what resources are tagged with."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{process_start_time(pid)}"


def tag_owner_alive(tag: str) -> bool:
    """Whether the process a ``<pid>:<start time>`` tag names still lives (same PID and start time)."""
    pid, _, start = tag.partition(":")
    try:
        return process_start_time(int(pid)) == int(start)
    except ValueError:
        return False


def interface_alias(run_id: str) -> str:
    """The alias a run gives the root-namespace interfaces it makes."""
    return f"{INTERFACE_ALIAS_PREFIX}{run_id}:{owner_tag()}"


def parse_interface_alias(alias: str) -> tuple[str, str | None]:
    """(run id, owner tag or None for an untagged old alias) of a qiot interface alias."""
    body = alias[len(INTERFACE_ALIAS_PREFIX):]
    parts = body.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], f"{parts[1]}:{parts[2]}"
    return body, None


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of ``pid``, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 22 (starttime) comes after the parenthesised command name, which may contain spaces.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


@dataclass
class Record:
    """One thing a run made: ``kind`` is owner, process, netns, named_netns, nft_table, interface or bridge."""

    kind: str
    name: str
    pid: int | None = None
    start_time: int | None = None


class RunState:
    """The append-only record of one run's resources."""

    def __init__(self, run_id: str, state_dir: Path | None = None) -> None:
        self.run_id = run_id
        self.dir = state_dir or STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{run_id}.jsonl"

    def _append(self, record: Record) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record.__dict__) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def record_owner(self) -> None:
        """This process owns the run: ``qiot clean`` leaves the run alone while it lives."""
        pid = os.getpid()
        self._append(Record("owner", "qiot", pid, process_start_time(pid)))

    def record_process(self, name: str, pid: int) -> None:
        self._append(Record("process", name, pid, process_start_time(pid)))

    def record_netns(self, name: str, pid: int) -> None:
        """A namespace held open by ``pid`` (a Mininet host's shell)."""
        self._append(Record("netns", name, pid, process_start_time(pid)))

    def record_named_netns(self, name: str) -> None:
        """A named namespace (``ip netns``, a station's): removed by name, it has no process."""
        self._append(Record("named_netns", name))

    def record_nft_table(self, family: str, name: str) -> None:
        """An nftables table in the root namespace (``family name``)."""
        self._append(Record("nft_table", f"{family} {name}"))

    def record_interface(self, name: str) -> None:
        self._append(Record("interface", name))

    def record_bridge(self, name: str) -> None:
        self._append(Record("bridge", name))

    def records(self) -> list[Record]:
        return list(read_records(self.path))

    def forget(self) -> None:
        """Delete the record file (after a clean teardown)."""
        self.path.unlink(missing_ok=True)


def read_records(path: Path) -> Iterator[Record]:
    """Records of one state file; a torn last line (crash mid-write) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            yield Record(**json.loads(line))
        except (ValueError, TypeError):
            continue


def owner_alive(records: list[Record]) -> Record | None:
    """The run's owner record if that process still lives (same PID and start time), else None."""
    for record in records:
        if record.kind == "owner" and record.pid and process_start_time(record.pid) == record.start_time:
            return record
    return None


def state_files(state_dir: Path | None = None) -> list[Path]:
    """Every run's record file currently present."""
    directory = state_dir or STATE_DIR
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
