"""Key-rate models (loss in dB -> bit/s) and the calibration fits behind ``qiot qkd calibrate``.

Physical model (Gisin et al., Rev. Mod. Phys. 74, 145 (2002); reference.md §2), per gate:
``p_sig = 1 - exp(-mu t_L t_B eta_D)``, ``p_click = p_sig + n p_dc``, raw detection rate
``R_raw = f_rep d p_click``, after dead time ``R_det = R_raw / (1 + R_raw tau)``, sifted
``R_sift = q R_det``, QBER ``e = [((1-V)/2) p_sig + (n/2) p_dc] / p_click + e_ap``.

How the model and the calibration meet. The emulator always draws detection events whose QBER
comes from the physical model (so detector, visibility and Eve move the QBER). The *detection
rate* comes from the calibration:

* ``model = "physical"``: ``R_det`` from the formula above, with two calibration knobs, a duty
  cycle ``d`` and an effective dead time ``tau_eff`` (dead time plus processing overhead).
* ``model = "two_constant"``: the measured curve ``1/R_sec = a 10^(L/10) + b`` is the target;
  ``R_det`` is set to what post-processing needs to deliver ``R_sec`` given the model QBER:
  ``R_det = (R_sec + overhead/T) / (q (1-s) (1 - (1+f) h(e)))``, with PE sample share ``s``,
  expected Cascade efficiency ``f`` and per-block overhead (tag + margin bits per block of T s).
  With this model the rate is pinned to the curve; use ``physical`` to study device changes.

Either way the secret rate a run reports is what sifting, Cascade and privacy amplification
actually distil from those events; :func:`secret_key_rate` is the prediction of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from harness.qkd.config import Calibration, DeviceParams, QkdConfigError, QkdLinkConfig


def binary_entropy(e: float) -> float:
    """h(e) = -e log2 e - (1-e) log2 (1-e); 0 at e = 0 or 1."""
    if e <= 0.0 or e >= 1.0:
        return 0.0
    return -e * math.log2(e) - (1.0 - e) * math.log2(1.0 - e)


def sifting_factor(protocol: str, bb84_qber: float = 0.0) -> float:
    """q: share of detections kept by sifting (BB84 1/2; SARG04 about 1/4, reference.md §2).

    SARG04 keeps 1/4 correct conclusive events plus e/2 wrong ones (e = BB84-basis QBER).
    """
    return 0.5 if protocol == "BB84" else 0.25 + bb84_qber / 2.0


@dataclass(frozen=True)
class GateProbabilities:
    """Per-gate click probabilities and the optical QBER they imply."""

    p_signal: float
    p_dark: float          # n * p_dc
    p_click: float
    qber: float            # QBER of BB84-sifted bits (reference.md §2 formula)


def gate_probabilities(loss_db: float, device: DeviceParams) -> GateProbabilities:
    """Click probabilities per gate and model QBER at fibre loss ``loss_db`` (reference.md §2)."""
    t_link = 10.0 ** (-loss_db / 10.0)
    t_bob = 10.0 ** (-device.bob_loss_db / 10.0)
    p_signal = 1.0 - math.exp(-device.mean_photon_number * t_link * t_bob * device.detector_efficiency)
    p_dark = device.n_detectors * device.dark_count_prob
    p_click = p_signal + p_dark
    optical = (1.0 - device.visibility) / 2.0 * p_signal
    qber = (optical + p_dark / 2.0) / p_click + device.afterpulse_qber
    return GateProbabilities(p_signal, p_dark, p_click, min(qber, 0.5))


def model_qber(loss_db: float, config: QkdLinkConfig) -> float:
    """QBER of the sifted key without Eve, for the configured protocol.

    For SARG04 an error in Bob's measurement turns a would-be inconclusive event into a wrong
    conclusive one: wrong conclusive share e/2 against the correct share 1/4 (the event model of
    :mod:`harness.qkd.physical`).
    """
    e = gate_probabilities(loss_db, config.device).qber
    if config.protocol == "BB84":
        return e
    return (e / 2.0) / (0.25 + e / 2.0)


def _q(loss_db: float, config: QkdLinkConfig) -> float:
    return sifting_factor(config.protocol, gate_probabilities(loss_db, config.device).qber)


def secret_fraction(qber: float, config: QkdLinkConfig) -> float:
    """Share of sifted bits that survives PE, Cascade (at the expected f_EC) and PA, per bit."""
    post = config.post
    h = binary_entropy(qber)
    return max(0.0, (1.0 - post.pe_sample_fraction) * (1.0 - (1.0 + post.ec_efficiency_expected) * h))


def block_overhead_bps(config: QkdLinkConfig) -> float:
    """Fixed bits per second spent on verification tags and PA margins (per-block costs)."""
    post = config.post
    return (post.verify_tag_bits + post.pa_margin_bits) / post.block_duration_s


def two_constant_rate(loss_db: float, a_s: float, b_s: float) -> float:
    """R = 1 / (a 10^(L/10) + b) (reference.md §2, fit (b)).

    Raises :class:`QkdConfigError` if the loss is not finite, or ``a_s`` and ``b_s`` do not give a
    finite positive denominator (e.g. both 0: the curve would promise an infinite rate).
    """
    if not math.isfinite(loss_db):
        raise QkdConfigError(f"loss {loss_db} dB is not a finite number")
    denominator = a_s * 10.0 ** (loss_db / 10.0) + b_s
    if not math.isfinite(denominator) or denominator <= 0:
        raise QkdConfigError(f"[qkd.calibration] a_s = {a_s:g} and b_s = {b_s:g} give no finite key rate "
                             "(1/R = a_s 10^(L/10) + b_s must be > 0)")
    return 1.0 / denominator


def physical_detection_rate(loss_db: float, device: DeviceParams, duty_cycle: float,
                            dead_time_s: float) -> float:
    """R_det = R_raw / (1 + R_raw tau), R_raw = f_rep d p_click (reference.md §2)."""
    raw = device.rep_rate_hz * duty_cycle * gate_probabilities(loss_db, device).p_click
    return raw / (1.0 + raw * dead_time_s)


def detection_rate(loss_db: float, config: QkdLinkConfig) -> float:
    """Detections per emulated second the emulator draws at ``loss_db`` under the calibration."""
    cal = config.calibration
    if cal.model == "physical":
        return physical_detection_rate(loss_db, config.device, cal.duty_cycle, cal.dead_time_eff_s)
    target = two_constant_rate(loss_db, cal.a_s, cal.b_s)
    per_detection = _q(loss_db, config) * secret_fraction(model_qber(loss_db, config), config)
    if per_detection <= 0:
        return 0.0
    return (target + block_overhead_bps(config)) / per_detection


def secret_key_rate(loss_db: float, calibration: Mapping | Calibration,
                    config: QkdLinkConfig | None = None) -> float:
    """Predicted secret-key rate (bit/s) at ``loss_db`` for a ``[qkd.calibration]`` table.

    ``two_constant``: 1/R = a 10^(L/10) + b. ``physical``: R_det q (1-s)(1-(1+f)h(e)) minus the
    per-block overhead, with device and post-processing settings from ``config`` (defaults if None).
    """
    cal = calibration if isinstance(calibration, Calibration) else Calibration.from_mapping(calibration)
    if not math.isfinite(loss_db):
        raise QkdConfigError(f"loss {loss_db} dB is not a finite number")
    if cal.model == "two_constant":
        return two_constant_rate(loss_db, cal.a_s, cal.b_s)
    cfg = (config or QkdLinkConfig()).replace(calibration=cal)
    sifted = detection_rate(loss_db, cfg) * _q(loss_db, cfg)
    return max(0.0, sifted * secret_fraction(model_qber(loss_db, cfg), cfg) - block_overhead_bps(cfg))


@dataclass(frozen=True)
class FitResult:
    """A calibration fit: parameter values and the model's residuals at the targets."""

    model: str
    params: dict[str, float]
    loss_db: tuple[float, ...]
    target_bps: tuple[float, ...]
    fitted_bps: tuple[float, ...]

    @property
    def residuals_pct(self) -> tuple[float, ...]:
        """(fitted - target) / target in percent, per target point."""
        return tuple(100.0 * (f - t) / t for f, t in zip(self.fitted_bps, self.target_bps))


