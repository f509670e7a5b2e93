"""The device's wake cycle as a plan of steps, and the executor that charges them to a timeline.

A wake is: boot, Wi-Fi association, the key step if a refresh is due, sensor read, AES-GCM encrypt,
MQTT publish, deep sleep; the scenario's ``[devices]`` options move the sensor read, and DKG's key
pair, before the association (radio still off). :func:`plan_wake` returns the steps; :func:`run_steps` executes them on a
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
from harness.energy.profile import DKG_KEY_OPS, DeviceProfile
from harness.enums import DkgCurve, KeyTransport, Mode, values

MODES = values(Mode)
QKD_TRANSPORTS = values(KeyTransport)
DKG_CURVES = values(DkgCurve)


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


#: How much shorter than a period two wakes a period apart may come out in floating point: wake
#: times are sums (the next wake = this one + the wake period), and (t + 1800) - t fell ~2e-13 s short
#: of 1800 for 17 % of phases, so a device waking once a period skipped every other renewal.
WAKE_TIME_TOLERANCE = 1e-9


def key_refresh_due(t_wake_s: float, last_refresh_s: float | None, refresh_period_s: float) -> bool:
    """Whether a wake at ``t_wake_s`` must renew the key (none yet, or the last one is a period old)."""
    return last_refresh_s is None or t_wake_s - last_refresh_s >= refresh_period_s * (1.0 - WAKE_TIME_TOLERANCE)


def check_key_transport(profile: DeviceProfile, qkd_transport: str) -> None:
    """Refuse a QKD key transport the profile's device cannot do (ValueError naming both)."""
    if qkd_transport not in QKD_TRANSPORTS:
        raise ValueError(f"qkd_transport must be one of {QKD_TRANSPORTS}, got {qkd_transport!r}")
    if qkd_transport == KeyTransport.TLS_RESUME and not profile.settings.tls.resumption:
        raise ValueError(f"profile {profile.name!r} cannot resume a TLS session ([tls] resumption = false): "
                         f"use kme.wireless_transport = tls_full or psk_wrap")


def check_plan(profile: DeviceProfile, qkd_transport: str, devices=None) -> None:
    """Refuse, before any wake, what the profile's device cannot do in either mode: the QKD key
    transport, and the DKG curve of ``devices`` (:class:`~harness.devices.config.DeviceSettings`)."""
    check_key_transport(profile, qkd_transport)
    if devices is not None:
        try:
            profile.dkg_key_seconds(devices.dkg_curve)
        except ValueError as exc:
            raise ValueError(f"[devices] dkg_curve = {str(devices.dkg_curve)!r}: {exc}") from None


def plan_wake(profile: DeviceProfile, mode: str, *, key_refresh_due: bool, reading_bytes: int = 200,
              qkd_transport: str = "psk_wrap", devices=None, dkg_curve: str = "p256", dkg_authenticated: bool = False,
              keygen_before_association: bool = False, sense_before_association: bool = False,
              mqtt_qos: int = 1) -> list[Step]:
    """The steps of one wake for ``mode`` ("qkd" | "dkg").

    ``reading_bytes``: plaintext size of the encrypted reading. QKD: ``qkd_transport`` is how the key
    crosses the wireless hop (full TLS handshake, resumed TLS, or a key wrapped under a pre-shared
    per-device key); the handshake's work follows the profile's ``[tls]``. ``devices`` (the scenario's
    :class:`~harness.devices.config.DeviceSettings`), when given, supplies the device options below.
    DKG: ``dkg_curve``; ``dkg_authenticated`` adds an ECDSA signature of the device's public key and a
    verification of the platform's; ``keygen_before_association`` generates the key pair before
    associating (radio still off). ``sense_before_association`` reads the sensors before associating.
    """
    if devices is not None:
        dkg_curve, dkg_authenticated = devices.dkg_curve, devices.dkg_authenticated
        keygen_before_association, mqtt_qos = devices.keygen_before_association, devices.mqtt_qos
        sense_before_association = devices.sense_before_association
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if dkg_curve not in DKG_CURVES:
        raise ValueError(f"dkg_curve must be one of {DKG_CURVES}, got {dkg_curve!r}")
    if mqtt_qos not in (0, 1, 2):
        raise ValueError(f"mqtt_qos must be 0, 1 or 2, got {mqtt_qos!r}")
    if mode == Mode.QKD:
        check_key_transport(profile, qkd_transport)
    steps = [Step("boot", "busy", seconds=profile.timing_s("boot"))]
    sense = Step("sense", "busy", seconds=profile.timing_s("sensor_read"))
    if sense_before_association:
        steps.append(sense)
    key_steps = []
    if key_refresh_due:
        key_steps = (_qkd_key_steps(profile, qkd_transport) if mode == Mode.QKD
                     else _dkg_key_steps(profile, dkg_curve, dkg_authenticated))
    if key_steps and keygen_before_association and mode == Mode.DKG:
        steps.append(key_steps.pop(0))  # the key pair needs no network
    steps.append(Step("associate", "radio", seconds=profile.timing_s("wifi_associate"), then_associated=True))
    steps += key_steps
    if not sense_before_association:
        steps.append(sense)
    steps.append(Step("encrypt", "compute", op="aes", nbytes=reading_bytes))
    # TCP connect + CONNECT/CONNACK, then PUBACK (QoS 1) or PUBREC+PUBCOMP (QoS 2); QoS 0 waits for none.
    steps.append(Step("publish", "network", round_trips=2 + mqtt_qos,
                      nbytes=profile.mqtt_overhead_bytes + _payload_bytes(profile, reading_bytes)))
    steps.append(Step("sleep", "sleep", then_associated=False))
    return steps


