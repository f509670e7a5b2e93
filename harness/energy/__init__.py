"""Energy of the emulated devices: profile, Energest-like accounting, wake-cycle plans.

Pure code (no Mininet, no root). A device (:class:`harness.devices.agent.DeviceAgent`) drives one
:class:`~harness.energy.energest.DeviceTimeline` through the steps of
:func:`~harness.energy.wakecycle.plan_wake` with :func:`~harness.energy.wakecycle.run_steps`: its
``perform(step)`` does each step's real work and returns a
:class:`~harness.energy.wakecycle.NetworkOutcome` (duration, bytes, frames) for network steps, measured
on the emulated network in a run and assumed in a pure simulation; compute steps are charged at the
profile's ESP32 time.
"""

from harness.energy.profile import DeviceProfile, ProfileError
from harness.energy.energest import (
    STATES, ENERGY_CSV_COLUMNS, DeviceTimeline, IntervalRow, rdc, energy_j, avg_current_ma,
    battery_life_days, write_energy_csv,
)

__all__ = [
    "DeviceProfile", "ProfileError", "STATES", "ENERGY_CSV_COLUMNS", "DeviceTimeline", "IntervalRow",
    "rdc", "energy_j", "avg_current_ma", "battery_life_days", "write_energy_csv",
]
