"""Device energy profiles: currents, voltage, timings, crypto costs and battery of one device type.

A profile is a TOML file in ``experiments/profiles/`` (``fipy`` is the Pycom FiPy of the paper); every
figure in it carries its source as a comment. This module holds only the schema (types and bounds),
no figures: a bad value is reported as ``file: [section] key: problem``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.scenario import Field, read_toml, validate_table

#: Folder of the shipped profiles.
PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "experiments" / "profiles"

#: Crypto operations with a fixed time per call (key ``<op>_s`` in ``[crypto.hw]`` / ``[crypto.sw]``).
TIMED_OPS = ("ecc_keygen_p256", "ecdh_p256", "ecdsa_sign_p256", "ecdsa_verify_p256",
             "x25519_keygen", "x25519_agree")
#: Crypto operations whose time scales with the bytes processed (key ``<op>_bytes_per_s``).
THROUGHPUT_OPS = ("aes", "sha256")


class ProfileError(ValueError):
    """A profile file is missing, unreadable or holds a bad value; the message names file and key."""


def _positive(doc: str) -> Field:
    return Field(float, required=True, minimum=0.0, doc=doc)


def _crypto_table() -> dict[str, Field]:
    table = {f"{op}_s": Field(float, required=True, minimum=0.0, doc=f"seconds per {op}")
             for op in TIMED_OPS}
    table.update({f"{op}_bytes_per_s": Field(float, required=True, minimum=1.0,
                                             doc=f"{op} throughput, bytes/s") for op in THROUGHPUT_OPS})
    return table


#: Every section and key of a profile file.
SCHEMA: dict[str, Any] = {
    "profile": {"name": Field(str, required=True), "description": Field(str, default="")},
    "power": {
        "voltage_v": Field(float, required=True, minimum=0.1, maximum=48.0, doc="supply voltage"),
        "deep_sleep_ua": _positive("deep-sleep current, uA"),
        "cpu_ma": _positive("CPU active, radio off, mA"),
        "radio_listen_ma": _positive("radio receiving / listening, mA"),
        "radio_tx_ma": _positive("radio transmitting, mA"),
        "radio_listens_while_associated": Field(bool, required=True,
                                                doc="CPU work while associated counts as radio listen"),
    },
    "radio": {
        "phy_rate_mbit": Field(float, required=True, minimum=0.001, doc="PHY rate for TX airtime"),
        "preamble_us": _positive("PLCP preamble + header per frame, us"),
        "frame_overhead_bytes": Field(int, required=True, minimum=0, doc="header bytes per frame"),
        "mss_bytes": Field(int, required=True, minimum=1, doc="payload bytes per frame"),
    },
    "timing": {
        "boot_s": _positive("boot after deep sleep, s"),
        "wifi_associate_s": _positive("Wi-Fi association (+ TCP) after boot, s"),
        "sensor_read_s": _positive("reading all sensors once, s"),
    },
    "crypto": {
        "hardware_acceleration": Field(bool, required=True, doc="use [crypto.hw] rather than [crypto.sw]"),
        "hw": _crypto_table(),
        "sw": _crypto_table(),
    },
    "battery": {
        "capacity_mah": Field(float, required=True, minimum=1e-6, doc="nominal capacity, mAh"),
        "usable_fraction": Field(float, default=1.0, minimum=1e-6, maximum=1.0),
        "self_discharge_ua": Field(float, default=0.0, minimum=0.0),
    },
}


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile. ``data`` holds every section; the properties are typed shortcuts."""

    path: Path
    data: Mapping[str, Any]

    # --- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path = "fipy") -> "DeviceProfile":
        """Read a profile by name (``experiments/profiles/<name>.toml``) or path; raise ProfileError."""
        path = _resolve(str(name_or_path))
        return cls(path, validate_table(read_toml(path, ProfileError), SCHEMA, path, error=ProfileError))

    def with_values(self, overrides: Mapping[str, Any]) -> "DeviceProfile":
        """A copy with ``{"section.key": value}`` overrides (e.g. ``"crypto.hw.ecdh_p256_s"``), validated."""
        data = copy.deepcopy(dict(self.data))
        for dotted, value in overrides.items():
            *parents, key = dotted.split(".")
            target = data
            for part in parents:
                if not isinstance(target.get(part), dict):
                    raise ProfileError(f"{self.path}: override {dotted!r}: no section {part!r}")
                target = target[part]
            target[key] = value
        return DeviceProfile(self.path, validate_table(data, SCHEMA, self.path, error=ProfileError))

    def scaled_ecc(self, factor: float) -> "DeviceProfile":
        """A copy with every ECC operation time (both backends) multiplied by ``factor``."""
        return self.with_values({f"crypto.{backend}.{op}_s": self.data["crypto"][backend][f"{op}_s"] * factor
                                 for backend in ("hw", "sw") for op in TIMED_OPS})

    # --- typed shortcuts ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.data["profile"]["name"]

    @property
    def voltage_v(self) -> float:
        return self.data["power"]["voltage_v"]

    @property
    def currents_ma(self) -> dict[str, float]:
        """Current per Energest state (keys as in :data:`harness.energy.energest.STATES`), mA."""
        p = self.data["power"]
        return {"deep_sleep": p["deep_sleep_ua"] / 1000.0, "cpu": p["cpu_ma"],
                "radio_tx": p["radio_tx_ma"], "radio_listen": p["radio_listen_ma"]}

    @property
    def radio_listens_while_associated(self) -> bool:
        return self.data["power"]["radio_listens_while_associated"]

    def timing_s(self, key: str) -> float:
        """A ``[timing]`` value by name without the ``_s`` suffix (``boot``, ``wifi_associate``, ...)."""
        try:
            return self.data["timing"][f"{key}_s"]
        except KeyError:
            raise ProfileError(f"{self.path}: [timing] has no {key}_s") from None

    def op_seconds(self, op: str, nbytes: int = 0) -> float:
        """ESP32 time of one crypto operation: a timed op, or a throughput op over ``nbytes`` bytes."""
        table = self.data["crypto"]["hw" if self.data["crypto"]["hardware_acceleration"] else "sw"]
        if op in TIMED_OPS:
            return table[f"{op}_s"]
        if op in THROUGHPUT_OPS:
            if nbytes < 0:
                raise ValueError(f"nbytes must be >= 0, got {nbytes}")
            return nbytes / table[f"{op}_bytes_per_s"]
        raise ProfileError(f"{self.path}: unknown crypto operation {op!r} "
                           f"(known: {', '.join(TIMED_OPS + THROUGHPUT_OPS)})")

    def tx_airtime_s(self, nbytes: int, frames: int | None = None) -> float:
        """Air time to transmit ``nbytes`` application bytes in ``frames`` frames (default: by MSS)."""
        r = self.data["radio"]
        if frames is None:
            frames = max(1, -(-nbytes // r["mss_bytes"])) if nbytes > 0 else 0
        bits = 8 * (nbytes + frames * r["frame_overhead_bytes"])
        return frames * r["preamble_us"] * 1e-6 + bits / (r["phy_rate_mbit"] * 1e6)

    @property
    def battery_capacity_mah(self) -> float:
        """Usable capacity: nominal capacity times the usable fraction."""
        b = self.data["battery"]
        return b["capacity_mah"] * b["usable_fraction"]

    @property
    def self_discharge_ma(self) -> float:
        return self.data["battery"]["self_discharge_ua"] / 1000.0


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
