"""The post-processing protocol of one block, run by Alice and Bob over the classical channel.

Alice leads. Per block (messages in order; A = Alice, B = Bob; messages joined by ``+`` leave
back to back, without waiting for a reply, so a block costs few round trips):

1. A->B ``BLOCK`` (block number, emulated start/end, key ids A handed out). Both draw the
   block's detection events from the shared channel seed (:mod:`harness.qkd.physical`).
2. Sifting. BB84: B->A ``CLICKS`` (clicked pulses and B's bases), A->B ``SIFT`` (basis-match mask).
   SARG04: B->A ``CLICKS`` (pulses only), A->B ``SIFT`` (the pair of states per click),
   B->A ``CONCLUSIVE`` (mask). Key ids B handed out ride on ``CLICKS``. Pulses travel as gaps
   between clicks (4 bytes each), bit arrays packed 8 to a byte: a long block is megabytes.
3. Parameter estimation: A->B ``SAMPLE`` (random positions, A's bits there) + ``EC`` (the seed
   of Cascade's public permutations: one per link, so they are drawn once), B->A ``PE``
   (estimated QBER, abort flag). Sampled bits are discarded. Abort above the QBER threshold
   (B still reads ``EC``).
4. Error correction: A->B ``ROOTS`` (A's parities of every top-level Cascade sub-block of every
   pass, all of which Cascade asks anyway); B asks ``PARITY`` questions (bisection), A answers
   ``PARITY_R``; B->A ``EC_DONE`` (bits corrected, parities leaked).
5. Verification and privacy amplification: A->B ``VERIFY`` (salt, tag) + ``PA`` (final length,
   Toeplitz seed); B->A ``DONE`` (whether the tags matched). A key is kept only if they did.

Both ends then append the final bits to their key buffers, and each returns the same
:class:`BlockStats`. Alice's public random choices come from her own seeded generator.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from harness.qkd.cascade import CascadeAlice, cascade_correct, first_block_size
from harness.qkd.channel import Channel, ChannelError
from harness.qkd.config import QkdLinkConfig
from harness.qkd.keybuffer import KeyBuffer
from harness.qkd.physical import (BobView, bb84_match, block_rng, generate_events, sarg04_announcement,
                                  sarg04_conclude)
from harness.qkd.privacy import final_length, toeplitz_hash, verification_tag
from harness.qkd.rate import binary_entropy

ALICE_STREAM = 1   # block_rng stream of Alice's public random choices (stream 0 is the quantum channel)
PERMUTATION_STREAM = 2   # block_rng stream (block 0) of the link's Cascade permutation seed


@dataclass
class BlockStats:
    """What one block yielded (identical at both ends except ``duration_s``)."""

    block: int
    t_start: float
    t_end: float
    raw: int = 0              # detections (clicks)
    sifted: int = 0
    pe_bits: int = 0          # disclosed for QBER estimation
    qber_est: float = 0.0     # from the PE sample
    qber: float = 0.0         # errors Cascade corrected / bits corrected
    leaked: int = 0           # parities revealed by Cascade
    f_ec: float = 0.0         # leaked / (n h(qber))
    verified: bool = False
    final_bits: int = 0
    keys_added: int = 0
    keys_stored: int = 0
    aborted: str = ""         # reason, empty if the block produced key
    duration_s: float = 0.0   # wall-clock processing time

    @classmethod
    def columns(cls) -> list[str]:
        """CSV column names."""
        return [f.name for f in fields(cls)]

    def row(self) -> list:
        """CSV row in :meth:`columns` order."""
        return list(asdict(self).values())


def _finish(stats: BlockStats, buffer: KeyBuffer, final: np.ndarray, started: float) -> BlockStats:
    stats.final_bits = int(final.size)
    stats.keys_added = len(buffer.add_bits(final)) if final.size else 0
    stats.keys_stored = buffer.stored
    stats.duration_s = time.perf_counter() - started
    return stats


def _aborted(stats: BlockStats, buffer: KeyBuffer, reason: str, started: float) -> BlockStats:
    stats.aborted = reason
    return _finish(stats, buffer, np.zeros(0, np.uint8), started)


def _gaps(pulse: np.ndarray) -> np.ndarray:
    """Clicked pulse indices as gaps from the previous click (first: from 0), in 4 bytes if they fit."""
    gaps = np.diff(pulse, prepend=0)
    return gaps.astype(np.uint32) if gaps.size and gaps.max() < 2**32 else gaps.astype(np.int64)


def _unpack(packed: np.ndarray, count: int) -> np.ndarray:
    """Bits sent with ``np.packbits``; a length that does not match is a protocol error."""
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != -(-count // 8):
        raise ChannelError(f"packed bit array of {packed.size} bytes for {count} bits")
    return np.unpackbits(packed, count=count)


def _pa_length(config: QkdLinkConfig, n: int, corrected: int, leaked: int) -> int:
    post = config.post
    return final_length(n, corrected / n if n else 0.0, leaked, post.verify_tag_bits, post.pa_margin_bits)


#: Loss of a cut fibre, dB: no photon gets through (transmittance 1e-30, no click in any block).
CUT_LOSS_DB = 300.0


def block_config(config: QkdLinkConfig, channel_up: bool) -> QkdLinkConfig:
    """The link as it is during one block: as configured, or with its quantum channel cut."""
    return config if channel_up else config.replace(loss_db=CUT_LOSS_DB)


class AliceEngine:
    """Alice's side of the block protocol."""

    def __init__(self, config: QkdLinkConfig, channel: Channel, seed: int, buffer: KeyBuffer) -> None:
        self.config, self.channel, self.seed, self.buffer = config, channel, seed, buffer
        self.perm_seed = int(block_rng(seed, 0, PERMUTATION_STREAM).integers(0, 2**62))

    def run_block(self, block: int, t_start: float, t_end: float, channel_up: bool = True) -> BlockStats:
        """Run one block with Bob; return its statistics. ``channel_up`` False: the quantum channel is
        cut for this block (no photon reaches Bob); Alice tells Bob so both draw the same events."""
        started = time.perf_counter()
        cfg, ch, post = block_config(self.config, channel_up), self.channel, self.config.post
        rng = block_rng(self.seed, block, ALICE_STREAM)
        view = generate_events(cfg, self.seed, block, t_end - t_start).alice
        ch.send("BLOCK", {"block": block, "t_start": t_start, "t_end": t_end, "quantum_channel": channel_up,
                          "handed_out": self.buffer.take_handed_out()})
        _, info, arrays = ch.recv("CLICKS")
        self.buffer.mark_handed_out(info["handed_out"])
        pulse = np.cumsum(arrays["gaps"], dtype=np.int64)
        stats = BlockStats(block, t_start, t_end, raw=int(pulse.size))
        if np.array_equal(pulse, view.pulse):   # always, unless the ends disagree on seed or config
            basis, bit = view.basis, view.bit
        else:
            at = np.searchsorted(view.pulse, pulse)
            if pulse.size and (at.max() >= view.pulse.size or np.any(view.pulse[at] != pulse)):
                raise ChannelError("Bob announced clicks on pulses Alice never sent (seed or config mismatch)")
            basis, bit = view.basis[at], view.bit[at]
        if cfg.protocol == "BB84":
            keep = bb84_match(basis, _unpack(arrays["basis"], pulse.size))
            ch.send("SIFT", keep=np.packbits(keep))
            key = bit[keep]
        else:
            z_value, x_value = sarg04_announcement(type(view)(pulse, basis, bit), rng)
            ch.send("SIFT", z=np.packbits(z_value), x=np.packbits(x_value))
            _, _, reply = ch.recv("CONCLUSIVE")
            key = basis[_unpack(reply["keep"], pulse.size).astype(bool)]
        stats.sifted = int(key.size)

        sample = np.sort(rng.choice(key.size, int(round(post.pe_sample_fraction * key.size)), replace=False))
        ch.send("SAMPLE", pos=sample.astype(np.int64), bits=key[sample])
        ch.send("EC", {"perm_seed": self.perm_seed})
        _, pe, _ = ch.recv("PE")
        stats.pe_bits, stats.qber_est = int(sample.size), float(pe["qber_est"])
        if pe["abort"]:
            return _aborted(stats, self.buffer, pe["abort"], started)
        key = np.delete(key, sample)

        oracle = CascadeAlice(key, self.perm_seed, post.cascade_passes)
        k1 = first_block_size(stats.qber_est, post.cascade_k1_factor, post.qber_floor, key.size)
        roots = oracle.root_parities(k1)
        ch.send("ROOTS", {"count": int(roots.size)}, parity=np.packbits(roots))
        while True:
            kind, info, arrays = ch.recv()
            if kind == "PARITY":
                ch.send("PARITY_R", parity=np.packbits(oracle.parities(arrays["lo"], arrays["hi"])))
            elif kind == "EC_DONE":
                break
            else:
                raise ChannelError(f"unexpected {kind!r} during error correction")
        corrected, leaked = int(info["corrected"]), int(info["leaked"])
        if leaked != oracle.answered:
            raise ChannelError(f"Bob reports {leaked} leaked parities, Alice answered {oracle.answered}")
        _record_ec(stats, key.size, corrected, leaked)

        salt = rng.bytes(16)
        ch.send("VERIFY", {"salt": salt.hex(), "tag": verification_tag(key, salt, post.verify_tag_bits).hex()})
        m = _pa_length(cfg, key.size, corrected, leaked)
        seed_bits = rng.integers(0, 2, key.size + m - 1 if m else 0, dtype=np.uint8)
        ch.send("PA", {"m": m, "n_seed": int(seed_bits.size)}, seed=np.packbits(seed_bits))
        _, verdict, _ = ch.recv("DONE")
        stats.verified = bool(verdict["match"])
        if not stats.verified:
            return _aborted(stats, self.buffer, "verification failed", started)
        if m == 0:
            return _aborted(stats, self.buffer, "no secret bits left", started)
        return _finish(stats, self.buffer, toeplitz_hash(key, seed_bits, m), started)

    def close(self) -> None:
        """Tell Bob the link is shutting down."""
        try:
            self.channel.send("BYE")
        except OSError:
            pass


