"""Alice and Bob as real processes on 127.0.0.1: READY, keys over UDP, SIGTERM, CSV records."""

import json
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import pytest

from harness.qkd.config import QkdLinkConfig


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(key_id: int, request_id: int) -> bytes:
    """KeyRequest from the format description (reference.md §3), little-endian, CRC-32 at the end."""
    body = struct.pack("<BIIBIB10s", 0, key_id >> 32, key_id & 0xFFFFFFFF, 32, request_id, 1, bytes(10))
    return body + struct.pack("<I", zlib.crc32(body))


def _ask(sock, port, key_id, request_id):
    sock.sendto(_request(key_id, request_id), ("127.0.0.1", port))
    data = sock.recv(2048)
    assert len(data) == 62 and struct.unpack("<I", data[58:])[0] == zlib.crc32(data[:58])
    _, hw, lw, _, req, status = struct.unpack("<BIIBIB", data[:15])
    assert req == request_id
    return (hw << 32) | lw, status, data[15:47]


def _start(args, out):
    return subprocess.Popen([sys.executable, "-m", "harness.qkd.node", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc, timeout=20.0):
    line = proc.stdout.readline()   # blocks until the node prints READY (or exits)
    assert line.strip() == "READY", proc.stderr.read()


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "qkd.json"
    path.write_text(json.dumps(QkdLinkConfig(loss_db=7.0).to_sections()))
    return path


def test_node_processes_serve_identical_keys_and_stop_on_sigterm(tmp_path, config_file):
    tcp, udp_a, udp_b = _free_port(), _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_DGRAM)
    clock = ["--clock-epoch", repr(time.time()), "--time-scale", "300", "--seed", "9", "--config", str(config_file)]
    bob = _start(["--role", "bob", "--classical-listen", f"127.0.0.1:{tcp}", "--udp-listen", f"127.0.0.1:{udp_b}",
                  *clock], tmp_path / "bob")
    alice = None
    try:
        _wait_ready(bob)
        alice = _start(["--role", "alice", "--classical-peer", f"127.0.0.1:{tcp}",
                        "--udp-listen", f"127.0.0.1:{udp_a}", *clock], tmp_path / "alice")
        _wait_ready(alice)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5.0)
        deadline, status = time.time() + 20, 1
        while status == 1 and time.time() < deadline:   # "no more keys" until the first block is done
            key_id, status, key = _ask(sock, udp_a, 0, 1)
            time.sleep(0.05)
        assert status == 0 and key_id >= 1
        assert _ask(sock, udp_b, key_id, 2)[1:] == (0, key)            # Bob: same key for the same id
        bob_id, status, bob_key = _ask(sock, udp_b, 0, 3)             # a new key asked at Bob's end
        assert status == 0 and bob_id != key_id
        assert _ask(sock, udp_a, bob_id, 4)[1:] == (0, bob_key)
        assert _ask(sock, udp_a, 10**12, 5)[1] == 2
        sock.sendto(b"garbage", ("127.0.0.1", udp_a))                  # dropped, service lives on
        assert _ask(sock, udp_a, key_id, 6)[1:] == (0, key)
        sock.close()
        alice.send_signal(signal.SIGTERM)
        assert alice.wait(timeout=10) == 0
        assert bob.wait(timeout=10) == 0                               # Alice's goodbye ends Bob
    finally:
        for proc in (alice, bob):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
    blocks = (tmp_path / "alice" / "blocks.csv").read_text().splitlines()
    assert len(blocks) >= 2 and blocks[0].startswith("block,t_start,t_end,raw,sifted")
    assert (tmp_path / "bob" / "buffer.csv").read_text().splitlines()[0].startswith("t_emul,block,keys_stored")


def test_bob_alone_stops_on_sigterm(tmp_path):
    bob = _start(["--role", "bob", "--classical-listen", f"127.0.0.1:{_free_port()}",
                  "--udp-listen", f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}"], tmp_path)
    _wait_ready(bob)
    bob.send_signal(signal.SIGTERM)
    assert bob.wait(timeout=10) == 0


def test_bad_config_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"qkd": {"visibilty": 0.9}}))
    proc = subprocess.run([sys.executable, "-m", "harness.qkd.node", "--role", "bob", "--classical-listen",
                           "127.0.0.1:1", "--config", str(path)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "visibilty" in proc.stderr


def test_stopping_bob_first_ends_alice_cleanly(tmp_path):
    tcp = _free_port()
    clock = ["--clock-epoch", repr(time.time()), "--time-scale", "100"]
    bob = _start(["--role", "bob", "--classical-listen", f"127.0.0.1:{tcp}",
                  "--udp-listen", f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}", *clock], tmp_path / "b")
    _wait_ready(bob)
    alice = _start(["--role", "alice", "--classical-peer", f"127.0.0.1:{tcp}",
                    "--udp-listen", f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}", *clock], tmp_path / "a")
    try:
        _wait_ready(alice)
        time.sleep(0.3)
        bob.send_signal(signal.SIGTERM)
        assert bob.wait(timeout=10) == 0
        assert alice.wait(timeout=10) == 0
    finally:
        for proc in (alice, bob):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
