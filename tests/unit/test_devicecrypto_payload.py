"""Sealed MQTT readings: AES-GCM with the header as associated data, per the payload contract."""

import base64
import json
import os

import pytest

from harness import devicecrypto as dc


@pytest.fixture
def key():
    return os.urandom(32)


def _seal(key, **changes):
    fields = dict(device="d3", seq=12, t_sent=1764078000.25, t_emul=720.5, mode="qkd", key_id="qkd-7",
                  reading=dc.PysenseSensors(seed=5).read(720.5))
    fields.update(changes)
    return dc.seal_reading(key, **fields)


def test_roundtrip_and_contract_fields(key):
    payload = _seal(key)
    data = json.loads(payload.decode("utf-8"))
    assert set(data) == {"v", "device", "seq", "t_sent", "t_emul", "mode", "key_id", "nonce", "ct"}
    assert data["v"] == 1 and data["device"] == "d3" and data["seq"] == 12 and data["mode"] == "qkd"
    assert len(base64.b64decode(data["nonce"])) == 12
    header, reading = dc.open_reading(key, payload)
    assert header["t_sent"] == 1764078000.25 and header["key_id"] == "qkd-7"
    assert reading == dc.PysenseSensors(seed=5).read(720.5)
    assert dc.topic_for("d3") == "qiot/d3/reading"


def test_associated_data_is_canonical_json_of_the_header():
    header = {"v": 1, "device": "d1", "seq": 2, "t_sent": 3.5, "t_emul": 4.0, "mode": "dkg", "key_id": "k"}
    assert dc.associated_data(header) == (b'{"device":"d1","key_id":"k","mode":"dkg","seq":2,'
                                          b'"t_emul":4.0,"t_sent":3.5,"v":1}')


@pytest.mark.parametrize("field,value", [("seq", 13), ("device", "d4"), ("t_emul", 721.0),
                                         ("mode", "dkg"), ("key_id", "qkd-8")])
def test_any_header_change_fails_authentication(key, field, value):
    data = json.loads(_seal(key))
    data[field] = value
    with pytest.raises(dc.DecryptError, match="failed authentication"):
        dc.open_reading(key, json.dumps(data).encode())


def test_wrong_key_and_key_lookup(key):
    payload = _seal(key)
    with pytest.raises(dc.DecryptError):
        dc.open_reading(os.urandom(32), payload)
    keys = {("d3", "qkd-7"): key}
    assert dc.open_reading(lambda h: keys[(h["device"], h["key_id"])], payload)[0]["seq"] == 12


@pytest.mark.parametrize("payload,expected", [
    (b"not json", "not UTF-8 JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 1}', "field 'device' missing"),
    (b'{"v": 2, "device": "d", "seq": 1, "t_sent": 1, "t_emul": 1, "mode": "qkd", "key_id": "k"}',
     "unsupported version"),
    (b'{"v": 1, "device": "d", "seq": 1, "t_sent": 1, "t_emul": 1, "mode": "qkd", "key_id": "k",'
     b' "nonce": "!!", "ct": ""}', "not base64"),
])
def test_malformed_payloads_raise_payload_error(key, payload, expected):
    with pytest.raises(dc.PayloadError, match=expected):
        dc.open_reading(key, payload)


def test_unknown_mode_refused(key):
    with pytest.raises(ValueError, match="mode must be one of"):
        _seal(key, mode="psk")


def test_sensor_readings_are_plausible_and_seeded():
    a, b = dc.PysenseSensors(seed=9), dc.PysenseSensors(seed=9)
    readings = [a.read(t * 60.0) for t in range(1440)]
    assert readings[:5] == [b.read(t * 60.0) for t in range(5)]
    assert readings[0] != dc.PysenseSensors(seed=10).read(0.0)
    for r in readings:
        assert 15 < r["temperature_c"] < 30 and 0 <= r["humidity_pct"] <= 100
        assert 950 < r["pressure_hpa"] < 1070 and r["light_lux"] >= 0
        assert abs(r["accel_g"][2] - 1.0) < 0.1 and 3.0 < r["battery_v"] < 4.3
    lights = [r["light_lux"] for r in readings]
    assert max(lights) > 300 > 10 > min(lights)  # day and night
    assert a.read(0.0, battery_v=3.5)["battery_v"] == pytest.approx(3.5, abs=0.03)
