"""IP packets out of a capture file, fast: a classic-pcap record walker plus a header decoder.

A 24 h, 50-device run captures about 2 M packets per mode and capture point; dissecting each with
scapy ran at ~7 k packets/s (minutes per capture). The analysis only needs IPv4/IPv6 addresses
and the TCP or UDP segment of each packet, so :class:`IpPackets` decodes those few header fields
with ``struct``: link layer (Ethernet with VLAN tags, Linux cooked v1/v2, raw IP; any other link
type scapy knows is dissected by scapy, frame by frame), then the IP header. Records of a classic
pcap file (what tcpdump writes; micro- or nanosecond, either byte order) are walked in large
reads, which is hand-written because scapy's ``RawPcapReader`` spends two file reads and a named
tuple per record (about as much as the rest of the analysis); any other file (pcapng, gzip) goes
through ``RawPcapReader``. No well-kept library does less work per packet: dpkt builds an object
per layer.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Iterator

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

TCP = 6
UDP = 17

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6 = 0x0800, 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
# Link types (tcpdump.org/linktypes.html): byte offset of the EtherType, and of the IP header.
_LINK_ETHERNET, _LINK_RAW, _LINK_SLL, _LINK_IPV4, _LINK_IPV6, _LINK_SLL2 = 1, 101, 113, 228, 229, 276
_U16 = struct.Struct("!H")
_IPV4_HEAD = struct.Struct("!BxHxxxxxB")       # version/IHL, total length, protocol


_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
               b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}


def open_pcap(pcap: str | Path) -> RawPcapReader:
    """Open a capture with scapy's raw reader; an unreadable or malformed file raises ValueError."""
    try:
        return RawPcapReader(str(pcap))
    except (OSError, EOFError, Scapy_Exception) as exc:
        raise ValueError(f"{pcap}: cannot read capture: {exc}") from None


_CHUNK_BYTES = 32 << 20   # the classic-pcap walker reads this much at a time (bounded memory)


def frames(pcap: str | Path) -> Iterator[tuple[float, int, bytes]]:
    """Yield ``(capture time, link type, frame bytes)`` for every record of a capture file."""
    try:
        with open(pcap, "rb") as handle:
            head = handle.read(24)
            if head[:4] in _PCAP_MAGIC and len(head) == 24:
                yield from _classic_records(handle, head)
                return
    except OSError as exc:
        raise ValueError(f"{pcap}: cannot read capture: {exc}") from None
    with open_pcap(pcap) as reader:   # pcapng, gzip, or an error message naming the file
        nano = getattr(reader, "nano", False)
        default_link = getattr(reader, "linktype", _LINK_ETHERNET)
        for frame, meta in reader:
            if hasattr(meta, "tsresol"):
                stamp = ((meta.tshigh << 32) + meta.tslow) / meta.tsresol
            else:
                stamp = meta.sec + meta.usec / (1e9 if nano else 1e6)
            yield stamp, getattr(meta, "linktype", default_link), frame


def _classic_records(handle, head: bytes) -> Iterator[tuple[float, int, bytes]]:
    """Records of a classic pcap file after its 24-byte header; a truncated last record ends it."""
    endian, tick = _PCAP_MAGIC[head[:4]]
    linktype = struct.unpack_from(endian + "I", head, 20)[0] & 0x0FFFFFFF  # upper bits: FCS info
    record = struct.Struct(endian + "IIII")
    data, offset = b"", 0
    while True:
        chunk = handle.read(_CHUNK_BYTES)
        if not chunk:
            return
        data, offset = data[offset:] + chunk, 0
        end = len(data)
        while offset + 16 <= end:
            seconds, fraction, caplen, _ = record.unpack_from(data, offset)
            if offset + 16 + caplen > end:
                break   # the record continues in the next chunk
            yield seconds + fraction * tick, linktype, data[offset + 16:offset + 16 + caplen]
            offset += 16 + caplen


