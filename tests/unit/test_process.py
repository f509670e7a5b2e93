"""Managed processes with real child processes: readiness, failures, escalation, reaping, records."""

import os
import signal
import socket
import sys

import pytest

from harness.clean import clean
from harness.process import ManagedProcess, ProcessError, ProcessGroup, tcp_listening
from harness.state import RunState, process_start_time

READY_THEN_SLEEP = "import time; print('READY', flush=True); time.sleep(60)"
IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('READY', flush=True); time.sleep(60)")


def proc(tmp_path, code, name="p", **kwargs):
    return ManagedProcess(name=name, argv=[sys.executable, "-c", code], log_path=tmp_path / f"{name}.log", **kwargs)


def test_ready_then_stopped_and_reaped(tmp_path):
    p = proc(tmp_path, READY_THEN_SLEEP).start()
    assert p.running
    status = p.stop()
    assert status == -signal.SIGTERM
    assert process_start_time(p.pid) is None  # reaped: no zombie left behind


def test_sigterm_ignored_escalates_to_sigkill(tmp_path):
    p = proc(tmp_path, IGNORES_TERM, stop_timeout_s=0.3).start()
    assert p.stop() == -signal.SIGKILL


def test_early_exit_reports_status_and_log(tmp_path):
    p = proc(tmp_path, "print('config broken'); raise SystemExit(3)")
    with pytest.raises(ProcessError, match=r"exited with status 3 .*\n.*config broken"):
        p.start()


def test_timeout_names_what_it_waited_for(tmp_path):
    p = proc(tmp_path, "import time; time.sleep(60)", ready_timeout_s=0.3)
    with pytest.raises(ProcessError, match=r"not ready after 0 s \(waited for log line matching '\^READY"):
        p.start()
    assert not p.running  # a process that never became ready is stopped, not left behind


def test_ready_check_on_a_real_listening_socket(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    assert not tcp_listening(port)
    server.listen()
    try:
        assert tcp_listening(port)
    finally:
        server.close()


def test_group_stops_in_reverse_order_and_records_pids(tmp_path):
    state = RunState("unit-run", tmp_path / "state")
    group = ProcessGroup(state)
    first = proc(tmp_path, READY_THEN_SLEEP, name="first", start_order=1)
    second = proc(tmp_path, READY_THEN_SLEEP, name="second", start_order=2)
    group.start(second, first)
    records = state.records()
    assert [r.name for r in records] == ["first", "second"]
    assert all(r.start_time == process_start_time(r.pid) for r in records)
    assert list(group.stop_all()) == ["second", "first"]


def test_clean_kills_recorded_processes_only(tmp_path):
    state_dir = tmp_path / "state"
    state = RunState("crashed-run", state_dir)
    orphan = proc(tmp_path, READY_THEN_SLEEP, name="orphan").start(state)
    bystander = proc(tmp_path, READY_THEN_SLEEP, name="bystander").start()
    # A record whose PID now belongs to another process (start time differs) must be left alone.
    state._append(type(state.records()[0])("process", "recycled", bystander.pid, 1))
    try:
        report = clean(state_dir)
        assert report.processes == [f"orphan (pid {orphan.pid})"]
        orphan.popen.wait(timeout=5)
        assert bystander.running
        assert not list(state_dir.glob("*.jsonl"))
        assert clean(state_dir).processes == []  # idempotent
    finally:
        bystander.stop()
        orphan.stop()


def test_clean_leaves_a_live_run_alone(tmp_path):
    state_dir = tmp_path / "state"
    state = RunState("live-run", state_dir)
    state.record_owner()  # this test process owns the run and is alive
    service = proc(tmp_path, READY_THEN_SLEEP, name="service").start(state)
    try:
        report = clean(state_dir)
        assert report.live == [f"live-run (pid {os.getpid()})"] and report.processes == []
        assert service.running and state.path.exists()
        assert clean(state_dir, force=True).processes == [f"service (pid {service.pid})"]
    finally:
        service.stop()