def fit_two_constant(loss_db: Sequence[float], rate_bps: Sequence[float]) -> FitResult:
    """Least-squares fit of 1/R = a 10^(L/10) + b (exact through two points)."""
    x = 10.0 ** (np.asarray(loss_db, float) / 10.0)
    y = 1.0 / np.asarray(rate_bps, float)
    a, b = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)[0]
    fitted = tuple(two_constant_rate(L, a, b) for L in loss_db)
    return FitResult("two_constant", {"a_s": float(a), "b_s": float(b)}, tuple(loss_db),
                     tuple(rate_bps), fitted)


def fit_physical(loss_db: Sequence[float], rate_bps: Sequence[float], config: QkdLinkConfig) -> FitResult:
    """Fit the duty cycle d and effective dead time tau_eff of the physical model to target rates.

    The detection rate each target needs, R_det*, follows from the target secret rate and the
    post-processing yield; 1/R_det* = (1/d) / (f_rep p_click) + tau_eff is linear in (1/d, tau_eff),
    so the fit is a (least-squares) linear solve.
    """
    needed, inv_gate = [], []
    for L, R in zip(loss_db, rate_bps):
        per_detection = _q(L, config) * secret_fraction(model_qber(L, config), config)
        needed.append((R + block_overhead_bps(config)) / per_detection)
        inv_gate.append(1.0 / (config.device.rep_rate_hz * gate_probabilities(L, config.device).p_click))
    design = np.column_stack([inv_gate, np.ones(len(inv_gate))])
    inv_d, tau = np.linalg.lstsq(design, 1.0 / np.asarray(needed), rcond=None)[0]
    if inv_d <= 0 or tau < 0:
        raise ValueError("physical fit failed: targets need a negative duty cycle or dead time")
    cal = Calibration(model="physical", duty_cycle=float(1.0 / inv_d), dead_time_eff_s=float(tau))
    fitted = tuple(secret_key_rate(L, cal, config) for L in loss_db)
    return FitResult("physical", {"duty_cycle": cal.duty_cycle, "dead_time_eff_s": cal.dead_time_eff_s},
                     tuple(loss_db), tuple(rate_bps), fitted)
