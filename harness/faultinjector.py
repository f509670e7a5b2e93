"""Carry out the run's ``[[faults]]`` during a mode, on the mode's emulated clock (network edge).

Each fault is injected at its ``at_s`` and recovered ``duration_s`` later (emulated seconds after the
mode starts); every injection and recovery is recorded with its wall time, and whatever is still
broken when the mode ends is recovered then, so the next mode (and teardown) start from a whole
testbed. What each kind does:

- ``fibre_cut``: the quantum channel carries no photons: both QKD ends read the cut from
  ``qkd-link/cuts.json`` (key-clock times) and the blocks inside it yield nothing;
- ``classical_cut``: the fibre between the data-centre switch and the optical network goes down
  (both ends of the link): the QKD classical channel and the optical backhaul with it;
- ``kme_restart`` / ``relay_restart`` / ``broker_restart`` / ``controller_restart``: the daemon is
  stopped (only it: what depends on it stays up) and started again when the fault ends;
- ``wireless_outage``: the target devices' wireless interfaces go down, and come back with their
  default route.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field

from harness.clock import EmulatedClock
from harness.enums import FaultKind
from harness.faults import FaultSpec
from harness.lifecycle import StopRequest

#: The daemon each restart kind stops and starts again (kme_restart: by target).
RESTARTED = {FaultKind.RELAY_RESTART: "relay", FaultKind.BROKER_RESTART: "broker",
             FaultKind.CONTROLLER_RESTART: "controller"}
CUTS_FILE = "cuts.json"


@dataclass
class FaultRecord:
    """One fault as carried out (an entry of metadata.json ``faults``)."""

    kind: str
    target: str
    mode: str
    at_s: float
    duration_s: float
    injected_wall: float | None = None
    recovered_wall: float | None = None
    effect: str = ""
    error: str = ""
    _undo: object = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class FaultInjector:
    """The faults of one mode of a running testbed (``bed``: :class:`~harness.testbed.Testbed`)."""

    def __init__(self, bed, mode: str, clock: EmulatedClock, stop: StopRequest) -> None:
        self.bed, self.mode, self.clock, self.stop = bed, mode, clock, stop
        self.records = [FaultRecord(f.kind.value, f.target, mode, f.at_s, f.duration_s) for f in bed.config.faults]
        self._specs = list(bed.config.faults)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> "FaultInjector":
        if self._specs:
            self._write_fibre_cuts()
            self._thread = threading.Thread(target=self._run, name=f"faults-{self.mode}", daemon=True)
            self._thread.start()
        return self

    def finish(self) -> list[dict]:
        """Stop following the clock, recover what is still broken, return the records."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        for record in self.records:
            if record.injected_wall is not None and record.recovered_wall is None:
                self._recover(record)
        return [r.as_dict() for r in self.records]

    # --- the schedule ---------------------------------------------------------------------------
    def _run(self) -> None:
        events = sorted([(s.at_s, 0, i) for i, s in enumerate(self._specs)] +
                        [(s.end_s, 1, i) for i, s in enumerate(self._specs)])
        for t, action, index in events:
            if not self._wait_until(t):
                return
            record = self.records[index]
            if action == 0:
                self._inject(self._specs[index], record)
            elif record.injected_wall is not None and record.recovered_wall is None:
                self._recover(record)

    def _wait_until(self, t_emul: float) -> bool:
        while not (self._done.is_set() or self.stop.is_set()):
            remaining = self.clock.wall_for(t_emul) - time.time()
            if remaining <= 0:
                return True
            self._done.wait(min(remaining, 0.5))
        return False

    def _inject(self, spec: FaultSpec, record: FaultRecord) -> None:
        with self._lock:
            record.injected_wall = time.time()
            try:
                record.effect, record._undo = INJECT[spec.kind](self, spec)
            except Exception as exc:  # recorded: a fault that could not be injected is not silently "done"
                record.error = f"inject: {type(exc).__name__}: {exc}"
                record.recovered_wall = record.injected_wall

    def _recover(self, record: FaultRecord) -> None:
        with self._lock:
            try:
                if record._undo is not None:
                    record._undo()
            except Exception as exc:
                record.error = (record.error + "; " if record.error else "") + f"recover: {type(exc).__name__}: {exc}"
            record.recovered_wall = time.time()

    # --- the kinds ------------------------------------------------------------------------------
    def _write_fibre_cuts(self) -> None:
        """The quantum-channel cuts of this mode in the key path's clock, for both QKD ends to read."""
        cuts = [s for s in self._specs if s.kind == FaultKind.FIBRE_CUT]
        if not cuts or self.bed.key_clock is None:
            return
        key_clock, scale = self.bed.key_clock, self.bed.config.run.time_scale
        offset = (self.clock.epoch_wall - key_clock.epoch_wall) * scale
        path = self.bed.config.link_dir / CUTS_FILE
        existing = json.loads(path.read_text()) if path.exists() else []
        existing += [{"from_s": offset + s.at_s, "to_s": offset + s.end_s, "mode": self.mode} for s in cuts]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(existing, indent=1))
        tmp.replace(path)

    def fibre_cut(self, spec: FaultSpec):
        if self.bed.key_clock is None:
            raise RuntimeError("no QKD link in this mode")
        return "quantum channel cut (qkd-link/cuts.json): blocks inside it yield no key", None

    def classical_cut(self, spec: FaultSpec):
        net = self.bed.net.net
        far = "qox2" if self.bed.config.site.optical_switch else "qed3"
        links = net.linksBetween(net.get("qdc1"), net.get(far))
        names = [intf.name for link in links for intf in (link.intf1, link.intf2)]
        for name in names:
            _ip(f"link set dev {name} down")
        return (f"fibre qdc1-{far} down ({', '.join(names)})",
                lambda: [_ip(f"link set dev {name} up") for name in names])

    def restart(self, spec: FaultSpec):
        name = f"kme-{spec.target or 'bob'}" if spec.kind == FaultKind.KME_RESTART else RESTARTED[spec.kind]
        daemons = self.bed.daemons
        daemons.stop_only(name)
        return f"{name} stopped", lambda: daemons.start(name)

    def wireless_outage(self, spec: FaultSpec):
        devices = self.targets(spec.target)
        hosts = [self.bed.net.host(d) for d in devices]
        for host in hosts:
            host.cmd(f"ip link set dev {host.defaultIntf().name} down")
        gateway = self.bed.config.site.gw_wireless_ip

        def undo() -> None:
            for host in hosts:
                host.cmd(f"ip link set dev {host.defaultIntf().name} up && ip route replace default via {gateway}")

        return f"wireless down on {len(hosts)} device(s): {', '.join(devices[:10])}" + \
            (" ..." if len(devices) > 10 else ""), undo

    def targets(self, target: str) -> list[str]:
        """The devices a ``wireless_outage`` targets: ids, a seeded share (``25%``), or all."""
        names = self.bed.config.site.device_names()
        if not target:
            return names
        if target.endswith("%"):
            count = max(1, round(len(names) * float(target[:-1]) / 100.0))
            return sorted(random.Random(f"{self.bed.config.run.seed}-outage").sample(names, count),
                          key=names.index)
        wanted = target.split(",")
        unknown = [d for d in wanted if d not in names]
        if unknown:
            raise ValueError(f"wireless_outage targets unknown devices: {', '.join(unknown)}")
        return wanted


def _ip(command: str) -> None:
    import subprocess

    subprocess.run(["ip", *command.split()], check=True, capture_output=True)


INJECT = {FaultKind.FIBRE_CUT: FaultInjector.fibre_cut, FaultKind.CLASSICAL_CUT: FaultInjector.classical_cut,
          FaultKind.KME_RESTART: FaultInjector.restart, FaultKind.RELAY_RESTART: FaultInjector.restart,
          FaultKind.BROKER_RESTART: FaultInjector.restart, FaultKind.CONTROLLER_RESTART: FaultInjector.restart,
          FaultKind.WIRELESS_OUTAGE: FaultInjector.wireless_outage}
