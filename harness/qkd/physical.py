"""Quantum channel emulation: detection events of one block, vectorised with numpy.

The quantum channel is not an IP link. Both ends draw the same events from a shared seed (the
"fibre"): :func:`generate_events` is deterministic in (seed, block index), and each end keeps
only its own view: Alice her bits and bases, Bob his clicks, bases and results. Only the pulses
that click are materialised (drawing all 5e6 pulses/s would be wasteful): the number of
detections in a block is Poisson with mean ``R_det * T`` (``R_det`` from :mod:`harness.qkd.rate`),
the clicked pulse indices are uniform over the block's gates, and each click is a signal
detection with probability p_sig/p_click, else a dark count.

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


def generate_events(config: QkdLinkConfig, seed: int, block: int, duration_s: float) -> BlockEvents:
    """Draw the detection events of block ``block`` lasting ``duration_s`` emulated seconds."""
    rng = block_rng(seed, block, 0)
    device = config.device
    gates = max(1, int(round(device.rep_rate_hz * duration_s)))
    probs = gate_probabilities(config.loss_db, device)
    mean_clicks = min(detection_rate(config.loss_db, config) * duration_s, 0.5 * gates)
    n = int(rng.poisson(mean_clicks))
    pulse = np.sort(rng.integers(0, gates, size=n, dtype=np.int64))
    pulse = pulse[np.concatenate(([True], pulse[1:] != pulse[:-1]))] if n else pulse  # two clicks, one gate: one
    n = pulse.size
    signal = rng.random(n) < probs.p_signal / probs.p_click
    a_basis = rng.integers(0, 2, n, dtype=np.uint8)
    a_bit = rng.integers(0, 2, n, dtype=np.uint8)
    b_basis = rng.integers(0, 2, n, dtype=np.uint8)

    # State arriving at Bob: Alice's, or Eve's re-preparation on intercepted signal pulses.
    arr_basis, arr_bit = a_basis.copy(), a_bit.copy()
    intercepted = signal & (rng.random(n) < config.eve_intercept_fraction)
    if intercepted.any():
        e_basis = rng.integers(0, 2, n, dtype=np.uint8)
        e_bit = np.where(e_basis == a_basis, a_bit, rng.integers(0, 2, n, dtype=np.uint8)).astype(np.uint8)
        arr_basis = np.where(intercepted, e_basis, arr_basis).astype(np.uint8)
        arr_bit = np.where(intercepted, e_bit, arr_bit).astype(np.uint8)

    random_bit = rng.integers(0, 2, n, dtype=np.uint8)
    optical_flip = (rng.random(n) < (1.0 - device.visibility) / 2.0).astype(np.uint8)
    b_bit = np.where(signal & (b_basis == arr_basis), arr_bit ^ optical_flip, random_bit).astype(np.uint8)
    if device.afterpulse_qber > 0:
        b_bit ^= (rng.random(n) < device.afterpulse_qber).astype(np.uint8)
    return BlockEvents(AliceView(pulse, a_basis, a_bit), BobView(pulse, b_basis, b_bit),
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
