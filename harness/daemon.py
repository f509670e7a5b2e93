"""Daemons of a run, declared in one style and started as one dependency graph.

Modelled on ipmininet's ``Daemon`` (``router/config/base.py``): every process qiot runs (controller,
broker, shaper, QKD nodes, KMEs, relay, platform, device fleet, captures) is a :class:`Daemon` with a
name, the Fig. 1 host whose network namespace it runs in, the daemons it ``requires``, its argv (for
qiot's own daemons ``python -m MODULE --config run.json --role NAME``: the daemon reads its part of
the run configuration itself), an optional config file it renders, a **pre-start check** (the
dry run: binary present, config renders, the daemon's own validation of its part of run.json),
readiness (a log line and/or a check), and its stop (escalating signals on its process group, then
reaping). A :class:`DaemonSet` holds every daemon of the run: :meth:`DaemonSet.preflight` runs every
check before anything starts and names each failing daemon and host; :meth:`DaemonSet.start` starts
what is asked for together with everything it requires, in dependency order.

Every started PID is recorded in the run's :class:`~harness.state.RunState` so ``qiot clean`` can find
exactly these processes after a crash. Nothing here imports Mininet: a host is a namespace PID.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from harness.lifecycle import StopRequest
from harness.state import RunState


class DaemonError(RuntimeError):
    """A daemon failed its pre-start check, exited early or did not become ready; the message names it."""


@dataclass
class Daemon:
    """One process of the run, described declaratively (see the module docstring).

    ``ready_pattern`` is searched in the daemon's log (stdout and stderr go to ``log_path``);
    ``ready_check`` covers readiness a log cannot show (a listening socket). ``check`` is the
    pre-start check: it returns the problems it found (empty: fine). ``runtime_args`` returns
    arguments only known when the daemon starts (e.g. the mode clock's epoch).
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    host: str | None = None
    requires: tuple[str, ...] = ()
    ready_pattern: str | None = r"^READY\b"
    ready_check: Callable[[], bool] | None = None
    ready_timeout_s: float = 20.0
    check: Callable[[], list[str]] | None = None
    runtime_args: Callable[[], Sequence[str]] | None = None
    config_path: Path | None = None
    config_text: str | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 5.0
    env: dict[str, str] | None = None
    popen: subprocess.Popen | None = field(default=None, init=False, repr=False)
    netns_pid: int | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)  # how often it became ready (a restart makes it 2, ...)

    @property
    def where(self) -> str:
        return f"daemon {self.name} on host {self.host or 'root namespace'}"

    # --- before start ---------------------------------------------------------------------------
    def render_config(self) -> None:
        """Write the daemon's config file, if it has one."""
        if self.config_path is not None and self.config_text is not None:
            self.config_path.parent.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(self.config_text, encoding="utf-8")

    def preflight(self) -> list[str]:
        """The dry run: every problem that would stop this daemon from starting."""
        problems = []
        binary = self.argv[0]
        if shutil.which(binary) is None and not os.access(binary, os.X_OK):
            problems.append(f"{binary}: not installed or not executable (run install.sh)")
        try:
            self.render_config()
        except OSError as exc:
            problems.append(f"cannot write {self.config_path}: {exc.strerror}")
        if self.check is not None:
            try:
                problems += self.check()
            except Exception as exc:  # a check that crashes is a failed check, named, not a traceback
                problems.append(f"check failed: {type(exc).__name__}: {exc}")
        return problems

    # --- life cycle -----------------------------------------------------------------------------
    def start(self, state: RunState | None = None, netns_pid: int | None = None,
              stop: StopRequest | None = None) -> "Daemon":
        """Start the process and return once it is ready; raise :class:`DaemonError` otherwise."""
        self.render_config()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.netns_pid = netns_pid
        argv = list(self.argv) + list(self.runtime_args() if self.runtime_args else ())
        if netns_pid is not None:
            # mnexec -d calls setsid(), so the PID we hold leads its own process group.
            argv = ["mnexec", "-da", str(netns_pid)] + argv
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "ab") as log:
            try:
                self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=env,
                                              start_new_session=netns_pid is None)
            except OSError as exc:
                raise DaemonError(f"{self.where}: cannot start {argv[0]}: {exc.strerror}") from None
        if state is not None:
            state.record_process(self.name, self.popen.pid)
        self.wait_ready(stop)
        self.starts += 1
        return self

    def wait_ready(self, stop: StopRequest | None = None) -> None:
        """Poll the readiness checks until they pass, the process dies, the timeout expires or a
        stop is requested (then :class:`~harness.lifecycle.Interrupted` is raised)."""
        deadline = time.monotonic() + self.ready_timeout_s
        pattern = re.compile(self.ready_pattern, re.MULTILINE) if self.ready_pattern else None
        while True:
            log_ok = pattern is None or bool(pattern.search(self.log_text()))
            if log_ok and (self.ready_check is None or self.ready_check()):
                return
            if self.popen.poll() is not None:
                raise DaemonError(f"{self.where} exited with status {self.popen.returncode} before it was "
                                  f"ready; last log lines:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                waited = f"log line matching {self.ready_pattern!r}" if not log_ok else "its readiness check"
                self.stop()
                raise DaemonError(f"{self.where} not ready after {self.ready_timeout_s:.0f} s (waited for "
                                  f"{waited} in {self.log_path}); last log lines:\n{self.log_tail()}")
            if stop is not None and stop.is_set():
                self.stop()
                stop.check()
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

    # --- logs -----------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the daemon's log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def python_daemon(config, name: str, module: str, *, host: str | None, requires: tuple[str, ...] = (),
                  ready_timeout_s: float = 20.0, runtime_args: Callable[[], Sequence[str]] | None = None,
                  stop_signal: int = signal.SIGTERM, stop_timeout_s: float = 5.0) -> Daemon:
    """One of qiot's own daemons: ``python -m MODULE --config run.json --role NAME``.

    Its pre-start check is the module's own ``check(config, role) -> list[str]``, the validation it
    runs at start, called here in-process so every daemon is checked before any starts.
    """
    def check() -> list[str]:
        return list(importlib.import_module(module).check(config, name))

    return Daemon(name=name, host=host, requires=requires, ready_timeout_s=ready_timeout_s,
                  argv=[sys.executable, "-m", module, "--config", str(config.config_file), "--role", name],
                  log_path=config.logs_dir / f"{name}.log", check=check, runtime_args=runtime_args,
                  stop_signal=stop_signal, stop_timeout_s=stop_timeout_s)


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


