"""Settings of the emulated QKD link: device physics, post-processing and calibration.

Every number here is a setting with its source next to it. ``QkdLinkConfig.from_scenario`` reads
the scenario's ``[qkd]`` (with its ``[qkd.calibration]`` sub-table) and ``[fibre]`` sections; a key
it does not know raises :class:`QkdConfigError` naming the key, so a typo never passes silently.
Keys of those sections that belong to other parts of qiot (``refresh_period_s``, fibre length,
propagation delay, classical rate, optical switch) are accepted and ignored here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


class QkdConfigError(ValueError):
    """A QKD setting is unknown or out of range; the message names the key."""


@dataclass(frozen=True)
class DeviceParams:
    """Physical layer of a Clavis2-like plug-and-play system (reference.md §2, values *unverified*)."""

    rep_rate_hz: float = 5e6              # f_rep, pulse repetition rate (reference.md §2, unverified)
    mean_photon_number: float = 0.2       # mu at Alice's output (reference.md §2, unverified)
    bob_loss_db: float = 3.0              # t_B, Bob's internal loss (reference.md §2, unverified)
    detector_efficiency: float = 0.10     # eta_D (reference.md §2, unverified)
    dark_count_prob: float = 1e-5         # p_dc per gate per detector (reference.md §2, unverified)
    n_detectors: int = 2                  # n, one APD per bit value (reference.md §2)
    visibility: float = 0.98              # V, interference visibility (reference.md §2, unverified)
    afterpulse_qber: float = 0.0          # e_ap, additive QBER from afterpulses (assumption: none)


@dataclass(frozen=True)
class PostProcessingParams:
    """Classical post-processing settings (sources named per field)."""

    block_duration_s: float = 10.0        # emulated seconds of detections per block (assumption)
    pe_sample_fraction: float = 0.05      # share of sifted bits disclosed to estimate QBER (assumption)
    qber_threshold_bb84: float = 0.11     # abort above: Shor & Preskill 2000 one-way BB84 bound
    qber_threshold_sarg04: float = 0.0968 # abort above: Branciard et al. 2005, SARG04 single photons
    cascade_passes: int = 4               # Brassard & Salvail 1993 (original Cascade)
    cascade_k1_factor: float = 0.73       # first block size k1 = factor / QBER (Brassard & Salvail 1993)
    qber_floor: float = 0.002             # QBER assumed for k1 when the sample shows no error (assumption)
    verify_tag_bits: int = 64             # verification hash length, subtracted from the key (assumption)
    pa_margin_bits: int = 64              # extra bits removed in privacy amplification (assumption)
    min_block_bits: int = 256             # blocks with fewer bits after PE are dropped (assumption)
    ec_efficiency_expected: float = 1.14  # f_EC to predict rates: what this Cascade reaches at 1-2% QBER
                                          # (`qiot qkd calibrate`; reference.md §2: 1.1-1.2)
    auth_key: str = "qiot-demo-preshared-key"  # HMAC key of the classical channel (assumption: demo PSK)


@dataclass(frozen=True)
class Calibration:
    """The ``[qkd.calibration]`` table: how emulated detections are scaled to the measured link.

    ``two_constant``: the secret rate follows 1/R = a*10^(L/10) + b (reference.md §2 fit (b)); the
    emulator sets the detection rate so that post-processing lands on that curve.
    ``physical``: the Gisin et al. model with two knobs, a duty cycle and an effective dead time
    (reference.md §2 fit (a)); detections follow the model, the curve is whatever results.
    """

    model: str = "two_constant"
    a_s: float = 1.151e-4                 # reference.md §2 fit (b)
    b_s: float = 2.428e-4                 # reference.md §2 fit (b)
    # Physical-model knobs: `qiot qkd calibrate` fit to the targets below with this module's defaults
    # (reference.md §2 fit (a) gives 0.49 / 108 us without PE sampling and at f_EC = 1.2).
    duty_cycle: float = 0.5211
    dead_time_eff_s: float = 103.2e-6
    # Calibration targets: the paper's measured secret-key rates (Mavromatis et al. 2018, Fig. 2d text).
    target_loss_db: tuple[float, ...] = (4.0, 7.0)          # paper: HPN lab link, BCN city link
    target_rate_bps: tuple[float, ...] = (1880.0, 1220.0)   # paper: average secret key rates

    def __post_init__(self) -> None:
        if self.model not in ("two_constant", "physical"):
            raise QkdConfigError(f"[qkd.calibration] model must be 'two_constant' or 'physical', got {self.model!r}")
        if len(self.target_loss_db) != len(self.target_rate_bps):
            raise QkdConfigError("[qkd.calibration] target_loss_db and target_rate_bps differ in length")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any] | None) -> "Calibration":
        """Build from a ``[qkd.calibration]`` mapping; unknown keys raise :class:`QkdConfigError`."""
        values = _checked(cls, table or {}, "[qkd.calibration]")
        for key in ("target_loss_db", "target_rate_bps"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


@dataclass(frozen=True)
class QkdLinkConfig:
    """Everything one emulated QKD link needs: loss, protocol, device, post-processing, calibration."""

    loss_db: float = 4.0                  # fibre loss of the quantum channel (scenario [fibre] loss_db)
    protocol: str = "BB84"                # BB84 or SARG04 (reference.md §2)
    key_bits: int = 256                   # delivered key length (paper)
    buffer_bits: int = 1_000_000          # key buffer size (paper: 1 Mbit)
    eve_intercept_fraction: float = 0.0   # share of pulses an intercept-resend Eve measures (off by default)
    device: DeviceParams = field(default_factory=DeviceParams)
    post: PostProcessingParams = field(default_factory=PostProcessingParams)
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        if self.protocol not in ("BB84", "SARG04"):
            raise QkdConfigError(f"[qkd] protocol must be 'BB84' or 'SARG04', got {self.protocol!r}")
        if not 0.0 <= self.eve_intercept_fraction <= 1.0:
            raise QkdConfigError("[qkd] eve_intercept_fraction must be within 0..1")
        if self.key_bits % 8 or not 8 <= self.key_bits <= 256:
            raise QkdConfigError("[qkd] key_bits must be a multiple of 8 between 8 and 256 (Clavis: 32 bytes max)")
        if self.buffer_bits < self.key_bits:
            raise QkdConfigError("[qkd] buffer_bits must hold at least one key")
        if self.loss_db < 0:
            raise QkdConfigError("[fibre] loss_db must be >= 0")

    @property
    def buffer_keys(self) -> int:
        """Number of keys the buffer holds (1 Mbit / 256 bit = 3,906 by default)."""
        return self.buffer_bits // self.key_bits

    @property
    def qber_threshold(self) -> float:
        """Abort threshold for the configured protocol."""
        post = self.post
        return post.qber_threshold_bb84 if self.protocol == "BB84" else post.qber_threshold_sarg04

    def replace(self, **changes: Any) -> "QkdLinkConfig":
        """A copy with some top-level fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_scenario(cls, qkd_section: Mapping[str, Any] | None,
                      fibre_section: Mapping[str, Any] | None = None) -> "QkdLinkConfig":
        """Build from the scenario's ``[qkd]`` and ``[fibre]`` sections.

        Device and post-processing fields sit directly in ``[qkd]`` under their field names (e.g.
        ``mean_photon_number``, ``cascade_passes``); calibration in ``[qkd.calibration]``.
        """
        qkd = dict(qkd_section or {})
        fibre = dict(fibre_section or {})
        unknown_fibre = sorted(set(fibre) - _FIBRE_KEYS)
        if unknown_fibre:
            raise QkdConfigError(f"[fibre] unknown key {unknown_fibre[0]!r}")
        calibration = Calibration.from_mapping(qkd.pop("calibration", None))
        for key in _IGNORED_QKD_KEYS:
            qkd.pop(key, None)
        device_keys = {f.name for f in dataclasses.fields(DeviceParams)}
        post_keys = {f.name for f in dataclasses.fields(PostProcessingParams)}
        top_keys = {"protocol", "key_bits", "buffer_bits", "eve_intercept_fraction"}
        unknown = sorted(set(qkd) - device_keys - post_keys - top_keys)
        if unknown:
            raise QkdConfigError(f"[qkd] unknown key {unknown[0]!r}")
        device = DeviceParams(**_checked(DeviceParams, {k: qkd[k] for k in device_keys & set(qkd)}, "[qkd]"))
        post = PostProcessingParams(**_checked(PostProcessingParams,
                                               {k: qkd[k] for k in post_keys & set(qkd)}, "[qkd]"))
        top = {k: qkd[k] for k in top_keys & set(qkd)}
        if "loss_db" in fibre:
            top["loss_db"] = float(fibre["loss_db"])
        return cls(device=device, post=post, calibration=calibration, **top)

    def to_sections(self) -> dict[str, dict[str, Any]]:
        """The inverse of :meth:`from_scenario`: ``{"qkd": {...}, "fibre": {...}}`` (JSON-ready)."""
        qkd: dict[str, Any] = {"protocol": self.protocol, "key_bits": self.key_bits,
                               "buffer_bits": self.buffer_bits,
                               "eve_intercept_fraction": self.eve_intercept_fraction}
        qkd.update(dataclasses.asdict(self.device))
        qkd.update(dataclasses.asdict(self.post))
        calibration = dataclasses.asdict(self.calibration)
        calibration["target_loss_db"] = list(calibration["target_loss_db"])
        calibration["target_rate_bps"] = list(calibration["target_rate_bps"])
        qkd["calibration"] = calibration
        return {"qkd": qkd, "fibre": {"loss_db": self.loss_db}}


#: Scenario keys owned by other parts of qiot, accepted and ignored here.
_IGNORED_QKD_KEYS = ("refresh_period_s",)
_FIBRE_KEYS = {"length_km", "loss_db", "optical_switch", "propagation_us_per_km", "classical_rate_mbit"}


def _checked(cls: type, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check names and basic types of ``table`` against the fields of dataclass ``cls``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    result: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise QkdConfigError(f"{where} unknown key {key!r}")
        if value is None:  # a schema may fill absent keys with None: keep this module's default
            continue
        default = fields[key].default
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            ok = isinstance(value, (int, float)) and (isinstance(default, float) or float(value).is_integer())
            if ok:
                value = type(default)(value)
                if value < 0:
                    raise QkdConfigError(f"{where} {key} must be >= 0, got {value!r}")
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise QkdConfigError(f"{where} {key} has the wrong type: {value!r}")
        result[key] = value
    return result
