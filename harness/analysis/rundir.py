"""Reading a run directory (the layout ``qiot run`` writes; see docs/results.md).

One :class:`RunDir` gives checked access to ``metadata.json`` and to each mode's CSV files, so the
rest of the analysis never deals with missing files or columns itself: a problem is reported once,
as a :class:`RunDirError` naming the file and the missing piece.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

#: Version of the files this package *writes* (series.csv, wire.csv, capture.json, analysis.json).
#: Bump it whenever a column is renamed, removed or changes meaning; docs/results.md lists the history.
ANALYSIS_SCHEMA_VERSION = 1

#: Columns every mode's input files must have (the shared run-directory contract, helpers-brief.md).
MESSAGES_COLUMNS = ("device", "seq", "t_emul", "t_sent", "t_received", "latency_ms", "received")
ENERGY_COLUMNS = ("device", "interval", "t_start_s", "t_end_s", "rdc", "energy_j", "avg_current_ma",
                  "battery_life_days")
#: Optional per-mode key-buffer log (a wish for the run writer; see docs/results.md).
KEYS_COLUMNS = ("t_emul", "keys_in_buffer", "keys_delivered")


class RunDirError(ValueError):
    """A run directory or one of its files is missing or malformed; the message names the file."""


@dataclass
class RunDir:
    """A run directory on disk, with its parsed ``metadata.json``."""

    path: Path
    metadata: dict[str, Any]

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
    def modes(self) -> list[str]:
        """Modes with a ``messages.csv``, in metadata ``modes`` order (a mode cut short before its
        files were written is left out); without a ``modes`` list, every such folder, sorted."""
        listed = self.metadata.get("modes")
        if isinstance(listed, list) and listed:
            return [str(m) for m in listed if (self.path / str(m) / "messages.csv").is_file()]
        return sorted(p.name for p in self.path.iterdir() if (p / "messages.csv").is_file())

    def mode_dir(self, mode: str) -> Path:
        """Folder of one mode; raise if it does not exist."""
        folder = self.path / mode
        if not folder.is_dir():
            raise RunDirError(f"{self.path}: no folder for mode {mode!r}")
        return folder

    def messages(self, mode: str) -> pd.DataFrame:
        """``<mode>/messages.csv`` with its contract columns checked (one row per message sent)."""
        frame = _read_csv(self.mode_dir(mode) / "messages.csv", MESSAGES_COLUMNS)
        frame["device"] = frame["device"].astype(str)
        frame["received"] = frame["received"].fillna(0).astype(int)
        return frame

    def energy(self, mode: str) -> pd.DataFrame:
        """``<mode>/energy.csv``: one row per device and accounting interval."""
        frame = _read_csv(self.mode_dir(mode) / "energy.csv", ENERGY_COLUMNS)
        frame["device"] = frame["device"].astype(str)
        return frame

    def summary(self, mode: str) -> pd.DataFrame | None:
        """``<mode>/summary.csv`` (one row) or None when absent; informational only."""
        path = self.mode_dir(mode) / "summary.csv"
        return _read_csv(path, ("mode",)) if path.is_file() else None

    def keys(self, mode: str) -> pd.DataFrame | None:
        """``<mode>/keys.csv`` (key-buffer log) or None when the run did not write one."""
        path = self.mode_dir(mode) / "keys.csv"
        return _read_csv(path, KEYS_COLUMNS) if path.is_file() else None

    def pcap(self, mode: str, name: str) -> Path | None:
        """Path of ``<mode>/pcap/<name>`` if that capture exists, else None."""
        path = self.mode_dir(mode) / "pcap" / name
        return path if path.is_file() else None


def open_run(path: str | Path) -> RunDir:
    """Open a run directory and parse its metadata; raise :class:`RunDirError` if it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise RunDirError(f"{root}: not a directory")
    meta_path = root / "metadata.json"
    if not meta_path.is_file():
        raise RunDirError(f"{root}: no metadata.json (not a run directory)")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{meta_path}: cannot parse: {exc}") from None
    if not isinstance(metadata, dict):
        raise RunDirError(f"{meta_path}: must hold a JSON object")
    run = RunDir(root, metadata)
    if not run.modes:
        raise RunDirError(f"{root}: no mode folders (qkd/, dkg/) with messages.csv")
    return run


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV and check that ``required`` columns are present."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: cannot parse: {exc}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame
