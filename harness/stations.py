"""The stations of the wireless side (FiPy devices, test rogues): bare network namespaces, in cells.

Why not Mininet hosts: a Mininet host is a shell process configured over a dozen shell round trips,
so a thousand devices cost minutes of bring-up and a thousand idle shells. A station is a named
network namespace (``ip netns``) with one veth pair to its cell, made in batches (one ``ip -batch`` for
every namespace and link, one ``tc -batch`` and one ``nft`` file for the root side, an ``ovs-vsctl``
transaction per few hundred switch ports) and configured with two processes of its own (``ip -n``,
``tc -n``), a few at a time. Each station keeps its own MAC and IP, as the provisioning controller
sees them, its own sockets (the fleet enters its namespace by path), and its own shaped link.
``Station.cmd``/``popen`` serve tests and fault injection as a Mininet host's would.

Cells: Open vSwitch's userspace datapath costs every packet time per port of the switch (1,000 ports
added 11 ms to a round trip here; ``experiments/emulator.toml``). So the stations are grouped into at
most ``max_ports`` cells, as the stations of access points: each cell is a Linux bridge with one port
on the access switch, its station ports isolated from each other (no station-to-station traffic, as
an access point's client isolation). Up to ``max_ports`` stations each have a cell of their own, so
the controller sees every station on its own port; beyond, it sees a station's MAC on its cell's
port: a MAC used on another cell's port is still caught, one inside the same cell is not.

Shaping of a station's link: the rate (HTB) on both ends; with netem, delay, jitter and loss on both
ends too; without netem, the downlink loss by one nftables rule on the cells' bridges (frames the
bridges forward to station ports; :mod:`harness.shaping` does delay and uplink loss at the gateway).
"""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.links import WirelessShape
from harness.state import RunState, interface_alias

NETNS_PREFIX = "qiot-"
#: Stations configured at once (each mostly waits on two short processes; 2 cores).
PARALLEL_EXECS = 8
#: Switch ports added per ovs-vsctl transaction (measured: 5,000 in one took ovs-vsctl 17 s of CPU).
PORTS_PER_TRANSACTION = 250


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
    """One station: its namespace, address, the root-side end of its link, and its cell."""

    name: str
    netns: str
    ip: str
    prefix: int
    mac: str
    cell: int        # index of its cell (a bridge qc<cell>)
    slot: int        # its place in the cell
    ofport: int      # its cell's port on the access switch

    @property
    def intf(self) -> str:
        return f"{self.name}-eth0"

    @property
    def port(self) -> str:
        """The root-side end of the station's veth (a port of its cell's bridge)."""
        return f"qs{self.cell}p{self.slot}"

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
    """Eight characters naming the run in what it makes on the root side (``qiot-<tag>-d1``)."""
    return hashlib.sha1(run_id.encode()).hexdigest()[:8]


def max_access_ports() -> int:
    """How many ports the access switch gives the stations (``experiments/emulator.toml``)."""
    from harness.emulator import access_switch_settings

    return access_switch_settings().max_ports


