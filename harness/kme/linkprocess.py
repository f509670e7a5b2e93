"""The emulated QKD link of ``qiot kme`` in a child process: :class:`harness.qkd.link.BackgroundLink`
(Alice and Bob distilling keys, each serving Clavis UDP on loopback), run where it has its own
interpreter.

Why a process: at a high time scale the post-processing (Cascade, privacy amplification) keeps one
core busy, and in the KMEs' process it would hold the interpreter lock against every ETSI request.
The KMEs reach the link exactly as before, over the two Clavis UDP services; the only other
channel is a pipe (``multiprocessing``, stdlib) over which the parent asks for buffer counts the
Clavis protocol cannot carry (keys available at the issuing end, for ETSI status). The child ends
when told to, or when the parent's end of the pipe closes (the parent died).
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any


def _serve(config: Any, seed: int, time_scale: float, warmup_s: float, host: str, conn: Any) -> None:
    """Child process: run the link, answer ``"available"``/``"produced"``/``"now"`` until ``"stop"``."""
    import signal

    from harness.qkd.link import BackgroundLink

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us in order
    link = BackgroundLink(config, seed, time_scale, warmup_s, host).start()
    conn.send((link.alice_address, link.bob_address))
    answers = {"available": lambda: link.bob.buffer.available, "produced": lambda: link.alice.buffer.produced,
               "now": link.clock.now}
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                break
            if request == "stop":
                break
            conn.send(answers[request]())
    finally:
        link.stop()


class LinkProcess:
    """Start the link in a child process; ``alice_address``/``bob_address`` are its Clavis services.

    ``config``, ``seed``, ``time_scale``, ``warmup_s``, ``host``: as for
    :class:`harness.qkd.link.BackgroundLink`.
    """

    def __init__(self, config: Any, seed: int, time_scale: float, warmup_s: float, host: str,
                 start_timeout_s: float = 60.0):
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child_conn = context.Pipe()
        self._lock = threading.Lock()
        self.process = context.Process(target=_serve, args=(config, seed, time_scale, warmup_s, host, child_conn),
                                       name="qiot-kme-qkd-link", daemon=True)
        self.process.start()
        child_conn.close()
        if not self._conn.poll(start_timeout_s):
            self.stop()
            raise RuntimeError("the emulated QKD link did not start")
        self.alice_address, self.bob_address = self._conn.recv()

    def _ask(self, what: str) -> Any:
        with self._lock:
            try:
                self._conn.send(what)
                return self._conn.recv()
            except (EOFError, OSError):  # the link process has ended
                return None

    def available(self) -> int | None:
        """Keys at the issuing (Bob's) end not handed out yet (None once the link has ended)."""
        return self._ask("available")

    def produced(self) -> int | None:
        """Keys distilled so far."""
        return self._ask("produced")

    def now(self) -> float | None:
        """The link's emulated time, seconds."""
        return self._ask("now")

    def stop(self) -> None:
        """Stop the link and wait for the child to end."""
        with self._lock:
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self._conn.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