def _record_ec(stats: BlockStats, n: int, corrected: int, leaked: int) -> None:
    stats.qber = corrected / n if n else 0.0
    stats.leaked = leaked
    entropy = n * binary_entropy(stats.qber)
    stats.f_ec = leaked / entropy if entropy > 0 else 0.0


class BobEngine:
    """Bob's side of the block protocol (answers Alice, drives Cascade)."""

    def __init__(self, config: QkdLinkConfig, channel: Channel, seed: int, buffer: KeyBuffer) -> None:
        self.config, self.channel, self.seed, self.buffer = config, channel, seed, buffer

    def serve_block(self) -> BlockStats | None:
        """Wait for Alice's next block and run it; None when Alice says goodbye."""
        cfg, ch, post = self.config, self.channel, self.config.post
        kind, info, _ = ch.recv()
        started = time.perf_counter()
        if kind == "BYE":
            return None
        if kind != "BLOCK":
            raise ChannelError(f"expected BLOCK, got {kind!r}")
        self.buffer.mark_handed_out(info["handed_out"])
        block, t_start, t_end = int(info["block"]), float(info["t_start"]), float(info["t_end"])
        cfg = block_config(cfg, bool(info.get("quantum_channel", True)))
        view: BobView = generate_events(cfg, self.seed, block, t_end - t_start).bob
        stats = BlockStats(block, t_start, t_end, raw=int(view.pulse.size))
        handed = {"handed_out": self.buffer.take_handed_out()}
        clicks, gaps = view.pulse.size, _gaps(view.pulse)
        if cfg.protocol == "BB84":
            ch.send("CLICKS", handed, gaps=gaps, basis=np.packbits(view.basis))
            _, _, arrays = ch.recv("SIFT")
            key = view.bit[_unpack(arrays["keep"], clicks).astype(bool)]
        else:
            ch.send("CLICKS", handed, gaps=gaps)
            _, _, arrays = ch.recv("SIFT")
            keep, key = sarg04_conclude(view, _unpack(arrays["z"], clicks), _unpack(arrays["x"], clicks))
            ch.send("CONCLUSIVE", keep=np.packbits(keep))
        stats.sifted = int(key.size)

        _, _, sample = ch.recv("SAMPLE")
        pos = sample["pos"]
        stats.pe_bits = int(pos.size)
        stats.qber_est = float(np.mean(key[pos] != sample["bits"])) if pos.size else 0.0
        key = np.delete(key, pos)
        abort = ""
        if stats.qber_est > cfg.qber_threshold:
            abort = f"QBER {stats.qber_est:.3f} above threshold {cfg.qber_threshold}"
        elif key.size < post.min_block_bits:
            abort = f"only {key.size} bits after sampling"
        ch.send("PE", {"qber_est": stats.qber_est, "abort": abort})
        _, ec, _ = ch.recv("EC")
        if abort:
            return _aborted(stats, self.buffer, abort, started)

        wire = np.int32 if post.cascade_passes * key.size < 2**31 else np.int64   # flat positions, few bytes

        def ask(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            ch.send("PARITY", lo=lo.astype(wire), hi=hi.astype(wire))
            return _unpack(ch.recv("PARITY_R")[2]["parity"], lo.size)

        def roots() -> np.ndarray:
            _, info, arrays = ch.recv("ROOTS")
            return _unpack(arrays["parity"], int(info["count"]))

        result = cascade_correct(key, stats.qber_est, int(ec["perm_seed"]), ask, post.cascade_passes,
                                 post.cascade_k1_factor, post.qber_floor, root_parities=roots)
        ch.send("EC_DONE", {"corrected": result.corrected, "leaked": result.leaked})
        key = result.bits
        _record_ec(stats, key.size, result.corrected, result.leaked)

        _, verify, _ = ch.recv("VERIFY")
        mine = verification_tag(key, bytes.fromhex(verify["salt"]), post.verify_tag_bits)
        stats.verified = mine.hex() == verify["tag"]
        _, pa, seed = ch.recv("PA")
        ch.send("DONE", {"match": stats.verified})
        if not stats.verified:
            return _aborted(stats, self.buffer, "verification failed", started)
        m = int(pa["m"])
        if m != _pa_length(cfg, key.size, result.corrected, result.leaked):
            raise ChannelError("Alice and Bob disagree on the final key length")
        seed_bits = np.unpackbits(seed["seed"])[: int(pa["n_seed"])]
        if m == 0:
            return _aborted(stats, self.buffer, "no secret bits left", started)
        return _finish(stats, self.buffer, toeplitz_hash(key, seed_bits, m), started)
