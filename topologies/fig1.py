"""The paper's Fig. 1 as a Mininet topology: data centre, optical network, IoT gateway, devices.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from mininet.topo import Topo

DC_IP, ALICE_IP, GW_OPTICAL_IP, GW_WIRELESS_IP = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.1.0.1"
OPTICAL_PREFIX, WIRELESS_PREFIX = 24, 16
WIRELESS_SUBNET = "10.1.0.0/16"
FIRST_DEVICE_HOST_NUMBER = 10  # addresses below are kept for infrastructure on the wireless side


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


ROGUE_SUBNET_THIRD_OCTET = 255  # rogue hosts (tests only) sit in 10.1.255.0/24, far from devices


def rogue_name(index: int) -> str:
    """Host name of rogue host ``index`` (1-based): an uninventoried station on the access switch."""
    return f"r{index}"


def rogue_ip(index: int) -> str:
    return f"10.1.{ROGUE_SUBNET_THIRD_OCTET}.{index}"


def rogue_mac(index: int) -> str:
    """A stable MAC outside the inventory's ``02:51:0a`` range."""
    return "02:66:0b:00:%02x:%02x" % ((index >> 8) & 0xFF, index & 0xFF)


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


class Fig1Topo(Topo):
    """Fig. 1 with ``devices`` FiPy hosts; ``optical_switch`` adds the BCN optical switch;
    ``rogue_hosts`` adds uninventoried hosts ``r1``... on the access switch (provisioning tests)."""

    def build(self, devices: int = 3, optical_switch: bool = False, fibre: LinkShape = LinkShape(),
              wireless: LinkShape = LinkShape(), netem: bool = False, rogue_hosts: int = 0) -> None:
        dc = self.addHost("dc", ip=f"{DC_IP}/{OPTICAL_PREFIX}", defaultRoute=f"via {GW_OPTICAL_IP}")
        alice = self.addHost("alice", ip=f"{ALICE_IP}/{OPTICAL_PREFIX}", defaultRoute=f"via {GW_OPTICAL_IP}")
        gw = self.addHost("gw", ip=f"{GW_OPTICAL_IP}/{OPTICAL_PREFIX}")
        s_dc = self.addSwitch("qdc1")
        s_edge = self.addSwitch("qed3")
        s_ap = self.addSwitch("qap4")

        self.addLink(dc, s_dc)
        if optical_switch:
            # Two fibre spans meet at the optical switch; each carries half of the fibre delay.
            s_ox = self.addSwitch("qox2")
            half = LinkShape(fibre.rate_mbit, fibre.delay_ms / 2, fibre.jitter_ms, fibre.loss_pct)
            self.addLink(s_dc, s_ox, **half.tclink_options(netem))
            self.addLink(s_ox, s_edge, **half.tclink_options(netem))
        else:
            self.addLink(s_dc, s_edge, **fibre.tclink_options(netem))
        self.addLink(alice, s_edge)
        self.addLink(gw, s_edge, intfName1="gw-eth0")
        self.addLink(gw, s_ap, intfName1="gw-eth1", params1={"ip": f"{GW_WIRELESS_IP}/{WIRELESS_PREFIX}"})
        for index in range(1, devices + 1):
            host = self.addHost(device_name(index), ip=f"{device_ip(index)}/{WIRELESS_PREFIX}",
                                mac=device_mac(index), defaultRoute=f"via {GW_WIRELESS_IP}")
            self.addLink(host, s_ap, **wireless.tclink_options(netem))
        # Rogues come after the devices, so the devices' switch ports are the same with or without them.
        for index in range(1, rogue_hosts + 1):
            host = self.addHost(rogue_name(index), ip=f"{rogue_ip(index)}/{WIRELESS_PREFIX}",
                                mac=rogue_mac(index), defaultRoute=f"via {GW_WIRELESS_IP}")
            self.addLink(host, s_ap, **wireless.tclink_options(netem))
