"""Quantum channel emulation: detection events of one block, vectorised with numpy.

The quantum channel is not an IP link. Both ends draw the same events from a shared seed (the
"fibre"): :func:`generate_events` is deterministic in (seed, block index), and each end keeps
only its own view: Alice her bits and bases, Bob his clicks, bases and results. Only the pulses
that click are materialised (drawing all 5e6 pulses/s would be wasteful): the number of
detections in a block is Poisson with mean ``R_det * T`` (``R_det`` from :mod:`harness.qkd.rate`),
the clicked pulse indices are uniform over the block's gates (drawn as a Poisson process: the same
distribution, without a sort), and each click is a signal detection with probability
p_sig/p_click, else a dark count. Fair coin flips (bases, bits) take one bit each of the
generator's 64-bit outputs.

Per click: Alice picks a basis and a bit. A signal click reproduces the state in Bob's basis if it
matches the basis the photon arrived in, flipped with probability (1-V)/2; otherwise Bob's bit is
random; a dark count gives a random bit. ``afterpulse_qber`` flips any click with that probability.

Eve (intercept-resend, fraction ``f``): on an intercepted signal pulse she measures in a random
basis and resends what she saw; assumption: she resends with enough intensity that the click
statistics at Bob are unchanged, so only the QBER shows her (25% on intercepted sifted bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.qkd.config import QkdLinkConfig
from harness.qkd.rate import detection_rate, gate_probabilities


@dataclass
class AliceView:
    """Alice's knowledge for the clicked pulses: pulse index, basis (0 Z / 1 X), bit."""

    pulse: np.ndarray
    basis: np.ndarray
    bit: np.ndarray


@dataclass
class BobView:
    """Bob's knowledge: which pulses clicked, his measurement basis and result."""

    pulse: np.ndarray
    basis: np.ndarray
    bit: np.ndarray


@dataclass
class BlockEvents:
    """All detection events of one block (both views; each node uses only its own)."""

    alice: AliceView
    bob: BobView
    gates: int           # gates (pulse slots) in the block
    signal: np.ndarray   # True where the click was a photon, not a dark count (for tests)
    intercepted: np.ndarray


def block_rng(seed: int, block: int, stream: int = 0) -> np.random.Generator:
    """The generator for one block of one stream: reproducible and independent across blocks."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block, stream])))


def _fair_bits(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``rows`` x ``n`` independent fair bits (uint8), 64 per generator draw."""
    words = rng.bit_generator.random_raw(-(-rows * n // 64))
    return np.unpackbits(words.view(np.uint8), count=rows * n).reshape(rows, n)


def _click_gates(rng: np.random.Generator, mean_clicks: float, gates: int) -> np.ndarray:
    """Sorted, distinct gate indices of a Poisson process with ``mean_clicks`` clicks over ``gates``.

    Same distribution as a Poisson number of uniform gates, sorted, but drawn as exponential gaps
    and a running sum, so nothing needs sorting.
    """
    if mean_clicks <= 0:
        return np.zeros(0, np.int64)
    scale = gates / mean_clicks
    draws = int(mean_clicks + 8 * np.sqrt(mean_clicks) + 16)
    times = np.cumsum(rng.standard_exponential(draws)) * scale
    while times[-1] < gates:   # more than 8 sigma above the mean: draw on
        times = np.concatenate([times, times[-1] + np.cumsum(rng.standard_exponential(draws)) * scale])
    pulse = times[:np.searchsorted(times, gates)].astype(np.int64)
    return pulse[np.concatenate(([True], pulse[1:] != pulse[:-1]))] if pulse.size else pulse  # one per gate


def generate_events(config: QkdLinkConfig, seed: int, block: int, duration_s: float) -> BlockEvents:
    """Draw the detection events of block ``block`` lasting ``duration_s`` emulated seconds."""
    rng = block_rng(seed, block, 0)
    device = config.device
    gates = max(1, int(round(device.rep_rate_hz * duration_s)))
    probs = gate_probabilities(config.loss_db, device)
    mean_clicks = min(detection_rate(config.loss_db, config) * duration_s, 0.5 * gates)
    pulse = _click_gates(rng, mean_clicks, gates)   # two clicks in one gate count once
    n = pulse.size
    signal = rng.random(n) < probs.p_signal / probs.p_click
    a_basis, a_bit, b_basis, random_bit = _fair_bits(rng, 4, n)

    # State arriving at Bob: Alice's, or Eve's re-preparation on intercepted signal pulses.
    arr_basis, arr_bit = a_basis, a_bit
    if config.eve_intercept_fraction > 0:
        intercepted = signal & (rng.random(n) < config.eve_intercept_fraction)
        e_basis, e_random = _fair_bits(rng, 2, n)
        e_bit = np.where(e_basis == a_basis, a_bit, e_random)
        arr_basis = np.where(intercepted, e_basis, a_basis)
        arr_bit = np.where(intercepted, e_bit, a_bit)
    else:
        intercepted = np.zeros(n, bool)

    optical_flip = (rng.random(n) < (1.0 - device.visibility) / 2.0).view(np.uint8)
    b_bit = np.where(signal & (b_basis == arr_basis), arr_bit ^ optical_flip, random_bit).astype(np.uint8)
    if device.afterpulse_qber > 0:
        b_bit ^= (rng.random(n) < device.afterpulse_qber).view(np.uint8)
    return BlockEvents(AliceView(pulse, a_basis.copy(), a_bit.copy()), BobView(pulse, b_basis.copy(), b_bit),
                       gates, signal, intercepted)


# --- Sifting primitives (pure; the message exchange is in harness.qkd.postproc) -----------------

def bb84_match(alice_basis: np.ndarray, bob_basis: np.ndarray) -> np.ndarray:
    """BB84: keep the clicks where Bob measured in Alice's basis."""
    return alice_basis == bob_basis


def sarg04_announcement(view: AliceView, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SARG04: per click Alice announces a pair {one Z state, one X state} holding the one she sent.

    Returns the Z-state value and X-state value of each pair; the key bit is the basis she used.
    """
    other = rng.integers(0, 2, view.pulse.size, dtype=np.uint8)
    z_value = np.where(view.basis == 0, view.bit, other).astype(np.uint8)
    x_value = np.where(view.basis == 1, view.bit, other).astype(np.uint8)
    return z_value, x_value


def sarg04_conclude(bob: BobView, z_value: np.ndarray, x_value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SARG04 at Bob: conclusive where his result is orthogonal to one state of the pair.

    Bob measured (basis b, result r); the state (b, 1-r) cannot have been sent. If it is in the
    pair, the sent state was the other one, whose basis is Bob's key bit (1 - b). Returns
    (conclusive mask, Bob's key bits for the conclusive clicks).
    """
    pair_value_in_bob_basis = np.where(bob.basis == 0, z_value, x_value)
    conclusive = pair_value_in_bob_basis == (1 - bob.bit)
    return conclusive, (1 - bob.basis[conclusive]).astype(np.uint8)
