"""The stations of the wireless cell (FiPy devices, test rogues) as bare network namespaces.

Why not Mininet hosts: a Mininet host is a shell process configured over a dozen shell round trips,
so a thousand devices cost minutes of bring-up and a thousand idle shells. A station is a named
network namespace (``ip netns``) with one veth pair to the access switch, made in batches: one
``ip -batch`` for every namespace and veth, one ``ovs-vsctl`` transaction for every switch port, one
``tc -batch`` for the switch side, and one exec per station (run a few at a time) for what must
happen inside it (addresses, route, checksum offload off, rate, loss). Each station keeps its own
MAC and IP, as the provisioning controller sees them, its own sockets (the fleet enters its namespace
by path), and its own shaped link. ``Station.cmd``/``popen`` serve tests and fault injection as a
Mininet host's would.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from harness.links import WirelessShape
from harness.state import RunState, interface_alias

NETNS_PREFIX = "qiot-"
#: Stations configured at once (each exec mostly waits on forks; 2 cores).
PARALLEL_EXECS = 8


class StationError(RuntimeError):
    """A station could not be made or configured; the message names it."""


@dataclass(frozen=True)
class Intf:
    """A station's interface, as much of Mininet's ``Intf`` as qiot uses."""

    name: str
    mac: str

    def MAC(self) -> str:  # noqa: N802 (Mininet's name)
        return self.mac

    def __str__(self) -> str:  # as Mininet's: the interface's name
        return self.name


@dataclass(frozen=True)
class Station:
    """One station: its namespace, address and the two ends of its link."""

    name: str
    netns: str
    ip: str
    prefix: int
    mac: str
    port: str      # the switch-side end of the veth, in the root namespace
    ofport: int

    @property
    def intf(self) -> str:
        return f"{self.name}-eth0"

    @property
    def namespace_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def defaultIntf(self) -> Intf:  # noqa: N802 (Mininet's name)
        return Intf(self.intf, self.mac)

    def cmd(self, command: str, timeout_s: float = 120.0) -> str:
        """Run a shell command inside the station; its output (stdout and stderr)."""
        done = subprocess.run(["ip", "netns", "exec", self.netns, "sh", "-c", command], capture_output=True,
                              text=True, timeout=timeout_s)
        return done.stdout + done.stderr

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kwargs)


def run_tag(run_id: str) -> str:
    """Eight characters naming the run in its stations' namespace names (``qiot-<tag>-d1``)."""
    return hashlib.sha1(run_id.encode()).hexdigest()[:8]


def plan(run_id: str, access_switch: str, first_ofport: int, hosts: list[tuple[str, str, str, int]]) -> list[Station]:
    """The stations of ``hosts`` ((name, ip, mac, prefix) in port order) on ``access_switch``."""
    tag = run_tag(run_id)
    return [Station(name, f"{NETNS_PREFIX}{tag}-{name}", ip, prefix, mac, f"{access_switch}-eth{port}", port)
            for port, (name, ip, mac, prefix) in enumerate(hosts, start=first_ofport)]