def _payload_bytes(profile: DeviceProfile, reading_bytes: int) -> int:
    """Approximate size of the JSON payload: header + base64 of the ciphertext with its tag + base64 nonce."""
    return profile.settings.wire_bytes.payload_header + 4 * -(-(reading_bytes + 16) // 3) + 16


#: Device-side public-key operations of a full TLS 1.2 ECDHE-ECDSA handshake with a client certificate
#: and a server certificate check (the ``fipy`` profile's): ephemeral key pair and ECDH, verify the
#: server certificate and its ServerKeyExchange signature, sign CertificateVerify. Prefer
#: :func:`full_handshake_ops`, which follows a profile's ``[tls]``.
FULL_HANDSHAKE_STEPS = (("tls_ecdhe_keygen", "tls.ecc_keygen_p256"), ("tls_ecdhe_agree", "tls.ecdh_p256"),
                        ("tls_verify_certificate", "tls.ecdsa_verify_p256"),
                        ("tls_verify_key_exchange", "tls.ecdsa_verify_p256"),
                        ("tls_sign_certificate_verify", "tls.ecdsa_sign_p256"))


def full_handshake_ops(profile: DeviceProfile) -> tuple[tuple[str, str], ...]:
    """(step name, op) of the device's public-key work in one full TLS 1.2 ECDHE-ECDSA handshake under
    the profile's ``[tls]``: key pair and ECDH always, and the ServerKeyExchange signature check (mbedTLS
    2.x checks it whenever the cipher suite signs, whatever its authmode: ssl_cli.c,
    ssl_parse_server_key_exchange; taken to hold for other stacks); the server certificate's signature
    if the device checks certificates; a CertificateVerify signature if it presents a certificate."""
    tls = profile.settings.tls
    wanted = {"tls_verify_certificate": tls.verify_server_certificate,
              "tls_sign_certificate_verify": tls.client_certificate}
    return tuple((name, op) for name, op in FULL_HANDSHAKE_STEPS if wanted.get(name, True))


def _qkd_key_steps(profile: DeviceProfile, transport: str) -> list[Step]:
    wire, work = profile.settings.wire_bytes, profile.settings.crypto_bytes
    if transport == KeyTransport.PSK_WRAP:
        # TCP connect + request/response, then unwrap (AES-GCM) under the device's pre-shared key.
        return [Step("qkd_fetch", "network", round_trips=2, nbytes=wire.key_request, bytes_rx=wire.wrapped_key),
                Step("qkd_decrypt", "compute", op="aes", nbytes=work.psk_unwrap)]
    if transport == KeyTransport.TLS_RESUME:
        # TCP connect + abbreviated handshake (1 RTT) + GET: symmetric crypto only.
        return [Step("qkd_fetch", "network", round_trips=3, nbytes=wire.tls_resumed_client + wire.key_request,
                     bytes_rx=wire.tls_resumed_server + wire.wrapped_key),
                Step("tls_prf", "compute", op="sha256", nbytes=work.tls_resumed_transcript),
                Step("qkd_decrypt", "compute", op="aes", nbytes=work.tls_record)]
    # Full TLS 1.2 ECDHE-ECDSA: TCP + 2-RTT handshake + GET, then the device's public-key work.
    return [Step("qkd_fetch", "network", round_trips=4, nbytes=wire.tls_full_client + wire.key_request,
                 bytes_rx=wire.tls_full_server + wire.wrapped_key),
            *(Step(name, "compute", op=op) for name, op in full_handshake_ops(profile)),
            Step("tls_prf", "compute", op="sha256", nbytes=work.tls_full_transcript),
            Step("qkd_decrypt", "compute", op="aes", nbytes=work.tls_record)]


def _dkg_key_steps(profile: DeviceProfile, curve: str, authenticated: bool) -> list[Step]:
    keygen, agree = DKG_KEY_OPS[str(curve)]
    steps = [Step("dkg_keygen", "compute", op=f"dkg.{keygen}")]
    if authenticated:
        steps.append(Step("dkg_sign", "compute", op="dkg.ecdsa_sign_p256"))
    # TCP connect + send our public key / receive the platform's.
    message = profile.settings.wire_bytes.dkg_public_key_msg
    steps.append(Step("dkg_exchange", "network", round_trips=2, nbytes=message, bytes_rx=message))
    if authenticated:
        steps.append(Step("dkg_verify", "compute", op="dkg.ecdsa_verify_p256"))
    steps.append(Step("dkg_agree", "compute", op=f"dkg.{agree}"))
    steps.append(Step("dkg_kdf", "compute", op="sha256", nbytes=profile.settings.crypto_bytes.hkdf))
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
