"""Rate models, calibration fits and the link configuration."""

import math

import pytest

from harness.qkd.config import Calibration, DeviceParams, PostProcessingParams, QkdConfigError, QkdLinkConfig
from harness.qkd.rate import (binary_entropy, fit_physical, fit_two_constant, gate_probabilities,
                              model_qber, secret_key_rate, two_constant_rate)
from harness.scenario import load

# Targets: the paper's measured average secret-key rates (Mavromatis et al., ECOC 2018; reference.md §1).
PAPER = {4.0: 1880.0, 7.0: 1220.0}


def test_two_constant_contract_hits_paper_points():
    table = {"model": "two_constant", "a_s": 1.151e-4, "b_s": 2.428e-4}  # reference.md §2 fit (b)
    for loss, rate in PAPER.items():
        assert secret_key_rate(loss, table) == pytest.approx(rate, rel=2e-3)
    assert secret_key_rate(10.0, table) < secret_key_rate(7.0, table)


def test_default_physical_calibration_predicts_paper_points():
    config = QkdLinkConfig()
    cal = Calibration(model="physical")
    for loss, rate in PAPER.items():
        assert secret_key_rate(loss, cal, config) == pytest.approx(rate, rel=0.01)


def test_textbook_inputs_are_too_steep_as_reference_says():
    # d = 1 and tau = 10 us: the uncalibrated model of reference.md §2 (6.6 / 3.5 kbit/s, ratio ~1.9)
    config = QkdLinkConfig(post=PostProcessingParams(pe_sample_fraction=0.0, ec_efficiency_expected=1.2,
                                                     verify_tag_bits=0, pa_margin_bits=0))
    cal = Calibration(model="physical", duty_cycle=1.0, dead_time_eff_s=10e-6)
    r4, r7 = secret_key_rate(4.0, cal, config), secret_key_rate(7.0, cal, config)
    assert r4 == pytest.approx(6600, rel=0.05) and r7 == pytest.approx(3500, rel=0.05)
    assert r4 / r7 > 1.8


def test_fits_go_through_the_targets():
    two = fit_two_constant(list(PAPER), list(PAPER.values()))
    assert two.params["a_s"] == pytest.approx(1.151e-4, rel=2e-3)
    assert two.params["b_s"] == pytest.approx(2.428e-4, rel=2e-3)
    phys = fit_physical(list(PAPER), list(PAPER.values()), QkdLinkConfig())
    assert max(abs(r) for r in phys.residuals_pct) < 1e-6
    assert 0 < phys.params["duty_cycle"] <= 1 and phys.params["dead_time_eff_s"] > 0
    # a least-squares fit through three points has non-zero residuals, and reports them
    three = fit_two_constant([4.0, 7.0, 10.0], [1880.0, 1220.0, 900.0])
    assert any(abs(r) > 0.5 for r in three.residuals_pct)


def test_model_qber_matches_formula():
    probs = gate_probabilities(4.0, QkdLinkConfig().device)
    expected = (0.01 * probs.p_signal + 1e-5) / probs.p_click   # (1-V)/2 = 0.01, (n/2) p_dc = 1e-5
    assert probs.qber == pytest.approx(expected)
    assert 0.01 < model_qber(4.0, QkdLinkConfig()) < 0.02
    assert binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-3)
    assert binary_entropy(0.0) == 0.0


def test_config_from_shipped_scenario_and_bad_keys():
    scenario = load("bcn")
    config = QkdLinkConfig.from_scenario(scenario.section("qkd"), scenario.section("fibre"))
    assert config.loss_db == 7.0 and config.buffer_keys == 3906 and config.protocol == "BB84"
    with pytest.raises(QkdConfigError, match="mean_photon_numbr"):
        QkdLinkConfig.from_scenario({"mean_photon_numbr": 0.2})
    with pytest.raises(QkdConfigError, match="alpha"):
        QkdLinkConfig.from_scenario({"calibration": {"alpha": 1.0}})
    with pytest.raises(QkdConfigError, match="protocol"):
        QkdLinkConfig.from_scenario({"protocol": "E91"})
    with pytest.raises(QkdConfigError, match="cascade_passes"):
        QkdLinkConfig.from_scenario({"cascade_passes": "four"})
    overridden = QkdLinkConfig.from_scenario({"detector_efficiency": 0.2, "calibration": {"model": "physical"}})
    assert overridden.device.detector_efficiency == 0.2
    sections = overridden.to_sections()
    assert QkdLinkConfig.from_scenario(sections["qkd"], sections["fibre"]) == overridden


def test_physical_model_responds_to_detector_and_loss():
    base = QkdLinkConfig().replace(calibration=Calibration(model="physical"))
    better = base.replace(device=DeviceParams(detector_efficiency=0.2))
    assert secret_key_rate(7.0, better.calibration, better) > secret_key_rate(7.0, base.calibration, base)
    assert math.isclose(secret_key_rate(60.0, base.calibration, base), 0.0, abs_tol=1e-9)


def test_calibration_without_a_finite_rate_is_refused():
    with pytest.raises(QkdConfigError, match="a_s"):  # the settings refuse it on reading
        secret_key_rate(4.0, {"model": "two_constant", "a_s": 0.0, "b_s": 0.0})
    with pytest.raises(QkdConfigError, match="a_s = 0 and b_s = 0"):  # and the model never divides by 0
        two_constant_rate(4.0, 0.0, 0.0)
    with pytest.raises(QkdConfigError, match="not a finite number"):
        secret_key_rate(float("nan"), {"model": "physical"})
    assert two_constant_rate(4.0, 0.0, 1e-3) == pytest.approx(1000.0)
