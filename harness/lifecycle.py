"""How a run is asked to stop: one event that every loop polls, set by the signal handlers.

Modelled on Flent's runner: a signal handler never raises (an exception thrown into whatever line
happens to be running, teardown included, is how runs end up half torn down with metadata still
saying ``running``); it records the signal in a :class:`StopRequest` and returns. Every wait of the
run (bring-up, readiness, the mode loop) polls that request and, when it is set, raises
:class:`Interrupted` from a well-defined place; teardown ignores further signals and always completes.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C / SIGINT, or SIGTERM); ``signal_name`` says which."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


class StopRequest:
    """A thread-safe, set-once stop flag that remembers which signal set it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, signal_name: str) -> None:
        if not self._event.is_set():
            self.signal_name = signal_name
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s`` wall seconds; True as soon as a stop is requested."""
        return self._event.wait(timeout_s)

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested (called by every waiting loop)."""
        if self._event.is_set():
            raise Interrupted(self.signal_name or "request")

    @property
    def event(self) -> threading.Event:
        """The underlying event, for code that waits on a ``threading.Event`` (e.g. the clock)."""
        return self._event


@contextmanager
def stop_on_signals(request: StopRequest,
                    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Route ``signals`` to ``request`` while the block runs; the previous handlers come back after."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda signum, _frame: request.set(signal.Signals(signum).name))
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
