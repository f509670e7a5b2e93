"""Clavis2 key extraction over UDP (reference.md §3; field layout of cqptoolkit's Clavis.h).

Datagrams are packed structs, **little-endian** (x86 host order, as the Bristol driver sends them):

* KeyRequest, 29 bytes: ``type u8 = 0 | keyIDhw u32 | keyIDlw u32 | keyLength u8 |
  keyRequestID u32 | requestingDeviceID u8 | reserved 10 bytes | crc32 u32``
* KeyResponse, 62 bytes: ``type u8 = 1 | keyIDhw u32 | keyIDlw u32 | keyLength u8 |
  keyRequestID u32 | errorStatus u8 | key 32 bytes | requestingDeviceID u8 | reserved 10 bytes |
  crc32 u32``

The CRC-32 (polynomial 0x04C11DB7, init 0xFFFFFFFF, reflected, final complement: the FDDI /
Ethernet CRC, ``zlib.crc32``) covers every byte before it. A key id of 0 asks for a new key;
the response carries its id, which the peer then asks for by id.

Server behaviour on bad input: a datagram of the wrong size or with a bad CRC is dropped and
counted (nothing in it can be trusted, not even the request id); a well-formed request with a
wrong type, a device id outside 1-12 or non-zero reserved bytes gets status 4 (invalid
request); key length 0 or above the key size gets status 3; unknown id status 2; no key status 1.

Trust boundary (decided: **confine, do not authenticate**). The Clavis2 format has no
authentication (the CRC is keyless) and its reserved bytes must stay zero to remain wire-compatible
with the device interface qiot emulates; a vendor's key-extraction port sits on a link private to
the KME host. qiot keeps that model: the service listens on a loopback address only
(:class:`ClavisServer` refuses any other), so in ``qiot run`` each QKD end's service is reachable
only from its own host's network namespace, i.e. by that host's KME; ``qiot kme`` is a
single-machine tool whose trust boundary is the machine (its loopback is shared by the machine's
users: run it on a machine you trust). The client side does not trust the loopback either:
:class:`ClavisClient` uses a *connected* UDP socket (bound to the local address that reaches the
service; the kernel delivers only datagrams from the service's exact address and port, which no
other local socket can hold or, without raw sockets, forge), draws each request id from the OS's
CSPRNG, and accepts a response only if it matches the request (request id, device id, key length,
key id), within one overall deadline. Anything else is ignored and counted.

Contract between the two ends (both can answer "new key" requests): **exactly one end of a link
hands out new keys** (the end whose KME issues: ``--issuing``); the other answers by-id requests
only. The ends learn of each other's hand-outs with the next block, so two ends both handing out
new keys could give the same key to two consumers within one block; a service started with
``new_keys=False`` refuses new-key requests (status 4) so a misconfigured consumer cannot open that
window.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass

from harness.qkd.keybuffer import KeyBuffer

DEFAULT_PORT = 5323                   # IDQ QKDSequence key port (cqptoolkit Clavis.h)
MAX_KEY_BYTES = 32                    # Clavis.h MaxKeyLength
MAX_DEVICE_ID = 12                    # Clavis.h MAX_DEV_ID
REQUEST = struct.Struct("<BIIBIB10s")            # + crc32 u32 -> 29 bytes
RESPONSE = struct.Struct("<BIIBIB32sB10s")       # + crc32 u32 -> 62 bytes
REQUEST_SIZE = REQUEST.size + 4
RESPONSE_SIZE = RESPONSE.size + 4
TYPE_REQUEST, TYPE_RESPONSE = 0, 1
SUCCESS, NO_MORE_KEYS, NO_SUCH_KEY, WRONG_LENGTH, INVALID_REQUEST = range(5)
STATUS_TEXT = {SUCCESS: "success", NO_MORE_KEYS: "no more keys", NO_SUCH_KEY: "key id does not exist",
               WRONG_LENGTH: "wrong key length", INVALID_REQUEST: "invalid key request"}


def crc32(data: bytes) -> int:
    """CRC-32 as used by the Clavis datagrams."""
    return zlib.crc32(data) & 0xFFFFFFFF


def _seal(body: bytes) -> bytes:
    return body + struct.pack("<I", crc32(body))


@dataclass(frozen=True)
class KeyRequest:
    """A decoded KeyRequest datagram."""

    key_id: int
    key_length: int
    request_id: int
    device_id: int
    type: int = TYPE_REQUEST
    reserved: bytes = bytes(10)

    def encode(self) -> bytes:
        """The 29-byte datagram."""
        return _seal(REQUEST.pack(self.type, self.key_id >> 32, self.key_id & 0xFFFFFFFF, self.key_length,
                                  self.request_id, self.device_id, self.reserved))


@dataclass(frozen=True)
class KeyResponse:
    """A decoded KeyResponse datagram."""

    key_id: int
    key_length: int
    request_id: int
    status: int
    key: bytes
    device_id: int

    def encode(self) -> bytes:
        """The 62-byte datagram."""
        return _seal(RESPONSE.pack(TYPE_RESPONSE, self.key_id >> 32, self.key_id & 0xFFFFFFFF, self.key_length,
                                   self.request_id, self.status, self.key.ljust(MAX_KEY_BYTES, b"\0"),
                                   self.device_id, bytes(10)))


def decode_request(datagram: bytes) -> KeyRequest | None:
    """Parse a request; None if the size or CRC is wrong (the caller drops it)."""
    if len(datagram) != REQUEST_SIZE or crc32(datagram[:-4]) != struct.unpack_from("<I", datagram, REQUEST.size)[0]:
        return None
    kind, hw, lw, length, request_id, device, reserved = REQUEST.unpack_from(datagram)
    return KeyRequest((hw << 32) | lw, length, request_id, device, kind, reserved)


def decode_response(datagram: bytes) -> KeyResponse | None:
    """Parse a response; None if the size, type or CRC is wrong."""
    if len(datagram) != RESPONSE_SIZE or crc32(datagram[:-4]) != struct.unpack_from("<I", datagram, RESPONSE.size)[0]:
        return None
    kind, hw, lw, length, request_id, status, key, device, _ = RESPONSE.unpack_from(datagram)
    if kind != TYPE_RESPONSE:
        return None
    return KeyResponse((hw << 32) | lw, length, request_id, status, key, device)


def answer(request: KeyRequest, buffer: KeyBuffer, new_keys: bool = True) -> KeyResponse:
    """The response a Clavis key service gives to a well-formed request.

    ``new_keys=False``: this end only answers by-id requests (see the contract in the module docstring).
    """
    def reply(status: int, key_id: int = request.key_id, key: bytes = b"") -> KeyResponse:
        return KeyResponse(key_id, request.key_length, request.request_id, status, key, request.device_id)

    if request.type != TYPE_REQUEST or not 1 <= request.device_id <= MAX_DEVICE_ID or any(request.reserved):
        return reply(INVALID_REQUEST)
    if not 1 <= request.key_length <= min(MAX_KEY_BYTES, buffer.key_bits // 8):
        return reply(WRONG_LENGTH)
    if request.key_id == 0:
        if not new_keys:
            return reply(INVALID_REQUEST)
        taken = buffer.take_new()
        if taken is None:
            return reply(NO_MORE_KEYS)
        return reply(SUCCESS, taken[0], taken[1][: request.key_length])
    key = buffer.fetch(request.key_id)
    if key is None:
        return reply(NO_SUCH_KEY)
    return reply(SUCCESS, request.key_id, key[: request.key_length])


class ClavisServer:
    """UDP key-extraction service over a :class:`KeyBuffer`, in a background thread.

    ``address`` must be a loopback address (the trust boundary in the module docstring);
    ``new_keys=False`` makes this end answer by-id requests only.
    """

    def __init__(self, buffer: KeyBuffer, address: tuple[str, int] = ("127.0.0.1", DEFAULT_PORT),
                 new_keys: bool = True) -> None:
        try:
            loopback = ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the Clavis key service listens on loopback only (confined to the KME's host), "
                             f"got {address[0]!r}")
        self.buffer = buffer
        self.new_keys = new_keys
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="clavis-udp", daemon=True)

    def start(self) -> "ClavisServer":
        """Start serving; returns self."""
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                datagram, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                self.counts["socket_error"] += 1
                continue
            try:
                self.handle(datagram, peer)
            except Exception:  # never let one datagram stop the service
                self.counts["internal_error"] += 1

    def handle(self, datagram: bytes, peer) -> None:
        """Answer or drop one datagram, counting what happened."""
        if len(datagram) != REQUEST_SIZE:
            self.counts["dropped_bad_size"] += 1
            return
        request = decode_request(datagram)
        if request is None:
            self.counts["dropped_bad_crc"] += 1
            return
        response = answer(request, self.buffer, self.new_keys)
        self.counts["status_" + STATUS_TEXT[response.status].replace(" ", "_")] += 1
        self.sock.sendto(response.encode(), peer)

    def stop(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()


class ClavisError(RuntimeError):
    """A key request failed; ``status`` is the Clavis error status (None for a timeout)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClavisTimeout(ClavisError, TimeoutError):
    """No valid response within the timeout."""


