"""Raw packet capture of a run: tcpdump writing pcap files inside the hosts' namespaces.

Capture raw first, parse later: each capture is a :class:`ManagedProcess` running ``tcpdump -U``
(packet-buffered, so an interrupted run keeps every packet written so far) on one host interface.
The pcaps are parsed afterwards by the pure functions of :mod:`harness.analysis.pcap`. On stop,
tcpdump reports how many packets the kernel dropped; :func:`capture_counters` reads that from its
log so the run can say whether the capture was complete.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

from harness.process import ManagedProcess


def tcpdump(name: str, netns_pid: int, interface: str, pcap: Path, bpf_filter: str, log_dir: Path) -> ManagedProcess:
    """A capture of ``interface`` (in the namespace of ``netns_pid``) into ``pcap``."""
    pcap.parent.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    return ManagedProcess(
        name=name, start_order=55, netns_pid=netns_pid,
        # -Z root: tcpdump would otherwise drop privileges to a user that cannot write the run folder.
        argv=[binary, "-i", interface, "-w", str(pcap), "-U", "-s", "0", "-n", "-Z", "root",
              "--immediate-mode", bpf_filter],
        ready_pattern=r"listening on ", stop_signal=signal.SIGINT,
        log_path=log_dir / f"{name}.log")


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
