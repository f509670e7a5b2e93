"""Where a KME gets its keys: its QKD end's key buffer, behind the small :class:`KeySupplier` ABC.

The Clavis2 key-extraction contract (helpers' brief, reference.md section 3) is asymmetric: Bob's
end hands out *new* keys and names them by a 64-bit id (``request_new_key``); Alice's end returns
the key with a given id (``request_key``). The KME at the issuing end calls :meth:`new_key`, the
other one :meth:`key_by_id`.

Implementations: :class:`ClavisSupplier` (UDP to a Clavis2-like key-extraction service) and an
in-memory pair drawn from one :class:`SharedKeyBuffer`, which :class:`EmulatedQkdLink` fills at a
given secret-key rate (for pure tests and for ``qiot kme`` when no Clavis service runs).
"""

from __future__ import annotations

import abc
import collections
import os
import threading
from typing import Callable

import numpy as np


class NoKeysAvailable(RuntimeError):
    """The key buffer is empty (Clavis status 1): the KME answers 503."""


class UnknownKey(KeyError):
    """No key with that id at this end (Clavis status 2)."""


class SupplierError(RuntimeError):
    """Any other failure of the key source (timeouts, invalid request, wrong length)."""


class KeySupplier(abc.ABC):
    """One QKD end's key buffer as a KME sees it."""

    #: True at the end that issues new key ids (Bob's, in the Clavis contract).
    issues_keys: bool = True

    @abc.abstractmethod
    def new_key(self, length: int) -> tuple[int, bytes]:
        """Take a fresh key of ``length`` bytes from the buffer: return (64-bit id, key)."""

    @abc.abstractmethod
    def key_by_id(self, key_id: int, length: int) -> bytes:
        """Return the ``length``-byte key with id ``key_id`` (issued at the other end)."""

    def stored_key_count(self) -> int | None:
        """Keys currently in the buffer, or None when the source cannot tell (Clavis cannot)."""
        return None


class SharedKeyBuffer:
    """The key buffer both QKD ends hold identical copies of, modelled once in memory.

    When full, the oldest key is replaced by the new one (paper: "When the KB is full, the system
    replaces the keys with newly generated ones"). Keys handed out by :meth:`take_new` stay
    retrievable by id for the other end until it fetches them once (:meth:`take_by_id`).
    """

    def __init__(self, capacity: int, key_bytes: int = 32):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self.key_bytes = key_bytes
        self._fresh: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._issued: dict[int, bytes] = {}
        self._next_id = 1
        self._lock = threading.Lock()

    def add(self, key: bytes) -> int:
        """Append one key produced by the link; return its id."""
        if len(key) != self.key_bytes:
            raise ValueError(f"key must be {self.key_bytes} bytes, got {len(key)}")
        with self._lock:
            key_id = self._next_id
            self._next_id += 1
            self._fresh[key_id] = key
            while len(self._fresh) > self.capacity:
                self._fresh.popitem(last=False)
            return key_id

    def take_new(self, length: int) -> tuple[int, bytes]:
        """Remove the oldest fresh key; it stays fetchable by id for the peer end."""
        self._check_length(length)
        with self._lock:
            if not self._fresh:
                raise NoKeysAvailable("key buffer empty")
            key_id, key = self._fresh.popitem(last=False)
            self._issued[key_id] = key[:length]
            return key_id, key[:length]

    def take_by_id(self, key_id: int, length: int) -> bytes:
        """Return (once) the key issued under ``key_id``."""
        self._check_length(length)
        with self._lock:
            key = self._issued.pop(key_id, None)
        if key is None or len(key) != length:
            raise UnknownKey(key_id)
        return key

    def __len__(self) -> int:
        with self._lock:
            return len(self._fresh)

    def _check_length(self, length: int) -> None:
        if not 1 <= length <= self.key_bytes:
            raise SupplierError(f"key length must be 1..{self.key_bytes} bytes, got {length}")


