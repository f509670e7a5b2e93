"""Key lifecycle: provisioning one key per device (chunked), refresh timing, platform resolution."""

import threading

import pytest

from harness.kme import etsi, pki
from harness.kme.client import EtsiClient
from harness.kme.lifecycle import GatewayKeyLifecycle, PlatformKeyResolver
from harness.kme.pair import ALICE_KME_ID, BOB_KME_ID, start_pair
from tests.support.clavislink import ClavisLinkPair


@pytest.fixture(scope="module")
def kmes(tmp_path_factory):
    pki_dir = tmp_path_factory.mktemp("pki")
    link = ClavisLinkPair(rate_bps=0, capacity_keys=500, seed=5, prefill_keys=500).start()
    pair = start_pair(pki_dir, *link.suppliers(), limits=etsi.KmeLimits(max_key_per_request=7))
    ca = pki.CertificateAuthority(pki_dir)
    gw, pl = ca.ensure("gateway", "SAE"), ca.ensure("platform", "SAE")
    gateway = EtsiClient(pair.alice_url, ALICE_KME_ID, gw.ca, gw.cert, gw.key)
    platform = EtsiClient(pair.bob_url, BOB_KME_ID, pl.ca, pl.cert, pl.key)
    yield gateway, platform, link.bob_buffer
    pair.stop()
    link.stop()


def test_provision_asks_one_key_per_device_in_chunks(kmes):
    gateway, platform, buffer = kmes
    devices = [f"d{i}" for i in range(1, 24)]  # 23 devices, 7 per request -> 4 requests
    before = buffer.available
    lc = GatewayKeyLifecycle(gateway, "platform", devices, 1800.0, max_key_per_request=7)
    lc.provision(100.0)
    assert buffer.available == before - 23
    current = [lc.current(d) for d in devices]
    assert len({c.key_id for c in current}) == 23
    assert all(c.issued_t_emul == 100.0 and c.valid_until_t_emul == 1900.0 for c in current)
    resolver = PlatformKeyResolver(platform, "gateway")
    assert all(resolver.key_for(c.key_id) == c.key for c in current)
    assert lc.current("d99") is None
    assert "key=" not in repr(current[0])


def test_a_key_is_renewed_when_its_device_asks_a_period_later(kmes):
    gateway, _, buffer = kmes
    seen = []
    lc = GatewayKeyLifecycle(gateway, "platform", ["a1", "a2"], 1800.0, record=lambda *row: seen.append(row))
    lc.provision(0.0)
    first = lc.current("a1")
    assert lc.key_for("a1", 1799.9) == (first, "current")
    before = buffer.available
    renewed, outcome = lc.key_for("a1", 1800.0)
    assert outcome == "renewed" and renewed.key_id != first.key_id and renewed.generation == 2
    assert renewed.valid_until_t_emul == 3600.0 and buffer.available == before - 1
    assert lc.key_for("a2", 100.0)[1] == "current"  # each device on its own schedule
    assert [row[2] for row in seen] == ["current", "renewed", "current"] and lc.counts["renewed"] == 1


def test_a_device_waking_once_a_period_renews_even_when_it_arrives_a_little_earlier(kmes):
    """Its fetch comes some seconds into each wake; one period later it came 0.3 s sooner into the
    wake: without the grace the key looked 0.3 s short of a period old and was kept."""
    gateway, _, _ = kmes
    strict = GatewayKeyLifecycle(gateway, "platform", ["w1"], 1800.0)
    graced = GatewayKeyLifecycle(gateway, "platform", ["w1"], 1800.0, renewal_grace_s=900.0)
    for lc in (strict, graced):
        lc.provision(0.0)
        lc.key_for("w1", 1801.2)          # its wake at 1800, the fetch 1.2 s into it: renewed
    assert strict.key_for("w1", 3600.9)[1] == "current"   # the wake at 3600, 0.9 s in
    assert graced.key_for("w1", 3600.9)[1] == "renewed"
    assert graced.key_for("w1", 3700.0)[1] == "current"   # still at most one renewal a period
    with pytest.raises(ValueError, match="renewal_grace_s"):
        GatewayKeyLifecycle(gateway, "platform", ["w1"], 1800.0, renewal_grace_s=1800.0)


def test_steady_state_start_makes_every_first_fetch_a_renewal(kmes):
    gateway, _, _ = kmes
    lc = GatewayKeyLifecycle(gateway, "platform", ["s1"], 1800.0, backdate_s=1800.0)
    lc.provision(5000.0)
    assert lc.current("s1").valid_until_t_emul == 5000.0
    assert lc.key_for("s1", 5000.0)[1] == "renewed"


def test_a_device_the_link_cannot_serve_is_refused_and_keeps_its_key(tmp_path):
    link = ClavisLinkPair(rate_bps=0, capacity_keys=10, seed=8, prefill_keys=3).start()
    pair = start_pair(tmp_path, *link.suppliers())
    try:
        gw = pki.CertificateAuthority(tmp_path).ensure("gateway", "SAE")
        pki.CertificateAuthority(tmp_path).ensure("platform", "SAE")
        lc = GatewayKeyLifecycle(EtsiClient(pair.alice_url, ALICE_KME_ID, gw.ca, gw.cert, gw.key), "platform",
                                 ["c1", "c2", "c3", "c4"], 1800.0, max_key_per_request=4)
        with pytest.raises(etsi.EtsiError) as info:  # 4 devices, 3 keys: one left without
            lc.provision(0.0)
        assert info.value.status == 503
        assert [lc.current(d) is not None for d in ("c1", "c2", "c3", "c4")] == [True, True, True, False]
        old = lc.current("c1")
        assert lc.key_for("c1", 1800.0) == (old, "refused")  # nothing left: previous key kept
        link.add_keys(2)
        lc.provision(10.0)  # goes on where it stopped: only c4 still needed one
        assert lc.current("c4") is not None and lc.current("c1") == old
        assert lc.key_for("c1", 1800.0)[1] == "renewed"
        assert lc.counts == {"renewed": 1, "refused": 1, "current": 0}
    finally:
        pair.stop()
        link.stop()


def test_resolver_caches_because_dec_keys_delivers_once(kmes):
    gateway, platform, _ = kmes
    (kid, key), = gateway.enc_keys("platform")
    resolver = PlatformKeyResolver(platform, "gateway")
    assert resolver.key_for(kid) == key
    assert resolver.key_for(kid) == key  # from the cache: the KME has forgotten it
    with pytest.raises(etsi.EtsiError) as info:
        PlatformKeyResolver(platform, "gateway").key_for(kid)
    assert info.value.status == 400


@pytest.mark.parametrize("devices,period", [([], 1800.0), (["x", "x"], 1800.0), (["x"], 0.0)])
def test_bad_lifecycle_settings(kmes, devices, period):
    with pytest.raises(ValueError):
        GatewayKeyLifecycle(kmes[0], "platform", devices, period)
