"""How many devices one QKD link can key, versus optical loss (the paper's Fig. 2d).

From the calibrated rate model ``harness.qkd.rate.secret_key_rate(loss_db, calibration)``: keys per
refresh period (paper: 30 min) = R * T / key_bits, and the time to fill the key buffer =
buffer_bits / R (the paper's "minimum time to update the keys"; 1 Mbit of 256-bit keys ~ 3900 devices).
The paper's two measured points are drawn with the curve, and their residuals against the model
are reported, so the calibration is shown rather than hidden (reference.md §2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PaperPoint:
    """A measured average secret-key rate at a known channel loss."""

    name: str
    loss_db: float
    rate_bps: float
    source: str


#: The paper's measurements (Mavromatis et al., ECOC 2018, text on Fig. 2d; reference.md §1).
PAPER_POINTS = (
    PaperPoint("HPN lab link", 4.0, 1880.0, "paper: 8.4 km SMF, 4 dB, average 1880 bit/s"),
    PaperPoint("BCN city link", 7.0, 1220.0, "paper: 8.5 km dark fibre + switch, 7 dB, average 1220 bit/s"),
)

#: Default loss grid of the capacity curve, dB (covers the paper's points with room either side).
DEFAULT_LOSS_GRID = tuple(float(x) for x in np.arange(0.0, 15.0 + 1e-9, 0.5))
#: Keys one device consumes per refresh (assumption: one AES key each, as in the paper's count).
KEYS_PER_DEVICE = 1

#: Columns of the capacity table.
CAPACITY_COLUMNS = ("loss_db", "key_rate_bps", "keys_per_refresh", "devices_per_refresh",
                    "buffer_keys", "buffer_fill_s", "refresh_period_s")
#: Columns of the paper-point check.
POINT_COLUMNS = ("point", "loss_db", "paper_rate_bps", "model_rate_bps", "residual_pct",
                 "paper_keys_per_refresh", "paper_buffer_fill_s", "model_keys_per_refresh",
                 "model_buffer_fill_s")


def _default_rate() -> Callable[[float, Mapping], float]:
    from harness.qkd.rate import secret_key_rate  # one rate model for the run and the analysis
    return secret_key_rate


def capacity_row(rate_bps: float, key_bits: int, buffer_bits: int, refresh_period_s: float) -> dict:
    """Capacity figures for one key rate (see module docstring)."""
    keys = rate_bps * refresh_period_s / key_bits
    return {"key_rate_bps": rate_bps, "keys_per_refresh": keys,
            "devices_per_refresh": math.floor(keys / KEYS_PER_DEVICE),
            "buffer_keys": buffer_bits // key_bits,
            "buffer_fill_s": buffer_bits / rate_bps if rate_bps > 0 else math.inf,
            "refresh_period_s": refresh_period_s}


def capacity_table(qkd: Mapping, loss_db: Iterable[float] = DEFAULT_LOSS_GRID,
                   rate: Callable[[float, Mapping], float] | None = None) -> pd.DataFrame:
    """Capacity versus loss for a scenario's ``[qkd]`` section (key_bits, buffer_bits,
    refresh_period_s, calibration); ``rate`` defaults to ``harness.qkd.rate.secret_key_rate``."""
    rate = rate or _default_rate()
    rows = []
    for loss in sorted(set(float(x) for x in loss_db)):
        if loss < 0:
            raise ValueError(f"loss_db must be >= 0, got {loss}")
        row = {"loss_db": loss}
        row.update(capacity_row(float(rate(loss, qkd["calibration"])), int(qkd["key_bits"]),
                                int(qkd["buffer_bits"]), float(qkd["refresh_period_s"])))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CAPACITY_COLUMNS))


def paper_points_table(qkd: Mapping, rate: Callable[[float, Mapping], float] | None = None,
                       points: Iterable[PaperPoint] = PAPER_POINTS) -> pd.DataFrame:
    """The paper's points: measured vs model rate (residual) and the capacity each implies."""
    rate = rate or _default_rate()
    key_bits, buffer_bits = int(qkd["key_bits"]), int(qkd["buffer_bits"])
    period = float(qkd["refresh_period_s"])
    rows = []
    for point in points:
        model = float(rate(point.loss_db, qkd["calibration"]))
        paper = capacity_row(point.rate_bps, key_bits, buffer_bits, period)
        fitted = capacity_row(model, key_bits, buffer_bits, period)
        rows.append({"point": point.name, "loss_db": point.loss_db, "paper_rate_bps": point.rate_bps,
                     "model_rate_bps": model, "residual_pct": 100 * (model - point.rate_bps) / point.rate_bps,
                     "paper_keys_per_refresh": paper["keys_per_refresh"],
                     "paper_buffer_fill_s": paper["buffer_fill_s"],
                     "model_keys_per_refresh": fitted["keys_per_refresh"],
                     "model_buffer_fill_s": fitted["buffer_fill_s"]})
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def render_capacity(table: pd.DataFrame, points: pd.DataFrame, scenario_name: str) -> str:
    """Terminal text: the curve, then the paper points with residuals."""
    lines = [f"QKD capacity, scenario {scenario_name} (refresh period "
             f"{table['refresh_period_s'].iloc[0]:.0f} s, buffer {table['buffer_keys'].iloc[0]} keys)",
             f"{'loss dB':>8} {'rate bit/s':>11} {'keys/refresh':>13} {'devices':>8} {'fill s':>8}"]
    for row in table.itertuples(index=False):
        lines.append(f"{row.loss_db:8.2f} {row.key_rate_bps:11.1f} {math.floor(row.keys_per_refresh):13d} "
                     f"{row.devices_per_refresh:8d} {row.buffer_fill_s:8.0f}")
    lines.append("")
    lines.append("paper points (measured rate -> keys/refresh, fill s; model residual):")
    for row in points.itertuples(index=False):
        lines.append(f"  {row.point}: {row.loss_db:g} dB, {row.paper_rate_bps:.0f} bit/s -> "
                     f"{row.paper_keys_per_refresh:,.0f} keys, {row.paper_buffer_fill_s:.0f} s; "
                     f"model {row.model_rate_bps:.1f} bit/s ({row.residual_pct:+.3f}%)")
    return "\n".join(lines)


