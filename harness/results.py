"""The run directory: one self-describing, versioned folder per ``qiot run``.

Layout (documented column by column in ``docs/results.md``)::

    RUN_DIR/metadata.json       schema version, qiot version and commit, scenario as used, kernel,
                                mechanisms (switch datapath, shaping), times, status
    RUN_DIR/<mode>/sent.csv     raw: one row per publish attempt, written by the devices as they go
    RUN_DIR/<mode>/received.csv raw: one row per reading that reached the platform
    RUN_DIR/<mode>/messages.csv derived: sent joined with received on (device, seq)
    RUN_DIR/<mode>/summary.csv  derived: one row of totals, latency and loss statistics
    RUN_DIR/logs/, RUN_DIR/config/  every managed process's log and config

The raw files are flushed row by row while the run goes; the derived files are computed from them
by pure functions here, at the end of each mode and again on interruption, so they can always be
rebuilt from what was captured.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

import harness

#: Bumped whenever a file or column of the run directory changes meaning.
SCHEMA_VERSION = 1

MESSAGE_COLUMNS = ["device", "seq", "t_emul", "t_sent", "t_received", "latency_ms", "received"]


def git_commit() -> str:
    """The commit of the qiot checkout running, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(Path(harness.__file__).parent.parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def base_metadata() -> dict[str, Any]:
    """Facts about the software and machine that every run records."""
    return {"schema_version": SCHEMA_VERSION, "qiot_version": harness.__version__, "git_commit": git_commit(),
            "kernel": platform.release(), "python": platform.python_version(), "hostname": platform.node()}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so a reader (or a crash) never sees a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a raw CSV, ignoring a torn last line from a crash mid-write.

    Rows are written whole and newline-terminated, so anything after the last newline is a row
    the writer did not finish.
    """
    if not path.exists():
        return pd.DataFrame()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if not complete.strip():
        return pd.DataFrame()
    return pd.read_csv(io.BytesIO(complete))


def join_messages(sent: pd.DataFrame, received: pd.DataFrame) -> pd.DataFrame:
    """One row per publish attempt: did it arrive, and with which one-way latency.

    A reading counts as received if the platform recorded its (device, seq); QoS 1 may deliver it
    twice, so only the first arrival counts. Latency is arrival time minus the send time the device
    stamped into the message: one clock serves the whole emulation.
    """
    if sent.empty:
        return pd.DataFrame(columns=MESSAGE_COLUMNS)
    sent = sent[["device", "seq", "t_emul", "t_sent"]].copy()
    if received.empty:
        arrivals = pd.DataFrame(columns=["device", "seq", "t_received"])
    else:
        arrivals = (received[received["seq"] >= 0].sort_values("t_received")
                    .drop_duplicates(["device", "seq"], keep="first")[["device", "seq", "t_received"]])
    messages = sent.merge(arrivals, on=["device", "seq"], how="left")
    messages["latency_ms"] = (messages["t_received"] - messages["t_sent"]) * 1000.0
    messages["received"] = messages["t_received"].notna().astype(int)
    return messages[MESSAGE_COLUMNS].sort_values(["t_emul", "device"]).reset_index(drop=True)


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t); NaN where undefined."""
    from harness.analysis.stats import mean_ci

    estimate = mean_ci(values)
    return estimate.mean, estimate.half_width


def summarize(messages: pd.DataFrame, mode: str, devices: int) -> dict[str, Any]:
    """Totals, loss and latency statistics of one mode."""
    sent = len(messages)
    received = int(messages["received"].sum()) if sent else 0
    latency = messages.loc[messages["received"] == 1, "latency_ms"] if sent else pd.Series(dtype=float)
    mean, half = mean_ci95(latency)
    # Loss per device, so the interval reflects device-to-device spread, not one pooled proportion.
    per_device_loss = (1.0 - messages.groupby("device")["received"].mean()) * 100.0 if sent else pd.Series(dtype=float)
    loss_mean, loss_half = mean_ci95(per_device_loss)
    return {
        "mode": mode, "devices": devices, "sent": sent, "received": received, "lost": sent - received,
        "loss_pct": (100.0 * (sent - received) / sent) if sent else math.nan,
        "loss_pct_device_mean": loss_mean, "loss_pct_ci95": loss_half,
        "latency_mean_ms": mean, "latency_ci95_ms": half,
        "latency_p50_ms": float(latency.quantile(0.5)) if len(latency) else math.nan,
        "latency_p95_ms": float(latency.quantile(0.95)) if len(latency) else math.nan,
        "latency_max_ms": float(latency.max()) if len(latency) else math.nan,
    }


def summarize_energy(energy: pd.DataFrame, interval_s: float | None) -> dict[str, Any]:
    """Mean and 95% CI of RDC, battery lifetime, energy and current over (device, interval) samples.

    With ``interval_s``, only full intervals are samples when there are any: a device's first and
    last partial intervals (started mid-hour, or cut by the end of the run) would skew the spread.
    """
    if energy.empty:
        return {}
    samples = energy
    if interval_s is not None:
        full = energy[energy["t_end_s"] - energy["t_start_s"] >= interval_s * (1 - 1e-9)]
        samples = full if len(full) else energy
    out: dict[str, Any] = {"energy_samples": len(samples)}
    for column in ("rdc", "battery_life_days", "energy_j", "avg_current_ma"):
        mean, half = mean_ci95(samples[column])
        out[f"{column}_mean"], out[f"{column}_ci95"] = mean, half
    return out


def key_series(buffer: pd.DataFrame, sent: pd.DataFrame, link_offset_s: float, end_s: float) -> pd.DataFrame:
    """``keys.csv``: the QKD key buffer's fill and the keys delivered to devices, on the mode's clock.

    ``buffer`` is the link's ``buffer.csv`` (its own emulated clock, started with the testbed);
    ``link_offset_s`` is how far (emulated seconds) the link's clock was ahead when the mode began.
    Delivered keys count the devices' successful key refreshes (``sent.csv``), cumulatively.
    """
    columns = ["t_emul", "keys_in_buffer", "keys_delivered"]
    if buffer.empty:
        return pd.DataFrame(columns=columns)
    fill = pd.DataFrame({"t_emul": buffer["t_emul"] - link_offset_s, "keys_in_buffer": buffer["keys_stored"]})
    fill = fill[(fill["t_emul"] >= 0) & (fill["t_emul"] <= end_s)].sort_values("t_emul")
    if sent.empty or "key_refreshed" not in sent:
        fill["keys_delivered"] = 0
        return fill[columns]
    refreshed = sent[(sent["key_refreshed"] == 1) & sent["error"].isna()].sort_values("t_emul")["t_emul"].to_numpy()
    fill["keys_delivered"] = refreshed.searchsorted(fill["t_emul"].to_numpy(), side="right")
    return fill[columns].reset_index(drop=True)


def finalize_mode(mode_dir: Path, mode: str, devices: int, energy_interval_s: float = 3600.0) -> dict[str, Any]:
    """Derive ``messages.csv`` and ``summary.csv`` from the raw files of one mode; return the summary."""
    messages = join_messages(read_csv(mode_dir / "sent.csv"), read_csv(mode_dir / "received.csv"))
    messages.to_csv(mode_dir / "messages.csv", index=False, float_format="%.6f")
    summary = summarize(messages, mode, devices)
    received = read_csv(mode_dir / "received.csv")
    if not received.empty and "decrypted" in received:
        counts = received["decrypted"].value_counts()
        summary["decrypt_ok"] = int(counts.get("ok", 0))
        summary["decrypt_failures"] = int(len(received) - counts.get("ok", 0))
    summary.update(summarize_energy(read_csv(mode_dir / "energy.csv"), energy_interval_s))
    pd.DataFrame([summary]).to_csv(mode_dir / "summary.csv", index=False, float_format="%.6f")
    return summary
