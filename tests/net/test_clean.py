"""Real-network tier: `qiot clean` removes only what dead runs left, whichever state folder is cleaned.

Two state folders stand for two users (or a test beside a run): a live run recorded in one must
survive a clean-up of the other, even with ``--force``; a dead run's tagged interface goes.
"""

import os
import subprocess
import sys

from harness.clean import clean
from harness.state import INTERFACE_ALIAS_PREFIX, RunState, owner_tag


def veth(name: str, alias: str) -> None:
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    subprocess.run(["ip", "link", "set", "dev", name, "alias", alias], check=True)


def exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def test_one_state_folders_clean_up_leaves_another_folders_live_run_alone(network_ok, tmp_path):
    live_dir, other_dir = tmp_path / "user-a", tmp_path / "user-b"
    live = RunState("pytest-live-run", live_dir)
    live.record_owner()  # this test process owns it: alive
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
    suffix = os.getpid() % 10000
    live_if, dead_if = f"qtl{suffix}", f"qtd{suffix}"
    veth(live_if, f"{INTERFACE_ALIAS_PREFIX}pytest-live-run:{owner_tag()}")
    veth(dead_if, f"{INTERFACE_ALIAS_PREFIX}pytest-dead-run:{dead_pid}:1")
    live.record_interface(live_if)
    try:
        report = clean(other_dir, force=True)
        assert dead_if in report.interfaces and not exists(dead_if)
        assert exists(live_if) and live.path.exists()
        report = clean(live_dir)
        assert report.live == [f"pytest-live-run (pid {os.getpid()})"] and exists(live_if)
        report = clean(live_dir, force=True)  # the owner of this folder asks for it: gone
        assert live_if in report.interfaces and not exists(live_if) and not live.path.exists()
    finally:
        for name in (live_if, dead_if):
            subprocess.run(["ip", "link", "del", "dev", name], capture_output=True)
