"""Real-network tier: the Fig. 1 testbed comes up, devices reach the broker, shaping really shapes.

One testbed (bcn, 3 devices) with a deliberately strong wireless shape is shared by the tests of this
module: 10 ms one-way delay and 5 % loss per direction. The gateway<->alice path is unshaped, so it
serves as the baseline the shaped path is compared with.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import scenario
from harness.state import RunState
from harness.stations import INHERIT_SYSCTL, STATION_DEFAULTS, cells_netns, loss_table
from harness.testbed import Testbed
from topologies.fig1 import DC_IP, GW_WIRELESS_IP, device_name

DELAY_MS, LOSS_PCT, DEVICES = 10.0, 5.0, 3
ROOT_BEFORE: dict[str, str] = {}


def root_defaults() -> dict[str, str]:
    return {key: Path("/proc/sys", key).read_text() for key in (INHERIT_SYSCTL, *STATION_DEFAULTS)}


@pytest.fixture(scope="module")
def bed(network_ok, tmp_path_factory):
    shaped = scenario.load("bcn").with_overrides({
        "devices.count": DEVICES, "wireless.delay_ms": DELAY_MS, "wireless.jitter_ms": 0.0,
        "wireless.loss_pct": LOSS_PCT})
    run_dir = tmp_path_factory.mktemp("testbed")
    ROOT_BEFORE.update(root_defaults())
    with Testbed.for_scenario(shaped, run_dir, RunState("pytest-testbed")) as testbed:
        yield testbed
    testbed.state.forget()


def ping(host, target, count, interval):
    out = host.cmd(f"ping -n -q -c {count} -i {interval} -W 1 {target}")
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    match = re.search(r"= [\d.]+/([\d.]+)/", out)
    return sent, received, float(match.group(1)) if match else None


def test_every_device_publishes_to_the_broker_over_tcp(bed):
    """MQTT over TCP, not ping: on the userspace datapath TCP can hang while ICMP works."""
    mosquitto_pub = shutil.which("mosquitto_pub")
    assert mosquitto_pub, "mosquitto-clients not installed"
    for index in range(1, DEVICES + 1):
        host = bed.net.host(device_name(index))
        # QoS 1 with retries: the link loses 5 % per direction, which TCP hides but may slow down.
        result = host.popen([mosquitto_pub, "-h", DC_IP, "-t", f"test/{index}", "-m", "hello", "-q", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = result.communicate(timeout=30)
        assert result.returncode == 0, f"{device_name(index)} could not publish: {out!r}"


def test_shaped_wireless_link_adds_the_configured_delay(bed):
    alice, device = bed.net.host("alice"), bed.net.host("d1")
    _, _, baseline_ms = ping(alice, DC_IP, 20, 0.05)
    sent, received, shaped_ms = ping(device, DC_IP, 60, 0.05)
    assert received > 0.7 * sent
    added = shaped_ms - baseline_ms
    # Delay is applied once per direction, so a round trip gains twice the one-way delay.
    assert 2 * DELAY_MS - 2.0 <= added <= 2 * DELAY_MS + 2.0, f"added RTT {added:.2f} ms"


def test_shaped_wireless_link_loses_the_configured_fraction(bed):
    device = bed.net.host("d2")
    sent, received, _ = ping(device, GW_WIRELESS_IP, 1000, 0.005)
    loss = 1 - received / sent
    # A ping is lost if the request or the reply is: 1 - 0.95^2 = 9.75 %; 1000 pings give sd ~0.94 %.
    expected = 1 - (1 - LOSS_PCT / 100) ** 2
    assert abs(loss - expected) < 0.04, f"measured round-trip loss {loss:.3%}, expected {expected:.3%}"


def test_metadata_names_the_mechanism_really_installed(bed):
    """What metadata says is checked against the kernel's state, not against the probe it came from."""
    mechanism = bed.mechanisms()["shaping"]["mechanism"]
    gw, device = bed.net.host("gw"), bed.net.host("d1")
    qdiscs = device.cmd(f"tc qdisc show dev {device.defaultIntf().name}")
    rules = gw.cmd("iptables -w -t mangle -S")
    if mechanism == "netem":
        assert "netem" in qdiscs and "NFQUEUE" not in rules
    else:
        assert mechanism == "nfqueue" and "netem" not in qdiscs and "tbf" in qdiscs
        assert rules.count("NFQUEUE") == 2 and "statistic" in rules
        downlink = subprocess.run(["ip", "netns", "exec", cells_netns(bed.state.run_id), "nft", "list", "table",
                                   "bridge", loss_table(bed.state.run_id)], capture_output=True, text=True).stdout
        assert 'oifname "qs*"' in downlink and "drop" in downlink
        assert (bed.run_dir / "logs" / "shaper.log").read_text().startswith("READY queues=1,2")
    assert bed.caps.switch_datapath in bed.mechanisms()["switch"]


def test_stations_are_ipv4_hosts_that_announce_themselves_and_the_root_is_left_as_it_was(bed):
    """The stations' settings come from the root's defaults while they are made (stations.py says
    why): each station has them, and the root's own defaults are back as they were."""
    for index in range(1, DEVICES + 1):
        station = bed.net.host(device_name(index))
        intf = station.defaultIntf().name
        assert station.cmd(f"cat /proc/sys/net/ipv4/conf/{intf}/arp_notify").strip() == "1"
        assert "addrgenmode none" in station.cmd(f"ip -d link show dev {intf}")
        assert "inet6" not in station.cmd(f"ip -o addr show dev {intf}")  # no link-local: no IPv6 chatter
    assert root_defaults() == ROOT_BEFORE


def test_the_root_namespace_holds_only_the_cells_uplinks(bed):
    """Stations' links and the cells' bridges live in the cells' namespace (stations.py says why)."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not re.search(r"\d+: (qs\d|qc\d|qu\d)", links)
    cell_links = subprocess.run(["ip", "-n", cells_netns(bed.state.run_id), "-o", "link", "show"],
                                capture_output=True, text=True).stdout
    assert len(re.findall(r"\d+: qs\d+p\d+@", cell_links)) == DEVICES
