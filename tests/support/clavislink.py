"""Test-only: an emulated QKD link behind real Clavis2 UDP services, for the unit tests and benchmarks.

Two :class:`harness.qkd.keybuffer.KeyBuffer` copies are fed identical key bits at ``rate_bps``
(seeded), each served by a real :class:`harness.qkd.clavis.ClavisServer` on loopback, so the KMEs
see exactly what they see in a run: the Clavis UDP interface over the real key buffers. The bits
are drawn directly instead of being distilled from detection events: ``qiot kme`` and ``qiot run``
use the full emulation (:class:`harness.qkd.link.BackgroundLink`, :mod:`harness.qkd.node`); tests
use this to control the buffer's contents (prefill, capacity, eviction) exactly and cheaply.
"""

from __future__ import annotations

import threading

import numpy as np

from harness.kme.suppliers import ClavisSupplier
from harness.qkd.clavis import ClavisServer
from harness.qkd.keybuffer import KeyBuffer


class ClavisLinkPair:
    """Alice's and Bob's Clavis services over two identical :class:`KeyBuffer` copies.

    ``rate_bps``: secret bits per wall second added to both buffers (0: none after the prefill);
    ``capacity_keys``: buffer size; ``prefill_keys``: keys present at start; ``seed``: key bits.
    """

    def __init__(self, rate_bps: float, capacity_keys: int, key_bits: int = 256, seed: int | None = 1,
                 prefill_keys: int = 0, host: str = "127.0.0.1", alice_port: int = 0, bob_port: int = 0):
        if rate_bps < 0:
            raise ValueError(f"rate_bps must be >= 0, got {rate_bps!r}")
        self.rate_bps = rate_bps
        self.key_bits = key_bits
        self.alice_buffer = KeyBuffer(capacity_keys, key_bits)
        self.bob_buffer = KeyBuffer(capacity_keys, key_bits)
        self._rng = np.random.default_rng(seed)
        self.add_keys(min(prefill_keys, capacity_keys))
        self.alice = ClavisServer(self.alice_buffer, (host, alice_port))
        self.bob = ClavisServer(self.bob_buffer, (host, bob_port))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_keys(self, count: int) -> None:
        """Append ``count`` keys' worth of identical random bits to both buffers."""
        if count <= 0:
            return
        bits = self._rng.integers(0, 2, count * self.key_bits, dtype=np.uint8)
        self.alice_buffer.add_bits(bits)
        self.bob_buffer.add_bits(bits)

    def suppliers(self, issuing: str = "bob") -> tuple[ClavisSupplier, ClavisSupplier]:
        """(Alice's, Bob's) KME key sources over Clavis; the ``issuing`` end's also counts its buffer."""
        alice_issues = issuing == "alice"
        return (ClavisSupplier(self.alice.address, issuing=alice_issues,
                               count=(lambda: self.alice_buffer.available) if alice_issues else None),
                ClavisSupplier(self.bob.address, issuing=not alice_issues,
                               count=None if alice_issues else (lambda: self.bob_buffer.available)))

    def start(self) -> "ClavisLinkPair":
        """Start both UDP services and, if the rate is positive, the key production."""
        self.alice.start()
        self.bob.start()
        if self.rate_bps > 0:
            self._thread = threading.Thread(target=self._produce, name="qkd-testlink", daemon=True)
            self._thread.start()
        return self

    def _produce(self) -> None:
        period = self.key_bits / self.rate_bps  # wall seconds per key
        while not self._stop.wait(period):
            self.add_keys(1)

    def stop(self) -> None:
        """Stop production and both services."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.alice.stop()
        self.bob.stop()
