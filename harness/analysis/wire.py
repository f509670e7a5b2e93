"""Per-message wire measurements: the application's records matched with what the captures saw.

Messages are matched on (device, seq). The broker-side capture (``dc.pcap``) gives the wire
latency (capture time at the broker minus the ``t_sent`` the device put in the payload: one clock,
it is an emulation) and the wire loss (a message sent but never seen at the broker). The cross-check
against ``messages.csv`` finds *capture drops*: messages the application says arrived that the
broker-side capture does not hold; while there are any, wire loss over-counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.pcap import BackgroundRead, CaptureStats, read_mqtt_readings
from harness.analysis.stats import mean_ci, proportion_ci

#: Columns of ``<mode>/wire.csv``.
WIRE_COLUMNS = ("device", "seq", "t_emul", "t_sent", "app_received", "app_latency_ms",
                "broker_seen", "broker_copies", "t_broker", "wire_latency_ms", "device_seen",
                "device_copies", "t_device")

#: How many (device, seq) pairs capture.json lists per problem; the counts are always complete.
LISTED_EXAMPLES = 50

#: Captures of a mode adding up to this many bytes are parsed in two processes (about 1 s of
#: packets at ~100 bytes each: more than a second interpreter costs to start).
PARALLEL_PARSE_BYTES = 64 << 20


def _size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0   # read_mqtt_readings reports the unreadable file


def _first_capture(readings: pd.DataFrame) -> pd.DataFrame:
    """One row per (device, seq): first capture time, the publish time stamped in that copy, and the
    number of copies seen (a reading published again after a lost acknowledgement carries a later
    stamp in its later copy: the first copy's latency is the one that happened)."""
    if readings.empty:
        return pd.DataFrame({"device": pd.Series(dtype=str), "seq": pd.Series(dtype=int),
                             "t_capture": pd.Series(dtype=float), "t_stamped": pd.Series(dtype=float),
                             "copies": pd.Series(dtype=int)})
    ordered = readings.sort_values("t_capture")
    grouped = ordered.groupby(["device", "seq"], as_index=False)
    return grouped.agg(t_capture=("t_capture", "first"), t_stamped=("t_sent", "first"),
                       copies=("t_capture", "size"))


def match_messages(messages: pd.DataFrame, broker: pd.DataFrame | None,
                   device: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join app records with broker-side (and optionally device-side) readings on (device, seq).

    ``broker``/``device`` are frames from :func:`read_mqtt_readings` (None: that capture is absent,
    its columns are then NaN). Returns :data:`WIRE_COLUMNS`, one row per message in ``messages``.
    """
    frame = messages[["device", "seq", "t_emul", "t_sent", "received", "latency_ms"]].copy()
    frame = frame.rename(columns={"received": "app_received", "latency_ms": "app_latency_ms"})
    frame["seq"] = frame["seq"].astype(int)
    for prefix, readings in (("broker", broker), ("device", device)):
        if readings is None:
            frame[f"{prefix}_seen"] = np.nan
            frame[f"t_{prefix}"] = frame[f"t_{prefix}_stamp"] = np.nan
            frame[f"{prefix}_copies"] = np.nan
            continue
        first = _first_capture(readings).rename(columns={"t_capture": f"t_{prefix}",
                                                         "t_stamped": f"t_{prefix}_stamp",
                                                         "copies": f"{prefix}_copies"})
        frame = frame.merge(first, on=["device", "seq"], how="left")
        frame[f"{prefix}_copies"] = frame[f"{prefix}_copies"].fillna(0).astype(int)
        frame[f"{prefix}_seen"] = (frame[f"{prefix}_copies"] > 0).astype(int)
    published = frame["t_broker_stamp"].astype(float).fillna(frame["t_sent"].astype(float))
    frame["wire_latency_ms"] = (frame["t_broker"] - published) * 1000.0
    return frame[list(WIRE_COLUMNS)]


def capture_check(wire: pd.DataFrame, broker: pd.DataFrame | None,
                  broker_stats: CaptureStats | None = None,
                  device_stats: CaptureStats | None = None) -> dict:
    """Counts (and examples) of disagreements between app records and captures, plus wire figures.

    Keys: sent, app_received, broker_seen, capture_drops (app received, not in broker pcap),
    wire_only (in broker pcap, app says not received), device_missing (sent, not in device pcap),
    unknown_in_capture (readings in the broker pcap matching no sent message), wire_loss_pct with
    its 95% interval, wire_latency_mean_ms with its interval, and the parsers' statistics.
    """
    have_broker = broker is not None
    sent = len(wire)
    app_received = int(wire["app_received"].sum())
    result: dict = {"sent": sent, "app_received": app_received, "broker_capture": have_broker}
    if have_broker:
        seen = wire["broker_seen"] == 1
        drops = wire[(wire["app_received"] == 1) & ~seen]
        wire_only = wire[(wire["app_received"] != 1) & seen]
        known = set(zip(wire["device"], wire["seq"]))
        unknown = [pair for pair in _first_capture(broker)[["device", "seq"]].itertuples(index=False, name=None)
                   if pair not in known]
        loss = proportion_ci(sent - int(seen.sum()), sent)
        latency = mean_ci(wire.loc[seen, "wire_latency_ms"])
        result.update(
            broker_seen=int(seen.sum()),
            capture_drops=len(drops), capture_drop_examples=_pairs(drops),
            wire_only=len(wire_only), wire_only_examples=_pairs(wire_only),
            unknown_in_capture=len(unknown),
            unknown_examples=[[d, int(s)] for d, s in unknown[:LISTED_EXAMPLES]],
            wire_loss_pct=100 * loss.mean, wire_loss_ci95_low_pct=100 * loss.low,
            wire_loss_ci95_high_pct=100 * loss.high,
            wire_latency_mean_ms=latency.mean, wire_latency_ci95_ms=latency.half_width,
            broker_stats=broker_stats.as_dict() if broker_stats else None)
    if wire["device_seen"].notna().any():
        missing = wire[wire["device_seen"] != 1]
        result.update(device_missing=len(missing), device_missing_examples=_pairs(missing),
                      device_stats=device_stats.as_dict() if device_stats else None)
    return result


def _pairs(rows: pd.DataFrame) -> list[list]:
    return [[str(d), int(s)] for d, s in rows[["device", "seq"]].head(LISTED_EXAMPLES).itertuples(index=False)]


def wire_for_mode(messages: pd.DataFrame, broker_pcap: Path | None,
                  device_pcap: Path | None, broker_port: int = 1883) -> tuple[pd.DataFrame, dict]:
    """Parse the mode's captures (either may be None) and return (wire frame, capture check).

    Two large captures are parsed at once, the device-side one in a second process
    (:class:`~harness.analysis.pcap.BackgroundRead`; a long run's captures take seconds each, and
    the start of a fresh interpreter is not worth it for small ones).
    """
    if broker_pcap and device_pcap and _size(broker_pcap) + _size(device_pcap) >= PARALLEL_PARSE_BYTES:
        device_job = BackgroundRead(device_pcap, broker_port)
        try:
            broker, broker_stats = read_mqtt_readings(broker_pcap, broker_port)
        except BaseException:
            device_job.cancel()
            raise
        device, device_stats = device_job.result()
    else:
        broker, broker_stats = read_mqtt_readings(broker_pcap, broker_port) if broker_pcap else (None, None)
        device, device_stats = read_mqtt_readings(device_pcap, broker_port) if device_pcap else (None, None)
    wire = match_messages(messages, broker, device)
    return wire, capture_check(wire, broker, broker_stats, device_stats)
