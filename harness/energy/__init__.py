"""Energy of the emulated devices: profile, Energest-like accounting, wake-cycle plans.

Pure code (no Mininet, no root). The device agent drives a :class:`~harness.energy.energest.DeviceTimeline`
per device through the steps of :func:`~harness.energy.wakecycle.plan_wake`; the pure simulation in
:mod:`harness.energy.simulate` runs the same steps with assumed network durations. A networked agent::

    profile = DeviceProfile.load(scenario.section("devices")["energy_profile"])
    timeline = DeviceTimeline(profile, "d1", start_s=clock.now(), interval_s=3600.0)
    while running:
        steps = plan_wake(profile, mode, key_refresh_due=key_refresh_due(timeline.now, last, 1800.0))
        run_steps(timeline, steps, perform, wake_until=next_wake)  # perform(step) does the real work
        write_energy_csv(run_dir / mode / "energy.csv", timeline.pop_rows(), append=True)

where ``perform(step)`` dispatches on ``step.name`` (``dkg_keygen``, ``dkg_exchange``, ``qkd_fetch``,
``publish``, ...) and returns a :class:`~harness.energy.wakecycle.NetworkOutcome` (measured emulated
duration, bytes sent) for network steps.
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
