"""The one statistics module of qiot's results: what one sample is, and how each figure is estimated.

``summary.csv`` (:mod:`harness.results`), ``series.csv`` (:mod:`harness.analysis.series`),
``qiot compare`` and the plots all go through :func:`mode_samples`, :func:`estimate` and
:func:`difference`, so one figure is computed one way everywhere. What one sample is:

- **energy** (RDC, battery lifetime, average current, energy): one *device* over the span asked for
  (the whole mode, or one series interval). Its energy.csv rows are combined exactly: RDC and current
  weighted by duration, lifetime as the duration-weighted *harmonic* mean (lifetime = C / (I_avg +
  I_self), so 1/lifetime is linear in time), energy summed. Rows of one device are not independent
  samples, devices are: n = devices, and the device-hours behind them are reported too.
- **latency**: one received message; Student t interval on the mean, p50/p95 beside it.
- **loss and the accounting of readings**: the pooled proportion of readings, Wilson score interval
  (it stays inside [0, 1] and keeps a width when nothing was lost).
- **differences** between two sides (QKD vs DKG, run vs run): Welch's t for means (energy over
  devices, latency over messages); for proportions Newcombe's hybrid score interval with Fisher's
  exact p-value.

Every :class:`Estimate` and :class:`Difference` names its interval in ``method`` (e.g. "95% CI,
Student t over 10 devices"), and the outputs print that name.

Hand-written here: Newcombe's interval (Newcombe 1998, method 10), five lines on top of scipy's
Wilson bounds, because scipy has no two-proportion interval and statsmodels, which has one, would be
a large dependency for it. Everything else is scipy (``scipy.stats.t``, ``binomtest``,
``ttest_ind``, ``fisher_exact``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats as _sp

from harness.devices.behaviour import QUEUE_OVERFLOW

#: Confidence level of every interval in the results (the paper: 95%).
CONFIDENCE = 0.95
#: Significance level of the difference tests (two-sided).
ALPHA = 1.0 - CONFIDENCE

#: ``sent.csv``/``messages.csv`` error text of a reading the device dropped because its queue was full
#: (defined once, by the device that writes it).
QUEUE_OVERFLOW_PREFIX = QUEUE_OVERFLOW


@dataclass(frozen=True)
class Estimate:
    """A mean (or proportion) with its two-sided confidence interval, sample size and method."""

    mean: float
    low: float
    high: float
    n: int
    method: str = ""

    @property
    def half_width(self) -> float:
        """Half width of the interval (``nan`` when it is not defined)."""
        return (self.high - self.low) / 2.0

    def scaled(self, factor: float) -> "Estimate":
        """The same estimate in other units (e.g. a fraction as percent)."""
        return Estimate(self.mean * factor, self.low * factor, self.high * factor, self.n, self.method)


@dataclass(frozen=True)
class Difference:
    """``side - baseline`` with its 95% interval and a two-sided p-value; ``rel_pct`` against the baseline."""

    diff: float
    low: float
    high: float
    p_value: float
    method: str
    rel_pct: float = math.nan

    @property
    def significant(self) -> bool:
        """True when the p-value is below :data:`ALPHA` (False when it is undefined)."""
        return math.isfinite(self.p_value) and self.p_value < ALPHA

    def scaled(self, factor: float) -> "Difference":
        """The same difference in other units (the p-value and relative difference do not change)."""
        return Difference(self.diff * factor, self.low * factor, self.high * factor, self.p_value,
                          self.method, self.rel_pct)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit if n != 1 else unit.rstrip('s')}"


def mean_ci(values: Iterable[float], unit: str = "samples", confidence: float = CONFIDENCE) -> Estimate:
    """Mean of the finite ``values`` with a Student-t interval (n-1 degrees of freedom).

    ``unit`` names what one value is ("devices", "messages") for the method text. One value gives
    an interval of ``nan``; non-finite values (e.g. an infinite lifetime) are left out.
    """
    data = np.asarray(list(values), dtype=float)
    data = data[np.isfinite(data)]
    n = int(data.size)
    method = f"{confidence:.0%} CI, Student t over {_plural(n, unit)}"
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, method)
    mean = float(data.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, method)
    sem = float(data.std(ddof=1)) / math.sqrt(n)
    t_crit = float(_sp.t.ppf(0.5 + confidence / 2.0, n - 1))
    return Estimate(mean, mean - t_crit * sem, mean + t_crit * sem, n, method)


def proportion_ci(successes: int, trials: int, unit: str = "messages",
                  confidence: float = CONFIDENCE) -> Estimate:
    """Proportion ``successes / trials`` with the Wilson score interval (``nan`` for 0 trials)."""
    method = f"{confidence:.0%} CI, Wilson score over {_plural(int(trials), unit)}"
    if trials <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0, method)
    if not 0 <= successes <= trials:
        raise ValueError(f"proportion: {successes} of {trials} is not a proportion")
    interval = _sp.binomtest(int(successes), int(trials)).proportion_ci(confidence, method="wilson")
    return Estimate(successes / trials, float(interval.low), float(interval.high), int(trials), method)


def relative_difference(value: float, reference: float) -> float:
    """``(value - reference) / reference``; ``nan`` when the reference is zero or undefined."""
    if not math.isfinite(reference) or reference == 0 or not math.isfinite(value):
        return math.nan
    return (value - reference) / reference


def welch_difference(side: Iterable[float], baseline: Iterable[float], unit: str = "samples",
                     confidence: float = CONFIDENCE) -> Difference:
    """Difference of means ``side - baseline``: Welch's t interval and two-sided p-value.

    Needs two finite values on each side; otherwise (or with no spread at all) the interval and
    p-value are ``nan`` and ``method`` says why.
    """
    a = np.asarray(list(side), dtype=float)
    b = np.asarray(list(baseline), dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    method = f"Welch t over {a.size} vs {_plural(b.size, unit)}"
    diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    rel = 100.0 * relative_difference(float(a.mean()), float(b.mean())) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return Difference(diff, math.nan, math.nan, math.nan, method + " (too few to test)", rel)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Difference(diff, math.nan, math.nan, math.nan, method + " (no spread: test undefined)", rel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical data: scipy warns, result stands
        result = _sp.ttest_ind(a, b, equal_var=False)
        interval = result.confidence_interval(confidence)
    return Difference(diff, float(interval.low), float(interval.high), float(result.pvalue), method, rel)


def proportion_difference(side_successes: int, side_trials: int, base_successes: int, base_trials: int,
                          unit: str = "messages", confidence: float = CONFIDENCE) -> Difference:
    """Difference of proportions ``side - baseline``: Newcombe's hybrid score interval (from the two
    Wilson intervals) and the two-sided p-value of Fisher's exact test."""
    method = (f"Newcombe score interval, Fisher exact p, over {side_trials} vs "
              f"{_plural(int(base_trials), unit)}")
    if side_trials <= 0 or base_trials <= 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, method + " (no data)")
    p1 = proportion_ci(side_successes, side_trials, unit, confidence)
    p2 = proportion_ci(base_successes, base_trials, unit, confidence)
    diff = p1.mean - p2.mean
    low = diff - math.hypot(p1.mean - p1.low, p2.high - p2.mean)
    high = diff + math.hypot(p1.high - p1.mean, p2.mean - p2.low)
    table = [[side_successes, side_trials - side_successes], [base_successes, base_trials - base_successes]]
    p_value = float(_sp.fisher_exact(table).pvalue)
    return Difference(diff, low, high, p_value, method, 100.0 * relative_difference(p1.mean, p2.mean))


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation) of the finite values; ``nan`` if there are none."""
    data = np.asarray(list(values), dtype=float)
    data = data[np.isfinite(data)]
    return float(np.percentile(data, q)) if data.size else math.nan


#: Columns of the per-device energy table (:func:`per_device_energy`).
DEVICE_ENERGY_COLUMNS = ("device", "rdc", "battery_life_days", "avg_current_ma", "energy_j", "hours")


def per_device_energy(rows: pd.DataFrame | None) -> pd.DataFrame:
    """Combine energy.csv rows into one row per device (see the module docstring for how).

    ``hours`` is the emulated time the device's rows cover (its device-hours). A device whose rows
    all have zero length gets its rows weighted equally.
    """
    if rows is None or rows.empty:
        return pd.DataFrame(columns=list(DEVICE_ENERGY_COLUMNS))
    duration = (rows["t_end_s"] - rows["t_start_s"]).clip(lower=0).astype(float)
    device = rows["device"]
    total = duration.groupby(device).transform("sum")
    weight = duration.where(total > 0, 1.0)
    with np.errstate(divide="ignore"):
        inv_life = 1.0 / rows["battery_life_days"].astype(float)  # 1/inf = 0: a lifetime without drain
    parts = pd.DataFrame({"device": device, "w": weight, "rdc": rows["rdc"] * weight,
                          "current": rows["avg_current_ma"] * weight, "inv_life": inv_life * weight,
                          "energy_j": rows["energy_j"], "seconds": duration})
    sums = parts.groupby("device", sort=True).sum()
    with np.errstate(divide="ignore"):
        life = sums["w"] / sums["inv_life"]
    return pd.DataFrame({"device": sums.index.astype(str), "rdc": (sums["rdc"] / sums["w"]).to_numpy(),
                         "battery_life_days": life.to_numpy(),
                         "avg_current_ma": (sums["current"] / sums["w"]).to_numpy(),
                         "energy_j": sums["energy_j"].to_numpy(), "hours": (sums["seconds"] / 3600.0).to_numpy()},
                        columns=list(DEVICE_ENERGY_COLUMNS))


@dataclass(frozen=True)
class Metric:
    """One reported figure: its unit, display scale, and what one sample of it is.

    ``kind`` is ``device`` (a column of :func:`per_device_energy`), ``message`` (a value per
    message in :attr:`Samples.values`) or ``proportion`` (``column`` counts out of ``trials``).
    """

    name: str
    unit: str
    kind: str
    column: str
    sample: str
    scale: float = 1.0
    trials: str = "readings"


#: Every figure of summary.csv, series.csv and ``qiot compare``, in table order.
METRICS = {m.name: m for m in (
    Metric("rdc", "%", "device", "rdc", "one device over the mode (its energy.csv rows, duration-weighted)",
           scale=100.0),
    Metric("battery_life_days", "days", "device", "battery_life_days",
           "one device over the mode (lifetime at its average current: duration-weighted harmonic mean)"),
    Metric("avg_current_ma", "mA", "device", "avg_current_ma", "one device over the mode (duration-weighted)"),
    Metric("energy_j", "J", "device", "energy_j", "one device over the mode (energy summed)"),
    Metric("latency_ms", "ms", "message", "latency_ms", "one received message (messages.csv)"),
    Metric("loss_pct", "%", "proportion", "lost", "readings not received, of all readings (messages.csv)",
           scale=100.0),
    Metric("lost_network_pct", "%", "proportion", "lost_network",
           "readings published but never received, of all readings", scale=100.0),
    Metric("not_published_pct", "%", "proportion", "not_published",
           "readings the device never published (e.g. no key), of all readings", scale=100.0),
    Metric("dropped_overflow_pct", "%", "proportion", "dropped_queue_overflow",
           "readings dropped by a full device queue, of all readings", scale=100.0),
    Metric("delivered_late_pct", "%", "proportion", "delivered_late",
           "readings received after waiting in the device queue (queued_s > 0), of all readings", scale=100.0),
    Metric("wire_latency_ms", "ms", "message", "wire_latency_ms", "one message seen in the broker-side capture"),
    Metric("wire_loss_pct", "%", "proportion", "wire_lost", "messages not in the broker-side capture",
           scale=100.0, trials="wire_readings"),
)}

#: Units of the samples behind each kind of metric, for the method text.
_SAMPLE_UNIT = {"device": "devices", "message": "messages", "proportion": "readings"}


@dataclass
class Samples:
    """The samples of one side (a mode, or one interval of it), one set per kind of metric."""

    devices: pd.DataFrame
    values: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def device_hours(self) -> float:
        """Emulated device-hours behind the energy figures."""
        return float(self.devices["hours"].sum()) if len(self.devices) else 0.0


def reading_counts(messages: pd.DataFrame) -> dict[str, int]:
    """Accounting of readings (messages.csv rows): received, and where the others went.

    ``lost_network``: published (a send time) but never received; ``not_published``: no publish at
    all and not a queue overflow (e.g. no key that wake); ``dropped_queue_overflow``: error starting
    :data:`QUEUE_OVERFLOW_PREFIX`; ``delivered_late``: received after ``queued_s`` > 0 in the device
    queue. Missing ``queued_s``/``error`` columns (older runs) count as 0 / none.
    """
    n = len(messages)
    received = messages["received"].to_numpy(dtype=int) == 1 if n else np.zeros(0, dtype=bool)
    error = messages["error"].astype("string") if "error" in messages else pd.Series([""] * n, dtype="string")
    overflow = error.str.startswith(QUEUE_OVERFLOW_PREFIX).fillna(False).to_numpy(dtype=bool) & ~received
    published = messages["t_sent"].notna().to_numpy() if n else np.zeros(0, dtype=bool)
    queued = messages["queued_s"].fillna(0).to_numpy(dtype=float) if "queued_s" in messages else np.zeros(n)
    return {"readings": n, "received": int(received.sum()), "lost": int(n - received.sum()),
            "lost_network": int((~received & published & ~overflow).sum()),
            "not_published": int((~received & ~published & ~overflow).sum()),
            "dropped_queue_overflow": int(overflow.sum()),
            "delivered_late": int((received & (queued > 0)).sum())}


def mode_samples(messages: pd.DataFrame, energy: pd.DataFrame | None = None,
                 wire: pd.DataFrame | None = None) -> Samples:
    """The samples behind every :data:`METRICS` figure of one side.

    ``messages`` as in messages.csv, ``energy`` as energy.csv (None: no energy figures), ``wire`` as
    wire.csv (None, or no broker capture in it: no wire figures).
    """
    samples = Samples(per_device_energy(energy))
    received = messages["received"] == 1
    samples.values["latency_ms"] = messages.loc[received, "latency_ms"].to_numpy(dtype=float)
    samples.counts.update(reading_counts(messages))
    if wire is not None and "broker_seen" in wire and wire["broker_seen"].notna().any():
        seen = wire["broker_seen"] == 1
        samples.values["wire_latency_ms"] = wire.loc[seen, "wire_latency_ms"].to_numpy(dtype=float)
        samples.counts.update(wire_readings=len(wire), wire_lost=int((~seen).sum()))
    return samples


def _available(samples: Samples, metric: Metric) -> bool:
    if metric.kind == "device":
        return len(samples.devices) > 0
    if metric.kind == "message":
        return metric.column in samples.values
    return metric.trials in samples.counts


def estimate(samples: Samples, name: str, display_units: bool = True) -> Estimate | None:
    """The estimate of metric ``name``, or None when the side has no such data.

    ``display_units``: scaled to the metric's unit (RDC and proportions in percent); False keeps
    the files' units (fractions).
    """
    metric = METRICS[name]
    if not _available(samples, metric):
        return None
    unit = _SAMPLE_UNIT[metric.kind]
    if metric.kind == "device":
        result = mean_ci(samples.devices[metric.column], unit)
    elif metric.kind == "message":
        result = mean_ci(samples.values[metric.column], unit)
    else:
        result = proportion_ci(samples.counts[metric.column], samples.counts[metric.trials], unit)
    return result.scaled(metric.scale) if display_units else result


def estimates(samples: Samples) -> dict[str, Estimate]:
    """Every :data:`METRICS` figure the side has data for, in table order."""
    found = {name: estimate(samples, name) for name in METRICS}
    return {name: value for name, value in found.items() if value is not None}


def difference(side: Samples, baseline: Samples, name: str) -> Difference | None:
    """``side - baseline`` for metric ``name`` (display unit), or None when either side lacks the data."""
    metric = METRICS[name]
    if not (_available(side, metric) and _available(baseline, metric)):
        return None
    unit = _SAMPLE_UNIT[metric.kind]
    if metric.kind == "device":
        result = welch_difference(side.devices[metric.column], baseline.devices[metric.column], unit)
    elif metric.kind == "message":
        result = welch_difference(side.values[metric.column], baseline.values[metric.column], unit)
    else:
        result = proportion_difference(side.counts[metric.column], side.counts[metric.trials],
                                       baseline.counts[metric.column], baseline.counts[metric.trials], unit)
    return result.scaled(metric.scale)
