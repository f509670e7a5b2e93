"""Reading a run directory (the layout ``qiot run`` writes; see docs/results.md), with its integrity checked.

One :class:`RunDir` gives checked access to ``metadata.json`` and to each mode's CSV files, so the
rest of the analysis never deals with missing files or columns itself. What it does with a problem:

- **refuses** (:class:`RunDirError`, a one-line message naming the file): a schema version newer than
  this qiot knows; a mode whose ``messages.csv`` is gone while its other result files are there; a
  completed run missing a mode or a mode's ``energy.csv``; a result file cut mid-row, or whose rows
  disagree with ``sent.csv`` / ``summary.csv`` (a truncated messages.csv would otherwise count its
  cut rows as lost);
- **flags** (:attr:`RunDir.warnings`, printed by every command and kept in analysis.json): modes
  without results in an interrupted run, energy rows that stop short of the mode's end, a degraded
  emulation.

Versions, Flent style: each file set has one version number (metadata.json ``schema_version`` for
what ``qiot run`` writes, analysis.json's for what the analysis writes). Older run files are
upgraded on read, one version step at a time (:data:`RUN_UPGRADES`); older analysis files are
simply derived again. A version newer than known is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.results import SCHEMA_VERSION as RUN_SCHEMA_VERSION, read_csv as read_raw_csv

#: Version of the files this package *writes* (series.csv, wire.csv, capture.json, analysis.json and
#: ``qiot compare`` exports). Bump it whenever a column is renamed, removed or changes meaning;
#: docs/results.md lists the history.
ANALYSIS_SCHEMA_VERSION = 2

#: Columns every mode's input files must have (after upgrading to the current version).
MESSAGES_COLUMNS = ("device", "seq", "t_emul", "t_sent", "t_received", "latency_ms", "received", "queued_s",
                    "error")
ENERGY_COLUMNS = ("device", "interval", "t_start_s", "t_end_s", "rdc", "energy_j", "avg_current_ma",
                  "battery_life_days")
#: Optional per-mode key-buffer log.
KEYS_COLUMNS = ("t_emul", "keys_in_buffer", "keys_delivered")
#: Columns that may never be empty: an empty one means the row was cut.
_NOT_NULL = {"messages.csv": ("device", "seq", "t_emul", "received"),
             "energy.csv": ("device", "t_start_s", "t_end_s", "rdc", "energy_j", "avg_current_ma",
                            "battery_life_days")}
#: A mode's result files: if any is there, messages.csv must be there too.
RESULT_FILES = ("messages.csv", "energy.csv", "sent.csv", "received.csv", "summary.csv")
#: How to rebuild messages.csv and summary.csv from a mode's raw files.
REDERIVE_HINT = "rebuild it from sent.csv and received.csv with `qiot analyze --rederive RUN_DIR`"
#: Energy rows must cover at least this share of the mode's emulated length (else: flagged).
ENERGY_COVERAGE = 0.98


class RunDirError(ValueError):
    """A run directory or one of its files is missing, damaged or of an unknown version; the
    message names the file."""


def _messages_v1_to_v2(frame: pd.DataFrame) -> pd.DataFrame:
    """Version 1 had no device queue: nothing was queued (``queued_s`` 0) and no error was copied
    (columns a later ``qiot analyze --rederive`` already wrote are kept)."""
    defaults = {"queued_s": 0.0, "error": ""}
    return frame.assign(**{column: value for column, value in defaults.items() if column not in frame})


#: RUN_UPGRADES[v][file] turns that file of version v into version v + 1 (applied in a chain).
RUN_UPGRADES: dict[int, dict[str, Callable[[pd.DataFrame], pd.DataFrame]]] = {
    1: {"messages.csv": _messages_v1_to_v2},
}


def check_version(value: Any, current: int, where: Path) -> int:
    """The schema version ``value`` read from ``where`` (absent: 1, the first); refuse bad or newer ones."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RunDirError(f"{where}: schema_version {value!r} is not a version number")
    if value > current:
        raise RunDirError(f"{where}: schema_version {value} is newer than this qiot reads ({current}); "
                          f"use a newer qiot")
    return value


