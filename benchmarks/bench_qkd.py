"""Benchmark of the QKD post-processing (prints figures; not a test).

Targets: post-processing handles >= 100x the sifted rate the default model produces at 0 dB
(issue 5); error correction + verification + privacy amplification >= 5 Mbit/s of sifted key at
1-2% QBER on this machine (issue 15). Prints bits/s for sifting, Cascade (both ends, in one
thread; with the link's permutations already drawn, and cold as for a link's first block), PA,
the f_EC achieved; an end-to-end run of the two engines over the authenticated loopback TCP
channel in one process; and the two node processes of a run (``python -m harness.qkd.node``) at
the BCN link's loss with its default blocks, which is what a run pays per block.

Run: ``.venv/bin/python benchmarks/bench_qkd.py [--bits 1048576] [--qber 0.02] [--node-seconds 3000]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

import numpy as np  # noqa: E402

from harness.qkd.cascade import CascadeAlice, cascade_correct  # noqa: E402
from harness.qkd.config import PostProcessingParams, QkdLinkConfig  # noqa: E402
from harness.qkd.link import run_link  # noqa: E402
from harness.qkd.physical import bb84_match, generate_events  # noqa: E402
from harness.qkd.privacy import final_length, toeplitz_hash, verification_tag  # noqa: E402
from harness.qkd.rate import binary_entropy, detection_rate  # noqa: E402


def best_of(repeats: int, func):
    """Smallest wall time of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=1 << 20, help="sifted bits per benchmark block")
    parser.add_argument("--qber", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--node-seconds", type=float, default=3000.0,
                        help="emulated seconds of the two-process run (0: skip it)")
    parser.add_argument("--node-loss-db", type=float, default=7.0, help="loss of the two-process run (BCN)")
    args = parser.parse_args()
    n, qber = args.bits, args.qber

    config = QkdLinkConfig(loss_db=0.0)
    sifted_0db = detection_rate(0.0, config) * 0.5
    print(f"default model at 0 dB: {detection_rate(0.0, config):.0f} detections/s, {sifted_0db:.0f} sifted bit/s; "
          f"target 100x = {100 * sifted_0db / 1e6:.3f} Mbit/s")

    # Sifting: BB84 basis comparison and Alice's lookup of Bob's announced clicks.
    seconds = 2 * n / detection_rate(0.0, config)
    events = generate_events(config, 1, 0, seconds)
    alice, bob = events.alice, events.bob

    def sift():
        at = np.searchsorted(alice.pulse, bob.pulse)
        keep = bb84_match(alice.basis[at], bob.basis)
        return alice.bit[at][keep], bob.bit[keep]

    t_sift, (a_key, _) = best_of(args.repeats, sift)
    print(f"sifting:  {bob.pulse.size / t_sift / 1e6:8.2f} Mbit/s of detections "
          f"({a_key.size / t_sift / 1e6:.2f} Mbit/s sifted out)")

    rng = np.random.default_rng(7)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a ^ (rng.random(n) < qber).astype(np.uint8)
    actual = float(np.mean(a != b))

    def correct(seed: int = 1234):
        oracle = CascadeAlice(a, seed, 4)
        return cascade_correct(b, actual, seed, oracle.parities)

    t_cold, _ = best_of(args.repeats, lambda: correct(int(time.perf_counter_ns())))   # fresh seed each time
    t_ec, ec = best_of(args.repeats, correct)
    assert np.array_equal(ec.bits, a), "Cascade left errors"
    f_ec = ec.leaked / (n * binary_entropy(actual))
    print(f"Cascade:  {n / t_ec / 1e6:8.2f} Mbit/s at QBER {actual:.4f}  (n = {n}, f_EC = {f_ec:.3f}, "
          f"{ec.round_trips} round trips, {ec.leaked} parities); {n / t_cold / 1e6:.2f} Mbit/s for a link's "
          f"first block (permutations drawn)")

    post = PostProcessingParams()
    salt = b"0123456789abcdef"
    t_ver, _ = best_of(args.repeats, lambda: verification_tag(ec.bits, salt, post.verify_tag_bits))
    m = final_length(n, actual, ec.leaked, post.verify_tag_bits, post.pa_margin_bits)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    t_pa, _ = best_of(args.repeats, lambda: toeplitz_hash(ec.bits, seed, m))
    print(f"PA:       {n / t_pa / 1e6:8.2f} Mbit/s in ({m} final bits, Toeplitz via FFT); verification "
          f"{n / t_ver / 1e6:.1f} Mbit/s")
    total = n / (t_ec + t_ver + t_pa)
    print(f"EC + verification + PA at {actual:.1%} QBER: {total / 1e6:.2f} Mbit/s of sifted key "
          f"(target 1 Mbit/s; {total / sifted_0db:.0f}x the 0 dB sifted rate)")

    # End to end: both engines over the HMAC-authenticated loopback TCP channel, one big block.
    block_s = n / sifted_0db
    e2e = QkdLinkConfig(loss_db=0.0, post=PostProcessingParams(block_duration_s=block_s))
    start = time.perf_counter()
    run = run_link(e2e, 2 * block_s, seed=3)
    wall = time.perf_counter() - start
    sifted = sum(s.sifted for s in run.blocks)
    print(f"end to end over TCP (2 blocks of {block_s:.0f} emulated s, event generation included): "
          f"{sifted / wall / 1e6:.2f} Mbit/s sifted, QBER {run.qber:.4f}, f_EC {run.f_ec:.3f}, "
          f"{run.secret_rate_bps:.0f} secret bit/s emulated ({sifted / wall / sifted_0db:.0f}x real time at 0 dB)")


    if args.node_seconds > 0:
        node_run(args.node_loss_db, args.node_seconds)


