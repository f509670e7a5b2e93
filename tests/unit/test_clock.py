"""The emulated clock: scaling of waits, and early wake-up when a run stops."""

import threading
import time

import pytest

from harness.clock import EmulatedClock


def test_emulated_time_runs_time_scale_times_faster():
    clock = EmulatedClock(time.time(), time_scale=100.0)
    start = time.monotonic()
    assert clock.sleep(5.0)  # 5 emulated seconds = 50 ms of wall time
    elapsed = time.monotonic() - start
    assert 0.045 <= elapsed < 0.5
    assert clock.now() == pytest.approx(5.0, abs=3.0)


def test_wall_for_inverts_now():
    clock = EmulatedClock(1000.0, time_scale=60.0)
    assert clock.wall_for(120.0) == pytest.approx(1002.0)


def test_stop_event_ends_a_sleep_early():
    clock = EmulatedClock(time.time(), time_scale=1.0)
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    start = time.monotonic()
    assert clock.sleep(30.0, stop) is False
    assert time.monotonic() - start < 5.0


def test_time_scale_must_be_positive():
    with pytest.raises(ValueError):
        EmulatedClock(0.0, 0.0)
