"""Device-side cryptography and data: sealed MQTT readings, DKG key agreement, QKD key unwrap, sensors.

- Readings: AES-256-GCM under the device's current key; the cleartext header fields of the MQTT payload
  contract (v, device, seq, t_sent, t_emul, mode, key_id) are the AEAD associated data, encoded as
  canonical JSON (sorted keys, no spaces) so device and platform build byte-identical bytes.
- DKG: an ECC key pair on each side (P-256 by default, X25519 as option), public keys exchanged over
  the network, ECDH, then HKDF-SHA256 bound to both public keys and the device id, so device and
  platform derive the same 32-byte AES key.
- QKD keys reach the device through the gateway relay (:mod:`harness.kme.device`); over the
  ``psk_wrap`` transport they travel AES-GCM-wrapped under the device's pre-shared key (:mod:`harness.kme.wrap`).
- A seeded Pysense sensor model gives plausible readings.
Everything is real cryptography from ``cryptography``; the ESP32 time of each step is accounted
separately by :mod:`harness.energy`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from harness.enums import DkgCurve, Mode, values

PAYLOAD_VERSION = 1
#: Cleartext header fields of the MQTT reading payload; they form the AEAD associated data.
HEADER_FIELDS = ("v", "device", "seq", "t_sent", "t_emul", "mode", "key_id")
MODES = values(Mode)
KEY_BYTES = 32      # paper: 256-bit keys
NONCE_BYTES = 12    # AES-GCM standard nonce (NIST SP 800-38D)
CURVES = values(DkgCurve)
DKG_INFO = b"qiot-dkg-v1|"


class PayloadError(ValueError):
    """A reading payload is malformed; the message names the offending field."""


class DecryptError(PayloadError):
    """A reading payload failed authentication (wrong key, or tampered header/ciphertext)."""


class KeyExchangeError(ValueError):
    """A public key received over the network is invalid."""


#: MQTT topics of the device/platform exchanges (a device's readings; the DKG key agreement).
READING_TOPIC = "qiot/{device}/reading"
DKG_REQUEST_TOPIC = "qiot/{device}/dkg/request"
DKG_RESPONSE_TOPIC = "qiot/{device}/dkg/response"


def topic_for(device: str) -> str:
    """MQTT topic of a device's readings."""
    return READING_TOPIC.format(device=device)


