"""The fleet's shards: how many, the line protocol between a shard and its coordinator, the shared
CSV files, and the lag a device's own slow wake causes told apart from the host's."""

from __future__ import annotations

import io
import multiprocessing
import threading
import time

import pandas as pd
import pytest

from harness.devices import shards
from harness.devices.agent import SentRecord
from harness.devices.fleet import CsvSink, ExchangeStats
from harness.devices.scheduler import VirtualClock, WakeScheduler
from harness.energy import DeviceProfile


def test_one_shard_per_pool_of_devices_up_to_the_maximum():
    assert shards.shard_count(3, 16, 4) == 1
    assert shards.shard_count(16, 16, 4) == 1
    assert shards.shard_count(17, 16, 4) == 2
    assert shards.shard_count(50, 16, 4) == 4
    assert shards.shard_count(13_000, 16, 4) == 4
    assert shards.shard_count(0, 16, 4) == 1


@pytest.mark.parametrize("text", ["4", "a/b", "4/4", "-1/4", "1/0", "1/2/3"])
def test_a_bad_shard_is_a_one_line_error(text):
    with pytest.raises(ValueError, match="--shard"):
        shards.parse_shard(text)
    assert shards.parse_shard("3/4") == (3, 4)


def test_what_a_shard_emits_is_what_its_coordinator_counts(capsys):
    stream = io.StringIO()
    emitter = shards.LineEmitter(stream, flush_every_s=0.01)
    lag = shards.EmittedLag(emitter)

    def wake_thread(offset: int) -> None:
        for i in range(500):
            lag.add(0.5 if i % 10 == 0 else 0.0, t_emul=60.0 * offset + i * 0.1, overrun_s=0.5 if i % 20 == 0 else 0.0)
            emitter.emit("X", "publish", f"{10.0 + i % 3:.3f}")

    threads = [threading.Thread(target=wake_thread, args=(k,)) for k in range(4)]
    emitter.emit("READY", "devices=7")
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emitter.emit("X", "qkd_fetch", "-")
    emitter.emit("K", "d3", 2)
    emitter.emit("C", 12.5, 63.8)
    emitter.emit("F", shards.quote("d4: OSError: no route to host\n  (the relay at 10.1.0.1)"))
    emitter.emit("hello")
    emitter.emit(shards.END)
    emitter.close()

    profile = DeviceProfile.load("fipy-micropython")
    aggregate = shards.Aggregate(exchanges=ExchangeStats(profile, 0.01))
    for line in stream.getvalue().splitlines(keepends=True):
        aggregate.feed(0, line)
    state = aggregate.shards[0]
    assert state.ready and state.ended and state.devices == 7
    assert (state.cpu_s, state.max_rss_mib) == (12.5, 63.8)
    assert aggregate.lag.wakes == 2000 and lag.wakes == 2000
    assert aggregate.lag.late_wakes == 0 and aggregate.lag.overrun_wakes == 100
    report = aggregate.lag.as_dict()
    assert report["max_s"] == 0.5
    exchanges = aggregate.exchanges.as_dict()
    assert exchanges["count"] == 2000 and exchanges["failed"] == 1
    assert exchanges["excess_max_ms"] == pytest.approx(12.0)
    assert aggregate.key_failures == {"d3": 2}
    assert aggregate.failures == ["d4: OSError: no route to host\n  (the relay at 10.1.0.1)"]
    assert "shard 0: hello" in capsys.readouterr().out  # stray output kept in the log, not lost


def _append_rows(mode_dir, shard: int, rows: int) -> None:
    sink = CsvSink(mode_dir)
    for seq in range(rows):
        sink.sent(SentRecord(f"d{shard}", seq, seq * 60.0, 1.0, 2.0, True, "k" * 40, False, "x" * (seq % 50)))
    sink.close()


def test_shards_append_to_one_file_without_interleaving_rows(tmp_path):
    mode_dir = tmp_path / "qkd"
    CsvSink.prepare(mode_dir)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_rows, args=(mode_dir, k, 20_000)) for k in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    sent = pd.read_csv(mode_dir / "sent.csv", keep_default_na=False)
    assert list(sent.columns) == list(SentRecord.FIELDS)
    assert len(sent) == 60_000
    for k in range(3):
        mine = sent[sent["device"] == f"d{k}"]
        assert sorted(mine["seq"]) == list(range(20_000))  # every row whole, none lost
        assert (mine["error"].str.len() == mine["seq"] % 50).all()
    assert (mode_dir / "energy.csv").read_text().startswith("device,interval,")


class SlowAgent:
    """A device whose every wake takes ``busy_s`` emulated seconds of a ``period_s`` schedule."""

    def __init__(self, device_id: str, clock: VirtualClock, period_s: float, busy_s: float) -> None:
        self.device_id, self.clock, self.period_s, self.busy_s = device_id, clock, period_s, busy_s
        self.first_wake_s = 0.0

    def wake(self, t_wake: float, end_s: float) -> float:
        self.clock.sleep_until(self.clock.now() + self.busy_s)
        return t_wake + self.period_s

    def finish(self, t_end: float) -> None:
        pass