class ClavisClient:
    """Key Extraction Application side: asks a Clavis service for keys over UDP.

    One request at a time per client (the caller pools clients for concurrency). ``ignored``
    counts datagrams dropped because they were not the answer to the pending request.
    """

    def __init__(self, address: tuple[str, int], device_id: int = 1, timeout_s: float = 5.0) -> None:
        if not 1 <= device_id <= MAX_DEVICE_ID:
            raise ValueError(f"device_id must be 1..{MAX_DEVICE_ID}, got {device_id}")
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.ignored = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # connect(): binds to the local address the route to the service uses and makes the
            # kernel drop datagrams from any other address or port.
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        self.address = self.sock.getpeername()
        self.local_address = self.sock.getsockname()

    def request_new_key(self, length: int = 32) -> tuple[int, bytes]:
        """A new key and its 64-bit id."""
        response = self._exchange(0, length)
        return response.key_id, response.key[:response.key_length]

    def request_key(self, key_id: int, length: int = 32) -> bytes:
        """The key with this id (as the peer received it from a new-key request)."""
        if not 0 < key_id < 1 << 64:
            raise ValueError("key_id must be a positive 64-bit integer")
        return self._exchange(key_id, length).key[:length]

    def _matches(self, response: KeyResponse, request: KeyRequest) -> bool:
        if response.request_id != request.request_id or response.device_id != request.device_id:
            return False
        if response.key_length != request.key_length:
            return False
        if response.status != SUCCESS:  # an error answer repeats the id asked for
            return response.key_id == request.key_id
        return response.key_id == request.key_id if request.key_id else response.key_id != 0

    def _exchange(self, key_id: int, length: int) -> KeyResponse:
        request = KeyRequest(key_id, length, secrets.randbits(32), self.device_id)
        self.sock.send(request.encode())
        deadline = time.monotonic() + self.timeout_s
        while True:  # skip stale, corrupt or foreign datagrams until ours arrives or time runs out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClavisTimeout(None, f"no response from {self.address} within {self.timeout_s} s")
            self.sock.settimeout(remaining)
            try:
                datagram, sender = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            response = decode_response(datagram)
            if sender != self.address or response is None or not self._matches(response, request):
                self.ignored += 1
                continue
            if response.status != SUCCESS:
                raise ClavisError(response.status, STATUS_TEXT.get(response.status, f"status {response.status}"))
            return response

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
