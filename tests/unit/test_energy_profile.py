"""Device profile loading: shipped values, sources next to every figure, clear errors for bad input."""

import re
from pathlib import Path

import pytest

from harness.energy.profile import PROFILES_DIR, DeviceProfile, ProfileError


@pytest.fixture(scope="module")
def fipy():
    return DeviceProfile.load("fipy")


def test_fipy_values_are_the_sourced_ones(fipy):
    # reference.md §5: FiPy deep sleep 21 uA, 240 MHz CPU up to 68 mA, RX 95-100 mA, TX 240 mA (11b).
    currents = fipy.currents_ma
    assert currents["deep_sleep"] == pytest.approx(0.021)
    assert 30.0 <= currents["cpu"] <= 68.0
    assert 95.0 <= currents["radio_listen"] <= 100.0
    assert currents["radio_tx"] == pytest.approx(240.0)
    assert fipy.voltage_v == pytest.approx(3.3)
    assert fipy.timing_s("boot") == pytest.approx(0.27)
    assert fipy.timing_s("wifi_associate") == pytest.approx(0.2)
    assert fipy.op_seconds("ecc_keygen_p256") == pytest.approx(0.266)
    assert fipy.op_seconds("ecdh_p256") == pytest.approx(0.265)
    assert fipy.radio_listens_while_associated is True
    assert fipy.battery_capacity_mah == pytest.approx(2500.0)


def test_every_figure_in_shipped_profiles_has_a_source_or_is_marked_an_assumption():
    for path in PROFILES_DIR.glob("*.toml"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            match = re.match(r"\s*(\w+)\s*=\s*([-\d.eE_+]+|true|false)\s*(#.*)?$", line)
            if not match:
                continue
            notes = [match.group(3) or ""]
            back = number - 1
            while back >= 0 and lines[back].strip():  # the comment block above, up to a blank line
                notes.append(lines[back])
                back -= 1
            text = " ".join(notes).lower()
            where = f"{path.name}:{number + 1} {match.group(1)}"
            assert "source" in text or "assumption" in text, f"{where} has no source"


def test_hardware_switch_selects_software_timings(fipy):
    soft = fipy.with_values({"crypto.hardware_acceleration": False})
    assert soft.op_seconds("ecdh_p256") == pytest.approx(0.310)
    assert soft.op_seconds("sha256", 1_300_000) == pytest.approx(1.0)
    assert fipy.op_seconds("aes", 7_800_000) == pytest.approx(1.0)


def test_scaled_ecc_doubles_every_ecc_operation_only(fipy):
    doubled = fipy.scaled_ecc(2.0)
    for op in ("ecc_keygen_p256", "ecdh_p256", "ecdsa_sign_p256", "ecdsa_verify_p256", "x25519_keygen",
               "x25519_agree"):
        assert doubled.op_seconds(op) == pytest.approx(2 * fipy.op_seconds(op))
    assert doubled.op_seconds("aes", 1000) == pytest.approx(fipy.op_seconds("aes", 1000))


def test_tx_airtime_counts_preamble_headers_and_payload(fipy):
    # 1 frame: 192 us preamble + (100 + 76) bytes at 11 Mbit/s.
    assert fipy.tx_airtime_s(100) == pytest.approx(192e-6 + 176 * 8 / 11e6)
    # 3000 bytes need 3 frames of at most 1460.
    assert fipy.tx_airtime_s(3000) == pytest.approx(3 * 192e-6 + (3000 + 3 * 76) * 8 / 11e6)
    assert fipy.tx_airtime_s(0) == 0.0


def _write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (PROFILES_DIR / "fipy.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("old,new,expected", [
    ("cpu_ma = 68.0", "cpu_ma = -1.0", r"bad\.toml: \[power\] cpu_ma must be >= 0"),
    ("cpu_ma = 68.0", 'cpu_ma = "lots"', r"\[power\] cpu_ma must be a number"),
    ("boot_s = 0.27", "", r"\[timing\] boot_s is required"),
    ("capacity_mah = 2500.0", "capacity_mah = 2500.0\ncapacity_wh = 9.0",
     r"\[battery\] unknown key 'capacity_wh'"),
    ("radio_listens_while_associated = true", "radio_listens_while_associated = 1",
     r"radio_listens_while_associated must be true or false"),
    ("[timing]", "[timing", r"not valid TOML"),
])
def test_bad_values_name_file_and_key(tmp_path, old, new, expected):
    with pytest.raises(ProfileError, match=expected):
        DeviceProfile.load(_write_variant(tmp_path, old, new))


def test_unknown_names_and_bad_overrides_are_reported(fipy):
    with pytest.raises(ProfileError, match="unknown device profile 'nosuch'.*fipy"):
        DeviceProfile.load("nosuch")
    with pytest.raises(ProfileError, match="no such profile file"):
        DeviceProfile.load("/nonexistent/x.toml")
    with pytest.raises(ProfileError, match=r"\[crypto.hw\] ecdh_p256_s must be >= 0"):
        fipy.with_values({"crypto.hw.ecdh_p256_s": -0.1})
    with pytest.raises(ProfileError, match="unknown crypto operation 'rsa2048'"):
        fipy.op_seconds("rsa2048")