def test_a_device_outrunning_its_period_is_its_own_lag_not_the_hosts():
    clock = VirtualClock()
    scheduler = WakeScheduler(clock)
    scheduler.run([SlowAgent("d1", clock, period_s=10.0, busy_s=15.0)], end_s=100.0)
    report = scheduler.lag.as_dict()
    # Wake k starts when wake k-1 ended, at 15 k: 5 k s late, all of it the device's own.
    assert report["wakes"] == 10
    assert report["max_s"] == pytest.approx(45.0)
    assert report["overrun_wakes"] == 9
    assert report["host_p95_wall_s"] == 0.0
    assert all(window[4] == 0.0 for window in report["windows"])


def test_a_device_keeping_its_period_has_no_overrun():
    clock = VirtualClock()
    scheduler = WakeScheduler(clock)
    scheduler.run([SlowAgent("d1", clock, period_s=10.0, busy_s=4.0),
                   SlowAgent("d2", clock, period_s=10.0, busy_s=4.0)], end_s=100.0)
    report = scheduler.lag.as_dict()
    # Inline, d2 waits for d1's wake: that lag is the host's (one worker), not d2's own.
    assert report["wakes"] == 20 and report["overrun_wakes"] == 0
    assert report["host_p95_wall_s"] == pytest.approx(4.0)


def test_a_busy_host_is_the_hosts_lag_even_when_it_carries_over_to_the_next_wake():
    # Three devices each busy 4 s every 10 s on one worker: no device outruns its period, but the one
    # worker cannot serve 12 s of wakes per 10 s, so the lag grows: all of it the host's.
    clock = VirtualClock()
    scheduler = WakeScheduler(clock)
    scheduler.run([SlowAgent(f"d{i}", clock, period_s=10.0, busy_s=4.0) for i in range(3)], end_s=300.0)
    report = scheduler.lag.as_dict()
    assert report["wakes"] == 90 and report["max_s"] > 50.0
    assert report["overrun_wakes"] == 0
    assert report["host_p95_wall_s"] == pytest.approx(report["p95_wall_s"])


# Stand-in shards: real processes speaking the protocol (what a shard does with devices is tested
# above and in the real-network tier; here, how the coordinator starts, reads and stops them).
SHARD_SCRIPT = r"""
import signal, sys, time
index, count, behaviour = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
if behaviour == "crash":
    sys.exit(3)
print("READY devices=2", flush=True)
for i in range(100):
    print(f"W {i * 60.0:.3f} 0.0100 0.0000", flush=True)
if behaviour == "wait":
    while not stopped:
        time.sleep(0.05)
print("C 1.5 40.0", flush=True)
print("END", flush=True)
"""


def _shard_set(behaviour: str, count: int = 3) -> shards.ShardSet:
    import sys

    profile = DeviceProfile.load("fipy-micropython")
    aggregate = shards.Aggregate(exchanges=ExchangeStats(profile, 0.01))
    return shards.ShardSet(lambda k, n: [sys.executable, "-c", SHARD_SCRIPT, str(k), str(n),
                                         behaviour if k == 1 else "run"], count, aggregate)


def test_the_coordinator_reads_every_shard_to_its_end():
    shard_set = _shard_set("run")
    shard_set.start()
    stop = threading.Event()
    assert shard_set.wait_ready(20.0, stop)
    shard_set.wait(stop)
    aggregate = shard_set.aggregate
    assert aggregate.lag.wakes == 300 and aggregate.failures == []
    assert all(s.ended and s.exit_code == 0 and s.cpu_s == 1.5 for s in aggregate.shards.values())


def test_a_shard_that_dies_before_it_is_ready_fails_the_start_with_its_exit_code():
    shard_set = _shard_set("crash")
    shard_set.start()
    stop = threading.Event()
    assert not shard_set.wait_ready(20.0, stop)
    stop.set()
    shard_set.wait(stop)
    assert any("shard 1/3: exited with code 3 before the end" in f for f in shard_set.aggregate.failures)
    # The others are stopped with it (the fleet fails as a whole), none left running.
    assert not shard_set.aggregate.shards[1].ended
    assert all(proc.poll() is not None for proc in shard_set.procs)


def test_a_stopped_fleet_stops_its_shards_and_keeps_what_they_said():
    shard_set = _shard_set("wait")
    shard_set.start()
    stop = threading.Event()
    assert shard_set.wait_ready(20.0, stop)
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    shard_set.wait(stop)
    assert time.monotonic() - started < shards.STOP_GRACE_S  # stopped by SIGTERM, not killed
    waiting = shard_set.aggregate.shards[1]
    assert waiting.ended and waiting.exit_code == 0 and waiting.cpu_s == 1.5
    assert shard_set.aggregate.lag.wakes == 300
