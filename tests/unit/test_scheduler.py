"""The wake scheduler: emulated-time order, the same agents inline (simulation) and pooled (run)."""

import threading
import time

from harness.clock import EmulatedClock
from harness.devices.scheduler import VirtualClock, WakeScheduler


class Recorder:
    """An agent that records when it was woken (emulated and wall) and wakes every ``period``."""

    def __init__(self, name, first, period, log, clock=None, busy_s=0.0):
        self.device_id, self.first, self.period, self.log, self.clock, self.busy_s = name, first, period, log, clock, busy_s
        self.finished = None

    @property
    def first_wake_s(self):
        return self.first

    def wake(self, t_wake, end_s):
        self.log.append((t_wake, self.device_id, self.clock.now() if self.clock else t_wake))
        time.sleep(self.busy_s)
        return t_wake + self.period

    def finish(self, t_end):
        self.finished = t_end


def test_inline_runs_every_wake_in_time_order_until_the_end():
    log = []
    agents = [Recorder("a", 5.0, 30.0, log), Recorder("b", 0.0, 20.0, log)]
    WakeScheduler(VirtualClock()).run(agents, 100.0)
    assert [t for t, _, _ in log] == sorted(t for t, _, _ in log)
    assert [(t, d) for t, d, _ in log] == [(0, "b"), (5, "a"), (20, "b"), (35, "a"), (40, "b"), (60, "b"),
                                           (65, "a"), (80, "b"), (95, "a")]
    assert all(a.finished == 100.0 for a in agents)


def test_pooled_wakes_happen_at_their_emulated_time_with_blocked_devices_in_parallel():
    log = []
    clock = EmulatedClock(time.time() + 0.1, 100.0)  # 1 wall s = 100 emulated s
    # Each wake blocks 0.2 wall s (20 emulated s): 8 devices waking together need the pool.
    agents = [Recorder(f"d{i}", 10.0, 60.0, log, clock, busy_s=0.2) for i in range(8)]
    scheduler = WakeScheduler(clock, workers=8)
    started = time.monotonic()
    scheduler.run(agents, 130.0)
    assert len(log) == 8 * 2 and sorted({t for t, _, _ in log}) == [10.0, 70.0]  # a wake at the end is not run
    lags = [now - t for t, _, now in log]
    assert max(lags) < 10.0, lags  # 8 concurrent wakes: none waited for another's 20 emulated s
    assert scheduler.lag.wakes == len(log) and scheduler.lag.max_s < 10.0
    assert time.monotonic() - started < 2.5


def test_a_failing_device_is_reported_and_the_others_go_on():
    log = []

    class Broken(Recorder):
        def wake(self, t_wake, end_s):
            raise OSError("radio on fire")

    agents = [Broken("bad", 0.0, 10.0, log), Recorder("good", 1.0, 10.0, log)]
    scheduler = WakeScheduler(VirtualClock())
    scheduler.run(agents, 50.0)
    assert scheduler.failures == ["bad: OSError: radio on fire"]
    assert [d for _, d, _ in log] == ["good"] * 5


def test_stop_ends_the_run_early_and_agents_account_to_where_it_stopped():
    log, stop = [], threading.Event()
    clock = EmulatedClock(time.time(), 100.0)
    agents = [Recorder("a", 0.0, 10.0, log, clock)]
    threading.Timer(0.3, stop.set).start()
    WakeScheduler(clock, workers=2, stop=stop).run(agents, 10_000.0)
    assert 2 <= len(log) <= 6
    assert 20.0 <= agents[0].finished <= 60.0
