"""Device energy profiles: currents, timings, crypto implementations, message sizes and battery of a device.

A profile is a TOML file in ``experiments/profiles/``: ``fipy`` is a Pycom FiPy under ESP-IDF with
wolfCrypt's hardware-accelerated C ECC (the optimistic bound for DKG), ``fipy-micropython`` the same
board on Pycom's 2018 MicroPython firmware (the paper's device as shipped). Every figure in a file
carries its source as a comment, or is marked an assumption or an estimate with how it was derived.
This module holds only the schema (types and bounds), no figures: a bad value is reported as
``file: [section] key: problem``.

Crypto is charged per *use*, each naming its implementation: ``[dkg] ecc`` (the device's own key pair
and agreement) and ``[tls] ecc`` (the public-key work of a TLS handshake) each pick an ``[ecc.<name>]``
table; ``[symmetric]`` gives AES and SHA-256 throughputs. Every table states the CPU clock its figures
hold at (``reference_mhz``); a profile's ``[cpu] frequency_mhz`` scales them (CPU-bound code: time
~ 1/f, an estimate). A profile may extend another (``[profile] base``): the base's tables apply first
and the file's own values override them, so a variant states only what differs.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.settings import SettingsError, from_table, read_toml, setting, subsection, with_values

#: Folder of the shipped profiles.
PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "experiments" / "profiles"

#: Public-key operations with a fixed time per call (key ``<op>_s`` in an ``[ecc.<name>]`` table).
ECC_OPS = ("ecc_keygen_p256", "ecdh_p256", "ecdsa_sign_p256", "ecdsa_verify_p256", "x25519_keygen", "x25519_agree")
#: Symmetric operations whose time scales with the bytes processed (key ``<op>_bytes_per_s`` in ``[symmetric]``).
THROUGHPUT_OPS = ("aes", "sha256")
#: The uses of public-key crypto on the device, each a profile section naming its ECC implementation.
CRYPTO_USES = ("dkg", "tls")
#: The key pair and the agreement of one DKG key, per curve (what ``dkg_key_seconds`` adds up).
DKG_KEY_OPS = {"p256": ("ecc_keygen_p256", "ecdh_p256"), "x25519": ("x25519_keygen", "x25519_agree")}


class ProfileError(SettingsError):
    """A profile file is missing, unreadable or holds a bad value; the message names file and key."""


@dataclass(frozen=True, kw_only=True)
class ProfileInfo:
    """The ``[profile]`` table: name, one line about the device, and the profile it extends."""

    name: str = setting(doc="profile name")
    description: str = setting("", doc="one line about the device")
    base: str = setting("", doc="profile this one extends (a shipped name or a .toml path relative to this "
                                "file): its tables apply first, this file's values override them")


@dataclass(frozen=True, kw_only=True)
class Cpu:
    """The ``[cpu]`` table."""

    frequency_mhz: float = setting(doc="CPU clock, MHz; scales every crypto table given at another clock",
                                   above=0.0)


@dataclass(frozen=True, kw_only=True)
class Power:
    """Supply voltage and the current of each Energest state."""

    voltage_v: float = setting(doc="supply voltage, V", minimum=0.1, maximum=48.0)
    deep_sleep_ua: float = setting(doc="deep-sleep current, uA", minimum=0.0)
    cpu_ma: float = setting(doc="CPU active, radio off, mA", minimum=0.0)
    radio_listen_ma: float = setting(doc="radio receiving / listening, mA", minimum=0.0)
    radio_tx_ma: float = setting(doc="radio transmitting, mA", minimum=0.0)
    radio_listens_while_associated: bool = setting(doc="CPU work while associated counts as radio listen")


@dataclass(frozen=True, kw_only=True)
class Radio:
    """What a transmitted frame costs in air time."""

    phy_rate_mbit: float = setting(doc="PHY rate for TX air time, Mbit/s", above=0.0)
    preamble_us: float = setting(doc="PLCP preamble + header per frame, us", minimum=0.0)
    frame_overhead_bytes: int = setting(doc="header bytes per frame", minimum=0)
    mss_bytes: int = setting(doc="payload bytes per frame", minimum=1)


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Fixed durations of the wake's non-crypto steps."""

    boot_s: float = setting(doc="boot after deep sleep until the application runs, s", minimum=0.0)
    wifi_associate_s: float = setting(doc="Wi-Fi association (+ DHCP/TCP set-up) after boot, radio on, s",
                                      minimum=0.0)
    sensor_read_s: float = setting(doc="reading all sensors once, s", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class EccTable:
    """Seconds per public-key operation of one ECC implementation, at the CPU clock ``reference_mhz``."""

    reference_mhz: float = setting(doc="CPU clock at which the times below hold, MHz", above=0.0)
    ecc_keygen_p256_s: float = setting(doc="seconds per P-256 key generation", minimum=0.0)
    ecdh_p256_s: float = setting(doc="seconds per P-256 ECDH", minimum=0.0)
    ecdsa_sign_p256_s: float = setting(doc="seconds per ECDSA P-256 signature", minimum=0.0)
    ecdsa_verify_p256_s: float = setting(doc="seconds per ECDSA P-256 verification", minimum=0.0)
    x25519_keygen_s: float | None = setting(None, doc="seconds per X25519 key generation (omitted: the "
                                                      "implementation has no X25519)", minimum=0.0)
    x25519_agree_s: float | None = setting(None, doc="seconds per X25519 agreement (omitted: no X25519)",
                                           minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class EccImplementations:
    """The ``[ecc.<name>]`` tables: the ECC implementations a profile knows (omitted: not available)."""

    micropython_affine: EccTable | None = setting(None, doc="interpreted MicroPython, affine coordinates")
    micropython_ecdsa013: EccTable | None = setting(None, doc="python-ecdsa 0.13 transcribed to MicroPython")
    micropython_jacobian: EccTable | None = setting(None, doc="interpreted MicroPython, Jacobian coordinates")
    mbedtls_c: EccTable | None = setting(None, doc="mbedTLS C, software bignum")
    wolfcrypt_hw: EccTable | None = setting(None, doc="wolfCrypt C with the ESP32 bignum accelerator")
    wolfcrypt_sw: EccTable | None = setting(None, doc="wolfCrypt C, software bignum")


#: Names of the ECC implementations (the choices of ``[dkg] ecc`` and ``[tls] ecc``).
ECC_IMPLEMENTATIONS = tuple(f.name for f in dataclasses.fields(EccImplementations))


@dataclass(frozen=True, kw_only=True)
class DkgCrypto:
    """The ``[dkg]`` table: the implementation behind the device's own key generation and agreement."""

    ecc: str = setting(doc="ECC implementation ([ecc.<name>]) of DKG's key pair, agreement and signatures",
                       choices=ECC_IMPLEMENTATIONS)
    ecc_time_scale: float = setting(1.0, doc="what-if factor on that implementation's times, for DKG only "
                                             "(1: the implementation's own figures)", above=0.0)


@dataclass(frozen=True, kw_only=True)
class TlsStack:
    """The ``[tls]`` table: the device's TLS client, for the key fetched over HTTPS."""

    ecc: str = setting(doc="ECC implementation ([ecc.<name>]) doing the handshake's public-key operations",
                       choices=ECC_IMPLEMENTATIONS)
    client_certificate: bool = setting(doc="the device presents a certificate (signs CertificateVerify)")
    verify_server_certificate: bool = setting(doc="the device verifies the server's certificate signature "
                                                  "(the ServerKeyExchange signature is verified either way)")
    resumption: bool = setting(doc="the stack can resume a TLS session after deep sleep (abbreviated "
                                   "handshake, no public-key operations)")
    ecc_time_scale: float = setting(1.0, doc="what-if factor on the implementation's times, for TLS only "
                                             "(1: its own figures)", above=0.0)


@dataclass(frozen=True, kw_only=True)
class Symmetric:
    """The ``[symmetric]`` table: AES and SHA-256 throughputs at the CPU clock ``reference_mhz``."""

    reference_mhz: float = setting(doc="CPU clock at which the throughputs hold, MHz", above=0.0)
    aes_bytes_per_s: float = setting(doc="AES throughput, bytes/s", minimum=1.0)
    sha256_bytes_per_s: float = setting(doc="SHA-256 throughput, bytes/s", minimum=1.0)


@dataclass(frozen=True, kw_only=True)
class WireBytes:
    """Application-level message sizes a pure simulation assumes for air time (a run measures them)."""

    key_request: int = setting(doc="key request naming device and key, bytes", minimum=0)
    wrapped_key: int = setting(doc="key response: key id, nonce, wrapped key, headers, bytes", minimum=0)
    tls_full_client: int = setting(doc="device's messages of a full TLS handshake, bytes", minimum=0)
    tls_full_server: int = setting(doc="server's messages of a full TLS handshake, bytes", minimum=0)
    tls_resumed_client: int = setting(doc="device's messages of a resumed TLS handshake, bytes", minimum=0)
    tls_resumed_server: int = setting(doc="server's messages of a resumed TLS handshake, bytes", minimum=0)
    dkg_public_key_msg: int = setting(doc="one DKG public-key message with framing, bytes", minimum=0)
    mqtt_connect: int = setting(doc="MQTT CONNECT, bytes", minimum=0)
    mqtt_publish_header: int = setting(doc="MQTT PUBLISH fixed header + topic + packet id, bytes", minimum=0)
    payload_header: int = setting(doc="cleartext JSON header of a sealed reading, bytes", minimum=0)


@dataclass(frozen=True, kw_only=True)
class CryptoBytes:
    """Bytes hashed or encrypted by the small crypto steps (they drive the throughput-op times)."""

    psk_unwrap: int = setting(doc="AES-GCM unwrap of a key under the pre-shared key, bytes", minimum=0)
    tls_record: int = setting(doc="TLS record carrying the key response, bytes", minimum=0)
    tls_full_transcript: int = setting(doc="SHA-256 work of a full handshake (transcript + PRF), bytes",
                                       minimum=0)
    tls_resumed_transcript: int = setting(doc="SHA-256 work of a resumed handshake, bytes", minimum=0)
    hkdf: int = setting(doc="SHA-256 work of DKG's HKDF, bytes", minimum=0)


@dataclass(frozen=True, kw_only=True)
class SensorModel:
    """The ``[sensors]`` table: the seeded Pysense readings' model (:class:`harness.devicecrypto.PysenseSensors`)."""

    temperature_mean_c: float = setting(doc="mean temperature, C")
    temperature_daily_amp_c: float = setting(doc="daily temperature swing amplitude, C", minimum=0.0)
    temperature_noise_c: float = setting(doc="temperature noise (sd), C", minimum=0.0)
    humidity_mean_pct: float = setting(doc="mean relative humidity, %", minimum=0.0, maximum=100.0)
    humidity_daily_amp_pct: float = setting(doc="daily humidity swing amplitude, %", minimum=0.0)
    humidity_noise_pct: float = setting(doc="humidity noise (sd), %", minimum=0.0)
    pressure_mean_hpa: float = setting(doc="starting pressure, hPa", above=0.0)
    pressure_step_hpa: float = setting(doc="pressure random-walk step per reading (sd), hPa", minimum=0.0)
    light_day_lux: float = setting(doc="light at noon, lux", minimum=0.0)
    light_noise_lux: float = setting(doc="light noise (sd), lux", minimum=0.0)
    accel_noise_g: float = setting(doc="accelerometer noise (sd), g", minimum=0.0)
    battery_v: float = setting(doc="battery voltage read by the board, V", above=0.0)
    battery_noise_v: float = setting(doc="battery voltage ADC noise (sd), V", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class Battery:
    """The ``[battery]`` table."""

    capacity_mah: float = setting(doc="nominal capacity, mAh", minimum=1e-6)
    usable_fraction: float = setting(1.0, doc="share of the nominal capacity that is usable", minimum=1e-6,
                                     maximum=1.0)
    self_discharge_ua: float = setting(0.0, doc="self-discharge current, uA", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """A whole profile file."""

    profile: ProfileInfo = subsection(ProfileInfo)
    cpu: Cpu = subsection(Cpu)
    power: Power = subsection(Power)
    radio: Radio = subsection(Radio)
    timing: Timing = subsection(Timing)
    ecc: EccImplementations = subsection(EccImplementations)
    dkg: DkgCrypto = subsection(DkgCrypto)
    tls: TlsStack = subsection(TlsStack)
    symmetric: Symmetric = subsection(Symmetric)
    wire_bytes: WireBytes = subsection(WireBytes)
    crypto_bytes: CryptoBytes = subsection(CryptoBytes)
    sensors: SensorModel = subsection(SensorModel)
    battery: Battery = subsection(Battery)

    def __post_init__(self) -> None:
        present = [name for name in ECC_IMPLEMENTATIONS if getattr(self.ecc, name) is not None]
        for use in CRYPTO_USES:
            chosen = getattr(self, use).ecc
            if chosen not in present:
                raise ValueError(f"[{use}] ecc = {chosen!r}: the profile has no [ecc.{chosen}] table "
                                 f"(it has: {', '.join(present) or 'none'})")


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile: the file it came from and its typed settings."""

    path: Path
    settings: ProfileSettings

    # --- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path = "fipy") -> "DeviceProfile":
        """Read a profile by name (``experiments/profiles/<name>.toml``) or path; raise ProfileError."""
        path = _resolve(str(name_or_path))
        return cls(path, _validated(path, _merged_table(path, ())))

    def with_values(self, overrides: Mapping[str, Any]) -> "DeviceProfile":
        """A copy with ``{"section.key": value}`` overrides (e.g. ``"ecc.wolfcrypt_hw.ecdh_p256_s"``), validated."""
        return DeviceProfile(self.path, with_values(self.settings, overrides, path=self.path, error=ProfileError))

    def scaled_ecc(self, factor: float) -> "DeviceProfile":
        """A copy with every ECC operation time of every implementation multiplied by ``factor``."""
        changes = {}
        for name in ECC_IMPLEMENTATIONS:
            table = getattr(self.settings.ecc, name)
            if table is None:
                continue
            for op in ECC_OPS:
                seconds = getattr(table, f"{op}_s")
                if seconds is not None:
                    changes[f"ecc.{name}.{op}_s"] = seconds * factor
        return self.with_values(changes)

    def with_dkg_key_seconds(self, seconds: float, curve: str = "p256") -> "DeviceProfile":
        """A copy whose DKG key pair + agreement (for ``curve``) take ``seconds`` at the profile's clock:
        ``[dkg] ecc_time_scale`` set so, DKG's other operations scaled alike, TLS untouched."""
        current = self.dkg_key_seconds(curve)
        if not seconds > 0:
            raise ProfileError(f"{self.path}: DKG key seconds must be > 0, got {seconds!r}")
        scale = self.settings.dkg.ecc_time_scale * seconds / current
        return self.with_values({"dkg.ecc_time_scale": scale})

    # --- typed shortcuts ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.settings.profile.name

    @property
    def voltage_v(self) -> float:
        return self.settings.power.voltage_v

    @property
    def frequency_mhz(self) -> float:
        return self.settings.cpu.frequency_mhz

    @property
    def currents_ma(self) -> dict[str, float]:
        """Current per Energest state (keys as in :data:`harness.energy.energest.STATES`), mA."""
        p = self.settings.power
        return {"deep_sleep": p.deep_sleep_ua / 1000.0, "cpu": p.cpu_ma,
                "radio_tx": p.radio_tx_ma, "radio_listen": p.radio_listen_ma}

    @property
    def radio_listens_while_associated(self) -> bool:
        return self.settings.power.radio_listens_while_associated

    @property
    def mqtt_overhead_bytes(self) -> int:
        """Bytes an MQTT publish adds to the sealed payload (CONNECT + PUBLISH header)."""
        wire = self.settings.wire_bytes
        return wire.mqtt_connect + wire.mqtt_publish_header

    def timing_s(self, key: str) -> float:
        """A ``[timing]`` value by name without the ``_s`` suffix (``boot``, ``wifi_associate``, ...)."""
        try:
            return getattr(self.settings.timing, f"{key}_s")
        except AttributeError:
            raise ProfileError(f"{self.path}: [timing] has no {key}_s") from None

    def op_seconds(self, op: str, nbytes: int = 0) -> float:
        """Device time of one crypto operation at the profile's CPU clock.

        ``op`` is ``<use>.<ecc op>`` (``dkg.ecdh_p256``, ``tls.ecdsa_verify_p256``: the use's
        implementation; a bare ECC op means DKG's), or a throughput op (``aes``, ``sha256``) over
        ``nbytes`` bytes.
        """
        use, _, name = op.rpartition(".")
        if name in ECC_OPS and use in ("",) + CRYPTO_USES:
            section = getattr(self.settings, use or "dkg")
            table = getattr(self.settings.ecc, section.ecc)
            seconds = getattr(table, f"{name}_s")
            if seconds is None:
                raise ProfileError(f"{self.path}: [ecc.{section.ecc}] has no {name}_s: the {use or 'dkg'} "
                                   f"implementation cannot do {name}")
            return seconds * section.ecc_time_scale * table.reference_mhz / self.frequency_mhz
        if not use and name in THROUGHPUT_OPS:
            if nbytes < 0:
                raise ValueError(f"nbytes must be >= 0, got {nbytes}")
            symmetric = self.settings.symmetric
            rate = getattr(symmetric, f"{name}_bytes_per_s") * self.frequency_mhz / symmetric.reference_mhz
            return nbytes / rate
        known = ", ".join([f"[{'|'.join(CRYPTO_USES)}.]{o}" for o in ECC_OPS] + list(THROUGHPUT_OPS))
        raise ProfileError(f"{self.path}: unknown crypto operation {op!r} (known: {known})")

    def dkg_key_seconds(self, curve: str = "p256") -> float:
        """Device seconds of one DKG key: key pair plus agreement on ``curve`` (no signatures)."""
        try:
            ops = DKG_KEY_OPS[str(curve)]
        except KeyError:
            raise ProfileError(f"unknown DKG curve {curve!r} (known: {', '.join(DKG_KEY_OPS)})") from None
        return sum(self.op_seconds(f"dkg.{op}") for op in ops)

    def tx_airtime_s(self, nbytes: int, frames: int | None = None) -> float:
        """Air time to transmit ``nbytes`` application bytes in ``frames`` frames (default: by MSS)."""
        r = self.settings.radio
        if frames is None:
            frames = max(1, -(-nbytes // r.mss_bytes)) if nbytes > 0 else 0
        bits = 8 * (nbytes + frames * r.frame_overhead_bytes)
        return frames * r.preamble_us * 1e-6 + bits / (r.phy_rate_mbit * 1e6)

    @property
    def battery_capacity_mah(self) -> float:
        """Usable capacity: nominal capacity times the usable fraction."""
        b = self.settings.battery
        return b.capacity_mah * b.usable_fraction

    @property
    def self_discharge_ma(self) -> float:
        return self.settings.battery.self_discharge_ua / 1000.0


@functools.lru_cache(maxsize=1)
def default_sensor_model() -> SensorModel:
    """The ``[sensors]`` model of the default profile (for readings made without a profile at hand)."""
    return DeviceProfile.load().settings.sensors


def _validated(path: Path, table: dict) -> ProfileSettings:
    return from_table(ProfileSettings, table, path=path, error=ProfileError)


def _merged_table(path: Path, chain: tuple[Path, ...]) -> dict:
    """The file's table over its base's (recursively); the base is checked on its own first, so its
    mistakes are reported against the base file."""
    table = read_toml(path, ProfileError)
    info = table.get("profile", {})
    base = info.get("base", "") if isinstance(info, dict) else ""
    if not base:
        return table
    if not isinstance(base, str):
        raise ProfileError(f"{path}: [profile] base must be a string, got {base!r}")
    base_path = _resolve(base, relative_to=path.parent)
    if base_path.resolve() in {p.resolve() for p in chain + (path,)}:
        raise ProfileError(f"{path}: [profile] base {base!r} makes a cycle of profiles")
    base_table = _merged_table(base_path, chain + (path,))
    _validated(base_path, base_table)
    return _merge(base_table, table)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _resolve(name_or_path: str, relative_to: Path | None = None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path or (relative_to is None and candidate.exists()):
        if relative_to is not None and not candidate.is_absolute():
            candidate = relative_to / candidate
        if not candidate.is_file():
            raise ProfileError(f"{name_or_path}: no such profile file")
        return candidate
    shipped = PROFILES_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))) or "none"
        raise ProfileError(f"unknown device profile {name_or_path!r} (known: {known}; or give a .toml path)")
    return shipped