def _batch(tool: list[str], lines: list[str], what: str) -> None:
    if not lines:
        return
    done = subprocess.run(tool + ["-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise StationError(f"{what}: {' '.join(tool)} -batch failed: {done.stderr.strip().splitlines()[-1:]}")


def attach(stations: list[Station], access_switch: str, gateway_ip: str, shape: WirelessShape, netem: bool,
           fallback_loss: bool, state: RunState) -> None:
    """Make every station and plug it into ``access_switch``; raise :class:`StationError` on any failure.

    ``netem``: the kernel has netem, so delay, jitter and loss go on both ends of each link (as Mininet's
    ``TCLink`` would); otherwise only the rate, plus (``fallback_loss``) the downlink loss rule in each
    station (:mod:`harness.shaping` does the rest at the gateway).
    """
    alias = interface_alias(state.run_id)
    for station in stations:
        state.record_named_netns(station.netns)
        state.record_interface(station.port)
    root = []
    for s in stations:
        root += [f"netns add {s.netns}", f"link add {s.port} type veth peer name {s.intf} netns {s.netns}",
                 f"link set dev {s.port} alias {alias}", f"link set dev {s.port} up"]
    _batch(["ip"], root, "stations")
    ports = []
    for s in stations:
        ports += ["--", "add-port", access_switch, s.port, "--", "set", "interface", s.port, f"ofport_request={s.ofport}"]
    done = subprocess.run(["ovs-vsctl", "--timeout=60", *ports[1:]], capture_output=True, text=True)
    if done.returncode != 0:
        raise StationError(f"stations: adding {len(stations)} ports to {access_switch} failed: {done.stderr.strip()}")
    qdisc = _qdisc_lines(shape, netem)
    _batch(["tc"], [line.format(dev=s.port) for s in stations for line in qdisc], "switch-side shaping")
    with ThreadPoolExecutor(PARALLEL_EXECS) as pool:
        failures = [f for f in pool.map(lambda s: _configure(s, gateway_ip, qdisc, shape, fallback_loss), stations) if f]
    if failures:
        raise StationError(f"{len(failures)} station(s) could not be configured; first: {failures[0]}")


def _qdisc_lines(shape: WirelessShape, netem: bool) -> list[str]:
    """``tc`` lines for one end of a station's link (``{dev}`` to fill in): rate, and netem if present."""
    rate = min(shape.rate_mbit, 1000.0)  # the HTB Mininet would use accepts at most 1000 Mbit/s
    lines = ["qdisc add dev {dev} root handle 5:0 htb default 1",
             f"class add dev {{dev}} parent 5:0 classid 5:1 htb rate {rate}Mbit burst 15k"]
    if netem and (shape.delay_ms or shape.jitter_ms or shape.loss_pct):
        lines.append(f"qdisc add dev {{dev}} parent 5:1 handle 10: netem delay {shape.delay_ms}ms "
                     f"{shape.jitter_ms}ms loss {shape.loss_pct}%")
    return lines


def _configure(s: Station, gateway_ip: str, qdisc: list[str], shape: WirelessShape, fallback_loss: bool) -> str:
    """Inside one station: address, route, checksum offload off, the station side of the shaping."""
    ip_lines = ["link set lo up", f"link set {s.intf} address {s.mac}", f"addr add {s.ip}/{s.prefix} dev {s.intf}",
                f"link set {s.intf} up", f"route add default via {gateway_ip}"]
    tc_lines = [line.format(dev=s.intf) for line in qdisc]
    # Userspace OVS does not fill in checksums the kernel left to the NIC: TCP SYNs go unanswered
    # until tx offload is off (platform-notes). Harmless with the kernel datapath.
    script = [f"printf '%s\\n' {' '.join(shlex.quote(x) for x in ip_lines)} | ip -batch - || exit 1",
              f"ethtool -K {s.intf} tx off >/dev/null 2>&1",
              f"printf '%s\\n' {' '.join(shlex.quote(x) for x in tc_lines)} | tc -batch - || exit 1"]
    if fallback_loss and shape.loss_pct > 0:
        script.append(f"iptables -w -t mangle -A PREROUTING -i {s.intf} -m statistic --mode random "
                      f"--probability {shape.loss_pct / 100.0:.6f} -j DROP || exit 1")
    done = subprocess.run(["ip", "netns", "exec", s.netns, "sh", "-c", "\n".join(script)], capture_output=True,
                          text=True)
    return "" if done.returncode == 0 else f"{s.name}: {(done.stderr or done.stdout).strip()[-300:]}"


def detach(stations: list[Station], access_switch: str) -> None:
    """Remove the stations: their switch ports (one transaction) and namespaces (one batch)."""
    if not stations:
        return
    ports = []
    for s in stations:
        ports += ["--", "--if-exists", "del-port", access_switch, s.port]
    subprocess.run(["ovs-vsctl", "--timeout=60", *ports[1:]], capture_output=True)
    # Deleting the namespace destroys the veth pair with it.
    subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {s.netns}\n" for s in stations),
                   capture_output=True, text=True)
