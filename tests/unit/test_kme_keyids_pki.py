"""Key-id mapping and the local PKI (harness.kme.keyids, harness.kme.pki)."""

import stat
import uuid

import pytest
from cryptography import x509

from harness.kme import keyids, pki


@pytest.mark.parametrize("clavis_id", [1, 2, 0xFFFFFFFF, 1 << 32, 0x123456789ABCDEF0, (1 << 64) - 1])
def test_uuid_round_trip(clavis_id):
    text = keyids.uuid_for(clavis_id)
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.variant == uuid.RFC_4122
    assert parsed.version == 8
    assert keyids.clavis_id_for(text) == clavis_id
    assert keyids.clavis_id_for(text.upper()) == clavis_id


def test_uuid_distinct_and_deterministic():
    ids = [keyids.uuid_for(i) for i in range(1, 5000)]
    assert len(set(ids)) == len(ids)
    assert keyids.uuid_for(77) == keyids.uuid_for(77)


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4()), "", None, 5])
def test_foreign_key_ids_rejected(bad):
    with pytest.raises(keyids.KeyIdError):
        keyids.clavis_id_for(bad)


@pytest.mark.parametrize("bad", [-1, 1 << 64, 1.5, "3"])
def test_out_of_range_clavis_ids_rejected(bad):
    with pytest.raises(keyids.KeyIdError):
        keyids.uuid_for(bad)


def test_pki_layout_identity_and_idempotence(tmp_path):
    ca = pki.CertificateAuthority(tmp_path)
    kme = ca.ensure("kme-bob", "KME", ("127.0.0.1",))
    sae = ca.ensure("platform", "SAE")
    assert (tmp_path / "ca.crt").exists() and (tmp_path / "kme" / "kme-bob.key").exists()
    for key in (tmp_path / "ca.key", kme.key, sae.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(kme.cert.read_bytes())
    assert pki.identity_of(cert) == ("kme-bob", "KME")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kme-bob"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert pki.identity_of(x509.load_pem_x509_certificate(sae.cert.read_bytes())) == ("platform", "SAE")
    before = (kme.cert.read_bytes(), sae.cert.read_bytes(), (tmp_path / "ca.crt").read_bytes())
    again = pki.CertificateAuthority(tmp_path)
    again.ensure("kme-bob", "KME", ("127.0.0.1",))
    again.ensure("platform", "SAE")
    assert (kme.cert.read_bytes(), sae.cert.read_bytes(), (tmp_path / "ca.crt").read_bytes()) == before
    # Asking for a new address re-issues, keeping the identity.
    again.ensure("kme-bob", "KME", ("127.0.0.2",))
    assert kme.cert.read_bytes() != before[0]


def test_certificate_from_foreign_ca_is_replaced(tmp_path):
    other = pki.CertificateAuthority(tmp_path / "other")
    foreign = other.ensure("d1", "SAE")
    ours = pki.CertificateAuthority(tmp_path / "ours")
    target = tmp_path / "ours" / "sae" / "d1.crt"
    target.parent.mkdir(parents=True)
    target.write_bytes(foreign.cert.read_bytes())
    target.with_suffix(".key").write_bytes(foreign.key.read_bytes())
    ours.ensure("d1", "SAE")
    cert = x509.load_pem_x509_certificate(target.read_bytes())
    assert ours.issued(cert)
    assert not other.issued(cert)


def test_device_credentials_are_per_device(tmp_path):
    creds = [pki.provision_device(tmp_path, f"d{i}") for i in range(1, 201)]
    assert len({c.psk for c in creds}) == 200
    assert all(len(c.psk) == pki.PSK_BYTES for c in creds)
    assert pki.provision_device(tmp_path, "d7").psk == creds[6].psk  # stable across calls
    assert len({c.cert.read_bytes() for c in creds}) == 200


@pytest.mark.parametrize("bad", ["", "a b", "../x", "x" * 80, "é"])
def test_bad_ids_rejected(tmp_path, bad):
    with pytest.raises(pki.PkiError):
        pki.CertificateAuthority(tmp_path).ensure(bad, "SAE")


def test_bad_role_and_missing_entity(tmp_path):
    ca = pki.CertificateAuthority(tmp_path)
    with pytest.raises(pki.PkiError, match="role"):
        ca.ensure("x", "ADMIN")
    with pytest.raises(pki.PkiError, match="missing"):
        pki.entity_paths(tmp_path, "nobody", "SAE")
