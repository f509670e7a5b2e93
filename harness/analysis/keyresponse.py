"""Clavis2 KeyResponse datagrams in a capture (what the paper's Fig. 2e shows in Wireshark).

Layout (reference.md §3, after the Bristol cqptoolkit driver's ``Clavis.h``), 62 bytes, packed,
little-endian, as ``harness/qkd/clavis.py`` writes it::

    offset size field
         0    1 type            (1 = response, 0 = request)
         1    4 keyIDhw
         5    4 keyIDlw
         9    1 keyLength
        10    4 keyRequestID
        14    1 errorStatus     (0 ok, 1 no more keys, 2 no such key id, 3 wrong length, 4 invalid)
        15   32 key
        47    1 deviceID
        48   10 reserved
        58    4 crc32 over bytes 0..57

This module decodes independently of ``harness.qkd.clavis`` on purpose: it is a check on the wire
format, not a second user of the same code.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from harness.analysis.packets import UDP, IpPackets, address_text

#: UDP port of IDQ's QKDSequence key service (reference.md §3).
CLAVIS_PORT = 5323
RESPONSE_SIZE = 62
_LAYOUT = struct.Struct("<BIIBIB32sB10sI")
assert _LAYOUT.size == RESPONSE_SIZE

#: Field table for drawing the datagram (Fig. 2e): (name, offset, size).
FIELDS = (("type", 0, 1), ("keyIDhw", 1, 4), ("keyIDlw", 5, 4), ("keyLength", 9, 1),
          ("keyRequestID", 10, 4), ("errorStatus", 14, 1), ("key", 15, 32), ("deviceID", 47, 1),
          ("reserved", 48, 10), ("crc32", 58, 4))

ERROR_TEXT = {0: "success", 1: "no more keys", 2: "key id does not exist", 3: "wrong key length",
              4: "invalid key request"}


@dataclass(frozen=True)
class KeyResponse:
    """One decoded KeyResponse; ``key_id`` is the 64-bit id ``hw << 32 | lw``."""

    msg_type: int
    key_id_hw: int
    key_id_lw: int
    key_length: int
    key_request_id: int
    error_status: int
    key: bytes
    device_id: int
    crc32: int
    crc_ok: bool

    @property
    def key_id(self) -> int:
        return (self.key_id_hw << 32) | self.key_id_lw


def _crc32_msb_first(data: bytes) -> int:
    """CRC-32 with polynomial 0x04C11DB7 unreflected (CRC-32/BZIP2): init and final xor 0xFFFFFFFF."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc ^ 0xFFFFFFFF


def decode_key_response(datagram: bytes) -> KeyResponse:
    """Decode a 62-byte KeyResponse; raise ``ValueError`` for any other size or type.

    ``crc_ok`` accepts the reflected CRC-32 (zlib's, the usual reading of "poly 0x04C11DB7, init
    0xFFFFFFFF, final complement") or the unreflected variant, since reference.md leaves it open.
    """
    if len(datagram) != RESPONSE_SIZE:
        raise ValueError(f"datagram: expected {RESPONSE_SIZE} bytes, got {len(datagram)}")
    (msg_type, hw, lw, length, request_id, status, key, device_id, _reserved,
     crc) = _LAYOUT.unpack(datagram)
    if msg_type != 1:
        raise ValueError(f"datagram: type is {msg_type}, not 1 (KeyResponse)")
    body = datagram[:58]
    crc_ok = crc in (zlib.crc32(body) & 0xFFFFFFFF, _crc32_msb_first(body))
    return KeyResponse(msg_type, hw, lw, length, request_id, status, key, device_id, crc, crc_ok)


def read_key_responses(pcap: str | Path, port: int = CLAVIS_PORT) -> pd.DataFrame:
    """Every KeyResponse sent from UDP ``port`` in ``pcap``, one row each (raw bytes kept as hex).

    Columns: t_capture, src, sport, dst, dport, msg_type, key_id_hw, key_id_lw, key_id, key_length,
    key_request_id, error_status, key_hex, device_id, crc32, crc_ok, raw_hex.
    """
    rows = []
    for time, src, dst, segment in IpPackets(pcap, UDP, sport=port):
        if len(segment) < 8:
            continue
        sport, dport, length = struct.unpack_from("!HHH", segment)
        data = segment[8:max(length, 8)]   # the UDP length, not any padding after it
        try:
            response = decode_key_response(data)
        except ValueError:
            continue
        row = {"t_capture": time, "src": address_text(src), "sport": sport, "dst": address_text(dst),
               "dport": dport}
        fields = asdict(response)
        fields["key_hex"] = fields.pop("key").hex()
        row.update(fields, key_id=response.key_id, raw_hex=data.hex())
        rows.append(row)
    columns = ["t_capture", "src", "sport", "dst", "dport", "msg_type", "key_id_hw", "key_id_lw",
               "key_id", "key_length", "key_request_id", "error_status", "key_hex", "device_id",
               "crc32", "crc_ok", "raw_hex"]
    return pd.DataFrame(rows, columns=columns)
