"""How a device's exchanges travel: the contract, and the real network of a run.

A :class:`DeviceTransport` carries the three exchanges of a wake: the DKG key agreement with the
platform, the QKD key fetch from the gateway relay, and the MQTT publish of a reading. Each returns
a :class:`~harness.energy.wakecycle.NetworkOutcome` (how long it took, what was transmitted) that the
agent charges to its energy timeline. :class:`NetworkTransport` does them for real over the emulated
wireless link (the network is never accelerated, so wall seconds are emulated seconds, and the bytes
and frames are the kernel's TCP counters); :mod:`harness.devices.simulated` assumes them instead.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from harness import devicecrypto
from harness.energy.wakecycle import NetworkOutcome, Step
from harness.enums import DkgCurve, KeyTransport
from harness.mqttio import Session
from harness.tcpinfo import TcpCounters

#: The KeyFetch a fetch returns: key id and bytes plus the TLS handshakes it took.
from harness.kme.device import KeyFetch  # noqa: E402  (re-exported: part of this contract)


class TransportError(RuntimeError):
    """An exchange failed (timeout, refused, unreachable); ``outcome`` is what it cost until then."""

    def __init__(self, message: str, outcome: NetworkOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class PublishOutcome:
    """A publish of one or more readings: what it cost on the radio, how many the broker acknowledged
    (in order: the first ``acked``), and the error that stopped the rest."""

    network: NetworkOutcome
    acked: int = 0
    error: str = ""


class DeviceTransport(Protocol):
    """The exchanges a device makes. ``step`` is the wake-plan step being performed (a simulated
    transport takes its assumed sizes and round trips from it); ``timeout_s`` bounds each exchange."""

    def dkg_exchange(self, device: str, curve: DkgCurve, public: bytes, step: Step,
                     timeout_s: float) -> tuple[str, bytes, NetworkOutcome]:
        """Send the device's public key, receive (key id, the platform's public key)."""

    def fetch_key(self, device: str, transport: KeyTransport, step: Step,
                  timeout_s: float) -> tuple[KeyFetch, NetworkOutcome]:
        """Fetch the device's current QKD key from the gateway relay (already unwrapped)."""

    def publish(self, device: str, mode: str, seals: Sequence[Callable[[float], bytes]], qos: int, step: Step,
                timeout_s: float) -> PublishOutcome:
        """Connect, then for each reading in order: seal it with ``seal(t_sent)``, publish it, wait for
        its acknowledgement; stop at the first failure."""


def outcome_of(started: float, tcp: TcpCounters) -> NetworkOutcome:
    """A measured exchange: wall time since ``started`` and the connection's real TCP counters
    (+1 frame for the FIN the close sends)."""
    return NetworkOutcome(time.time() - started, tcp.bytes_sent, tcp.bytes_received, tcp.segments_out + 1)


class NetworkTransport:
    """The real exchanges of a run: MQTT to the broker, HTTP(S) to the gateway relay.

    One object serves every device of a fleet process; per device it keeps the TLS state a FiPy keeps
    between wakes (the context and the last session, for resumption). Each call opens its own
    connections in the calling thread, which must already be in the device's network namespace.
    """

    def __init__(self, broker: tuple[str, int], qos: int, relay_url: str | None = None,
                 pki_dir: Path | None = None) -> None:
        self.broker, self.qos, self.relay_url, self.pki_dir = broker, qos, relay_url, pki_dir
        self._tls: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def dkg_exchange(self, device: str, curve: DkgCurve, public: bytes, step: Step,
                     timeout_s: float) -> tuple[str, bytes, NetworkOutcome]:
        """Our public key to ``qiot/<device>/dkg/request``, the platform's from ``.../dkg/response``."""
        started = time.time()
        deadline = started + timeout_s
        session = Session(f"{device}-dkg-kx", *self.broker, timeout_s)
        request = json.dumps({"device": device, "curve": str(curve),
                              "public": base64.b64encode(public).decode()}).encode()
        try:
            session.connect(deadline)
            session.subscribe(devicecrypto.DKG_RESPONSE_TOPIC.format(device=device), self.qos, deadline)
            session.publish(devicecrypto.DKG_REQUEST_TOPIC.format(device=device), request, self.qos, deadline)
            session.loop_until(lambda: bool(session.messages), deadline, "DKG response")
            answer = json.loads(session.messages[0].payload)
        except (OSError, TimeoutError, ValueError) as exc:
            session.close()
            raise TransportError(f"DKG exchange: {exc or type(exc).__name__}", outcome_of(started, session.tcp)) from None
        session.close()
        if "error" in answer:
            raise TransportError(f"platform refused the key exchange: {answer['error']}")
        return answer["key_id"], base64.b64decode(answer["public"]), outcome_of(started, session.tcp)

    def fetch_key(self, device: str, transport: KeyTransport, step: Step,
                  timeout_s: float) -> tuple[KeyFetch, NetworkOutcome]:
        from harness.kme.device import DeviceSession, FetchError, fetch_device_key
        from harness.kme.pki import provision_device
        from harness.kme.wrap import UnwrapError

        with self._lock:
            if device not in self._tls:
                self._tls[device] = (provision_device(self.pki_dir, device), DeviceSession())
            credentials, session = self._tls[device]
        started = time.time()
        try:
            fetch = fetch_device_key(transport, self.relay_url, credentials, session, timeout_s=timeout_s)
        except (FetchError, UnwrapError) as exc:
            # What the failed attempt really cost is not known byte for byte: its time is.
            raise TransportError(f"gateway relay: {exc}", NetworkOutcome(time.time() - started)) from None
        return fetch, NetworkOutcome(fetch.network_s, fetch.bytes_sent, fetch.bytes_received, fetch.frames)

    def publish(self, device: str, mode: str, seals: Sequence[Callable[[float], bytes]], qos: int, step: Step,
                timeout_s: float) -> PublishOutcome:
        started = time.time()
        deadline = started + timeout_s
        session = Session(f"{device}-{mode}", *self.broker, timeout_s)
        acked, error = 0, ""
        try:
            session.connect(deadline)
            for seal in seals:
                session.publish(devicecrypto.topic_for(device), seal(time.time()), qos, deadline)
                acked += 1
        except (OSError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
        finally:
            session.close()
        return PublishOutcome(outcome_of(started, session.tcp), acked, error)
