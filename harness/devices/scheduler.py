"""When devices wake: one scheduler for the emulated run and the pure simulation.

Every agent's next wake sits in one heap ordered by emulated time. With a :class:`VirtualClock`
(the simulation) the scheduler runs the wakes one after the other in time order, without waiting;
with the run's :class:`~harness.clock.EmulatedClock` it waits for each wake's time and hands the wake
to a pool of worker threads, so a device blocked on the network does not hold up the others. A
worker first enters the device's network namespace (``enter``), so the sockets of the wake are the
device's own. Thousands of devices thus need no thread each: devices sleep most of the time, and
the pool is sized for the wakes in flight.

It also measures whether the emulation keeps up: how late each wake started against its scheduled
emulated time (``lag``), which the run reports as emulation health.
"""

from __future__ import annotations

import heapq
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from harness.health import Reservoir, percentile


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, emulated_t: float, stop: threading.Event | None = None) -> bool: ...

    def wall_for(self, emulated_s: float) -> float: ...


class Agent(Protocol):
    device_id: str

    @property
    def first_wake_s(self) -> float: ...

    def wake(self, t_wake: float, end_s: float) -> float: ...

    def finish(self, t_end: float) -> None: ...


class VirtualClock:
    """Emulated time that jumps to whatever it is asked to wait for: a simulation never waits."""

    def __init__(self) -> None:
        self._now = 0.0

    def now(self) -> float:
        return self._now

    def sleep_until(self, emulated_t: float, stop: threading.Event | None = None) -> bool:
        self._now = max(self._now, emulated_t)
        return not (stop is not None and stop.is_set())

    def wall_for(self, emulated_s: float) -> float:
        return 0.0  # always due


@dataclass
class LagStats:
    """How late wakes started against their scheduled emulated time (emulated seconds), overall and
    per minute of emulated time (which shows a start-up backlog draining apart from a steady lag)."""

    wakes: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    late_wakes: int = 0  # wakes that started later than ``late_threshold_s``
    late_threshold_s: float = 1.0
    samples: Reservoir = field(default_factory=lambda: Reservoir(100_000))
    by_minute: dict[int, Reservoir] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    #: Lag samples kept per emulated minute (a uniform sample of the minute's wakes): enough for the
    #: p95 of a window, few enough that a 24 h run's minutes stay small to copy every snapshot.
    MINUTE_SAMPLES = 200
    #: Consecutive minutes are reported together until they hold this many wakes: a percentile of a
    #: handful of wakes is their maximum, and one late wake of a small fleet is not a backlog.
    WINDOW_WAKES = 100

    def add(self, lag_s: float, t_emul: float = 0.0) -> None:
        with self._lock:
            self.wakes += 1
            self.total_s += lag_s
            self.max_s = max(self.max_s, lag_s)
            self.late_wakes += lag_s > self.late_threshold_s
            self.samples.add(lag_s)
            minute = int(t_emul // 60.0)
            if minute not in self.by_minute:
                self.by_minute[minute] = Reservoir(self.MINUTE_SAMPLES, seed=minute)
            self.by_minute[minute].add(lag_s)

    def as_dict(self, time_scale: float = 1.0) -> dict:
        """The figures, in emulated seconds and (divided by ``time_scale``) in wall seconds;
        ``windows``: runs of emulated minutes of at least :attr:`WINDOW_WAKES` wakes (the last may
        hold fewer), each ``[first minute, last minute, wakes, p95 lag in wall s]``."""
        with self._lock:
            values = list(self.samples.values)
            minutes = [(m, r.seen, list(r.values)) for m, r in sorted(self.by_minute.items())]
        p95 = percentile(values, 95)
        windows, current = [], None
        for minute, seen, lags in minutes:
            if current is None:
                current = [minute, minute, 0, []]
            current[1], current[2] = minute, current[2] + seen
            current[3] += lags
            if current[2] >= self.WINDOW_WAKES:
                windows.append(current)
                current = None
        if current is not None:
            windows.append(current)
        return {"wakes": self.wakes, "mean_s": self.total_s / self.wakes if self.wakes else 0.0,
                "p95_s": p95, "max_s": self.max_s, "late_wakes": self.late_wakes,
                "late_threshold_s": self.late_threshold_s, "p95_wall_s": p95 / time_scale,
                "max_wall_s": self.max_s / time_scale,
                "windows": [[first, last, wakes, round(percentile(lags, 95) / time_scale, 4)]
                            for first, last, wakes, lags in windows]}


class WakeScheduler:
    """Runs the agents' wakes in emulated-time order until ``end_s`` (or until ``stop`` is set).

    ``workers`` > 1 runs wakes concurrently (a run); 1 runs them inline (a simulation, or tests).
    ``enter(agent)`` is called in the worker thread before each of the agent's wakes.
    """

    def __init__(self, clock: Clock, workers: int = 1, enter: Callable[[Agent], None] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.clock, self.workers, self.enter = clock, max(1, workers), enter
        self.stop = stop or threading.Event()
        self.lag = LagStats()
        self.failures: list[str] = []

    def run(self, agents: Sequence[Agent], end_s: float) -> None:
        heap = [(min(agent.first_wake_s, end_s), index) for index, agent in enumerate(agents)]
        heapq.heapify(heap)
        if self.workers == 1:
            self._run_inline(agents, heap, end_s)
        else:
            self._run_pooled(agents, heap, end_s)
        # Account up to where the run ended: its end, or now if it was stopped.
        t_end = end_s if not self.stop.is_set() else min(end_s, max(self.clock.now(), 0.0))
        for agent in agents:
            agent.finish(t_end)

    def _run_inline(self, agents, heap, end_s) -> None:
        while heap and not self.stop.is_set():
            t_wake, index = heapq.heappop(heap)
            if t_wake >= end_s or not self.clock.sleep_until(t_wake, self.stop):
                continue
            next_wake = self._wake(agents[index], t_wake, end_s)
            if next_wake is not None and next_wake < end_s:
                heapq.heappush(heap, (next_wake, index))

    def _run_pooled(self, agents, heap, end_s) -> None:
        changed = threading.Condition()  # a wake finished: the heap may hold an earlier next wake
        in_flight = 0

        def work(index: int, t_wake: float) -> None:
            nonlocal in_flight
            next_wake = self._wake(agents[index], t_wake, end_s)
            with changed:
                if next_wake is not None and next_wake < end_s:
                    heapq.heappush(heap, (next_wake, index))
                in_flight -= 1
                changed.notify()

        with ThreadPoolExecutor(self.workers, thread_name_prefix="wake") as pool:
            while not self.stop.is_set():
                with changed:
                    if not heap:
                        if not in_flight:
                            break
                        changed.wait(0.5)
                        continue
                    t_wake, index = heap[0]
                    if t_wake >= end_s:
                        heapq.heappop(heap)
                        continue
                    delay = self.clock.wall_for(t_wake) - time.time()
                    if delay > 0:
                        changed.wait(min(delay, 0.5))  # then look again: an earlier wake may be due
                        continue
                    heapq.heappop(heap)
                    in_flight += 1
                pool.submit(work, index, t_wake)

    def _wake(self, agent: Agent, t_wake: float, end_s: float) -> float | None:
        """One wake of one agent, its lag recorded; a failing agent is reported and not rescheduled."""
        self.lag.add(max(0.0, self.clock.now() - t_wake), t_wake)
        try:
            if self.enter is not None:
                self.enter(agent)
            return agent.wake(t_wake, end_s)
        except Exception as exc:  # one broken device must not end the others' run; it is reported
            self.failures.append(f"{agent.device_id}: {type(exc).__name__}: {exc}")
            return None