class DaemonSet:
    """Every daemon of a run: checked together, started in dependency order, stopped in reverse.

    ``netns`` maps a host name to the PID holding its network namespace (None for the root namespace);
    it is asked only when a daemon on that host starts, so daemons can be declared before the network
    exists. ``stop`` is the run's stop request, polled while daemons become ready.
    """

    def __init__(self, state: RunState | None = None, netns: Callable[[str], int] | None = None,
                 stop: StopRequest | None = None) -> None:
        self.state, self.netns, self.stop_request = state, netns, stop
        self.daemons: dict[str, Daemon] = {}
        self.started: list[str] = []

    def add(self, *daemons: Daemon) -> None:
        for daemon in daemons:
            if daemon.name in self.daemons:
                raise ValueError(f"two daemons named {daemon.name!r}")
            self.daemons[daemon.name] = daemon

    def __getitem__(self, name: str) -> Daemon:
        return self.daemons[name]

    def __contains__(self, name: str) -> bool:
        return name in self.daemons

    def order(self, names: Sequence[str]) -> list[str]:
        """``names`` and everything they require, dependencies first; raise on a cycle or an unknown name."""
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, needed_by: str | None) -> None:
            if name in ordered:
                return
            if name not in self.daemons:
                raise DaemonError(f"daemon {needed_by} requires {name!r}, which the run does not have"
                                  if needed_by else f"no daemon named {name!r}")
            if name in visiting:
                raise DaemonError(f"daemon dependency cycle through {name!r}")
            visiting.add(name)
            for dependency in self.daemons[name].requires:
                visit(dependency, name)
            visiting.discard(name)
            ordered.append(name)

        for name in names:
            visit(name, None)
        return ordered

    def preflight(self) -> None:
        """Run every daemon's pre-start check; raise one :class:`DaemonError` listing every problem."""
        problems = []
        for name in self.order(list(self.daemons)):
            daemon = self.daemons[name]
            problems += [f"{daemon.where}: {problem}" for problem in daemon.preflight()]
        if problems:
            raise DaemonError("pre-start checks failed:\n  " + "\n  ".join(problems))

    def start(self, *names: str) -> None:
        """Start ``names`` and what they require that is not running yet, each ready before the next."""
        for name in self.order(names):
            daemon = self.daemons[name]
            if daemon.running:
                continue
            if self.stop_request is not None:
                self.stop_request.check()
            pid = self.netns(daemon.host) if (daemon.host and self.netns) else None
            if name not in self.started:
                self.started.append(name)
            daemon.start(self.state, pid, self.stop_request)

    def dependents(self, name: str) -> list[str]:
        """Started daemons that (transitively) require ``name``, the most dependent first."""
        found: list[str] = []
        for other in reversed(self.started):
            if other != name and name in self.order([other]) and other not in found:
                found.append(other)
        return found

    def stop(self, *names: str) -> dict[str, int | None]:
        """Stop ``names`` and every running daemon that requires them (dependents first)."""
        statuses: dict[str, int | None] = {}
        for name in names:
            for target in self.dependents(name) + [name]:
                if target not in statuses and self.daemons[target].popen is not None:
                    statuses[target] = self.daemons[target].stop()
        return statuses

    def stop_only(self, name: str) -> int | None:
        """Stop one daemon and only it: its dependents keep running, as they would through a real
        crash or restart of it (start it again with :meth:`start`)."""
        daemon = self.daemons[name]
        status = daemon.stop()
        daemon.popen = None
        return status

    def restart(self, name: str) -> None:
        """:meth:`stop_only` then start again with the same configuration."""
        self.stop_only(name)
        self.start(name)

    def stop_all(self) -> dict[str, int | None]:
        """Stop everything started, newest first; return exit statuses by name."""
        statuses = {name: self.daemons[name].stop() for name in reversed(self.started)}
        self.started.clear()
        return statuses
