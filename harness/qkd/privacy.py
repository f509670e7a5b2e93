"""Verification and privacy amplification of a corrected block.

Verification: Alice sends a random salt and a short tag of her bits; Bob compares with his. The
tag (SHA-256 of salt and bits, truncated) reveals at most its length in bits, which privacy
amplification subtracts.

Privacy amplification: a random binary Toeplitz matrix (a 2-universal family; Carter & Wegman
1979, Krawczyk 1994) maps the n corrected bits to m final bits. ``y = T x`` over GF(2) with
``T[i, j] = s[i - j + n - 1]`` is a slice of the convolution ``s * x``, computed with a real FFT
(exact: sums stay below 2^53) and reduced mod 2, so it costs O((n+m) log(n+m)).
Final length: ``m = n (1 - h(e)) - leaked_EC - tag bits - margin`` with ``e`` the error rate
Cascade found (Shor & Preskill 2000 for BB84; used for SARG04 too as a simplification).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from harness.qkd.rate import binary_entropy


def verification_tag(bits: np.ndarray, salt: bytes, tag_bits: int) -> bytes:
    """Tag of ``tag_bits`` bits (rounded up to bytes) over the packed bits."""
    digest = hashlib.sha256(salt + np.packbits(bits).tobytes() + bits.size.to_bytes(8, "little")).digest()
    return digest[: max(1, math.ceil(tag_bits / 8))]


def final_length(n: int, error_rate: float, leaked_ec: int, tag_bits: int, margin_bits: int) -> int:
    """Length m of the privacy-amplified key (0 if nothing is left)."""
    m = n * (1.0 - binary_entropy(error_rate)) - leaked_ec - tag_bits - margin_bits
    return max(0, int(math.floor(m)))


def toeplitz_hash(bits: np.ndarray, seed_bits: np.ndarray, m: int) -> np.ndarray:
    """Multiply ``bits`` (length n) by the m x n Toeplitz matrix given by ``seed_bits`` (n+m-1)."""
    n = int(bits.size)
    if m == 0 or n == 0:
        return np.zeros(0, np.uint8)
    if seed_bits.size != n + m - 1:
        raise ValueError(f"Toeplitz seed must have n+m-1 = {n + m - 1} bits, got {seed_bits.size}")
    # A circular convolution of length >= n+m-1 suffices: outputs n-1 .. n+m-2 never wrap around.
    size = _fast_length(seed_bits.size)
    conv = np.fft.irfft(np.fft.rfft(seed_bits.astype(np.float64), size) *
                        np.fft.rfft(bits.astype(np.float64), size), size)
    return (np.rint(conv[n - 1:n - 1 + m]).astype(np.int64) & 1).astype(np.uint8)


def _fast_length(minimum: int) -> int:
    """Smallest even 2^a 3^b 5^c >= minimum (FFT sizes pocketfft handles fastest)."""
    best = 1 << max(1, int(math.ceil(math.log2(max(minimum, 2)))))
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35 * 2
            while candidate < minimum:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def toeplitz_hash_reference(bits: np.ndarray, seed_bits: np.ndarray, m: int) -> np.ndarray:
    """The same product computed directly (O(nm)); for tests on small inputs."""
    n = bits.size
    rows = [seed_bits[i:i + n][::-1] for i in range(m)]  # row i: s[i+n-1-j] for j = 0..n-1
    return (np.array(rows, dtype=np.int64) @ bits.astype(np.int64) & 1).astype(np.uint8) if m else np.zeros(0, np.uint8)
