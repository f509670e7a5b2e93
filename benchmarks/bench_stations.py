"""Benchmark: how long the wireless side takes to come up for N stations, phase by phase.

Prints figures, asserts nothing. For each N: an Open vSwitch bridge on the userspace datapath stands
in for the access switch (no Mininet, no controller: only what :func:`harness.stations.attach` makes),
the stations are planned and attached with bcn's wireless shape, timed by phase, then removed. This
is the wireless share of a run's ``network up``; ``benchmarks/bench_provisioning.py`` measures the
controller's discovery on top.

Run (root): ``.venv/bin/python benchmarks/bench_stations.py [--devices 1000,5000,13000]``.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from harness import scenario
from harness.capabilities import probe
from harness.state import RunState
from harness import stations

BRIDGE = "qbench0"


def one(count: int) -> dict[str, float]:
    config = scenario.load("bcn")
    shape, netem = config.settings.wireless, probe().netem
    hosts = [(f"d{i}", f"10.{1 + i // 65000}.{(i // 250) % 250}.{i % 250 + 2}", f"02:bb:{i >> 16 & 255:02x}:"
              f"{i >> 8 & 255:02x}:{i & 255:02x}:01", 8) for i in range(1, count + 1)]
    state = RunState(f"bench-stations-{count}")
    planned = stations.plan(state.run_id, 2, hosts)
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                    "datapath_type=netdev"], check=True, capture_output=True)
    started = time.monotonic()
    try:
        timings = stations.attach(planned, BRIDGE, "10.0.0.1", shape, netem, state)
        timings["total_s"] = round(time.monotonic() - started, 1)
    finally:
        removing = time.monotonic()
        stations.detach(planned, BRIDGE, state.run_id)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", BRIDGE], capture_output=True)
        state.forget()
    timings["teardown_s"] = round(time.monotonic() - removing, 1)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000,5000", help="comma-separated station counts")
    args = parser.parse_args()
    for count in [int(n) for n in args.devices.split(",")]:
        timings = one(count)
        figures = "  ".join(f"{k} {v}" for k, v in timings.items())
        print(f"{count:>6} stations: {figures}  ({timings['total_s'] / count * 1000:.1f} ms per station)", flush=True)


if __name__ == "__main__":
    main()
