"""The QKD key path of a run, as daemons placed on the Fig. 1 hosts.

::

    alice host                               dc host (data centre)
    QKD Alice --- classical channel (TCP over the optical network) --- QKD Bob
      | Clavis UDP (loopback)                                            | Clavis UDP (loopback)
    KME alice (ETSI 014, issuing) ------------ KME-to-KME (mTLS) ------- KME bob
      ^ enc_keys (master SAE "gateway")                                  ^ dec_keys (slave SAE "platform")
    gw host: key relay (devices fetch over the wireless hop)           IoT platform (decrypts readings)

Alice's KME issues the keys: the gateway, the master SAE, asks it (``enc_keys``) because it is the
KME on the gateway's side of the optical network; Bob's KME fetches the same keys by id from Bob's
QKD end when the platform, the slave SAE, asks for them (``dec_keys``).

Everything runs on the key path's emulated clock (started with the testbed), so the QKD link
distils keys at its calibrated rate in emulated time. Certificates for every entity come from a CA
made for the run in ``RUN_DIR/pki``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from harness.daemon import Daemon, python_daemon
from harness.kme.config import GATEWAY_SAE_ID, KME_ALICE_ID, KME_BOB_ID, PLATFORM_SAE_ID, RELAY_ID
from harness.qkd.rate import secret_key_rate


def provision_timeout_s(config) -> float:
    """Wall seconds to wait for the first device keys before starting the devices anyway (they then
    get 503 until keys exist): three times what the calibrated link needs to distil one key per
    device plus two post-processing blocks, and never less than 15 s."""
    qkd = config.qkd
    rate = secret_key_rate(qkd.loss_db, qkd.calibration, qkd)
    needed_emulated = config.devices.count * qkd.key_bits / max(rate, 1e-9) + 2 * qkd.post.block_duration_s
    return 15.0 + 3.0 * needed_emulated / config.run.time_scale


def kme_url(config, host: str) -> str:
    """The ETSI 014 endpoint of the KME on ``host`` (``dc``: Bob's, ``alice``: Alice's)."""
    ip = {"dc": config.site.dc_ip, "alice": config.site.alice_ip}[host]
    return f"https://{ip}:{config.site.ports.kme}"


def relay_url(config) -> str:
    return f"https://{config.site.gw_wireless_ip}:{config.site.ports.relay}"


def make_pki(config) -> None:
    """A CA for the run and certificates for both KMEs, both SAEs, the relay and every device."""
    from harness.kme.pki import CertificateAuthority, provision_device

    ca = CertificateAuthority(config.pki_dir)
    ca.ensure(KME_BOB_ID, "KME", (config.site.dc_ip,))
    ca.ensure(KME_ALICE_ID, "KME", (config.site.alice_ip,))
    ca.ensure(PLATFORM_SAE_ID, "SAE")
    ca.ensure(GATEWAY_SAE_ID, "SAE")
    ca.ensure(RELAY_ID, "RELAY", (config.site.gw_wireless_ip,))
    for device in config.site.device_names():
        provision_device(config.pki_dir, device)


def key_daemons(config, clock_args: Callable[[], Sequence[str]], capture: str | None) -> list[Daemon]:
    """QKD Bob and Alice, the two KMEs and the gateway relay of ``config``.

    ``clock_args`` gives the key path's clock at start; ``capture`` names the Clavis capture the
    KMEs wait for (None: no capture), so no key datagram goes uncaptured.
    """
    site, ports = config.site, config.site.ports
    bob = python_daemon(config, "qkd-bob", "harness.qkd.node", host="dc", runtime_args=clock_args)
    alice = python_daemon(config, "qkd-alice", "harness.qkd.node", host="alice", requires=("qkd-bob",),
                          runtime_args=clock_args)
    kme_bob = python_daemon(config, KME_BOB_ID, "harness.kme.server", host="dc",
                            requires=("qkd-bob",) + ((capture,) if capture else ()))
    # The gateway asks Alice's KME for new keys (enc_keys), so that end issues them.
    kme_alice = python_daemon(config, KME_ALICE_ID, "harness.kme.server", host="alice",
                              requires=("qkd-alice", KME_BOB_ID))
    relay = python_daemon(config, "relay", "harness.kme.relay", host="gw", requires=("kme-alice",))
    relay.runtime_args = lambda: list(clock_args()) + (["--restarted"] if relay.starts else [])
    return [bob, alice, kme_bob, kme_alice, relay]


def key_request_config(config, gateway_netns_pid: int) -> dict:
    """Where the provisioning controller sends its key request: the relay's local endpoint, reached
    from inside the gateway's namespace."""
    from harness.kme.relay_admin import PROVISION_PATH

    return {"url": f"http://127.0.0.1:{config.site.ports.relay_admin}{PROVISION_PATH}",
            "netns_pid": gateway_netns_pid}
