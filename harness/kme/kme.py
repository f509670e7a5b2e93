"""The key-management core of one KME: status, enc_keys, dec_keys, and KME-to-KME coordination.

No HTTP here: :mod:`harness.kme.server` puts this behind ETSI GS QKD 014 over mutual TLS.

Coordination (both KMEs can serve enc_keys, whichever side the master SAE is on). One KME of the
link *issues*: its QKD end hands out new key ids. Key bytes never travel between KMEs: each KME
reads them from its own QKD end. A key is delivered to the master SAE only once **both** KMEs hold
its bytes in their key stores (:mod:`harness.kme.keystore`), so the slave can always obtain it,
however the QKD buffers turn over afterwards:

* master SAE at the **issuing** KME: it takes ``number`` keys (its pool first, then new ones from
  its QKD end) and tells the peer ``reserve(master, slave, size, ids)``; the peer reads each key by
  id from its own QKD end and answers the ids it could not read (evicted there, or not distilled
  after a short wait). Those are dropped (counted as lost) and replaced, then the keys are delivered.
* master SAE at the **fetching** KME: it asks the issuing peer ``issue(master, slave, number, size,
  lost)``; the peer takes keys, keeps them for the slave's dec_keys and returns their ids; this KME
  reads the bytes by id from its own QKD end. Ids it cannot read go back as ``lost`` with the
  next ``issue`` (the peer drops those reservations and issues replacements).
* if a request cannot be completed (not enough keys: 503), everything reserved for it is released
  at the peer (``release``): the issuing KME puts the keys back into its pool, from which the next
  requests take first. A pooled key evicted at its QKD end meanwhile is dropped before use (the QKD
  buffer holds a contiguous window of ids, so checking the oldest pooled id is enough). A key whose
  release the peer did not acknowledge is never issued again (counted as lost), so no key can end up
  with two pairs of SAEs.

Every key is delivered at most once on each side and only to the SAEs named when it was issued
(dec_keys from anyone else: 401). ``counters`` counts keys issued, delivered and lost by cause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Protocol

from . import etsi, keyids
from .keystore import KeyStore, Reservation
from .suppliers import KeySupplier, NoKeysAvailable, SupplierError, UnknownKey

log = logging.getLogger(__name__)

#: Rounds of replacing keys the peer could not read before a request gives up (503).
MAX_ROUNDS = 3


class PeerLink(Protocol):
    """How a KME talks to its peer KME (implemented over mTLS in :mod:`harness.kme.server`)."""

    def issue(self, master: str, slave: str, number: int, size: int, lost: list[str]) -> list[str]:
        """Ask the issuing peer for ``number`` new key ids reserved for ``slave``; drop ``lost`` first."""

    def reserve(self, master: str, slave: str, size: int, key_ids: list[str]) -> list[str]:
        """Tell the peer that ``key_ids`` were issued to ``master`` for ``slave``; return those it lacks."""

    def release(self, key_ids: list[str], lost: list[str]) -> None:
        """Cancel reservations made for a request that failed (``lost``: unreadable at this end)."""

    def stored_key_count(self) -> int:
        """The peer's stored key count (a fetching KME reports it in its status)."""


class LocalPeerLink:
    """:class:`PeerLink` to a :class:`KeyManager` in the same process: the very calls the mTLS
    channel carries (:mod:`harness.kme.server`), without HTTP and TLS between two objects that
    share an address space (``qiot kme`` serves both KMEs of the pair in one process)."""

    def __init__(self, peer: "KeyManager"):
        self.peer = peer

    def issue(self, master: str, slave: str, number: int, size: int, lost: list[str]) -> list[str]:
        return self.peer.peer_issue(master, slave, number, size, lost)

    def reserve(self, master: str, slave: str, size: int, key_ids: list[str]) -> list[str]:
        return self.peer.peer_reserve(master, slave, size, key_ids)

    def release(self, key_ids: list[str], lost: list[str]) -> None:
        self.peer.peer_release(key_ids, lost)

    def stored_key_count(self) -> int:
        return self.peer.stored_key_count()


