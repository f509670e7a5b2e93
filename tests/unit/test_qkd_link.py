"""The whole link in one process (same components as the node processes): keys, rates, QBER, Eve."""

import numpy as np
import pytest

from harness.qkd.config import Calibration, QkdLinkConfig
from harness.qkd.link import run_link
from harness.qkd.rate import model_qber

# Targets: the paper's measured average secret-key rates (Mavromatis et al., ECOC 2018; reference.md §1).
PAPER = {4.0: 1880.0, 7.0: 1220.0}


def _identical(run):
    a, b = run.alice.buffer, run.bob.buffer
    return a.ids() == b.ids() and all(a.get(i) == b.get(i) for i in a.ids())


def test_long_run_identical_keys_and_buffer_replaces_oldest(tmp_path):
    # 1200 emulated s at 4 dB make ~8,800 keys: the 3,906-key buffer overflows twice.
    run = run_link(QkdLinkConfig(loss_db=4.0), 1200.0, seed=21, out_dir=tmp_path)
    alice, bob = run.alice.buffer, run.bob.buffer
    assert alice.produced == bob.produced > 2 * 3906
    assert alice.stored == 3906 and alice.evicted == alice.produced - 3906
    assert alice.ids() == list(range(alice.produced - 3905, alice.produced + 1))   # the newest survive
    assert _identical(run)
    assert all(s.verified and not s.aborted for s in run.blocks)
    assert [s.final_bits for s in run.alice.stats] == [s.final_bits for s in run.bob.stats]
    fill = (tmp_path / "alice" / "buffer.csv").read_text().splitlines()
    assert len(fill) == 1 + len(run.blocks) and fill[-1].split(",")[2] == "3906"
    assert (tmp_path / "bob" / "blocks.csv").read_text().count("\n") == 1 + len(run.blocks)


@pytest.mark.parametrize("model", ["two_constant", "physical"])
@pytest.mark.parametrize("loss", sorted(PAPER))
def test_secret_rate_within_5_percent_of_paper(loss, model):
    config = QkdLinkConfig(loss_db=loss).replace(calibration=Calibration(model=model))
    run = run_link(config, 300.0, seed=5)
    assert run.secret_rate_bps == pytest.approx(PAPER[loss], rel=0.05)
    assert run.qber == pytest.approx(model_qber(loss, config), abs=0.001)
    assert 1.05 < run.f_ec < 1.3


def test_sarg04_link_distils_identical_keys():
    run = run_link(QkdLinkConfig(loss_db=4.0, protocol="SARG04"), 200.0, seed=2)
    assert run.alice.buffer.produced > 0 and _identical(run)
    assert run.qber == pytest.approx(model_qber(4.0, run.alice.config), abs=0.003)


def test_full_intercept_eve_gives_25_percent_and_no_key():
    run = run_link(QkdLinkConfig(loss_db=4.0, eve_intercept_fraction=1.0), 100.0, seed=3)
    assert run.qber_est == pytest.approx(0.25, abs=0.02)
    assert run.alice.buffer.produced == 0 and run.bob.buffer.produced == 0
    assert all("above threshold" in s.aborted for s in run.blocks)


def test_partial_eve_lowers_rate_with_physical_model():
    base = QkdLinkConfig(loss_db=4.0).replace(calibration=Calibration(model="physical"))
    clean = run_link(base, 100.0, seed=4)
    eve = run_link(base.replace(eve_intercept_fraction=0.2), 100.0, seed=4)
    assert eve.qber > clean.qber + 0.04
    assert 0 < eve.secret_rate_bps < 0.7 * clean.secret_rate_bps
    assert _identical(eve)


def test_higher_loss_gives_less_key():
    rates = [run_link(QkdLinkConfig(loss_db=loss), 100.0, seed=6).secret_rate_bps for loss in (0.0, 10.0, 14.0)]
    assert rates[0] > rates[1] > rates[2] > 0
    assert np.isfinite(rates).all()
