"""The expected wall time of a run, from its configuration alone: what ``qiot run`` announces before
a long run and ``qiot scenarios`` lists.

A run's wall time is its emulated time divided by the time scale, plus what the time scale does not
shorten (or shortens only in part):

- bringing the testbed up: network, controller, broker, QKD link and KMEs, until the first mode's
  devices start; a fixed part and a part per device (hosts, links, provisioning);
- distilling the first device keys before the QKD mode starts (emulated time: one key per device at
  the link's calibrated rate, plus two post-processing blocks, less what a warmed-up link
  (``[qkd] warmup_s``) distilled before, divided by the time scale), and the warm-up itself, which
  the QKD ends distil as fast as post-processing allows (a cost per emulated second);
- the end of each mode: the last readings, stopping the mode's daemons, writing its result files
  and starting the next mode's devices; and the teardown, which grows with the devices;
- the analysis and the figures after the teardown, a fixed part and a part per message.

Those costs were measured on this machine and live, with how they were measured, in
``experiments/walltime.toml``; ``benchmarks/bench_walltime.py`` measures them again from the
metadata of real runs. The estimate assumes the machine keeps up with the time scale: where the
devices fall behind the clock (``emulation_health`` ``degraded``) a run takes longer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness.enums import Mode
from harness.scenario import EXPERIMENTS_DIR
from harness.settings import SettingsError, from_table, read_toml, setting, subsection

#: Settings file of the measured costs and of the limits (next to the scenarios), and its name in messages.
WALLTIME_FILE = EXPERIMENTS_DIR / "walltime.toml"
WALLTIME_LABEL = f"{EXPERIMENTS_DIR.name}/{WALLTIME_FILE.name}"


class WallTimeError(SettingsError):
    """``walltime.toml`` is missing, unreadable or holds a bad value; the message names file and key."""


@dataclass(frozen=True, kw_only=True)
class WallTimeCosts:
    """``[costs]``: what a run spends on top of its compressed emulated time, wall seconds."""

    bring_up_s: float = setting(doc="testbed bring-up until the first mode's devices start, fixed part",
                                minimum=0.0)
    bring_up_per_device_s: float = setting(doc="bring-up, per device", minimum=0.0)
    mode_end_s: float = setting(doc="end of each mode (last readings, daemons stopped, result files, next "
                                    "mode's devices started; the last one: the teardown)", minimum=0.0)
    teardown_per_device_s: float = setting(doc="teardown of the testbed, per device", minimum=0.0)
    analysis_s: float = setting(doc="analysis and figures after the teardown, fixed part", minimum=0.0)
    analysis_per_message_s: float = setting(doc="analysis and figures, per device reading", minimum=0.0)
    warmup_per_emulated_s: float = setting(doc="distilling a warmed-up link's warm-up ([qkd] warmup_s) before "
                                               "the modes, wall s per emulated s", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class WallTimeLimits:
    """``[limits]``: when ``qiot run`` announces a run, and when it asks before starting one."""

    announce_s: float = setting(doc="a run expected to take longer says at start how long, and where its "
                                    "results go", above=0.0)
    confirm_s: float = setting(doc="a run expected to take longer starts only after a yes at the terminal, "
                                   "or with --yes", above=0.0)


@dataclass(frozen=True, kw_only=True)
class QuickRun:
    """``[quick]``: the short run ``qiot run`` suggests as the alternative to a long one (README)."""

    hours: float = setting(doc="emulated hours per mode", above=0.0)
    time_scale: float = setting(doc="time scale", above=0.0)


@dataclass(frozen=True, kw_only=True)
class WallTimeSettings:
    """The whole ``experiments/walltime.toml``."""

    costs: WallTimeCosts = subsection(WallTimeCosts)
    limits: WallTimeLimits = subsection(WallTimeLimits)
    quick: QuickRun = subsection(QuickRun)


def load_settings(path: str | Path | None = None) -> WallTimeSettings:
    """Read ``path`` (default :data:`WALLTIME_FILE`); raise :class:`WallTimeError` naming the file and key
    on any problem."""
    path = WALLTIME_FILE if path is None else path
    return from_table(WallTimeSettings, read_toml(path, WallTimeError), path=path, error=WallTimeError)


@dataclass(frozen=True)
class Estimate:
    """A run's expected wall time, in its parts (wall seconds)."""

    modes: tuple[str, ...]
    hours: float  # emulated, per mode
    time_scale: float
    devices: int
    emulated_s: float  # every mode's emulated time, divided by the time scale
    first_keys_s: float  # the first device keys of the QKD mode, divided by the time scale
    testbed_s: float  # bring-up, the end of each mode, teardown
    analysis_s: float  # analysis and figures, after the teardown (metadata ``ended``)

    @property
    def total_s(self) -> float:
        """The whole run, from start to the last figure."""
        return self.emulated_s + self.first_keys_s + self.testbed_s + self.analysis_s

    @property
    def overhead_s(self) -> float:
        """What the time scale does not shorten: testbed and analysis."""
        return self.testbed_s + self.analysis_s

    def describe(self) -> str:
        """One line: the total and where it comes from."""
        modes = f"{len(self.modes)} mode{'s' if len(self.modes) > 1 else ''}"
        return (f"about {format_duration(self.total_s)}: {modes} x {self.hours:g} h emulated at "
                f"time scale {self.time_scale:g} ({format_duration(self.emulated_s)}), plus about "
                f"{format_duration(self.total_s - self.emulated_s)} to bring the testbed up"
                f"{', distil the first keys' if self.first_keys_s else ''}, end each mode and analyse")


