"""Benchmark: how long the SDN controller takes to discover and provision N devices and get their keys.

Prints figures, asserts nothing. For each N a full testbed comes up (bcn topology, OVS userspace,
os-ken with :mod:`controllers.provisioning`, unshaped wireless so only the controller is measured).
No device sends anything: the controller discovers them with its ARP probes, as in a run. A small
key manager in the data-centre host's namespace answers the key request (sent from the gateway's
namespace, configured over REST once the network exists). Reported, from the controller's registry:

* ``discover+provision all``: first device seen -> last device provisioned (wall s)
* ``per device``: a device's first packet -> its flows sent and registration persisted (ms)
* ``key request``: the single request for N keys, POST to answer (ms), and its size
* ``network start``: Mininet build + start + all switches connected (context, not the controller)

Run (root): ``.venv/bin/python benchmarks/bench_provisioning.py [--devices 3,50,200] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import scenario
from harness.netns import enter_netns
from harness.state import RunState
from harness.testbed import Testbed
from topologies.fig1 import DC_IP

KEY_MANAGER_PORT = 9781


class _KeyHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        devices = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["devices"]
        answer = json.dumps({"keys": {d: f"bench-{d}" for d in devices}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_):
        pass


def start_key_manager(netns_pid: int) -> ThreadingHTTPServer:
    holder: dict = {}
    ready = threading.Event()

    def serve():
        try:
            enter_netns(netns_pid)
            holder["server"] = ThreadingHTTPServer((DC_IP, KEY_MANAGER_PORT), _KeyHandler)
        except OSError as exc:
            holder["error"] = exc
        ready.set()
        if "server" in holder:
            holder["server"].serve_forever()

    threading.Thread(target=serve, daemon=True).start()
    # A machine still busy with thousands of stations can take a while to run the thread at all
    # (13,000 devices: more than the 5 s this waited before).
    if not ready.wait(60) or "server" not in holder:
        raise SystemExit(f"the benchmark's key manager did not start: {holder.get('error', 'not within 60 s')}")
    return holder["server"]


def measure(devices: int, timeout_s: float) -> dict:
    quiet = scenario.load("bcn").with_overrides({
        "devices.count": devices, "wireless.delay_ms": 0.0, "wireless.jitter_ms": 0.0, "wireless.loss_pct": 0.0})
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-provisioning-{devices}-"))
    bed = Testbed.for_scenario(quiet, run_dir, RunState(f"bench-provisioning-{devices}"))
    try:
        bed.up()
        start_key_manager(bed.net.netns_pid("dc"))
        bed.controller_rest("/qiot/key-manager", {"url": f"http://{DC_IP}:{KEY_MANAGER_PORT}/keys",
                                       "netns_pid": bed.net.netns_pid("gw")})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = bed.controller_rest("/qiot/state")
            requests = state["key_requests"]
            if requests and requests[-1]["status"] not in ("in progress",):
                break
            time.sleep(0.25)
        discovery = state["discovery"]
        first_seen = min((r["first_seen"] for r in state["devices"].values()), default=None)
        per_device = sorted(r["provisioning_ms"] for r in state["devices"].values() if r["provisioning_ms"] is not None)
        return {
            "devices": devices, "network_start_s": bed.facts.get("network_start_s"),
            "provisioned": len(per_device),
            # From the first device seen (the stations announce themselves while the network is
            # still being built, before discovery's window opens) to the last one provisioned.
            "discover_provision_all_s": discovery["completed_at"] - first_seen if discovery["completed_at"] else None,
            "found": len(state["devices"]), "timed_out": discovery["timed_out_at"] is not None,
            "per_device_ms_mean": statistics.fmean(per_device) if per_device else None,
            "per_device_ms_p95": per_device[int(0.95 * (len(per_device) - 1))] if per_device else None,
            "per_device_ms_max": per_device[-1] if per_device else None,
            "key_requests": len(requests), "keys_requested": state["counters"]["keys_requested"],
            "keys_received": state["counters"]["keys_received"],
            "key_request_ms": requests[-1]["duration_ms"] if requests else None,
            "packet_ins": state["counters"]["packet_in_access"],
        }
    finally:
        bed.down()
        bed.state.forget()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="3,50,200", help="comma-separated device counts")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    print(f"{'N':>4} {'net start s':>11} {'prov.':>5} {'all s':>7} {'dev mean ms':>11} {'p95 ms':>7} "
          f"{'max ms':>7} {'key req':>7} {'keys':>9} {'req ms':>7} {'pkt-in':>6}")
    for n in [int(x) for x in args.devices.split(",")]:
        for _ in range(args.repeat):
            r = measure(n, args.timeout_s)
            fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
            print(f"{n:>4} {fmt(r['network_start_s'], '11.2f')} {r['provisioned']:>5} "
                  f"{fmt(r['discover_provision_all_s'], '7.3f')} {fmt(r['per_device_ms_mean'], '11.2f')} "
                  f"{fmt(r['per_device_ms_p95'], '7.2f')} {fmt(r['per_device_ms_max'], '7.2f')} "
                  f"{r['key_requests']:>7} {r['keys_received']:>4}/{r['keys_requested']:<4} "
                  f"{fmt(r['key_request_ms'], '7.1f')} {r['packet_ins']:>6}"
                  f"{'  (discovery timed out: %d found)' % r['found'] if r['timed_out'] else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
