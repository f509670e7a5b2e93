"""Settings of the key path between the KMEs and the devices: the scenario's ``[kme]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from harness.enums import KeyTransport
from harness.settings import setting


@dataclass(frozen=True, kw_only=True)
class KmeSettings:
    """The scenario's ``[kme]`` table."""

    wireless_transport: KeyTransport = setting(
        KeyTransport.TLS_RESUME,
        doc="how the gateway relay hands a QKD key to a device: tls_full (HTTPS, full handshake with the "
            "device's client certificate), tls_resume (the same, resuming the TLS session), psk_wrap "
            "(AES-GCM under the device's pre-shared key over plain HTTP)")
    max_key_per_request: int = setting(1000, doc="keys the gateway asks for in one enc_keys call (ETSI 014 "
                                                 "max_key_per_request of qiot's KMEs)", minimum=1)
    steady_state_start: bool = setting(False, doc="start from steady state: the devices' provisioned keys count as "
                                                  "a refresh period old, so every device renews at its first fetch "
                                                  "(the capacity experiment; with [qkd] warmup_s for a full buffer)")


# Identities of the key path's entities (certificate common names, ETSI 014 KME and SAE ids).
KME_ALICE_ID = "kme-alice"    # Alice's KME, on the gateway's side of the optical network (issues keys)
KME_BOB_ID = "kme-bob"        # Bob's KME, at the data centre
GATEWAY_SAE_ID = "gateway"    # master SAE: the IoT gateway obtains the device keys (enc_keys)
PLATFORM_SAE_ID = "platform"  # slave SAE: the IoT platform resolves key ids (dec_keys)
RELAY_ID = "relay-gw"         # the gateway relay's server certificate (devices check it)
