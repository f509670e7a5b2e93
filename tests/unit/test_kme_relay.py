"""The wireless hop: gateway relay and device fetch over each transport, with exact op counts."""

import base64
import ssl

import pytest

from harness.kme import pki
from harness.kme.client import EtsiClient, HttpClient
from harness.kme.device import DeviceSession, FetchError, fetch_device_key
from harness.kme.lifecycle import GatewayKeyLifecycle, PlatformKeyResolver
from harness.kme.pair import ALICE_KME_ID, BOB_KME_ID, start_pair
from harness.kme.relay import TRANSPORTS, RelayServer
from harness.kme.tlshttp import client_context
from harness.kme.wrap import UnwrapError, unwrap_key, wrap_key
from tests.support.clavislink import ClavisLinkPair
from tests.support.tlsrefusal import assert_tls_refused

DEVICES = ["d1", "d2", "d3"]
REFRESH_S = 1800.0  # paper: keys updated every 30 min


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """KME pair, provisioned gateway lifecycle, platform resolver, device credentials."""
    pki_dir = tmp_path_factory.mktemp("pki")
    link = ClavisLinkPair(rate_bps=0, capacity_keys=200, seed=3, prefill_keys=200).start()
    pair = start_pair(pki_dir, *link.suppliers())
    ca = pki.CertificateAuthority(pki_dir)
    gw, pl = ca.ensure("gateway", "SAE"), ca.ensure("platform", "SAE")
    lifecycle = GatewayKeyLifecycle(EtsiClient(pair.alice_url, ALICE_KME_ID, gw.ca, gw.cert, gw.key),
                                    "platform", DEVICES, REFRESH_S)
    lifecycle.provision(0.0)
    resolver = PlatformKeyResolver(EtsiClient(pair.bob_url, BOB_KME_ID, pl.ca, pl.cert, pl.key), "gateway")
    creds = {d: pki.provision_device(pki_dir, d) for d in DEVICES}
    yield pki_dir, lifecycle, resolver, creds
    pair.stop()
    link.stop()


@pytest.fixture(scope="module", params=TRANSPORTS)
def relay(request, world):
    pki_dir, lifecycle, _, creds = world
    server = RelayServer(("127.0.0.1", 0), request.param, lifecycle, pki_dir,
                         psks={d: c.psk for d, c in creds.items()})
    server.start_in_thread()
    yield request.param, server
    server.shutdown()
    server.server_close()


EXPECTED_COUNTS = {  # (full handshakes, resumed handshakes, AES unwraps) for fetch 1, 2, 3
    "tls_full": [(1, 0, 0)] * 3,
    "tls_resume": [(1, 0, 0), (0, 1, 0), (0, 1, 0)],
    "psk_wrap": [(0, 0, 1)] * 3,
}


def test_fetch_counts_and_key_matches_platform(world, relay):
    _, lifecycle, resolver, creds = world
    transport, server = relay
    session = DeviceSession()
    counts = []
    for _ in range(3):
        fetch = fetch_device_key(transport, server.url, creds["d2"], session)
        counts.append((fetch.full_handshakes, fetch.resumed_handshakes, fetch.aes_unwraps))
        assert fetch.key_id == lifecycle.current("d2").key_id
        assert fetch.key == lifecycle.current("d2").key and len(fetch.key) == 32
        assert fetch.valid_until_t_emul == lifecycle.current("d2").valid_until_t_emul
        assert 0 < fetch.network_s < 5
        # The platform decrypts d2's data: same key, via dec_keys with the key id from the message.
        assert resolver.key_for(fetch.key_id) == fetch.key
    assert counts == EXPECTED_COUNTS[transport]
    assert "key=" not in repr(fetch)  # key bytes stay out of reprs (and so out of logs)


def test_devices_get_their_own_keys(world, relay):
    _, lifecycle, _, creds = world
    transport, server = relay
    fetched = {d: fetch_device_key(transport, server.url, creds[d]) for d in DEVICES}
    assert len({f.key for f in fetched.values()}) == len(DEVICES)
    assert all(fetched[d].key == lifecycle.current(d).key for d in DEVICES)


def test_psk_wrap_with_wrong_psk_fails(world, relay):
    _, _, _, creds = world
    transport, server = relay
    if transport != "psk_wrap":
        pytest.skip("psk transport only")
    impostor = creds["d1"].__class__(**{**creds["d1"].__dict__, "psk": creds["d2"].psk})
    with pytest.raises(UnwrapError):
        fetch_device_key(transport, server.url, impostor)


def test_psk_wrap_needs_challenge_and_known_device(world, relay):
    transport, server = relay
    if transport != "psk_wrap":
        pytest.skip("psk transport only")
    client = HttpClient(server.url, None)
    assert client.request("GET", "/device/v1/d1/key")[0] == 400
    challenge = base64.urlsafe_b64encode(bytes(16)).decode()
    assert client.request("GET", f"/device/v1/d9/key?challenge={challenge}")[0] == 404


