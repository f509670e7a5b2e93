"""Means with 95% confidence intervals (Student t), and the energy part of a mode summary.

The t quantile is computed exactly from the closed-form Student t distribution for integer degrees of
freedom (Abramowitz & Stegun 26.7.3-4), so no scipy dependency is needed.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence

CONFIDENCE = 0.95


def _t_two_sided_mass(t: float, dof: int) -> float:
    """P(|T| < t) for Student t with ``dof`` degrees of freedom (A&S 26.7.3 / 26.7.4)."""
    theta = math.atan(t / math.sqrt(dof))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2 == 1:
        term, series = math.cos(theta), 0.0
        for k in range(1, (dof - 1) // 2 + 1):
            series += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2.0 / math.pi * (theta + s * series)
    term, series = 1.0, 0.0
    for k in range(1, dof // 2 + 1):
        series += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * series


def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student t critical value: P(|T| < t) = confidence."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof > 2000:  # series gets long; the normal quantile with one correction term is exact to 1e-7
        z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
        return z + (z ** 3 + z) / (4 * dof)
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, dof) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, dof) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (Student t); half-width NaN for n < 2."""
    data: Sequence[float] = [float(v) for v in values]
    if not data:
        raise ValueError("mean_ci95 needs at least one value")
    mean = statistics.fmean(data)
    if len(data) < 2:
        return mean, math.nan
    half = t_quantile(CONFIDENCE, len(data) - 1) * statistics.stdev(data) / math.sqrt(len(data))
    return mean, half


def summarize_energy(rows: Iterable, interval_s: float | None = None) -> dict[str, float]:
    """Energy columns of a mode's summary.csv from energy.csv rows (IntervalRow objects).

    Samples are the (device, interval) rows. If ``interval_s`` is given and some rows span a full
    interval, shorter (partial, first or last) rows are left out so they do not skew the spread.
    Keys: ``<metric>_mean`` and ``<metric>_ci95`` (half-width) for rdc, battery_life_days, energy_j,
    avg_current_ma, plus ``energy_rows`` (samples used).
    """
    rows = list(rows)
    if interval_s is not None:
        full = [r for r in rows if r.duration_s >= interval_s * (1 - 1e-9)]
        rows = full or rows
    if not rows:
        raise ValueError("summarize_energy needs at least one row")
    summary: dict[str, float] = {"energy_rows": len(rows)}
    for metric in ("rdc", "battery_life_days", "energy_j", "avg_current_ma"):
        mean, half = mean_ci95(getattr(r, metric) for r in rows)
        summary[f"{metric}_mean"] = mean
        summary[f"{metric}_ci95"] = half
    return summary
