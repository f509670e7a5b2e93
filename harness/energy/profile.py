"""Device energy profiles: currents, voltage, timings, crypto costs and battery of one device type.

A profile is a TOML file in ``experiments/profiles/`` (``fipy`` is the Pycom FiPy of the paper); every
figure in it carries its source as a comment. This module holds only the schema (types and bounds),
no figures: a bad value is reported as ``file: [section] key: problem``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.settings import SettingsError, from_table, read_toml, setting, subsection, with_values

#: Folder of the shipped profiles.
PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "experiments" / "profiles"

#: Crypto operations with a fixed time per call (key ``<op>_s`` in ``[crypto.hw]`` / ``[crypto.sw]``).
TIMED_OPS = ("ecc_keygen_p256", "ecdh_p256", "ecdsa_sign_p256", "ecdsa_verify_p256",
             "x25519_keygen", "x25519_agree")
#: Crypto operations whose time scales with the bytes processed (key ``<op>_bytes_per_s``).
THROUGHPUT_OPS = ("aes", "sha256")


class ProfileError(SettingsError):
    """A profile file is missing, unreadable or holds a bad value; the message names file and key."""


@dataclass(frozen=True, kw_only=True)
class ProfileInfo:
    name: str = setting(doc="profile name")
    description: str = setting("", doc="one line about the device")


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
    boot_s: float = setting(doc="boot after deep sleep, s", minimum=0.0)
    wifi_associate_s: float = setting(doc="Wi-Fi association (+ TCP) after boot, s", minimum=0.0)
    sensor_read_s: float = setting(doc="reading all sensors once, s", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class CryptoTable:
    """Seconds per operation (``<op>_s``) and throughputs (``<op>_bytes_per_s``) of one crypto backend."""

    ecc_keygen_p256_s: float = setting(doc="seconds per P-256 key generation", minimum=0.0)
    ecdh_p256_s: float = setting(doc="seconds per P-256 ECDH", minimum=0.0)
    ecdsa_sign_p256_s: float = setting(doc="seconds per ECDSA P-256 signature", minimum=0.0)
    ecdsa_verify_p256_s: float = setting(doc="seconds per ECDSA P-256 verification", minimum=0.0)
    x25519_keygen_s: float = setting(doc="seconds per X25519 key generation", minimum=0.0)
    x25519_agree_s: float = setting(doc="seconds per X25519 agreement", minimum=0.0)
    aes_bytes_per_s: float = setting(doc="AES throughput, bytes/s", minimum=1.0)
    sha256_bytes_per_s: float = setting(doc="SHA-256 throughput, bytes/s", minimum=1.0)


@dataclass(frozen=True, kw_only=True)
class Crypto:
    hardware_acceleration: bool = setting(doc="use [crypto.hw] rather than [crypto.sw]")
    hw: CryptoTable = subsection(CryptoTable)
    sw: CryptoTable = subsection(CryptoTable)


@dataclass(frozen=True, kw_only=True)
class Battery:
    capacity_mah: float = setting(doc="nominal capacity, mAh", minimum=1e-6)
    usable_fraction: float = setting(1.0, doc="share of the nominal capacity that is usable", minimum=1e-6,
                                     maximum=1.0)
    self_discharge_ua: float = setting(0.0, doc="self-discharge current, uA", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """A whole profile file."""

    profile: ProfileInfo = subsection(ProfileInfo)
    power: Power = subsection(Power)
    radio: Radio = subsection(Radio)
    timing: Timing = subsection(Timing)
    crypto: Crypto = subsection(Crypto)
    battery: Battery = subsection(Battery)


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
        return cls(path, from_table(ProfileSettings, read_toml(path, ProfileError), path=path, error=ProfileError))

    def with_values(self, overrides: Mapping[str, Any]) -> "DeviceProfile":
        """A copy with ``{"section.key": value}`` overrides (e.g. ``"crypto.hw.ecdh_p256_s"``), validated."""
        return DeviceProfile(self.path, with_values(self.settings, overrides, path=self.path, error=ProfileError))

    def scaled_ecc(self, factor: float) -> "DeviceProfile":
        """A copy with every ECC operation time (both backends) multiplied by ``factor``."""
        crypto = self.settings.crypto
        return self.with_values({f"crypto.{backend}.{op}_s": getattr(getattr(crypto, backend), f"{op}_s") * factor
                                 for backend in ("hw", "sw") for op in TIMED_OPS})

    # --- typed shortcuts ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.settings.profile.name

    @property
    def voltage_v(self) -> float:
        return self.settings.power.voltage_v

    @property
    def currents_ma(self) -> dict[str, float]:
        """Current per Energest state (keys as in :data:`harness.energy.energest.STATES`), mA."""
        p = self.settings.power
        return {"deep_sleep": p.deep_sleep_ua / 1000.0, "cpu": p.cpu_ma,
                "radio_tx": p.radio_tx_ma, "radio_listen": p.radio_listen_ma}

    @property
    def radio_listens_while_associated(self) -> bool:
        return self.settings.power.radio_listens_while_associated

    def timing_s(self, key: str) -> float:
        """A ``[timing]`` value by name without the ``_s`` suffix (``boot``, ``wifi_associate``, ...)."""
        try:
            return getattr(self.settings.timing, f"{key}_s")
        except AttributeError:
            raise ProfileError(f"{self.path}: [timing] has no {key}_s") from None

    def op_seconds(self, op: str, nbytes: int = 0) -> float:
        """ESP32 time of one crypto operation: a timed op, or a throughput op over ``nbytes`` bytes."""
        crypto = self.settings.crypto
        table = crypto.hw if crypto.hardware_acceleration else crypto.sw
        if op in TIMED_OPS:
            return getattr(table, f"{op}_s")
        if op in THROUGHPUT_OPS:
            if nbytes < 0:
                raise ValueError(f"nbytes must be >= 0, got {nbytes}")
            return nbytes / getattr(table, f"{op}_bytes_per_s")
        raise ProfileError(f"{self.path}: unknown crypto operation {op!r} "
                           f"(known: {', '.join(TIMED_OPS + THROUGHPUT_OPS)})")

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


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"{name_or_path}: no such profile file")
        return candidate
    shipped = PROFILES_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))) or "none"
        raise ProfileError(f"unknown device profile {name_or_path!r} (known: {known}; or give a .toml path)")
    return shipped
