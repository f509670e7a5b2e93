"""Benchmark: ETSI 014 enc_keys throughput of `qiot kme` on its real path. Prints figures, asserts nothing.

What runs is exactly `qiot kme` (``python -m harness.kme.cli``): both KMEs in one process, fed over
Clavis UDP by the real emulated QKD link (:class:`harness.qkd.link.BackgroundLink`: detection
events, sifting, Cascade, privacy amplification) of a scenario (default hpn) at ``--time-scale``
emulated seconds per wall second (default 200), after ``--warmup-s`` emulated seconds of key
production (default 600: a full key buffer); `qiot kme` is started afresh for every row, so each
row begins with a full buffer. SAE client processes (``--clients``, comma list) ask for one key
per request for ``--seconds`` each:

* ``reuse``      kept-alive connection (one TLS handshake per client);
* ``handshake``  a new TCP connection and full mutual-TLS handshake for every request.

``--master`` picks the calling SAE: ``platform`` at Bob's (issuing) KME, or ``gateway`` at Alice's
(fetching) KME, whose every request also costs a KME-to-KME issue call. Keys come from a live link:
at hpn x 200 it distils about 1,470 keys/s, so a rate above that drains the stock and 503s appear
(counted, not hidden). 1 in ``--verify-every`` delivered keys is fetched with dec_keys by the slave
SAE afterwards and compared byte for byte. Besides throughput, each row gives the CPU time the
KME process spent per delivered key (``kme ms``) and the link process's share of a core
(``link %``): figures that depend far less on what else the machine runs than keys/s do. On a
shared 2-core machine, repeat and compare: the load average is printed with each row.

Targets (issue 12): >= 1,000 enc_keys/s with connection reuse, >= 300/s with a handshake per request.
Run: ``.venv/bin/python benchmarks/bench_kme.py [--modes reuse,handshake] [--clients 1,2,4]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from harness.kme import etsi, pki
from harness.kme.client import EtsiClient
from harness.kme.pair import ALICE_KME_ID, BOB_KME_ID

SIDES = {"platform": (BOB_KME_ID, "gateway", ALICE_KME_ID), "gateway": (ALICE_KME_ID, "platform", BOB_KME_ID)}


def start_qiot_kme(pki_dir: Path, scenario: str, time_scale: float, warmup_s: float) -> tuple[subprocess.Popen, dict]:
    """Start `qiot kme` with free ports; return (process, {kme id: url}) once it prints READY."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.kme.cli", "--pki", str(pki_dir), "--scenario", scenario,
                             "--time-scale", str(time_scale), "--warmup-s", str(warmup_s),
                             "--alice-port", "0", "--bob-port", "0"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    urls = {}
    for line in proc.stdout:
        if "https://" in line:
            urls[line.split()[0]] = line.split()[-1]
        if line.startswith("READY"):
            return proc, urls
    raise RuntimeError("qiot kme did not start")


def client_work(args: tuple) -> dict:
    """One SAE process: enc_keys(1) for ``seconds``; returns counts, latencies and keys to verify."""
    mode, master, url, pki_dir, seconds, verify_every = args
    kme_id, slave, _ = SIDES[master]
    me = pki.entity_paths(pki_dir, master, "SAE")
    client = EtsiClient(url, kme_id, me.ca, me.cert, me.key, keep_alive=mode == "reuse")
    latencies, refused, sample = [], 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            keys = client.enc_keys(slave, number=1)
        except etsi.EtsiError as exc:
            if exc.status != 503:
                raise
            refused += 1
            continue
        latencies.append(time.perf_counter() - t0)
        if len(latencies) % verify_every == 0:
            sample += keys
    client.close()
    return {"latencies": latencies, "refused": refused, "sample": sample, "handshakes": client.http.counters.full}


def verify(sample: list, master: str, urls: dict, pki_dir: Path) -> int:
    """dec_keys of the sampled keys by the slave SAE; return how many did not match."""
    _, slave, slave_kme = SIDES[master]
    me = pki.entity_paths(pki_dir, slave, "SAE")
    client = EtsiClient(urls[slave_kme], slave_kme, me.ca, me.cert, me.key)
    bad = 0
    for i in range(0, len(sample), 100):
        chunk = sample[i:i + 100]
        bad += sum(a != b for a, b in zip(client.dec_keys(master, [k for k, _ in chunk]), chunk))
    client.close()
    return bad


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the link process of `qiot kme`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.exists() else []


def run(mode: str, clients: int, master: str, kme_pid: int, urls: dict, pki_dir: Path, seconds: float,
        verify_every: int) -> dict:
    url = urls[SIDES[master][0]]
    link_pids = child_pids(kme_pid)
    kme0, link0, wall0 = cpu_s(kme_pid), sum(cpu_s(p) for p in link_pids), time.monotonic()
    with ProcessPoolExecutor(clients) as pool:
        results = list(pool.map(client_work, [(mode, master, url, str(pki_dir), seconds, verify_every)] * clients))
    kme_cpu, link_cpu = cpu_s(kme_pid) - kme0, sum(cpu_s(p) for p in link_pids) - link0
    wall = time.monotonic() - wall0
    latencies = sorted(x for r in results for x in r["latencies"])
    sample = [k for r in results for k in r["sample"]]
    return {"keys": len(latencies), "refused": sum(r["refused"] for r in results),
            "keys_per_s": len(latencies) / seconds,
            "p50_ms": 1e3 * statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": 1e3 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
            if latencies else float("nan"),
            "handshakes": sum(r["handshakes"] for r in results),
            "kme_ms_per_key": 1e3 * kme_cpu / max(1, len(latencies)), "link_core_pct": 100 * link_cpu / wall,
            "verified": len(sample), "mismatched": verify(sample, master, urls, pki_dir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="reuse,handshake")
    ap.add_argument("--clients", default="1,2,4", help="parallel SAE processes, comma-separated list")
    ap.add_argument("--master", default="platform", choices=sorted(SIDES))
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="wall seconds per row (3 s x 1,000/s stays within a full buffer)")
    ap.add_argument("--scenario", default="hpn")
    ap.add_argument("--time-scale", type=float, default=200.0)
    ap.add_argument("--warmup-s", type=float, default=600.0)
    ap.add_argument("--verify-every", type=int, default=50)
    args = ap.parse_args()
    print(f"qiot kme ({args.scenario}, time scale {args.time_scale:g}, warm-up {args.warmup_s:g} emulated s, "
          f"restarted for every row); master SAE {args.master}; {args.seconds:g} s per row")
    print(f"{'mode':<10} {'SAE procs':>9} {'keys':>6} {'keys/s':>7} {'503s':>5} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'TLS full hs':>11} {'kme ms':>7} {'link %':>6} {'verified':>8} {'bad':>4} {'load':>5}")
    for mode in args.modes.split(","):
        for clients in (int(c) for c in args.clients.split(",")):
            with tempfile.TemporaryDirectory(prefix="bench-kme-") as tmp:
                pki_dir = Path(tmp)
                proc, urls = start_qiot_kme(pki_dir, args.scenario, args.time_scale, args.warmup_s)
                try:
                    r = run(mode, clients, args.master, proc.pid, urls, pki_dir, args.seconds, args.verify_every)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
            print(f"{mode:<10} {clients:>9} {r['keys']:>6} {r['keys_per_s']:>7.0f} {r['refused']:>5} "
                  f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['handshakes']:>11} {r['kme_ms_per_key']:>7.3f} "
                  f"{r['link_core_pct']:>6.0f} {r['verified']:>8} {r['mismatched']:>4} {os.getloadavg()[0]:>5.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