@dataclass
class RunDir:
    """A run directory on disk: parsed ``metadata.json``, the modes with results, and what was flagged."""

    path: Path
    metadata: dict[str, Any]
    schema_version: int = RUN_SCHEMA_VERSION
    modes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _messages: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def scenario(self) -> dict[str, Any]:
        """The full scenario dict the run used (``{}`` if the metadata lacks it)."""
        scenario = self.metadata.get("scenario")
        return scenario if isinstance(scenario, dict) else {}

    @property
    def scenario_name(self) -> str:
        """Scenario name from the metadata, or ``?`` when it is not recorded."""
        return str(self.scenario.get("scenario", {}).get("name", "?"))

    @property
    def status(self) -> str:
        """How the run ended (``completed``, ``interrupted``, ``failed``, ``running``; ``?`` if unknown)."""
        return str(self.metadata.get("status", "?"))

    @property
    def completed(self) -> bool:
        """True when the run ended normally: then every missing file is an error, not a flag."""
        return self.status == "completed"

    @property
    def duration_s(self) -> float | None:
        """Emulated length of each mode from the scenario (``[run] hours``), None if not recorded."""
        hours = self.scenario.get("run", {}).get("hours")
        return float(hours) * 3600.0 if isinstance(hours, (int, float)) and hours > 0 else None

    @property
    def devices(self) -> int | None:
        """Devices per mode from the scenario (``[devices] count``), None if not recorded."""
        count = self.scenario.get("devices", {}).get("count")
        return int(count) if isinstance(count, int) else None

    @property
    def emulation(self) -> str:
        """``ok`` or ``degraded`` from metadata ``emulation_health.status``; ``not measured`` without it."""
        health = self.metadata.get("emulation_health")
        status = health.get("status") if isinstance(health, dict) else None
        return str(status) if status else "not measured"

    @property
    def degraded(self) -> bool:
        """True when the run measured that the emulation fell behind (its results are suspect)."""
        return self.emulation == "degraded"

    @property
    def commit(self) -> str:
        """Short qiot commit that made the run (``unknown`` if not recorded)."""
        commit = str(self.metadata.get("git_commit") or "unknown")
        return commit[:7] if commit != "unknown" else commit

    def mode_dir(self, mode: str) -> Path:
        """Folder of one mode; raise if it does not exist."""
        folder = self.path / mode
        if not folder.is_dir():
            raise RunDirError(f"{self.path}: no folder for mode {mode!r}")
        return folder

    def messages(self, mode: str) -> pd.DataFrame:
        """``<mode>/messages.csv`` (one row per reading), upgraded, checked whole against
        ``sent.csv`` and ``summary.csv``; raise :class:`RunDirError` if it is damaged."""
        if mode not in self._messages:
            folder = self.mode_dir(mode)
            frame = self._read(folder / "messages.csv", MESSAGES_COLUMNS)
            frame["device"] = frame["device"].astype(str)
            frame["received"] = frame["received"].astype(int)
            frame["queued_s"] = frame["queued_s"].fillna(0.0)
            self._cross_check(folder, frame)
            self._messages[mode] = frame
        return self._messages[mode].copy()

    def energy(self, mode: str) -> pd.DataFrame | None:
        """``<mode>/energy.csv`` (one row per device and accounting interval), or None when the mode
        has none (refused in a completed run, flagged otherwise). Short coverage is flagged."""
        path = self.mode_dir(mode) / "energy.csv"
        if not path.is_file():
            if self.completed:
                raise RunDirError(f"{path}: missing (the run completed, so every mode must have one)")
            self._flag(f"{mode}: no energy.csv (run {self.status}): no energy figures for {mode}")
            return None
        frame = self._read(path, ENERGY_COLUMNS)
        frame["device"] = frame["device"].astype(str)
        self._check_energy_coverage(mode, path, frame)
        return frame

    def summary(self, mode: str) -> pd.DataFrame | None:
        """``<mode>/summary.csv`` (one row) or None when absent; used only to cross-check."""
        path = self.mode_dir(mode) / "summary.csv"
        return self._read(path, ("mode",)) if path.is_file() else None

    def keys(self, mode: str) -> pd.DataFrame | None:
        """``<mode>/keys.csv`` (key-buffer log) or None when the run did not write one."""
        path = self.mode_dir(mode) / "keys.csv"
        return self._read(path, KEYS_COLUMNS) if path.is_file() else None

    def relay_fetches(self) -> pd.DataFrame | None:
        """``qkd/relay.csv`` (every device key fetch at the relay) or None when the run has none."""
        path = self.path / "qkd" / "relay.csv"
        return self._read(path, ("t_emul", "device", "outcome")) if path.is_file() else None

    def keys_served(self) -> pd.DataFrame | None:
        """``qkd/keys_served.csv`` as the analysis wrote it, or None when it wrote none."""
        path = self.path / "qkd" / "keys_served.csv"
        return self._read(path, ("period", "complete", "renewed", "devices_refused")) if path.is_file() else None

    def key_clock_offset_s(self, mode: str) -> float | None:
        """Where ``mode`` starts on the QKD link's clock (emulated s since ``qkd_clock_epoch``), None
        when the metadata lacks either epoch."""
        link = self.metadata.get("qkd_clock_epoch")
        record = self.metadata.get("mode_results", {}).get(mode, {})
        epoch = record.get("clock_epoch") if isinstance(record, dict) else None
        scale = self.scenario.get("run", {}).get("time_scale")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (link, epoch, scale)):
            return None
        return (float(epoch) - float(link)) * float(scale)

    def pcap(self, mode: str, name: str) -> Path | None:
        """Path of ``<mode>/pcap/<name>`` if that capture exists, else None."""
        path = self.mode_dir(mode) / "pcap" / name
        return path if path.is_file() else None

    def faults(self, mode: str) -> list[dict[str, Any]]:
        """Faults injected during ``mode`` (metadata ``faults``; an entry without ``mode`` applies
        to every mode), each with ``kind``, ``target``, ``at_s``, ``duration_s`` (emulated s from the
        mode's start)."""
        listed = self.metadata.get("faults") or []
        if not isinstance(listed, list):
            raise RunDirError(f"{self.path / 'metadata.json'}: faults must be a list")
        out = []
        for index, fault in enumerate(listed):
            where = f"{self.path / 'metadata.json'}: faults[{index}]"
            if not isinstance(fault, dict):
                raise RunDirError(f"{where} must be an object")
            for key in ("at_s", "duration_s"):
                value = fault.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise RunDirError(f"{where}: {key} must be a number >= 0, got {value!r}")
            if fault.get("mode") in (None, mode):
                out.append(dict(fault, kind=str(fault.get("kind", "?")), at_s=float(fault["at_s"]),
                                duration_s=float(fault["duration_s"])))
        return out

    def analysis_version(self) -> int | None:
        """Schema version of the stored analysis (analysis.json), None if the run has none yet."""
        path = self.path / "analysis.json"
        if not path.is_file():
            return None
        return check_version(read_json_object(path).get("schema_version"), ANALYSIS_SCHEMA_VERSION, path)

    def needs_analysis(self) -> bool:
        """True when the derived files are missing or of an older analysis version (derive them again)."""
        version = self.analysis_version()
        if version is None or version < ANALYSIS_SCHEMA_VERSION:
            return True
        return not all((self.path / mode / "series.csv").is_file() for mode in self.modes)

    def _flag(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _read(self, path: Path, required: tuple[str, ...]) -> pd.DataFrame:
        """Read one result file whole (a cut last row is refused), upgraded to the current version."""
        frame = _read_csv(path, ())
        upgrades = [RUN_UPGRADES.get(v, {}).get(path.name) for v in range(self.schema_version, RUN_SCHEMA_VERSION)]
        for upgrade in upgrades:
            if upgrade is not None:
                frame = upgrade(frame)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}")
        if not _ends_with_newline(path):
            raise RunDirError(f"{path}: last row is not terminated (file truncated{_repair(path)})")
        for column in _NOT_NULL.get(path.name, ()):
            empty = frame[column].isna().to_numpy().nonzero()[0]
            if empty.size:
                raise RunDirError(f"{path}: row {int(empty[0]) + 2} has no {column} "
                                  f"(file truncated or damaged{_repair(path)})")
        return frame

    def _cross_check(self, folder: Path, messages: pd.DataFrame) -> None:
        """messages.csv must hold every reading sent.csv and summary.csv count."""
        rows, received = len(messages), int(messages["received"].sum())
        sent_path = folder / "sent.csv"
        if sent_path.is_file():
            sent = read_raw_csv(sent_path)  # a torn last sent.csv row was never a reading
            if len(sent) != rows:
                raise RunDirError(f"{folder / 'messages.csv'}: {rows} rows but sent.csv has {len(sent)} "
                                  f"(messages.csv truncated or stale{_repair(folder / 'messages.csv')})")
        summary = self.summary(folder.name)
        if summary is not None and len(summary):
            for column, value in (("sent", rows), ("received", received)):
                if column in summary and pd.notna(summary[column].iloc[0]) and int(summary[column].iloc[0]) != value:
                    raise RunDirError(f"{folder / 'messages.csv'}: {value} {'rows' if column == 'sent' else 'received'}"
                                      f" but summary.csv says {column} = {int(summary[column].iloc[0])} "
                                      f"(messages.csv truncated or stale{_repair(folder / 'messages.csv')})")

    def _check_energy_coverage(self, mode: str, path: Path, energy: pd.DataFrame) -> None:
        """Flag devices whose energy rows stop short of the mode's end, or that have none."""
        duration = self.duration_s
        covered = (energy["t_end_s"] - energy["t_start_s"]).groupby(energy["device"]).sum()
        if duration and self.completed:
            short = covered[covered < ENERGY_COVERAGE * duration]
            for device, seconds in short.items():
                self._flag(f"{path}: device {device} has energy rows for {seconds / 3600:.3g} h of "
                           f"{duration / 3600:.3g} h (rows missing?)")
        absent = sorted(set(self.messages(mode)["device"]) - set(covered.index))
        if absent:
            self._flag(f"{path}: no energy rows for device(s) {', '.join(absent)}")


