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
from typing import Any, Iterable

import pandas as pd

import harness

#: Version of the files ``qiot run`` writes (metadata.json ``schema_version``). Bumped whenever a file
#: or column of the run directory changes meaning; docs/results.md lists the history, and
#: :mod:`harness.analysis.rundir` upgrades older versions on read.
SCHEMA_VERSION = 2

#: Columns of ``messages.csv``. ``queued_s`` and ``error`` come from ``sent.csv`` (0 / empty when an
#: older sent.csv lacks them) so the accounting of readings can be redone from messages.csv alone.
MESSAGE_COLUMNS = ["device", "seq", "t_emul", "t_sent", "t_received", "latency_ms", "received", "queued_s",
                   "error"]


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
    """One row per reading (sent.csv row): did it arrive, and with which one-way latency.

    A reading counts as received if the platform recorded its (device, seq); QoS 1 may deliver it
    twice, so only the first arrival counts. Latency is arrival time minus the publish time the
    device stamped into the message that arrived (received.csv ``t_sent``; sent.csv's ``t_sent``
    only where the platform did not record one): one clock serves the whole emulation, and a queued
    reading's wait before its publish is in ``queued_s``, not in the latency. Why the arrival's own
    stamp: a device whose acknowledgement timed out publishes the reading again later, and sent.csv
    keeps the later publish time; the first arrival, of the earlier copy, then came "before" it
    (measured: one reading of 26,000 at -445 s made a 13,000-device run's mean latency -7.7 ms).
    """
    if sent.empty:
        return pd.DataFrame(columns=MESSAGE_COLUMNS)
    sent = sent.copy()
    if "queued_s" not in sent:  # older device agents publish at once
        sent["queued_s"] = 0.0
    if "error" not in sent:
        sent["error"] = ""
    sent = sent[["device", "seq", "t_emul", "t_sent", "queued_s", "error"]]
    sent["queued_s"] = sent["queued_s"].fillna(0.0)
    if received.empty:
        arrivals = pd.DataFrame(columns=["device", "seq", "t_received", "t_stamped"])
    else:
        arrivals = (received[received["seq"] >= 0].sort_values("t_received")
                    .drop_duplicates(["device", "seq"], keep="first"))
        arrivals = arrivals.assign(t_stamped=arrivals["t_sent"] if "t_sent" in arrivals else float("nan"))
        arrivals = arrivals[["device", "seq", "t_received", "t_stamped"]]
    messages = sent.merge(arrivals, on=["device", "seq"], how="left")
    published = messages["t_stamped"].astype(float).fillna(messages["t_sent"].astype(float))
    messages["latency_ms"] = (messages["t_received"] - published) * 1000.0
    messages["received"] = messages["t_received"].notna().astype(int)
    return messages[MESSAGE_COLUMNS].sort_values(["t_emul", "device"]).reset_index(drop=True)


#: Energy metrics of summary.csv: ``<name>_mean`` and ``<name>_ci95`` (Student-t half width over devices).
ENERGY_SUMMARY_METRICS = ("rdc", "battery_life_days", "energy_j", "avg_current_ma")


def summarize(messages: pd.DataFrame, mode: str, devices: int, energy: pd.DataFrame | None = None) -> dict[str, Any]:
    """One mode's totals, accounting of readings, loss, latency and (with ``energy``) energy statistics.

    Every figure comes from :mod:`harness.analysis.stats`, the computation ``qiot compare`` and
    series.csv use too: loss is the pooled proportion of readings with its Wilson interval, latency
    the mean over received messages (Student t); energy see :func:`summarize_energy`. Each
    ``*_ci_method`` names its interval.
    """
    from harness.analysis.stats import estimate, mode_samples, percentile

    samples = mode_samples(messages)
    counts = samples.counts
    loss, latency = estimate(samples, "loss_pct"), estimate(samples, "latency_ms")
    latency_values = samples.values["latency_ms"]
    out: dict[str, Any] = {
        "mode": mode, "devices": devices, "sent": counts["readings"], "received": counts["received"],
        "lost": counts["lost"], "lost_network": counts["lost_network"], "not_published": counts["not_published"],
        "dropped_queue_overflow": counts["dropped_queue_overflow"], "delivered_late": counts["delivered_late"],
        "loss_pct": loss.mean, "loss_ci95_low_pct": loss.low, "loss_ci95_high_pct": loss.high,
        "loss_ci_method": loss.method,
        "latency_mean_ms": latency.mean, "latency_ci95_ms": latency.half_width, "latency_ci_method": latency.method,
        "latency_p50_ms": percentile(latency_values, 50), "latency_p95_ms": percentile(latency_values, 95),
        "latency_max_ms": float(latency_values.max()) if latency_values.size else math.nan,
    }
    if energy is not None:
        out.update(summarize_energy(energy))
    return out


