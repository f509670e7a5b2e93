"""Cascade error correction (Brassard & Salvail 1993), with the parity work vectorised in numpy.

Bob corrects his bits towards Alice's. Each pass ``p`` shuffles the block with a public
permutation and cuts it into sub-blocks of ``k_p = k_1 2^p`` bits. Positions are kept in one flat
index space ``g = p * n + position-in-pass``, so a parity question is a pair ``(lo, hi)`` of flat
positions and the parity of any range comes from a prefix sum: no per-block Python loops.

All odd sub-blocks of a round (from any pass) are bisected *together*: each bisection level is
one question to Alice carrying every active range, so a round costs log2(k) round trips however
many errors there are. Bob's parities come from one prefix sum of his original bits plus a
count (searchsorted) of the positions flipped since, so nothing is recomputed per round. After a
round Bob flips the (deduplicated) error positions found, then looks up, in every
pass done so far, the sub-blocks holding a flipped bit; those whose parity now disagrees with
Alice's are the next round (the "cascade"). Answers Alice gave are cached, so no parity is asked
(or counted as leaked) twice.

Every range ever asked is a *tree node*: a top-level sub-block ("root") or the left half of a
node being bisected (the right half's parity follows from its parent's and is never asked). A
node's end ``hi`` identifies it: roots end on sub-block boundaries, and a left half ends at its
parent's midpoint, which lies strictly inside the parent and so is the midpoint of no other node
(ancestors split elsewhere, descendants have it as a boundary, other nodes are disjoint). So the
answer cache is one dense array indexed by ``hi``: a lookup or an insert is one gather/scatter.

The roots' parities are always all needed (every pass starts by comparing all of them), so Alice
may send them in one message instead of Bob asking pass by pass (``root_parities``): the same
parities are disclosed and counted, with fewer round trips.

Permutations are drawn by sorting random 64-bit keys that carry the element's index in their low
bits (a uniform random permutation, ties having probability below ``N^2 / 2^(65 - log2 N)``):
numpy's vectorised sort is several times faster than its Fisher-Yates ``permutation``, whose
random memory accesses dominated the profile. They are drawn once per seed for ``N``, the power of
two at or above the block length, and cached: a block of ``n`` bits uses, in each pass, the
elements below ``n`` of the permutation of range(N), in their order, which is a uniform random
permutation of range(n). Cascade needs its permutations public and independent of the errors, not
fresh per block, so a link may use one seed for all its blocks (:mod:`harness.qkd.postproc` does)
and pay for the sort once instead of per block and per end. The cache keeps the two latest
(seed, N): 8 bytes per bit and pass after the first (permutation and inverse, int32), e.g. 24 MB
for blocks of up to 2^20 bits with 4 passes.

Alice's side is :class:`CascadeAlice` (answers questions); Bob's is :func:`cascade_correct`,
which takes any callable ``ask(lo, hi) -> parities``: a direct call in one process, or a message
round trip over the authenticated classical channel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

ParityOracle = Callable[[np.ndarray, np.ndarray], np.ndarray]
_UNKNOWN = 2   # cache value of a range Alice has not answered


def first_block_size(qber: float, factor: float, floor_qber: float, n: int) -> int:
    """k_1 = factor / QBER (Brassard & Salvail 1993), at least 4 and at most n."""
    return int(min(max(4, round(factor / max(qber, floor_qber))), max(n, 1)))


def block_sizes(n: int, k1: int, passes: int) -> list[int]:
    """Sub-block size of each pass: k_1 doubled every pass, at most n."""
    return [min(k1 << p, n) for p in range(passes)]


def root_ranges(n: int, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat ``(lo, hi)`` of every top-level sub-block, pass by pass."""
    los, his = [np.empty(0, np.intp)], [np.empty(0, np.intp)]
    for p, size in enumerate(sizes if n else []):
        lo = p * n + np.arange(0, n, size, dtype=np.intp)
        los.append(lo)
        his.append(np.minimum(lo + size, (p + 1) * n))
    return np.concatenate(los), np.concatenate(his)


