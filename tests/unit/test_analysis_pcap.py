"""Wire measurements from captures: MQTT readings (TCP reassembly) and Clavis KeyResponses."""

from __future__ import annotations

import importlib.util
import json
import struct
import zlib
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Padding, Raw
from scapy.utils import wrpcap

from harness.analysis.keyresponse import decode_key_response, read_key_responses
from harness.analysis.pcap import read_mqtt_readings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"
T0 = 1_700_000_000.0
#: Hand-counted from the fixture's description (tests/fixtures/make_run_small.py docstring):
#: wire latency in ms of every (device, seq) the broker-side capture holds.
EXPECTED_BROKER_MS = {("d1", 0): 10, ("d1", 1): 12, ("d1", 2): 20, ("d1", 3): 14, ("d1", 4): 16,
                      ("d2", 0): 11, ("d2", 1): 13, ("d2", 2): 15, ("d2", 3): 17, ("d2", 5): 19}


def _generator():
    spec = importlib.util.spec_from_file_location("make_run_small", FIXTURE.parent / "make_run_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_broker_capture_latency_matches_hand_count():
    readings, stats = read_mqtt_readings(FIXTURE / "qkd" / "pcap" / "dc.pcap")
    got = {(d, s): ms for d, s, ms in readings[["device", "seq", "latency_ms"]].itertuples(index=False)}
    assert set(got) == set(EXPECTED_BROKER_MS)          # d1/5 (capture drop) and d2/4 (lost) absent
    for key, ms in EXPECTED_BROKER_MS.items():
        assert got[key] == pytest.approx(ms, abs=0.01), key   # pcap stores microseconds
    # the split seq 2 of d1 counts from its *second* segment (20 ms), not the first (8 ms)
    assert readings["latency_ms"].mean() == pytest.approx(14.7, abs=0.01)
    assert (readings["qos"] == 1).all() and (readings["dup"] == 0).all()
    assert (readings["mode"] == "qkd").all()
    # d1: CONNECT, 5 PUBLISH, PINGREQ, DISCONNECT; d2: 5 x (CONNECT + PUBLISH in one segment)
    assert stats.mqtt_packets == 18 and stats.readings == 10 and stats.publishes == 10
    assert stats.gaps == 1 and stats.gap_bytes > 0        # the missing d1/5 segment
    assert stats.undecodable_bytes == 0                  # resynchronised on the DISCONNECT
    assert stats.retransmitted_bytes > 0                 # the retransmitted first half of d1/2
    assert stats.streams == 6                            # 1 connection for d1, 5 for d2


def test_device_capture_without_syn_sees_every_message():
    readings, stats = read_mqtt_readings(FIXTURE / "qkd" / "pcap" / "gw-wlan.pcap")
    assert len(readings) == 12 and stats.gaps == 0
    assert readings["latency_ms"].to_numpy() == pytest.approx([0.5] * 12, abs=0.01)


def _frame(payload: bytes, seq: int, t: float, flags: str = "PA", sport: int = 41000):
    pkt = Ether() / IP(src="10.0.1.9", dst="10.0.0.100") / TCP(sport=sport, dport=1883, seq=seq, flags=flags)
    if payload:
        pkt = pkt / Raw(payload)
    pkt.time = t
    return pkt


def test_mqtt5_properties_reordering_and_padding(tmp_path):
    gen = _generator()
    reading = lambda seq: json.dumps({"v": 1, "device": "d9", "seq": seq, "t_sent": T0 + seq,  # noqa: E731
                                      "t_emul": float(seq), "mode": "dkg", "key_id": "x"}).encode()
    topic = b"qiot/d9/reading"

    def publish5(seq: int, props: bytes) -> bytes:  # QoS 0, MQTT 5: topic, property length, properties
        return gen.mqtt_packet(0x30, struct.pack(">H", len(topic)) + topic + bytes([len(props)]) + props
                               + reading(seq))
    connect5 = gen.mqtt_packet(0x10, struct.pack(">H", 4) + b"MQTT" + bytes([5, 2, 0, 60, 0])
                               + struct.pack(">H", 2) + b"d9")
    two = publish5(0, b"") + publish5(1, bytes([0x01, 0x01]))   # payload-format-indicator property
    third = publish5(2, b"")
    isn = 5000
    seq = isn + 1
    pkts = [_frame(b"", isn, T0 - 1, flags="S"), _frame(connect5, seq, T0 - 0.5)]
    seq += len(connect5)
    pkts.append(_frame(two, seq, T0 + 1.004))            # two PUBLISHes in one segment
    seq += len(two)
    parts = [third[:5], third[5:40], third[40:]]
    # three pieces captured out of order: the middle one last, at +2.030 s
    times = [T0 + 2.010, T0 + 2.030, T0 + 2.020]
    offsets = [0, 5, 40]
    for part, offset, t in zip(parts, offsets, times):
        pkts.append(_frame(part, seq + offset, t))
    seq += len(third)
    ping = gen.mqtt_packet(0xC0, b"")
    pkts.append(_frame(ping, seq, T0 + 3) / Padding(bytes(4)))  # Ethernet padding after TCP data
    non_reading = gen.mqtt_packet(0x30, struct.pack(">H", 5) + b"other" + b"\x00" + b"not json")
    pkts.append(_frame(non_reading, seq + 2, T0 + 4))
    path = tmp_path / "mixed.pcap"
    wrpcap(str(path), sorted(pkts, key=lambda p: p.time))
    readings, stats = read_mqtt_readings(path)
    assert list(readings["seq"]) == [0, 1, 2]
    assert readings["latency_ms"].to_numpy() == pytest.approx([1004.0, 4.0, 30.0], abs=0.01)
    assert stats.non_reading_publishes == 1 and stats.undecodable_bytes == 0 and stats.gaps == 0
    assert stats.mqtt_packets == 6


def test_key_response_decoded_from_capture():
    rows = read_key_responses(FIXTURE / "qkd" / "pcap" / "keys.pcap")
    assert len(rows) == 1                      # the request (to port 5323) is not a response
    row = rows.iloc[0]
    assert row["key_id"] == 7 and row["key_request_id"] == 42 and row["key_length"] == 32
    assert row["error_status"] == 0 and row["device_id"] == 1 and bool(row["crc_ok"])
    assert row["key_hex"] == bytes(range(32)).hex()
    assert row["sport"] == 5323 and len(bytes.fromhex(row["raw_hex"])) == 62


def test_key_response_crc_and_size_checks():
    body = struct.pack("<BIIBIB32sB10s", 1, 1, 2, 32, 9, 1, b"\xaa" * 32, 3, bytes(10))
    good = body + struct.pack("<I", zlib.crc32(body))
    decoded = decode_key_response(good)
    assert decoded.key_id == (1 << 32) | 2 and decoded.error_status == 1 and decoded.crc_ok
    assert not decode_key_response(body + b"\0\0\0\0").crc_ok
    with pytest.raises(ValueError):
        decode_key_response(good[:-1])
    with pytest.raises(ValueError):
        decode_key_response(b"\0" + good[1:])   # type 0 = request


def test_key_response_agrees_with_the_clavis_service_encoder():
    clavis = pytest.importorskip("harness.qkd.clavis")
    datagram = clavis.KeyResponse(key_id=(5 << 32) | 77, key_length=32, request_id=123, status=0,
                                  key=bytes(range(100, 132)), device_id=4).encode()
    decoded = decode_key_response(datagram)
    assert (decoded.key_id, decoded.key_request_id, decoded.device_id) == ((5 << 32) | 77, 123, 4)
    assert decoded.key == bytes(range(100, 132)) and decoded.crc_ok


def test_unreadable_capture_is_a_value_error(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a pcap at all")
    with pytest.raises(ValueError):
        read_mqtt_readings(bad)


def test_capture_starting_inside_a_packet_resynchronises(tmp_path):
    gen = _generator()
    first, second = gen.publish("d1", 0, "qkd", 1), gen.publish("d1", 1, "qkd", 2)
    tail = first[first.index(b'"mode"'):]        # JSON text: '"' = 0x22 reads as a CONNACK header
    pkts = [_frame(tail, 900, T0 + 600.01), _frame(second, 900 + len(tail), T0 + 1800.02)]
    path = tmp_path / "midstream.pcap"
    wrpcap(str(path), pkts)
    readings, stats = read_mqtt_readings(path)
    assert readings["seq"].tolist() == [1]
    assert readings["latency_ms"].iloc[0] == pytest.approx(20.0, abs=0.01)
    assert stats.undecodable_bytes == len(tail) and stats.gaps == 0


def _readings_and_stats(path):
    readings, stats = read_mqtt_readings(path)
    return readings[["device", "seq", "t_capture", "client"]].values.tolist(), stats.as_dict()


def test_records_split_across_read_chunks_are_whole(monkeypatch):
    from harness.analysis import packets
    dc = FIXTURE / "qkd" / "pcap" / "dc.pcap"
    whole = _readings_and_stats(dc)
    monkeypatch.setattr(packets, "_CHUNK_BYTES", 97)      # far smaller than one record
    assert _readings_and_stats(dc) == whole and whole[1]["readings"] == 10


def test_pcapng_nanosecond_and_cooked_captures_read_alike(tmp_path):
    from scapy.layers.l2 import CookedLinux
    from scapy.utils import PcapNgWriter, PcapWriter, rdpcap
    dc = FIXTURE / "qkd" / "pcap" / "dc.pcap"
    expected = _readings_and_stats(dc)
    packets = rdpcap(str(dc))
    ng, nano, cooked = tmp_path / "dc.pcapng", tmp_path / "nano.pcap", tmp_path / "cooked.pcap"
    with PcapNgWriter(str(ng)) as writer:
        for packet in packets:
            writer.write(packet)
    with PcapWriter(str(nano), nano=True) as writer:
        writer.write(packets)
    relinked = []
    for packet in packets:                                 # Linux "any"-interface framing
        frame = CookedLinux(pkttype=0, proto=0x0800) / packet.payload
        frame.time = packet.time
        relinked.append(frame)
    wrpcap(str(cooked), relinked)
    for path in (ng, nano, cooked):
        got = _readings_and_stats(path)
        assert got[1] == expected[1], path
        assert [row[:2] + row[3:] for row in got[0]] == [row[:2] + row[3:] for row in expected[0]], path
        assert [row[2] for row in got[0]] == pytest.approx([row[2] for row in expected[0]], abs=1e-6), path


def test_wire_for_mode_parses_two_captures_in_parallel_alike(monkeypatch):
    import pandas as pd
    from harness.analysis import wire
    broker, device = FIXTURE / "qkd" / "pcap" / "dc.pcap", FIXTURE / "qkd" / "pcap" / "gw-wlan.pcap"
    readings, _ = read_mqtt_readings(device)
    messages = readings[["device", "seq", "t_emul", "t_sent"]].assign(received=1, latency_ms=1.0)
    sequential = wire.wire_for_mode(messages, broker, device)
    monkeypatch.setattr(wire, "PARALLEL_PARSE_BYTES", 0)          # the fixture is tiny: force the pool
    parallel = wire.wire_for_mode(messages, broker, device)
    pd.testing.assert_frame_equal(parallel[0], sequential[0])
    assert parallel[1] == sequential[1] and parallel[1]["broker_seen"] == 10
    with pytest.raises(ValueError, match="cannot read"):
        wire.wire_for_mode(messages, broker, FIXTURE / "missing.pcap")


def test_vlan_ipv6_and_fragments(tmp_path):
    from scapy.layers.inet import IP as IPv4
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q
    gen = _generator()
    data = gen.publish("d1", 0, "qkd", 1)
    v6 = (Ether() / Dot1Q(vlan=7) / IPv6(src="fd00::9", dst="fd00::1")
          / TCP(sport=41000, dport=1883, seq=10, flags="PA") / Raw(data))
    v6.time = T0 + 0.25
    fragment = Ether() / IPv4(src="10.0.1.9", dst="10.0.0.100", flags="MF") / TCP(dport=1883, seq=10) / Raw(data)
    fragment.time = T0 + 0.5
    path = tmp_path / "v6.pcap"
    wrpcap(str(path), [v6, fragment])
    readings, stats = read_mqtt_readings(path)
    assert stats.packets == 2 and stats.tcp_segments == 1 and stats.readings == 1
    assert readings["client"].tolist() == ["fd00::9:41000"] and readings["seq"].tolist() == [0]


def test_background_read_matches_and_reports_errors(tmp_path):
    from harness.analysis.pcap import BackgroundRead
    dc = FIXTURE / "qkd" / "pcap" / "dc.pcap"
    here = read_mqtt_readings(dc)
    there = BackgroundRead(dc).result()
    assert there[0].equals(here[0]) and there[1] == here[1]
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a pcap at all")
    with pytest.raises(ValueError, match="cannot read capture"):
        BackgroundRead(bad).result()
    job = BackgroundRead(dc)
    job.cancel()                                         # a caller that gives up leaves nothing behind
    assert not job._out.exists()


def test_other_link_types_go_through_scapy_and_unknown_ones_are_named(tmp_path):
    from scapy.layers.l2 import Loopback
    from scapy.utils import PcapWriter, rdpcap
    dc = FIXTURE / "qkd" / "pcap" / "dc.pcap"
    expected = _readings_and_stats(dc)
    looped = []
    for packet in rdpcap(str(dc)):                         # BSD loopback framing (link type 0)
        frame = Loopback(type=2) / packet.payload
        frame.time = packet.time
        looped.append(frame)
    path = tmp_path / "null.pcap"
    wrpcap(str(path), looped)
    got = _readings_and_stats(path)
    assert got[1] == expected[1] and [row[:2] for row in got[0]] == [row[:2] for row in expected[0]]
    odd = tmp_path / "odd.pcap"
    with PcapWriter(str(odd), linktype=147) as writer:     # DLT_USER0: private, unknown to scapy
        writer.write(Raw(b"\x00" * 40))
    with pytest.raises(ValueError, match="link type 147"):
        read_mqtt_readings(odd)


def test_wire_latency_is_that_of_the_first_copy_the_broker_saw():
    """A reading published again after its acknowledgement was lost: sent.csv keeps the second
    publish time, the broker saw the first copy 12 ms after its own stamp."""
    import pandas as pd

    from harness.analysis.wire import match_messages

    messages = pd.DataFrame({"device": ["d1"], "seq": [0], "t_emul": [1.0], "t_sent": [160.0], "received": [1],
                             "latency_ms": [12.0]})
    broker = pd.DataFrame({"device": ["d1", "d1"], "seq": [0, 0], "t_capture": [160.004, 100.012],
                           "t_sent": [160.0, 100.0]})
    wire = match_messages(messages, broker)
    assert wire["wire_latency_ms"].tolist() == [pytest.approx(12.0)] and wire["broker_copies"].tolist() == [2]
    assert wire["t_broker"].tolist() == [pytest.approx(100.012)]
