"""Scenarios: every parameter of a run, read from a TOML file and checked against a schema.

A scenario is named (``hpn``, ``bcn``: files in ``experiments/``) or given as a path to the user's
own file. Every key is declared in :data:`SCHEMA` with its type, bounds and default, so a typo or
an out-of-range value is reported as ``file: [section] key: problem`` instead of surfacing later
as a traceback. Values that come from the literature carry their source as a comment in the
scenario file itself; this module holds no figures of its own beyond neutral defaults.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: Folder holding the shipped scenario files (``experiments/`` at the project root).
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or holds a bad value; the message names file and key."""


@dataclass(frozen=True)
class Field:
    """One scenario key: its type, whether it must be given, its default and allowed values."""

    kind: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def check(self, value: Any) -> str | None:
        """Return a description of what is wrong with ``value``, or None if it is acceptable."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        # TOML integers are acceptable where a float is asked for; bools are not numbers here.
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            return f"must be {_kind_name(kinds)}, got {value!r}"
        if not isinstance(value, kinds):
            return f"must be {_kind_name(kinds)}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum}, got {value!r}"
        return None


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


#: Every section and key a scenario may hold. Nested dicts are TOML sub-tables.
SCHEMA: dict[str, Any] = {
    "scenario": {
        "name": Field(str, required=True, doc="short name, used in result folder names"),
        "description": Field(str, default=""),
    },
    "fibre": {
        "length_km": Field(float, required=True, minimum=0.0, doc="quantum-channel fibre length"),
        "loss_db": Field(float, required=True, minimum=0.0, maximum=60.0,
                         doc="total optical loss of the quantum channel"),
        "optical_switch": Field(bool, default=False, doc="QCh/ClCh pass through an optical switch (BCN)"),
        "propagation_us_per_km": Field(float, default=4.9, minimum=0.0,
                                       doc="one-way delay of light in fibre"),
        "classical_rate_mbit": Field(float, default=1000.0, minimum=0.001,
                                     doc="rate of the classical channel / optical backhaul link"),
    },
    "qkd": {
        "protocol": Field(str, default="BB84", choices=("BB84", "SARG04")),
        "key_bits": Field(int, default=256, minimum=8, doc="length of one delivered key"),
        "buffer_bits": Field(int, default=1_000_000, minimum=256, doc="key buffer (KB) size"),
        "refresh_period_s": Field(float, default=1800.0, minimum=1.0,
                                  doc="how often devices get a new key (emulated seconds)"),
        "calibration": {
            "model": Field(str, default="two_constant", choices=("two_constant", "physical")),
            "a_s": Field(float, default=1.151e-4, minimum=0.0,
                         doc="two-constant fit 1/R = a*10^(L/10) + b: a in seconds"),
            "b_s": Field(float, default=2.428e-4, minimum=0.0, doc="two-constant fit: b in seconds"),
        },
    },
    "devices": {
        "count": Field(int, default=3, minimum=1, maximum=5000),
        "wake_period_s": Field(float, default=60.0, minimum=0.1,
                               doc="device wakes, reads sensors and publishes every period"),
        "mqtt_qos": Field(int, default=1, choices=(0, 1, 2)),
        "publish_timeout_s": Field(float, default=5.0, minimum=0.1,
                                   doc="a publish not acknowledged by then counts as lost"),
        "energy_profile": Field(str, default="fipy", doc="file in experiments/profiles/"),
        "energy_interval_s": Field(float, default=3600.0, minimum=1.0,
                                   doc="energy.csv has one row per device per interval of emulated time"),
        "dkg_curve": Field(str, default="p256", choices=("p256", "x25519"),
                           doc="curve of the on-device ECDH key agreement in DKG mode"),
    },
    "kme": {
        "wireless_transport": Field(str, default="tls_resume", choices=("tls_full", "tls_resume", "psk_wrap"),
                                    doc="how the gateway relay hands a QKD key to a device"),
    },
    "wireless": {
        "delay_ms": Field(float, default=0.0, minimum=0.0, maximum=10_000.0, doc="one-way delay"),
        "jitter_ms": Field(float, default=0.0, minimum=0.0, maximum=10_000.0,
                           doc="uniform +/- jitter around the delay"),
        "loss_pct": Field(float, default=0.0, minimum=0.0, maximum=100.0, doc="per direction"),
        "rate_mbit": Field(float, default=11.0, minimum=0.001, maximum=10_000.0),
    },
    "run": {
        "hours": Field(float, default=0.05, minimum=0.0, doc="emulated run length per mode"),
        "time_scale": Field(float, default=1.0, minimum=0.001,
                            doc="emulated seconds per wall second for waits"),
        "seed": Field(int, default=1),
    },
}


def _dataclass_fields(*classes) -> dict[str, Field]:
    """Schema entries for the fields of the QKD model's parameter dataclasses.

    The QKD core (:mod:`harness.qkd.config`) owns these parameters, their defaults and their sources;
    declaring them here by type lets a scenario set any of them and get a typo reported by name.
    """
    import dataclasses

    entries = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if isinstance(f.default, (bool, int, float, str)):
                entries[f.name] = Field(type(f.default), default=f.default, doc=f"see {cls.__module__}.{cls.__name__}")
    return entries


def _extend_qkd_schema() -> None:
    from harness.qkd.config import Calibration, DeviceParams, PostProcessingParams

    qkd = SCHEMA["qkd"]
    qkd.update({k: v for k, v in _dataclass_fields(DeviceParams, PostProcessingParams).items() if k not in qkd})
    qkd["eve_intercept_fraction"] = Field(float, default=0.0, minimum=0.0, maximum=1.0,
                                          doc="share of pulses an intercept-resend eavesdropper measures")
    calibration = qkd["calibration"]
    calibration.update({k: v for k, v in _dataclass_fields(Calibration).items() if k not in calibration})
    calibration["target_loss_db"] = Field(list, default=[4.0, 7.0], doc="losses of the calibration points")
    calibration["target_rate_bps"] = Field(list, default=[1880.0, 1220.0], doc="secret key rates measured there")


_extend_qkd_schema()


@dataclass
class Scenario:
    """A validated scenario: ``data`` holds every section with defaults filled in."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.data["scenario"]["name"]

    def section(self, name: str) -> dict[str, Any]:
        """Return one section (a plain dict, defaults included)."""
        return self.data[name]

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Scenario":
        """Return a copy with ``{"section.key": value}`` overrides applied and validated again."""
        data = copy.deepcopy(self.data)
        for dotted, value in overrides.items():
            *parents, key = dotted.split(".")
            target = data
            for part in parents:
                target = target[part]
            target[key] = value
        return Scenario(self.path, _check_semantics(validate_table(data, SCHEMA, self.path), self.path))


