"""Authenticated classical channel over real loopback TCP."""

import socket
import struct

import numpy as np
import pytest

from harness.qkd.channel import Channel, ChannelError, parse_address
from harness.qkd.link import socket_pair


def _pair(key_a=b"k", key_b=b"k"):
    a, b = socket_pair()
    return Channel(a, key_a, "alice"), Channel(b, key_b, "bob")


def test_messages_with_arrays_round_trip():
    alice, bob = _pair()
    alice.send("X", {"n": 3}, lo=np.arange(5, dtype=np.int64), bits=np.array([1, 0, 1], np.uint8))
    kind, fields, arrays = bob.recv("X")
    assert kind == "X" and fields == {"n": 3}
    assert arrays["lo"].tolist() == [0, 1, 2, 3, 4] and arrays["bits"].dtype == np.uint8
    bob.send("Y")
    assert alice.recv("Y")[0] == "Y"
    alice.close(); bob.close()


def test_wrong_key_is_rejected():
    alice, bob = _pair(b"right", b"wrong")
    alice.send("X")
    with pytest.raises(ChannelError, match="authentication"):
        bob.recv()
    alice.close(); bob.close()


def _raw_frame(sock):
    """Read one whole frame from a raw socket (what an attacker on the wire would see)."""
    head = sock.recv(4, socket.MSG_WAITALL)
    (length,) = struct.unpack("<I", head)
    return head + sock.recv(32 + length, socket.MSG_WAITALL)


def test_replayed_tampered_and_reflected_frames_are_rejected():
    a, b = socket_pair()
    alice = Channel(a, b"k", "alice")
    alice.send("X", {"v": 1})
    frame = _raw_frame(b)

    a2, b2 = socket_pair()
    bob = Channel(b2, b"k", "bob")
    a2.sendall(frame)
    assert bob.recv("X")[1] == {"v": 1}                  # the genuine frame passes
    a2.sendall(frame)                                    # replayed
    with pytest.raises(ChannelError, match="sequence"):
        bob.recv()

    a3, b3 = socket_pair()
    bob3 = Channel(b3, b"k", "bob")
    tampered = bytearray(frame)
    tampered[-2] ^= 1
    a3.sendall(bytes(tampered))
    with pytest.raises(ChannelError, match="authentication"):
        bob3.recv()

    a4, b4 = socket_pair()
    bob_sender = Channel(b, b"k", "bob")
    bob_sender.send("X", {"v": 1})                       # a frame Bob sent ...
    b4.sendall(_raw_frame(a))                            # ... reflected back at Bob's role check
    alice4_bob = Channel(a4, b"k", "bob")                # receiver expecting frames from alice
    with pytest.raises(ChannelError, match="authentication"):
        alice4_bob.recv()
    for s in (a, b, a2, b2, a3, b3, a4, b4):
        s.close()


def test_absurd_length_and_closed_peer():
    a, b = socket_pair()
    bob = Channel(b, b"k", "bob")
    a.sendall(struct.pack("<I", 1 << 30))
    with pytest.raises(ChannelError, match="length"):
        bob.recv()
    a2, b2 = socket_pair()
    bob2 = Channel(b2, b"k", "bob")
    a2.close()
    with pytest.raises(ChannelError, match="closed"):
        bob2.recv()
    for s in (a, b, b2):
        s.close()


def test_parse_address():
    assert parse_address("10.0.0.1:7000") == ("10.0.0.1", 7000)
    assert parse_address("h", 5323) == ("h", 5323)
    for bad in ("h", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_large_arrays_survive_partial_sends_and_bad_shapes_are_rejected():
    import threading
    alice, bob = _pair()
    big = np.random.default_rng(1).integers(0, 2**62, 1_500_000, dtype=np.int64)   # 12 MB: many sendmsg calls
    sender = threading.Thread(target=lambda: alice.send("BIG", {"n": 1}, data=big, flags=np.ones(9, bool)))
    sender.start()
    kind, fields, arrays = bob.recv("BIG")
    sender.join()
    assert np.array_equal(arrays["data"], big) and arrays["flags"].tolist() == [True] * 9
    assert alice.bytes_sent == bob.bytes_received

    import json as _json
    import hashlib
    import hmac
    a, b = socket_pair()
    receiver = Channel(b, b"k", "bob")
    header = _json.dumps({"kind": "X", "fields": {}, "arrays": [["a", "|u1", [-1]]]}).encode()
    body = struct.pack("<QI", 0, len(header)) + header + b"\x00" * 16
    tag = hmac.new(b"k", b"alice" + body, hashlib.sha256).digest()
    a.sendall(struct.pack("<I", len(body)) + tag + body)
    with pytest.raises(ChannelError, match="malformed"):
        receiver.recv()
    for s in (a, b):
        s.close()
    alice.close(); bob.close()
