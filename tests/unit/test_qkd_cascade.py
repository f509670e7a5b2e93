"""Cascade error correction, verification and Toeplitz privacy amplification."""

import numpy as np
import pytest

from harness.qkd.cascade import CascadeAlice, cascade_correct, first_block_size, permutations
from harness.qkd.privacy import final_length, toeplitz_hash, toeplitz_hash_reference, verification_tag
from harness.qkd.rate import binary_entropy


def _pair(n, qber, seed):
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    return alice, alice ^ (rng.random(n) < qber).astype(np.uint8)


@pytest.mark.parametrize("n, qber", [(5_000, 0.01), (40_000, 0.02), (40_000, 0.05), (2_000, 0.10)])
def test_cascade_corrects_everything_and_counts_leakage(n, qber):
    alice, bob = _pair(n, qber, seed=n)
    oracle = CascadeAlice(alice, perm_seed=99, passes=4)
    result = cascade_correct(bob, qber, 99, oracle.parities)
    assert np.array_equal(result.bits, alice)
    assert result.corrected == int(np.sum(alice != bob))
    assert result.leaked == oracle.answered          # every parity Alice gave is counted, once
    actual = np.mean(alice != bob)
    f_ec = result.leaked / (n * binary_entropy(actual))
    assert 1.0 < f_ec < 1.45


def test_cascade_leaves_bob_input_untouched_and_handles_no_errors():
    alice, _ = _pair(3000, 0.0, 1)
    oracle = CascadeAlice(alice, 5, 4)
    bob = alice.copy()
    result = cascade_correct(bob, 0.0, 5, oracle.parities)
    assert result.corrected == 0 and np.array_equal(result.bits, alice)
    assert result.leaked == sum(-(-3000 // min(first_block_size(0.0, 0.73, 0.002, 3000) << p, 3000))
                                for p in range(4))


def test_permutations_are_public_and_valid():
    perms = permutations(7, 100, 4)
    assert np.array_equal(perms, permutations(7, 100, 4))
    for p in range(4):
        assert sorted(perms[p * 100:(p + 1) * 100]) == list(range(100))


def test_alice_rejects_malformed_questions():
    oracle = CascadeAlice(np.zeros(100, np.uint8), 1, 2)
    with pytest.raises(ValueError):
        oracle.parities(np.array([5]), np.array([5]))
    with pytest.raises(ValueError):
        oracle.parities(np.array([0]), np.array([201]))


def test_toeplitz_fft_matches_direct_product():
    rng = np.random.default_rng(3)
    for n, m in [(1, 1), (17, 5), (300, 120), (1000, 999)]:
        bits = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        assert np.array_equal(toeplitz_hash(bits, seed, m), toeplitz_hash_reference(bits, seed, m))
    with pytest.raises(ValueError):
        toeplitz_hash(np.ones(10, np.uint8), np.ones(5, np.uint8), 3)


def test_toeplitz_output_changes_with_any_input_bit():
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, 2000, dtype=np.uint8)
    seed = rng.integers(0, 2, 2000 + 256 - 1, dtype=np.uint8)
    flipped = bits.copy()
    flipped[1234] ^= 1
    assert np.mean(toeplitz_hash(bits, seed, 256) != toeplitz_hash(flipped, seed, 256)) > 0.3


def test_final_length_and_tag():
    assert final_length(10_000, 0.0, 0, 64, 64) == 10_000 - 128
    assert final_length(10_000, 0.11, 6_000, 64, 64) == 0
    n, e, leak = 20_000, 0.02, 3_000
    assert final_length(n, e, leak, 64, 64) == int(n * (1 - binary_entropy(e)) - leak - 128)
    a = np.ones(100, np.uint8)
    b = a.copy()
    b[50] = 0
    assert verification_tag(a, b"s", 64) != verification_tag(b, b"s", 64)
    assert len(verification_tag(a, b"s", 64)) == 8


def test_permutations_restricted_from_a_longer_draw_are_uniform():
    # n = 3 is cut from permutations of range(4): all 6 orders must come up equally often.
    counts = {}
    for seed in range(3000):
        order = tuple(permutations(seed, 3, 2)[3:])
        counts[order] = counts.get(order, 0) + 1
    assert len(counts) == 6
    assert all(abs(c - 500) < 5 * np.sqrt(500) for c in counts.values()), counts


def test_inverse_positions_agree_with_the_permutation():
    from harness.qkd.cascade import PassOrder
    order = PassOrder(11, 1000, 4)                         # 1000 is cut from a 1024-draw
    bits = np.array([0, 5, 999, 512])
    for p in range(4):
        flat = order.position(p, bits)
        assert np.array_equal(order.flat[flat], bits) and np.all(flat // 1000 == p)


def test_root_parities_sent_upfront_change_nothing_but_round_trips():
    alice, bob = _pair(20_000, 0.02, seed=8)
    k1 = first_block_size(0.02, 0.73, 0.002, alice.size)
    asked = CascadeAlice(alice, 4, 4)
    by_questions = cascade_correct(bob, 0.02, 4, asked.parities)
    given = CascadeAlice(alice, 4, 4)
    upfront = cascade_correct(bob, 0.02, 4, given.parities, root_parities=lambda: given.root_parities(k1))
    assert np.array_equal(upfront.bits, alice) and np.array_equal(by_questions.bits, alice)
    assert upfront.leaked == by_questions.leaked == given.answered == asked.answered
    assert upfront.round_trips == by_questions.round_trips - 4      # one question per pass fewer
    with pytest.raises(ValueError):
        cascade_correct(bob, 0.02, 4, given.parities, root_parities=lambda: np.zeros(3, np.uint8))


def test_one_permutation_set_per_link_keeps_the_efficiency_of_fresh_ones():
    # The link reuses one permutation seed for every block: over many error patterns its f_EC
    # must match that of permutations drawn afresh per block (same distribution of leakage).
    rng = np.random.default_rng(12)
    fixed, fresh = [], []
    for block in range(150):
        alice = rng.integers(0, 2, 4000, dtype=np.uint8)
        bob = alice ^ (rng.random(4000) < 0.02).astype(np.uint8)
        entropy = 4000 * binary_entropy(np.mean(alice != bob))
        for seed, out in ((77, fixed), (1000 + block, fresh)):
            result = cascade_correct(bob, 0.02, seed, CascadeAlice(alice, seed, 4).parities)
            assert np.array_equal(result.bits, alice)
            out.append(result.leaked / entropy)
    assert np.mean(fixed) == pytest.approx(np.mean(fresh), abs=0.02)
    assert 1.05 < np.mean(fixed) < 1.3