def summarize_energy(energy: pd.DataFrame | Iterable) -> dict[str, Any]:
    """Energy figures of one mode: mean over devices and Student-t 95% half width of each of
    :data:`ENERGY_SUMMARY_METRICS` (``<name>_mean``, ``<name>_ci95``), ``energy_devices`` (n),
    ``device_hours`` and ``energy_ci_method``.

    ``energy`` is an energy.csv table, or energy rows held in memory (objects with ``as_csv()``,
    e.g. a pure simulation's :class:`~harness.energy.energest.IntervalRow`). One sample is one
    device over the whole mode, its rows combined exactly (:func:`harness.analysis.stats.per_device_energy`),
    so partial first and last rows count by their length. ``rdc`` stays a fraction as in energy.csv.
    Empty input gives ``{}``.
    """
    from harness.analysis.stats import Samples, estimate, per_device_energy

    if not isinstance(energy, pd.DataFrame):
        energy = pd.DataFrame([row.as_csv() for row in energy])
    if energy.empty:
        return {}
    samples = Samples(per_device_energy(energy))
    out: dict[str, Any] = {"energy_devices": len(samples.devices), "device_hours": samples.device_hours}
    for name in ENERGY_SUMMARY_METRICS:
        value = estimate(samples, name, display_units=False)
        out[f"{name}_mean"], out[f"{name}_ci95"] = value.mean, value.half_width
    out["energy_ci_method"] = value.method
    return out


def key_series(buffer: pd.DataFrame, sent: pd.DataFrame, link_offset_s: float, end_s: float) -> pd.DataFrame:
    """``keys.csv``: the QKD key buffer's fill and the keys delivered to devices, on the mode's clock.

    ``buffer`` is the link's ``buffer.csv`` (its own emulated clock, started with the testbed);
    ``link_offset_s`` is how far (emulated seconds) the link's clock was ahead when the mode began.
    ``keys_in_buffer`` is what the buffer can still hand out (``keys_available``: distilled, not yet
    handed out), so a fibre cut shows as the buffer draining. Delivered keys count the devices'
    successful key refreshes (``sent.csv``), cumulatively.
    """
    columns = ["t_emul", "keys_in_buffer", "keys_delivered"]
    if buffer.empty:
        return pd.DataFrame(columns=columns)
    fill = pd.DataFrame({"t_emul": buffer["t_emul"] - link_offset_s, "keys_in_buffer": buffer["keys_available"]})
    fill = fill[(fill["t_emul"] >= 0) & (fill["t_emul"] <= end_s)].sort_values("t_emul")
    if sent.empty or "key_refreshed" not in sent:
        fill["keys_delivered"] = 0
        return fill[columns]
    refreshed = sent[(sent["key_refreshed"] == 1) & sent["error"].isna()].sort_values("t_emul")["t_emul"].to_numpy()
    fill["keys_delivered"] = refreshed.searchsorted(fill["t_emul"].to_numpy(), side="right")
    return fill[columns].reset_index(drop=True)


def finalize_mode(mode_dir: Path, mode: str, devices: int, energy_interval_s: float | None = None) -> dict[str, Any]:
    """Derive ``messages.csv`` and ``summary.csv`` from the raw files of one mode; return the summary.

    ``energy_interval_s`` is accepted for the run's call and no longer needed: each device's
    energy rows are combined over the whole mode, partial first/last rows weighted by their length.
    """
    del energy_interval_s  # kept in the signature for callers; see the docstring
    messages = join_messages(read_csv(mode_dir / "sent.csv"), read_csv(mode_dir / "received.csv"))
    messages.to_csv(mode_dir / "messages.csv", index=False, float_format="%.6f")
    summary = summarize(messages, mode, devices, read_csv(mode_dir / "energy.csv"))
    received = read_csv(mode_dir / "received.csv")
    if not received.empty and "decrypted" in received:
        counts = received["decrypted"].value_counts()
        summary["decrypt_ok"] = int(counts.get("ok", 0))
        summary["decrypt_failures"] = int(len(received) - counts.get("ok", 0))
    pd.DataFrame([summary]).to_csv(mode_dir / "summary.csv", index=False, float_format="%.6f")
    return summary
