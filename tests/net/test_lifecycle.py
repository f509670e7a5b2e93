"""Real-network tier: how a run ends. SIGTERM mid-mode and mid-teardown, and a daemon that fails.

Each run must end with its metadata saying how (``interrupted`` with the signal, ``failed`` with the
reason), the mode's derived files written, and nothing of the run left on the machine.
"""

import json
import signal
import sys
import time
from pathlib import Path

from harness import runner, scenario
from harness.daemon import Daemon
from harness.lifecycle import StopRequest
from .test_run import only_run_dir, qiot_leftovers, qiot_run, running


def wait_for_devices(tmp_path: Path, mode: str = "qkd", timeout_s: float = 90) -> Path:
    deadline = time.monotonic() + timeout_s
    while True:
        sent = list(tmp_path.glob(f"*/{mode}/sent.csv"))
        if sent and sent[0].read_bytes().count(b"\n") >= 2:
            return sent[0]
        assert time.monotonic() < deadline, "the run never started its devices"
        time.sleep(0.2)


def recorded_pids(run_dir: Path) -> list[int]:
    from harness.state import STATE_DIR

    path = STATE_DIR / f"{run_dir.name}.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r["pid"] for r in records if r["kind"] in ("process", "netns")]


def test_sigterm_mid_mode_and_again_mid_teardown_ends_interrupted_with_nothing_left(network_ok, tmp_path):
    proc = qiot_run(tmp_path, "--hours", "1", "--time-scale", "20", "--mode", "qkd")
    try:
        wait_for_devices(tmp_path)
        run_dir = only_run_dir(tmp_path)
        pids = recorded_pids(run_dir)
        proc.send_signal(signal.SIGTERM)
        # Teardown is under way: more signals must not cut it short.
        for pause in (0.3, 0.5, 1.0):
            time.sleep(pause)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if pause < 1 else signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["status"] == "interrupted" and metadata["stop_signal"] == "SIGTERM"
    assert metadata["mode_results"]["qkd"]["status"] == "interrupted" and "ended" in metadata
    assert metadata["mode_results"]["qkd"]["summary"]["sent"] >= 1  # derived files written anyway
    assert (run_dir / "qkd" / "messages.csv").is_file()
    assert qiot_leftovers(run_dir.name) == {"interfaces": [], "bridges": [], "namespaces": [], "state": False}
    assert [pid for pid in pids if running(pid)] == []


def test_a_daemon_that_fails_readiness_fails_the_run_with_its_reason(network_ok, tmp_path, monkeypatch):
    def broken_platform(config, mode):
        return Daemon(name=f"platform-{mode}", host="dc", log_path=config.logs_dir / f"platform-{mode}.log",
                      argv=[sys.executable, "-c", "print('no broker config'); raise SystemExit(3)"])

    monkeypatch.setattr(runner, "platform_daemon", broken_platform)
    loaded = scenario.load("bcn").with_overrides({"devices.count": 2, "run.hours": 0.05, "run.time_scale": 30.0})
    outcome = runner.run(runner.RunOptions(scenario=loaded, modes=("dkg",), out_dir=tmp_path), StopRequest())
    assert outcome.status == "failed"
    assert "daemon platform-dkg on host dc exited with status 3" in outcome.reason
    metadata = json.loads((outcome.run_dir / "metadata.json").read_text())
    assert metadata["status"] == "failed" and "platform-dkg" in metadata["failure"]
    assert metadata["mode_results"]["dkg"]["status"] == "failed"
    assert qiot_leftovers(outcome.run_dir.name) == {"interfaces": [], "bridges": [], "namespaces": [], "state": False}
