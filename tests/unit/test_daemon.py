"""Daemons as real child processes: readiness, failures, escalation, reaping, records, dependencies."""

import os
import signal
import socket
import sys
import threading

import pytest

from harness.clean import clean
from harness.daemon import Daemon, DaemonError, DaemonSet, tcp_listening
from harness.lifecycle import Interrupted, StopRequest
from harness.state import RunState, process_start_time

READY_THEN_SLEEP = "import time; print('READY', flush=True); time.sleep(60)"
IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('READY', flush=True); time.sleep(60)")


def proc(tmp_path, code, name="p", **kwargs):
    return Daemon(name=name, argv=[sys.executable, "-c", code], log_path=tmp_path / f"{name}.log", **kwargs)


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
    p = proc(tmp_path, "print('config broken'); raise SystemExit(3)", host="dc")
    with pytest.raises(DaemonError, match=r"daemon p on host dc exited with status 3 .*\n.*config broken"):
        p.start()


def test_timeout_names_what_it_waited_for(tmp_path):
    p = proc(tmp_path, "import time; time.sleep(60)", ready_timeout_s=0.3)
    with pytest.raises(DaemonError, match=r"not ready after 0 s \(waited for log line matching '\^READY"):
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


def test_set_starts_dependencies_first_and_stops_in_reverse(tmp_path):
    state = RunState("unit-run", tmp_path / "state")
    daemons = DaemonSet(state)
    daemons.add(proc(tmp_path, READY_THEN_SLEEP, name="fleet", requires=("platform",)),
                proc(tmp_path, READY_THEN_SLEEP, name="platform", requires=("broker",)),
                proc(tmp_path, READY_THEN_SLEEP, name="broker"))
    daemons.start("fleet")  # everything it needs comes up first, across the whole set
    records = state.records()
    assert [r.name for r in records] == ["broker", "platform", "fleet"]
    assert all(r.start_time == process_start_time(r.pid) for r in records)
    # Stopping a dependency stops what depends on it first; the rest keeps running.
    assert list(daemons.stop("platform")) == ["fleet", "platform"]
    assert daemons["broker"].running and not daemons["fleet"].running
    daemons.start("fleet")
    assert daemons["platform"].running and daemons["fleet"].running
    assert list(daemons.stop_all()) == ["fleet", "platform", "broker"]


def test_restart_keeps_the_dependents_running(tmp_path):
    daemons = DaemonSet()
    daemons.add(proc(tmp_path, READY_THEN_SLEEP, name="broker"),
                proc(tmp_path, READY_THEN_SLEEP, name="platform", requires=("broker",)))
    daemons.start("platform")
    old = daemons["broker"].pid
    daemons.restart("broker")
    try:
        assert daemons["broker"].running and daemons["broker"].pid != old
        assert daemons["platform"].running
    finally:
        daemons.stop_all()


def test_preflight_names_every_failing_daemon_and_host_before_anything_starts(tmp_path):
    daemons = DaemonSet()
    daemons.add(Daemon(name="broker", host="dc", argv=["/nonexistent/mosquitto"], log_path=tmp_path / "b.log"),
                proc(tmp_path, READY_THEN_SLEEP, name="relay", host="gw", check=lambda: ["no PKI"]),
                proc(tmp_path, READY_THEN_SLEEP, name="fine"))
    with pytest.raises(DaemonError) as err:
        daemons.preflight()
    message = str(err.value)
    assert "daemon broker on host dc: /nonexistent/mosquitto: not installed" in message
    assert "daemon relay on host gw: no PKI" in message and "fine" not in message
    assert not any(d.popen for d in daemons.daemons.values())


def test_unknown_or_cyclic_dependencies_are_refused(tmp_path):
    daemons = DaemonSet()
    daemons.add(proc(tmp_path, READY_THEN_SLEEP, name="a", requires=("b",)),
                proc(tmp_path, READY_THEN_SLEEP, name="b", requires=("a",)),
                proc(tmp_path, READY_THEN_SLEEP, name="c", requires=("ghost",)))
    with pytest.raises(DaemonError, match="cycle"):
        daemons.order(["a"])
    with pytest.raises(DaemonError, match="requires 'ghost'"):
        daemons.order(["c"])


def test_a_stop_request_ends_a_readiness_wait(tmp_path):
    stop = StopRequest()
    p = proc(tmp_path, "import time; time.sleep(60)", ready_timeout_s=30)
    threading.Timer(0.3, stop.set, args=("SIGTERM",)).start()
    with pytest.raises(Interrupted, match="SIGTERM"):
        p.start(stop=stop)
    assert not p.running


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