#: Most loss values one request may ask for (a grid of 0:60:0.01 has 6,001): a guard against a
#: typo such as ``0:1e9:0.001`` filling memory, not a figure of the model.
MAX_LOSS_VALUES = 10_000


def max_loss_db() -> float:
    """The highest fibre loss a scenario may set (``[fibre] loss_db``; the one definition is there)."""
    import dataclasses

    from harness.links import FibreSettings
    return float(next(f for f in dataclasses.fields(FibreSettings) if f.name == "loss_db").metadata["maximum"])


def parse_loss_values(values: Iterable[str]) -> list[float]:
    """``["4", "7", "0:15:0.5"]`` -> losses in dB; ``start:stop:step`` includes ``stop``.

    Each value must be a finite number of dB within the scenarios' range (0 to :func:`max_loss_db`),
    at least one value must be given, and at most :data:`MAX_LOSS_VALUES`; else ValueError.
    """
    top = max_loss_db()
    losses: list[float] = []
    for text in values:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                numbers = [float(x) for x in part.split(":")]
            except ValueError:
                raise ValueError(f"loss value {part!r}: give a number or start:stop:step (step > 0)") from None
            if len(numbers) not in (1, 3) or not all(math.isfinite(x) for x in numbers):
                raise ValueError(f"loss value {part!r}: give a finite number or start:stop:step (step > 0)")
            if len(numbers) == 3:
                start, stop, step = numbers
                if step <= 0 or stop < start:
                    raise ValueError(f"loss value {part!r}: give start:stop:step with step > 0 and stop >= start")
                if (stop - start) / step + 1 > MAX_LOSS_VALUES - len(losses):
                    raise ValueError(f"loss grid {part!r} has more than {MAX_LOSS_VALUES:,} values")
                losses += [float(x) for x in np.arange(start, stop + step / 2, step)]
            else:
                losses.append(numbers[0])
            if len(losses) > MAX_LOSS_VALUES:
                raise ValueError(f"more than {MAX_LOSS_VALUES:,} loss values")
    if not losses:
        raise ValueError("no loss value given (e.g. --loss-db 4,7 or --loss-db 0:15:0.5)")
    if any(not 0 <= x <= top for x in losses):
        raise ValueError(f"loss values must lie within 0..{top:g} dB (the scenarios' range)")
    return losses