# --- readings ----------------------------------------------------------------------------------
def associated_data(header: Mapping[str, Any]) -> bytes:
    """The AEAD associated data: canonical JSON of the header fields."""
    try:
        fields = {name: header[name] for name in HEADER_FIELDS}
    except KeyError as exc:
        raise PayloadError(f"payload header lacks field {exc.args[0]!r}") from None
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def seal_reading(key: bytes, *, device: str, seq: int, t_sent: float, t_emul: float, mode: str,
                 key_id: str, reading: Mapping[str, Any], nonce: bytes | None = None) -> bytes:
    """Encrypt ``reading`` (JSON) with AES-GCM and return the UTF-8 JSON MQTT payload."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    header = {"v": PAYLOAD_VERSION, "device": device, "seq": int(seq), "t_sent": float(t_sent),
              "t_emul": float(t_emul), "mode": mode, "key_id": str(key_id)}
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    plaintext = json.dumps(reading, sort_keys=True, separators=(",", ":")).encode()
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, associated_data(header))
    payload = dict(header, nonce=base64.b64encode(nonce).decode(), ct=base64.b64encode(ciphertext).decode())
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_payload(payload: bytes | str) -> tuple[dict[str, Any], bytes, bytes]:
    """Split a payload into (header, nonce, ciphertext) without decrypting; raise PayloadError."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PayloadError("payload is not a JSON object")
    header = {name: data.get(name) for name in HEADER_FIELDS}
    for name, kinds in (("v", int), ("device", str), ("seq", int), ("t_sent", (int, float)),
                        ("t_emul", (int, float)), ("mode", str), ("key_id", str)):
        if not isinstance(header[name], kinds) or isinstance(header[name], bool):
            raise PayloadError(f"payload field {name!r} missing or of wrong type: {header[name]!r}")
    if header["v"] != PAYLOAD_VERSION:
        raise PayloadError(f"payload field 'v': unsupported version {header['v']!r}")
    try:
        nonce = base64.b64decode(data["nonce"], validate=True)
        ciphertext = base64.b64decode(data["ct"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise PayloadError(f"payload nonce/ct missing or not base64: {exc}") from None
    if len(nonce) != NONCE_BYTES:
        raise PayloadError(f"payload field 'nonce': {len(nonce)} bytes, expected {NONCE_BYTES}")
    return header, nonce, ciphertext


def open_reading(key: bytes | Callable[[Mapping[str, Any]], bytes],
                 payload: bytes | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Authenticate and decrypt a payload: returns (header, reading).

    ``key`` is the AES key, or a function of the header returning it (the platform's lookup by device
    and key id). Raises DecryptError if authentication fails, PayloadError if malformed.
    """
    header, nonce, ciphertext = parse_payload(payload)
    aes_key = key(header) if callable(key) else key
    try:
        plaintext = AESGCM(aes_key).decrypt(nonce, ciphertext, associated_data(header))
    except InvalidTag:
        raise DecryptError(f"reading {header['device']}#{header['seq']} (key {header['key_id']}) "
                           "failed authentication") from None
    return header, json.loads(plaintext)


# --- DKG ---------------------------------------------------------------------------------------
class DkgParty:
    """One side of the DKG key agreement: an ephemeral ECC key pair and the derivation of the AES key.

    The device and the platform each make one; they exchange ``public_bytes`` over the network and
    ``derive_key`` gives both the same key. Public keys: P-256 as an uncompressed X9.62 point (65 bytes),
    X25519 raw (32 bytes).
    """

    def __init__(self, role: str, curve: str = "p256") -> None:
        if role not in ("device", "platform"):
            raise ValueError(f"role must be 'device' or 'platform', got {role!r}")
        if curve not in CURVES:
            raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")
        self.role, self.curve = role, curve
        if curve == "p256":
            self._private = ec.generate_private_key(ec.SECP256R1())
            self.public_bytes = self._private.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        else:
            self._private = x25519.X25519PrivateKey.generate()
            self.public_bytes = self._private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def derive_key(self, peer_public: bytes, *, device_id: str, length: int = KEY_BYTES) -> bytes:
        """Agree with the peer's public key and derive the AES key (HKDF-SHA256)."""
        try:
            if self.curve == "p256":
                peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_public)
                secret = self._private.exchange(ec.ECDH(), peer)
            else:
                peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
                secret = self._private.exchange(peer)
        except (ValueError, TypeError) as exc:
            raise KeyExchangeError(f"invalid {self.curve} public key from peer: {exc}") from None
        device_pub, platform_pub = ((self.public_bytes, peer_public) if self.role == "device"
                                    else (peer_public, self.public_bytes))
        # Salt binds the key to this exchange's transcript; info binds it to the device.
        return HKDF(hashes.SHA256(), length, salt=device_pub + platform_pub,
                    info=DKG_INFO + device_id.encode()).derive(secret)


def dkg_key_id(device_public: bytes, platform_public: bytes) -> str:
    """A key id both sides compute from the exchanged public keys (for the payload's key_id)."""
    return "dkg-" + hashlib.sha256(device_public + platform_public).hexdigest()[:16]


# --- Pysense sensors ---------------------------------------------------------------------------
@dataclass
class PysenseSensors:
    """Plausible, seeded readings of a Pysense board's sensors in an indoor lab.

    Sensors: SI7006-A20 temperature/humidity, MPL3115A2 pressure, LTR-329 light, LIS2HH12 accelerometer,
    and the board's battery voltage. Defaults describe an indoor room (assumption: the paper gives no
    readings): a daily cycle plus Gaussian noise, a slow pressure random walk, a device lying flat.
    """

    seed: int = 1
    temperature_mean_c: float = 21.0       # assumption: indoor lab
    temperature_daily_amp_c: float = 2.0   # assumption
    temperature_noise_c: float = 0.1       # assumption, of the order of the SI7006's +/-0.4 C accuracy
    humidity_mean_pct: float = 45.0        # assumption
    humidity_daily_amp_pct: float = 3.0    # assumption
    humidity_noise_pct: float = 0.5        # assumption
    pressure_mean_hpa: float = 1013.25     # ISA standard sea-level pressure
    pressure_step_hpa: float = 0.02        # assumption: random-walk step per reading
    light_day_lux: float = 400.0           # assumption: lit office (EN 12464-1 recommends ~500 lx)
    light_noise_lux: float = 2.0           # assumption
    accel_noise_g: float = 0.01            # assumption
    battery_v: float = 3.7                 # nominal single-cell LiPo voltage (cell datasheets)
    battery_noise_v: float = 0.005         # assumption: ADC noise
    _rng: np.random.Generator = field(init=False, repr=False)
    _pressure: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._pressure = self.pressure_mean_hpa

    def read(self, t_emul_s: float, battery_v: float | None = None) -> dict[str, Any]:
        """One reading at emulated time ``t_emul_s``; ``battery_v`` overrides the voltage model."""
        rng = self._rng
        day = math.cos(2 * math.pi * t_emul_s / 86_400.0)  # +1 at midnight, -1 at noon
        temperature = (self.temperature_mean_c - self.temperature_daily_amp_c * day
                       + rng.normal(0, self.temperature_noise_c))
        humidity = (self.humidity_mean_pct + self.humidity_daily_amp_pct * day
                    + rng.normal(0, self.humidity_noise_pct))
        self._pressure += rng.normal(0, self.pressure_step_hpa)
        light = self.light_day_lux * max(0.0, -day) + abs(rng.normal(0, self.light_noise_lux))
        accel = [rng.normal(0, self.accel_noise_g), rng.normal(0, self.accel_noise_g),
                 1.0 + rng.normal(0, self.accel_noise_g)]
        voltage = (self.battery_v if battery_v is None else battery_v) + rng.normal(0, self.battery_noise_v)
        return {"temperature_c": round(temperature, 2),
                "humidity_pct": round(min(100.0, max(0.0, humidity)), 1),
                "pressure_hpa": round(self._pressure, 2), "light_lux": round(light, 1),
                "accel_g": [round(a, 3) for a in accel], "battery_v": round(voltage, 3)}
