"""The pure simulation: the devices of a scenario on an assumed network, in seconds of CPU time.

The same :class:`~harness.devices.agent.DeviceAgent` and :class:`~harness.devices.scheduler.WakeScheduler`
as an emulated run, with a :class:`~harness.devices.simulated.SimulatedTransport` and a virtual
clock: every device executes the same wake plan and protocol with real cryptography, and only the
network is assumed. This is what a what-if (``qiot sweep``) and the benchmarks run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.devices.agent import DeviceAgent, SentRecord
from harness.devices.scheduler import VirtualClock, WakeScheduler
from harness.devices.simulated import SimBackend, SimulatedTransport
from harness.energy import DeviceProfile, IntervalRow
from harness.enums import Mode
from topologies.fig1 import device_name


@dataclass
class SimResult:
    """Energy rows (complete and final partial intervals), one cumulative row per device, the publishes."""

    rows: list[IntervalRow] = field(default_factory=list)
    cumulative: list[IntervalRow] = field(default_factory=list)
    records: list[SentRecord] = field(default_factory=list)
    decrypted: int = 0

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def key_refreshes(self) -> int:
        return sum(1 for r in self.records if r.key_refreshed and not r.error)


class _Sink:
    def __init__(self, result: SimResult) -> None:
        self.result = result

    def sent(self, record: SentRecord) -> None:
        self.result.records.append(record)

    def energy(self, rows: list[IntervalRow]) -> None:
        self.result.rows.extend(rows)


def simulate(settings, mode: str, duration_s: float | None = None, profile: DeviceProfile | None = None) -> SimResult:
    """Simulate ``settings.devices.count`` devices in ``mode`` for ``duration_s`` emulated seconds.

    ``settings`` is a scenario's settings or a run configuration (anything with ``devices``, ``kme``,
    ``qkd``, ``wireless`` and ``run`` parts); ``duration_s`` defaults to its ``run.hours``; ``profile``
    to the one ``devices.energy_profile`` names.
    """
    duration_s = settings.run.hours * 3600.0 if duration_s is None else duration_s
    if duration_s <= 0:
        raise ValueError(f"simulate: duration_s must be > 0, got {duration_s!r}")
    profile = profile or DeviceProfile.load(settings.devices.energy_profile)
    backend = SimBackend()
    transport = SimulatedTransport(backend, profile, settings.wireless, settings.run.seed)
    result = SimResult()
    sink = _Sink(result)
    agents = [DeviceAgent(device_name(i), Mode(mode), settings.devices, settings.kme.wireless_transport,
                          settings.qkd.refresh_period_s, profile, transport, sink, settings.run.seed)
              for i in range(1, settings.devices.count + 1)]
    WakeScheduler(VirtualClock()).run(agents, duration_s)
    result.cumulative = [agent.timeline.cumulative_row() for agent in agents]
    result.decrypted = backend.decrypted
    return result
