"""TCP_INFO counters on a real loopback connection: what the kernel says was sent is what was sent."""

import socket
import threading

from harness.tcpinfo import TcpCounters, tcp_counters


def test_counters_match_the_bytes_exchanged():
    with socket.create_server(("127.0.0.1", 0)) as server:
        done = threading.Event()

        def serve():
            conn, _ = server.accept()
            received = b""
            while len(received) < 5000:
                received += conn.recv(65536)
            conn.sendall(b"y" * 1234)
            done.wait(5)
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
        client = socket.create_connection(server.getsockname())
        client.sendall(b"x" * 5000)
        got = b""
        while len(got) < 1234:
            got += client.recv(65536)
        counters = tcp_counters(client)
        done.set()
        client.close()
    assert counters.bytes_sent == 5000 and counters.bytes_received == 1234
    assert counters.segments_out >= 2  # SYN and the data (and ACKs)
    assert tcp_counters(client) == TcpCounters()  # a closed socket reads as zeros, never an error
    assert tcp_counters(None) + counters == counters
