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


def test_refresh_schedule(kmes):
    gateway, _, _ = kmes
    lc = GatewayKeyLifecycle(gateway, "platform", ["a1", "a2"], 1800.0)
    assert lc.current("a1") is None
    assert lc.refresh_if_due(0.0)             # first call provisions
    assert not lc.refresh_if_due(1799.9)
    assert lc.refresh_if_due(1800.0)
    assert lc.generation == 2 and lc.next_refresh_t_emul == 3600.0


def test_run_refreshes_on_the_emulated_clock(kmes):
    gateway, _, _ = kmes
    lc = GatewayKeyLifecycle(gateway, "platform", ["b1"], 1800.0)
    stop = threading.Event()
    now = [0.0]
    seen = []

    def sleep_until(t, _stop):  # emulated time jumps straight to the next refresh
        seen.append(t)
        now[0] = t
        if len(seen) == 3:
            stop.set()
            return False
        return True

    lc.run(lambda: now[0], sleep_until, stop)
    assert seen == [1800.0, 3600.0, 5400.0]
    assert lc.generation == 3


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
