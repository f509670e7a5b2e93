"""The emulated network of a run: Open vSwitch, the Fig. 1 topology in Mininet, and its shaping.

This is the network edge of qiot: the only module (with ``topologies/`` and ``harness.shaping``)
that imports Mininet. It makes sure ovs-vswitchd runs, builds the topology with the switch
datapath the kernel supports, connects the switches to the run's controller, fixes what the
userspace datapath needs (checksum offload off, or TCP hangs: platform-notes), turns the gateway
into a router, and records every namespace, bridge and interface it makes for ``qiot clean``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial

# Importing Mininet's logging module installs its MininetLogger as the class of every logger made
# afterwards (each library logger then gets its own handler and level and its records never reach
# the root logger, nor pytest's caplog): import it first, here, and restore the standard class.
import mininet.log  # noqa: F401  (imported for its side effect, undone below)

from harness.capabilities import Capabilities
from harness.state import BRIDGE_OWNER_KEY, BRIDGE_RUN_KEY, RunState, interface_alias, owner_tag

logging.setLoggerClass(logging.Logger)

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


class NetworkError(RuntimeError):
    """The network could not be built or did not come up."""


def ovs_running() -> bool:
    return subprocess.run(["ovs-vsctl", "--timeout=3", "show"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def ensure_ovs(timeout_s: float = 30.0) -> bool:
    """Start ovs-vswitchd/ovsdb-server if they are not running; return True if this call started them."""
    if ovs_running():
        return False
    try:
        subprocess.run([OVS_CTL, "start", "--system-id=random"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout_s)
    except FileNotFoundError:
        raise NetworkError("Open vSwitch is not installed (run install.sh)") from None
    except subprocess.TimeoutExpired:
        raise NetworkError(f"Open vSwitch did not start within {timeout_s:.0f} s") from None
    if not ovs_running():
        raise NetworkError("Open vSwitch did not start (see /var/log/openvswitch/ovs-vswitchd.log)")
    return True


def _run(argv: list[str]) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@dataclass
class QiotNetwork:
    """A started Mininet network (the site's infrastructure) and the stations of its wireless cell."""

    net: object
    stations: dict = field(default_factory=dict)   # name -> harness.stations.Station
    access_switch: str = ""
    run_id: str = ""
    timings: dict = field(default_factory=dict)    # how long each phase of attaching the stations took
    sysctls_raised: dict = field(default_factory=dict)  # host settings the stations needed: {key: [before, after]}

    def host(self, name: str):
        """A Mininet host (dc, alice, gw) or a station (device, rogue): both have ``cmd``/``popen``."""
        return self.stations[name] if name in self.stations else self.net.get(name)

    def netns_pid(self, name: str) -> int:
        """PID of the shell holding Mininet host ``name``'s namespace (for mnexec -a); stations have none."""
        if name in self.stations:
            raise NetworkError(f"{name} is a station (a bare namespace): it runs no daemons")
        return self.net.get(name).pid

    def namespaces(self) -> dict[str, str]:
        """Every host's network-namespace path (what the fleet and tests enter)."""
        paths = {h.name: f"/proc/{h.pid}/ns/net" for h in self.net.hosts}
        paths.update({name: s.namespace_path for name, s in self.stations.items()})
        return paths

    def stop(self) -> None:
        from harness import stations

        stations.detach(list(self.stations.values()), self.access_switch, self.run_id)
        self.stations = {}
        self.net.stop()


def route_mininet_log(log_path) -> None:
    """Send Mininet's own log to the run's log folder instead of the user's terminal.

    Mininet reports harmless tc warnings (e.g. HTB "quantum is big" at 1 Gbit/s) as errors; the
    checks that matter (shaping really shapes, switches really connect) are qiot's own.
    """
    import logging

    from mininet.log import lg

    for handler in list(lg.handlers):
        lg.removeHandler(handler)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    lg.addHandler(handler)
    lg.setLevel(logging.INFO)


def build(topo, caps: Capabilities, controller_port: int, state: RunState, cell=None,
          connect_timeout_s: float = 30.0) -> QiotNetwork:
    """Build and start ``topo`` and attach ``cell``'s stations; return once every switch is connected.

    ``cell``: (stations, access switch, gateway address, wireless shape), see :mod:`harness.stations`.
    """
    from harness import stations as cells

    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController
    from mininet.link import TCLink

    switch = partial(OVSSwitch, datapath=caps.switch_datapath, protocols="OpenFlow13", batch=True,
                     failMode="secure")
    controller = partial(RemoteController, ip="127.0.0.1", port=controller_port)
    net = Mininet(topo=topo, switch=switch, controller=controller, link=TCLink,
                  autoSetMacs=False, build=False, waitConnected=False)
    try:
        net.build()
        for host in net.hosts:
            state.record_netns(host.name, host.pid)
        for sw in net.switches:
            state.record_bridge(sw.name)
            for intf in sw.intfList():
                if intf.name != "lo":
                    state.record_interface(intf.name)
        net.start()
        # Tag what lives in the root namespace with the run and its owner, so `qiot clean` can tell a
        # live run's switches and ports from leftovers (one `ip -batch` for every port).
        alias = interface_alias(state.run_id)
        ports = [intf.name for sw in net.switches for intf in sw.intfList() if intf.name != "lo"]
        subprocess.run(["ip", "-batch", "-"], input="".join(f"link set dev {p} alias {alias}\n" for p in ports),
                       text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        for sw in net.switches:
            _run(["ovs-vsctl", "set", "bridge", sw.name, f"external_ids:{BRIDGE_RUN_KEY}={state.run_id}",
                  f"external_ids:{BRIDGE_OWNER_KEY}=\"{owner_tag()}\""])
        for host in net.hosts:
            for intf in host.intfList():
                # Userspace OVS does not fill in checksums the kernel left to the NIC: TCP SYNs go
                # unanswered until tx offload is off (platform-notes). Harmless with the kernel datapath.
                host.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
        gw = net.get("gw")
        gw.cmd("sysctl -qw net.ipv4.ip_forward=1")
        result = QiotNetwork(net)
        # Connected first: the stations' announcements (gratuitous ARPs) must reach the controller.
        _wait_connected(net, connect_timeout_s)
        if cell is not None:
            planned, access_switch, gateway_ip, shape = cell
            result.access_switch, result.run_id = access_switch, state.run_id
            result.stations = {s.name: s for s in planned}
            result.sysctls_raised = cells.size_neighbour_table(len(planned))
            result.timings = cells.attach(planned, access_switch, gateway_ip, shape, netem=caps.shaping == "netem",
                                          state=state)
    except BaseException:
        if "result" in locals():
            result.stop()
        else:
            net.stop()
        raise
    return result


def _wait_connected(net, timeout_s: float) -> None:
    """Poll OVSDB until every switch reports its controller connection (cheaper than waitConnected)."""
    names = [sw.name for sw in net.switches]
    deadline = time.monotonic() + timeout_s
    pending = names
    while time.monotonic() < deadline:
        pending = [n for n in names if not _bridge_connected(n)]
        if not pending:
            return
        time.sleep(0.1)
    raise NetworkError(f"switches {', '.join(pending)} did not connect to the controller within {timeout_s:.0f} s")


def _bridge_connected(bridge: str) -> bool:
    out = subprocess.run(["ovs-vsctl", "--timeout=3", "get", "bridge", bridge, "controller"],
                         capture_output=True, text=True).stdout.strip().strip("[]")
    if not out:
        return False
    for uuid in out.split(","):
        status = subprocess.run(["ovs-vsctl", "--timeout=3", "get", "controller", uuid.strip(), "is_connected"],
                                capture_output=True, text=True).stdout.strip()
        if status != "true":
            return False
    return True
