"""Where a KME gets its keys: its QKD end's key buffer, behind the small :class:`KeySupplier` ABC.

The Clavis2 key-extraction contract (helpers' brief, reference.md section 3) is asymmetric: one end
of the link (the *issuing* one) hands out *new* keys and names them by a 64-bit id
(``request_new_key``); the other end returns the key with a given id (``request_key``). The KME at
the issuing end calls :meth:`new_key`, the other one :meth:`key_by_id`; the issuing KME also reads
its own end by id, to check that a key it holds has not been evicted meanwhile.

The implementation is :class:`ClavisSupplier` (UDP to a Clavis2-like key-extraction service): the
KMEs of ``qiot run`` and of ``qiot kme`` both use it, against the QKD ends' services
(:class:`harness.qkd.clavis.ClavisServer`). Tests use the same class against real services.
"""

from __future__ import annotations

import abc
import threading
from typing import Callable

from harness.qkd import clavis


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


class ClavisSupplier(KeySupplier):
    """A Clavis2-like key-extraction service over UDP (``harness.qkd.clavis.ClavisClient``).

    A pool of clients (one per concurrent request: a UDP request/response exchange is not safe to
    interleave), shared across threads because the server makes a thread per SAE connection.
    Clavis statuses map to: 1 -> :class:`NoKeysAvailable`, 2 -> :class:`UnknownKey`, other ->
    :class:`SupplierError`.
    """

    def __init__(self, address: tuple[str, int], issuing: bool, device_id: int = 1,
                 timeout_s: float = 5.0, count: Callable[[], int] | None = None):
        self.address = address
        self.issues_keys = issuing
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._idle: list = []
        self._lock = threading.Lock()
        self._count = count  # the Clavis protocol has no count; an in-process buffer can give one

    def stored_key_count(self) -> int | None:
        return self._count() if self._count else None  # the count may itself be None (unknown)

    def _call(self, method: str, *args):
        with self._lock:
            client = self._idle.pop() if self._idle else None
        reusable = True
        try:
            if client is None:
                client = clavis.ClavisClient(self.address, device_id=self.device_id, timeout_s=self.timeout_s)
            return getattr(client, method)(*args)
        except clavis.ClavisError as exc:
            # Still reusable after a timeout: a late answer carries another request id and is ignored.
            if exc.status == 1:
                raise NoKeysAvailable("Clavis: no more keys") from None
            if exc.status == 2:
                raise UnknownKey(args[0] if args else None) from None
            raise SupplierError(f"Clavis at {self.address[0]}:{self.address[1]}: {exc}") from None
        except OSError as exc:
            reusable = False
            raise SupplierError(f"Clavis at {self.address[0]}:{self.address[1]}: {exc}") from None
        finally:
            if client is not None:
                if reusable:
                    with self._lock:
                        self._idle.append(client)
                else:
                    client.close()

    def new_key(self, length: int) -> tuple[int, bytes]:
        return self._call("request_new_key", length)

    def key_by_id(self, key_id: int, length: int) -> bytes:
        return self._call("request_key", key_id, length)
