"""Link shaping of the wireless hop: netem where the kernel has it, a receiver-side fallback where not.

With netem, Mininet's ``TCLink`` puts delay, jitter, loss and rate on both ends of every device link
(the topology does that). Without netem (this project's CI kernel) ``TCLink`` would print an error
and carry on *unshaped* (platform-notes), so the topology only asks it for the HTB rate and this
module adds, at the gateway, which every wireless packet crosses:

- delay and jitter: iptables ``NFQUEUE`` rules in the gateway's namespace hand packets to
  :mod:`harness.shaper`, which holds each one for its delay and releases them in FIFO order.
  Uplink (device -> anything) is queued as it *arrives* at the gateway's wireless interface
  (PREROUTING), downlink (anything -> device) as it *leaves* it (POSTROUTING, after routing);
- loss: on the receiving side of each direction: uplink by an iptables ``statistic`` DROP at the
  gateway's PREROUTING, downlink by one nftables rule on the cells' bridges, as the frames are forwarded
  to a station (:mod:`harness.stations`); a DROP in the sender's own OUTPUT would surface as EPERM in
  its socket calls instead of as loss (platform-notes).

Each direction thus gets the scenario's one-way delay and loss once, as with netem.
"""

from __future__ import annotations

import sys

from harness.daemon import Daemon
from harness.links import WirelessShape

UPLINK_QUEUE, DOWNLINK_QUEUE = 1, 2


def describe(mechanism: str, fibre_delay_ms: float) -> dict:
    """What the run's metadata says about shaping: the mechanism and where each effect is applied."""
    if mechanism == "netem":
        return {"mechanism": "netem", "wireless": "tc netem under a tbf rate on both ends of each device link",
                "fibre_delay_ms": fibre_delay_ms, "fibre_delay_emulated": True}
    return {"mechanism": "nfqueue",
            "wireless_delay": f"NFQUEUE {UPLINK_QUEUE} (uplink, gw PREROUTING) and {DOWNLINK_QUEUE} "
                              "(downlink, gw POSTROUTING) held by harness.shaper, FIFO release",
            "wireless_loss": "uplink: iptables statistic DROP at gw PREROUTING; downlink: nftables numgen DROP "
                             "on the cells' bridges, frames forwarded to a station",
            "wireless_rate": "tbf on both ends of each station's link",
            "fibre_delay_ms": fibre_delay_ms,
            # Tens of microseconds: below what a userspace queue can hold a packet for accurately.
            "fibre_delay_emulated": False}


def _iptables(host, rule: str) -> None:
    out = host.cmd(f"iptables -w {rule} && echo QIOT_OK")
    if "QIOT_OK" not in out:
        raise RuntimeError(f"iptables {rule!r} failed on {host.name}: {out.strip()}")


def needs_shaper(shape: WirelessShape) -> bool:
    """Whether the fallback needs the delay daemon (it does only for a delay or a jitter)."""
    return shape.delay_ms > 0 or shape.jitter_ms > 0


def install_fallback_rules(gateway, gateway_wireless_intf: str, shape: WirelessShape) -> None:
    """The fallback's iptables rules on the gateway (a Mininet host: ``.cmd``); each station gets its
    downlink loss rule when it is made (:mod:`harness.stations`)."""
    probability = shape.loss_pct / 100.0
    if probability > 0:
        _iptables(gateway, f"-t mangle -A PREROUTING -i {gateway_wireless_intf} -m statistic --mode random "
                           f"--probability {probability:.6f} -j DROP")
    if not needs_shaper(shape):
        return
    _iptables(gateway, f"-t mangle -A PREROUTING -i {gateway_wireless_intf} -j NFQUEUE "
                       f"--queue-num {UPLINK_QUEUE} --queue-bypass")
    _iptables(gateway, f"-t mangle -A POSTROUTING -o {gateway_wireless_intf} -j NFQUEUE "
                       f"--queue-num {DOWNLINK_QUEUE} --queue-bypass")


def shaper_daemon(config) -> Daemon:
    """The delay daemon of the fallback on the gateway, for the run's wireless shape."""
    shape = config.wireless
    spec = f"{shape.delay_ms}:{shape.jitter_ms}"
    return Daemon(
        name="shaper", host="gw", log_path=config.logs_dir / "shaper.log",
        argv=[sys.executable, "-m", "harness.shaper", "--queue", f"{UPLINK_QUEUE}:{spec}",
              "--queue", f"{DOWNLINK_QUEUE}:{spec}", "--seed", str(config.run.seed)])
