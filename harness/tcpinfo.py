"""What a TCP connection really carried, from the kernel's ``TCP_INFO`` (Linux).

A device's radio time depends on the bytes and frames it really transmitted (payload, TLS records,
retransmissions, pure ACKs), not on what the application meant to send. Linux reports them per
socket in ``struct tcp_info`` (``linux/tcp.h``): ``tcpi_bytes_sent`` (payload bytes sent, including
retransmissions, since 4.19), ``tcpi_bytes_received`` and ``tcpi_segs_out`` (every segment sent,
SYN and ACKs included).

Why hand-written: Python exposes ``getsockopt(TCP_INFO)`` only as raw bytes and no library on PyPI
decodes the modern structure; the offsets below are the kernel ABI's, which only ever appends fields.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

_TCP_INFO_LEN = 232          # through tcpi_bytes_retrans and a little beyond
_BYTES_RECEIVED_AT = 128     # __u64 tcpi_bytes_received
_SEGS_OUT_AT = 136           # __u32 tcpi_segs_out, then tcpi_segs_in
_BYTES_SENT_AT = 200         # __u64 tcpi_bytes_sent


@dataclass(frozen=True)
class TcpCounters:
    """Payload bytes sent and received, and segments sent, over a connection's life so far."""

    bytes_sent: int = 0
    bytes_received: int = 0
    segments_out: int = 0

    def __add__(self, other: "TcpCounters") -> "TcpCounters":
        return TcpCounters(self.bytes_sent + other.bytes_sent, self.bytes_received + other.bytes_received,
                           self.segments_out + other.segments_out)


def tcp_counters(sock: socket.socket | None) -> TcpCounters:
    """The counters of a connected TCP socket (zeros if there is none or it is closed)."""
    if sock is None or sock.fileno() < 0:
        return TcpCounters()
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return TcpCounters()
    if len(raw) < _BYTES_SENT_AT + 8:  # a kernel older than 4.19 has no tcpi_bytes_sent
        return TcpCounters()
    (received,) = struct.unpack_from("=Q", raw, _BYTES_RECEIVED_AT)
    (segments,) = struct.unpack_from("=I", raw, _SEGS_OUT_AT)
    (sent,) = struct.unpack_from("=Q", raw, _BYTES_SENT_AT)
    return TcpCounters(sent, received, segments)