def first_keys_emulated_s(qkd, devices: int) -> float:
    """Emulated seconds the QKD link needs for one key per device plus two post-processing blocks, at
    its calibrated rate (``qkd``: a :class:`~harness.qkd.config.QkdLinkConfig`)."""
    from harness.qkd.rate import secret_key_rate

    rate = secret_key_rate(qkd.loss_db, qkd.calibration, qkd)
    return max(0.0, devices * qkd.key_bits / max(rate, 1e-9) + 2 * qkd.post.block_duration_s - qkd.warmup_s)


def first_keys_wall_s(qkd, devices: int, time_scale: float, costs: WallTimeCosts) -> float:
    """Wall seconds from the QKD ends' start to the first device keys: the warm-up, distilled as fast
    as post-processing allows, then what is still missing at the time scale."""
    return qkd.warmup_s * costs.warmup_per_emulated_s + first_keys_emulated_s(qkd, devices) / time_scale


def estimate(settings, modes: Sequence[str], costs: WallTimeCosts) -> Estimate:
    """The expected wall time of a run of ``settings`` (a scenario's
    :class:`~harness.scenario.ScenarioSettings`, command-line overrides applied) in ``modes``."""
    run, devices = settings.run, settings.devices
    duration_s = run.hours * 3600.0
    count = devices.count
    first_keys = first_keys_wall_s(settings.qkd, count, run.time_scale, costs) if Mode.QKD in modes else 0.0
    messages = count * len(modes) * math.floor(duration_s / devices.wake_period_s)
    testbed = (costs.bring_up_s + costs.bring_up_per_device_s * count + costs.mode_end_s * len(modes)
               + costs.teardown_per_device_s * count)
    return Estimate(modes=tuple(modes), hours=run.hours, time_scale=run.time_scale, devices=count,
                    emulated_s=len(modes) * duration_s / run.time_scale, first_keys_s=first_keys,
                    testbed_s=testbed, analysis_s=costs.analysis_s + costs.analysis_per_message_s * messages)


def with_run(settings, hours: float | None = None, time_scale: float | None = None):
    """``settings`` with another run length or time scale (the estimate of a suggested run)."""
    import dataclasses

    run = dataclasses.replace(settings.run, **{k: v for k, v in (("hours", hours), ("time_scale", time_scale))
                                               if v is not None})
    return dataclasses.replace(settings, run=run)


def time_scale_within(settings, modes: Sequence[str], costs: WallTimeCosts, limit_s: float) -> float | None:
    """The smallest round time scale (1, 2, 3, 5 x 10^k) at which the run takes at most ``limit_s``,
    or None when its fixed costs alone take longer."""
    fixed = estimate(with_run(settings, time_scale=1.0), modes, costs)
    budget = limit_s - fixed.overhead_s
    if budget <= 0:
        return None
    return round_up((fixed.emulated_s + fixed.first_keys_s) / budget)


def round_up(value: float) -> float:
    """The smallest of 1, 2, 3, 5 x 10^k that is at least ``value``."""
    exponent = math.floor(math.log10(value))
    for mantissa in (1, 2, 3, 5, 10):
        candidate = mantissa * 10.0 ** exponent
        if candidate >= value * (1 - 1e-12):
            return float(f"{candidate:.12g}")
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """A wall time for people: ``40 s``, ``1.6 min``, ``12 min``, ``48 h 1 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3600 - 30:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")
