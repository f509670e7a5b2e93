"""The QKD key path of a run, as managed processes placed on the Fig. 1 hosts.

::

    alice host                               dc host (data centre)
    QKD Alice --- classical channel (TCP over the optical network) --- QKD Bob
      | Clavis UDP (loopback)                                            | Clavis UDP (loopback)
    KME alice (ETSI 014, issuing) ------------ KME-to-KME (mTLS) ------- KME bob
      ^ enc_keys (master SAE "gateway")                                  ^ dec_keys (slave SAE "platform")
    gw host: key relay (devices fetch over the wireless hop)           IoT platform (decrypts readings)

Everything runs on the run's emulated clock, so the QKD link distils keys at its calibrated rate in
emulated time. Certificates for every entity come from a CA made for the run in ``RUN_DIR/pki``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.clock import EmulatedClock
from harness.process import ManagedProcess

CLASSICAL_PORT = 7001   # Alice <-> Bob post-processing channel (TCP, over the optical network)
CLAVIS_PORT = 5323      # IDQ QKDSequence key-extraction port (reference.md §3)
KME_PORT = 9443
RELAY_PORT = 8443
RELAY_ADMIN_PORT = 8081  # the relay's provisioning endpoint, on the gateway host's loopback
KME_BOB, KME_ALICE = "kme-bob", "kme-alice"
PLATFORM_SAE, GATEWAY_SAE = "platform", "gateway"

def provision_timeout_s(devices: int, key_bits: int, rate_bps: float, block_s: float, time_scale: float) -> float:
    """Wall seconds the relay waits for the first device keys before serving anyway (devices then
    get 503 until keys exist): three times what the calibrated link needs to distil one key per
    device plus two post-processing blocks, and never less than 15 s."""
    needed_emulated = devices * key_bits / max(rate_bps, 1e-9) + 2 * block_s
    return 15.0 + 3.0 * needed_emulated / time_scale


@dataclass
class KeyServices:
    """Builds the processes of the QKD key path for one run."""

    run_dir: Path
    scenario: object
    devices: list[str]
    netns: dict[str, int]        # host name -> PID holding its namespace
    addresses: dict[str, str]    # "dc", "alice", "gw_wireless" -> IP
    seed: int = 1

    @property
    def pki_dir(self) -> Path:
        return self.run_dir / "pki"

    def kme_url(self, host: str) -> str:
        return f"https://{self.addresses[host]}:{KME_PORT}"

    def relay_url(self) -> str:
        return f"https://{self.addresses['gw_wireless']}:{RELAY_PORT}"

    def make_pki(self) -> None:
        """A CA for the run and certificates for both KMEs, both SAEs, the relay and every device."""
        from harness.kme.pki import CertificateAuthority, provision_device
        from harness.kme.relay import RELAY_ID

        ca = CertificateAuthority(self.pki_dir)
        ca.ensure(KME_BOB, "KME", (self.addresses["dc"],))
        ca.ensure(KME_ALICE, "KME", (self.addresses["alice"],))
        ca.ensure(PLATFORM_SAE, "SAE")
        ca.ensure(GATEWAY_SAE, "SAE")
        ca.ensure(RELAY_ID, "RELAY", (self.addresses["gw_wireless"],))
        for device in self.devices:
            provision_device(self.pki_dir, device)

    def processes(self, clock: EmulatedClock) -> list[ManagedProcess]:
        """QKD Bob and Alice, the two KMEs and the gateway relay, in start order."""
        from harness.qkd.config import QkdLinkConfig

        logs = self.run_dir / "logs"
        link_dir = self.run_dir / "qkd-link"
        config = QkdLinkConfig.from_scenario(self.scenario.section("qkd"), self.scenario.section("fibre"))
        config_path = self.run_dir / "config" / "qkd-link.json"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(config.to_sections(), indent=1), encoding="utf-8")
        node = [sys.executable, "-m", "harness.qkd.node", "--config", str(config_path), "--seed", str(self.seed),
                *clock.as_args()]
        bob = ManagedProcess(
            name="qkd-bob", start_order=35, netns_pid=self.netns["dc"], log_path=logs / "qkd-bob.log",
            argv=node + ["--role", "bob", "--classical-listen", f"{self.addresses['dc']}:{CLASSICAL_PORT}",
                         "--udp-listen", f"127.0.0.1:{CLAVIS_PORT}", "--out", str(link_dir / "bob")])
        alice = ManagedProcess(
            name="qkd-alice", start_order=36, netns_pid=self.netns["alice"], log_path=logs / "qkd-alice.log",
            argv=node + ["--role", "alice", "--classical-peer", f"{self.addresses['dc']}:{CLASSICAL_PORT}",
                         "--udp-listen", f"127.0.0.1:{CLAVIS_PORT}", "--out", str(link_dir / "alice")])
        kme = [sys.executable, "-m", "harness.kme.server", "--pki", str(self.pki_dir),
               "--clavis", f"127.0.0.1:{CLAVIS_PORT}", "--max-key-count", str(config.buffer_keys)]
        kme_bob = ManagedProcess(
            name="kme-bob", start_order=37, netns_pid=self.netns["dc"], log_path=logs / "kme-bob.log",
            argv=kme + ["--listen", f"{self.addresses['dc']}:{KME_PORT}", "--kme-id", KME_BOB,
                        "--peer-kme-id", KME_ALICE, "--peer-kme", self.kme_url("alice")])
        # The gateway asks Alice's KME for new keys (enc_keys), so that end issues them.
        kme_alice = ManagedProcess(
            name="kme-alice", start_order=38, netns_pid=self.netns["alice"], log_path=logs / "kme-alice.log",
            argv=kme + ["--listen", f"{self.addresses['alice']}:{KME_PORT}", "--kme-id", KME_ALICE,
                        "--peer-kme-id", KME_BOB, "--peer-kme", self.kme_url("dc"), "--issuing"])
        transport = self.scenario.section("kme")["wireless_transport"]
        from harness.qkd.rate import secret_key_rate

        timeout_s = provision_timeout_s(len(self.devices), config.key_bits,
                                        secret_key_rate(config.loss_db, config.calibration, config),
                                        config.post.block_duration_s, clock.time_scale)
        relay = ManagedProcess(
            name="relay", start_order=39, netns_pid=self.netns["gw"], log_path=logs / "relay.log",
            ready_timeout_s=timeout_s + 15,
            argv=[sys.executable, "-m", "harness.kme.relay", "--listen", f"{self.addresses['gw_wireless']}:{RELAY_PORT}",
                  "--transport", transport, "--pki", str(self.pki_dir), "--kme", self.kme_url("alice"),
                  "--kme-id", KME_ALICE, "--sae-id", GATEWAY_SAE, "--slave-sae-id", PLATFORM_SAE,
                  "--refresh-period-s", str(self.scenario.section("qkd")["refresh_period_s"]),
                  "--provision-timeout-s", f"{timeout_s:.1f}", *clock.as_args(),
                  # Keys are obtained when the SDN provisioning app asks, once it has discovered
                  # the devices (paper: "the application requests keys equal to the ... devices").
                  "--admin-listen", f"127.0.0.1:{RELAY_ADMIN_PORT}", "--await-provisioning"]
                 + [arg for device in self.devices for arg in ("--device", device)])
        return [bob, alice, kme_bob, kme_alice, relay]

    def key_request_config(self) -> dict:
        """Where the provisioning controller sends its key request: the relay's local endpoint,
        reached from inside the gateway's namespace."""
        from harness.kme.relay_admin import PROVISION_PATH

        return {"url": f"http://127.0.0.1:{RELAY_ADMIN_PORT}{PROVISION_PATH}", "netns_pid": self.netns["gw"]}

    def platform_args(self) -> list[str]:
        return ["--kme", self.kme_url("dc"), "--pki", str(self.pki_dir), "--sae-id", PLATFORM_SAE,
                "--master-sae-id", GATEWAY_SAE]

    def device_spec(self) -> dict:
        return {"relay_url": self.relay_url(), "pki_dir": str(self.pki_dir)}
