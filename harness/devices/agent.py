"""One emulated FiPy device: a wake cycle on its emulated timeline, the same in a run and a simulation.

The agent knows nothing about how it is hosted or how its bytes travel: a scheduler
(:mod:`harness.devices.scheduler`) calls :meth:`DeviceAgent.wake` at each wake time, and a
:class:`~harness.devices.transport.DeviceTransport` carries its exchanges: the real network of a run
(:class:`~harness.devices.transport.NetworkTransport`) or the assumed one of a pure simulation
(:class:`~harness.devices.simulated.SimulatedTransport`). Either way the device executes the same
wake plan (:func:`harness.energy.wakecycle.plan_wake`: boot, associate, key step if a refresh is due,
sense, encrypt, publish, sleep) with real cryptography, and charges each step to its Energest
timeline: network steps with the time they took, compute steps at the profile's ESP32 time (never the
host's), sleep until the next wake.

Through faults it behaves as a deployed device (:class:`~harness.devices.behaviour.DeviceBehaviour`):
readings it cannot publish wait in a bounded queue and go out, oldest first and with their original
timestamps, at the next wake that can publish; a failed key fetch is retried with backoff while the
previous key serves until its lifetime runs out; failed attempts are charged what they cost.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from harness import devicecrypto
from harness.devices.behaviour import QUEUE_OVERFLOW, DeviceBehaviour
from harness.devices.config import DeviceSettings
from harness.devices.transport import DeviceTransport, TransportError
from harness.energy import DeviceProfile, DeviceTimeline, IntervalRow
from harness.energy.wakecycle import FULL_HANDSHAKE_STEPS, NetworkOutcome, Step, key_refresh_due, plan_wake, run_steps
from harness.enums import KeyTransport, Mode

#: Steps of the key refresh (skipped after one of them failed).
KEY_STEP_PREFIXES = ("dkg_", "qkd_", "tls_")


@dataclass
class SentRecord:
    """What became of one reading (one row of ``sent.csv``): published (maybe late), or why not."""

    device: str
    seq: int
    t_emul: float           # emulated time the reading was taken
    t_start: float          # wall time the wake that published (or gave up on) it started
    t_sent: float | None    # wall time of the publish; None if it was never published
    acked: bool
    key_id: str
    key_refreshed: bool     # the key was renewed in the wake that took the reading
    error: str
    queued_s: float = 0.0   # emulated seconds the reading waited in the device's queue

    FIELDS = ("device", "seq", "t_emul", "t_start", "t_sent", "acked", "key_id", "key_refreshed", "error",
              "queued_s")

    def row(self) -> list:
        return [self.device, self.seq, f"{self.t_emul:.3f}", f"{self.t_start:.6f}",
                "" if self.t_sent is None else f"{self.t_sent:.6f}", int(self.acked), self.key_id,
                int(self.key_refreshed), self.error, f"{self.queued_s:.3f}"]


@dataclass
class Reading:
    """A sensor reading waiting to be published."""

    seq: int
    t_emul: float
    values: dict
    key_refreshed: bool
    error: str = ""  # why its last publish failed


class RecordSink(Protocol):
    """Where an agent's records go: ``sent.csv`` and ``energy.csv`` in a run, lists in a simulation."""

    def sent(self, record: SentRecord) -> None: ...

    def energy(self, rows: list[IntervalRow]) -> None: ...


