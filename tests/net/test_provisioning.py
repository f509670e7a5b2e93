"""Real-network tier for the provisioning controller (issue 3): discovery, provisioning, keys, rogues,
restart.

One testbed (bcn, 3 devices, unshaped wireless) plus one rogue host ``r1`` on the access switch,
whose MAC is not in the inventory. A small key manager runs inside the data-centre host's namespace
(``POST /keys``: ``{"devices": [...]}`` -> ``{"keys": {...}}``, recording every request), and the
controller is pointed at it over its REST endpoint once the network exists, sending from the
gateway's namespace, as the run will do with the gateway relay.
"""

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import scenario
from harness.netns import enter_netns
from harness.state import RunState
from harness.testbed import Testbed
from topologies import fig1
from topologies.fig1 import DC_IP, GW_WIRELESS_IP, device_name, rogue_name

DEVICES = 3
KEY_MANAGER_PORT = 9780


class KeyManagerStub:
    """A real HTTP key manager in a host's namespace; hands out ``key-<device>-<n>`` ids."""

    def __init__(self, netns_pid: int, address: tuple[str, int]) -> None:
        self.requests: list[dict] = []
        self.clients: list[str] = []
        ready = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                stub.clients.append(self.client_address[0])
                answer = json.dumps({"keys": {d: f"key-{d}-{len(stub.requests)}" for d in body["devices"]}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_):
                pass

        def serve() -> None:
            enter_netns(netns_pid)
            self.server = ThreadingHTTPServer(address, Handler)
            ready.set()
            self.server.serve_forever()

        threading.Thread(target=serve, daemon=True).start()
        assert ready.wait(5), "key manager stub did not start"


class ProvisioningTestbed(Testbed):
    """The run's testbed with a rogue host on the access switch and a shorter discovery timeout."""

    discovery_timeout_s = 30.0

    def controller_daemon(self):
        daemon = super().controller_daemon()
        daemon.argv = list(daemon.argv) + ["--discovery-timeout-s", str(self.discovery_timeout_s)]
        return daemon

    def controller(self):
        return self.daemons["controller"]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class PhantomTestbed(ProvisioningTestbed):
    """An inventory with one device more than the network has, and a short discovery timeout."""

    rogue_hosts = 0
    discovery_timeout_s = 3.0
    phantom = {"device_id": "d99", "mac": "02:51:0a:00:00:63", "ip": "10.1.0.108", "credentials": "pki/sae/d99.crt"}

    def write_inventory(self):
        path = super().write_inventory()
        inventory = json.loads(path.read_text())
        inventory["devices"].append(self.phantom)
        path.write_text(json.dumps(inventory))
        return path


def quiet_scenario():
    return scenario.load("bcn").with_overrides({
        "devices.count": DEVICES, "wireless.delay_ms": 0.0, "wireless.jitter_ms": 0.0, "wireless.loss_pct": 0.0})


def test_discovery_timeout_requests_the_found_devices_keys_and_reports_the_missing(network_ok, tmp_path):
    """Runs first, on its own testbed, torn down before the shared one below comes up."""
    with PhantomTestbed.for_scenario(quiet_scenario(), tmp_path, RunState("pytest-provisioning-timeout")) as phantom:
        stub = KeyManagerStub(phantom.net.netns_pid("dc"), (DC_IP, KEY_MANAGER_PORT))
        try:
            phantom.controller_rest("/qiot/key-manager", {"url": f"http://{DC_IP}:{KEY_MANAGER_PORT}/keys",
                                               "netns_pid": phantom.net.netns_pid("gw")})
            keys = wait_for(lambda: (k := phantom.controller_rest("/qiot/keys"))["requests"] and
                            k["requests"][-1]["status"] == "completed" and k, 20, "the key request after the timeout")
            request = keys["requests"][0]
            assert sorted(request["devices"]) == [device_name(i) for i in range(1, DEVICES + 1)]
            assert request["discovery_missing"] == ["d99"] and len(keys["requests"]) == 1
            assert [sorted(r["devices"]) for r in stub.requests] == [sorted(request["devices"])]
            discovery = phantom.controller_rest("/qiot/devices")["discovery"]
            assert discovery["timed_out_at"] is not None and discovery["completed_at"] is None
            assert discovery["timed_out_at"] - discovery["started_at"] >= PhantomTestbed.discovery_timeout_s
        finally:
            stub.server.shutdown()
            stub.server.server_close()
    phantom.state.forget()


@pytest.fixture(scope="module")
def bed(network_ok, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("provisioning")
    with ProvisioningTestbed.for_scenario(quiet_scenario(), run_dir, RunState("pytest-provisioning"),
                                          rogue_hosts=1) as testbed:
        testbed.key_manager = KeyManagerStub(testbed.net.netns_pid("dc"), (DC_IP, KEY_MANAGER_PORT))
        testbed.controller_rest("/qiot/key-manager", {"url": f"http://{DC_IP}:{KEY_MANAGER_PORT}/keys",
                                           "netns_pid": testbed.net.netns_pid("gw")})
        yield testbed
    testbed.state.forget()


def test_every_device_is_discovered_provisioned_and_registered(bed):
    """No device sends anything: the controller's ARP probes for inventory IPs discover them."""
    view = wait_for(lambda: (v := bed.controller_rest("/qiot/devices"))["provisioned"] == sorted(
        device_name(i) for i in range(1, DEVICES + 1)) and v, 20, "all devices provisioned")
    assert view["missing"] == [] and view["discovery"]["completed_at"] is not None
    for index in range(1, DEVICES + 1):
        record = view["devices"][device_name(index)]
        assert record["mac"] == fig1.device_mac(index)
        # Devices are linked to qap4 after the gateway, in order: port 1 is the gateway's.
        assert record["port"] == index + 1
        assert record["registered_at"] is not None and 0 <= record["provisioning_ms"] < 5000
    state = bed.controller_rest("/qiot/state")
    assert state["gateway"]["port"] == 1
    roles = {s["name"]: s["role"] for s in state["switches"].values()}
    assert roles == {"qdc1": "infra", "qox2": "infra", "qed3": "infra", "qap4": "access"}
    assert state["counters"]["registrations"] == DEVICES


def test_one_key_is_requested_per_device_and_each_device_gets_its_key_id(bed):
    keys = wait_for(lambda: (k := bed.controller_rest("/qiot/keys"))["requests"] and
                    k["requests"][-1]["status"] == "completed" and k, 30, "the key request to complete")
    assert len(keys["requests"]) == 1
    assert sorted(keys["requests"][0]["devices"]) == [device_name(i) for i in range(1, DEVICES + 1)]
    assert bed.key_manager.requests == [{"devices": keys["requests"][0]["devices"]}]
    # Sent from the gateway's namespace: the key manager sees the gateway's optical address.
    assert bed.key_manager.clients == [fig1.GW_OPTICAL_IP]
    assert keys["key_ids"] == {device_name(i): f"key-{device_name(i)}-1" for i in range(1, DEVICES + 1)}
    counters = bed.controller_rest("/qiot/counters")
    assert counters["keys_requested"] == DEVICES and counters["keys_received"] == DEVICES


def test_devices_reach_the_broker_over_tcp(bed):
    mosquitto_pub = shutil.which("mosquitto_pub")
    for index in range(1, DEVICES + 1):
        host = bed.net.host(device_name(index))
        result = host.popen([mosquitto_pub, "-h", DC_IP, "-t", f"test/{index}", "-m", "hi", "-q", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = result.communicate(timeout=20)
        assert result.returncode == 0, f"{device_name(index)} could not publish: {out!r}"


def test_rogue_reaches_neither_broker_nor_key_manager(bed):
    rogue, gw = bed.net.host(rogue_name(1)), bed.net.host("gw")
    # Give the rogue the gateway's MAC statically, so what stops it is the drop flow, not failed ARP.
    rogue.cmd(f"ip neigh replace {GW_WIRELESS_IP} lladdr {gw.intf('gw-eth1').MAC()} dev {rogue.defaultIntf()}")
    requests_before = len(bed.key_manager.requests)
    # TCP would retry its SYN for two minutes: 5 s without a connection is the answer.
    out = rogue.cmd(f"timeout 5 mosquitto_pub -h {DC_IP} -t rogue -m x -q 1 2>&1; echo rc=$?")
    assert "rc=0" not in out
    out = rogue.cmd(f"curl -s -m 3 -X POST -d '{{\"devices\":[\"r1\"]}}' http://{DC_IP}:{KEY_MANAGER_PORT}/keys; "
                    "echo rc=$?")
    assert "rc=0" not in out
    assert len(bed.key_manager.requests) == requests_before
    ping = rogue.cmd(f"ping -n -q -c 3 -i 0.2 -W 1 {GW_WIRELESS_IP}")
    assert " 0 received" in ping
    rogues = bed.controller_rest("/qiot/rogues")
    assert list(rogues) == [fig1.rogue_mac(1)]
    assert rogues[fig1.rogue_mac(1)]["port"] == DEVICES + 2 and rogues[fig1.rogue_mac(1)]["packet_ins"] >= 1
    assert bed.controller_rest("/qiot/counters")["rogue_macs"] == 1
    flows = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "qap4"], capture_output=True,
                           text=True).stdout
    drop = [line for line in flows.splitlines() if fig1.rogue_mac(1) in line]
    assert drop and all("actions=drop" in line for line in drop), flows


def test_controller_restart_keeps_device_traffic_and_registrations(bed):
    before = bed.controller_rest("/qiot/state")
    device = bed.net.host("d1")
    # 0.05 s apart over ~8 s; the controller is away for ~3 s of it.
    pinger = device.popen(["ping", "-n", "-i", "0.05", "-c", "160", "-W", "1", DC_IP],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    controller = bed.controller()
    controller.stop()
    # SIGTERM leaves the final northbound view next to the registry (what the run keeps).
    snapshot = json.loads((bed.run_dir / "controller" / "snapshot.json").read_text())
    assert sorted(snapshot["devices"]) == [device_name(i) for i in range(1, DEVICES + 1)]
    time.sleep(2.0)
    controller.start(bed.state)
    out, _ = pinger.communicate(timeout=30)
    wait_for(lambda: all(s["connected"] for s in bed.controller_rest("/qiot/switches").values()), 20, "switches to reconnect")
    received = int(out.split(" received")[0].rsplit(" ", 1)[1])
    # Flows are permanent on the access switch and active learned flows do not idle out: nothing is lost
    # (allow 2 for scheduling noise on a shared machine).
    assert received >= 158, out
    after = bed.controller_rest("/qiot/state")
    assert after["counters"]["controller_starts"] == before["counters"]["controller_starts"] + 1
    assert after["counters"]["registrations"] == before["counters"]["registrations"] == DEVICES
    for device_id, record in before["devices"].items():
        assert after["devices"][device_id]["provisioned_at"] == record["provisioned_at"]
        assert after["devices"][device_id]["key_id"] == record["key_id"]
    assert len(after["key_requests"]) == 1 and after["gateway"] == before["gateway"]
    # The restarted controller still provisions nothing new and still blocks the rogue.
    rogue = bed.net.host(rogue_name(1))
    assert " 0 received" in rogue.cmd(f"ping -n -q -c 2 -i 0.2 -W 1 {GW_WIRELESS_IP}")


def test_a_station_using_a_device_mac_on_another_port_is_dropped(bed):
    """MAC spoofing: the rogue takes d1's MAC; d1 keeps working, the impostor is dropped at its port."""
    rogue, d1 = bed.net.host(rogue_name(1)), bed.net.host("d1")
    intf = rogue.defaultIntf()
    original = intf.MAC()
    rogue.cmd(f"ip link set dev {intf} down; ip link set dev {intf} address {fig1.device_mac(1)}; "
              f"ip link set dev {intf} up")
    try:
        assert " 0 received" in rogue.cmd(f"ping -n -q -c 3 -i 0.2 -W 1 {GW_WIRELESS_IP}")
        record = wait_for(lambda: bed.controller_rest("/qiot/rogues").get(fig1.device_mac(1)), 5, "the impostor to be listed")
        assert record["reason"] == "uses the MAC of d1" and record["port"] == DEVICES + 2
        assert bed.controller_rest("/qiot/devices")["devices"]["d1"]["port"] == 2
        assert " 0% packet loss" in d1.cmd(f"ping -n -q -c 3 -i 0.2 -W 1 {DC_IP}")
    finally:
        rogue.cmd(f"ip link set dev {intf} down; ip link set dev {intf} address {original}; ip link set dev {intf} up")
