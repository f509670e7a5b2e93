"""Key lifecycle: the gateway provisions one QKD key per device and refreshes them periodically;
the IoT platform resolves the key id carried in a device's message through dec_keys.

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
    """Keeps one current key per device, obtained from the gateway's KME with enc_keys."""

    def __init__(self, kme: EtsiClient, slave_sae_id: str, devices: Sequence[str],
                 refresh_period_s: float, max_key_per_request: int = 1000, key_size: int | None = None):
        if not devices:
            raise ValueError("devices: at least one device is needed")
        if len(set(devices)) != len(devices):
            raise ValueError("devices: ids must be distinct")
        if refresh_period_s <= 0:
            raise ValueError(f"refresh_period_s must be > 0, got {refresh_period_s!r}")
        self.kme = kme
        self.slave_sae_id = slave_sae_id
        self.devices = list(devices)
        self.refresh_period_s = refresh_period_s
        self.max_key_per_request = max_key_per_request
        self.key_size = key_size
        self.generation = 0
        self.next_refresh_t_emul: float | None = None
        self._keys: dict[str, DeviceKey] = {}
        self._lock = threading.Lock()

    def provision(self, now_emul: float) -> None:
        """Request ``len(devices)`` keys (in chunks of at most ``max_key_per_request``), assign them."""
        keys: list[tuple[str, bytes]] = []
        while len(keys) < len(self.devices):
            number = min(self.max_key_per_request, len(self.devices) - len(keys))
            keys += self.kme.enc_keys(self.slave_sae_id, number=number, size=self.key_size)
        until = now_emul + self.refresh_period_s
        generation = self.generation + 1
        fresh = {dev: DeviceKey(dev, kid, key, generation, now_emul, until)
                 for dev, (kid, key) in zip(self.devices, keys)}
        with self._lock:
            self._keys = fresh
            self.generation = generation
            self.next_refresh_t_emul = until
        log.info("provisioned %d device keys, generation %d", len(fresh), generation)

    def refresh_if_due(self, now_emul: float) -> bool:
        """Provision anew if never done or the refresh time has come; return True if it did."""
        if self.next_refresh_t_emul is not None and now_emul < self.next_refresh_t_emul:
            return False
        self.provision(now_emul)
        return True

    def current(self, device_id: str) -> DeviceKey | None:
        """The device's current key, or None if it is unknown or nothing is provisioned yet."""
        with self._lock:
            return self._keys.get(device_id)

    def run(self, now: Callable[[], float], sleep_until: Callable[[float, threading.Event], bool],
            stop: threading.Event, retry_wall_s: float = 1.0) -> None:
        """Refresh forever on the emulated clock (``clock.now``, ``clock.sleep_until``) until ``stop``."""
        while not stop.is_set():
            try:
                self.refresh_if_due(now())
            except (etsi.EtsiError, OSError) as exc:
                # Keep the old keys; the buffer may be refilling (503) or the KME restarting.
                log.warning("key refresh failed (%s); retrying", exc)
                if stop.wait(retry_wall_s):
                    return
                continue
            if not sleep_until(self.next_refresh_t_emul, stop):
                return


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
