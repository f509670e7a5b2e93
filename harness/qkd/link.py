"""Both ends of the link in one process: two :class:`QkdNode` threads over a loopback TCP socket.

Used by ``qiot qkd`` (standalone run), ``qiot qkd calibrate --emulate`` and the tests. These are
the same components as the node processes; only the transport setup differs.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.clock import EmulatedClock
from harness.qkd.config import QkdLinkConfig
from harness.qkd.node import QkdNode
from harness.qkd.postproc import BlockStats


@dataclass
class LinkRun:
    """Result of an in-process run: both nodes (closed) and summary figures from Alice's records."""

    alice: QkdNode
    bob: QkdNode
    seconds: float

    @property
    def blocks(self) -> list[BlockStats]:
        """Alice's per-block records."""
        return self.alice.stats

    @property
    def secret_rate_bps(self) -> float:
        """Final (privacy-amplified) bits per emulated second."""
        return sum(s.final_bits for s in self.blocks) / self.seconds if self.seconds else 0.0

    @property
    def sifted_rate_bps(self) -> float:
        """Sifted bits per emulated second."""
        return sum(s.sifted for s in self.blocks) / self.seconds if self.seconds else 0.0

    @property
    def qber(self) -> float:
        """Error rate over all sifted bits that went through Cascade (bit-weighted)."""
        used = [s for s in self.blocks if s.verified]
        n = sum(s.sifted - s.pe_bits for s in used)
        return sum(s.qber * (s.sifted - s.pe_bits) for s in used) / n if n else float("nan")

    @property
    def qber_est(self) -> float:
        """QBER from the PE samples of all blocks (sample-weighted)."""
        n = sum(s.pe_bits for s in self.blocks)
        return sum(s.qber_est * s.pe_bits for s in self.blocks) / n if n else float("nan")

    @property
    def f_ec(self) -> float:
        """Mean Cascade efficiency over verified blocks."""
        values = [s.f_ec for s in self.blocks if s.verified and s.f_ec > 0]
        return float(np.mean(values)) if values else float("nan")


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on 127.0.0.1 (Alice's end, Bob's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        alice = socket.create_connection(listener.getsockname())
        bob, _ = listener.accept()
    return alice, bob


def run_link(config: QkdLinkConfig, seconds: float, seed: int = 1, out_dir: Path | None = None,
             clock: EmulatedClock | None = None, udp: bool = False, keep_open: bool = False) -> LinkRun:
    """Run Alice and Bob for ``seconds`` emulated seconds; free-running unless a clock is given.

    With ``udp`` both serve Clavis UDP on ephemeral loopback ports; with ``keep_open`` the nodes
    (and their UDP services) stay open for the caller, who must then call ``close()`` on both.
    """
    alice_sock, bob_sock = socket_pair()
    udp_address = ("127.0.0.1", 0) if udp else None
    alice = QkdNode("alice", config, seed, out_dir / "alice" if out_dir else None, clock, udp_address)
    bob = QkdNode("bob", config, seed, out_dir / "bob" if out_dir else None, clock, udp_address)
    alice.attach(alice_sock)
    bob.attach(bob_sock)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            bob.run()
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="qkd-bob", daemon=True)
    thread.start()
    try:
        alice.run(seconds)
    finally:
        thread.join(timeout=30)
        if not keep_open or errors:
            alice.close()
            bob.close()
    if errors:
        raise errors[0]
    return LinkRun(alice, bob, seconds)


class BackgroundLink:
    """Alice and Bob distilling keys in background threads of this process, each serving Clavis UDP.

    The same :class:`QkdNode` components as the node processes of a run, over a loopback TCP
    classical channel, for standalone tools (``qiot kme``) that need a live link to take keys from.
    ``warmup_s`` emulated seconds of key are produced at start-up, as fast as the post-processing
    allows (the clock's epoch is set that far in the past, so those blocks are already due).
    """

    def __init__(self, config: QkdLinkConfig, seed: int = 1, time_scale: float = 1.0, warmup_s: float = 0.0,
                 host: str = "127.0.0.1", out_dir: Path | None = None) -> None:
        self.clock = EmulatedClock(time.time() - warmup_s / time_scale, time_scale)
        alice_sock, bob_sock = socket_pair()
        self.alice = QkdNode("alice", config, seed, out_dir / "alice" if out_dir else None, self.clock, (host, 0))
        self.bob = QkdNode("bob", config, seed, out_dir / "bob" if out_dir else None, self.clock, (host, 0))
        self.alice.attach(alice_sock)
        self.bob.attach(bob_sock)
        self._threads = [threading.Thread(target=node.run, name=f"qkd-{node.role}", daemon=True)
                         for node in (self.bob, self.alice)]

    @property
    def alice_address(self) -> tuple[str, int]:
        return self.alice.server.address

    @property
    def bob_address(self) -> tuple[str, int]:
        return self.bob.server.address

    def start(self) -> "BackgroundLink":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop both ends, wait for their threads, close sockets and services."""
        self.alice.stop()
        self.bob.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self.alice.close()
        self.bob.close()
