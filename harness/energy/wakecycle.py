"""The device's wake cycle as a plan of steps, and the executor that charges them to a timeline.

A wake is: boot, Wi-Fi association, the key step if a refresh is due, sensor read, AES-GCM encrypt,
MQTT publish, deep sleep. :func:`plan_wake` returns the steps; :func:`run_steps` executes them on a
:class:`DeviceTimeline`, calling the agent's ``perform(step)`` for each step so that the agent does the
real work (real crypto on the host, real network I/O) and reports each network step's measured
:class:`NetworkOutcome`. Compute steps are charged at the profile's ESP32 time, never the host's.
A pure simulation's transport returns assumed outcomes (see :mod:`harness.devices.simulated`).

Step kinds: ``busy`` (fixed CPU work: cpu, or radio listen while associated), ``radio`` (fixed radio-on
time: association), ``compute`` (a profile crypto op), ``network`` (measured exchange: TX air time +
listen), ``sleep`` (deep sleep until the next wake).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from harness.energy.energest import STATES, DeviceTimeline
from harness.energy.profile import DeviceProfile
from harness.enums import DkgCurve, KeyTransport, Mode, values

MODES = values(Mode)
QKD_TRANSPORTS = values(KeyTransport)
DKG_CURVES = values(DkgCurve)

# Application-level message sizes (bytes) a pure simulation assumes for TX air time; a networked
# agent reports the bytes it really sent. Assumptions from typical encodings, not measurements.
WIRE_BYTES = {
    "key_request": 100,         # assumption: small HTTP-like request naming device and key
    "wrapped_key": 200,         # assumption: JSON with key_ID, base64 nonce and 48-byte wrapped key + headers
    "tls_full_client": 1100,    # assumption: ClientHello, client certificate, CKE, CertVerify, Finished
    "tls_full_server": 1900,    # assumption: ServerHello, certificate chain, SKE, Finished
    "tls_resumed_client": 350,  # assumption: ClientHello with session ticket, Finished
    "tls_resumed_server": 250,  # assumption: ServerHello, ChangeCipherSpec, Finished
    "dkg_public_key_msg": 120,  # assumption: 65-byte P-256 point (32 for X25519) + framing
    "mqtt_connect": 40,         # assumption: CONNECT with a short client id
    "mqtt_publish_header": 30,  # assumption: PUBLISH fixed header + topic + packet id
}
#: Bytes an MQTT publish adds to the sealed payload (CONNECT + PUBLISH header).
MQTT_OVERHEAD_BYTES = WIRE_BYTES["mqtt_connect"] + WIRE_BYTES["mqtt_publish_header"]
# Bytes hashed / encrypted by the small crypto steps (drive throughput-op times).
CRYPTO_BYTES = {
    # psk_wrap: AES-256-GCM over the 32-byte key + 16-byte tag, with ~70 bytes of associated data
    # (device id, key_ID, 16-byte challenge; harness.kme.wrap): assumption from that layout.
    "psk_unwrap": 32 + 16 + 70,
    "tls_record": 200,              # assumption: one TLS record carrying the key response
    "tls_full_transcript": 3000,    # assumption: handshake transcript + PRF hashing
    "tls_resumed_transcript": 1000,  # assumption
    "hkdf": 4 * 64,                 # HKDF-SHA256 extract + one expand block: ~4 compression calls
}


@dataclass(frozen=True)
class Step:
    """One step of a wake. ``seconds``: fixed duration (busy/radio); ``op``/``nbytes``: crypto op (compute);
    ``round_trips``/``nbytes``/``bytes_rx``: what a pure simulation assumes (network)."""

    name: str
    kind: str
    seconds: float = 0.0
    op: str | None = None
    nbytes: int = 0
    round_trips: int = 0
    bytes_rx: int = 0
    then_associated: bool | None = None

    def states(self, profile: DeviceProfile, associated: bool) -> tuple[str, ...]:
        """The Energest states this step charges when started in the given association state."""
        busy = "radio_listen" if associated and profile.radio_listens_while_associated else "cpu"
        return {"busy": (busy,), "compute": (busy,), "radio": ("radio_listen",),
                "network": ("radio_tx", "radio_listen"), "sleep": ("deep_sleep",)}[self.kind]


@dataclass(frozen=True)
class NetworkOutcome:
    """What a network step really took: emulated duration, bytes sent (and received), frames sent."""

    duration_s: float
    bytes_tx: int = 0
    bytes_rx: int = 0
    frames: int | None = None


@dataclass(frozen=True)
class StepRecord:
    """A step as executed: its emulated start and end and the seconds charged per state."""

    name: str
    t_start_s: float
    t_end_s: float
    charged: dict[str, float]


def key_refresh_due(t_wake_s: float, last_refresh_s: float | None, refresh_period_s: float) -> bool:
    """Whether a wake at ``t_wake_s`` must renew the key (none yet, or the last one is a period old)."""
    return last_refresh_s is None or t_wake_s - last_refresh_s >= refresh_period_s


def plan_wake(profile: DeviceProfile, mode: str, *, key_refresh_due: bool, reading_bytes: int = 200,
              qkd_transport: str = "psk_wrap", devices=None, dkg_curve: str = "p256", dkg_authenticated: bool = False,
              keygen_before_association: bool = False, mqtt_qos: int = 1) -> list[Step]:
    """The steps of one wake for ``mode`` ("qkd" | "dkg").

    ``reading_bytes``: plaintext size of the encrypted reading. QKD: ``qkd_transport`` is how the key
    crosses the wireless hop (full TLS handshake with client certificate, resumed TLS, or a key wrapped
    under a pre-shared per-device key). ``devices`` (the scenario's
    :class:`~harness.devices.config.DeviceSettings`), when given, supplies the device options below.
    DKG: ``dkg_curve``; ``dkg_authenticated`` adds an ECDSA signature of the device's public key and a
    verification of the platform's; ``keygen_before_association`` generates the key pair before
    associating (radio still off).
    """
    if devices is not None:
        dkg_curve, dkg_authenticated = devices.dkg_curve, devices.dkg_authenticated
        keygen_before_association, mqtt_qos = devices.keygen_before_association, devices.mqtt_qos
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if qkd_transport not in QKD_TRANSPORTS:
        raise ValueError(f"qkd_transport must be one of {QKD_TRANSPORTS}, got {qkd_transport!r}")
    if dkg_curve not in DKG_CURVES:
        raise ValueError(f"dkg_curve must be one of {DKG_CURVES}, got {dkg_curve!r}")
    if mqtt_qos not in (0, 1, 2):
        raise ValueError(f"mqtt_qos must be 0, 1 or 2, got {mqtt_qos!r}")
    steps = [Step("boot", "busy", seconds=profile.timing_s("boot"))]
    key_steps = []
    if key_refresh_due:
        key_steps = (_qkd_key_steps(qkd_transport) if mode == "qkd"
                     else _dkg_key_steps(dkg_curve, dkg_authenticated))
    if key_steps and keygen_before_association and mode == "dkg":
        steps.append(key_steps.pop(0))  # the key pair needs no network
    steps.append(Step("associate", "radio", seconds=profile.timing_s("wifi_associate"), then_associated=True))
    steps += key_steps
    steps.append(Step("sense", "busy", seconds=profile.timing_s("sensor_read")))
    steps.append(Step("encrypt", "compute", op="aes", nbytes=reading_bytes))
    # TCP connect + CONNECT/CONNACK, then PUBACK (QoS 1) or PUBREC+PUBCOMP (QoS 2); QoS 0 waits for none.
    steps.append(Step("publish", "network", round_trips=2 + mqtt_qos,
                      nbytes=MQTT_OVERHEAD_BYTES + _payload_bytes(reading_bytes)))
    steps.append(Step("sleep", "sleep", then_associated=False))
    return steps


def _payload_bytes(reading_bytes: int) -> int:
    """Approximate size of the JSON payload: header (~150 B) + base64 of nonce, ciphertext and tag."""
    return 150 + 4 * -(-(reading_bytes + 16) // 3) + 16


#: Device-side public-key operations of a full TLS 1.2 ECDHE-ECDSA handshake with client certificate:
#: ephemeral key pair and ECDH, verify the server certificate and its ServerKeyExchange signature,
#: sign CertificateVerify.
FULL_HANDSHAKE_STEPS = (("tls_ecdhe_keygen", "ecc_keygen_p256"), ("tls_ecdhe_agree", "ecdh_p256"),
                        ("tls_verify_certificate", "ecdsa_verify_p256"),
                        ("tls_verify_key_exchange", "ecdsa_verify_p256"),
                        ("tls_sign_certificate_verify", "ecdsa_sign_p256"))


def _qkd_key_steps(transport: str) -> list[Step]:
    if transport == "psk_wrap":
        # TCP connect + request/response, then unwrap (AES-GCM) under the device's pre-shared key.
        return [Step("qkd_fetch", "network", round_trips=2, nbytes=WIRE_BYTES["key_request"],
                     bytes_rx=WIRE_BYTES["wrapped_key"]),
                Step("qkd_decrypt", "compute", op="aes", nbytes=CRYPTO_BYTES["psk_unwrap"])]
    if transport == "tls_resume":
        # TCP connect + abbreviated handshake (1 RTT) + GET: symmetric crypto only.
        return [Step("qkd_fetch", "network", round_trips=3,
                     nbytes=WIRE_BYTES["tls_resumed_client"] + WIRE_BYTES["key_request"],
                     bytes_rx=WIRE_BYTES["tls_resumed_server"] + WIRE_BYTES["wrapped_key"]),
                Step("tls_prf", "compute", op="sha256", nbytes=CRYPTO_BYTES["tls_resumed_transcript"]),
                Step("qkd_decrypt", "compute", op="aes", nbytes=CRYPTO_BYTES["tls_record"])]
    # Full TLS 1.2 ECDHE-ECDSA with client certificate: TCP + 2-RTT handshake + GET. Device crypto:
    # ephemeral key pair and ECDH, verify the server certificate and its ServerKeyExchange signature,
    # sign CertificateVerify. (Sum at HW speed 1.81 s; ESP-IDF docs: a handshake takes "about two seconds".)
    return [Step("qkd_fetch", "network", round_trips=4,
                 nbytes=WIRE_BYTES["tls_full_client"] + WIRE_BYTES["key_request"],
                 bytes_rx=WIRE_BYTES["tls_full_server"] + WIRE_BYTES["wrapped_key"]),
            *(Step(name, "compute", op=op) for name, op in FULL_HANDSHAKE_STEPS),
            Step("tls_prf", "compute", op="sha256", nbytes=CRYPTO_BYTES["tls_full_transcript"]),
            Step("qkd_decrypt", "compute", op="aes", nbytes=CRYPTO_BYTES["tls_record"])]


def _dkg_key_steps(curve: str, authenticated: bool) -> list[Step]:
    keygen, agree = ("ecc_keygen_p256", "ecdh_p256") if curve == "p256" else ("x25519_keygen", "x25519_agree")
    steps = [Step("dkg_keygen", "compute", op=keygen)]
    if authenticated:
        steps.append(Step("dkg_sign", "compute", op="ecdsa_sign_p256"))
    # TCP connect + send our public key / receive the platform's.
    steps.append(Step("dkg_exchange", "network", round_trips=2, nbytes=WIRE_BYTES["dkg_public_key_msg"],
                      bytes_rx=WIRE_BYTES["dkg_public_key_msg"]))
    if authenticated:
        steps.append(Step("dkg_verify", "compute", op="ecdsa_verify_p256"))
    steps.append(Step("dkg_agree", "compute", op=agree))
    steps.append(Step("dkg_kdf", "compute", op="sha256", nbytes=CRYPTO_BYTES["hkdf"]))
    return steps


def run_steps(timeline: DeviceTimeline, steps: Sequence[Step],
              perform: Callable[[Step], NetworkOutcome | None] | None = None, *,
              wake_until: float | None = None) -> list[StepRecord]:
    """Execute ``steps`` on ``timeline``; returns what each step charged.

    ``perform(step)`` is called before each step is charged: the agent does the step's real work there
    and must return a :class:`NetworkOutcome` for network steps. Compute and busy steps move the
    timeline ahead of the host's clock (an ESP32 is slower); a networked agent that wants its emulated
    clock to match can wait until ``timeline.now`` at the start of each network step. ``wake_until`` is
    the emulated time the final sleep step lasts until (required if the plan has one).
    """
    records = []
    for step in steps:
        outcome = perform(step) if perform is not None else None
        before, t0 = timeline.totals(), timeline.now
        if step.kind == "busy":
            timeline.busy(step.seconds)
        elif step.kind == "radio":
            timeline.charge("radio_listen", step.seconds)
        elif step.kind == "compute":
            timeline.compute(step.op, step.nbytes)
        elif step.kind == "network":
            if not isinstance(outcome, NetworkOutcome):
                raise ValueError(f"step {step.name!r}: perform() must return a NetworkOutcome")
            if not timeline.associated:
                raise ValueError(f"step {step.name!r}: network use while not associated")
            timeline.network(outcome.duration_s, outcome.bytes_tx, outcome.frames)
        elif step.kind == "sleep":
            if wake_until is None:
                raise ValueError("run_steps: the plan ends in a sleep step; give wake_until")
            timeline.sleep_until(wake_until)
        else:
            raise ValueError(f"step {step.name!r}: unknown kind {step.kind!r}")
        if step.then_associated is not None:
            timeline.set_associated(step.then_associated)
        after = timeline.totals()
        records.append(StepRecord(step.name, t0, timeline.now,
                                  {s: after[s] - before[s] for s in STATES if after[s] > before[s]}))
    return records


def assumed_outcome(profile: DeviceProfile, step: Step, rtt_s: float) -> NetworkOutcome:
    """A network step's outcome without a network: its round trips plus both directions' air time."""
    air = profile.tx_airtime_s(step.nbytes) + profile.tx_airtime_s(step.bytes_rx)
    return NetworkOutcome(step.round_trips * rtt_s + air, step.nbytes, step.bytes_rx)
