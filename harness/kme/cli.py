"""``qiot kme``: a pair of ETSI GS QKD 014 KMEs on loopback, for researchers' own ETSI clients."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from harness.scenario import DEFAULT_SCENARIO

from . import etsi, pki
from .pair import ALICE_KME_ID, BOB_KME_ID, ListenError, start_pair
from .suppliers import ClavisSupplier

HELP = f"""Run a pair of ETSI GS QKD 014 KMEs on loopback, fed by an emulated QKD link.

Alice's KME ({ALICE_KME_ID}, the gateway side) and Bob's KME ({BOB_KME_ID}, the data-centre side)
take keys over the Clavis2 UDP interface from qiot's emulated QKD link (the same Alice and Bob
as in `qiot run`: detection events, sifting, Cascade, privacy amplification) distilling keys at the
scenario's calibrated rate for its fibre loss; the link runs in a child process of its own. Both
KMEs serve ETSI 014 over mutual TLS (TLS 1.2+, client certificate required). A key is delivered
only once both KMEs hold it; with --key-store they keep issued keys across a restart.

\b
Files written to PKI (kept and reused if present):
  PKI/ca.crt                   CA certificate: trust it in your client
  PKI/ca.key                   CA private key (stays here)
  PKI/sae/<SAE_ID>.crt, .key   client certificate + key per SAE; SAE ID = subject CN
  PKI/kme/{ALICE_KME_ID}.crt, PKI/kme/{BOB_KME_ID}.crt (+ .key)
                               KME server certificates (SAN: DNS = KME ID, IP = --host)
  PKI/psk/<device>.psk         per-device pre-shared keys (only with --devices)

\b
Example (master SAE "gateway" at Alice's KME, slave SAE "platform" at Bob's):
  curl --cacert PKI/ca.crt --cert PKI/sae/gateway.crt --key PKI/sae/gateway.key \\
       -X POST -H 'Content-Type: application/json' -d '{{"number": 2}}' \\
       https://127.0.0.1:8444/api/v1/keys/platform/enc_keys
  curl --cacert PKI/ca.crt --cert PKI/sae/platform.crt --key PKI/sae/platform.key \\
       'https://127.0.0.1:8443/api/v1/keys/gateway/dec_keys?key_ID=<key_ID>'
"""


def _link_config(scenario: str, loss_db: float | None):
    """The QKD link configuration of a scenario, with an optional loss override, and the scenario's
    ``[run]`` settings (time scale and seed when the command line gives none)."""
    from harness import scenario as scen
    from harness.qkd.config import QkdConfigError, QkdLinkConfig
    from harness.qkd.rate import secret_key_rate

    try:
        sc = scen.load(scenario)
        if loss_db is not None:
            sc = sc.with_overrides({"fibre.loss_db": loss_db})
        config = QkdLinkConfig.from_scenario(sc.section("qkd"), sc.section("fibre"))
        secret_key_rate(config.loss_db, config.calibration, config)  # a calibration that gives no rate fails here
    except (scen.ScenarioError, QkdConfigError) as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario/--loss-db") from None
    return config, sc.settings.run


@click.command("kme", help=HELP)
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder for the CA and certificates (created if missing)")
@click.option("--host", default="127.0.0.1", show_default=True, help="loopback address to listen on")
@click.option("--alice-port", default=8444, show_default=True, type=click.IntRange(0, 65535))
@click.option("--bob-port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--sae", "saes", multiple=True, default=("gateway", "platform"), show_default=True,
              help="SAE id to make a client certificate for (repeatable)")
@click.option("--devices", default=0, show_default=True, type=click.IntRange(0, 5000),
              help="also make SAE certificates and PSKs for devices d1..dN")
@click.option("--scenario", default=DEFAULT_SCENARIO, show_default=True,
              help="scenario name or .toml path: its [fibre] loss and [qkd] calibration, key size and buffer")
@click.option("--loss-db", type=float, default=None,
              help="quantum-channel loss, dB (within the scenarios' range); overrides [fibre] loss_db of the scenario")
@click.option("--time-scale", type=click.FloatRange(min=0.001), default=None,
              help="emulated seconds of key production per wall second; overrides [run] time_scale of the scenario")
@click.option("--warmup-s", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="emulated seconds of key distilled before the KMEs start serving")
@click.option("--seed", type=int, default=None,
              help="seed of the emulated QKD link; overrides [run] seed of the scenario")
@click.option("--key-store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="keep each KME's reservations and pooled keys under this folder (survive a restart)")
@click.option("--peer-link", type=click.Choice(["local", "mtls"]), default="local", show_default=True,
              help="how the two KMEs coordinate: direct calls within this process, or their "
                   "KME-to-KME mTLS channel (as the separate KME processes of `qiot run` do)")
def kme(pki_dir: Path, host: str, alice_port: int, bob_port: int, saes: tuple[str, ...], devices: int,
        scenario: str, loss_db: float | None, time_scale: float | None, warmup_s: float, seed: int | None,
        key_store: Path | None, peer_link: str) -> None:
    """Serve the KME pair until Ctrl-C / SIGTERM."""
    if not host.startswith("127."):
        raise click.BadParameter("qiot kme serves loopback only (127.0.0.0/8)", param_hint="--host")
    try:
        ca = pki.CertificateAuthority(pki_dir)
        for sae in saes:
            ca.ensure(sae, "SAE")
        for i in range(1, devices + 1):
            pki.provision_device(pki_dir, f"d{i}")
    except (pki.PkiError, OSError) as exc:
        raise click.ClickException(f"PKI folder {pki_dir}: {exc}") from None
    from harness.qkd.rate import secret_key_rate

    from .linkprocess import LinkProcess

    config, run_settings = _link_config(scenario, loss_db)
    time_scale = run_settings.time_scale if time_scale is None else time_scale
    seed = run_settings.seed if seed is None else seed
    rate = secret_key_rate(config.loss_db, config.calibration, config)
    buffer_keys, key_bits = config.buffer_keys, config.key_bits
    link = LinkProcess(config, seed, time_scale, warmup_s, host)
    # Serve once the warm-up blocks are distilled (they run as fast as post-processing allows).
    while (link.produced() or 0) < int(warmup_s * rate / key_bits * 0.9) and (link.now() or 0) < warmup_s * 2:
        threading.Event().wait(0.05)
    limits = etsi.KmeLimits(key_size=key_bits, max_key_size=key_bits, max_key_count=buffer_keys)
    try:
        pair = start_pair(pki_dir, ClavisSupplier(link.alice_address, issuing=False),
                          ClavisSupplier(link.bob_address, issuing=True, count=link.available),
                          host, alice_port, bob_port, limits, key_store=key_store, peer_link=peer_link)
    except ListenError as exc:
        link.stop()
        raise click.ClickException(str(exc)) from None
    click.echo(f"{ALICE_KME_ID} (Alice, gateway side): {pair.alice_url}")
    click.echo(f"{BOB_KME_ID} (Bob, data-centre side): {pair.bob_url}")
    click.echo(f"QKD link: {config.loss_db:g} dB, calibrated secret-key rate {rate:.0f} bit/s (emulated), "
               f"time scale {time_scale:g}, {link.available()} keys distilled so far, "
               f"buffer {buffer_keys} keys of {key_bits} bit")
    click.echo(f"CA: {ca.cert_path}; SAE certificates: {Path(pki_dir) / 'sae'}/<SAE_ID>.crt/.key")
    click.echo("READY")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        pair.stop()
        link.stop()


if __name__ == "__main__":
    kme()
