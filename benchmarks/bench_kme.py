"""Benchmark: deliver a full key buffer (3,906 keys) to 3,906 distinct SAEs over ETSI 014 + mTLS.

Prints figures, asserts nothing. Deployment as in a run: Bob's and Alice's KMEs are two
``python -m harness.kme.server`` processes, fed by an emulated QKD link's two Clavis UDP services
(a third process); all three are restarted with a full buffer for every measurement. The SAEs are
client processes here (``--clients``: how many work in parallel). Each enc_keys call at Bob's KME
also costs one Clavis UDP exchange and one KME-to-KME call (reserve) to Alice's KME. Modes:

* ``reuse``     master SAE "platform", kept-alive connection, 3,906 enc_keys each naming another slave
* ``handshake`` the same requests, a new TCP connection and full TLS handshake for each
* ``distinct``  3,906 master SAEs, each with its own client certificate, one request each
* ``batch``     one master SAE, kept-alive, the buffer in requests of ``--batch`` keys

Targets (issue 6): >= 1,000 enc_keys/s with connection reuse, >= 300/s with a handshake per request.
Run: ``.venv/bin/python benchmarks/bench_kme.py [--modes reuse,handshake] [--clients 1,2]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from harness.kme import pki
from harness.kme.client import EtsiClient
from harness.kme.pair import ALICE_KME_ID, BOB_KME_ID

BUFFER_KEYS = 3906  # paper: 1 Mbit key buffer / 256-bit keys (reference.md section 1)
LINK_SCRIPT = """
import signal
from harness.kme.emulink import ClavisLinkPair
link = ClavisLinkPair(0, {keys}, prefill_keys={keys}).start()
print("%s:%d %s:%d" % (link.alice.address + link.bob.address), flush=True)
signal.sigwait([signal.SIGTERM])
link.stop()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_deployment(pki_dir: Path) -> tuple[list[subprocess.Popen], str]:
    """Start the Clavis link and both KMEs with a full buffer; return (processes, Bob's URL)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    link = subprocess.Popen([sys.executable, "-c", LINK_SCRIPT.format(keys=BUFFER_KEYS)],
                            stdout=subprocess.PIPE, text=True, env=env)
    clavis_alice, clavis_bob = link.stdout.readline().split()
    pa, pb = _free_port(), _free_port()
    procs = [link]
    for own, peer, port, peer_port, clavis, extra in (
            (BOB_KME_ID, ALICE_KME_ID, pb, pa, clavis_bob, ["--issuing"]),
            (ALICE_KME_ID, BOB_KME_ID, pa, pb, clavis_alice, [])):
        proc = subprocess.Popen([sys.executable, "-m", "harness.kme.server", "--pki", str(pki_dir),
                                 "--listen", f"127.0.0.1:{port}", "--kme-id", own, "--peer-kme-id", peer,
                                 "--peer-kme", f"https://127.0.0.1:{peer_port}", "--clavis", clavis,
                                 "--max-key-per-request", "1000", *extra],
                                stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        if not proc.stdout.readline().startswith("READY"):
            raise RuntimeError(f"{own} did not start")
    return procs, f"https://127.0.0.1:{pb}"


def client_work(args: tuple) -> tuple[float, float, list[float], int, int]:
    """One SAE process: its share of requests. Returns (wall start, wall end, latencies, keys, handshakes)."""
    mode, url, pki_dir, items, batch = args
    ca = Path(pki_dir) / "ca.crt"
    if mode == "distinct":
        entities = [pki.entity_paths(pki_dir, sae, "SAE") for sae in items]
        calls = [(EtsiClient(url, BOB_KME_ID, ca, e.cert, e.key, keep_alive=False), "platform", 1)
                 for e in entities]
    else:
        me = pki.entity_paths(pki_dir, "platform", "SAE")
        client = EtsiClient(url, BOB_KME_ID, ca, me.cert, me.key, keep_alive=mode != "handshake")
        calls = ([(client, slave, 1) for slave in items] if mode != "batch"
                 else [(client, items[0], number) for number in batch])
    latencies, keys = [], 0
    start = time.time()
    for client, slave, number in calls:
        t0 = time.perf_counter()
        keys += len(client.enc_keys(slave, number=number))
        latencies.append(time.perf_counter() - t0)
    end = time.time()
    return start, end, latencies, keys, sum(c.http.counters.full for c in {id(c): c for c, _, _ in calls}.values())


def run(mode: str, clients: int, pki_dir: Path, saes: list[str], batch: int) -> dict[str, float]:
    """Deliver one full buffer in ``mode`` with ``clients`` parallel SAE processes."""
    procs, url = start_deployment(pki_dir)
    try:
        if mode == "batch":
            sizes = [min(batch, BUFFER_KEYS - i) for i in range(0, BUFFER_KEYS, batch)]
            shares = [(mode, url, str(pki_dir), [saes[c]], sizes[c::clients]) for c in range(clients)]
        else:
            shares = [(mode, url, str(pki_dir), saes[c::clients], None) for c in range(clients)]
        with ProcessPoolExecutor(clients) as pool:
            results = list(pool.map(client_work, shares))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=10)
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    latencies = [x for r in results for x in r[2]]
    keys = sum(r[3] for r in results)
    ordered = sorted(latencies)
    return {"keys": keys, "requests": len(latencies), "seconds": elapsed, "keys_per_s": keys / elapsed,
            "requests_per_s": len(latencies) / elapsed, "p50_ms": 1e3 * statistics.median(latencies),
            "p99_ms": 1e3 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
            "handshakes": sum(r[4] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="reuse,handshake,distinct,batch")
    ap.add_argument("--clients", default="1,2", help="parallel SAE processes, comma-separated list")
    ap.add_argument("--batch", type=int, default=100, help="keys per request in batch mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kme-") as tmp:
        pki_dir = Path(tmp)
        t0 = time.perf_counter()
        ca = pki.CertificateAuthority(pki_dir)
        for kme_id in (ALICE_KME_ID, BOB_KME_ID):
            ca.ensure(kme_id, "KME", ("127.0.0.1",))
        saes = [f"sae{i:04d}" for i in range(1, BUFFER_KEYS + 1)]
        for sae in saes + ["platform"]:
            ca.ensure(sae, "SAE")
        print(f"PKI: CA, 2 KME and {len(saes) + 1} SAE certificates (ECDSA P-256) in "
              f"{time.perf_counter() - t0:.2f} s; host load average {os.getloadavg()[0]:.2f}")
        print(f"{'mode':<10} {'SAE procs':>9} {'keys':>5} {'reqs':>5} {'s':>6} {'keys/s':>7} {'req/s':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'TLS full hs':>11}")
        for mode in args.modes.split(","):
            for clients in (int(c) for c in args.clients.split(",")):
                r = run(mode, clients, pki_dir, saes, args.batch)
                print(f"{mode:<10} {clients:>9} {r['keys']:>5} {r['requests']:>5} {r['seconds']:>6.2f} "
                      f"{r['keys_per_s']:>7.0f} {r['requests_per_s']:>6.0f} {r['p50_ms']:>7.2f} "
                      f"{r['p99_ms']:>7.2f} {r['handshakes']:>11}", flush=True)


if __name__ == "__main__":
    main()