@functools.lru_cache(maxsize=2)
def _drawn_permutations(seed: int, size: int, passes: int) -> np.ndarray:
    """Rows of uniform random permutations of range(size), one per pass after the first (read-only)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, size, 0x5CA])))
    index_bits = max(1, (size - 1).bit_length())
    mask = np.uint64((1 << index_bits) - 1)
    ramp = np.arange(size, dtype=np.uint64)
    rows = np.empty((max(passes - 1, 0), size), np.int32 if size < 2**31 else np.int64)
    for row in rows:
        keys = rng.bit_generator.random_raw(size)
        keys &= ~mask
        keys |= ramp
        keys.sort()
        np.bitwise_and(keys, mask, out=row, casting="unsafe")
    rows.flags.writeable = False
    return rows


@functools.lru_cache(maxsize=2)
def _drawn_inverse(seed: int, size: int, passes: int) -> np.ndarray:
    """Inverse of each row of :func:`_drawn_permutations` (read-only)."""
    drawn = _drawn_permutations(seed, size, passes)
    inverse = np.empty_like(drawn)
    ramp = np.arange(size, dtype=drawn.dtype)
    for row, out in zip(drawn, inverse):
        out[row] = ramp
    inverse.flags.writeable = False
    return inverse


class PassOrder:
    """The public bit order of every pass (pass 0 is the identity), from a shared seed."""

    def __init__(self, seed: int, n: int, passes: int) -> None:
        self.n, self.passes = n, passes
        self._key = (int(seed), 1 << max(0, (n - 1).bit_length()), passes)
        self.flat = np.empty(passes * n, np.intp)   # flat position -> original bit index
        self.flat[:n] = np.arange(n)
        drawn = _drawn_permutations(*self._key)
        self._kept = []   # per pass after the first: which drawn positions hold a bit below n
        for p in range(1, passes):
            row = drawn[p - 1]
            kept = row < n
            self.flat[p * n:(p + 1) * n] = row[kept]
            self._kept.append(kept)
        self._rank: list[np.ndarray | None] = [None] * passes

    def position(self, p: int, bits: np.ndarray) -> np.ndarray:
        """Flat positions in pass ``p`` of the original bit indices ``bits``."""
        bits = np.asarray(bits, np.intp)
        if p == 0:
            return bits
        # Position in the drawn permutation, then rank among the kept positions (built on first
        # use: Alice never needs it, and Bob only for the few bits he flips).
        if self._rank[p] is None:
            self._rank[p] = np.cumsum(self._kept[p - 1], dtype=np.intp) - 1 + p * self.n
        return self._rank[p][_drawn_inverse(*self._key)[p - 1][bits]]

    def gather(self, bits: np.ndarray) -> np.ndarray:
        """``bits`` laid out in flat order (pass after pass)."""
        return np.take(bits, self.flat)


def permutations(seed: int, n: int, passes: int) -> np.ndarray:
    """Flat array of ``passes`` public permutations of range(n); pass 0 is the identity."""
    return PassOrder(seed, n, passes).flat.astype(np.int64, copy=False)


def _prefix(bits_in_flat_order: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading zero: parity of [lo, hi) is (c[hi] - c[lo]) & 1."""
    out = np.zeros(bits_in_flat_order.size + 1, dtype=np.int32)
    np.cumsum(bits_in_flat_order, dtype=np.int32, out=out[1:])
    return out


