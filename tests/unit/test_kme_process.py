"""KME, relay and ``qiot kme`` as processes, fed by the real Clavis2 UDP service (harness.qkd.clavis)."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness.kme import keyids, pki
from harness.kme.client import EtsiClient, HttpClient
from harness.kme.device import DeviceSession, fetch_device_key
from harness.kme.pair import ALICE_KME_ID, BOB_KME_ID, start_pair
from harness.kme.suppliers import ClavisSupplier
from harness.kme.tlshttp import client_context
from tests.support.clavislink import ClavisLinkPair

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, ready_timeout_s=20.0):
    """Start ``python -m ...`` and wait for its READY line; return (process, READY line)."""
    proc = subprocess.Popen([PY, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + ready_timeout_s
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("READY"):
            return proc, lines
    proc.kill()
    raise AssertionError(f"{args[0]} not READY: {lines} {proc.stderr.read()}")


def terminate(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


@pytest.fixture()
def clavis_link():
    link = ClavisLinkPair(rate_bps=0, capacity_keys=100, seed=11, prefill_keys=100).start()
    yield link
    link.stop()


def test_kme_and_relay_processes_over_clavis(tmp_path, clavis_link):
    ca = pki.CertificateAuthority(tmp_path)
    for kme_id in (ALICE_KME_ID, BOB_KME_ID):
        ca.ensure(kme_id, "KME", ("127.0.0.1",))
    gw, pl = ca.ensure("gateway", "SAE"), ca.ensure("platform", "SAE")
    pa, pb, pr = free_port(), free_port(), free_port()
    common = ["--pki", str(tmp_path)]
    bob_args = ["harness.kme.server", "--listen", f"127.0.0.1:{pb}", "--kme-id", BOB_KME_ID,
                "--peer-kme-id", ALICE_KME_ID, "--peer-kme", f"https://127.0.0.1:{pa}",
                "--clavis", "%s:%d" % clavis_link.bob.address, "--issuing", *common]
    alice_args = ["harness.kme.server", "--listen", f"127.0.0.1:{pa}", "--kme-id", ALICE_KME_ID,
                  "--peer-kme-id", BOB_KME_ID, "--peer-kme", f"https://127.0.0.1:{pb}",
                  "--clavis", "%s:%d" % clavis_link.alice.address, *common]
    procs = []
    try:
        for args in (bob_args, alice_args):
            proc, _ = spawn(args)
            procs.append(proc)
        gateway = EtsiClient(f"https://127.0.0.1:{pa}", ALICE_KME_ID, gw.ca, gw.cert, gw.key)
        platform = EtsiClient(f"https://127.0.0.1:{pb}", BOB_KME_ID, pl.ca, pl.cert, pl.key)
        keys = gateway.enc_keys("platform", number=3)
        assert platform.dec_keys("gateway", [k for k, _ in keys]) == keys
        for kid, key in keys:  # the very bytes of the QKD buffers, at both ends
            cid = keyids.clavis_id_for(kid)
            assert clavis_link.alice_buffer.get(cid) == key == clavis_link.bob_buffer.get(cid)
        keys = platform.enc_keys("gateway", number=2, size=64)
        assert gateway.dec_keys("platform", [k for k, _ in keys]) == keys
        assert keys[0][1] == clavis_link.alice_buffer.get(keyids.clavis_id_for(keys[0][0]))[:8]

        relay, _ = spawn(["harness.kme.relay", "--listen", f"127.0.0.1:{pr}", "--transport", "tls_resume",
                          "--kme", f"https://127.0.0.1:{pa}", "--device", "d1,d2", *common])
        procs.append(relay)
        creds = pki.provision_device(tmp_path, "d2")
        session = DeviceSession()
        first = fetch_device_key("tls_resume", f"https://127.0.0.1:{pr}", creds, session)
        second = fetch_device_key("tls_resume", f"https://127.0.0.1:{pr}", creds, session)
        assert (first.full_handshakes, first.resumed_handshakes) == (1, 0)
        assert (second.full_handshakes, second.resumed_handshakes) == (0, 1)
        assert first.key == second.key
        assert platform.dec_keys("gateway", [first.key_id]) == [(first.key_id, first.key)]
    finally:
        codes = [terminate(p) for p in procs]
    assert codes == [0] * len(procs)


def test_restarted_kmes_keep_issued_keys_obtainable(tmp_path):
    """A KME killed mid-run and restarted on the same --key-store still delivers every key it had
    issued, even after both QKD buffers have evicted them."""
    link = ClavisLinkPair(rate_bps=0, capacity_keys=20, seed=4, prefill_keys=20).start()
    ca = pki.CertificateAuthority(tmp_path / "pki")
    for kme_id in (ALICE_KME_ID, BOB_KME_ID):
        ca.ensure(kme_id, "KME", ("127.0.0.1",))
    gw, pl = ca.ensure("gateway", "SAE"), ca.ensure("platform", "SAE")
    pa, pb = free_port(), free_port()

    def start(own, peer, port, peer_port, clavis, extra=()):
        return spawn(["harness.kme.server", "--listen", f"127.0.0.1:{port}", "--kme-id", own, "--peer-kme-id", peer,
                      "--peer-kme", f"https://127.0.0.1:{peer_port}", "--clavis", "%s:%d" % clavis,
                      "--pki", str(tmp_path / "pki"), "--key-store", str(tmp_path / own), *extra])[0]

    def start_bob():
        return start(BOB_KME_ID, ALICE_KME_ID, pb, pa, link.bob.address, ["--issuing"])

    def start_alice():
        return start(ALICE_KME_ID, BOB_KME_ID, pa, pb, link.alice.address)

    procs = [start_bob(), start_alice()]
    try:
        gateway = EtsiClient(f"https://127.0.0.1:{pa}", ALICE_KME_ID, gw.ca, gw.cert, gw.key)
        platform = EtsiClient(f"https://127.0.0.1:{pb}", BOB_KME_ID, pl.ca, pl.cert, pl.key)
        to_platform = gateway.enc_keys("platform", number=3)   # kept by Bob's KME for the platform
        to_gateway = platform.enc_keys("gateway", number=2)    # kept by Alice's KME for the gateway
        procs[0].kill()                                         # a crash, not a clean stop
        procs[0].wait(timeout=10)
        assert terminate(procs[1]) == 0
        link.add_keys(40)   # both QKD buffers turn over twice: the keys are gone from them
        assert all(link.bob_buffer.get(keyids.clavis_id_for(k)) is None for k, _ in to_platform + to_gateway)
        procs = [start_bob(), start_alice()]
        gateway.http.close(), platform.http.close()
        assert platform.dec_keys("gateway", [k for k, _ in to_platform]) == to_platform
        assert gateway.dec_keys("platform", [k for k, _ in to_gateway]) == to_gateway
        assert platform.status("gateway")["status_extension"]["qiot_reserved_for_slaves"] == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                terminate(proc)
        link.stop()
    assert (tmp_path / BOB_KME_ID / "keystore.sqlite3").stat().st_mode & 0o077 == 0


def test_server_bad_arguments_give_one_line_errors(tmp_path):
    result = subprocess.run([PY, "-m", "harness.kme.server", "--listen", "nonsense", "--kme-id", "k",
                             "--peer-kme-id", "p", "--peer-kme", "https://127.0.0.1:1", "--pki",
                             str(tmp_path), "--clavis", "127.0.0.1:5323"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --listen: 'nonsense' is not ADDR:PORT"]


def test_in_process_pair_over_clavis_runs_dry_with_503(tmp_path):
    link = ClavisLinkPair(rate_bps=0, capacity_keys=10, seed=2, prefill_keys=2).start()
    pair = start_pair(tmp_path, ClavisSupplier(link.alice.address, issuing=False),
                      ClavisSupplier(link.bob.address, issuing=True))
    gw = pki.CertificateAuthority(tmp_path).ensure("gateway", "SAE")
    pki.CertificateAuthority(tmp_path).ensure("platform", "SAE")
    try:
        client = HttpClient(pair.alice_url, client_context(gw.ca, gw.cert, gw.key), ALICE_KME_ID)
        status, body = client.request("POST", "/api/v1/keys/platform/enc_keys", {"number": 2})
        assert status == 200 and len(body["keys"]) == 2
        status, body = client.request("POST", "/api/v1/keys/platform/enc_keys", {"number": 1})
        assert status == 503 and body["message"]
    finally:
        pair.stop()
        link.stop()


@pytest.mark.parametrize("peer_link", ["local", "mtls"])
def test_qiot_kme_command(tmp_path, peer_link):
    pki_dir = tmp_path / "pki"
    proc, lines = spawn(["harness.kme.cli", "--pki", str(pki_dir), "--scenario", "hpn", "--alice-port", "0",
                         "--bob-port", "0", "--warmup-s", "60", "--devices", "2", "--peer-link", peer_link])
    try:
        urls = {line.split()[0]: line.split()[-1] for line in lines if "https://" in line}
        for path in ("ca.crt", "sae/gateway.crt", "sae/platform.key", "sae/d2.crt", "psk/d1.psk",
                     f"kme/{ALICE_KME_ID}.crt"):
            assert (pki_dir / path).exists(), path
        gw = pki.entity_paths(pki_dir, "gateway", "SAE")
        pl = pki.entity_paths(pki_dir, "platform", "SAE")
        gateway = EtsiClient(urls[ALICE_KME_ID], ALICE_KME_ID, gw.ca, gw.cert, gw.key)
        platform = EtsiClient(urls[BOB_KME_ID], BOB_KME_ID, pl.ca, pl.cert, pl.key)
        # 60 emulated seconds at the hpn rate (1880 bit/s) distil about 440 keys of 256 bit.
        stored = gateway.status("platform")["stored_key_count"]
        assert 300 <= stored <= 600, stored
        keys = gateway.enc_keys("platform", number=2)
        assert platform.dec_keys("gateway", [k for k, _ in keys]) == keys
    finally:
        assert terminate(proc) == 0


def test_qiot_kme_drained_then_every_issued_key_is_deliverable(tmp_path):
    """Issue 12's reproduction, scaled down: `qiot kme` on the real emulated link (hpn), drained
    with large requests until 503, then asked for one key at a time while the buffer turns over.
    Every key issued is then obtainable by the slave, and stored_key_count never exceeds max."""
    from harness.kme import etsi
    pki_dir = tmp_path / "pki"
    proc, lines = spawn(["harness.kme.cli", "--pki", str(pki_dir), "--scenario", "hpn", "--alice-port", "0",
                         "--bob-port", "0", "--warmup-s", "60", "--time-scale", "200"])
    try:
        urls = {line.split()[0]: line.split()[-1] for line in lines if "https://" in line}
        gw, pl = pki.entity_paths(pki_dir, "gateway", "SAE"), pki.entity_paths(pki_dir, "platform", "SAE")
        gateway = EtsiClient(urls[ALICE_KME_ID], ALICE_KME_ID, gw.ca, gw.cert, gw.key)
        platform = EtsiClient(urls[BOB_KME_ID], BOB_KME_ID, pl.ca, pl.cert, pl.key)
        issued, refused, stored = [], 0, []
        for master, slave, peer in ((platform, "gateway", gateway), (gateway, "platform", platform)):
            while True:  # drain: requests of 100 until the KME answers 503
                try:
                    issued.append((peer, master.enc_keys(slave, number=100), slave))
                except etsi.EtsiError as exc:
                    assert exc.status == 503
                    break
            deadline = time.monotonic() + 2.0  # 400 emulated s: the buffer (3,906 keys) turns over
            while time.monotonic() < deadline:
                try:
                    issued.append((peer, master.enc_keys(slave, number=1), slave))
                except etsi.EtsiError as exc:
                    assert exc.status == 503
                    refused += 1
                status = master.status(slave)
                stored.append((status["stored_key_count"], status["max_key_count"]))
                time.sleep(0.02)
        masters = {"gateway": "platform", "platform": "gateway"}
        for peer, keys, slave in issued:
            assert peer.dec_keys(masters[slave], [k for k, _ in keys]) == keys
        assert sum(len(keys) for _, keys, _ in issued) > 500
        assert all(count <= limit for count, limit in stored) and len(stored) > 50
        assert refused < 10  # drained with large requests, the one-key requests are served at once
    finally:
        assert terminate(proc) == 0


def test_qiot_kme_help_names_the_files():
    from click.testing import CliRunner

    from harness.kme.cli import kme
    result = CliRunner().invoke(kme, ["--help"])
    assert result.exit_code == 0
    for name in ("ca.crt", "sae/<SAE_ID>.crt", "kme-alice", "kme-bob", "psk/<device>.psk"):
        assert name in result.output


def test_qiot_kme_refuses_non_loopback(tmp_path):
    from click.testing import CliRunner

    from harness.kme.cli import kme
    result = CliRunner().invoke(kme, ["--pki", str(tmp_path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "loopback" in result.output


def test_qiot_kme_port_in_use_names_address_and_port(tmp_path):
    from click.testing import CliRunner

    from harness.kme.cli import kme
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(kme, ["--pki", str(tmp_path), "--alice-port", "0", "--bob-port", str(port)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == \
        f"Error: {BOB_KME_ID} cannot listen on 127.0.0.1:{port}: Address already in use"


def test_server_port_in_use_is_one_line(tmp_path):
    ca = pki.CertificateAuthority(tmp_path)
    ca.ensure(BOB_KME_ID, "KME", ("127.0.0.1",))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([PY, "-m", "harness.kme.server", "--listen", f"127.0.0.1:{port}", "--kme-id", BOB_KME_ID,
                                 "--peer-kme-id", ALICE_KME_ID, "--peer-kme", "https://127.0.0.1:1", "--pki",
                                 str(tmp_path), "--clavis", "127.0.0.1:5323"], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --listen 127.0.0.1:{port}: Address already in use"]
