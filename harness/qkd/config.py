"""Settings of the emulated QKD link: device physics, post-processing, calibration, key lifecycle.

The scenario's ``[qkd]`` section (with its ``[qkd.calibration]`` sub-table) is :class:`QkdLinkConfig`;
the device and post-processing fields sit directly in ``[qkd]`` under their names (e.g.
``mean_photon_number``, ``cascade_passes``). Every default here is a setting with its source next to
it, read and checked by :mod:`harness.settings` like every other section; the link's loss comes from
the scenario's ``[fibre]`` section.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from harness.settings import SettingsError, from_table, setting, subsection, to_table

PROTOCOLS = ("BB84", "SARG04")
CALIBRATION_MODELS = ("two_constant", "physical")


class QkdConfigError(SettingsError):
    """A QKD setting is unknown or out of range; the message names the key."""


@dataclass(frozen=True)
class DeviceParams:
    """Physical layer of a Clavis2-like plug-and-play system (reference.md §2, values *unverified*)."""

    rep_rate_hz: float = setting(5e6, doc="f_rep, pulse repetition rate (reference.md §2, unverified)", above=0.0)
    mean_photon_number: float = setting(0.2, doc="mu at Alice's output (reference.md §2, unverified)", above=0.0)
    bob_loss_db: float = setting(3.0, doc="t_B, Bob's internal loss, dB (reference.md §2, unverified)", minimum=0.0)
    detector_efficiency: float = setting(0.10, doc="eta_D (reference.md §2, unverified)", above=0.0, maximum=1.0)
    dark_count_prob: float = setting(1e-5, doc="p_dc per gate per detector (reference.md §2, unverified)",
                                     minimum=0.0, maximum=1.0)
    n_detectors: int = setting(2, doc="n, one APD per bit value (reference.md §2)", minimum=1)
    visibility: float = setting(0.98, doc="V, interference visibility (reference.md §2, unverified)",
                                minimum=0.0, maximum=1.0)
    afterpulse_qber: float = setting(0.0, doc="e_ap, additive QBER from afterpulses (assumption: none)",
                                     minimum=0.0, maximum=0.5)


@dataclass(frozen=True)
class PostProcessingParams:
    """Classical post-processing settings (sources named per field)."""

    block_duration_s: float = setting(10.0, doc="emulated seconds of detections per block (assumption)", above=0.0)
    pe_sample_fraction: float = setting(0.05, doc="share of sifted bits disclosed to estimate QBER (assumption)",
                                        above=0.0, maximum=0.5)
    qber_threshold_bb84: float = setting(0.11, doc="abort above: Shor & Preskill 2000 one-way BB84 bound",
                                         above=0.0, maximum=0.5)
    qber_threshold_sarg04: float = setting(0.0968, doc="abort above: Branciard et al. 2005, SARG04 single photons",
                                           above=0.0, maximum=0.5)
    cascade_passes: int = setting(4, doc="Brassard & Salvail 1993 (original Cascade)", minimum=1)
    cascade_k1_factor: float = setting(0.73, doc="first block size k1 = factor / QBER (Brassard & Salvail 1993)",
                                       above=0.0)
    qber_floor: float = setting(0.002, doc="QBER assumed for k1 when the sample shows no error (assumption)",
                                above=0.0, maximum=0.5)
    verify_tag_bits: int = setting(64, doc="verification hash length, subtracted from the key (assumption)",
                                   minimum=0)
    pa_margin_bits: int = setting(64, doc="extra bits removed in privacy amplification (assumption)", minimum=0)
    min_block_bits: int = setting(256, doc="blocks with fewer bits after PE are dropped (assumption)", minimum=1)
    ec_efficiency_expected: float = setting(
        1.14, doc="f_EC to predict rates: what this Cascade reaches at 1-2% QBER (`qiot qkd calibrate`; "
                  "reference.md §2: 1.1-1.2)", minimum=1.0)
    auth_key: str = setting("qiot-demo-preshared-key", doc="HMAC key of the classical channel (assumption: demo PSK)")


@dataclass(frozen=True)
class Calibration:
    """The ``[qkd.calibration]`` table: how emulated detections are scaled to the measured link.

    ``two_constant``: the secret rate follows 1/R = a*10^(L/10) + b (reference.md §2 fit (b)); the
    emulator sets the detection rate so that post-processing lands on that curve.
    ``physical``: the Gisin et al. model with two knobs, a duty cycle and an effective dead time
    (reference.md §2 fit (a)); detections follow the model, the curve is whatever results.
    """

    model: str = setting("two_constant", doc="two_constant or physical", choices=CALIBRATION_MODELS)
    a_s: float = setting(1.151e-4, doc="two-constant fit 1/R = a*10^(L/10) + b: a in seconds "
                                       "(reference.md §2 fit (b))", above=0.0)
    b_s: float = setting(2.428e-4, doc="two-constant fit: b in seconds (reference.md §2 fit (b))", minimum=0.0)
    # Physical-model knobs: `qiot qkd calibrate` fit to the targets with this module's defaults
    # (reference.md §2 fit (a) gives 0.49 / 108 us without PE sampling and at f_EC = 1.2).
    duty_cycle: float = setting(0.5211, doc="physical model: detector duty cycle (`qiot qkd calibrate` fit)",
                                above=0.0, maximum=1.0)
    dead_time_eff_s: float = setting(103.2e-6, doc="physical model: effective dead time, s "
                                                   "(`qiot qkd calibrate` fit)", minimum=0.0)
    target_loss_db: tuple[float, ...] = setting((4.0, 7.0), doc="losses of the calibration points, dB "
                                                            "(paper: HPN lab link, BCN city link)")
    target_rate_bps: tuple[float, ...] = setting((1880.0, 1220.0), doc="secret key rates measured there, bit/s "
                                                                     "(paper: average secret key rates, Fig. 2d text)")

    def __post_init__(self) -> None:
        if len(self.target_loss_db) != len(self.target_rate_bps):
            raise QkdConfigError("[qkd.calibration] target_loss_db and target_rate_bps differ in length")
        if any(rate <= 0 for rate in self.target_rate_bps):
            raise QkdConfigError("[qkd.calibration] target_rate_bps must be > 0")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any] | None) -> "Calibration":
        """Build from a ``[qkd.calibration]`` mapping; unknown keys raise :class:`QkdConfigError`."""
        return from_table(cls, dict(table or {}), where=("qkd", "calibration"), user=False, error=QkdConfigError)


@dataclass(frozen=True)
class QkdLinkConfig:
    """Everything one emulated QKD link needs: loss, protocol, device, post-processing, calibration."""

    loss_db: float = setting(4.0, doc="fibre loss of the quantum channel (from the scenario's [fibre] loss_db)",
                             minimum=0.0, maximum=60.0, derived=True)
    protocol: str = setting("BB84", doc="BB84 or SARG04 (reference.md §2)", choices=PROTOCOLS)
    key_bits: int = setting(256, doc="length of one delivered key, bit (paper)", minimum=8, maximum=256)
    buffer_bits: int = setting(1_000_000, doc="key buffer (KB) size, bit (paper: 1 Mbit)", minimum=8)
    refresh_period_s: float = setting(1800.0, doc="how often devices get a new key, emulated s (paper: 30 min)",
                                      above=0.0)
    eve_intercept_fraction: float = setting(0.0, doc="share of pulses an intercept-resend eavesdropper measures",
                                            minimum=0.0, maximum=1.0)
    warmup_s: float = setting(0.0, doc="emulated seconds the link has been distilling when a run's key path starts "
                                       "(run as fast as post-processing allows: a link in steady state)", minimum=0.0)
    device: DeviceParams = subsection(DeviceParams, inline=True)
    post: PostProcessingParams = subsection(PostProcessingParams, inline=True)
    calibration: Calibration = subsection(Calibration)

    def __post_init__(self) -> None:
        if self.key_bits % 8:
            raise QkdConfigError("[qkd] key_bits must be a multiple of 8 between 8 and 256 (Clavis: 32 bytes max)")
        if self.buffer_bits < self.key_bits:
            raise QkdConfigError("[qkd] buffer_bits must hold at least one key")

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
        """Build from a scenario's ``[qkd]`` and ``[fibre]`` tables (the loss comes from ``[fibre]``)."""
        qkd = dict(qkd_section or {})
        loss = dict(fibre_section or {}).get("loss_db", qkd.pop("loss_db", None))
        qkd.pop("loss_db", None)
        if loss is not None:
            qkd["loss_db"] = loss
        return from_table(cls, qkd, where=("qkd",), user=False, error=QkdConfigError)

    def to_sections(self) -> dict[str, dict[str, Any]]:
        """The inverse of :meth:`from_scenario`: ``{"qkd": {...}, "fibre": {...}}`` (JSON-ready)."""
        qkd = to_table(self)
        return {"qkd": qkd, "fibre": {"loss_db": qkd.pop("loss_db")}}