class CascadeAlice:
    """Alice's side: answers parity questions about her (fixed) bits."""

    def __init__(self, bits: np.ndarray, perm_seed: int, passes: int) -> None:
        self.n = int(bits.size)
        self.passes = passes
        self._prefix = _prefix(PassOrder(perm_seed, self.n, passes).gather(bits))
        self.answered = 0

    def parities(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Parities (uint8) of Alice's bits over the flat ranges [lo, hi)."""
        lo = np.asarray(lo, np.intp)
        hi = np.asarray(hi, np.intp)
        if lo.shape != hi.shape or lo.ndim != 1:
            raise ValueError("parity question with malformed ranges")
        if lo.size and np.any((lo < 0) | (hi > self._prefix.size - 1) | (hi <= lo)):   # one reduction
            raise ValueError("parity question with malformed ranges")
        self.answered += int(lo.size)
        return ((self._prefix[hi] - self._prefix[lo]) & 1).astype(np.uint8)

    def root_parities(self, k1: int) -> np.ndarray:
        """Parities of every top-level sub-block of every pass (see :func:`root_ranges`)."""
        return self.parities(*root_ranges(self.n, block_sizes(self.n, k1, self.passes)))


@dataclass
class CascadeResult:
    """Outcome of one Cascade run at Bob."""

    bits: np.ndarray       # Bob's corrected bits
    corrected: int         # bits flipped
    leaked: int            # parities revealed by Alice (bits of information leaked)
    round_trips: int       # questions sent to Alice


def cascade_correct(bob_bits: np.ndarray, qber: float, perm_seed: int, ask: ParityOracle,
                    passes: int = 4, k1_factor: float = 0.73, qber_floor: float = 0.002,
                    root_parities: Callable[[], np.ndarray] | None = None) -> CascadeResult:
    """Correct ``bob_bits`` towards Alice's by Cascade; ``ask(lo, hi)`` returns Alice's parities.

    ``qber`` is the estimated error rate (sets k_1); ``perm_seed`` must be the seed Alice used.
    ``root_parities``, if given, returns Alice's parities of all top-level sub-blocks in
    :func:`root_ranges` order (called once, after Bob has prepared his permutations); otherwise
    they are asked pass by pass. They count as leaked either way, but not as round trips.
    """
    bits = np.array(bob_bits, dtype=np.uint8, copy=True)
    n = int(bits.size)
    if n == 0:
        if root_parities is not None and np.asarray(root_parities()).size:
            raise ValueError("Alice's root parities have the wrong length or values")
        return CascadeResult(bits, 0, 0, 0)
    order = PassOrder(perm_seed, n, passes)
    sizes = block_sizes(n, first_block_size(qber, k1_factor, qber_floor, n), passes)
    # Alice's answer per asked range, indexed by the range's end (see the module docstring).
    answers = np.full(passes * n + 1, _UNKNOWN, np.uint8)
    stats = {"leaked": 0, "trips": 0}

    # Bob's parity of a range = parity of his original bits there (one prefix sum) plus the number
    # of bits flipped since (a sorted array of flat positions). Cascade never flips a bit twice:
    # it only ever finds positions where Bob and Alice differ.
    prefix = _prefix(order.gather(bits))
    flipped = np.empty(0, np.intp)

    if root_parities is not None:
        roots_lo, roots_hi = root_ranges(n, sizes)
        given = np.asarray(root_parities(), dtype=np.uint8)
        if given.shape != roots_hi.shape or (given.size and given.max() > 1):
            raise ValueError("Alice's root parities have the wrong length or values")
        answers[roots_hi] = given
        stats["leaked"] += int(given.size)

    def alice(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Alice's parities over the tree nodes [lo, hi), asking only what is not cached."""
        values = answers[hi]
        missing = values == _UNKNOWN
        if missing.any():
            # Ranges of one call are distinct nodes (disjoint, or from distinct sub-blocks).
            ask_lo, ask_hi = lo[missing], hi[missing]
            answer = np.asarray(ask(ask_lo, ask_hi), dtype=np.uint8)
            if answer.shape != ask_hi.shape or (answer.size and answer.max() > 1):
                raise ValueError("Alice's parity answer has the wrong length or values")
            stats["leaked"] += int(answer.size)
            stats["trips"] += 1
            answers[ask_hi] = answer
            values[missing] = answer
        return values

    def odd(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Where Bob's parity over [lo, hi) differs from Alice's."""
        flips = np.searchsorted(flipped, hi) - np.searchsorted(flipped, lo)
        return ((prefix[hi] - prefix[lo] + flips) & 1) != alice(lo, hi)

    def block_ranges(p: int, block_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = p * n + block_ids * sizes[p]
        return lo, np.minimum(lo + sizes[p], (p + 1) * n)

    corrected = 0
    for p in range(passes):
        lo, hi = block_ranges(p, np.arange(-(-n // sizes[p]), dtype=np.intp))
        mismatch = odd(lo, hi)
        lo, hi = lo[mismatch], hi[mismatch]
        while lo.size:
            active = np.flatnonzero(hi - lo > 1)
            while active.size:  # bisect all odd ranges together, one question per level
                a_lo, a_hi = lo[active], hi[active]
                mid = (a_lo + a_hi) >> 1
                left_odd = odd(a_lo, mid)
                hi[active] = np.where(left_odd, mid, a_hi)
                lo[active] = np.where(left_odd, a_lo, mid)
                active = active[hi[active] - lo[active] > 1]
            errors = np.unique(order.flat[lo])
            bits[errors] ^= 1
            corrected += int(errors.size)
            where = [order.position(q, errors) for q in range(passes)]
            new_flat = np.sort(np.concatenate(where))
            flipped = np.insert(flipped, np.searchsorted(flipped, new_flat), new_flat)
            # Cascade: sub-blocks of passes 0..p holding a flipped bit may now disagree.
            cand_lo, cand_hi = [], []
            for q in range(p + 1):
                c_lo, c_hi = block_ranges(q, np.unique((where[q] - q * n) // sizes[q]))
                cand_lo.append(c_lo)
                cand_hi.append(c_hi)
            c_lo, c_hi = np.concatenate(cand_lo), np.concatenate(cand_hi)
            mismatch = odd(c_lo, c_hi)
            lo, hi = c_lo[mismatch], c_hi[mismatch]
    return CascadeResult(bits, corrected, stats["leaked"], stats["trips"])
