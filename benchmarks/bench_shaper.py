"""Benchmark of the NFQUEUE delay daemon (``harness.shaper``) in network namespaces of its own.

Builds two namespaces joined by a veth pair (names start with ``spdbench``/``spdb``, nothing else on
the host is touched), queues UDP arriving at the receiver's PREROUTING to the shaper with a fixed
delay, and sends numbered, timestamped datagrams from the other namespace. Prints, per offered
rate: delivered packets/s, loss, the delay (mean and mean deviation, one clock: both ends are on
this machine), datagrams received out of order, and the shaper's CPU time per packet (from
/proc). Rate 0 is the capacity test: the sender sends as fast as it can to a port whose
datagrams, once the shaper has released them, an iptables rule drops and counts (a Python
receiver would be the bottleneck), so it shows the shaper's maximum packets/s. Everything it made
is removed at the end, also on error. Needs root.

Usage: ``python benchmarks/bench_shaper.py [--delay-ms 5] [--rates 2000,10000,30000,0] [--seconds 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PREFIX = "spdbench"
TX, RX = f"{PREFIX}-tx", f"{PREFIX}-rx"
TX_IF, RX_IF = "spdb-tx0", "spdb-rx0"
TX_IP, RX_IP = "10.213.7.1", "10.213.7.2"   # inside the benchmark's own namespaces only
PORT, QUEUE = 39998, 7
SINK_PORT = PORT + 1   # capacity test: released datagrams to this port are dropped and counted

SENDER = r"""
import socket, struct, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[3], int(sys.argv[4])))
pad, seq = bytes(36), 0
start = time.monotonic()
end = start + seconds
while True:
    now = time.monotonic()
    if now >= end:
        break
    if rate and seq > (now - start) * rate:
        time.sleep(min(0.0005, seq / rate - (now - start)))
        continue
    try:
        s.send(struct.pack("<Qd", seq, time.monotonic()) + pad)
        seq += 1
    except OSError:
        pass   # a full socket buffer at the blasting rate: the datagram is simply not sent
print(seq, flush=True)
"""

RECEIVER = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("READY", flush=True)
delays, last, reordered, first, final = [], -1, 0, None, None
while True:
    try:
        data = s.recv(2048)
    except socket.timeout:
        break
    now = time.monotonic()
    seq, sent = struct.unpack_from("<Qd", data)
    first = now if first is None else first
    final = now
    delays.append(now - sent)
    if seq < last:
        reordered += 1
    last = max(last, seq)
n = len(delays)
mean = sum(delays) / n if n else float("nan")
mdev = sum(abs(d - mean) for d in delays) / n if n else float("nan")
print(json.dumps({"received": n, "mean_ms": mean * 1e3, "mdev_ms": mdev * 1e3, "reordered": reordered,
                  "span_s": (final - first) if n > 1 else 0.0}), flush=True)
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; raise with its stderr if it fails and ``check``."""
    result = subprocess.run(args, capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def setup() -> None:
    """Namespaces, veth pair, addresses and the NFQUEUE rule (a leftover from a crash is removed first)."""
    cleanup()
    sh("ip", "netns", "add", TX)
    sh("ip", "netns", "add", RX)
    sh("ip", "link", "add", TX_IF, "netns", TX, "type", "veth", "peer", "name", RX_IF, "netns", RX)
    for ns, intf, ip in ((TX, TX_IF, TX_IP), (RX, RX_IF, RX_IP)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", intf)
        sh("ip", "-n", ns, "link", "set", intf, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "netns", "exec", RX, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", RX_IF, "-p", "udp",
       "--dport", f"{PORT}:{SINK_PORT}", "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass")
    sh("ip", "netns", "exec", RX, "iptables", "-A", "INPUT", "-i", RX_IF, "-p", "udp", "--dport", str(SINK_PORT),
       "-j", "DROP")


def sink_count() -> int:
    """Datagrams the capacity test's DROP rule has counted (they came through the shaper)."""
    out = sh("ip", "netns", "exec", RX, "iptables", "-L", "INPUT", "-v", "-x", "-n", "-Z").stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if f"dpt:{SINK_PORT}" in line)


def cleanup() -> None:
    """Delete the benchmark's namespaces (their veth ends and iptables rules go with them)."""
    for ns in (TX, RX):
        sh("ip", "netns", "del", ns, check=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(delay_ms: float, rate: float, seconds: float, max_len: int) -> dict:
    """One run of sender -> shaper -> receiver at ``rate`` datagrams/s (0: unpaced)."""
    env = dict(os.environ)
    shaper = subprocess.Popen(["ip", "netns", "exec", RX, sys.executable, "-m", "harness.shaper", "--queue",
                               f"{QUEUE}:{delay_ms}:0", "--max-len", str(max_len)],
                              stdout=subprocess.PIPE, text=True, env=env)
    receiver = None
    try:
        if not shaper.stdout.readline().startswith("READY"):
            raise RuntimeError("shaper did not start")
        shaper_pid = int(sh("ip", "netns", "pids", RX).stdout.split()[-1])
        if rate:
            receiver = subprocess.Popen(["ip", "netns", "exec", RX, sys.executable, "-c", RECEIVER, RX_IP,
                                         str(PORT), "1.0"], stdout=subprocess.PIPE, text=True)
            receiver.stdout.readline()
        else:
            sink_count()   # zero the counter
        cpu_before = cpu_seconds(shaper_pid)
        sent = int(sh("ip", "netns", "exec", TX, sys.executable, "-c", SENDER, str(rate), str(seconds), RX_IP,
                      str(PORT if rate else SINK_PORT)).stdout.split()[-1])
        if rate:
            result = json.loads(receiver.stdout.readline())
        else:
            time.sleep(0.5 + delay_ms / 1e3)
            result = {"received": sink_count(), "mean_ms": float("nan"), "mdev_ms": float("nan"),
                      "reordered": 0, "span_s": seconds}
        cpu = cpu_seconds(shaper_pid) - cpu_before
    finally:
        for process in (receiver, shaper):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
    received = result["received"]
    return {"offered": rate or sent / seconds, "sent": sent, "received": received,
            "pps": received / result["span_s"] if result["span_s"] else 0.0,
            "loss_pct": 100.0 * (sent - received) / sent if sent else 0.0,
            "delay_mean_ms": result["mean_ms"], "delay_mdev_ms": result["mdev_ms"],
            "reordered": result["reordered"], "cpu_us_per_packet": 1e6 * cpu / received if received else 0.0,
            "cpu_share": cpu / (result["span_s"] + delay_ms / 1e3) if result["span_s"] else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--rates", default="2000,10000,30000,0", help="datagrams/s, comma-separated; 0 = unpaced")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-len", type=int, default=65536)
    args = parser.parse_args()
    if os.geteuid():
        raise SystemExit("error: needs root (network namespaces, iptables)")
    try:
        setup()
        print(f"shaper at {args.delay_ms} ms delay, UDP {RX_IF} PREROUTING -> NFQUEUE {QUEUE}")
        for rate in (float(r) for r in args.rates.split(",")):
            m = measure(args.delay_ms, rate, args.seconds, args.max_len)
            print(f"offered {m['offered']:8.0f}/s: delivered {m['pps']:8.0f}/s, loss {m['loss_pct']:5.2f}%, "
                  f"delay {m['delay_mean_ms']:6.3f} ms (mdev {m['delay_mdev_ms']:.3f}), reordered {m['reordered']}, "
                  f"shaper CPU {m['cpu_us_per_packet']:5.2f} us/packet ({100 * m['cpu_share']:.0f}% of a core)",
                  flush=True)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
