"""Benchmark: how fast the analysis reads MQTT readings out of a broker-side capture.

Prints packets per second of ``harness.analysis.pcap.read_mqtt_readings`` on a synthetic capture
(N devices on persistent connections, one PUBLISH per segment). Usage:
``python benchmarks/bench_analysis.py [MESSAGES]`` (default 5000).
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter

from harness.analysis.pcap import read_mqtt_readings

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gen", HERE.parent / "tests" / "fixtures" / "make_run_small.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def main(messages: int = 5000, devices: int = 50) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pcap"
        seqs = {d: 1 for d in range(devices)}
        with PcapWriter(str(path)) as writer:
            for i in range(messages):
                device = i % devices
                name = f"d{device}"
                gen.DEVICE_IP.setdefault(name, f"10.0.2.{device + 1}")
                data = gen.publish(name, (i // devices) % len(gen.T_EMUL), "qkd", 1)
                pkt = (Ether() / IP(src=gen.DEVICE_IP[name], dst=gen.BROKER)
                       / TCP(sport=40000 + device, dport=1883, seq=seqs[device], flags="PA") / Raw(data))
                pkt.time = gen.T0 + i * 0.01
                seqs[device] += len(data)
                writer.write(pkt)
        start = time.perf_counter()
        readings, stats = read_mqtt_readings(path)
        elapsed = time.perf_counter() - start
    print(f"{stats.packets} packets, {len(readings)} readings in {elapsed:.2f} s "
          f"= {stats.packets / elapsed:,.0f} packets/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
