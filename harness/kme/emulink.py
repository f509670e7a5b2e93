"""An emulated QKD link behind real Clavis2 UDP services: two key buffers fed identical key bits
at the link's secret-key rate, each served by :class:`harness.qkd.clavis.ClavisServer`.

This is a light stand-in for the full physical/post-processing emulation in :mod:`harness.qkd`
(which produces the bits from detection events): here the bits are drawn directly, seeded, at
``rate_bps``. The KMEs see exactly what they would see in a run: the Clavis UDP interface.
"""

from __future__ import annotations

import threading

import numpy as np

from harness.qkd.clavis import ClavisServer
from harness.qkd.keybuffer import KeyBuffer


class ClavisLinkPair:
    """Alice's and Bob's Clavis services over two identical :class:`KeyBuffer` copies."""

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

    def start(self) -> "ClavisLinkPair":
        """Start both UDP services and, if the rate is positive, the key production."""
        self.alice.start()
        self.bob.start()
        if self.rate_bps > 0:
            self._thread = threading.Thread(target=self._produce, name="qkd-emulink", daemon=True)
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
