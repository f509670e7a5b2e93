"""Detection events of the emulated quantum channel, sifting, Eve."""

import numpy as np
import pytest

from harness.qkd.config import QkdLinkConfig
from harness.qkd.physical import bb84_match, generate_events, sarg04_announcement, sarg04_conclude
from harness.qkd.rate import detection_rate, model_qber


def _bb84_qber(config, blocks=4, seconds=60.0):
    errors = total = 0
    for b in range(blocks):
        ev = generate_events(config, 11, b, seconds)
        keep = bb84_match(ev.alice.basis, ev.bob.basis)
        errors += int(np.sum(ev.alice.bit[keep] != ev.bob.bit[keep]))
        total += int(keep.sum())
    return errors / total, total


def test_events_are_seeded_and_reproducible():
    config = QkdLinkConfig(loss_db=4.0)
    a, b = generate_events(config, 5, 3, 10.0), generate_events(config, 5, 3, 10.0)
    assert np.array_equal(a.bob.bit, b.bob.bit) and np.array_equal(a.alice.pulse, b.alice.pulse)
    c = generate_events(config, 5, 4, 10.0)
    assert not np.array_equal(a.alice.pulse[:100], c.alice.pulse[:100])
    assert np.all(np.diff(a.alice.pulse) > 0) and a.alice.pulse.max() < a.gates


def test_click_rate_and_qber_follow_the_model():
    for loss in (4.0, 10.0):
        config = QkdLinkConfig(loss_db=loss)
        ev = generate_events(config, 1, 0, 100.0)
        assert ev.alice.pulse.size / 100.0 == pytest.approx(detection_rate(loss, config), rel=0.02)
        qber, n = _bb84_qber(config)
        assert n > 50_000
        assert qber == pytest.approx(model_qber(loss, config), abs=0.0015)


def test_worse_visibility_raises_qber():
    config = QkdLinkConfig(loss_db=4.0)
    worse = config.replace(device=config.device.__class__(visibility=0.9))
    assert _bb84_qber(worse)[0] > _bb84_qber(config)[0] + 0.03


@pytest.mark.parametrize("fraction, expected", [(1.0, 0.25), (0.4, 0.1)])
def test_intercept_resend_eve_raises_qber(fraction, expected):
    config = QkdLinkConfig(loss_db=4.0, eve_intercept_fraction=fraction)
    base = model_qber(4.0, config)
    qber, _ = _bb84_qber(config)
    # intercepted share f gets 25% errors (plus the optical errors on the rest)
    assert qber == pytest.approx(fraction * 0.25 + (1 - fraction) * base + fraction * base * 0.5, abs=0.006)
    assert qber == pytest.approx(expected, abs=0.015 if fraction == 1.0 else 0.02)


def test_sarg04_sifting_keeps_about_a_quarter_with_model_qber():
    config = QkdLinkConfig(loss_db=4.0, protocol="SARG04")
    ev = generate_events(config, 2, 0, 100.0)
    z, x = sarg04_announcement(ev.alice, np.random.default_rng(0))
    conclusive, bob_bits = sarg04_conclude(ev.bob, z, x)
    alice_bits = ev.alice.basis[conclusive]
    assert conclusive.mean() == pytest.approx(0.25, abs=0.01)
    assert np.mean(alice_bits != bob_bits) == pytest.approx(model_qber(4.0, config), abs=0.003)


def test_click_counts_are_poisson_and_positions_uniform():
    from scipy import stats
    config = QkdLinkConfig(loss_db=4.0)
    counts, positions = [], []
    for block in range(300):
        ev = generate_events(config, 9, block, 0.5)
        counts.append(ev.alice.pulse.size)
        positions.append(ev.alice.pulse / ev.gates)
    counts = np.array(counts)
    expected = detection_rate(4.0, config) * 0.5
    assert counts.mean() == pytest.approx(expected, rel=0.02)
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.2)     # Poisson: variance = mean
    assert stats.kstest(np.concatenate(positions), "uniform").pvalue > 0.001
    ev = generate_events(config, 9, 0, 0.5)
    assert ev.alice.basis.mean() == pytest.approx(0.5, abs=0.02) and set(np.unique(ev.bob.bit)) == {0, 1}