def test_tls_relay_refuses_foreign_and_missing_certificates(world, relay, tmp_path):
    pki_dir, _, _, creds = world
    transport, server = relay
    if transport == "psk_wrap":
        pytest.skip("TLS transports only")
    with pytest.raises(ssl.SSLError) as refused:
        HttpClient(server.url, client_context(pki_dir / "ca.crt"), "relay-gw").request("GET", "/device/v1/key")
    assert_tls_refused(refused, "TLSV13_ALERT_CERTIFICATE_REQUIRED")
    rogue = pki.provision_device(tmp_path, "d1")  # same id, another CA
    forged = rogue.__class__(**{**rogue.__dict__, "ca": creds["d1"].ca})
    with pytest.raises(FetchError) as info:
        fetch_device_key(transport, server.url, forged)
    assert info.value.status == 0
    # A valid SAE certificate that is not a provisioned device gets no key.
    platform = pki.entity_paths(pki_dir, "platform", "SAE")
    tls = client_context(platform.ca, platform.cert, platform.key)
    assert HttpClient(server.url, tls, "relay-gw").request("GET", "/device/v1/key")[0] == 404


def test_refresh_gives_new_keys_and_the_old_ones_still_resolve(world, relay):
    _, lifecycle, resolver, creds = world
    transport, server = relay
    old = fetch_device_key(transport, server.url, creds["d3"])
    generation = lifecycle.current("d3").generation
    server.now = lambda: old.valid_until_t_emul  # a refresh period later: the relay renews on the fetch
    try:
        new = fetch_device_key(transport, server.url, creds["d3"])
    finally:
        server.now = None
    assert new.key_id != old.key_id and new.key != old.key
    assert new.valid_until_t_emul == old.valid_until_t_emul + REFRESH_S
    assert lifecycle.current("d3").generation == generation + 1
    assert resolver.key_for(new.key_id) == new.key
    assert resolver.key_for(old.key_id) == old.key


def test_wrap_binds_device_key_id_and_challenge():
    psk, key = bytes(range(32)), bytes(32)
    nonce, wrapped = wrap_key(psk, "d1", "kid", b"c" * 16, key)
    assert unwrap_key(psk, "d1", "kid", b"c" * 16, nonce, wrapped) == key
    for args in (("d2", "kid", b"c" * 16), ("d1", "other", b"c" * 16), ("d1", "kid", b"d" * 16)):
        with pytest.raises(UnwrapError):
            unwrap_key(psk, *args, nonce, wrapped)


def test_unknown_transport_rejected(world):
    _, _, _, creds = world
    with pytest.raises(ValueError, match="transport"):
        fetch_device_key("carrier_pigeon", "http://127.0.0.1:1", creds["d1"])


def test_relay_process_psk_wrap_needs_provisioned_psks(tmp_path):
    import subprocess
    import sys
    pki.CertificateAuthority(tmp_path).ensure("gateway", "SAE")
    result = subprocess.run([sys.executable, "-m", "harness.kme.relay", "--listen", "127.0.0.1:0",
                             "--transport", "psk_wrap", "--pki", str(tmp_path), "--kme", "https://127.0.0.1:1",
                             "--device", "d1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "psk/d1.psk: missing" in result.stderr


def test_load_psk(tmp_path):
    with pytest.raises(pki.PkiError, match="missing"):
        pki.load_psk(tmp_path, "d1")
    made = pki.provision_device(tmp_path, "d1").psk
    assert pki.load_psk(tmp_path, "d1") == made


def test_a_device_refused_before_it_ever_had_a_key_gets_its_provisioned_one(tmp_path):
    """Steady state: every key provisioned a period old, the link then empty. The devices begin the
    mode without keys, so the first refusal hands a device its provisioned ("previous") key; once it
    holds one, a refusal is a 503 and it keeps that key."""
    link = ClavisLinkPair(rate_bps=0, capacity_keys=10, seed=11, prefill_keys=2).start()
    pair = start_pair(tmp_path, *link.suppliers())
    ca = pki.CertificateAuthority(tmp_path)
    gw = ca.ensure("gateway", "SAE")
    ca.ensure("platform", "SAE")
    lifecycle = GatewayKeyLifecycle(EtsiClient(pair.alice_url, ALICE_KME_ID, gw.ca, gw.cert, gw.key), "platform",
                                    ["s1", "s2"], REFRESH_S, backdate_s=REFRESH_S, record=lambda *row: rows.append(row),
                                    previous_key_on_refusal=True)
    rows: list = []
    lifecycle.provision(0.0)  # the two keys the link had
    creds = {d: pki.provision_device(tmp_path, d) for d in ("s1", "s2")}
    server = RelayServer(("127.0.0.1", 0), "tls_full", lifecycle, tmp_path, now=lambda: 10.0)
    server.start_in_thread()
    try:
        provisioned = lifecycle.current("s1")
        first = fetch_device_key("tls_full", server.url, creds["s1"])  # due, the link empty: refused
        assert first.key_id == provisioned.key_id and first.key == provisioned.key
        assert lifecycle.holds("s1") and not lifecycle.holds("s2")
        with pytest.raises(FetchError) as again:
            fetch_device_key("tls_full", server.url, creds["s1"])
        assert again.value.status == 503
        assert [row[2] for row in rows] == ["refused", "refused"] and lifecycle.counts["refused"] == 2
        lifecycle.previous_key_on_refusal = False  # e.g. a restarted relay: it does not know what s2 holds
        with pytest.raises(FetchError) as restarted:
            fetch_device_key("tls_full", server.url, creds["s2"])
        assert restarted.value.status == 503 and not lifecycle.holds("s2")
    finally:
        server.shutdown()
        server.server_close()
        pair.stop()
        link.stop()
