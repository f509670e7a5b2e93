"""The scenario's two kinds of link: the optical network's fibre and the devices' wireless hop.

Pure settings (a scenario's ``[fibre]`` and ``[wireless]`` sections). The topology turns them into
Mininet link options, :mod:`harness.shaping` into the fallback shaper's rules, the QKD link takes
its loss from the fibre, and the pure simulation its round-trip time from the wireless hop.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.settings import setting


@dataclass(frozen=True, kw_only=True)
class FibreSettings:
    """The fibre between the data centre and the IoT network (quantum and classical channels)."""

    length_km: float = setting(doc="quantum-channel fibre length, km", minimum=0.0)
    loss_db: float = setting(doc="total optical loss of the quantum channel, dB", minimum=0.0, maximum=60.0)
    optical_switch: bool = setting(False, doc="QCh/ClCh pass through an optical switch (BCN)")
    propagation_us_per_km: float = setting(doc="one-way delay of light in the fibre, us/km", minimum=0.0)
    classical_rate_mbit: float = setting(doc="rate of the classical channel / optical backhaul, Mbit/s",
                                         above=0.0)

    @property
    def delay_ms(self) -> float:
        """One-way propagation delay over the whole fibre, ms."""
        return self.length_km * self.propagation_us_per_km / 1000.0


@dataclass(frozen=True, kw_only=True)
class WirelessShape:
    """One-way parameters of each device's wireless link (applied once per direction)."""

    delay_ms: float = setting(doc="one-way delay, ms", minimum=0.0, maximum=10_000.0)
    jitter_ms: float = setting(0.0, doc="uniform +/- jitter around the delay, ms", minimum=0.0, maximum=10_000.0)
    loss_pct: float = setting(0.0, doc="packet loss per direction, %", minimum=0.0, maximum=100.0)
    rate_mbit: float = setting(doc="link rate, Mbit/s", above=0.0, maximum=10_000.0)

    @property
    def rtt_s(self) -> float:
        """Round-trip time the shaping adds, seconds (delay in each direction)."""
        return 2.0 * self.delay_ms / 1000.0
