"""Emulated time: one clock that every process of a run agrees on.

Everything that sleeps or is periodic (device wake cycles, key refresh, QKD key production, energy
accounting) runs on emulated time; the network runs in real time. With ``time_scale = X`` one wall
second is X emulated seconds, so waits are divided by X while packets still take their real time.
Every process of a run gets the same ``epoch_wall`` and ``time_scale`` and so computes the same
emulated "now" without talking to the others.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class EmulatedClock:
    """Maps wall-clock time onto emulated seconds since ``epoch_wall`` (a ``time.time()`` value)."""

    epoch_wall: float
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale!r}")

    @classmethod
    def starting_now(cls, time_scale: float = 1.0) -> "EmulatedClock":
        """A clock whose emulated zero is this instant."""
        return cls(time.time(), time_scale)

    def now(self) -> float:
        """Emulated seconds elapsed since the epoch."""
        return (time.time() - self.epoch_wall) * self.time_scale

    def wall_for(self, emulated_s: float) -> float:
        """The wall-clock time (epoch seconds) at which emulated time ``emulated_s`` is reached."""
        return self.epoch_wall + emulated_s / self.time_scale

    def sleep(self, emulated_s: float, stop: threading.Event | None = None) -> bool:
        """Sleep for ``emulated_s`` emulated seconds; return False early if ``stop`` gets set."""
        return self.sleep_until(self.now() + emulated_s, stop)

    def sleep_until(self, emulated_t: float, stop: threading.Event | None = None) -> bool:
        """Sleep until emulated time ``emulated_t``; return False early if ``stop`` gets set."""
        remaining = self.wall_for(emulated_t) - time.time()
        if remaining <= 0:
            return not (stop and stop.is_set())
        if stop is None:
            time.sleep(remaining)
            return True
        return not stop.wait(remaining)

    def as_args(self) -> list[str]:
        """Command-line arguments that hand this clock to a child process."""
        return ["--clock-epoch", repr(self.epoch_wall), "--time-scale", repr(self.time_scale)]
