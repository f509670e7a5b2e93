"""The key-management core of one KME: status, enc_keys, dec_keys, and KME-to-KME coordination.

No HTTP here: :mod:`harness.kme.server` puts this behind ETSI GS QKD 014 over mutual TLS.

Coordination (both KMEs can serve enc_keys, whichever side the master SAE is on):

* master SAE at the **issuing** end (Bob's, whose key source hands out new key ids): the KME takes
  ``number`` fresh keys from its source, tells the peer KME ``reserve(master, slave, size, ids)``
  and only then delivers them; the peer fetches the key bytes from its own QKD end by id when the
  slave SAE calls dec_keys.
* master SAE at the **fetching** end (Alice's): the KME asks the peer ``issue(master, slave,
  number, size)``; the issuing KME takes fresh keys, keeps them for the slave's dec_keys and
  returns only their ids; this KME fetches the bytes by id from its own QKD end.

Key bytes never travel between KMEs: both ends hold them from QKD. Every key is delivered at most
once on each side and only to the SAEs named when it was issued (dec_keys from anyone else: 401).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from . import etsi, keyids
from .suppliers import KeySupplier, NoKeysAvailable, SupplierError, UnknownKey

log = logging.getLogger(__name__)


class PeerLink(Protocol):
    """How a KME talks to its peer KME (implemented over mTLS in :mod:`harness.kme.client`)."""

    def issue(self, master: str, slave: str, number: int, size: int) -> list[str]:
        """Ask the issuing peer for ``number`` new key ids reserved for ``slave``."""

    def reserve(self, master: str, slave: str, size: int, key_ids: list[str]) -> None:
        """Tell the peer that ``key_ids`` were issued to ``master`` for ``slave``."""

    def stored_key_count(self) -> int:
        """The peer's stored key count (a fetching KME reports it in its status)."""


@dataclass
class _Reservation:
    master: str
    slave: str
    size: int
    key: bytes | None  # the key; None while this QKD end has not distilled it yet (fetched by id later)


