"""Means with 95% confidence intervals, as the paper reports its averages.

A mean's interval uses Student's t with n-1 degrees of freedom (``scipy.stats.t``); a proportion's
(packet loss) uses the Wilson score interval, which stays inside [0, 1] and is sensible when no or
few messages were lost, where the normal approximation collapses to zero width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats as _sp

#: Confidence level of every interval in the results (the paper: 95%).
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean (or proportion) with its two-sided confidence interval and sample size."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half width of the interval (``nan`` when it is not defined)."""
        return (self.high - self.low) / 2.0


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean of the finite ``values`` with a Student-t interval; n=1 gives an interval of ``nan``."""
    data = np.asarray([v for v in values], dtype=float)
    data = data[np.isfinite(data)]
    n = int(data.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    sem = float(data.std(ddof=1)) / math.sqrt(n)
    t_crit = float(_sp.t.ppf(0.5 + confidence / 2.0, n - 1))
    return Estimate(mean, mean - t_crit * sem, mean + t_crit * sem, n)


def proportion_ci(successes: int, trials: int, confidence: float = CONFIDENCE) -> Estimate:
    """Proportion ``successes / trials`` with the Wilson score interval (``nan`` for 0 trials)."""
    if trials <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    z = float(_sp.norm.ppf(0.5 + confidence / 2.0))
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # The exact bound at 0 (or all) successes is 0 (or 1); avoid round-off leaving 1e-15.
    low = 0.0 if successes == 0 else max(0.0, centre - spread)
    high = 1.0 if successes == trials else min(1.0, centre + spread)
    return Estimate(p, low, high, trials)


def relative_difference(value: float, reference: float) -> float:
    """``(value - reference) / reference``; ``nan`` when the reference is zero or undefined."""
    if not math.isfinite(reference) or reference == 0 or not math.isfinite(value):
        return math.nan
    return (value - reference) / reference
