"""The classical channel between Alice and Bob: TCP frames authenticated with HMAC-SHA256.

Frame on the wire: ``u32 length | 32-byte tag | body`` (little-endian), where
``body = u64 sequence | u32 header length | JSON header | array bytes`` and the tag is
HMAC-SHA256 over ``sender role | body`` with the pre-shared key. Each direction counts its own
sequence numbers from 0, so a replayed, reordered, reflected or altered frame fails the check
and raises :class:`ChannelError`. The JSON header holds the message kind, small fields and the
dtype/shape of each numpy array that follows in raw little-endian bytes.

Per-message cost matters (a Cascade block is dozens of small round trips): each end keeps an HMAC
already keyed and fed with the sender's role and copies it per frame, a frame leaves in one
``sendmsg`` (one TCP segment when small, no join of large arrays), and is read as a 4-byte length
plus the tag and body received straight into one buffer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import socket
import struct
from typing import Any

import numpy as np

MAX_FRAME_BYTES = 256 * 1024 * 1024   # refuse absurd lengths (assumption: far above any block)
_ALLOWED_DTYPES = {"|u1", "<u4", "<i4", "<i8", "<u8", "<f8", "|b1"}


class ChannelError(ConnectionError):
    """The peer closed the channel, or a frame failed authentication or parsing."""


class ChannelClosed(ChannelError):
    """The peer closed the channel (an orderly end when the run is being shut down)."""


class Channel:
    """One end of the authenticated classical channel over a connected TCP socket."""

    def __init__(self, sock: socket.socket, key: bytes, role: str) -> None:
        if role not in ("alice", "bob"):
            raise ValueError(f"role must be alice or bob, got {role!r}")
        self.sock = sock
        self.key = key
        self.role = role
        self.peer = "bob" if role == "alice" else "alice"
        self.sent_seq = 0
        self.recv_seq = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._send_mac = hmac.new(key, role.encode(), hashlib.sha256)
        self._recv_mac = hmac.new(key, self.peer.encode(), hashlib.sha256)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, kind: str, fields: dict[str, Any] | None = None, **arrays: np.ndarray) -> None:
        """Send one message: a kind, JSON-able fields and named numpy arrays."""
        specs, blobs = [], []
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            array = array.astype(array.dtype.newbyteorder("<"), copy=False)
            specs.append([name, array.dtype.str, list(array.shape)])
            blobs.append(memoryview(array.reshape(-1).view(np.uint8)))
        header = json.dumps({"kind": kind, "fields": fields or {}, "arrays": specs}).encode()
        parts = [memoryview(struct.pack("<QI", self.sent_seq, len(header))), memoryview(header), *blobs]
        mac = self._send_mac.copy()
        for part in parts:
            mac.update(part)
        length = sum(part.nbytes for part in parts)
        self._send_all([memoryview(struct.pack("<I", length)), memoryview(mac.digest()), *parts])
        self.sent_seq += 1
        self.bytes_sent += 36 + length

    def _send_all(self, views: list[memoryview]) -> None:
        """Send the byte views in order, in as few system calls as the socket allows."""
        views = [view for view in views if view.nbytes]
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def recv(self, expect: str | None = None) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        """Receive one message; check kind against ``expect`` if given."""
        (length,) = struct.unpack("<I", self._read(4))
        if length > MAX_FRAME_BYTES or length < 12:
            raise ChannelError(f"frame length {length} out of range")
        frame = self._read(32 + length)
        tag, body = frame[:32], memoryview(frame)[32:]
        self.bytes_received += 36 + length
        mac = self._recv_mac.copy()
        mac.update(body)
        if not hmac.compare_digest(tag, mac.digest()):
            raise ChannelError("classical message failed authentication (HMAC)")
        seq, header_len = struct.unpack_from("<QI", body)
        if seq != self.recv_seq:
            raise ChannelError(f"classical message out of sequence ({seq}, expected {self.recv_seq})")
        self.recv_seq += 1
        try:
            header = json.loads(bytes(body[12:12 + header_len]))
            arrays, offset = {}, 12 + header_len
            for name, dtype, shape in header["arrays"]:
                if dtype not in _ALLOWED_DTYPES:
                    raise ValueError(f"dtype {dtype}")
                count = math.prod(int(d) for d in shape)
                if count < 0 or any(int(d) < 0 for d in shape):
                    raise ValueError(f"shape {shape}")
                size = count * np.dtype(dtype).itemsize
                if offset + size > len(body):
                    raise ValueError("array runs past the frame")
                arrays[name] = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
                offset += size
            kind, fields = header["kind"], header["fields"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ChannelError(f"malformed classical message: {exc}") from None
        if expect is not None and kind != expect:
            raise ChannelError(f"expected {expect!r} from {self.peer}, got {kind!r}")
        return kind, fields, arrays

    def _read(self, count: int) -> bytearray:
        buffer = bytearray(count)
        view, got = memoryview(buffer), 0
        while got < count:
            chunk = self.sock.recv_into(view[got:], min(count - got, 1 << 22))
            if not chunk:
                raise ChannelClosed(f"{self.peer} closed the classical channel")
            got += chunk
        return buffer

    def close(self) -> None:
        """Close the socket (idempotent)."""
        try:
            self.sock.close()
        except OSError:
            pass


def parse_address(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``"host:port"`` (or ``"host"`` with a default port) -> (host, port); ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"address {text!r} needs a port (host:port)")
        return text, default_port
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"address {text!r}: port is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"address {text!r}: port out of range")
    return host or "127.0.0.1", number