class KeyManager:
    """One KME. ``supplier`` is its QKD end; ``peer`` the link to the other KME (None: none yet)."""

    def __init__(self, kme_id: str, peer_kme_id: str, supplier: KeySupplier,
                 peer: PeerLink | None = None, limits: etsi.KmeLimits | None = None,
                 attached_saes: frozenset[str] | None = None, prefetch: int = 0,
                 qkd_key_bytes: int = 32):
        self.kme_id = kme_id
        self.peer_kme_id = peer_kme_id
        self.supplier = supplier
        self.peer = peer
        self.limits = limits or etsi.KmeLimits()
        self.attached_saes = attached_saes
        self.qkd_key_bytes = qkd_key_bytes  # every key is taken whole from QKD; sizes are prefixes
        self._pending: dict[str, _Reservation] = {}
        self._pool: deque[tuple[int, bytes]] = deque()
        self._lock = threading.Lock()
        self._prefetch = prefetch
        self._stop = threading.Event()
        if prefetch and supplier.issues_keys:
            threading.Thread(target=self._prefetch_loop, name="kme-prefetch", daemon=True).start()

    def close(self) -> None:
        """Stop the prefetch thread."""
        self._stop.set()

    # --- ETSI endpoints -------------------------------------------------------------------------
    def _check_caller(self, sae_id: str) -> None:
        if self.attached_saes is not None and sae_id not in self.attached_saes:
            raise etsi.unauthorized()

    def status(self, master: str, slave: str) -> dict[str, Any]:
        """Status (spec section 6.1) of the link from ``master`` (the caller) to ``slave``."""
        self._check_caller(master)
        return {"source_KME_ID": self.kme_id, "target_KME_ID": self.peer_kme_id,
                "master_SAE_ID": master, "slave_SAE_ID": slave,
                "key_size": self.limits.key_size, "stored_key_count": self.stored_key_count(),
                "max_key_count": self.limits.max_key_count,
                "max_key_per_request": self.limits.max_key_per_request,
                "max_key_size": self.limits.max_key_size, "min_key_size": self.limits.min_key_size,
                "max_SAE_ID_count": self.limits.max_SAE_ID_count}

    def stored_key_count(self) -> int:
        """Fresh keys available: the source's count if it reports one, plus prefetched keys."""
        if not self.supplier.issues_keys and self.peer is not None:
            try:
                return self.peer.stored_key_count()
            except etsi.EtsiError:
                return 0
        count = self.supplier.stored_key_count()
        with self._lock:
            pooled = len(self._pool)
        return pooled + (count or 0)

    def enc_keys(self, master: str, slave: str, request: etsi.KeyRequest) -> dict[str, Any]:
        """Get key (spec section 5.2): deliver new keys to ``master`` for use with ``slave``."""
        self._check_caller(master)
        number, size = etsi.check_request(request, self.limits)
        if slave == master:
            raise etsi.bad_request("slave_SAE_ID shall differ from the master SAE", slave_SAE_ID=slave)
        if self.peer is None:
            raise etsi.unavailable("peer KME not configured")
        if self.supplier.issues_keys:
            fresh = self._take_fresh(number)
            ids = [keyids.uuid_for(cid) for cid, _ in fresh]
            try:
                self.peer.reserve(master, slave, size, ids)
            except etsi.EtsiError:
                # The keys are spent at the source but unusable: never deliver half a pair.
                raise etsi.unavailable("peer KME did not acknowledge the keys") from None
            keys = [(kid, key[: size // 8]) for kid, (_, key) in zip(ids, fresh)]
        else:
            try:
                ids = self.peer.issue(master, slave, number, size)
            except etsi.EtsiError as exc:
                if exc.status == 400:
                    raise
                raise etsi.unavailable(exc.message or "peer KME could not issue keys") from None
            keys = [(kid, self._fetch_by_id(kid, size)) for kid in ids]
        log.info("enc_keys %s -> %s: %d key(s) of %d bit", master, slave, len(keys), size)
        return etsi.key_container(keys)

    def dec_keys(self, slave: str, master: str, key_ids: list[str]) -> dict[str, Any]:
        """Get key with key IDs (spec section 5.3): only the slave SAE named at issue may have them."""
        self._check_caller(slave)
        for kid in key_ids:
            try:
                keyids.clavis_id_for(kid)
            except keyids.KeyIdError:
                raise etsi.bad_request("key_ID is not a valid key ID", key_ID=kid) from None
        if len(set(key_ids)) != len(key_ids):
            raise etsi.bad_request("key_ID given more than once")
        with self._lock:
            found = [self._pending.get(kid) for kid in key_ids]
            missing = [kid for kid, res in zip(key_ids, found) if res is None]
            if missing:
                raise etsi.bad_request("key_ID not found", key_ID=missing[0])
            if any(res.slave != slave or res.master != master for res in found):
                raise etsi.unauthorized()
        # Keys this end had not distilled when they were reserved are fetched now; if one is still
        # missing (503), every reservation stays, so the slave can simply ask again.
        for kid, res in zip(key_ids, found):
            if res.key is None:
                res.key = self._fetch_by_id(kid, res.size)
        with self._lock:
            if any(self._pending.get(kid) is not res for kid, res in zip(key_ids, found)):
                raise etsi.bad_request("key_ID not found (delivered meanwhile)")
            for kid in key_ids:  # all or nothing: remove them together, under the lock
                del self._pending[kid]
        keys = [(kid, res.key[: res.size // 8]) for kid, res in zip(key_ids, found)]
        log.info("dec_keys %s <- %s: %d key(s)", slave, master, len(keys))
        return etsi.key_container(keys)

    # --- KME-to-KME endpoints -------------------------------------------------------------------
    def peer_issue(self, master: str, slave: str, number: int, size: int) -> list[str]:
        """The fetching peer asks for new keys: take them, keep them for ``slave``, return ids."""
        if not self.supplier.issues_keys:
            raise etsi.bad_request("this KME does not issue keys")
        number, size = etsi.check_request(etsi.KeyRequest(number=number, size=size), self.limits)
        fresh = self._take_fresh(number)
        ids = [keyids.uuid_for(cid) for cid, _ in fresh]
        with self._lock:
            for kid, (_, key) in zip(ids, fresh):
                self._pending[kid] = _Reservation(master, slave, size, key)
        return ids

    def peer_reserve(self, master: str, slave: str, size: int, key_ids: list[str]) -> None:
        """The issuing peer reports keys issued to ``master`` for ``slave``: remember them.

        The key bytes are taken from this end's QKD buffer right away: a full buffer replaces its
        oldest keys with new ones (paper), and an issued key is among the oldest, so waiting for the
        slave's dec_keys could find it gone. A key this end has not distilled yet (its block is still
        being processed) is fetched when dec_keys asks for it.
        """
        for kid in key_ids:
            try:
                keyids.clavis_id_for(kid)
            except keyids.KeyIdError:
                raise etsi.bad_request("key_ID is not a valid key ID", key_ID=kid) from None
        keys = {}
        for kid in key_ids:
            try:
                keys[kid] = self._fetch_by_id(kid, size)
            except etsi.EtsiError:
                keys[kid] = None
        with self._lock:
            for kid in key_ids:
                self._pending[kid] = _Reservation(master, slave, size, keys[kid])

    # --- key source -----------------------------------------------------------------------------
    def _take_fresh(self, number: int) -> list[tuple[int, bytes]]:
        taken: list[tuple[int, bytes]] = []
        with self._lock:
            while self._pool and len(taken) < number:
                taken.append(self._pool.popleft())
        try:
            while len(taken) < number:
                taken.append(self.supplier.new_key(self.qkd_key_bytes))
        except (NoKeysAvailable, SupplierError) as exc:
            with self._lock:  # not enough: return what we took so no key is lost
                self._pool.extendleft(reversed(taken))
            if isinstance(exc, NoKeysAvailable):
                raise etsi.unavailable("not enough keys in the key buffer") from None
            raise etsi.unavailable("key source unavailable") from None
        return taken

    def _fetch_by_id(self, key_id: str, size: int) -> bytes:
        try:
            return self.supplier.key_by_id(keyids.clavis_id_for(key_id), self.qkd_key_bytes)[: size // 8]
        except UnknownKey:
            raise etsi.unavailable("key not available at this QKD end") from None
        except (NoKeysAvailable, SupplierError):
            raise etsi.unavailable("key source unavailable") from None

    def _prefetch_loop(self) -> None:
        # Why: a Clavis source cannot report its buffer, so keys pulled ahead give status a count.
        while not self._stop.wait(0.2):
            try:
                while len(self._pool) < self._prefetch:
                    item = self.supplier.new_key(self.qkd_key_bytes)
                    with self._lock:
                        self._pool.append(item)
            except (NoKeysAvailable, SupplierError):
                continue
