"""DKG key agreement (P-256, X25519 + HKDF-SHA256). The psk_wrap key wrap is tested with the relay."""


import pytest

from harness import devicecrypto as dc


@pytest.mark.parametrize("curve,public_len", [("p256", 65), ("x25519", 32)])
def test_device_and_platform_derive_the_same_key(curve, public_len):
    device, platform = dc.DkgParty("device", curve), dc.DkgParty("platform", curve)
    assert len(device.public_bytes) == public_len
    k_device = device.derive_key(platform.public_bytes, device_id="d1")
    k_platform = platform.derive_key(device.public_bytes, device_id="d1")
    assert k_device == k_platform and len(k_device) == 32
    assert dc.dkg_key_id(device.public_bytes, platform.public_bytes).startswith("dkg-")
    # The key is bound to the device id and to this exchange.
    assert platform.derive_key(device.public_bytes, device_id="d2") != k_device
    other = dc.DkgParty("platform", curve)
    assert device.derive_key(other.public_bytes, device_id="d1") != k_device


def test_dkg_key_seals_and_opens_a_reading():
    device, platform = dc.DkgParty("device"), dc.DkgParty("platform")
    key_id = dc.dkg_key_id(device.public_bytes, platform.public_bytes)
    payload = dc.seal_reading(device.derive_key(platform.public_bytes, device_id="d1"), device="d1", seq=1,
                              t_sent=1.0, t_emul=1.0, mode="dkg", key_id=key_id, reading={"t": 20.5})
    platform_key = platform.derive_key(device.public_bytes, device_id="d1")
    assert dc.open_reading(platform_key, payload)[1] == {"t": 20.5}


def test_bad_public_keys_and_arguments():
    device = dc.DkgParty("device", "p256")
    with pytest.raises(dc.KeyExchangeError, match="invalid p256 public key"):
        device.derive_key(b"\x04" + b"\x01" * 64, device_id="d1")
    with pytest.raises(dc.KeyExchangeError):
        dc.DkgParty("device", "x25519").derive_key(b"short", device_id="d1")
    with pytest.raises(ValueError, match="curve must be"):
        dc.DkgParty("device", "p384")
    with pytest.raises(ValueError, match="role must be"):
        dc.DkgParty("gateway")

