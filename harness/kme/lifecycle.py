"""Key lifecycle: the gateway provisions one QKD key per device and renews each one when it is a
refresh period old; the IoT platform resolves the key id carried in a device's message through dec_keys.

Roles (ETSI 014): the gateway is the master SAE at Alice's KME (it calls enc_keys, naming the
platform as slave); the platform is the slave SAE at Bob's KME (it calls dec_keys with the key_ID
that each reading carries in its ``key_id`` field, see the MQTT contract in the helpers' brief).
Paper: "the application requests keys equal to the total amount of the IoT devices" and "the keys
are updated once every 30 min" (the period is the scenario's ``[qkd] refresh_period_s``).
Times are explicit emulated seconds so the logic is testable without a clock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from . import etsi
from .client import EtsiClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceKey:
    """A device's current key: id, bytes, and the emulated interval it is current for."""

    device_id: str
    key_id: str
    key: bytes
    generation: int
    issued_t_emul: float
    valid_until_t_emul: float

    def __repr__(self) -> str:  # key bytes stay out of reprs, hence out of logs and tracebacks
        return f"DeviceKey({self.device_id!r}, {self.key_id!r}, generation={self.generation})"


class GatewayKeyLifecycle:
    """Keeps one current key per device, obtained from the gateway's KME with enc_keys.

    Provisioning (the SDN app's request once it has discovered the devices) obtains a key for every
    device, in chunks; when the KME has fewer keys than asked it takes what there is and keeps it, so
    a later call goes on where this one stopped (a thousand devices need more keys than a full key
    buffer holds). After that each device's key is renewed when the device asks for it and its key is
    a refresh period old (:meth:`key_for`): a device the link cannot serve then is refused, counted,
    and keeps its previous key. ``backdate_s``: provisioned keys count as issued that long before, so a
    run can start from steady state (every key due at the devices' first fetch). ``record`` sees every
    fetch: (emulated time, device, outcome, key id).

    ``renewal_grace_s``: a key counts as due that much before it is a period old. Why: a device
    decides by its own wake schedule (``harness.energy.wakecycle.key_refresh_due``) and reaches the
    relay some seconds into its wake; a period later it may arrive a little earlier into the wake,
    so its key looks a fraction of a second short of a period old and was kept (``current``). With
    a wake per refresh period (the capacity scenarios) that made 7,035 of 13,000 devices skip their
    renewal in the second period (measured, bcn-capacity, 13,000 devices). A run sets it to half the
    devices' wake period: the wake nearest the key's period end renews, and no device renews twice a
    period.
    """

    def __init__(self, kme: EtsiClient, slave_sae_id: str, devices: Sequence[str],
                 refresh_period_s: float, max_key_per_request: int = 1000, key_size: int | None = None,
                 backdate_s: float = 0.0, record: Callable[[float, str, str, str], None] | None = None,
                 renewal_grace_s: float = 0.0, previous_key_on_refusal: bool = False):
        if not devices:
            raise ValueError("devices: at least one device is needed")
        if len(set(devices)) != len(devices):
            raise ValueError("devices: ids must be distinct")
        if refresh_period_s <= 0:
            raise ValueError(f"refresh_period_s must be > 0, got {refresh_period_s!r}")
        if not 0 <= renewal_grace_s < refresh_period_s:
            raise ValueError(f"renewal_grace_s must lie in [0, refresh_period_s), got {renewal_grace_s!r}")
        self.kme = kme
        self.slave_sae_id = slave_sae_id
        self.devices = list(devices)
        self.refresh_period_s = refresh_period_s
        self.max_key_per_request = max_key_per_request
        self.key_size = key_size
        self.backdate_s = backdate_s
        self.renewal_grace_s = renewal_grace_s
        #: Hand a refused device that never held a key its provisioned one (:meth:`holds`). Only for a
        #: steady-state start by a relay that was not restarted: a restarted relay does not know what
        #: its devices hold, and handing one a newly provisioned key replaced a key that worked.
        self.previous_key_on_refusal = previous_key_on_refusal
        self.record = record
        self.generation = 0  # completed provisionings of every device (the first one makes it 1)
        self.counts = {"renewed": 0, "refused": 0, "current": 0}
        self._keys: dict[str, DeviceKey] = {}
        self._holding: set[str] = set()  # devices that have been handed a key (see holds)
        self._lock = threading.Lock()
        self._kme_lock = threading.Lock()  # one KME connection: its requests one at a time

    def _take(self, number: int) -> list[tuple[str, bytes]]:
        """Up to ``number`` keys: all of them, or (503) as many as the KME still has, maybe none."""
        with self._kme_lock:
            try:
                return self.kme.enc_keys(self.slave_sae_id, number=number, size=self.key_size)
            except etsi.EtsiError as exc:
                if exc.status != 503 or number == 1:
                    raise
                stored = int(self.kme.status(self.slave_sae_id).get("stored_key_count", 0))
                if stored <= 0:
                    raise
                return self.kme.enc_keys(self.slave_sae_id, number=min(number - 1, stored), size=self.key_size)

    def provision(self, now_emul: float) -> None:
        """A key for every device that has none (chunks of ``max_key_per_request``); raises
        :class:`EtsiError` (503) if the KME ran out first, keeping what it got for the next call."""
        issued = now_emul - self.backdate_s
        while True:
            with self._lock:
                pending = [d for d in self.devices if d not in self._keys]
            if not pending:
                break
            keys = self._take(min(self.max_key_per_request, len(pending)))
            with self._lock:
                for device, (kid, key) in zip(pending, keys):
                    self._keys[device] = DeviceKey(device, kid, key, 1, issued, issued + self.refresh_period_s)
            if len(keys) < min(self.max_key_per_request, len(pending)):
                raise etsi.unavailable(f"key buffer ran out with {len(pending) - len(keys)} device(s) without a key")
        if self.generation == 0:
            self.generation = 1
            log.info("provisioned %d device keys", len(self.devices))

    def holds(self, device_id: str) -> bool:
        """Whether the device has been handed a key. Why it matters: a run that starts from steady
        state provisions every key a period old, but the devices begin without them; one the link
        cannot serve at its first fetch is then handed its provisioned key (its "previous key"),
        where refusing it left it without any: 553 devices of a 13,000-device run kept their readings
        queued to the end (measured)."""
        with self._lock:
            return device_id in self._holding

    def handed_out(self, device_id: str) -> None:
        """The relay handed the device its current key (:meth:`holds`)."""
        with self._lock:
            self._holding.add(device_id)

    def current(self, device_id: str) -> DeviceKey | None:
        """The device's current key, or None if it is unknown or nothing is provisioned yet."""
        with self._lock:
            return self._keys.get(device_id)

    def key_for(self, device_id: str, now_emul: float) -> tuple[DeviceKey | None, str]:
        """The key to hand ``device_id`` now, and what happened: ``current`` (still within its refresh
        period), ``renewed`` (a new key from the KME), ``refused`` (due, but the KME had none: the
        device keeps its previous key, None if it had none)."""
        current = self.current(device_id)
        if current is not None and now_emul < current.valid_until_t_emul - self.renewal_grace_s:
            outcome, key = "current", current
        else:
            try:
                ((kid, secret),) = self._take(1)
            except (etsi.EtsiError, OSError) as exc:
                if isinstance(exc, etsi.EtsiError) and exc.status != 503:
                    raise
                outcome, key = "refused", current
            else:
                generation = current.generation + 1 if current else 1
                key = DeviceKey(device_id, kid, secret, generation, now_emul, now_emul + self.refresh_period_s)
                with self._lock:
                    self._keys[device_id] = key
                outcome = "renewed"
        with self._lock:
            self.counts[outcome] += 1
        if self.record is not None:
            self.record(now_emul, device_id, outcome, key.key_id if key else "")
        return key, outcome


class PlatformKeyResolver:
    """The platform's side: key_id from a device message -> key bytes, via dec_keys, cached.

    dec_keys hands a key out once (the KME then forgets it), so the resolver keeps what it got.
    """

    def __init__(self, kme: EtsiClient, master_sae_id: str):
        self.kme = kme
        self.master_sae_id = master_sae_id
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def key_for(self, key_id: str) -> bytes:
        """The key with ``key_id``; raises :class:`EtsiError` (400 unknown, 401 not ours, 503)."""
        with self._lock:
            key = self._cache.get(key_id)
            if key is None:
                ((_, key),) = self.kme.dec_keys(self.master_sae_id, [key_id])
                self._cache[key_id] = key
            return key

    def forget(self, key_ids: Sequence[str]) -> None:
        """Drop keys no longer in use (after a refresh)."""
        with self._lock:
            for kid in key_ids:
                self._cache.pop(kid, None)
