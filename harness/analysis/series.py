"""Per-interval time series of one mode (default: one row per emulated hour, as Fig. 2a-c plot).

Messages are binned by their emulated send time ``t_emul``; energy rows by ``t_start_s``. Across
devices, RDC and battery life are averaged with 95% Student-t intervals. Within one device and
interval the energy rows are combined exactly: RDC weighted by duration, battery life as the
duration-weighted *harmonic* mean (lifetime = C / (I_avg + I_self), so 1/lifetime averages linearly
over time, the self-discharge term included).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd

from harness.analysis.stats import mean_ci, proportion_ci

#: Default series interval: one emulated hour (the paper plots 24 h).
DEFAULT_INTERVAL_S = 3600.0

#: Columns of ``<mode>/series.csv`` (documented in docs/results.md).
SERIES_COLUMNS = (
    "interval", "t_start_s", "t_end_s",
    "sent", "received", "lost", "loss_pct", "loss_ci95_low_pct", "loss_ci95_high_pct",
    "latency_mean_ms", "latency_ci95_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "wire_received", "wire_loss_pct", "wire_latency_mean_ms", "wire_latency_p95_ms",
    "devices", "rdc_mean", "rdc_ci95", "battery_life_days_mean", "battery_life_days_ci95",
    "avg_current_ma_mean", "energy_j_total", "keys_in_buffer", "keys_delivered",
)


def _per_device_energy(rows: pd.DataFrame) -> pd.DataFrame:
    """Combine one interval's energy rows per device (duration-weighted; harmonic for lifetime)."""
    rows = rows.assign(duration=(rows["t_end_s"] - rows["t_start_s"]).clip(lower=0))
    out = []
    for device, group in rows.groupby("device"):
        weight = group["duration"].to_numpy(dtype=float)
        if weight.sum() <= 0:
            weight = np.ones(len(group))
        life = group["battery_life_days"].to_numpy(dtype=float)
        with np.errstate(divide="ignore"):
            inv_life = np.average(1.0 / life, weights=weight)
        out.append({"device": device,
                    "rdc": float(np.average(group["rdc"], weights=weight)),
                    "battery_life_days": math.inf if inv_life == 0 else float(1.0 / inv_life),
                    "avg_current_ma": float(np.average(group["avg_current_ma"], weights=weight)),
                    "energy_j": float(group["energy_j"].sum())})
    return pd.DataFrame(out, columns=["device", "rdc", "battery_life_days", "avg_current_ma", "energy_j"])


def _percentile(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else math.nan


def build_series(messages: pd.DataFrame, energy: pd.DataFrame | None, keys: pd.DataFrame | None = None,
                 wire: pd.DataFrame | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 duration_s: float | None = None) -> pd.DataFrame:
    """Aggregate one mode into :data:`SERIES_COLUMNS`, one row per interval from t=0.

    ``duration_s`` (the emulated run length) fixes the number of intervals; without it the last
    message or energy row does. Intervals without data get counts of 0 and NaN statistics.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    ends = [float(messages["t_emul"].max()) if len(messages) else 0.0]
    if energy is not None and len(energy):
        ends.append(float(energy["t_end_s"].max()))
    span = duration_s if duration_s else max(ends)
    count = max(1, math.ceil(span / interval_s - 1e-9))
    msg_bin = (messages["t_emul"] // interval_s).astype(int).clip(0, count - 1)
    energy_bin = None
    if energy is not None and len(energy):
        energy_bin = (energy["t_start_s"] // interval_s).astype(int).clip(0, count - 1)
    rows = []
    for index in range(count):
        start, end = index * interval_s, (index + 1) * interval_s
        msgs = messages[msg_bin == index]
        sent, received = len(msgs), int(msgs["received"].sum())
        loss = proportion_ci(sent - received, sent)
        latency_values = msgs.loc[msgs["received"] == 1, "latency_ms"]
        latency = mean_ci(latency_values)
        row = {"interval": index, "t_start_s": start, "t_end_s": end, "sent": sent,
               "received": received, "lost": sent - received, "loss_pct": 100 * loss.mean,
               "loss_ci95_low_pct": 100 * loss.low, "loss_ci95_high_pct": 100 * loss.high,
               "latency_mean_ms": latency.mean, "latency_ci95_ms": latency.half_width,
               "latency_p50_ms": _percentile(latency_values, 50),
               "latency_p95_ms": _percentile(latency_values, 95),
               "latency_p99_ms": _percentile(latency_values, 99)}
        row.update(_wire_columns(wire, msg_bin, index, sent))
        row.update(_energy_columns(energy, energy_bin, index))
        row.update(_key_columns(keys, start, end))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SERIES_COLUMNS))


def _wire_columns(wire: pd.DataFrame | None, msg_bin: pd.Series, index: int, sent: int) -> dict:
    if wire is None or wire["broker_seen"].isna().all():
        return {"wire_received": math.nan, "wire_loss_pct": math.nan,
                "wire_latency_mean_ms": math.nan, "wire_latency_p95_ms": math.nan}
    rows = wire[msg_bin.to_numpy() == index]
    seen = rows[rows["broker_seen"] == 1]
    return {"wire_received": len(seen),
            "wire_loss_pct": 100 * (sent - len(seen)) / sent if sent else math.nan,
            "wire_latency_mean_ms": float(seen["wire_latency_ms"].mean()) if len(seen) else math.nan,
            "wire_latency_p95_ms": _percentile(seen["wire_latency_ms"], 95)}


def _energy_columns(energy: pd.DataFrame | None, energy_bin: pd.Series | None, index: int) -> dict:
    empty = {"devices": 0, "rdc_mean": math.nan, "rdc_ci95": math.nan,
             "battery_life_days_mean": math.nan, "battery_life_days_ci95": math.nan,
             "avg_current_ma_mean": math.nan, "energy_j_total": math.nan}
    if energy is None or energy_bin is None:
        return empty
    rows = energy[energy_bin == index]
    if rows.empty:
        return empty
    per_device = _per_device_energy(rows)
    rdc = mean_ci(per_device["rdc"])
    life = mean_ci(per_device["battery_life_days"])
    return {"devices": len(per_device), "rdc_mean": rdc.mean, "rdc_ci95": rdc.half_width,
            "battery_life_days_mean": life.mean, "battery_life_days_ci95": life.half_width,
            "avg_current_ma_mean": float(per_device["avg_current_ma"].mean()),
            "energy_j_total": float(per_device["energy_j"].sum())}


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
    """Write ``frame`` as CSV, and as Parquet beside it when pyarrow is installed; return file names."""
    frame.to_csv(path_csv, index=False)
    written = [path_csv.name]
    if importlib.util.find_spec("pyarrow") is None:  # optional dependency: Parquet only when present
        return written
    parquet = path_csv.with_suffix(".parquet")
    frame.to_parquet(parquet, index=False)
    written.append(parquet.name)
    return written
