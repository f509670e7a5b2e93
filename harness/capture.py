"""Raw packet capture of a run: tcpdump writing pcap files inside the hosts' namespaces.

Capture raw first, parse later: each capture is a :class:`~harness.daemon.Daemon` running ``tcpdump -U``
(packet-buffered, so an interrupted run keeps every packet written so far) on one host interface.
The pcaps are parsed afterwards by the pure functions of :mod:`harness.analysis.pcap`. On stop,
tcpdump reports how many packets the kernel dropped; :func:`capture_counters` reads that from its
log so the run can say whether the capture was complete.
"""

from __future__ import annotations

import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from harness.daemon import Daemon
from harness.settings import setting

#: Capture file names inside ``<mode>/pcap/`` (run-directory contract, docs/results.md).
BROKER_PCAP, WIRELESS_PCAP, KEYS_PCAP = "dc.pcap", "gw-wlan.pcap", "keys.pcap"


@dataclass(frozen=True, kw_only=True)
class CaptureSettings:
    """Which raw captures a run writes (tcpdump, pcap files parsed after the run)."""

    broker: bool = setting(True, doc="MQTT traffic at the data-centre host (dc.pcap): wire latency and loss")
    wireless: bool = setting(True, doc="MQTT and key-fetch traffic on the gateway's wireless side (gw-wlan.pcap)")
    clavis: bool = setting(True, doc="Clavis key-extraction datagrams at Bob's end (keys.pcap, the paper's Fig. 2e)")


def tcpdump(name: str, host: str, interface: str, pcap: Path, bpf_filter: str, log_dir: Path) -> Daemon:
    """A capture of ``interface`` (in ``host``'s namespace) into ``pcap``."""
    binary = shutil.which("tcpdump") or "/usr/bin/tcpdump"

    def check() -> list[str]:
        pcap.parent.mkdir(parents=True, exist_ok=True)
        return []

    return Daemon(
        name=name, host=host, check=check,
        # -Z root: tcpdump would otherwise drop privileges to a user that cannot write the run folder.
        argv=[binary, "-i", interface, "-w", str(pcap), "-U", "-s", "0", "-n", "-Z", "root",
              "--immediate-mode", bpf_filter],
        ready_pattern=r"listening on ", stop_signal=signal.SIGINT, log_path=log_dir / f"{name}.log")


def mode_captures(config, mode: str) -> list[Daemon]:
    """The captures of one mode: MQTT at the broker, MQTT and key fetches on the gateway's wireless side."""
    site, ports, pcaps = config.site, config.site.ports, config.mode_dir(mode) / "pcap"
    daemons = []
    if config.capture.broker:
        daemons.append(tcpdump(f"capture-{mode}-dc", "dc", site.dc_intf, pcaps / BROKER_PCAP,
                               f"tcp port {ports.mqtt}", config.logs_dir))
    if config.capture.wireless:
        daemons.append(tcpdump(f"capture-{mode}-gw", "gw", site.gw_wireless_intf, pcaps / WIRELESS_PCAP,
                               f"tcp port {ports.mqtt} or tcp port {ports.relay}", config.logs_dir))
    return daemons


def key_capture(config) -> Daemon | None:
    """The Clavis datagrams between Bob's KME and Bob's key-extraction service (the paper's Fig. 2e),
    on the data-centre host's loopback, for the whole life of the key path: keys are reserved when
    issued, at provisioning, not when used."""
    if not config.capture.clavis:
        return None
    return tcpdump("capture-qkd-keys", "dc", "lo", config.mode_dir("qkd") / "pcap" / KEYS_PCAP,
                   f"udp port {config.site.ports.clavis}", config.logs_dir)


def capture_counters(log_path: Path) -> dict[str, int]:
    """Packets captured / received by filter / dropped by kernel, as tcpdump reported them on exit."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    counters = {}
    for key, pattern in (("captured", r"(\d+) packets? captured"),
                         ("received_by_filter", r"(\d+) packets? received by filter"),
                         ("dropped_by_kernel", r"(\d+) packets? dropped by kernel")):
        match = re.search(pattern, text)
        if match:
            counters[key] = int(match.group(1))
    return counters
