"""The assumed network of a pure simulation: no sockets, real cryptography, seeded timing.

:class:`SimulatedTransport` answers a device's exchanges in-process from a :class:`SimBackend` (the
platform and the gateway relay): the DKG agreement is a real ECDH with the platform's own key pair,
a QKD fetch hands out a fresh key (for ``psk_wrap`` really AES-GCM-wrapped under the device's
pre-shared key and unwrapped, as in a run), and every reading is really decrypted by the platform.
Only the network is assumed: an exchange takes its plan step's round trips of the scenario's
wireless round-trip time (each one-way trip with a seeded uniform jitter of +/- the scenario's
jitter) plus the air time of the bytes the step assumes; no loss, no retransmission.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from harness import devicecrypto
from harness.devices.transport import KeyFetch, PublishOutcome
from harness.energy import DeviceProfile
from harness.energy.wakecycle import MQTT_OVERHEAD_BYTES, NetworkOutcome, Step, assumed_outcome
from harness.enums import DkgCurve, KeyTransport
from harness.kme import wrap
from harness.links import WirelessShape


@dataclass
class SimBackend:
    """The platform (DKG partner, decrypts every reading) and the gateway relay (hands out QKD keys)."""

    keys: dict[tuple[str, str], bytes] = field(default_factory=dict)
    decrypted: int = 0
    issued: int = 0
    master_secret: bytes = field(default_factory=lambda: os.urandom(32))

    def psk(self, device: str) -> bytes:
        """The device's pre-shared key (both sides derive it from the provisioning secret)."""
        return hashlib.sha256(self.master_secret + device.encode()).digest()

    def dkg_exchange(self, device: str, curve: DkgCurve, device_public: bytes) -> tuple[str, bytes]:
        party = devicecrypto.DkgParty("platform", curve)
        key_id = devicecrypto.dkg_key_id(device_public, party.public_bytes)
        self.keys[(device, key_id)] = party.derive_key(device_public, device_id=device)
        return key_id, party.public_bytes

    def fetch_key(self, device: str, transport: KeyTransport) -> KeyFetch:
        """A fresh key for ``device``; over ``psk_wrap`` wrapped and unwrapped for real."""
        self.issued += 1
        key_id, key = f"sim-{self.issued}", os.urandom(devicecrypto.KEY_BYTES)
        self.keys[(device, key_id)] = key
        if transport == KeyTransport.PSK_WRAP:
            challenge = os.urandom(wrap.CHALLENGE_BYTES)
            nonce, wrapped = wrap.wrap_key(self.psk(device), device, key_id, challenge, key)
            key = wrap.unwrap_key(self.psk(device), device, key_id, challenge, nonce, wrapped)
        full = 1 if transport == KeyTransport.TLS_FULL else 0
        resumed = 1 if transport == KeyTransport.TLS_RESUME else 0
        return KeyFetch(key_id, key, float("inf"), 0.0, full, resumed, 1 if transport == KeyTransport.PSK_WRAP else 0)

    def receive(self, payload: bytes) -> None:
        """Decrypt a reading (raises :class:`~harness.devicecrypto.DecryptError` if it does not authenticate)."""
        devicecrypto.open_reading(lambda h: self.keys[(h["device"], h["key_id"])], payload)
        self.decrypted += 1


class SimulatedTransport:
    """A :class:`~harness.devices.transport.DeviceTransport` with assumed network times."""

    def __init__(self, backend: SimBackend, profile: DeviceProfile, wireless: WirelessShape, seed: int) -> None:
        self.backend, self.profile = backend, profile
        self.rtt_s, self.jitter_s = wireless.rtt_s, wireless.jitter_ms / 1000.0
        self._seed = seed
        self._rngs: dict[str, np.random.Generator] = {}

    def _outcome(self, device: str, step: Step) -> NetworkOutcome:
        """The step's assumed outcome with this device's seeded jitter on every one-way trip."""
        rng = self._rngs.get(device)
        if rng is None:
            digest = hashlib.sha256(f"{self._seed}-{device}".encode()).digest()
            rng = self._rngs[device] = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        jitter = float(rng.uniform(-self.jitter_s, self.jitter_s, 2 * step.round_trips).sum()) if self.jitter_s else 0.0
        outcome = assumed_outcome(self.profile, step, self.rtt_s)
        return dataclasses.replace(outcome, duration_s=max(0.0, outcome.duration_s + jitter))

    def dkg_exchange(self, device: str, curve: DkgCurve, public: bytes, step: Step,
                     timeout_s: float) -> tuple[str, bytes, NetworkOutcome]:
        key_id, peer = self.backend.dkg_exchange(device, curve, public)
        return key_id, peer, self._outcome(device, step)

    def fetch_key(self, device: str, transport: KeyTransport, step: Step,
                  timeout_s: float) -> tuple[KeyFetch, NetworkOutcome]:
        return self.backend.fetch_key(device, transport), self._outcome(device, step)

    def publish(self, device: str, mode: str, seals: Sequence[Callable[[float], bytes]], qos: int, step: Step,
                timeout_s: float) -> PublishOutcome:
        payloads = [seal(0.0) for seal in seals]
        for payload in payloads:
            self.backend.receive(payload)
        # Air time from the real payload sizes rather than the plan's estimate.
        real = dataclasses.replace(step, nbytes=MQTT_OVERHEAD_BYTES + sum(len(p) for p in payloads))
        return PublishOutcome(self._outcome(device, real), acked=len(payloads))
