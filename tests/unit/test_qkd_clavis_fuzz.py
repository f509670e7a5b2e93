"""Bounded datagram fuzzing of the Clavis key service on loopback: random bytes, wrong sizes, bit
flips (with the CRC left wrong, and recomputed so the mutation reaches the request logic) and
boundary field values, at Alice's and Bob's services. Afterwards both still answer, nothing raised
inside them, and Alice's and Bob's keys are still identical id for id."""

from __future__ import annotations

import socket
import struct
import time
import zlib

import numpy as np
import pytest

from harness.qkd.clavis import REQUEST_SIZE, ClavisClient, KeyRequest
from tests.support.clavislink import ClavisLinkPair

DATAGRAMS = 20_000  # per service; a few seconds in all


def reseal(body: bytes) -> bytes:
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]) & 0xFFFFFFFF)


def fuzz_datagrams(rng: np.random.Generator, count: int, known_ids: list[int]):
    """Yield ``count`` hostile datagrams of five kinds."""
    valid = [KeyRequest(int(rng.choice(known_ids)) if i % 2 else 0, 32, i, 1).encode() for i in range(64)]
    for i in range(count):
        kind = i % 5
        if kind == 0:    # random bytes of a random length, around the real sizes too
            yield rng.bytes(int(rng.choice([0, 1, 28, 29, 30, 62, int(rng.integers(0, 1500))])))
        elif kind == 1:  # a valid request cut or extended
            base = valid[i % 64]
            yield base[: int(rng.integers(0, REQUEST_SIZE))] if i % 2 else base + rng.bytes(int(rng.integers(1, 40)))
        elif kind == 2:  # bit flips, CRC not fixed: must be dropped
            data = bytearray(valid[i % 64])
            data[int(rng.integers(0, REQUEST_SIZE))] ^= 1 << int(rng.integers(0, 8))
            yield bytes(data)
        elif kind == 3:  # bit flips with the CRC recomputed: reach the request logic
            data = bytearray(valid[i % 64])
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, REQUEST_SIZE - 4))] ^= 1 << int(rng.integers(0, 8))
            yield reseal(bytes(data))
        else:            # boundary values of every field, well-formed CRC
            ids = [0, 1, 2**32 - 1, 2**32, 2**64 - 1, *known_ids]
            key_id = ids[int(rng.integers(len(ids)))]
            body = struct.pack("<BIIBIB", int(rng.choice([0, 1, 2, 255])), key_id >> 32, key_id & 0xFFFFFFFF,
                               int(rng.choice([0, 1, 31, 32, 33, 255])), int(rng.integers(0, 2**32)),
                               int(rng.choice([0, 1, 12, 13, 255]))) + (bytes(10) if i % 3 else b"\xff" * 10)
            yield body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


@pytest.fixture()
def link():
    link = ClavisLinkPair(rate_bps=0, capacity_keys=64, seed=21, prefill_keys=64).start()
    yield link
    link.stop()


def test_clavis_service_survives_fuzzing_and_keys_still_match(link):
    rng = np.random.default_rng(12345)
    known = link.alice_buffer.ids()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fuzzer:
        fuzzer.setblocking(False)
        for server in (link.alice, link.bob):
            for n, datagram in enumerate(fuzz_datagrams(rng, DATAGRAMS, known)):
                try:
                    fuzzer.sendto(datagram, server.address)
                except BlockingIOError:
                    time.sleep(0.001)
                if n % 200 == 0:
                    time.sleep(0.001)  # let the service keep up; kernel drops would test nothing
    link.add_keys(16)  # production goes on after the attack: evictions, new ids
    for server in (link.alice, link.bob):
        assert server.counts["internal_error"] == 0 and server.counts["socket_error"] == 0
        answered = sum(v for k, v in server.counts.items() if k.startswith("status_"))
        dropped = server.counts["dropped_bad_size"] + server.counts["dropped_bad_crc"]
        assert answered > 1000 and dropped > 5000, server.counts  # both paths were exercised
    assert link.alice_buffer.ids() == link.bob_buffer.ids()
    assert all(link.alice_buffer.get(i) == link.bob_buffer.get(i) for i in link.alice_buffer.ids())
    alice, bob = ClavisClient(link.alice.address, timeout_s=2), ClavisClient(link.bob.address, timeout_s=2)
    try:  # and both still answer: a new key at one end is the same key by id at the other
        key_id, key = bob.request_new_key()
        assert alice.request_key(key_id) == key == link.alice_buffer.get(key_id)
    finally:
        alice.close()
        bob.close()
