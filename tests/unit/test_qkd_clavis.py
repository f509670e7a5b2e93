"""Clavis2 UDP key extraction, tested with a client written here from the format description.

Format (reference.md §3, little-endian as qiot documents): KeyRequest 29 bytes = type u8, keyIDhw
u32, keyIDlw u32, keyLength u8, keyRequestID u32, requestingDeviceID u8, reserved 10, crc32 u32;
KeyResponse 62 bytes = type u8, keyIDhw, keyIDlw, keyLength, keyRequestID, errorStatus u8, key 32,
device id u8, reserved 10, crc32. CRC-32 poly 0x04C11DB7, init 0xFFFFFFFF, final complement.
"""

import socket
import struct

import numpy as np
import pytest

from harness.qkd.clavis import ClavisClient, ClavisError, ClavisServer
from harness.qkd.keybuffer import KeyBuffer


def crc32_bitwise(data: bytes) -> int:
    """Reflected CRC-32 of polynomial 0x04C11DB7 (reversed 0xEDB88320), written out bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def make_request(key_id=0, length=32, request_id=7, device=1, kind=0, reserved=bytes(10)) -> bytes:
    body = struct.pack("<BIIBIB", kind, key_id >> 32, key_id & 0xFFFFFFFF, length, request_id, device) + reserved
    return body + struct.pack("<I", crc32_bitwise(body))


def parse_response(data: bytes) -> dict:
    assert len(data) == 62
    assert struct.unpack("<I", data[58:])[0] == crc32_bitwise(data[:58])
    kind, hw, lw, length, req, status = struct.unpack("<BIIBIB", data[:15])
    return {"type": kind, "key_id": (hw << 32) | lw, "length": length, "request_id": req, "status": status,
            "key": data[15:47], "device": data[47], "reserved": data[48:58]}


@pytest.fixture()
def services():
    bits = np.random.default_rng(8).integers(0, 2, 256 * 4, dtype=np.uint8)
    buffers = []
    for _ in range(2):  # Alice's and Bob's buffers, filled from the same final bits
        buf = KeyBuffer(10)
        buf.add_bits(bits)
        buffers.append(buf)
    servers = [ClavisServer(buf, ("127.0.0.1", 0)).start() for buf in buffers]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2.0)
    yield servers, client
    client.close()
    for server in servers:
        server.stop()


def ask(client, server, datagram):
    client.sendto(datagram, server.address)
    return parse_response(client.recv(2048))


def test_same_key_for_same_id_from_alice_and_bob(services):
    (alice, bob), client = services
    new = ask(client, alice, make_request(key_id=0, request_id=41, device=3))
    assert new["status"] == 0 and new["type"] == 1 and new["key_id"] == 4   # the newest of 4 keys
    assert new["request_id"] == 41 and new["device"] == 3 and new["length"] == 32
    by_id = ask(client, bob, make_request(key_id=new["key_id"], request_id=42))
    assert by_id["status"] == 0 and by_id["key"] == new["key"] and by_id["key_id"] == 4
    other = ask(client, bob, make_request(key_id=0))   # "new key" from Bob's side
    assert other["key_id"] == 3
    assert ask(client, alice, make_request(key_id=3))["key"] == other["key"]
    short = ask(client, alice, make_request(key_id=3, length=16))
    assert short["key"][:16] == other["key"][:16] and short["key"][16:] == bytes(16)


def test_error_statuses(services):
    (alice, _), client = services
    assert ask(client, alice, make_request(key_id=999))["status"] == 2
    assert ask(client, alice, make_request(key_id=1 << 40))["status"] == 2
    assert ask(client, alice, make_request(length=0))["status"] == 3
    assert ask(client, alice, make_request(length=33))["status"] == 3
    assert ask(client, alice, make_request(kind=1))["status"] == 4        # a response sent as a request
    assert ask(client, alice, make_request(kind=9))["status"] == 4        # unknown type
    assert ask(client, alice, make_request(device=0))["status"] == 4
    assert ask(client, alice, make_request(device=13))["status"] == 4
    assert ask(client, alice, make_request(reserved=b"x" * 10))["status"] == 4
    for _ in range(4):
        assert ask(client, alice, make_request())["status"] == 0
    empty = ask(client, alice, make_request(request_id=77))
    assert empty["status"] == 1 and empty["request_id"] == 77 and empty["key"] == bytes(32)


def test_bad_datagrams_are_dropped_counted_and_service_survives(services):
    (alice, _), client = services
    client.settimeout(0.15)
    good = make_request()
    bad_crc = good[:-1] + bytes([good[-1] ^ 0xFF])
    for datagram in (b"", b"\x00", good[:20], good + b"\x00", bad_crc, b"\xff" * 62, good[:-4] + b"\0\0\0\0"):
        client.sendto(datagram, alice.address)
        with pytest.raises(socket.timeout):
            client.recv(2048)
    assert alice.counts["dropped_bad_size"] == 5
    assert alice.counts["dropped_bad_crc"] == 2
    client.settimeout(2.0)
    assert ask(client, alice, good)["status"] == 0                       # still serving


def test_library_client_against_service(services):
    (alice, bob), _ = services
    a, b = ClavisClient(alice.address, timeout_s=2), ClavisClient(bob.address, timeout_s=2)
    key_id, key = a.request_new_key()
    assert len(key) == 32 and b.request_key(key_id) == key
    with pytest.raises(ClavisError) as err:
        b.request_key(12345)
    assert err.value.status == 2
    with pytest.raises(ClavisError) as err:
        a.request_new_key(length=40)
    assert err.value.status == 3
    a.close(); b.close()
