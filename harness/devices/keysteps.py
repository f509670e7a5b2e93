"""How a device obtains its AES key: the network and crypto work behind the plan's key steps.

``DkgKeySteps`` (device key generation): the device makes an ephemeral ECC key pair, sends its
public key to the platform over MQTT (``qiot/<device>/dkg/request``), receives the platform's on
``qiot/<device>/dkg/response`` and derives the shared AES key (HKDF), which the platform derives too.

``QkdKeySteps``: the device fetches its current QKD key from the gateway relay over the scenario's
wireless transport (full TLS, resumed TLS or a pre-shared-key wrap; :mod:`harness.kme.device`).

Both expose the current ``key`` and ``key_id`` and a ``perform(step, timeout_s)`` that does the real
work of one plan step, returning a :class:`NetworkOutcome` for network steps.
"""

from __future__ import annotations

import base64
import json
import time

from harness import devicecrypto
from harness.energy.wakecycle import FULL_HANDSHAKE_STEPS, NetworkOutcome, Step
from harness.mqttio import Session

DKG_REQUEST_TOPIC = "qiot/{device}/dkg/request"
DKG_RESPONSE_TOPIC = "qiot/{device}/dkg/response"


class KeySteps:
    """Base: the device's current key, and the work of each key step of a wake plan."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.key: bytes | None = None
        self.key_id = ""

    def perform(self, step: Step, timeout_s: float) -> NetworkOutcome | None:
        raise NotImplementedError


class DkgKeySteps(KeySteps):
    """Device key generation: ECDH with the platform over MQTT."""

    def __init__(self, device_id: str, curve: str, broker_host: str, broker_port: int, qos: int) -> None:
        super().__init__(device_id)
        self.curve, self.broker_host, self.broker_port, self.qos = curve, broker_host, broker_port, qos
        self._party: devicecrypto.DkgParty | None = None
        self._peer: bytes | None = None
        self._pending_key_id = ""

    def perform(self, step: Step, timeout_s: float) -> NetworkOutcome | None:
        if step.name == "dkg_keygen":
            self._party = devicecrypto.DkgParty("device", self.curve)
        elif step.name == "dkg_exchange":
            return self._exchange(step, timeout_s)
        elif step.name == "dkg_agree":
            self.key = self._party.derive_key(self._peer, device_id=self.device_id)
            self.key_id = self._pending_key_id
            self._party = self._peer = None
        return None

    def _exchange(self, step: Step, timeout_s: float) -> NetworkOutcome:
        """Send our public key, wait for the platform's; the platform derives the same key meanwhile."""
        start = time.time()
        deadline = start + timeout_s
        session = Session(f"{self.device_id}-dkg-kx", self.broker_host, self.broker_port, timeout_s)
        request = json.dumps({"device": self.device_id, "curve": self.curve,
                              "public": base64.b64encode(self._party.public_bytes).decode()}).encode()
        try:
            session.connect(deadline)
            session.subscribe(DKG_RESPONSE_TOPIC.format(device=self.device_id), self.qos, deadline)
            session.publish(DKG_REQUEST_TOPIC.format(device=self.device_id), request, self.qos, deadline)
            session.loop_until(lambda: bool(session.messages), deadline, "DKG response")
            answer = json.loads(session.messages[0].payload)
        finally:
            session.close()
        if "error" in answer:
            raise ValueError(f"platform refused the key exchange: {answer['error']}")
        self._peer = base64.b64decode(answer["public"])
        self._pending_key_id = answer["key_id"]
        return NetworkOutcome(time.time() - start, step.nbytes + len(request))


class QkdKeySteps(KeySteps):
    """QKD keys fetched from the gateway relay over the configured wireless transport."""

    def __init__(self, device_id: str, transport: str, relay_url: str, credentials, charge_extra=None) -> None:
        super().__init__(device_id)
        from harness.kme.device import DeviceSession

        self.transport, self.relay_url, self.credentials = transport, relay_url, credentials
        self.session = DeviceSession()
        self._fetched = None
        # Called with a list of profile crypto ops when the handshake that really happened costs more
        # than the plan assumed (a resumption the relay declined falls back to a full handshake).
        self.charge_extra = charge_extra

    def perform(self, step: Step, timeout_s: float) -> NetworkOutcome | None:
        if step.name == "qkd_fetch":
            from harness.kme.device import FetchError, fetch_device_key

            try:
                fetch = fetch_device_key(self.transport, self.relay_url, self.credentials, self.session,
                                         timeout_s=timeout_s)
            except FetchError as exc:
                raise ValueError(f"gateway relay: {exc}") from None
            if self.transport == "tls_resume" and fetch.full_handshakes and self.charge_extra:
                self.charge_extra([op for _, op in FULL_HANDSHAKE_STEPS])
            self._fetched = fetch
            return NetworkOutcome(fetch.network_s, step.nbytes)
        if step.name == "qkd_decrypt" and self._fetched is not None:
            self.key, self.key_id = self._fetched.key, self._fetched.key_id
            self._fetched = None
        return None

