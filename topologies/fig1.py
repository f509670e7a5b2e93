"""The paper's Fig. 1: the site description (pure) and its Mininet topology (built on demand).

::

    dc (QKD Bob, KME, MQTT broker, IoT platform)
     |
    qdc1 (data-centre switch) ==fibre== [qox2 optical switch ==fibre==] qed3 (edge switch)
                                                                     |         |
                                                               alice (QKD)   gw (IoT gateway,
                                                                              Raspberry Pi role)
                                                                               | wireless side
                                                                    qap4 (wireless access switch)
                                                                      /    |     \\
                                                                    d1    d2 ... dN (FiPy devices)

The classical channel between Alice and Bob is a real link through the optical network (and the
optical switch in ``bcn``); the quantum channel is not an IP link and is modelled by the QKD core.
The gateway routes between the optical side (10.0.0.0/24) and the wireless side (10.1.0.0/16).
Switch names start with ``q`` and carry a number so Mininet derives their datapath ids.

:class:`Fig1Site` is every fact about the site a part of qiot needs (host names, addresses, MACs,
interfaces, service ports) and imports nothing from Mininet, so daemons and pure cores read it from
the run configuration; :func:`mininet_topo` builds the Mininet topology from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.links import FibreSettings
from harness.settings import setting

DC_IP, ALICE_IP, GW_OPTICAL_IP, GW_WIRELESS_IP = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.1.0.1"
OPTICAL_PREFIX, WIRELESS_PREFIX = 24, 16
WIRELESS_SUBNET = "10.1.0.0/16"
FIRST_DEVICE_HOST_NUMBER = 10  # addresses below are kept for infrastructure on the wireless side
ROGUE_SUBNET_THIRD_OCTET = 255  # rogue hosts (tests only) sit in 10.1.255.0/24, far from devices
#: Devices the wireless subnet can number: 10.1.0.10 up to 10.1.254.255, below the rogue hosts' /24.
MAX_DEVICES = ROGUE_SUBNET_THIRD_OCTET * 256 - FIRST_DEVICE_HOST_NUMBER

#: Interfaces and bridges named once: the gateway's two sides and the wireless access switch.
GW_OPTICAL_INTF, GW_WIRELESS_INTF = "gw-eth0", "gw-eth1"
DC_INTF = "dc-eth0"
ACCESS_SWITCH = "qap4"


def device_name(index: int) -> str:
    """Host name of device ``index`` (1-based)."""
    return f"d{index}"


def device_ip(index: int) -> str:
    """Address of device ``index`` (1-based) in the wireless subnet."""
    number = FIRST_DEVICE_HOST_NUMBER + index - 1
    return f"10.1.{number // 256}.{number % 256}"


def device_mac(index: int) -> str:
    """A stable, locally administered MAC for device ``index``: the inventory key for provisioning."""
    return "02:51:0a:%02x:%02x:%02x" % ((index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF)


def rogue_name(index: int) -> str:
    """Host name of rogue host ``index`` (1-based): an uninventoried station on the access switch."""
    return f"r{index}"


def rogue_ip(index: int) -> str:
    return f"10.1.{ROGUE_SUBNET_THIRD_OCTET}.{index}"


def rogue_mac(index: int) -> str:
    """A stable MAC outside the inventory's ``02:51:0a`` range."""
    return "02:66:0b:00:%02x:%02x" % ((index >> 8) & 0xFF, index & 0xFF)


@dataclass(frozen=True, kw_only=True)
class ServicePorts:
    """TCP/UDP ports of the site's services (protocol and deployment facts, not measurements)."""

    mqtt: int = setting(1883, doc="MQTT broker on the data-centre host (IANA port of unencrypted MQTT)")
    classical: int = setting(7001, doc="QKD Alice <-> Bob post-processing channel (TCP, optical network)")
    clavis: int = setting(5323, doc="IDQ QKDSequence key extraction, UDP on each QKD end's loopback "
                                    "(reference.md section 3)")
    kme: int = setting(9443, doc="ETSI GS QKD 014 KMEs (HTTPS, mutual TLS) on dc and alice")
    relay: int = setting(8443, doc="gateway key relay on the wireless side (devices fetch QKD keys)")
    relay_admin: int = setting(8081, doc="relay's provisioning endpoint on the gateway's loopback")