def resolve_path(name_or_path: str) -> Path:
    """Turn a scenario name (``bcn``) or a file path into the path of an existing file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists() or "/" in name_or_path:
        if not candidate.is_file():
            raise ScenarioError(f"{name_or_path}: no such scenario file")
        return candidate
    shipped = EXPERIMENTS_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        known = ", ".join(available()) or "none"
        raise ScenarioError(f"unknown scenario {name_or_path!r} (known: {known}; or give a path to a .toml file)")
    return shipped


def available() -> list[str]:
    """Names of the scenarios shipped in ``experiments/``."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def load(name_or_path: str) -> Scenario:
    """Read and validate a scenario; raise :class:`ScenarioError` naming file and key on any problem."""
    path = resolve_path(name_or_path)
    return Scenario(path, _check_semantics(validate_table(read_toml(path), SCHEMA, path), path))


def read_toml(path: Path, error: type[ValueError] = ScenarioError) -> dict[str, Any]:
    """Parse a TOML settings file; unreadable or malformed files raise ``error`` naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None


def _check_semantics(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Checks that need the owning core: the QKD model validates its own parameter combinations."""
    from harness.qkd.config import QkdConfigError, QkdLinkConfig

    try:
        QkdLinkConfig.from_scenario(data["qkd"], data["fibre"])
    except (QkdConfigError, ValueError, TypeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return data


def validate_table(raw: Mapping[str, Any], schema: Mapping[str, Any], path: Path,
                   where: tuple[str, ...] = (), error: type[ValueError] = ScenarioError) -> dict[str, Any]:
    """Check ``raw`` against ``schema`` recursively; return a new dict with defaults filled in.

    Shared by every TOML settings file of qiot (scenarios, device profiles); ``error`` is the
    exception class raised, with a message naming the file and the ``[section] key``.
    """
    if not isinstance(raw, Mapping):
        raise error(f"{path}: [{'.'.join(where)}] must be a table")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        place = f"[{'.'.join(where)}] " if where else ""
        allowed = ", ".join(sorted(schema))
        raise error(f"{path}: {place}unknown key {unknown[0]!r} (allowed: {allowed})")
    result: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            result[key] = validate_table(raw.get(key, {}), spec, path, where + (key,), error)
            continue
        label = f"[{'.'.join(where)}] {key}" if where else key
        if key not in raw:
            if spec.required:
                raise error(f"{path}: {label} is required ({spec.doc or 'no default'})")
            result[key] = spec.default
            continue
        problem = spec.check(raw[key])
        if problem:
            raise error(f"{path}: {label} {problem}")
        value = raw[key]
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        result[key] = float(value) if float in kinds and isinstance(value, int) else value
    return result
