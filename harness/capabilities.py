"""What this kernel can do, probed at start-up so each run uses (and records) a path that works.

Each probe runs in a throw-away network namespace (``unshare -n``), so it leaves nothing behind and
touches no real interface. The result decides the switch datapath (kernel OVS module or userspace)
and the link-shaping mechanism (netem, or the NFQUEUE/iptables/HTB fallback).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


def _probe(script: str) -> bool:
    """Run ``script`` in a fresh network namespace; True if it exits 0."""
    if shutil.which("unshare") is None:
        return False
    try:
        result = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up && " + script],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _ovs_kernel_module() -> bool:
    if Path("/sys/module/openvswitch").exists():
        return True
    try:
        return subprocess.run(["modprobe", "-q", "openvswitch"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):  # no modprobe (no kmod package): no module either
        return False


@dataclass(frozen=True)
class Capabilities:
    """Kernel features relevant to qiot, and the mechanisms chosen from them."""

    netem: bool
    htb: bool
    nfqueue: bool
    iptables_statistic: bool
    ovs_kernel_module: bool

    @property
    def switch_datapath(self) -> str:
        """``kernel`` when the OVS module is there, else ``user`` (ovs-vswitchd's own datapath)."""
        return "kernel" if self.ovs_kernel_module else "user"

    @property
    def shaping(self) -> str:
        """``netem`` when available, else ``nfqueue`` (receiver-side delay, statistic loss, HTB rate)."""
        if self.netem:
            return "netem"
        if self.nfqueue and self.iptables_statistic and self.htb:
            return "nfqueue"
        return "none"

    def as_dict(self) -> dict:
        return dict(asdict(self), switch_datapath=self.switch_datapath, shaping=self.shaping)


def probe() -> Capabilities:
    """Probe the running kernel."""
    return Capabilities(
        netem=_probe("tc qdisc add dev lo root netem delay 1ms"),
        htb=_probe("tc qdisc add dev lo root handle 1: htb default 1"),
        nfqueue=_probe("iptables -t mangle -A PREROUTING -j NFQUEUE --queue-num 7 --queue-bypass"),
        iptables_statistic=_probe("iptables -t mangle -A PREROUTING -m statistic --mode random "
                                  "--probability 0.5 -j DROP"),
        ovs_kernel_module=_ovs_kernel_module(),
    )