def _ip_offset(frame: bytes, linktype: int) -> int | None:
    """Offset of the IP header in a frame of this link type, -1 if it holds no IP packet, None if
    the link type is not one decoded here."""
    if linktype == _LINK_ETHERNET:
        offset, ethertype = 14, _U16.unpack_from(frame, 12)[0] if len(frame) >= 14 else 0
        while ethertype in _VLAN_TAGS and len(frame) >= offset + 4:
            ethertype = _U16.unpack_from(frame, offset + 2)[0]
            offset += 4
    elif linktype == _LINK_SLL:
        offset, ethertype = 16, _U16.unpack_from(frame, 14)[0] if len(frame) >= 16 else 0
    elif linktype == _LINK_SLL2:
        offset, ethertype = 20, _U16.unpack_from(frame, 0)[0] if len(frame) >= 20 else 0
    elif linktype in (_LINK_RAW, _LINK_IPV4, _LINK_IPV6):
        return 0
    else:
        return None
    return offset if ethertype in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6) else -1


def _ip_by_scapy(frame: bytes, linktype: int) -> bytes | None:
    """The IP packet in a frame of a link type not decoded by hand, dissected by scapy (slow, rare)."""
    from scapy.all import conf   # noqa: PLC0415 (loads every layer, so only when needed)
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    layer_class = conf.l2types.get(linktype)
    if layer_class is None:
        raise ValueError(f"capture link type {linktype} is unknown (not even to scapy)")
    packet = layer_class(frame)
    ip = packet.getlayer(IP) or packet.getlayer(IPv6)
    return bytes(ip) if ip is not None else None


class IpPackets:
    """Iterate ``(capture time, source address, destination address, segment)`` over a capture.

    Only packets carrying ``protocol`` (:data:`TCP` or :data:`UDP`) in an unfragmented IPv4
    packet, or directly after the IPv6 header (assumption: no extension headers), are yielded.
    Addresses are packed (4 or 16 bytes; :func:`address_text` formats them); ``segment`` is the
    transport header and payload, cut where the IP length says the packet ends (Ethernet padding
    dropped). ``sport``/``dport``, if given, keep only segments from/to that port (checked before
    anything is copied). ``frames`` counts every record read, yielded or not.
    """

    def __init__(self, pcap: str | Path, protocol: int, sport: int | None = None,
                 dport: int | None = None) -> None:
        self.pcap, self.protocol, self.sport, self.dport = pcap, protocol, sport, dport
        self.frames = 0

    def _ports_match(self, frame: bytes, l4: int) -> bool:
        if len(frame) < l4 + 4:
            return False
        return ((self.sport is None or (frame[l4] << 8 | frame[l4 + 1]) == self.sport)
                and (self.dport is None or (frame[l4 + 2] << 8 | frame[l4 + 3]) == self.dport))

    def __iter__(self) -> Iterator[tuple[float, bytes, bytes, bytes]]:
        protocol, any_port = self.protocol, self.sport is None and self.dport is None
        for stamp, linktype, frame in frames(self.pcap):
            self.frames += 1
            start = _ip_offset(frame, linktype)
            if start is None:
                frame, start = _ip_by_scapy(frame, linktype) or b"", 0
            if start < 0 or len(frame) < start + 20:
                continue
            version = frame[start] >> 4
            if version == 4:
                first, total, proto = _IPV4_HEAD.unpack_from(frame, start)
                header = (first & 0x0F) * 4
                # A fragment holds no whole segment; a header longer than the packet is corrupt.
                if proto != protocol or _U16.unpack_from(frame, start + 6)[0] & 0x3FFF or header > total:
                    continue
                if not (any_port or self._ports_match(frame, start + header)):
                    continue
                yield (stamp, frame[start + 12:start + 16], frame[start + 16:start + 20],
                       frame[start + header:start + total])
            elif version == 6 and len(frame) >= start + 40 and frame[start + 6] == protocol:
                if not (any_port or self._ports_match(frame, start + 40)):
                    continue
                payload = _U16.unpack_from(frame, start + 4)[0]
                yield (stamp, frame[start + 8:start + 24], frame[start + 24:start + 40],
                       frame[start + 40:start + 40 + payload])


def address_text(packed: bytes) -> str:
    """Dotted IPv4 or colon IPv6 text of a packed address."""
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)
