"""Energest-like accounting: time per power state of one device on its emulated timeline.

Like Contiki's Energest, each device is in exactly one state at any instant and the accounting adds
the time spent in it; unlike Energest the states are exclusive whole-chip states (an ESP32's radio
cannot listen with the CPU off), so the state times always add up to the elapsed emulated time:

- ``deep_sleep``: RTC timer only;
- ``cpu``: CPU active, radio off (boot, sensing or crypto before association);
- ``radio_tx``: transmitting (air time estimated from bytes sent and the profile's PHY rate);
- ``radio_listen``: receiver on: waiting for and receiving frames, and (if the profile says the radio
  listens while associated) any CPU work done while associated.

RDC = (radio_tx + radio_listen) / total (Contiki powertrace / simple-energest, reference.md §6);
energy = sum I*V*t; battery lifetime = usable capacity / (average current + self-discharge).
Time advances only through charges, so a host thousands of times faster than an ESP32 still accounts
ESP32 time: a compute step charges the profile's time, not the host's.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from harness.energy.profile import DeviceProfile

#: The exclusive power states, in energy.csv column order.
STATES = ("deep_sleep", "cpu", "radio_tx", "radio_listen")
#: States during which the radio is on (numerator of the RDC).
RADIO_ON_STATES = ("radio_tx", "radio_listen")
#: energy.csv columns (documented in docs/results.md).
ENERGY_CSV_COLUMNS = (["device", "interval", "t_start_s", "t_end_s"] + [f"t_{s}_s" for s in STATES]
                      + ["rdc", "energy_j", "avg_current_ma", "battery_life_days"])

HOURS_PER_DAY = 24.0


def rdc(times: Mapping[str, float]) -> float:
    """Radio duty cycle: radio-on time over total time (0 for an empty span)."""
    total = sum(times.values())
    return sum(times.get(s, 0.0) for s in RADIO_ON_STATES) / total if total > 0 else 0.0


def charge_mas(times: Mapping[str, float], profile: DeviceProfile) -> float:
    """Charge drawn, in mA*s: sum of state current times state time."""
    currents = profile.currents_ma
    return sum(currents[state] * seconds for state, seconds in times.items())


def energy_j(times: Mapping[str, float], profile: DeviceProfile) -> float:
    """Energy in joules: sum I*V*t over the states."""
    return charge_mas(times, profile) / 1000.0 * profile.voltage_v


def avg_current_ma(times: Mapping[str, float], profile: DeviceProfile) -> float:
    """Average current over the span, mA (0 for an empty span)."""
    total = sum(times.values())
    return charge_mas(times, profile) / total if total > 0 else 0.0


def battery_life_days(average_current_ma: float, profile: DeviceProfile) -> float:
    """Projected lifetime in days: usable capacity / (average current + self-discharge current)."""
    drain = average_current_ma + profile.self_discharge_ma
    return profile.battery_capacity_mah / drain / HOURS_PER_DAY if drain > 0 else math.inf


@dataclass(frozen=True)
class IntervalRow:
    """One energy.csv row: a device's state times and derived figures over [t_start_s, t_end_s)."""

    device: str
    interval: int
    t_start_s: float
    t_end_s: float
    times: Mapping[str, float]
    rdc: float
    energy_j: float
    avg_current_ma: float
    battery_life_days: float

    @classmethod
    def from_times(cls, profile: DeviceProfile, device: str, interval: int, t_start_s: float,
                   t_end_s: float, times: Mapping[str, float]) -> "IntervalRow":
        """Build a row, deriving RDC, energy, average current and lifetime from the state times."""
        current = avg_current_ma(times, profile)
        return cls(device, interval, t_start_s, t_end_s, dict(times), rdc(times), energy_j(times, profile),
                   current, battery_life_days(current, profile))

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    def as_csv(self) -> dict[str, object]:
        """The row as a dict keyed by :data:`ENERGY_CSV_COLUMNS`."""
        row: dict[str, object] = {"device": self.device, "interval": self.interval,
                                  "t_start_s": self.t_start_s, "t_end_s": self.t_end_s}
        row.update({f"t_{s}_s": self.times.get(s, 0.0) for s in STATES})
        row.update(rdc=self.rdc, energy_j=self.energy_j, avg_current_ma=self.avg_current_ma,
                   battery_life_days=self.battery_life_days)
        return row