@dataclass(frozen=True, kw_only=True)
class Fig1Site:
    """The Fig. 1 site of one run: how many devices, whether the BCN optical switch is in, ports."""

    devices: int = setting(doc="number of FiPy device hosts d1..dN", minimum=1, maximum=MAX_DEVICES)
    optical_switch: bool = setting(False, doc="the BCN optical switch qox2 between qdc1 and qed3")
    rogue_hosts: int = setting(0, doc="uninventoried stations r1..rN on the access switch (tests)", minimum=0)
    ports: ServicePorts = field(default_factory=ServicePorts)

    dc_ip = DC_IP
    alice_ip = ALICE_IP
    gw_optical_ip = GW_OPTICAL_IP
    gw_wireless_ip = GW_WIRELESS_IP
    gw_wireless_intf = GW_WIRELESS_INTF
    dc_intf = DC_INTF
    access_switch = ACCESS_SWITCH

    def device_names(self) -> list[str]:
        return [device_name(i) for i in range(1, self.devices + 1)]

    def inventory(self) -> list[dict]:
        """What the provisioning controller recognises devices by (the MAC is the key)."""
        return [{"device_id": device_name(i), "mac": device_mac(i), "ip": device_ip(i),
                 "credentials": f"pki/sae/{device_name(i)}.crt"} for i in range(1, self.devices + 1)]


@dataclass(frozen=True)
class LinkShape:
    """Mininet ``TCLink`` options for one link (netem fields are used only where netem exists)."""

    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def tclink_options(self, netem: bool) -> dict:
        options: dict = {}
        if self.rate_mbit:
            options["bw"] = min(self.rate_mbit, 1000.0)  # Mininet's HTB accepts at most 1000 Mbit/s
        if netem:
            if self.delay_ms:
                options["delay"] = f"{self.delay_ms}ms"
            if self.jitter_ms:
                options["jitter"] = f"{self.jitter_ms}ms"
            if self.loss_pct:
                options["loss"] = self.loss_pct
        return options


def mininet_topo(site: Fig1Site, fibre: FibreSettings, netem: bool):
    """The Mininet ``Topo`` of the site's infrastructure: hosts dc, alice and gw, the switches, and the
    fibre spans (their delay only with netem). The stations of the wireless cell (devices, rogues) are
    not Mininet hosts: :mod:`harness.stations` attaches them to the access switch in batches.
    """
    from mininet.topo import Topo

    fibre_shape = LinkShape(fibre.classical_rate_mbit, fibre.delay_ms)
    topo = Topo()
    dc = topo.addHost("dc", ip=f"{DC_IP}/{OPTICAL_PREFIX}", defaultRoute=f"via {GW_OPTICAL_IP}")
    alice = topo.addHost("alice", ip=f"{ALICE_IP}/{OPTICAL_PREFIX}", defaultRoute=f"via {GW_OPTICAL_IP}")
    gw = topo.addHost("gw", ip=f"{GW_OPTICAL_IP}/{OPTICAL_PREFIX}")
    s_dc, s_edge, s_ap = topo.addSwitch("qdc1"), topo.addSwitch("qed3"), topo.addSwitch(ACCESS_SWITCH)
    topo.addLink(dc, s_dc, intfName1=DC_INTF)
    if site.optical_switch:
        # Two fibre spans meet at the optical switch; each carries half of the fibre delay.
        s_ox = topo.addSwitch("qox2")
        half = LinkShape(fibre_shape.rate_mbit, fibre_shape.delay_ms / 2)
        topo.addLink(s_dc, s_ox, **half.tclink_options(netem))
        topo.addLink(s_ox, s_edge, **half.tclink_options(netem))
    else:
        topo.addLink(s_dc, s_edge, **fibre_shape.tclink_options(netem))
    topo.addLink(alice, s_edge)
    topo.addLink(gw, s_edge, intfName1=GW_OPTICAL_INTF)
    topo.addLink(gw, s_ap, intfName1=GW_WIRELESS_INTF, params1={"ip": f"{GW_WIRELESS_IP}/{WIRELESS_PREFIX}"})
    return topo


#: OpenFlow port of the access switch where the first station attaches (port 1 is the gateway's).
FIRST_STATION_PORT = 2


def stations(site: Fig1Site) -> list[tuple[str, str, str, int]]:
    """(name, ip, mac, prefix) of the stations on the access switch, in port order: the devices, then
    the rogues (so the devices' ports are the same with or without rogues)."""
    return ([(device_name(i), device_ip(i), device_mac(i), WIRELESS_PREFIX) for i in range(1, site.devices + 1)] +
            [(rogue_name(i), rogue_ip(i), rogue_mac(i), WIRELESS_PREFIX) for i in range(1, site.rogue_hosts + 1)])
