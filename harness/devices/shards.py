"""The fleet of one mode spread over worker processes (shards), and the line protocol between them.

One process cannot carry the wakes a large or accelerated run asks for: a wake spends most of its
wall time waiting on the shaped network (~90 ms for a bcn publish), so the wakes in flight must grow
with the wake rate, and past ~16 threads one interpreter's threads convoy on its lock (measured:
``experiments/emulator.toml [fleet]``). So the fleet daemon starts ``K`` shard processes of itself
(``--shard k/K``), each hosting every K-th device with its own pool, and coordinates them:

- a shard writes its devices' rows straight to the mode's ``sent.csv`` and ``energy.csv`` (each batch
  one ``write`` to a file opened for appending, so the rows of shards never interleave and a crash
  of the coordinator loses nothing), and reports what health needs on its stdout, one line per
  event (:func:`encode` and :class:`Aggregate` below are the two ends of that protocol);
- the coordinator folds every shard's lines into one :class:`~harness.devices.scheduler.LagStats`
  and one :class:`~harness.devices.fleet.ExchangeStats`, prints ``READY`` once every shard is ready
  and ``PROGRESS`` every second, writes ``fleet.json`` as one fleet did before, and stops its shards
  (which share its process group, so a daemon stop reaches them too) when it is stopped.

Lines a shard writes (fields separated by single spaces; the failure text is the rest of its line):
``READY devices=N``, ``W <t_wake emulated s> <lag emulated s> <of it the device's own overrun, s>``, ``X <step> <excess ms | ->`` (``-``:
the exchange failed), ``K <device> <failed key refreshes so far>``, ``C <cpu s> <max rss MiB>``,
``F <device: error>`` and ``END``.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.devices.scheduler import LagStats

#: What a shard writes when it has hosted its devices to the end of the mode or until it was
#: stopped, and accounted them (a shard that exits without it died).
END = "END"
#: Wall seconds stopped shards get to finish their wakes in flight before they are killed.
STOP_GRACE_S = 20.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: a shard is killed with its coordinator
#: The coordinator's PID, given to its shards (a shard whose parent is not it has been orphaned).
COORDINATOR_ENV = "QIOT_FLEET_COORDINATOR"


def shard_count(devices: int, workers_per_shard: int, max_shards: int) -> int:
    """Shards for ``devices``: one per ``workers_per_shard`` devices (a shard never has idle threads
    for lack of devices), at most ``max_shards``."""
    return max(1, min(max_shards, math.ceil(devices / workers_per_shard)))


def parse_shard(text: str) -> tuple[int, int]:
    """``"k/K"`` -> (k, K), 0 <= k < K; a one-line ValueError otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be k/K, e.g. 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard k/K needs 0 <= k < K, got {text!r}")
    return index, count


def encode(kind: str, *fields) -> str:
    """One protocol line (without its newline)."""
    return " ".join([kind, *(str(f) for f in fields)])


def quote(text: str) -> str:
    """A free text as one field of one line (a failure's message may hold spaces and newlines)."""
    return json.dumps(text)


class LineEmitter:
    """A shard's end of the protocol: wake threads queue lines, one writer thread writes them to
    stdout in batches (a write and a flush per line from dozens of threads would queue them on the
    interpreter lock, as the CSV writer once did)."""

    def __init__(self, stream=None, flush_every_s: float = 0.2) -> None:
        self._stream = stream or sys.stdout
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flush_every_s = flush_every_s
        self._thread = threading.Thread(target=self._write, name="shard-lines", daemon=True)
        self._thread.start()

    def emit(self, kind: str, *fields) -> None:
        line = encode(kind, *fields)
        with self._lock:
            self._lines.append(line)

    def _flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def _write(self) -> None:
        while not self._closed.wait(self._flush_every_s):
            self._flush()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._flush()


class EmittedLag:
    """What a shard's scheduler records wakes into: each wake goes out as a ``W`` line (the
    coordinator keeps the statistics); ``wakes`` counts them for the shard's own use."""

    def __init__(self, emitter: LineEmitter) -> None:
        self.emitter, self.wakes = emitter, 0

    def add(self, lag_s: float, t_emul: float = 0.0, overrun_s: float = 0.0) -> None:
        self.wakes += 1
        self.emitter.emit("W", f"{t_emul:.3f}", f"{lag_s:.4f}", f"{max(0.0, overrun_s):.4f}")


@dataclass
class ShardState:
    """What the coordinator knows about one shard."""

    index: int
    devices: int = 0
    ready: bool = False
    ended: bool = False
    cpu_s: float = 0.0
    max_rss_mib: float = 0.0
    exit_code: int | None = None


