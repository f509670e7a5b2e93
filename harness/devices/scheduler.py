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
    per minute of emulated time (which shows a start-up backlog draining apart from a steady lag).

    Part of a wake's lag can be its own device's: the network is never accelerated, so a wake that
    takes longer than ``wake period / time scale`` of wall time (a TCP retransmission at 300x: 200 ms
    against a 60 s / 300 = 0.2 s budget) delays the device's next wake whatever the host does. That
    part (``overrun_s``) is counted apart, so a lag can be told from an overloaded host."""

    wakes: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    late_wakes: int = 0  # wakes that started later than ``late_threshold_s``
    late_threshold_s: float = 1.0
    overrun_wakes: int = 0  # wakes delayed by their own device's previous wake
    samples: Reservoir = field(default_factory=lambda: Reservoir(100_000))
    host_samples: Reservoir = field(default_factory=lambda: Reservoir(100_000))  # lag minus overrun
    by_minute: dict[int, Reservoir] = field(default_factory=dict)
    host_by_minute: dict[int, Reservoir] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    #: Lag samples kept per emulated minute (a uniform sample of the minute's wakes): enough for the
    #: p95 of a window, few enough that a 24 h run's minutes stay small to copy every snapshot.
    MINUTE_SAMPLES = 200
    #: Consecutive minutes are reported together until they hold this many wakes: a percentile of a
    #: handful of wakes is their maximum, and one late wake of a small fleet is not a backlog.
    WINDOW_WAKES = 100

    def add(self, lag_s: float, t_emul: float = 0.0, overrun_s: float = 0.0) -> None:
        """One wake ``lag_s`` late, ``overrun_s`` of it waiting for its own device's previous wake."""
        overrun_s = min(max(0.0, overrun_s), lag_s)
        with self._lock:
            self.wakes += 1
            self.total_s += lag_s
            self.max_s = max(self.max_s, lag_s)
            self.late_wakes += lag_s > self.late_threshold_s
            self.overrun_wakes += overrun_s > 0.0
            self.samples.add(lag_s)
            self.host_samples.add(lag_s - overrun_s)
            minute = int(t_emul // 60.0)
            if minute not in self.by_minute:
                self.by_minute[minute] = Reservoir(self.MINUTE_SAMPLES, seed=minute)
                self.host_by_minute[minute] = Reservoir(self.MINUTE_SAMPLES, seed=minute)
            self.by_minute[minute].add(lag_s)
            self.host_by_minute[minute].add(lag_s - overrun_s)

    def as_dict(self, time_scale: float = 1.0) -> dict:
        """The figures, in emulated seconds and (divided by ``time_scale``) in wall seconds;
        ``windows``: runs of emulated minutes of at least :attr:`WINDOW_WAKES` wakes (the last may
        hold fewer), each ``[first minute, last minute, wakes, p95 lag in wall s, p95 host lag in
        wall s]`` (host lag: the lag without the devices' own overruns)."""
        with self._lock:
            values, host = list(self.samples.values), list(self.host_samples.values)
            minutes = [(m, r.seen, list(r.values), list(self.host_by_minute[m].values))
                       for m, r in sorted(self.by_minute.items())]
            overrun_wakes = self.overrun_wakes
        p95 = percentile(values, 95)
        windows, current = [], None
        for minute, seen, lags, host_lags in minutes:
            if current is None:
                current = [minute, minute, 0, [], []]
            current[1], current[2] = minute, current[2] + seen
            current[3] += lags
            current[4] += host_lags
            if current[2] >= self.WINDOW_WAKES:
                windows.append(current)
                current = None
        if current is not None:
            windows.append(current)
        return {"wakes": self.wakes, "mean_s": self.total_s / self.wakes if self.wakes else 0.0,
                "p95_s": p95, "max_s": self.max_s, "late_wakes": self.late_wakes,
                "late_threshold_s": self.late_threshold_s, "p95_wall_s": p95 / time_scale,
                "max_wall_s": self.max_s / time_scale,
                "overrun_wakes": overrun_wakes, "host_p95_wall_s": percentile(host, 95) / time_scale,
                "windows": [[first, last, wakes, round(percentile(lags, 95) / time_scale, 4),
                             round(percentile(host_lags, 95) / time_scale, 4)]
                            for first, last, wakes, lags, host_lags in windows]}


class WakeScheduler:
    """Runs the agents' wakes in emulated-time order until ``end_s`` (or until ``stop`` is set).

    ``workers`` > 1 runs wakes concurrently (a run); 1 runs them inline (a simulation, or tests).
    ``enter(agent)`` is called in the worker thread before each of the agent's wakes. ``lag`` records
    each wake's lag (``add(lag_s, t_emul)``): its own :class:`LagStats` unless given (a fleet's shard
    passes one that reports to its coordinator). ``on_failure(text)`` hears of a failing device at once.
    """

    def __init__(self, clock: Clock, workers: int = 1, enter: Callable[[Agent], None] | None = None,
                 stop: threading.Event | None = None, lag=None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.clock, self.workers, self.enter, self.on_failure = clock, max(1, workers), enter, on_failure
        self.stop = stop or threading.Event()
        self.lag = lag if lag is not None else LagStats()
        self.failures: list[str] = []
        # Each device's last wake: (scheduled time, the device's own part of its lag, how long it took).
        self._last: dict[str, tuple[float, float, float]] = {}

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
        started = self.clock.now()
        lag = max(0.0, started - t_wake)
        own = self._overrun(agent.device_id, t_wake, lag)
        self.lag.add(lag, t_wake, own)
        try:
            if self.enter is not None:
                self.enter(agent)
            return agent.wake(t_wake, end_s)
        except Exception as exc:  # one broken device must not end the others' run; it is reported
            failure = f"{agent.device_id}: {type(exc).__name__}: {exc}"
            self.failures.append(failure)
            if self.on_failure is not None:
                self.on_failure(failure)
            return None
        finally:
            self._last[agent.device_id] = (t_wake, own, self.clock.now() - started)

    def _overrun(self, device_id: str, t_wake: float, lag: float) -> float:
        """The device's own part of this wake's lag: how late its previous wake would have ended had
        that wake started only as late as the device itself made it (its own part of that lag), past
        this wake's scheduled time. The rest of the lag is the host's (a pool or CPU that was busy).
        A wake's duration counts as the device's: what the host added to it is the exchanges' excess."""
        previous = self._last.get(device_id)
        if previous is None:
            return 0.0
        t_previous, own_previous, duration = previous
        return min(lag, max(0.0, t_previous + own_previous + duration - t_wake))
