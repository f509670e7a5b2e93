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
    # 4 keys in a buffer of 10: ids 1-2 are in the eviction zone of the next two blocks of 4
    assert new["status"] == 0 and new["type"] == 1 and new["key_id"] == 3   # the oldest safe one
    assert new["request_id"] == 41 and new["device"] == 3 and new["length"] == 32
    by_id = ask(client, bob, make_request(key_id=new["key_id"], request_id=42))
    assert by_id["status"] == 0 and by_id["key"] == new["key"] and by_id["key_id"] == 3
    other = ask(client, bob, make_request(key_id=0))   # "new key" from Bob's side
    assert other["key_id"] == 4
    assert ask(client, alice, make_request(key_id=4))["key"] == other["key"]
    short = ask(client, alice, make_request(key_id=4, length=16))
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


# --- the client trusts only its service (module docstring: trust boundary) -------------------------
def response_to(request: bytes, key_id: int, key: bytes, status=0, request_id=None) -> bytes:
    """A well-formed KeyResponse answering ``request`` (optionally with another request id)."""
    _, _, _, length, req_id, device = struct.unpack("<BIIBIB", request[:15])
    body = struct.pack("<BIIBIB", 1, key_id >> 32, key_id & 0xFFFFFFFF, length,
                       req_id if request_id is None else request_id, status) + key.ljust(32, b"\0") \
        + bytes([device]) + bytes(10)
    return body + struct.pack("<I", crc32_bitwise(body))


@pytest.fixture()
def fake_service():
    """A UDP socket standing in for the Clavis service, and a forger's socket on the same loopback."""
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    service.bind(("127.0.0.1", 0))
    service.settimeout(2.0)
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.1", 0))
    yield service, forger
    service.close()
    forger.close()


def test_forged_reply_from_another_socket_is_ignored(fake_service):
    import threading
    service, forger = fake_service
    client = ClavisClient(service.getsockname(), timeout_s=1.0)
    assert client.local_address[0] == "127.0.0.1"          # bound to the address it talks from
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("key", client.request_new_key()))
    thread.start()
    request, client_address = service.recvfrom(64)
    # The forger even knows the request id: its answer still comes from the wrong socket.
    for _ in range(5):
        forger.sendto(response_to(request, 77, b"F" * 32), client_address)
    service.sendto(response_to(request, 5, b"G" * 32), client_address)
    thread.join(timeout=3)
    assert result["key"] == (5, b"G" * 32)
    # With only forged answers the client times out rather than take one.
    with pytest.raises(ClavisError) as err:
        threading.Timer(0.1, lambda: forger.sendto(response_to(service.recvfrom(64)[0], 77, b"F" * 32),
                                                   client_address)).start()
        client.request_key(77)
    assert err.value.status is None
    client.close()


def test_replies_must_match_the_request(fake_service):
    import threading
    service, _ = fake_service
    client = ClavisClient(service.getsockname(), timeout_s=1.0)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("key", client.request_key(9, 16)))
    thread.start()
    request, address = service.recvfrom(64)
    request_id = struct.unpack_from("<I", request, 10)[0]
    service.sendto(response_to(request, 9, b"A" * 32, request_id=request_id ^ 1), address)  # stale id
    service.sendto(response_to(request, 8, b"B" * 32), address)                            # other key
    service.sendto(b"\x01" * 62, address)                                                  # bad CRC
    service.sendto(response_to(request, 9, b"C" * 32), address)
    thread.join(timeout=3)
    assert result["key"] == b"C" * 16 and client.ignored == 3
    client.close()


def test_request_ids_are_unpredictable(fake_service):
    service, _ = fake_service
    client = ClavisClient(service.getsockname(), timeout_s=0.05)
    ids = []
    for _ in range(20):
        with pytest.raises(ClavisError):
            client.request_new_key()
        ids.append(struct.unpack_from("<I", service.recvfrom(64)[0], 10)[0])
    assert len(set(ids)) == 20
    assert sorted(ids) != list(range(min(ids), min(ids) + 20))  # not a counter
    client.close()


def test_forged_replies_against_a_real_service_change_nothing(services):
    """A flood of well-formed forged answers at the client's port: it still gets the real keys."""
    (alice, bob), _ = services
    a = ClavisClient(alice.address, timeout_s=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
        for guess in range(200):
            forger.sendto(response_to(make_request(request_id=guess), 1, b"F" * 32), a.local_address)
        key_id, key = a.request_new_key()
    assert key == bob.buffer.get(key_id) != b"F" * 32
    a.close()


def test_service_listens_on_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        ClavisServer(KeyBuffer(4), ("0.0.0.0", 0))


# --- Clavis finding 3: the two ends and "new" keys ------------------------------------------------
def test_only_one_end_hands_out_new_keys(services):
    """The contract: one end issues; ``new_keys=False`` closes the other end for new-key requests.

    Two ends that both hand out new keys give the same key to two consumers within one block
    (hand-outs are reported to the peer with the next block): the reason for the contract.
    """
    (alice, bob), client = services
    both = [ask(client, server, make_request(request_id=i))["key_id"] for i, server in enumerate((alice, bob))]
    assert both[0] == both[1]  # the window the contract closes
    bits = np.random.default_rng(3).integers(0, 2, 256 * 10, dtype=np.uint8)
    issuing_buf, fetching_buf = KeyBuffer(20), KeyBuffer(20)
    issuing_buf.add_bits(bits)
    fetching_buf.add_bits(bits)
    issuing = ClavisServer(issuing_buf, ("127.0.0.1", 0)).start()
    fetching = ClavisServer(fetching_buf, ("127.0.0.1", 0), new_keys=False).start()
    try:
        refused = ask(client, fetching, make_request(request_id=5))
        assert refused["status"] == 4 and refused["key"] == bytes(32)
        handed = []
        for i in range(10):  # interleaved within milliseconds: new at one end, by id at the other
            new = ask(client, issuing, make_request(request_id=100 + i))
            assert ask(client, fetching, make_request(key_id=new["key_id"], request_id=200 + i))["key"] == new["key"]
            assert ask(client, fetching, make_request(request_id=300 + i))["status"] == 4
            handed.append(new["key_id"])
        assert sorted(handed) == list(range(1, 11))  # every key once, none twice
    finally:
        issuing.stop()
        fetching.stop()
