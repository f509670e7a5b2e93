"""Managed processes: one way to start, await, stop and reap every daemon of a run.

Every process qiot runs (controller, broker, shaper, QKD nodes, KMEs, devices, capture) is a
:class:`ManagedProcess`: it has a name and a start order, may render a config file, is started
inside a host's network namespace (through ``mnexec -da PID``) or in the root namespace, waits until
a readiness check passes with a timeout that names what it waited for, and stops by escalating
signals (SIGINT/SIGTERM, then SIGKILL) on its whole process group, always reaping the child. Each
started PID is recorded in the run's :class:`~harness.state.RunState` so ``qiot clean`` can find
exactly these processes after a crash. Nothing here imports Mininet: a host is just a namespace PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from harness.state import RunState


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early or did not become ready in time."""


@dataclass
class ManagedProcess:
    """A daemon of the run, described declaratively; call :meth:`start` / :meth:`stop`.

    ``ready_pattern`` is a regular expression searched in the process's log (stdout and stderr
    go to ``log_path``); ``ready_check`` is an extra callable for readiness that cannot be seen in
    the log. ``netns_pid`` is the PID of a process inside the target network namespace (a
    Mininet host's shell), or None for the root namespace.
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    netns_pid: int | None = None
    ready_pattern: str | None = r"^READY\b"
    ready_check: Callable[[], bool] | None = None
    ready_timeout_s: float = 20.0
    start_order: int = 50
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 5.0
    config_path: Path | None = None
    config_text: str | None = None
    env: dict[str, str] | None = None
    popen: subprocess.Popen | None = field(default=None, init=False, repr=False)

    # -- life cycle -------------------------------------------------------------------------
    def render_config(self) -> None:
        """Write the process's config file, if it has one."""
        if self.config_path is not None and self.config_text is not None:
            self.config_path.parent.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(self.config_text, encoding="utf-8")

    def start(self, state: RunState | None = None) -> "ManagedProcess":
        """Start the process and return once it is ready; raise ProcessError otherwise."""
        self.render_config()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.argv)
        if self.netns_pid is not None:
            # mnexec -d calls setsid(), so the PID we hold leads its own process group.
            argv = ["mnexec", "-da", str(self.netns_pid)] + argv
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "ab") as log:
            try:
                self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=env,
                                              start_new_session=self.netns_pid is None)
            except OSError as exc:
                raise ProcessError(f"{self.name}: cannot start {argv[0]}: {exc.strerror}") from None
        if state is not None:
            state.record_process(self.name, self.popen.pid)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Poll the readiness checks until they pass, the process dies, or the timeout expires."""
        deadline = time.monotonic() + self.ready_timeout_s
        pattern = re.compile(self.ready_pattern, re.MULTILINE) if self.ready_pattern else None
        while True:
            log_ok = pattern is None or bool(pattern.search(self._log_text()))
            if log_ok and (self.ready_check is None or self.ready_check()):
                return
            if self.popen.poll() is not None:
                raise ProcessError(f"{self.name} exited with status {self.popen.returncode} before it was "
                                   f"ready; last log lines:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                waited = f"log line matching {self.ready_pattern!r}" if not log_ok else "its readiness check"
                self.stop()
                raise ProcessError(f"{self.name} not ready after {self.ready_timeout_s:.0f} s "
                                   f"(waited for {waited} in {self.log_path}); last log lines:\n{self.log_tail()}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def stop(self) -> int | None:
        """Stop by escalating signals on the process group, then reap; return the exit status."""
        if self.popen is None:
            return None
        if self.popen.returncode is not None:
            return self.popen.returncode  # already reaped: its PID may belong to someone else now
        if self.popen.poll() is None:
            for sig, wait_s in ((self.stop_signal, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
                _signal_group(self.popen.pid, sig)
                try:
                    self.popen.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Children the daemon left in its group die with it; the group id cannot have been reused
        # while any of them lives, and without members the signal reaches no one.
        _signal_group(self.popen.pid, signal.SIGKILL, group_only=True)
        try:
            return self.popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return None

    # -- logs -------------------------------------------------------------------------------
    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the process's log, for error messages."""
        return "\n".join(self._log_text().splitlines()[-lines:])


def _signal_group(pid: int, sig: int, group_only: bool = False) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        if group_only:
            return
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def tcp_listening(port: int, netns_pid: int | None = None) -> bool:
    """True if a TCP socket listens on ``port`` in the namespace of ``netns_pid`` (or our own).

    Reads ``/proc/PID/net/tcp``, which shows the sockets of that process's network namespace, so
    no helper process has to be started inside the host to check.
    """
    base = f"/proc/{netns_pid}/net" if netns_pid else "/proc/net"
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(base, name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class ProcessGroup:
    """Processes of one run, started in ``start_order`` and stopped in reverse order."""

    def __init__(self, state: RunState | None = None) -> None:
        self.state = state
        self.started: list[ManagedProcess] = []

    def start(self, *processes: ManagedProcess) -> None:
        """Start processes in start order; each must be ready before the next starts."""
        for process in sorted(processes, key=lambda p: p.start_order):
            self.started.append(process)
            process.start(self.state)

    def stop_all(self) -> dict[str, int | None]:
        """Stop everything started, newest first; return exit statuses by name."""
        statuses: dict[str, int | None] = {}
        for process in reversed(self.started):
            statuses[process.name] = process.stop()
        self.started.clear()
        return statuses
