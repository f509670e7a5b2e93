"""Stopping a run: a signal only sets the stop request; the waiting code raises where it polls."""

import os
import signal

import pytest

from harness.lifecycle import Interrupted, StopRequest, stop_on_signals


def test_sigterm_sets_the_request_and_raises_nothing_in_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(StopRequest()) as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this thread at the next bytecode
        assert stop.wait(2.0)
        os.kill(os.getpid(), signal.SIGINT)   # a second signal keeps the first one's name
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(Interrupted, match="stopped by SIGTERM"):
            stop.check()
    assert signal.getsignal(signal.SIGTERM) is previous
