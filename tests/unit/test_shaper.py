"""The delay daemon's scheduling: FIFO release, jitter bounds, argument checking (no root needed)."""

import argparse
import random

import pytest

from harness.shaper import parse_queue


def test_release_is_fifo_and_within_jitter():
    queue = parse_queue("1:20:10", random.Random(7))
    releases = [queue.release_time(arrival * 0.001) for arrival in range(2000)]  # 1 ms spacing
    assert releases == sorted(releases)  # never reordered
    delays = [r - a * 0.001 for a, r in enumerate(releases)]
    assert min(delays) >= 0.010 - 1e-9
    # FIFO can only push packets later than their own deadline, and by no more than the jitter.
    assert max(delays) <= 0.030 + 1e-9
    assert 0.018 < sum(delays) / len(delays) < 0.030


def test_no_jitter_gives_the_exact_delay():
    queue = parse_queue("2:5", random.Random(1))
    assert queue.release_time(1.0) == pytest.approx(1.005)
    assert queue.number == 2


@pytest.mark.parametrize("spec", ["x:1", "1", "1:-5", "1:5:-1"])
def test_bad_specs_are_rejected(spec):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_queue(spec, random.Random(1))


def test_batch_verdict_message_layout():
    # linux/netlink.h, linux/netfilter/nfnetlink.h and nfnetlink_queue.h: nlmsghdr (host order),
    # nfgenmsg (res_id = queue number, big-endian), NFQA_VERDICT_HDR {verdict, id} big-endian.
    import socket
    import struct
    from harness import shaper

    sent = []

    class FakeSocket:
        def send(self, data):
            sent.append(data)

    verdicts = shaper._Verdicts.__new__(shaper._Verdicts)
    verdicts.sock, verdicts.number, verdicts.sent = FakeSocket(), 258, 0
    verdicts.accept_through(0x01020304)
    (message,) = sent
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags, seq, pid) == (32, 0x0303, 1, 1, 0) and len(message) == 32
    assert message[16:20] == bytes([socket.AF_UNSPEC, 0, 1, 2])                  # queue 258
    assert struct.unpack_from("=HH", message, 20) == (12, 2)
    assert message[24:] == bytes([0, 0, 0, 1, 1, 2, 3, 4])                        # NF_ACCEPT, id
