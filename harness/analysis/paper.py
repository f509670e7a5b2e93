"""The paper's reported figures, read from ``experiments/paper.toml`` (each with its source).

``qiot compare`` and the table at the end of ``qiot run`` show them in a ``paper`` column beside
the measured differences; nothing in code holds a figure of the paper. The file is checked on
read: an unknown metric, a missing ``source`` or a wrong type is a one-line :class:`PaperError`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis.stats import METRICS
from harness.scenario import EXPERIMENTS_DIR, read_toml

#: The settings file of the paper's figures.
PAPER_FILE = EXPERIMENTS_DIR / "paper.toml"
#: Values of ``bound``: the paper's number exactly, a lower bound ("in excess of"), words only.
BOUNDS = ("exact", "at_least", "none")
#: The comparison the paper reports: QKD (side) relative to DKG (baseline).
PAPER_SIDE, PAPER_BASELINE = "qkd", "dkg"


class PaperError(ValueError):
    """paper.toml is missing, malformed or names an unknown metric; the message names the file."""


@dataclass(frozen=True)
class PaperFigure:
    """One reported QKD-vs-DKG result for a metric of :data:`harness.analysis.stats.METRICS`."""

    metric: str
    text: str
    bound: str
    source: str
    relative_change_pct: float | None = None


@dataclass(frozen=True)
class PaperCapacity:
    """The paper's Fig. 2d point for one scenario (link)."""

    scenario: str
    loss_db: float
    key_rate_bps: float
    devices_per_30_min: float
    buffer_devices: float
    buffer_fill_min: float
    source: str


@dataclass(frozen=True)
class PaperFigures:
    """Everything paper.toml holds."""

    qkd_vs_dkg: dict[str, PaperFigure]
    capacity: dict[str, PaperCapacity]

    def for_difference(self, metric: str, side_mode: str, baseline_mode: str) -> PaperFigure | None:
        """The paper's figure for ``side_mode`` relative to ``baseline_mode``; None unless that is QKD vs DKG."""
        if (side_mode, baseline_mode) != (PAPER_SIDE, PAPER_BASELINE):
            return None
        return self.qkd_vs_dkg.get(metric)


def _number(table: dict, key: str, where: str, required: bool = True) -> float | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PaperError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _text(table: dict, key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PaperError(f"{where}: {key} must be a non-empty string")
    return value


def parse_paper(data: dict[str, Any], path: Path) -> PaperFigures:
    """Check the parsed paper.toml ``data`` and turn it into :class:`PaperFigures`."""
    unknown = sorted(set(data) - {"qkd_vs_dkg", "capacity"})
    if unknown:
        raise PaperError(f"{path}: unknown table(s) {', '.join(unknown)}")
    figures = {}
    for metric, table in data.get("qkd_vs_dkg", {}).items():
        where = f"{path}: [qkd_vs_dkg.{metric}]"
        if metric not in METRICS:
            raise PaperError(f"{where}: unknown metric (known: {', '.join(METRICS)})")
        if not isinstance(table, dict):
            raise PaperError(f"{where} must be a table")
        bound = _text(table, "bound", where)
        if bound not in BOUNDS:
            raise PaperError(f"{where}: bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
        change = _number(table, "relative_change_pct", where, required=bound != "none")
        figures[metric] = PaperFigure(metric, _text(table, "text", where), bound, _text(table, "source", where),
                                      change)
    capacity = {}
    for scenario, table in data.get("capacity", {}).items():
        where = f"{path}: [capacity.{scenario}]"
        if not isinstance(table, dict):
            raise PaperError(f"{where} must be a table")
        capacity[scenario] = PaperCapacity(
            scenario, *(_number(table, key, where) for key in ("loss_db", "key_rate_bps", "devices_per_30_min",
                                                                "buffer_devices", "buffer_fill_min")),
            source=_text(table, "source", where))
    return PaperFigures(figures, capacity)


@functools.lru_cache(maxsize=4)
def load_paper(path: Path = PAPER_FILE) -> PaperFigures:
    """Read and check paper.toml (cached per path)."""
    if not Path(path).is_file():
        raise PaperError(f"{path}: missing (the paper's figures for the `paper` column)")
    return parse_paper(read_toml(Path(path), PaperError), Path(path))
