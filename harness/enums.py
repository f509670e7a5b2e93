"""The enumerations of qiot, each defined once: key modes, wireless key transports, DKG curves.

They are ``StrEnum`` so that a member is also its string (``Mode.QKD == "qkd"``): scenario files,
``run.json``, CSV columns and command-line choices carry the plain string, and code compares against
the member. Settings validation takes its allowed values from here (:func:`values`).
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """Where a device's AES key comes from."""

    QKD = "qkd"  # delivered from the QKD link through the KME and the gateway relay
    DKG = "dkg"  # generated on the device (ECDH with the platform)


class KeyTransport(StrEnum):
    """How the gateway relay hands a QKD key to a device over the wireless hop."""

    TLS_FULL = "tls_full"      # HTTPS with the device's client certificate, full handshake per fetch
    TLS_RESUME = "tls_resume"  # the same, resuming the previous TLS session when the relay allows it
    PSK_WRAP = "psk_wrap"      # plain HTTP; the key AES-GCM-wrapped under the device's pre-shared key


class DkgCurve(StrEnum):
    """Curve of the on-device ECDH key agreement in DKG mode."""

    P256 = "p256"
    X25519 = "x25519"


#: Both modes in the order a ``--mode both`` run executes them.
MODES: tuple[Mode, ...] = (Mode.QKD, Mode.DKG)


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The string values of an enumeration, in definition order (for choices and messages)."""
    return tuple(member.value for member in enum)


class FaultKind(StrEnum):
    """What a scheduled fault breaks (see :mod:`harness.faults`)."""

    FIBRE_CUT = "fibre_cut"                    # the quantum channel: no key is distilled
    CLASSICAL_CUT = "classical_cut"            # the Alice-Bob classical channel (and the optical backhaul)
    KME_RESTART = "kme_restart"                # a KME process is killed and started again
    RELAY_RESTART = "relay_restart"            # the gateway key relay is killed and started again
    BROKER_RESTART = "broker_restart"          # the MQTT broker is killed and started again
    CONTROLLER_RESTART = "controller_restart"  # the SDN controller is killed and started again
    WIRELESS_OUTAGE = "wireless_outage"        # devices lose their wireless link
