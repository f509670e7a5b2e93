"""Per-interval time series of one mode (``series.csv``; what Fig. 2a-c plot).

Messages are binned by their emulated send time ``t_emul``; energy rows by ``t_start_s``. Every
figure of one interval is computed by :mod:`harness.analysis.stats` exactly as for the whole mode
(``summary.csv``, ``qiot compare``): energy over devices (each device's rows in the interval
combined exactly), latency over received messages, loss as a pooled proportion with its Wilson
interval. The ``faults`` column names the faults (metadata ``faults``) that overlap each interval.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from harness.analysis.stats import estimate, mode_samples, percentile

#: Last-resort series interval: one emulated hour (the paper plots 24 h); see analyze.series_interval.
DEFAULT_INTERVAL_S = 3600.0

#: Columns of ``<mode>/series.csv`` (documented in docs/results.md).
SERIES_COLUMNS = (
    "interval", "t_start_s", "t_end_s",
    "sent", "received", "lost", "loss_pct", "loss_ci95_low_pct", "loss_ci95_high_pct",
    "latency_mean_ms", "latency_ci95_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "wire_received", "wire_loss_pct", "wire_latency_mean_ms", "wire_latency_p95_ms",
    "devices", "rdc_mean", "rdc_ci95", "battery_life_days_mean", "battery_life_days_ci95",
    "avg_current_ma_mean", "energy_j_total", "keys_in_buffer", "keys_delivered",
    "lost_network", "not_published", "dropped_queue_overflow", "delivered_late", "faults",
)


def build_series(messages: pd.DataFrame, energy: pd.DataFrame | None, keys: pd.DataFrame | None = None,
                 wire: pd.DataFrame | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 duration_s: float | None = None, faults: Iterable[dict[str, Any]] = ()) -> pd.DataFrame:
    """Aggregate one mode into :data:`SERIES_COLUMNS`, one row per interval from t=0.

    ``duration_s`` (the emulated run length) fixes the number of intervals; without it the last
    message or energy row does. Intervals without data get counts of 0 and NaN statistics.
    ``faults``: dicts with ``kind``, ``at_s``, ``duration_s`` (and optionally ``target``).
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    ends = [float(messages["t_emul"].max()) if len(messages) else 0.0]
    if energy is not None and len(energy):
        ends.append(float(energy["t_end_s"].max()))
    span = duration_s if duration_s else max(ends)
    count = max(1, math.ceil(span / interval_s - 1e-9))
    msg_bin = (messages["t_emul"] // interval_s).astype(int).clip(0, count - 1).to_numpy()
    energy_bin = None
    if energy is not None and len(energy):
        energy_bin = (energy["t_start_s"] // interval_s).astype(int).clip(0, count - 1).to_numpy()
    faults = list(faults)
    rows = []
    for index in range(count):
        start, end = index * interval_s, (index + 1) * interval_s
        in_bin = msg_bin == index
        samples = mode_samples(messages[in_bin],
                               energy[energy_bin == index] if energy_bin is not None else None,
                               wire[in_bin] if wire is not None else None)
        row = {"interval": index, "t_start_s": start, "t_end_s": end}
        row.update(_message_columns(samples))
        row.update(_wire_columns(samples))
        row.update(_energy_columns(samples))
        row.update(_key_columns(keys, start, end))
        row["faults"] = overlapping_faults(faults, start, end)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SERIES_COLUMNS))


def overlapping_faults(faults: Iterable[dict[str, Any]], start: float, end: float) -> str:
    """``;``-joined ``kind`` (``kind@target`` when targeted) of the faults active in [start, end)."""
    names = []
    for fault in faults:
        if fault["at_s"] < end and fault["at_s"] + fault["duration_s"] > start:
            target = fault.get("target")
            names.append(f"{fault['kind']}@{target}" if target not in (None, "") else str(fault["kind"]))
    return ";".join(dict.fromkeys(names))


def _message_columns(samples) -> dict:
    counts, latency_values = samples.counts, samples.values["latency_ms"]
    loss, latency = estimate(samples, "loss_pct"), estimate(samples, "latency_ms")
    return {"sent": counts["readings"], "received": counts["received"], "lost": counts["lost"],
            "loss_pct": loss.mean, "loss_ci95_low_pct": loss.low, "loss_ci95_high_pct": loss.high,
            "latency_mean_ms": latency.mean, "latency_ci95_ms": latency.half_width,
            "latency_p50_ms": percentile(latency_values, 50), "latency_p95_ms": percentile(latency_values, 95),
            "latency_p99_ms": percentile(latency_values, 99),
            "lost_network": counts["lost_network"], "not_published": counts["not_published"],
            "dropped_queue_overflow": counts["dropped_queue_overflow"], "delivered_late": counts["delivered_late"]}


def _wire_columns(samples) -> dict:
    loss, latency = estimate(samples, "wire_loss_pct"), estimate(samples, "wire_latency_ms")
    if loss is None:
        return {"wire_received": math.nan, "wire_loss_pct": math.nan,
                "wire_latency_mean_ms": math.nan, "wire_latency_p95_ms": math.nan}
    return {"wire_received": samples.counts["wire_readings"] - samples.counts["wire_lost"],
            "wire_loss_pct": loss.mean, "wire_latency_mean_ms": latency.mean,
            "wire_latency_p95_ms": percentile(samples.values["wire_latency_ms"], 95)}


def _energy_columns(samples) -> dict:
    devices = samples.devices
    if devices.empty:
        return {"devices": 0, "rdc_mean": math.nan, "rdc_ci95": math.nan,
                "battery_life_days_mean": math.nan, "battery_life_days_ci95": math.nan,
                "avg_current_ma_mean": math.nan, "energy_j_total": math.nan}
    rdc = estimate(samples, "rdc", display_units=False)  # series.csv keeps energy.csv's fraction
    life = estimate(samples, "battery_life_days")
    return {"devices": len(devices), "rdc_mean": rdc.mean, "rdc_ci95": rdc.half_width,
            "battery_life_days_mean": life.mean, "battery_life_days_ci95": life.half_width,
            "avg_current_ma_mean": estimate(samples, "avg_current_ma").mean,
            "energy_j_total": float(devices["energy_j"].sum())}


def _key_columns(keys: pd.DataFrame | None, start: float, end: float) -> dict:
    """Key buffer level at the interval's last record and keys delivered during the interval.

    ``keys.csv`` holds a cumulative ``keys_delivered``; the interval's figure is its increase
    since the last record before the interval.
    """
    if keys is None or keys.empty:
        return {"keys_in_buffer": math.nan, "keys_delivered": math.nan}
    keys = keys.sort_values("t_emul")
    upto_end = keys[keys["t_emul"] < end]
    before = keys[keys["t_emul"] < start]
    if upto_end.empty:
        return {"keys_in_buffer": math.nan, "keys_delivered": 0}
    delivered_before = float(before["keys_delivered"].iloc[-1]) if len(before) else 0.0
    return {"keys_in_buffer": float(upto_end["keys_in_buffer"].iloc[-1]),
            "keys_delivered": float(upto_end["keys_delivered"].iloc[-1]) - delivered_before}


def write_table(frame: pd.DataFrame, path_csv) -> list[str]:
    """Write ``frame`` as CSV; return the file names written.

    CSV only, as every other table of a run directory: one copy of each result (a Parquet twin
    would be a second copy to keep in step, read by nothing in qiot, and would need pyarrow);
    ``pd.read_csv(path).to_parquet(...)`` makes one when wanted."""
    frame.to_csv(path_csv, index=False)
    return [path_csv.name]