class KeyManager:
    """One KME. ``supplier`` is its QKD end; ``peer`` the link to the other KME (None: none yet).

    ``limits``: what status reports and requests are checked against. ``attached_saes``: SAEs that
    may call this KME (None: any SAE of the CA). ``known_saes``: whether an SAE id exists (a slave
    SAE that does not gets 400 before any key is used; None: every id exists). ``prefetch``: keys
    the issuing KME pulls ahead into its pool. ``qkd_key_bytes``: the QKD key length (sizes are
    prefixes). ``store``: where reservations and the pool are kept (default: in memory).
    ``settle_s``: how long a KME waits for a key its QKD end has not distilled yet (the two ends
    finish a block a few milliseconds apart).
    """

    def __init__(self, kme_id: str, peer_kme_id: str, supplier: KeySupplier,
                 peer: PeerLink | None = None, limits: etsi.KmeLimits | None = None,
                 attached_saes: frozenset[str] | None = None, prefetch: int = 0,
                 qkd_key_bytes: int = 32, known_saes: Callable[[str], bool] | None = None,
                 store: KeyStore | None = None, settle_s: float = 0.5):
        self.kme_id = kme_id
        self.peer_kme_id = peer_kme_id
        self.supplier = supplier
        self.peer = peer
        self.limits = limits or etsi.KmeLimits()
        self.attached_saes = attached_saes
        self.known_saes = known_saes
        self.qkd_key_bytes = qkd_key_bytes
        self.store = store or KeyStore()
        self.settle_s = settle_s
        self.counters: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._prefetch = prefetch
        self._stop = threading.Event()
        if prefetch and supplier.issues_keys:
            threading.Thread(target=self._prefetch_loop, name="kme-prefetch", daemon=True).start()

    def close(self) -> None:
        """Stop the prefetch thread and close the key store."""
        self._stop.set()
        self.store.close()

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            with self._count_lock:
                self.counters[name] += n

    # --- ETSI endpoints -------------------------------------------------------------------------
    def _check_caller(self, sae_id: str) -> None:
        if self.attached_saes is not None and sae_id not in self.attached_saes:
            raise etsi.unauthorized()

    def _check_slave(self, master: str, slave: str) -> None:
        if slave == master:
            raise etsi.bad_request("slave_SAE_ID shall differ from the master SAE", slave_SAE_ID=slave)
        if self.known_saes is not None and not self.known_saes(slave):
            raise etsi.bad_request("slave_SAE_ID is not a known SAE", slave_SAE_ID=slave)

    def status(self, master: str, slave: str) -> dict[str, Any]:
        """Status (spec section 6.1) of the link from ``master`` (the caller) to ``slave``."""
        self._check_caller(master)
        self._check_slave(master, slave)
        with self._count_lock:
            counters = dict(self.counters)
        return {"source_KME_ID": self.kme_id, "target_KME_ID": self.peer_kme_id,
                "master_SAE_ID": master, "slave_SAE_ID": slave,
                "key_size": self.limits.key_size, "stored_key_count": self.stored_key_count(),
                "max_key_count": self.limits.max_key_count,
                "max_key_per_request": self.limits.max_key_per_request,
                "max_key_size": self.limits.max_key_size, "min_key_size": self.limits.min_key_size,
                "max_SAE_ID_count": self.limits.max_SAE_ID_count,
                "status_extension": {"qiot_keys": counters,
                                     "qiot_reserved_for_slaves": self.store.reservation_count}}

    def stored_key_count(self) -> int:
        """Keys available for enc_keys: the source's fresh count (if it reports one) plus the pool.

        The source's count is read first, then the pool is pruned: a pooled key still at the QKD
        end then was there at the earlier reading too (and already handed out, so not counted
        twice), so the sum never exceeds the buffer size. Keys put into the pool meanwhile (a
        request failing between the two readings) could be counted twice: then it reads again.
        """
        if not self.supplier.issues_keys and self.peer is not None:
            try:
                return self.peer.stored_key_count()
            except etsi.EtsiError:
                return 0
        for _ in range(10):
            puts = self.store.pool_puts
            count = self.supplier.stored_key_count()
            self._prune_pool()
            pooled = self.store.pool_count
            if self.store.pool_puts == puts:
                break
        return pooled + (count or 0)

    def enc_keys(self, master: str, slave: str, request: etsi.KeyRequest) -> dict[str, Any]:
        """Get key (spec section 5.2): deliver new keys to ``master`` for use with ``slave``."""
        self._check_caller(master)
        number, size = etsi.check_request(request, self.limits)
        self._check_slave(master, slave)
        if self.peer is None:
            raise etsi.unavailable("peer KME not configured")
        if self.supplier.issues_keys:
            keys = [(keyids.uuid_for(cid), key) for cid, key in self._issue_here(master, slave, number, size)]
        else:
            keys = self._issue_at_peer(master, slave, number, size)
        self._count("issued", len(keys))
        log.info("enc_keys %s -> %s: %d key(s) of %d bit", master, slave, len(keys), size)
        return etsi.key_container([(kid, key[: size // 8]) for kid, key in keys])

    def dec_keys(self, slave: str, master: str, key_ids: list[str]) -> dict[str, Any]:
        """Get key with key IDs (spec section 5.3): only the slave SAE named at issue may have them."""
        self._check_caller(slave)
        _check_key_ids(key_ids)
        if len(set(key_ids)) != len(key_ids):
            raise etsi.bad_request("key_ID given more than once")
        if len(key_ids) > self.limits.max_key_per_request:
            raise etsi.bad_request("number of key_IDs exceeds max_key_per_request",
                                   max_key_per_request=self.limits.max_key_per_request)
        found = self.store.reservations(key_ids)
        missing = [kid for kid, res in zip(key_ids, found) if res is None]
        if missing:
            raise etsi.bad_request("key_ID not found", key_ID=missing[0])
        if any(res.slave != slave or res.master != master for res in found):
            raise etsi.unauthorized()
        if not self.store.take_reservations(key_ids, found):  # all or nothing, once
            raise etsi.bad_request("key_ID not found (delivered meanwhile)")
        self._count("delivered", len(key_ids))
        log.info("dec_keys %s <- %s: %d key(s)", slave, master, len(key_ids))
        return etsi.key_container([(kid, res.key[: res.size // 8]) for kid, res in zip(key_ids, found)])

    # --- issuing ----------------------------------------------------------------------------------
    def _issue_here(self, master: str, slave: str, number: int, size: int) -> list[tuple[int, bytes]]:
        """Take keys and have the peer confirm them (module docstring); 503 if that cannot be done."""
        confirmed: list[tuple[int, bytes]] = []
        batch = self._take(number)
        for _ in range(MAX_ROUNDS):
            try:
                lacking = set(self.peer.reserve(master, slave, size, [keyids.uuid_for(c) for c, _ in batch]))
            except etsi.EtsiError:
                self._abandon(confirmed + batch, [])
                raise etsi.unavailable("peer KME did not acknowledge the keys") from None
            confirmed += [(c, k) for c, k in batch if keyids.uuid_for(c) not in lacking]
            self._count("lost_unreadable_at_peer", len(lacking))
            if len(confirmed) == number:
                return confirmed
            try:
                batch = self._take(number - len(confirmed))
            except etsi.EtsiError:
                self._abandon(confirmed, [])
                raise
        self._abandon(confirmed, [])
        raise etsi.unavailable("the peer KME could not read the keys at its QKD end")

    def _issue_at_peer(self, master: str, slave: str, number: int, size: int) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        lost: list[str] = []
        for _ in range(MAX_ROUNDS):
            try:
                ids = self.peer.issue(master, slave, number - len(got), size, lost)
            except etsi.EtsiError as exc:
                self._release_at_peer([kid for kid, _ in got], lost)
                if exc.status == 400:
                    raise
                raise etsi.unavailable(exc.message or "peer KME could not issue keys") from None
            found, lost = self._read_confirmed(ids)
            got += [(kid, found[kid]) for kid in ids if kid in found]
            self._count("lost_unreadable_here", len(lost))
            if not lost:
                return got
        self._release_at_peer([kid for kid, _ in got], lost)
        raise etsi.unavailable("key not available at this QKD end")

    def _abandon(self, keys: list[tuple[int, bytes]], lost: list[str]) -> None:
        """A request failed after reserving ``keys`` at the peer: release them, re-pool if acknowledged."""
        if keys and self._release_at_peer([keyids.uuid_for(c) for c, _ in keys], lost):
            self.store.pool_put(keys)
        else:
            self._count("lost_release_unacknowledged", len(keys))

    def _release_at_peer(self, key_ids: list[str], lost: list[str]) -> bool:
        if not key_ids and not lost:
            return True
        try:
            self.peer.release(key_ids, lost)
            return True
        except etsi.EtsiError:
            log.warning("peer KME did not acknowledge the release of %d key(s)", len(key_ids))
            return False

    # --- KME-to-KME endpoints -------------------------------------------------------------------
    def peer_issue(self, master: str, slave: str, number: int, size: int, lost: list[str] = ()) -> list[str]:
        """The fetching peer asks for new keys: drop its ``lost`` ones, take keys, keep them for ``slave``."""
        if not self.supplier.issues_keys:
            raise etsi.bad_request("this KME does not issue keys")
        number, size = etsi.check_request(etsi.KeyRequest(number=number, size=size), self.limits)
        _check_key_ids(lost)
        self._count("lost_unreadable_at_peer", len(self.store.drop_reservations(lost, master, slave)))
        taken = self._take(number)
        ids = [keyids.uuid_for(cid) for cid, _ in taken]
        self.store.reserve([(kid, Reservation(master, slave, size, key)) for kid, (_, key) in zip(ids, taken)])
        return ids

    def peer_reserve(self, master: str, slave: str, size: int, key_ids: list[str]) -> list[str]:
        """The issuing peer reports keys issued to ``master`` for ``slave``: read and keep them.

        The bytes are read from this end's QKD buffer at once (a full buffer replaces its oldest
        keys, so waiting for the slave's dec_keys could find them gone). Returns the ids that could
        not be read: those are not reserved, and the issuing KME does not deliver them.
        """
        _check_key_ids(key_ids)
        etsi.check_request(etsi.KeyRequest(number=1, size=size), self.limits)  # checks the size
        found, lacking = self._read_confirmed(key_ids)
        self.store.reserve([(kid, Reservation(master, slave, size, found[kid])) for kid in key_ids
                            if kid in found])
        return lacking

    def peer_release(self, key_ids: list[str], lost: list[str]) -> None:
        """Cancel reservations of a failed request; the issuing KME pools the keys again (not ``lost``)."""
        _check_key_ids(list(key_ids) + list(lost))
        kept = self.store.drop_reservations(key_ids)
        self.store.drop_reservations(lost)
        if self.supplier.issues_keys:
            self.store.pool_put([(keyids.clavis_id_for(kid), res.key) for kid, res in kept.items()])
        self._count("lost_unreadable_at_peer", len(lost))

    # --- key source -----------------------------------------------------------------------------
    def _prune_pool(self) -> None:
        """Drop pooled keys evicted at this QKD end (ids below the buffer's window)."""
        while (oldest := self.store.pool_oldest()) is not None:
            try:
                self.supplier.key_by_id(oldest, self.qkd_key_bytes)
                return
            except UnknownKey:
                if self.store.pool_drop(oldest):
                    self._count("lost_evicted_in_pool")
            except (NoKeysAvailable, SupplierError):
                return

    def _take(self, number: int) -> list[tuple[int, bytes]]:
        """``number`` keys from the pool (oldest first), then new ones; 503 (nothing lost) if short."""
        self._prune_pool()
        taken = self.store.pool_take(number)
        try:
            while len(taken) < number:
                taken.append(self.supplier.new_key(self.qkd_key_bytes))
        except (NoKeysAvailable, SupplierError) as exc:
            self.store.pool_put(taken)  # still good keys: the next request takes them first
            if isinstance(exc, NoKeysAvailable):
                raise etsi.unavailable("not enough keys in the key buffer") from None
            raise etsi.unavailable("key source unavailable") from None
        return taken

    def _read_confirmed(self, key_ids: list[str]) -> tuple[dict[str, bytes], list[str]]:
        """Read keys by id at this QKD end: (found bytes by id, ids not readable).

        The buffer holds a contiguous window of ids, so a missing id below a found one was evicted;
        the others may still be in distillation and are retried for up to ``settle_s``.
        """
        found: dict[str, bytes] = {}
        waiting = list(key_ids)
        deadline = time.monotonic() + self.settle_s
        while True:
            for kid in list(waiting):
                try:
                    found[kid] = self.supplier.key_by_id(keyids.clavis_id_for(kid), self.qkd_key_bytes)
                    waiting.remove(kid)
                except UnknownKey:
                    pass
                except (NoKeysAvailable, SupplierError):
                    raise etsi.unavailable("key source unavailable") from None
            newest_found = max((keyids.clavis_id_for(k) for k in found), default=None)
            pending = [k for k in waiting if newest_found is None or keyids.clavis_id_for(k) > newest_found]
            if not pending or time.monotonic() >= deadline:
                return found, waiting
            time.sleep(0.01)

    def _prefetch_loop(self) -> None:
        # Why: a Clavis source cannot report its buffer, so keys pulled ahead give status a count.
        while not self._stop.wait(0.2):
            try:
                while self.store.pool_count < self._prefetch:
                    self.store.pool_put([self.supplier.new_key(self.qkd_key_bytes)])
            except (NoKeysAvailable, SupplierError):
                continue


def _check_key_ids(key_ids: list[str]) -> None:
    for kid in key_ids:
        try:
            keyids.clavis_id_for(kid)
        except keyids.KeyIdError:
            raise etsi.bad_request("key_ID is not a valid key ID", key_ID=kid) from None
