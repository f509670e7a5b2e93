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

Alice's side is :class:`CascadeAlice` (answers questions); Bob's is :func:`cascade_correct`,
which takes any callable ``ask(lo, hi) -> parities``: a direct call in one process, or a message
round trip over the authenticated classical channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ParityOracle = Callable[[np.ndarray, np.ndarray], np.ndarray]


def first_block_size(qber: float, factor: float, floor_qber: float, n: int) -> int:
    """k_1 = factor / QBER (Brassard & Salvail 1993), at least 4 and at most n."""
    return int(min(max(4, round(factor / max(qber, floor_qber))), max(n, 1)))


def permutations(seed: int, n: int, passes: int) -> np.ndarray:
    """Flat array of ``passes`` public permutations of range(n); pass 0 is the identity."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, n, 0x5CA])))
    perms = [np.arange(n, dtype=np.int64)]
    perms += [rng.permutation(n).astype(np.int64) for _ in range(passes - 1)]
    return np.concatenate(perms)


def _prefix(bits_in_flat_order: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading zero: parity of [lo, hi) is (c[hi] - c[lo]) & 1."""
    out = np.zeros(bits_in_flat_order.size + 1, dtype=np.int32)
    np.cumsum(bits_in_flat_order, dtype=np.int32, out=out[1:])
    return out


