"""How ``qiot run`` shows its progress: a bar on a terminal, one line per emulated interval in a log.

Both are the runner's ``progress(mode, fraction, counters)`` callback (:class:`harness.runner.RunOptions`),
called about twice a second with what the devices have done so far. A progress bar redrawn in place
means nothing in a log file (click writes only its label there), so where stderr is not a terminal
:class:`ProgressLines` writes one complete, time-stamped line each time the emulated clock passes
another energy interval of the run (``energy_interval_s`` in the metadata), and one when a mode starts.
:class:`RunDirNotice` says where the run directory is as soon as the runner has made it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import click

from harness.walltime import format_duration

Progress = Callable[[str, float, dict], None]


def _counters_text(counters: dict) -> str:
    return (f"{counters.get('emulated_h', 0):.2f}/{counters.get('hours', 0):g} h emulated, "
            f"{counters.get('devices', 0)} devices, wakes {counters.get('wakes', 0)}, "
            f"received {counters.get('received', 0)}")


class ProgressBar:
    """A click progress bar per mode on stderr, advanced with the emulated clock."""

    STEPS = 1000

    def __init__(self) -> None:
        self.mode = None
        self.bar = None
        self.done = 0
        self._counters = ""

    def __call__(self, mode: str, fraction: float, counters: dict) -> None:
        if mode != self.mode:
            self.finish()
            self.mode = mode
            self.bar = click.progressbar(length=self.STEPS, label=f"{mode:>4s}", show_eta=True,
                                         item_show_func=lambda _: self._counters, file=sys.stderr)
            self.bar.__enter__()
            self.done = 0
        self._counters = _counters_text(counters)
        target = int(fraction * self.STEPS)
        self.bar.update(max(0, target - self.done), current_item=mode)
        self.done = max(self.done, target)

    def finish(self) -> None:
        """Close the current bar (the next line of output starts on a line of its own)."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.mode = None


class ProgressLines:
    """One line per emulated ``interval_s`` of each mode, for a log file.

    ``write`` takes a line (default: stderr); ``clock`` gives wall seconds (default: monotonic), so a
    test can drive it. The line of the interval's end carries the counters, the wall time the mode
    has taken and the time it should still take at the pace so far.
    """

    def __init__(self, interval_s: float, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        self.write = write or (lambda line: click.echo(line, err=True))
        self.clock = clock
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.mode: str | None = None
        self.started = 0.0
        self.intervals = 0
        self.ended = False

    def __call__(self, mode: str, fraction: float, counters: dict) -> None:
        wall = self.clock()
        if mode != self.mode:
            self.mode, self.started, self.intervals, self.ended = mode, wall, 0, False
            self._line(f"{mode}: devices started, {counters.get('hours', 0):g} h emulated, a line every "
                       f"{self.interval_s:g} emulated s")
        if self.ended:
            return
        intervals = math.floor(counters.get("emulated_h", 0.0) * 3600.0 / self.interval_s + 1e-9)
        if intervals <= self.intervals and fraction < 1.0:
            return
        self.intervals, self.ended = intervals, fraction >= 1.0
        elapsed = wall - self.started
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        pace = "" if self.ended or left is None else f", about {format_duration(left)} left"
        self._line(f"{mode}: {_counters_text(counters)} ({100 * fraction:.0f} %), "
                   f"{format_duration(elapsed)} elapsed{pace}")

    def _line(self, text: str) -> None:
        self.write(f"{self.now().strftime('%Y-%m-%dT%H:%M:%SZ')} qiot: {text}")

    def finish(self) -> None:
        """Nothing to close: every line is complete when written."""


class RunDirNotice:
    """Wraps a progress callback: at its first call, says which run directory of ``out_dir`` the run
    writes to (the newest one made since this object was, whose metadata says ``running``)."""

    def __init__(self, out_dir: Path, progress: Progress | None, write: Callable[[str], None] | None = None) -> None:
        self.out_dir = out_dir
        self.before = set(self._entries())
        self.progress = progress
        self.write = write or click.echo
        self.told = False

    def _entries(self) -> list[Path]:
        try:
            return [p for p in self.out_dir.iterdir() if p.is_dir()]
        except OSError:
            return []

    def run_dir(self) -> Path | None:
        """The run directory made since this object was, or None while there is none."""
        fresh = [p for p in self._entries() if p not in self.before and _status(p) == "running"]
        return max(fresh, key=lambda p: p.stat().st_mtime) if fresh else None

    def __call__(self, mode: str, fraction: float, counters: dict) -> None:
        if not self.told:
            self.told = True
            found = self.run_dir()
            if found is not None:
                self.write(f"qiot: writing to {found} (kept, marked interrupted, if the run is stopped)")
        if self.progress is not None:
            self.progress(mode, fraction, counters)

    def finish(self) -> None:
        """Finish the wrapped progress display."""
        if self.progress is not None:
            self.progress.finish()


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "metadata.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None