@dataclass
class Aggregate:
    """The coordinator's end of the protocol: every shard's lines folded into the fleet's figures."""

    exchanges: object  # harness.devices.fleet.ExchangeStats (not imported: it imports this module)
    lag: LagStats = field(default_factory=LagStats)
    failures: list[str] = field(default_factory=list)
    key_failures: dict[str, int] = field(default_factory=dict)
    shards: dict[int, ShardState] = field(default_factory=dict)

    def feed(self, shard: int, line: str) -> None:
        """Take one line of ``shard``'s output; lines that are not the protocol's are printed (a
        shard's stray output belongs in the fleet's log, not lost)."""
        state = self.shards.setdefault(shard, ShardState(shard))
        kind, _, rest = line.rstrip("\n").partition(" ")
        try:
            if kind == "W":
                t_emul, lag, overrun = rest.split(" ")
                self.lag.add(float(lag), float(t_emul), float(overrun))
            elif kind == "X":
                step, excess = rest.split(" ")
                self.exchanges.add(step, None if excess == "-" else float(excess))
            elif kind == "K":
                device, count = rest.split(" ")
                self.key_failures[device] = int(count)
            elif kind == "C":
                cpu, rss = rest.split(" ")
                state.cpu_s, state.max_rss_mib = float(cpu), float(rss)
            elif kind == "F":
                self.failures.append(json.loads(rest))
            elif kind == "READY":
                state.ready, state.devices = True, int(rest.partition("devices=")[2] or 0)
            elif kind == END:
                state.ended = True
            else:
                print(f"shard {shard}: {line.rstrip()}", flush=True)
        except ValueError:  # json.JSONDecodeError included
            print(f"shard {shard}: unreadable line {line.rstrip()!r}", flush=True)


class ShardSet:
    """The shard processes of one fleet: started, read, stopped."""

    def __init__(self, argv_for, count: int, aggregate: Aggregate) -> None:
        self.aggregate, self.count = aggregate, count
        self._argv_for = argv_for
        self.procs: list[subprocess.Popen] = []
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        env = dict(os.environ, **{COORDINATOR_ENV: str(os.getpid())})
        try:
            for index in range(self.count):
                self.procs.append(subprocess.Popen(self._argv_for(index, self.count), stdout=subprocess.PIPE,
                                                   text=True, errors="replace", bufsize=1, env=env))
                self.aggregate.shards[index] = ShardState(index)
        except OSError:
            self.signal(signal.SIGKILL)  # the shards already started have no reader: do not leave them
            raise
        for index, proc in enumerate(self.procs):
            reader = threading.Thread(target=self._read, args=(index, proc), name=f"shard-{index}", daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, index: int, proc: subprocess.Popen) -> None:
        # Read to the end whatever happens: a reader that stopped would leave the shard blocked on
        # a full pipe.
        for line in proc.stdout:
            with self._lock:
                try:
                    self.aggregate.feed(index, line)
                except Exception as exc:  # noqa: BLE001 - one bad line must not stop the reading
                    print(f"shard {index}: line not taken ({type(exc).__name__}: {exc})", flush=True)
        code = proc.wait()
        with self._lock:
            state = self.aggregate.shards[index]
            state.exit_code = code
            if not state.ended:
                self.aggregate.failures.append(f"shard {index}/{self.count}: exited with code {code} "
                                               f"before the end of the mode (its devices stopped)")

    def lock(self):
        """Held while a snapshot of the aggregate is taken (the readers feed it under it)."""
        return self._lock

    def wait_ready(self, timeout_s: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not stop.is_set():
            states = self.aggregate.shards.values()
            if all(s.ready for s in states):
                return True
            if any(s.exit_code is not None and not s.ready for s in states):
                return False  # died before it was ready (one that ran to its end already is fine)
            time.sleep(0.05)
        return False

    @property
    def running(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Until every shard has exited; once ``stop`` is set, stop them (SIGTERM, then SIGKILL)."""
        signalled = None
        while self.running:
            if stop.is_set() and signalled is None:
                self.signal(signal.SIGTERM)
                signalled = time.monotonic()
            elif signalled is not None and time.monotonic() - signalled > STOP_GRACE_S:
                self.signal(signal.SIGKILL)  # a shard that will not finish its accounting in time
            for reader in self._readers:
                reader.join(poll_s / len(self._readers))

    def signal(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass


def die_with_coordinator() -> None:
    """In a shard, first: the kernel kills it when its coordinator dies; if the coordinator died
    before that was in place, the shard exits now (no orphaned devices)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    coordinator = os.environ.get(COORDINATOR_ENV)
    if coordinator is not None and os.getppid() != int(coordinator):
        raise SystemExit(1)


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
