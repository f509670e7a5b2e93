"""The KME key store: reservations all-or-nothing and once, the pool oldest first, kept on disk."""

import stat

import pytest

from harness.kme import pki
from harness.kme.keystore import STORE_FILE, KeyStore, Reservation


@pytest.mark.parametrize("on_disk", [False, True])
def test_reservations_taken_once_and_all_or_nothing(tmp_path, on_disk):
    store = KeyStore(tmp_path / "ks" if on_disk else None)
    a, b = Reservation("gw", "pl", 256, b"a" * 32), Reservation("gw", "pl", 128, b"b" * 32)
    store.reserve([("k1", a), ("k2", b)])
    found = store.reservations(["k1", "k2", "k3"])
    assert found[:2] == [a, b] and found[2] is None
    assert not store.take_reservations(["k1", "k3"], [a, None])  # k3 missing: nothing taken
    assert store.reservation_count == 2
    assert store.take_reservations(["k1", "k2"], found[:2])
    assert not store.take_reservations(["k1"], [a])  # a second time: refused
    assert store.reservation_count == 0
    assert "a" * 32 not in repr(a)


def test_drop_only_the_named_pairs_reservations():
    store = KeyStore()
    store.reserve([("k1", Reservation("gw", "pl", 8, b"1")), ("k2", Reservation("x", "pl", 8, b"2"))])
    assert set(store.drop_reservations(["k1", "k2", "k9"], master="gw", slave="pl")) == {"k1"}
    assert store.reservations(["k2"])[0].master == "x"


def test_pool_oldest_first_and_pruning():
    store = KeyStore()
    store.pool_put([(7, b"7"), (3, b"3"), (5, b"5")])
    assert store.pool_oldest() == 3 and store.pool_count == 3
    assert store.pool_take(2) == [(3, b"3"), (5, b"5")]
    assert store.pool_drop(7) and not store.pool_drop(7)
    assert store.pool_oldest() is None and store.pool_take(1) == []


def test_store_survives_reopening_and_is_private(tmp_path):
    store = KeyStore(tmp_path / "ks")
    store.reserve([("k1", Reservation("gw", "pl", 256, b"k" * 32))])
    store.pool_put([(11, b"p" * 32)])
    store.close()  # as after a crash: everything committed is on disk
    again = KeyStore(tmp_path / "ks")
    assert again.reservations(["k1"]) == [Reservation("gw", "pl", 256, b"k" * 32)]
    assert again.pool_take(5) == [(11, b"p" * 32)]
    assert stat.S_IMODE((tmp_path / "ks").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "ks" / STORE_FILE).stat().st_mode) == 0o600
    again.close()


def test_known_saes_are_those_the_ca_certified(tmp_path):
    ca = pki.CertificateAuthority(tmp_path)
    ca.ensure("gateway", "SAE")
    ca.ensure("kme-bob", "KME", ("127.0.0.1",))
    known = pki.KnownSaes(tmp_path)
    assert known("gateway") and not known("kme-bob") and not known("nobody") and not known("../ca")
    rogue = pki.CertificateAuthority(tmp_path / "rogue").ensure("intruder", "SAE")
    (tmp_path / "sae").joinpath("intruder.crt").write_bytes(rogue.cert.read_bytes())  # another CA's
    assert not known("intruder")
    ca.ensure("late", "SAE")  # certified after the KME started: found on the next request
    assert known("late")