class BufferSupplier(KeySupplier):
    """One end of a :class:`SharedKeyBuffer`: ``issuing=True`` for Bob's end, False for Alice's."""

    def __init__(self, buffer: SharedKeyBuffer, issuing: bool):
        self.buffer = buffer
        self.issues_keys = issuing

    def new_key(self, length: int) -> tuple[int, bytes]:
        if not self.issues_keys:
            raise SupplierError("this end does not issue new keys")
        return self.buffer.take_new(length)

    def key_by_id(self, key_id: int, length: int) -> bytes:
        return self.buffer.take_by_id(key_id, length)

    def stored_key_count(self) -> int | None:
        return len(self.buffer)


def key_generator(seed: int | None, key_bytes: int) -> Callable[[], bytes]:
    """Key bytes for an emulated link: seeded (reproducible runs) or from the OS if ``seed`` is None."""
    if seed is None:
        return lambda: os.urandom(key_bytes)
    rng = np.random.default_rng(seed)
    return lambda: rng.bytes(key_bytes)


class EmulatedQkdLink:
    """Fills a :class:`SharedKeyBuffer` at ``rate_bps`` secret bits per second of wall time.

    ``prefill`` keys are added at start (a link that has been running). The rate is a setting
    (e.g. the paper's 1880 bit/s HPN average, reference.md section 1), not a figure of this class.
    """

    def __init__(self, buffer: SharedKeyBuffer, rate_bps: float, seed: int | None = None,
                 prefill: int = 0):
        if rate_bps < 0:
            raise ValueError(f"rate_bps must be >= 0, got {rate_bps!r}")
        self.buffer = buffer
        self.rate_bps = rate_bps
        self._make = key_generator(seed, buffer.key_bytes)
        for _ in range(min(prefill, buffer.capacity)):
            buffer.add(self._make())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EmulatedQkdLink":
        """Start producing keys in a daemon thread."""
        if self.rate_bps > 0:
            self._thread = threading.Thread(target=self._run, name="qkd-link", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        period = self.buffer.key_bytes * 8 / self.rate_bps  # seconds per key
        while not self._stop.wait(period):
            self.buffer.add(self._make())

    def stop(self) -> None:
        """Stop producing keys."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)

    def suppliers(self) -> tuple[BufferSupplier, BufferSupplier]:
        """(Alice's end, Bob's end): Bob's issues new keys, Alice's fetches them by id."""
        return BufferSupplier(self.buffer, issuing=False), BufferSupplier(self.buffer, issuing=True)


class ClavisSupplier(KeySupplier):
    """A Clavis2-like key-extraction service over UDP (``harness.qkd.clavis.ClavisClient``).

    A pool of clients (one per concurrent request: a UDP request/response exchange is not safe to
    interleave), shared across threads because the server makes a thread per SAE connection.
    Clavis statuses map to: 1 -> :class:`NoKeysAvailable`, 2 -> :class:`UnknownKey`, other ->
    :class:`SupplierError`.
    """

    def __init__(self, address: tuple[str, int], issuing: bool, device_id: int = 1,
                 timeout_s: float = 5.0, count: Callable[[], int] | None = None):
        from harness.qkd import clavis  # imported lazily: written in parallel, optional for tests
        self._clavis = clavis
        self.address = address
        self.issues_keys = issuing
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._idle: list = []
        self._lock = threading.Lock()
        self._count = count  # the Clavis protocol has no count; an in-process buffer can give one

    def stored_key_count(self) -> int | None:
        return self._count() if self._count else None

    def _call(self, method: str, *args):
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._clavis.ClavisClient(self.address, device_id=self.device_id,
                                               timeout_s=self.timeout_s)
        reusable = True
        try:
            return getattr(client, method)(*args)
        except self._clavis.ClavisError as exc:
            status = getattr(exc, "status", None)
            reusable = status is not None  # after a timeout the late answer may still arrive
            if status == 1:
                raise NoKeysAvailable("Clavis: no more keys") from None
            if status == 2:
                raise UnknownKey(args[0] if args else None) from None
            raise SupplierError(f"Clavis status {status}") from None
        except OSError as exc:
            reusable = False
            raise SupplierError(f"Clavis at {self.address[0]}:{self.address[1]}: {exc}") from None
        finally:
            if reusable:
                with self._lock:
                    self._idle.append(client)
            else:
                client.close()

    def new_key(self, length: int) -> tuple[int, bytes]:
        return self._call("request_new_key", length)

    def key_by_id(self, key_id: int, length: int) -> bytes:
        return self._call("request_key", key_id, length)
