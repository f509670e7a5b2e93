"""The energy part of a mode summary, from energy rows held in memory (e.g. a pure simulation).

One implementation serves the run and the simulation: rows are turned into the ``energy.csv``
table and summarised by :func:`harness.results.summarize_energy` (means with Student-t 95%
confidence intervals from :mod:`harness.analysis.stats`).
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd


def summarize_energy(rows: Iterable, interval_s: float | None = None) -> dict[str, float]:
    """Mean and 95% CI of rdc, battery_life_days, energy_j and avg_current_ma over IntervalRow objects.

    With ``interval_s``, rows shorter than a full interval (a device's partial first or last one)
    are left out when full ones exist, so they do not skew the spread.
    """
    from harness.results import summarize_energy as summarize_table

    table = pd.DataFrame([row.as_csv() for row in rows])
    if table.empty:
        raise ValueError("summarize_energy needs at least one row")
    return summarize_table(table, interval_s)