class CascadeAlice:
    """Alice's side: answers parity questions about her (fixed) bits."""

    def __init__(self, bits: np.ndarray, perm_seed: int, passes: int) -> None:
        self.n = int(bits.size)
        self._prefix = _prefix(bits[permutations(perm_seed, self.n, passes)])
        self.answered = 0

    def parities(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Parities (uint8) of Alice's bits over the flat ranges [lo, hi)."""
        lo = np.asarray(lo, np.int64)
        hi = np.asarray(hi, np.int64)
        if lo.shape != hi.shape or (lo.size and (lo.min() < 0 or hi.max() > self._prefix.size - 1
                                                 or np.any(hi <= lo))):
            raise ValueError("parity question with malformed ranges")
        self.answered += int(lo.size)
        return ((self._prefix[hi] - self._prefix[lo]) & 1).astype(np.uint8)


@dataclass
class CascadeResult:
    """Outcome of one Cascade run at Bob."""

    bits: np.ndarray       # Bob's corrected bits
    corrected: int         # bits flipped
    leaked: int            # parities revealed by Alice (bits of information leaked)
    round_trips: int       # questions sent to Alice


class _AnswerCache:
    """Alice's answers keyed by flat range, looked up with searchsorted (vectorised)."""

    def __init__(self, span: int) -> None:
        self.span = span + 1
        self.keys = np.empty(0, np.int64)
        self.values = np.empty(0, np.uint8)

    def lookup(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (known mask, values where known)."""
        key = lo * self.span + hi
        idx = np.searchsorted(self.keys, key)
        idx_c = np.minimum(idx, max(self.keys.size - 1, 0))
        known = (idx < self.keys.size) & (self.keys[idx_c] == key) if self.keys.size else np.zeros(key.size, bool)
        values = self.values[idx_c] if self.keys.size else np.zeros(key.size, np.uint8)
        return known, values

    def add(self, key: np.ndarray, values: np.ndarray) -> None:
        """Insert new, sorted, distinct keys not yet cached (a merge, O(size))."""
        at = np.searchsorted(self.keys, key)
        self.keys = np.insert(self.keys, at, key)
        self.values = np.insert(self.values, at, values)


def cascade_correct(bob_bits: np.ndarray, qber: float, perm_seed: int, ask: ParityOracle,
                    passes: int = 4, k1_factor: float = 0.73, qber_floor: float = 0.002) -> CascadeResult:
    """Correct ``bob_bits`` towards Alice's by Cascade; ``ask(lo, hi)`` returns Alice's parities.

    ``qber`` is the estimated error rate (sets k_1); ``perm_seed`` must be the seed Alice used.
    """
    bits = np.array(bob_bits, dtype=np.uint8, copy=True)
    n = int(bits.size)
    if n == 0:
        return CascadeResult(bits, 0, 0, 0)
    perm = permutations(perm_seed, n, passes)
    inverse = np.empty_like(perm)
    for p in range(passes):  # flat position of each original bit in pass p
        inverse[p * n + perm[p * n:(p + 1) * n]] = np.arange(p * n, (p + 1) * n, dtype=np.int64)
    k1 = first_block_size(qber, k1_factor, qber_floor, n)
    sizes = [min(k1 << p, n) for p in range(passes)]
    cache = _AnswerCache(passes * n)
    stats = {"leaked": 0, "trips": 0}

    def alice(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Alice's parities over [lo, hi), asking only what is not cached."""
        known, values = cache.lookup(lo, hi)
        if not known.all():
            # Ask each distinct range once even if two active blocks share it.
            keys = np.unique(lo[~known] * cache.span + hi[~known])
            answer = np.asarray(ask(keys // cache.span, keys % cache.span), dtype=np.uint8)
            if answer.shape != keys.shape:
                raise ValueError("Alice's parity answer has the wrong length")
            stats["leaked"] += int(answer.size)
            stats["trips"] += 1
            cache.add(keys, answer)
            known, values = cache.lookup(lo, hi)
        return values

    def block_ranges(p: int, block_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = p * n + block_ids * sizes[p]
        hi = np.minimum(lo + sizes[p], (p + 1) * n)
        return lo, hi

    # Bob's parity of a range = parity of his original bits there (one prefix sum) plus the number
    # of bits flipped since (a sorted array of flat positions). Cascade never flips a bit twice:
    # it only ever finds positions where Bob and Alice differ.
    prefix = _prefix(bits[perm])
    flipped = np.empty(0, np.int64)

    def bob(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        flips = np.searchsorted(flipped, hi) - np.searchsorted(flipped, lo)
        return ((prefix[hi] - prefix[lo] + flips) & 1).astype(np.uint8)

    corrected = 0
    for p in range(passes):
        lo, hi = block_ranges(p, np.arange(-(-n // sizes[p]), dtype=np.int64))
        odd = alice(lo, hi) != bob(lo, hi)
        lo, hi = lo[odd], hi[odd]
        while lo.size:
            lo, hi = lo.copy(), hi.copy()
            active = hi - lo > 1
            while active.any():  # bisect all odd ranges together, one question per level
                a_lo, a_hi = lo[active], hi[active]
                mid = (a_lo + a_hi) // 2
                left_odd = alice(a_lo, mid) != bob(a_lo, mid)
                hi[active] = np.where(left_odd, mid, a_hi)
                lo[active] = np.where(left_odd, a_lo, mid)
                active = hi - lo > 1
            errors = np.unique(perm[lo])
            bits[errors] ^= 1
            corrected += int(errors.size)
            where = (np.arange(passes, dtype=np.int64)[:, None] * n + errors[None, :]).ravel()
            new_flat = np.sort(inverse[where])
            flipped = np.insert(flipped, np.searchsorted(flipped, new_flat), new_flat)
            # Cascade: sub-blocks of passes 0..p holding a flipped bit may now disagree.
            cand_lo, cand_hi = [], []
            for q in range(p + 1):
                ids = np.unique((inverse[q * n + errors] - q * n) // sizes[q])
                c_lo, c_hi = block_ranges(q, ids)
                cand_lo.append(c_lo)
                cand_hi.append(c_hi)
            c_lo, c_hi = np.concatenate(cand_lo), np.concatenate(cand_hi)
            mismatch = alice(c_lo, c_hi) != bob(c_lo, c_hi)
            lo, hi = c_lo[mismatch], c_hi[mismatch]
    return CascadeResult(bits, corrected, stats["leaked"], stats["trips"])
