"""MQTT readings from a raw capture: we decode the packet headers, reassemble TCP and decode MQTT.

Packets come from :class:`harness.analysis.packets.IpPackets` (scapy's raw pcap reader plus a
``struct`` header decoder: full scapy dissection was the bottleneck of long runs). Why our own
reassembly: one TCP segment may carry several MQTT packets and one MQTT packet may be
split over several segments (and segments may be retransmitted, reordered or missing from the
capture). For each client-to-broker TCP stream we put the
payload bytes in sequence-number order, drop retransmitted bytes, and cut the byte stream into MQTT
packets by their fixed header (MQTT 3.1.1 §2.2, MQTT 5 §2.1). A PUBLISH whose payload is a qiot
reading (JSON, ``harness/devicecrypto.py``) becomes one row. Its capture time is the time of the segment that
completed it, i.e. when the broker side could first have read the whole message.

A hole in the captured byte stream (a segment the capture missed) is counted in
:class:`CaptureStats`; parsing resumes at the next segment that starts with a plausible MQTT header.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.packets import TCP, IpPackets, address_text

#: IANA port of unencrypted MQTT; a setting of :func:`read_mqtt_readings`.
MQTT_PORT = 1883
_PUBLISH = 3
_CONNECT = 1

#: Columns of the frame :func:`read_mqtt_readings` returns.
READING_COLUMNS = ("device", "seq", "mode", "key_id", "topic", "qos", "dup", "t_sent", "t_emul",
                   "t_capture", "latency_ms", "client")


@dataclass
class CaptureStats:
    """What the parser saw and what it could not use (for the capture cross-check)."""

    packets: int = 0
    tcp_segments: int = 0
    streams: int = 0
    mqtt_packets: int = 0
    publishes: int = 0
    readings: int = 0
    non_reading_publishes: int = 0
    retransmitted_bytes: int = 0
    gap_bytes: int = 0
    gaps: int = 0
    undecodable_bytes: int = 0

    def as_dict(self) -> dict:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


@dataclass
class _Stream:
    """Segments of one direction of one TCP connection: ``(raw 32-bit seq, capture time, data)``."""

    isn: int | None = None
    first_seq: int | None = None
    segments: list[tuple[int, float, bytes]] = field(default_factory=list)
    protocol_level: int = 4  # from CONNECT; 4 = MQTT 3.1.1, 5 = MQTT 5


_TCP_HEAD = struct.Struct("!HHIIBB")   # ports, sequence, acknowledgement, data offset, flags
_SYN = 0x02


def read_mqtt_readings(pcap: str | Path, broker_port: int = MQTT_PORT) -> tuple[pd.DataFrame, CaptureStats]:
    """Decode every qiot reading PUBLISHed towards ``broker_port`` in ``pcap``.

    Returns one row per PUBLISH (duplicates, e.g. QoS 1 re-sends, included with ``dup``) with the
    :data:`READING_COLUMNS`, sorted by capture time, and the parser's statistics. Times are floats in
    seconds (wall epoch, the one clock of the emulation); ``latency_ms = (t_capture - t_sent) * 1000``.
    """
    stats = CaptureStats()
    streams: dict[tuple, _Stream] = {}
    packets = IpPackets(pcap, TCP, dport=broker_port)
    for time, src, dst, segment in packets:
        if len(segment) < 20:
            continue
        sport, dport, seq, _, offset, flags = _TCP_HEAD.unpack_from(segment)
        stats.tcp_segments += 1
        key = (src, sport, dst, dport)
        stream = streams.get(key)
        if stream is None:
            stream = streams[key] = _Stream()
        if flags & _SYN:
            stream.isn = seq
        data = segment[(offset >> 4) * 4:]
        if not data:
            continue
        if stream.first_seq is None:
            stream.first_seq = seq
        stream.segments.append((seq, time, data))
    stats.packets = packets.frames
    rows: list[dict] = []
    stats.streams = len(streams)
    for key, stream in streams.items():
        client = f"{address_text(key[0])}:{key[1]}"
        for t_done, packet in _mqtt_packets(stream, stats):
            row = _reading_row(packet, stream, stats)
            if row is not None:
                row["t_capture"] = t_done
                row["client"] = client
                rows.append(row)
    frame = pd.DataFrame(rows, columns=list(READING_COLUMNS))
    if not frame.empty:
        frame["latency_ms"] = (frame["t_capture"] - frame["t_sent"]) * 1000.0
        frame = frame.sort_values(["t_capture", "device", "seq"], kind="stable").reset_index(drop=True)
    return frame, stats


def _unwrap(seq: int, reference: int) -> int:
    """Signed distance from ``reference`` to ``seq`` in 32-bit sequence space."""
    return ((seq - reference + 2**31) % 2**32) - 2**31


def _mqtt_packets(stream: _Stream, stats: CaptureStats):
    """Yield ``(completion_time, packet_bytes)`` for every whole MQTT packet in the stream."""
    if not stream.segments:
        return
    reference = stream.first_seq
    # (offset from the first data segment, time, data), in sequence order, ties by capture time.
    segments = sorted(((_unwrap(seq, reference), time, data) for seq, time, data in stream.segments),
                      key=lambda segment: (segment[0], segment[1]))
    expected = _unwrap(stream.isn + 1, reference) if stream.isn is not None else segments[0][0]
    expected = min(expected, segments[0][0])
    buffer = bytearray()
    pieces: list[tuple[int, float]] = []  # (end offset in buffer, capture time) of appended bytes
    # Without the SYN the capture may have started inside an MQTT packet: check the first header.
    resync = stream.isn is None
    for rel_seq, time, data in segments:
        end = rel_seq + len(data)
        if end <= expected:
            stats.retransmitted_bytes += len(data)
            continue
        if rel_seq > expected:
            stats.gaps += 1
            stats.gap_bytes += rel_seq - expected
            stats.undecodable_bytes += len(buffer)
            buffer.clear()
            pieces.clear()
            resync = True
            expected = rel_seq
        overlap = expected - rel_seq
        stats.retransmitted_bytes += overlap
        buffer += data[overlap:]
        pieces.append((len(buffer), time))
        expected = end
        if resync and not _plausible_header(buffer):
            stats.undecodable_bytes += len(buffer)
            buffer.clear()
            pieces.clear()
            continue
        resync = False
        while True:
            size = _packet_size(buffer)
            if size is None or size > len(buffer):
                break
            t_done = _completion_time(pieces, size)
            yield t_done, bytes(buffer[:size])
            stats.mqtt_packets += 1
            del buffer[:size]
            pieces = [(stop - size, t) for stop, t in pieces if stop > size]
    stats.undecodable_bytes += len(buffer)


def _completion_time(pieces: list[tuple[int, float]], size: int) -> float:
    """Latest capture time among the pieces holding the first ``size`` buffer bytes."""
    latest = float("-inf")
    for stop, time in pieces:
        latest = max(latest, time)
        if stop >= size:
            break
    return latest


def _varint(buffer: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """Decode an MQTT variable byte integer at ``offset``: (value, bytes used), None if incomplete/bad."""
    value = 0
    for i in range(4):
        if offset + i >= len(buffer):
            return None
        byte = buffer[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    return None


def _packet_size(buffer: bytearray) -> int | None:
    """Total length of the MQTT packet at the start of ``buffer``, or None if its header is incomplete."""
    if len(buffer) < 2:
        return None
    decoded = _varint(buffer, 1)
    if decoded is None:
        return None
    remaining, used = decoded
    return 1 + used + remaining


def _plausible_header(buffer: bytearray) -> bool:
    """After a capture gap: does the buffer start like a client-to-broker MQTT packet?

    Payload text (JSON) is mostly bytes 0x20-0x7E, which would pass a bare type check, so the
    fixed-header flags and lengths the standard requires (MQTT 3.1.1 §2.2.2, MQTT 5 §2.1.3) are
    checked too, and a PUBLISH topic must fit its packet and be decodable without wildcards.
    """
    if len(buffer) < 2:
        return False
    kind, flags = buffer[0] >> 4, buffer[0] & 0x0F
    decoded = _varint(buffer, 1)
    if decoded is None:
        return False
    remaining, used = decoded
    body = buffer[1 + used:]
    if kind == _CONNECT:
        return flags == 0 and (len(body) < 6 or bytes(body[:6]) == b"\x00\x04MQTT" or bytes(body[:8]) == b"\x00\x06MQIsdp")
    if kind == _PUBLISH:
        if (flags >> 1) & 0x03 == 3 or len(body) < 2:
            return False
        topic_len = int.from_bytes(body[:2], "big")
        if topic_len == 0 or topic_len + 2 > remaining:
            return False
        try:
            topic = bytes(body[2:2 + topic_len]).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return not any(c in topic for c in "+#\x00")
    if kind in (4, 5, 7):                  # PUBACK, PUBREC, PUBCOMP
        return flags == 0 and remaining >= 2
    if kind in (6, 8, 10):                 # PUBREL, SUBSCRIBE, UNSUBSCRIBE
        return flags == 2 and remaining >= 2
    if kind == 12:                         # PINGREQ
        return flags == 0 and remaining == 0
    if kind in (14, 15):                   # DISCONNECT, AUTH (MQTT 5 may add a reason code)
        return flags == 0 and remaining < 256
    return False


def _reading_row(packet: bytes, stream: _Stream, stats: CaptureStats) -> dict | None:
    """Decode one MQTT packet; return a reading row for a qiot PUBLISH, else None."""
    kind = packet[0] >> 4
    _, used = _varint(packet, 1)
    body = packet[1 + used:]
    if kind == _CONNECT and len(body) >= 7:
        name_len = int.from_bytes(body[0:2], "big")
        if len(body) > 2 + name_len:
            stream.protocol_level = body[2 + name_len]
        return None
    if kind != _PUBLISH:
        return None
    stats.publishes += 1
    qos = (packet[0] >> 1) & 0x03
    topic_len = int.from_bytes(body[0:2], "big")
    topic = body[2:2 + topic_len].decode("utf-8", "replace")
    offset = 2 + topic_len + (2 if qos else 0)
    if stream.protocol_level == 5:
        props = _varint(body, offset)
        if props is None:
            stats.non_reading_publishes += 1
            return None
        offset += props[1] + props[0]
    try:
        reading = json.loads(body[offset:].decode("utf-8"))
        row = {"device": str(reading["device"]), "seq": int(reading["seq"]),
               "t_sent": float(reading["t_sent"]), "t_emul": float(reading.get("t_emul", float("nan"))),
               "mode": reading.get("mode"), "key_id": reading.get("key_id")}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        stats.non_reading_publishes += 1
        return None
    stats.readings += 1
    row.update(topic=topic, qos=qos, dup=(packet[0] >> 3) & 1)
    return row


class BackgroundRead:
    """:func:`read_mqtt_readings` of one capture in a separate Python process, started at once.

    A plain ``python -m harness.analysis.pcap`` child (not multiprocessing: its spawn and forkserver
    modes re-run the caller's main script, and fork is unsafe in a process with threads); the
    result comes back as a pickle in a temporary file. :meth:`result` waits for it and raises the
    child's ValueError (unreadable capture) as the parent's.
    """

    def __init__(self, pcap: str | Path, broker_port: int = MQTT_PORT) -> None:
        handle, name = tempfile.mkstemp(prefix="qiot-pcap-", suffix=".pickle")
        os.close(handle)
        self._out = Path(name)
        package_root = Path(__file__).resolve().parents[2]   # the child imports this very harness
        self._child = subprocess.Popen([sys.executable, "-m", "harness.analysis.pcap", str(pcap), str(broker_port),
                                        str(self._out)], cwd=package_root, stderr=subprocess.PIPE, text=True)

    def result(self) -> tuple[pd.DataFrame, CaptureStats]:
        """The child's (readings, stats); ValueError if it could not read the capture."""
        try:
            _, errors = self._child.communicate()
            if self._child.returncode != 0:
                lines = errors.strip().splitlines()
                raise ValueError(lines[-1].removeprefix("error: ") if lines else "capture reader failed")
            with self._out.open("rb") as handle:
                frame, counters = pickle.load(handle)
            return frame, CaptureStats(**counters)
        finally:
            self._out.unlink(missing_ok=True)


    def cancel(self) -> None:
        """Stop the child and remove its output (the caller failed and will not wait)."""
        if self._child.poll() is None:
            self._child.kill()
        self._child.communicate()
        self._out.unlink(missing_ok=True)


def _main(argv: list[str]) -> int:
    """``python -m harness.analysis.pcap PCAP PORT OUT``: pickle read_mqtt_readings' result to OUT."""
    try:
        frame, stats = read_mqtt_readings(argv[0], int(argv[1]))
    except (ValueError, IndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(argv[2], "wb") as handle:   # plain types only: here this module is __main__
        pickle.dump((frame, stats.as_dict()), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