def plan(run_id: str, first_ofport: int, hosts: list[tuple[str, str, str, int]],
         max_ports: int | None = None) -> list[Station]:
    """The stations of ``hosts`` ((name, ip, mac, prefix) in port order) in cells of equal size, at most
    ``max_ports`` cells, each on its own access-switch port from ``first_ofport`` on."""
    tag = run_tag(run_id)
    size = max(1, -(-len(hosts) // (max_ports or max_access_ports())))
    return [Station(name, f"{NETNS_PREFIX}{tag}-{name}", ip, prefix, mac, i // size, i % size,
                    first_ofport + i // size)
            for i, (name, ip, mac, prefix) in enumerate(hosts)]


def cells(stations: list[Station]) -> dict[int, int]:
    """The cells of ``stations``: index -> its access-switch port."""
    return {s.cell: s.ofport for s in stations}


def bridge(cell: int) -> str:
    return f"qc{cell}"


def uplink(cell: int) -> str:
    """The cell bridge's end of its veth to the access switch."""
    return f"qu{cell}"


def loss_table(run_id: str) -> str:
    """The nftables table (bridge family) of a run's downlink loss."""
    return f"qiot-{run_tag(run_id)}"


def _batch(tool: list[str], lines: list[str], what: str) -> None:
    if not lines:
        return
    done = subprocess.run(tool + ["-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise StationError(f"{what}: {' '.join(tool)} -batch failed: {done.stderr.strip()[-300:]}")


def cells_netns(run_id: str) -> str:
    """The namespace holding a run's cells: their bridges and the cell side of every station's link."""
    return f"{NETNS_PREFIX}{run_tag(run_id)}-cells"


def attach(stations: list[Station], access_switch: str, gateway_ip: str, shape: WirelessShape, netem: bool,
           state: RunState) -> dict[str, float]:
    """Make every station and cell and plug the cells into ``access_switch``; how long each phase took.

    ``netem``: the kernel has netem (delay, jitter and loss on both ends of each link, as Mininet's
    ``TCLink`` would); otherwise only the rate here, and the downlink loss by nftables.

    The cells live in a namespace of their own (:func:`cells_netns`); the root namespace holds only the
    access-switch end of each cell's uplink. Why: Open vSwitch lists every root interface whenever one
    changes, and for each veth whose other end is in another namespace the kernel looks that namespace
    up among all of them: 13,000 station ports in the root made every such listing cost 13,000 x 13,000
    steps, and ovs-vswitchd took 30 % of the machine while stations were made (perf, 5,000 stations).
    """
    timings, started = {}, time.monotonic()

    def phase(name: str) -> None:
        nonlocal started
        timings[name] = round(time.monotonic() - started, 3)
        started = time.monotonic()

    alias, cells_ns = interface_alias(state.run_id), cells_netns(state.run_id)
    ports = {cell: f"{access_switch}-eth{ofport}" for cell, ofport in cells(stations).items()}
    state.record_named_netns(cells_ns)
    for port in ports.values():
        state.record_interface(port)
    for station in stations:
        state.record_named_netns(station.netns)
    root = [f"netns add {cells_ns}"] + [f"netns add {s.netns}" for s in stations]
    made, up = [], []
    for cell, port in ports.items():
        root += [f"link add {port} type veth peer name {uplink(cell)} netns {cells_ns}",
                 f"link set dev {port} alias {alias}", f"link set dev {port} up"]
        made += [f"link add {bridge(cell)} type bridge", f"link set dev {uplink(cell)} master {bridge(cell)}"]
        up += [f"link set dev {uplink(cell)} up", f"link set dev {bridge(cell)} up"]
    for s in stations:
        made += [f"link add {s.port} type veth peer name {s.intf} netns {s.netns}",
                 f"link set dev {s.port} master {bridge(s.cell)}",
                 # client isolation: a cell's stations reach only its uplink
                 f"link set dev {s.port} type bridge_slave isolated on"]
        up.append(f"link set dev {s.port} up")
    # The wiring of the cells is not a host: no IPv6 of its own (router solicitations, MLD) reaching
    # the access switch, where the controller would take each such frame for a rogue station. Nor are
    # the stations IPv6 hosts (see _configure); their arp_notify comes from the same defaults.
    with station_defaults() as inherited:
        _batch(["ip"], root, "stations")
    if not inherited:
        _sysctls({f"net/ipv6/conf/{port}/disable_ipv6": "1" for port in ports.values()})
    qdisc = _qdisc_lines(shape, netem)

    def wire_cells() -> None:  # in the cells' namespace (a thread of its own: its children inherit it)
        _sysctls({"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"})
        _batch(["ip"], made, "cells")
        # Userspace OVS does not fill in checksums the kernel left to the NIC: TCP SYNs go unanswered
        # until tx offload is off (platform-notes). The uplink is where a cell's frames leave the kernel.
        for cell in ports:
            subprocess.run(["ethtool", "-K", uplink(cell), "tx", "off"], capture_output=True)
        _bridge_rules(loss_table(state.run_id), shape.loss_pct if not netem else 0.0)  # before the bridges are up
        _batch(["ip"], up, "cells")
        _batch(["tc"], [line.format(dev=s.port) for s in stations for line in qdisc], "downlink shaping")

    _in_namespace(f"/run/netns/{cells_ns}", wire_cells)
    phase("links_s")
    items = sorted(ports.items())
    for start in range(0, len(items), PORTS_PER_TRANSACTION):
        args = []
        for cell, port in items[start:start + PORTS_PER_TRANSACTION]:
            args += ["--", "add-port", access_switch, port, "--", "set", "interface", port,
                     f"ofport_request={cells(stations)[cell]}"]
        done = subprocess.run(["ovs-vsctl", "--timeout=120", *args[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            raise StationError(f"cells: adding ports to {access_switch} failed: {done.stderr.strip()[-300:]}")
    phase("switch_ports_s")
    if inherited and stations:  # one read: did the kernel really copy the defaults?
        inherited = _in_namespace(stations[0].namespace_path, lambda: _announces(stations[0]))
    with ThreadPoolExecutor(PARALLEL_EXECS) as pool:
        failures = [f for f in pool.map(lambda s: _configure(s, gateway_ip, qdisc, inherited), stations) if f]
    if failures:
        raise StationError(f"{len(failures)} station(s) could not be configured; first: {failures[0]}")
    phase("configure_s")
    announce(stations, announce_rate())
    phase("announce_s")
    return timings


def announce_rate() -> float:
    """Stations' announcements per second (``experiments/emulator.toml``, its comment says why)."""
    from harness.emulator import access_switch_settings

    return access_switch_settings().announce_per_s


def garp_frame(mac: str, ip: str) -> bytes:
    """A gratuitous ARP request (RFC 5227 announcement): broadcast, sender = target = the station."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    return (b"\xff" * 6 + hw + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
            + hw + addr + b"\x00" * 6 + addr)


#: Announcements in flight at once: closing a packet socket waits for an RCU grace period (~10 ms
#: measured: one station at a time took 11 ms each), so they are sent from a few threads.
ANNOUNCE_THREADS = 16


def announce(stations: list[Station], per_second: float) -> None:
    """Each station sends one gratuitous ARP from its own interface, ``per_second`` at most.

    Written by hand (a raw socket in the station's namespace, a 42-byte frame) rather than by
    ``arping``: one process per station would cost ~3 ms each at 13,000 stations. Why not the kernel's
    own announcement at link up (``arp_notify``): see ``experiments/emulator.toml`` ``announce_per_s``.
    """
    from harness.netns import enter_namespace

    def send(s: Station) -> None:
        enter_namespace(s.namespace_path)  # a pool thread: it moves between namespaces
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind((s.intf, 0))
            raw.send(garp_frame(s.mac, s.ip))

    started = time.monotonic()
    with ThreadPoolExecutor(ANNOUNCE_THREADS) as pool:
        sent = []
        for index, s in enumerate(interleaved(stations)):
            ahead = started + index / per_second - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            sent.append(pool.submit(send, s))
        for future in sent:
            future.result()  # an interface that vanished is the configuration's error, raised here


def interleaved(stations: list[Station]) -> list[Station]:
    """The stations taking turns by cell (the first of each cell, then the second, ...).

    Why: Open vSwitch reads each port's frames from a socket that holds ~256 small frames; one
    cell's 407 announcements in a row (0.8 s at 500 a second) overflowed it whenever the switch was
    busy: 13,000 stations announced in cell order, 8,900 arrived, most cells' count stopping at 256 or
    288 (measured). In turns, each cell's port gets 1/32 of the rate."""
    return sorted(stations, key=lambda s: (s.slot, s.cell))


def _in_namespace(path: str, work):
    """``work()`` in a thread that entered the network namespace at ``path``; its result."""
    from harness.netns import enter_namespace

    def run():
        enter_namespace(path)
        return work()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


#: ARP entries a station costs the kernel: its own for the gateway, and the gateway's for it.
NEIGHBOURS_PER_STATION = 2
#: Entries kept spare beyond the stations' (the infrastructure's hosts, rogue stations, churn).
NEIGHBOUR_SPARE = 4096
NEIGHBOUR_SYSCTLS = ("net/ipv4/neigh/default/gc_thresh1", "net/ipv4/neigh/default/gc_thresh2",
                     "net/ipv4/neigh/default/gc_thresh3")


def size_neighbour_table(stations: int, proc_sys: Path = Path("/proc/sys")) -> dict[str, list[int]]:
    """Linux keeps one ARP table for every namespace, capped by ``gc_thresh3`` (1024 on a stock
    kernel); past it the kernel evicts entries and drops packets ("neighbour table overflow"). Raise
    the three thresholds (never lower them) so every station's two entries fit under the soft limit
    ``gc_thresh2`` (above it the kernel collects idle entries and devices re-resolve at each wake),
    with ``gc_thresh1`` at half and ``gc_thresh3`` at twice that; returns ``{sysctl: [before, after]}`` of what it changed (the run records it)."""
    needed = NEIGHBOURS_PER_STATION * stations + NEIGHBOUR_SPARE
    changed = {}
    for key, want in zip(NEIGHBOUR_SYSCTLS, (needed // 2, needed, 2 * needed)):
        try:
            before = int((proc_sys / key).read_text())
        except (OSError, ValueError):
            continue
        if before < want:
            try:
                (proc_sys / key).write_text(str(want))
            except OSError:  # a read-only /proc/sys (a container): the run goes on, as the kernel allows
                continue
            changed[key] = [before, want]
    return changed


#: What the stations' wiring starts with while it is made: an announcement when a link comes up
#: (``_configure`` says why), and no IPv6 on the root-side pieces (``attach`` says why).
STATION_DEFAULTS = {"net/ipv4/conf/default/arp_notify": "1", "net/ipv6/conf/default/disable_ipv6": "1"}
#: A new namespace copies the ``all``/``default`` settings of the namespace that makes it (3, Linux
#: >= 6.x) or of the kernel's first one (1, Linux >= 5.1: the same when qiot runs there). Linux does
#: not carry ``disable_ipv6`` over (the ipv6 module's own default wins), hence ``addrgenmode none``.
INHERIT_SYSCTL = "net/core/devconf_inherit_init_net"


@contextmanager
def station_defaults(proc_sys: Path = Path("/proc/sys")):
    """While the stations are made, new namespaces and interfaces start with :data:`STATION_DEFAULTS`;
    yields whether they may (False: a kernel without ``devconf_inherit_init_net``, or a read-only
    /proc/sys; then each station is configured one sysctl at a time). Restored on the way out.

    Why: Linux keeps one /proc/sys directory entry per namespace for each of ``net/ipv4/conf``,
    ``net/ipv6/conf``, ... under one shared parent, so every lookup walks all namespaces' entries of
    that name: one write of a station's sysctl cost more the more stations there were (measured here:
    three writes per station took 2.5 s per 1,000 stations at 1,000, 27 s per 1,000 at 8,000). Inherited
    defaults cost no lookup at all."""
    before: dict[str, str] = {}
    try:
        for key in (INHERIT_SYSCTL, *STATION_DEFAULTS):
            before[key] = (proc_sys / key).read_text().strip()
        try:
            (proc_sys / INHERIT_SYSCTL).write_text("3")
        except OSError:  # a kernel before "copy from the current namespace"
            (proc_sys / INHERIT_SYSCTL).write_text("1")
        for key, value in STATION_DEFAULTS.items():
            (proc_sys / key).write_text(value)
    except OSError:
        _restore(proc_sys, before)
        yield False
        return
    try:
        yield True
    finally:
        _restore(proc_sys, before)


def _restore(proc_sys: Path, values: dict[str, str]) -> None:
    for key, value in values.items():
        try:
            (proc_sys / key).write_text(value)
        except OSError:
            pass


def _sysctls(values: dict[str, str]) -> None:
    """Write ``/proc/sys`` entries of the calling thread's namespace (missing ones are skipped)."""
    for key, value in values.items():
        try:
            with open(f"/proc/sys/{key}", "w") as entry:
                entry.write(value)
        except OSError:
            pass  # e.g. a kernel without IPv6: nothing to turn off


def _bridge_rules(table: str, loss_pct: float) -> None:
    """The cells' nftables rules: the bridges, which are wiring and not hosts, send nothing of their own
    (their IGMP reports would reach the controller as rogue stations); and, for ``loss_pct`` > 0, one
    rule for every cell: frames the bridges forward to a station port are lost with that chance."""
    output = ('  chain output {\n    type filter hook output priority 0; policy accept;\n'
              '    oifname "qu*" drop\n    oifname "qs*" drop\n  }\n')
    forward = ""
    if loss_pct > 0:
        threshold = int(round(loss_pct / 100.0 * 1_000_000))
        forward = ("  chain forward {\n    type filter hook forward priority 0; policy accept;\n"
                   f'    oifname "qs*" numgen random mod 1000000 < {threshold} drop\n  }}\n')
    rules = f"table bridge {table} {{\n{output}{forward}}}\n"
    done = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if done.returncode != 0:
        raise StationError(f"cell rules: nft failed: {done.stderr.strip()[-300:]} (install nftables: install.sh)")


def _qdisc_lines(shape: WirelessShape, netem: bool) -> list[str]:
    """``tc`` lines for one end of a station's link (``{dev}`` to fill in): rate, and netem if present.

    The rate by a token bucket (TBF, as Mininet's ``TCLink(use_tbf=True)``), not HTB: each HTB qdisc
    and class registers a filter block the kernel keeps in one list and searches linearly at every
    new one, 19 % of the machine while 5,000 stations were made (perf); a TBF has no filter block.
    The queue holds a second at the rate (assumption: about the 1,000-packet default queue of a veth
    that HTB used at 11 Mbit/s)."""
    rate = min(shape.rate_mbit, 1000.0)
    lines = [f"qdisc add dev {{dev}} root handle 5: tbf rate {rate}Mbit burst 15k latency 1s"]
    if netem and (shape.delay_ms or shape.jitter_ms or shape.loss_pct):
        lines.append(f"qdisc add dev {{dev}} parent 5:1 handle 10: netem delay {shape.delay_ms}ms "
                     f"{shape.jitter_ms}ms loss {shape.loss_pct}%")
    return lines


def _configure(s: Station, gateway_ip: str, qdisc: list[str], inherited: bool) -> str:
    """Inside one station: IPv4 only, an announcement when its link comes up (unless ``inherited``
    from :func:`station_defaults`), address, route, the station side of the shaping. An error text, or
    "" if all went well."""
    from harness.netns import enter_namespace

    enter_namespace(s.namespace_path)  # this worker thread only; it ends with the pool
    # arp_notify: the kernel sends a gratuitous ARP whenever the link comes up again (after a
    # wireless outage), so the controller sees the station back at once. The first one is lost in the
    # cell bridge; :func:`announce` sends it once every station is configured.
    # IPv4 only: no link-local address, so no IPv6 chatter (DAD, router solicitations, MLD reports)
    # reaches the access switch (measured: none in 4 s after link up, 6 frames without it).
    if not inherited:
        _sysctls({f"net/ipv4/conf/{s.intf}/arp_notify": "1"})
    # The worker thread is in the station's namespace and its children inherit it. Not ``ip -n``: that
    # also unshares a mount namespace, copying one mount per station namespace (/run/netns), so each
    # call cost more the more stations there were (measured: 21 ms per call at 300 namespaces, 42 ms
    # at 3,000; the whole configuration took 13.9 s for 1,000 stations and 297 s for 5,000).
    steps = [(["ip", "-batch", "-"],
              ["link set lo up", f"link set {s.intf} address {s.mac}", f"link set {s.intf} addrgenmode none",
               f"addr add {s.ip}/{s.prefix} dev {s.intf}",
               f"link set {s.intf} up", f"route add default via {gateway_ip}"]),
             (["tc", "-batch", "-"], [line.format(dev=s.intf) for line in qdisc])]
    for argv, lines in steps:
        done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
        if done.returncode != 0:
            return f"{s.name}: {argv[0]}: {(done.stderr or done.stdout).strip()[-300:]}"
    return ""


def _announces(s: Station) -> bool:
    """Whether station ``s`` was made with ``arp_notify`` on (called in its namespace)."""
    try:
        return Path(f"/proc/sys/net/ipv4/conf/{s.intf}/arp_notify").read_text().strip() == "1"
    except OSError:
        return False


def detach(stations: list[Station], access_switch: str, run_id: str) -> None:
    """Remove the stations and their cells: switch ports, then the namespaces (the veths, bridges and
    the loss rule go with them)."""
    if not stations:
        return
    names = [f"{access_switch}-eth{p}" for p in cells(stations).values()]
    for start in range(0, len(names), PORTS_PER_TRANSACTION):
        args = []
        for name in names[start:start + PORTS_PER_TRANSACTION]:
            args += ["--", "--if-exists", "del-port", access_switch, name]
        subprocess.run(["ovs-vsctl", "--timeout=120", *args[1:]], capture_output=True)
    lines = [f"netns del {s.netns}" for s in stations] + [f"netns del {cells_netns(run_id)}"]
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True)
