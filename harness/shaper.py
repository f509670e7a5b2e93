"""Packet delay daemon for kernels without netem: holds NFQUEUE'd packets and releases them late.

Run inside the receiving host's namespace as
``python -m harness.shaper --queue 1:5:1 --queue 2:5:1`` (queue number : delay ms : jitter ms).
iptables rules in that namespace send packets to the queues (``-j NFQUEUE --queue-bypass``, so
traffic still flows if this daemon is gone). Each packet's release time is its arrival time plus
the delay plus a uniform jitter in [-jitter, +jitter] (netem's default jitter shape), but never
earlier than the previous packet of the same queue: releasing in FIFO order keeps TCP from seeing
reordering (platform-notes: independent deadlines reordered 939 of 2000 packets). One thread,
``select`` on all queue sockets, so no verdict is ever issued from two threads at once.

Verdicts are batched: because release is FIFO, the packets due at a wake-up are always the oldest
held ones, so one ``NFQNL_MSG_VERDICT_BATCH`` message ("accept every packet up to id N", Linux
>= 3.1) releases them all in one system call. The profile (``bench_shaper.py`` under py-spy) had
one ``sendmsg`` per packet as the daemon's largest cost: the kernel reinjects the packet inside
that call. NetfilterQueue has no batch call, so the message is built here (netlink and
nfnetlink_queue headers, ``linux/netfilter/nfnetlink_queue.h``) and sent on the queue's own socket
(the kernel only takes verdicts from the socket that bound the queue). Only the packet id is kept
per held packet, not NetfilterQueue's packet object. Batching pays when several packets are due
at one wake-up (bursts, wake-ups late under load); at a steady paced rate each wake-up releases one
packet and the cost per packet is that of the two wake-ups (arrival, release) and of the kernel's
reinjection, which no userspace change removes (``benchmarks/bench_shaper.py``). A packet whose
queue message the socket dropped (``ENOBUFS``) is released with the next batch instead of being
held by the kernel for ever.
"""

from __future__ import annotations

import argparse
import collections
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field


@dataclass
class DelayQueue:
    """Delay settings and the FIFO of held packets of one NFQUEUE number."""

    number: int
    delay_s: float
    jitter_s: float
    rng: random.Random
    held: collections.deque = field(default_factory=collections.deque)
    last_release: float = 0.0
    packets: int = 0

    def release_time(self, arrival: float) -> float:
        """When a packet arriving now leaves: delayed, jittered, and not before its predecessor."""
        jitter = self.rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        release = max(arrival + max(0.0, self.delay_s + jitter), self.last_release)
        self.last_release = release
        return release


def parse_queue(spec: str, rng: random.Random) -> DelayQueue:
    """Parse ``NUM:DELAY_MS[:JITTER_MS]``."""
    try:
        parts = [float(p) for p in spec.split(":")]
        number, delay_ms = int(parts[0]), parts[1]
        jitter_ms = parts[2] if len(parts) > 2 else 0.0
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"bad queue spec {spec!r}: expected NUM:DELAY_MS[:JITTER_MS]")
    if delay_ms < 0 or jitter_ms < 0:
        raise argparse.ArgumentTypeError(f"bad queue spec {spec!r}: delay and jitter must be >= 0")
    return DelayQueue(number, delay_ms / 1000.0, jitter_ms / 1000.0, rng)


# nfnetlink_queue verdict-batch message: nlmsghdr, nfgenmsg, one NFQA_VERDICT_HDR attribute.
_NFNL_SUBSYS_QUEUE, _NFQNL_MSG_VERDICT_BATCH, _NFQA_VERDICT_HDR = 3, 3, 2
_NLM_F_REQUEST, _NF_ACCEPT = 1, 1
_BATCH = struct.Struct("=IHHII" "BBH" "HH" "II")
_BATCH_TYPE = (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_VERDICT_BATCH


class _Verdicts:
    """Accept-up-to-id verdicts for one bound queue, sent on that queue's netlink socket."""

    def __init__(self, fd: int, number: int) -> None:
        self.sock = socket.fromfd(fd, socket.AF_NETLINK, socket.SOCK_RAW)   # a dup: same socket
        self.number = number
        self.sent = 0

    def accept_through(self, packet_id: int) -> None:
        """Accept every packet of the queue with an id up to ``packet_id`` (ids grow in FIFO order)."""
        self.sent += 1
        self.sock.send(_BATCH.pack(_BATCH.size, _BATCH_TYPE, _NLM_F_REQUEST, self.sent, 0,
                                   socket.AF_UNSPEC, 0, socket.htons(self.number),
                                   4 + 8, _NFQA_VERDICT_HDR, socket.htonl(_NF_ACCEPT), socket.htonl(packet_id)))

    def close(self) -> None:
        """Close this end's duplicate of the queue socket."""
        self.sock.close()


def serve(queues: list[DelayQueue], max_len: int) -> None:
    """Bind every queue and run the hold/release loop until SIGTERM or SIGINT."""
    from netfilterqueue import COPY_META, NetfilterQueue

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    bound = []
    for queue in queues:
        def on_packet(packet, queue=queue, clock=time.monotonic):
            queue.packets += 1
            queue.held.append((queue.release_time(clock()), packet.id))
        nfq = NetfilterQueue()
        # Metadata only: the verdict needs the packet id, not its bytes, so nothing is copied.
        nfq.bind(queue.number, on_packet, max_len=max_len, mode=COPY_META)
        bound.append((nfq, queue, _Verdicts(nfq.get_fd(), queue.number)))
    fds = {nfq.get_fd(): nfq for nfq, _, _ in bound}
    print("READY queues=" + ",".join(str(q.number) for q in queues), flush=True)

    def release(queue: DelayQueue, verdicts: _Verdicts, now: float) -> None:
        held, last = queue.held, None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        if last is not None:
            verdicts.accept_through(last)

    try:
        while not stopping:
            now = time.monotonic()
            for _, queue, verdicts in bound:
                release(queue, verdicts, now)
            next_due = min((q.held[0][0] for _, q, _ in bound if q.held), default=now + 0.5)
            try:
                readable, _, _ = select.select(list(fds), [], [], max(0.0, next_due - time.monotonic()))
            except InterruptedError:
                continue
            for fd in readable:
                fds[fd].run(block=False)
    finally:
        # Release what is still held rather than dropping it: stopping the shaper is not loss.
        for nfq, queue, verdicts in bound:
            release(queue, verdicts, float("inf"))
            verdicts.close()
            nfq.unbind()
        print("shaper: " + ", ".join(f"queue {q.number}: {q.packets} packets" for _, q, _ in bound),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", action="append", required=True, metavar="NUM:DELAY_MS[:JITTER_MS]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=8192,
                        help="kernel queue length; bursts beyond it bypass the delay")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    try:
        queues = [parse_queue(spec, rng) for spec in args.queue]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    serve(queues, args.max_len)
    return 0


if __name__ == "__main__":
    sys.exit(main())