class KeyStepFailed(RuntimeError):
    """The device could not obtain a key this wake; ``outcome`` is what the failed exchange cost."""

    def __init__(self, message: str, outcome: NetworkOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class KeyState:
    """The device's current key and how its refreshes went."""

    key: bytes | None = field(default=None, repr=False)
    key_id: str = ""
    obtained_s: float | None = None   # emulated time of the wake that obtained it
    last_refresh: float | None = None
    failures: int = 0                 # failed refreshes in a row
    failed_total: int = 0             # failed refreshes over the mode
    skip_wakes: int = 0               # wakes left before the next attempt (backoff)

    def valid(self, t: float, lifetime_s: float) -> bool:
        return self.key is not None and self.obtained_s is not None and t - self.obtained_s < lifetime_s


class DeviceAgent:
    """The wake cycles of one device, from emulated time 0 to the end of the mode."""

    def __init__(self, device_id: str, mode: Mode, settings: DeviceSettings, key_transport: KeyTransport,
                 refresh_period_s: float, profile: DeviceProfile, transport: DeviceTransport, sink: RecordSink,
                 seed: int, behaviour: DeviceBehaviour | None = None,
                 on_exchange: Callable[[Step, NetworkOutcome, bool], None] | None = None) -> None:
        self.device_id, self.mode, self.settings = device_id, Mode(mode), settings
        self.key_transport, self.refresh_period_s = KeyTransport(key_transport), refresh_period_s
        self.profile, self.transport, self.sink = profile, transport, sink
        self.behaviour = behaviour or DeviceBehaviour()
        self.on_exchange = on_exchange  # sees every network exchange (step, outcome, ok): emulation health
        self.timeline = DeviceTimeline(profile, device_id, 0.0, settings.energy_interval_s)
        # Seeds from a stable digest: Python's hash() of strings changes from process to process.
        self.sensors = devicecrypto.PysenseSensors(seed=zlib.crc32(f"{seed}-{device_id}".encode()))
        self.phase = random.Random(f"{seed}-{device_id}-phase").random()
        # The plaintext a reading seals (what the encrypt step charges); the sensors' format is fixed.
        self.reading_bytes = len(json.dumps(devicecrypto.PysenseSensors(seed=0).read(0.0), separators=(",", ":")))
        self.keys = KeyState()
        self.queue: deque[Reading] = deque()
        self.seq = 0
        self._step_state: dict = {}
        self._wake_started = 0.0
        self._t_wake = 0.0

    @property
    def first_wake_s(self) -> float:
        """A seeded phase within the first period, so devices do not all wake together."""
        return self.phase * self.settings.wake_period_s

    @property
    def key_id(self) -> str:
        return self.keys.key_id

    def wake(self, t_wake: float, end_s: float) -> float:
        """Run the wake cycle due at ``t_wake``; return when the next one is due (a wake that overran
        its period delays the next one)."""
        if self.timeline.now < t_wake:
            self.timeline.sleep_until(t_wake)
        self._t_wake, self._wake_started = t_wake, time.time()
        keys, behaviour = self.keys, self.behaviour
        due = key_refresh_due(t_wake, keys.last_refresh, self.refresh_period_s) or \
            not keys.valid(t_wake, behaviour.key_lifetime_s)
        if due and keys.skip_wakes > 0:  # backing off after failed refreshes
            keys.skip_wakes -= 1
            due = False
        steps = plan_wake(self.profile, self.mode, key_refresh_due=due, devices=self.settings,
                          qkd_transport=self.key_transport, reading_bytes=self.reading_bytes)
        next_wake = t_wake + self.settings.wake_period_s
        wake_until = max(min(next_wake, end_s), self.timeline.now)
        self._step_state = {"refreshing": due}
        key_failed = False
        for step in steps:
            if step.name.startswith(KEY_STEP_PREFIXES) and key_failed:
                continue  # the refresh already failed this wake: nothing more of it happens
            if step.name in ("encrypt", "publish") and not self._can_seal():
                continue
            if step.name == "encrypt":  # every reading going out this wake is sealed now
                step = dataclasses.replace(step, nbytes=step.nbytes * max(1, len(self.queue)))
            try:
                run_steps(self.timeline, [step], self.perform, wake_until=max(wake_until, self.timeline.now))
            except KeyStepFailed as exc:
                key_failed = True
                if exc.outcome is not None:  # the failed attempt still had the radio on
                    self.timeline.network(exc.outcome.duration_s, exc.outcome.bytes_tx, exc.outcome.frames)
                keys.failures += 1
                keys.failed_total += 1
                keys.skip_wakes = behaviour.backoff_wakes(keys.failures)
                self._step_state["key_error"] = f"key step: {exc}"
        if due and not key_failed:
            keys.last_refresh, keys.failures = t_wake, 0
        self.sink.energy(self.timeline.pop_rows())
        return max(next_wake, self.timeline.now)

    def finish(self, t_end: float) -> None:
        """Account up to ``t_end`` (the end of the mode, or where it was stopped), record the readings
        still queued, and flush the energy rows."""
        self.timeline.sleep_until(max(t_end, self.timeline.now))
        while self.queue:
            self._record(self.queue.popleft(), None, f"still queued at the end of the mode: {self._last_error()}")
        partial = self.timeline.partial_row()
        self.sink.energy(self.timeline.pop_rows() + ([partial] if partial is not None else []))

    # --- readings -------------------------------------------------------------------------------
    def _can_seal(self) -> bool:
        return self.keys.valid(self._t_wake, self.behaviour.key_lifetime_s)

    def _take_reading(self) -> None:
        """Sense, and put the reading at the end of the queue (the oldest overflow first)."""
        reading = Reading(self.seq, self._t_wake, self.sensors.read(self.timeline.now),
                          bool(self._step_state.get("refreshing")) and "key_error" not in self._step_state)
        self.seq += 1
        if not self._can_seal() and self.behaviour.on_key_expiry == "drop":
            self._record(reading, None, f"no valid key: reading dropped ({self._last_error()})")
            return
        self.queue.append(reading)
        while len(self.queue) > max(1, self.behaviour.queue_capacity):
            dropped = self.queue.popleft()
            self._record(dropped, None, f"{QUEUE_OVERFLOW}: {dropped.error or self._last_error()}")

    def _last_error(self) -> str:
        return self._step_state.get("key_error") or "no key yet"

    def _record(self, reading: Reading, t_sent: float | None, error: str) -> None:
        self.sink.sent(SentRecord(self.device_id, reading.seq, reading.t_emul, self._wake_started, t_sent,
                                  not error, self.keys.key_id, reading.key_refreshed, error,
                                  max(0.0, self._t_wake - reading.t_emul) if t_sent is not None else 0.0))

    # --- the steps ------------------------------------------------------------------------------
    def perform(self, step: Step) -> NetworkOutcome | None:
        """Do a step's real work; network steps return what they took."""
        state, timeout, keys = self._step_state, self.settings.publish_timeout_s, self.keys
        try:
            if step.name == "sense":
                self._take_reading()
            elif step.name == "dkg_keygen":
                state["party"] = devicecrypto.DkgParty("device", self.settings.dkg_curve)
            elif step.name == "dkg_exchange":
                state["key_id"], state["peer"], outcome = self.transport.dkg_exchange(
                    self.device_id, self.settings.dkg_curve, state["party"].public_bytes, step, timeout)
                return self._observed(step, outcome)
            elif step.name == "dkg_agree":
                keys.key = state.pop("party").derive_key(state.pop("peer"), device_id=self.device_id)
                keys.key_id, keys.obtained_s = state.pop("key_id"), self._t_wake
            elif step.name == "qkd_fetch":
                fetch, outcome = self.transport.fetch_key(self.device_id, self.key_transport, step, timeout)
                if self.key_transport == KeyTransport.TLS_RESUME and fetch.full_handshakes:
                    # The relay declined the resumption: the handshake that happened was a full one.
                    for _, op in FULL_HANDSHAKE_STEPS:
                        self.timeline.compute(op)
                state["fetch"] = fetch
                return self._observed(step, outcome)
            elif step.name == "qkd_decrypt":
                fetch = state.pop("fetch")
                keys.key, keys.key_id, keys.obtained_s = fetch.key, fetch.key_id, self._t_wake
            elif step.name == "publish":
                return self._publish(step)
        except TransportError as exc:
            if exc.outcome is not None:
                self._observed(step, exc.outcome, ok=False)
            raise KeyStepFailed(str(exc) or type(exc).__name__, exc.outcome) from None
        except devicecrypto.KeyExchangeError as exc:
            raise KeyStepFailed(str(exc)) from None
        if step.kind == "network":
            raise ValueError(f"step {step.name!r}: the agent has no network action for it")
        return None

    def _observed(self, step: Step, outcome: NetworkOutcome, ok: bool = True) -> NetworkOutcome:
        if self.on_exchange is not None:
            self.on_exchange(step, outcome, ok)
        return outcome

    def _publish(self, step: Step) -> NetworkOutcome:
        """Publish the queue, oldest first, each sealed with its send time (part of the authenticated
        header) and its original reading time, in one MQTT session; keep what did not go out.

        A publish that fails still took radio time: the outcome charges what was spent.
        """
        batch = list(self.queue)
        sent_at: list[float] = []

        def sealer(reading: Reading):
            def seal(t_sent: float) -> bytes:
                sent_at.append(t_sent)
                return devicecrypto.seal_reading(self.keys.key, device=self.device_id, seq=reading.seq,
                                                 t_sent=t_sent, t_emul=reading.t_emul, mode=self.mode,
                                                 key_id=self.keys.key_id, reading=reading.values)
            return seal

        qos = self.settings.mqtt_qos
        # One connection (TCP + CONNECT), then one publish exchange per reading.
        step = dataclasses.replace(step, nbytes=step.nbytes * len(batch),
                                   round_trips=step.round_trips + qos * (len(batch) - 1))
        outcome = self.transport.publish(self.device_id, self.mode, [sealer(r) for r in batch], qos, step,
                                         self.settings.publish_timeout_s)
        self._observed(step, outcome.network, ok=outcome.acked == len(batch))
        for index, reading in enumerate(batch):
            if index < outcome.acked:
                self.queue.popleft()
                self._record(reading, sent_at[index], "")
            else:
                reading.error = outcome.error
        if outcome.acked < len(batch) and self.behaviour.queue_capacity == 0:
            while self.queue:  # nowhere to keep them: their fate is decided now
                reading = self.queue.popleft()
                index = batch.index(reading)
                self._record(reading, sent_at[index] if index < len(sent_at) else None, outcome.error)
        return outcome.network