def write_energy_csv(path: str | Path, rows: Iterable[IntervalRow], append: bool = False) -> None:
    """Write rows to ``path`` as energy.csv; with ``append`` add to it (header only if the file is new)."""
    path = Path(path)
    fresh = not (append and path.exists() and path.stat().st_size > 0)
    with open(path, "a" if append else "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ENERGY_CSV_COLUMNS)
        if fresh:
            writer.writeheader()
        for row in rows:
            writer.writerow(row.as_csv())


class DeviceTimeline:
    """One device's emulated timeline and Energest counters, rolled over every ``interval_s``.

    Intervals are aligned on emulated time 0 (interval k covers [k*interval_s, (k+1)*interval_s)), so
    the rows of all devices line up per emulated hour. One object per device; it is not thread-safe,
    but objects share nothing, so many devices can live in one process.
    """

    def __init__(self, profile: DeviceProfile, device: str = "d1", start_s: float = 0.0,
                 interval_s: float = 3600.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s must be a finite time >= 0, got {start_s!r}")
        self.profile = profile
        self.device = device
        self.interval_s = float(interval_s)
        self.start_s = float(start_s)
        self._now = float(start_s)
        self._associated = False
        self._index = int(start_s // interval_s)
        self._interval_start = self._now
        self._current = dict.fromkeys(STATES, 0.0)
        self._total = dict.fromkeys(STATES, 0.0)
        self._done: list[IntervalRow] = []
        self._popped = 0

    # --- state --------------------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Emulated time the device has reached, seconds since the run started."""
        return self._now

    @property
    def elapsed_s(self) -> float:
        return self._now - self.start_s

    @property
    def associated(self) -> bool:
        """Whether the device is associated with the access point (its radio then listens)."""
        return self._associated

    def set_associated(self, associated: bool) -> None:
        self._associated = bool(associated)

    def totals(self) -> dict[str, float]:
        """Seconds per state since the timeline started."""
        return dict(self._total)

    # --- charging -----------------------------------------------------------------------------
    def charge(self, state: str, seconds: float) -> None:
        """Spend ``seconds`` of emulated time in ``state``, splitting it across interval boundaries."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r} (known: {', '.join(STATES)})")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        remaining = float(seconds)
        while remaining > 0:
            boundary = (self._index + 1) * self.interval_s
            room = boundary - self._now
            if remaining < room:
                self._add(state, remaining)
                self._now += remaining
                return
            self._add(state, room)
            self._now = boundary  # land exactly on the boundary: no drift from repeated sums
            remaining -= room
            self._roll()

    def busy(self, seconds: float) -> str:
        """Charge CPU work of fixed length; returns the state charged (radio listen if associated)."""
        state = self._busy_state()
        self.charge(state, seconds)
        return state

    def compute(self, op: str, nbytes: int = 0) -> float:
        """Charge one crypto operation at the profile's ESP32 time; returns the seconds charged."""
        seconds = self.profile.op_seconds(op, nbytes)
        self.charge(self._busy_state(), seconds)
        return seconds

    def network(self, duration_s: float, bytes_tx: int = 0, frames: int | None = None) -> tuple[float, float]:
        """Charge a measured network exchange of ``duration_s`` emulated seconds.

        TX air time is estimated from ``bytes_tx`` (and ``frames``) at the profile's PHY rate; the rest
        of the exchange is radio listen. If the estimate exceeds the measured duration, the exchange is
        taken to last the air time. Returns (tx_s, listen_s).
        """
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
        if bytes_tx < 0:
            raise ValueError(f"bytes_tx must be >= 0, got {bytes_tx}")
        tx = self.profile.tx_airtime_s(bytes_tx, frames)
        listen = max(0.0, duration_s - tx)
        self.charge("radio_tx", tx)
        self.charge("radio_listen", listen)
        return tx, listen

    def sleep_until(self, t_emul: float) -> float:
        """Deep-sleep until emulated time ``t_emul`` (nothing if already past); returns seconds slept.

        Sleeping drops the association: the ESP32 powers its radio down in deep sleep.
        """
        self._associated = False
        seconds = max(0.0, t_emul - self._now)
        self.charge("deep_sleep", seconds)
        return seconds

    # --- results ------------------------------------------------------------------------------
    @property
    def rows(self) -> list[IntervalRow]:
        """Every completed interval so far."""
        return list(self._done)

    def pop_rows(self) -> list[IntervalRow]:
        """Completed intervals not returned by an earlier pop_rows (for streaming to energy.csv)."""
        new = self._done[self._popped:]
        self._popped = len(self._done)
        return new

    def partial_row(self) -> IntervalRow | None:
        """The interval in progress as a row (None if no time has passed in it)."""
        if self._now <= self._interval_start:
            return None
        return IntervalRow.from_times(self.profile, self.device, self._index, self._interval_start,
                                      self._now, self._current)

    def cumulative_row(self) -> IntervalRow:
        """The whole timeline as one row (interval -1)."""
        return IntervalRow.from_times(self.profile, self.device, -1, self.start_s, self._now, self._total)

    def _busy_state(self) -> str:
        return "radio_listen" if self._associated and self.profile.radio_listens_while_associated else "cpu"

    def _add(self, state: str, seconds: float) -> None:
        self._current[state] += seconds
        self._total[state] += seconds

    def _roll(self) -> None:
        self._done.append(IntervalRow.from_times(self.profile, self.device, self._index,
                                                 self._interval_start, self._now, self._current))
        self._index += 1
        self._interval_start = self._now
        self._current = dict.fromkeys(STATES, 0.0)
