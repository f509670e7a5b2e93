"""Benchmark: how fast the analysis reads MQTT readings out of a long run's captures.

A 24 h, 50-device run captures ~2 M packets per mode and capture point (issue 15: the whole
analysis of such a run in <= 30 s). This builds a capture of that size by tiling a template
capture (default: the test fixture's broker capture; pass a real run's ``dc.pcap`` for realistic
traffic): copy ``k`` of the template gets its own client addresses and ports (so every copy is a
distinct set of TCP streams) and is shifted in time. Then it prints packets/s of
``read_mqtt_readings`` on the whole file (run it with ``PYTHONPATH`` at an older commit to
compare readers).

Usage: ``python benchmarks/bench_analysis.py [--packets 2000000] [--template PCAP]``
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from pathlib import Path

from scapy.utils import RawPcapReader

from harness.analysis.pcap import read_mqtt_readings

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "run_small" / "qkd" / "pcap" / "dc.pcap"
MQTT_PORT = 1883


def tile_capture(template: Path, out: Path, packets: int) -> int:
    """Write ``out``: copies of ``template`` (Ethernet/IPv4) until ``packets``; returns the count."""
    with RawPcapReader(str(template)) as reader:
        records = [(meta.sec + meta.usec / 1e6, frame) for frame, meta in reader]
    if not records:
        raise SystemExit(f"{template}: empty capture")
    span = records[-1][0] - records[0][0] + 1.0
    written = 0
    with out.open("wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        copy = 0
        while written < packets:
            shift = copy * span
            for stamp, frame in records:
                frame = bytearray(frame)
                if len(frame) >= 38 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
                    ihl = (frame[14] & 0x0F) * 4
                    sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
                    # The client end (not port 1883) of each stream gets a copy-specific address/port.
                    client_ip, client_port = (26, 14 + ihl) if dport == MQTT_PORT else (30, 16 + ihl)
                    frame[client_ip + 2] = (frame[client_ip + 2] + copy // 256) % 256
                    frame[client_ip + 3] = (frame[client_ip + 3] + copy) % 256
                    port = struct.unpack_from("!H", frame, client_port)[0]
                    struct.pack_into("!H", frame, client_port, 1024 + (port + 7 * copy) % 64000)
                t = stamp + shift
                seconds = int(t)
                handle.write(struct.pack("<IIII", seconds, int(round((t - seconds) * 1e6)) % 1_000_000,
                                         len(frame), len(frame)))
                handle.write(frame)
                written += 1
                if written >= packets:
                    break
            copy += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=2_000_000)
    parser.add_argument("--template", type=Path, default=FIXTURE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pcap"
        start = time.perf_counter()
        written = tile_capture(args.template, path, args.packets)
        print(f"capture: {written:,} packets tiled from {args.template} in {time.perf_counter() - start:.1f} s "
              f"({path.stat().st_size / 2**20:.0f} MiB)")
        start = time.perf_counter()
        readings, stats = read_mqtt_readings(path)
        elapsed = time.perf_counter() - start
        print(f"read_mqtt_readings: {stats.packets:,} packets, {len(readings):,} readings, {stats.streams:,} streams "
              f"in {elapsed:.2f} s = {stats.packets / elapsed:,.0f} packets/s")


if __name__ == "__main__":
    main()