def node_run(loss_db: float, seconds: float) -> None:
    """Bob and Alice as the two processes of a run, over loopback TCP; per-block time and CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "qkd.json"
        config.write_text(json.dumps({"qkd": {}, "fibre": {"loss_db": loss_db}}))
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
        node = [sys.executable, "-m", "harness.qkd.node", "--config", str(config), "--seed", "3"]
        bob = subprocess.Popen(node + ["--role", "bob", "--classical-listen", f"127.0.0.1:{port}", "--udp-listen",
                                       "127.0.0.1:0", "--out", f"{tmp}/bob"], stdout=subprocess.PIPE, text=True, cwd=tmp)
        bob.stdout.readline()   # READY
        start = time.perf_counter()
        alice = subprocess.Popen(node + ["--role", "alice", "--classical-peer", f"127.0.0.1:{port}", "--udp-listen",
                                         "127.0.0.1:0", "--seconds", str(seconds), "--out", f"{tmp}/alice"],
                                 stdout=subprocess.DEVNULL, cwd=tmp)
        cpu = {}
        for name, process in (("alice", alice), ("bob", bob)):
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            cpu[name] = usage.ru_utime + usage.ru_stime
        wall = time.perf_counter() - start
        rows = (Path(tmp) / "alice" / "blocks.csv").read_text().splitlines()
        header, blocks = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    assert header and blocks, "the node run produced no blocks"
    block_ms = 1e3 * sum(float(r["duration_s"]) for r in blocks) / len(blocks)
    sifted = sum(int(r["sifted"]) for r in blocks) / len(blocks)
    print(f"two node processes at {loss_db} dB, {len(blocks)} blocks of {seconds / len(blocks):.0f} emulated s "
          f"({sifted:.0f} sifted bits each): {block_ms:.1f} ms per block at Alice, CPU per block "
          f"(start-up included) Alice {1e3 * cpu['alice'] / len(blocks):.1f} ms, Bob {1e3 * cpu['bob'] / len(blocks):.1f} ms; "
          f"{seconds / wall:.0f} emulated s per wall s")


if __name__ == "__main__":
    main()