def read_metadata(root: Path) -> dict[str, Any]:
    """``metadata.json`` of the run directory ``root`` as a dict; raise :class:`RunDirError` if there is none."""
    if not root.is_dir():
        raise RunDirError(f"{root}: not a directory")
    if not (root / "metadata.json").is_file():
        raise RunDirError(f"{root}: no metadata.json (not a run directory)")
    return read_json_object(root / "metadata.json")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; raise :class:`RunDirError` naming it otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: must hold a JSON object")
    return data


def open_run(path: str | Path) -> RunDir:
    """Open a run directory, check its version and find its modes; raise :class:`RunDirError` if it
    is not a readable run (see the module docstring for what is refused and what is flagged)."""
    root = Path(path)
    metadata = read_metadata(root)
    run = RunDir(root, metadata, check_version(metadata.get("schema_version"), RUN_SCHEMA_VERSION,
                                               root / "metadata.json"))
    run.modes = _find_modes(run)
    if not run.modes:
        raise RunDirError(f"{root}: no mode folders (qkd/, dkg/) with messages.csv")
    if run.degraded:
        run._flag("emulation degraded (metadata emulation_health): the emulator fell behind; "
                  "treat these figures as suspect")
    return run


def _find_modes(run: RunDir) -> list[str]:
    """Modes with results, in metadata ``modes`` order (without that list: every folder holding a
    result file, sorted); refuse a mode whose messages.csv is gone while its other files are there."""
    listed = run.metadata.get("modes")
    if isinstance(listed, list) and listed:
        names = [str(m) for m in listed]
    else:
        names = sorted(p.name for p in run.path.iterdir() if any((p / f).is_file() for f in RESULT_FILES))
    mode_status = run.metadata.get("mode_results") if isinstance(run.metadata.get("mode_results"), dict) else {}
    found = []
    for mode in names:
        folder = run.path / mode
        present = [f for f in RESULT_FILES if (folder / f).is_file()]
        if "messages.csv" in present:
            found.append(mode)
            status = mode_status.get(mode, {}).get("status") if isinstance(mode_status.get(mode), dict) else None
            if status not in (None, "completed"):
                run._flag(f"{mode}: mode ended {status!r}: its figures cover only part of the run")
        elif present:
            raise RunDirError(f"{folder / 'messages.csv'}: missing, although {mode}/{present[0]} is there"
                              f"{_repair(folder / 'messages.csv', ' (', ')')}")
        elif run.completed:
            raise RunDirError(f"{folder}: no results for mode {mode}, although the run completed")
        else:
            run._flag(f"{mode}: no results (run {run.status}): left out of every figure")
    return found


def _repair(path: Path, before: str = "; ", after: str = "") -> str:
    """The repair hint for a derived messages.csv whose raw sent.csv is there; '' otherwise."""
    if path.name != "messages.csv" or not (path.parent / "sent.csv").is_file():
        return ""
    return f"{before}{REDERIVE_HINT}{after}"


def _ends_with_newline(path: Path) -> bool:
    """Rows are written whole and newline-terminated: anything else at the end is a cut row."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return True
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV and check that ``required`` columns are present."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame
