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
"""

from __future__ import annotations

import json
import random
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

from harness import devicecrypto
from harness.devices.config import DeviceSettings
from harness.devices.transport import DeviceTransport, TransportError
from harness.energy import DeviceProfile, DeviceTimeline, IntervalRow
from harness.energy.wakecycle import FULL_HANDSHAKE_STEPS, NetworkOutcome, Step, key_refresh_due, plan_wake, run_steps
from harness.enums import KeyTransport, Mode


@dataclass
class SentRecord:
    """One wake cycle's publish, as the device saw it (one row of ``sent.csv``)."""

    device: str
    seq: int
    t_emul: float
    t_start: float
    t_sent: float | None
    acked: bool
    key_id: str
    key_refreshed: bool
    error: str

    FIELDS = ("device", "seq", "t_emul", "t_start", "t_sent", "acked", "key_id", "key_refreshed", "error")

    def row(self) -> list:
        return [self.device, self.seq, f"{self.t_emul:.3f}", f"{self.t_start:.6f}",
                "" if self.t_sent is None else f"{self.t_sent:.6f}", int(self.acked), self.key_id,
                int(self.key_refreshed), self.error]


class RecordSink(Protocol):
    """Where an agent's records go: ``sent.csv`` and ``energy.csv`` in a run, lists in a simulation."""

    def sent(self, record: SentRecord) -> None: ...

    def energy(self, rows: list[IntervalRow]) -> None: ...


class KeyStepFailed(RuntimeError):
    """The device could not obtain a key this wake (network failure or refusal)."""


class DeviceAgent:
    """The wake cycles of one device, from emulated time 0 to the end of the mode."""

    def __init__(self, device_id: str, mode: Mode, settings: DeviceSettings, key_transport: KeyTransport,
                 refresh_period_s: float, profile: DeviceProfile, transport: DeviceTransport, sink: RecordSink,
                 seed: int) -> None:
        self.device_id, self.mode, self.settings = device_id, Mode(mode), settings
        self.key_transport, self.refresh_period_s = KeyTransport(key_transport), refresh_period_s
        self.profile, self.transport, self.sink = profile, transport, sink
        self.timeline = DeviceTimeline(profile, device_id, 0.0, settings.energy_interval_s)
        # Seeds from a stable digest: Python's hash() of strings changes from process to process.
        self.sensors = devicecrypto.PysenseSensors(seed=zlib.crc32(f"{seed}-{device_id}".encode()))
        self.phase = random.Random(f"{seed}-{device_id}-phase").random()
        # The plaintext a reading seals (what the encrypt step charges); the sensors' format is fixed.
        self.reading_bytes = len(json.dumps(devicecrypto.PysenseSensors(seed=0).read(0.0), separators=(",", ":")))
        self.key: bytes | None = None
        self.key_id = ""
        self.last_refresh: float | None = None
        self.seq = 0
        self._step_state: dict = {}
        self._record: SentRecord | None = None

    @property
    def first_wake_s(self) -> float:
        """A seeded phase within the first period, so devices do not all wake together."""
        return self.phase * self.settings.wake_period_s

    def wake(self, t_wake: float, end_s: float) -> float:
        """Run the wake cycle due at ``t_wake``; return when the next one is due (a wake that overran
        its period delays the next one)."""
        if self.timeline.now < t_wake:
            self.timeline.sleep_until(t_wake)
        next_wake = t_wake + self.settings.wake_period_s
        due = key_refresh_due(t_wake, self.last_refresh, self.refresh_period_s)
        steps = plan_wake(self.profile, self.mode, key_refresh_due=due, devices=self.settings,
                          qkd_transport=self.key_transport, reading_bytes=self.reading_bytes)
        self._record = SentRecord(self.device_id, self.seq, t_wake, time.time(), None, False, "", due, "")
        wake_until = max(min(next_wake, end_s), self.timeline.now)
        try:
            run_steps(self.timeline, steps, self.perform, wake_until=wake_until)
        except KeyStepFailed as exc:
            # No key, no reading: the device goes back to sleep and tries again next wake.
            self._record.error = f"key step: {exc}"
            self.timeline.sleep_until(max(wake_until, self.timeline.now))
        else:
            if due:
                self.last_refresh = t_wake
        self._record.key_id = self.key_id
        self.sink.sent(self._record)
        self.sink.energy(self.timeline.pop_rows())
        self.seq += 1
        return max(next_wake, self.timeline.now)

    def finish(self, t_end: float) -> None:
        """Account up to ``t_end`` (the end of the mode, or where it was stopped) and flush the rows."""
        self.timeline.sleep_until(max(t_end, self.timeline.now))
        partial = self.timeline.partial_row()
        self.sink.energy(self.timeline.pop_rows() + ([partial] if partial is not None else []))

    # --- the steps ------------------------------------------------------------------------------
    def perform(self, step: Step) -> NetworkOutcome | None:
        """Do a step's real work; network steps return what they took."""
        state, timeout = self._step_state, self.settings.publish_timeout_s
        try:
            if step.name == "sense":
                state["reading"] = self.sensors.read(self.timeline.now)
            elif step.name == "dkg_keygen":
                state["party"] = devicecrypto.DkgParty("device", self.settings.dkg_curve)
            elif step.name == "dkg_exchange":
                state["key_id"], state["peer"], outcome = self.transport.dkg_exchange(
                    self.device_id, self.settings.dkg_curve, state["party"].public_bytes, step, timeout)
                return outcome
            elif step.name == "dkg_agree":
                self.key = state.pop("party").derive_key(state.pop("peer"), device_id=self.device_id)
                self.key_id = state.pop("key_id")
            elif step.name == "qkd_fetch":
                fetch, outcome = self.transport.fetch_key(self.device_id, self.key_transport, step, timeout)
                if self.key_transport == KeyTransport.TLS_RESUME and fetch.full_handshakes:
                    # The relay declined the resumption: the handshake that happened was a full one.
                    for _, op in FULL_HANDSHAKE_STEPS:
                        self.timeline.compute(op)
                state["fetch"] = fetch
                return outcome
            elif step.name == "qkd_decrypt":
                fetch = state.pop("fetch")
                self.key, self.key_id = fetch.key, fetch.key_id
            elif step.name == "publish":
                return self._publish(step)
        except (TransportError, devicecrypto.KeyExchangeError) as exc:
            raise KeyStepFailed(str(exc) or type(exc).__name__) from None
        if step.kind == "network":
            raise ValueError(f"step {step.name!r}: the agent has no network action for it")
        return None

    def _publish(self, step: Step) -> NetworkOutcome:
        """Seal the reading with its send time (part of the authenticated header) and publish it.

        A publish that fails still took radio time: the outcome charges what was spent.
        """
        record, reading = self._record, self._step_state.pop("reading")

        def seal(t_sent: float) -> bytes:
            record.t_sent = t_sent
            return devicecrypto.seal_reading(self.key, device=self.device_id, seq=record.seq, t_sent=t_sent,
                                             t_emul=record.t_emul, mode=self.mode, key_id=self.key_id,
                                             reading=reading)

        outcome = self.transport.publish(self.device_id, self.mode, seal, self.settings.mqtt_qos, step,
                                         self.settings.publish_timeout_s)
        record.acked = outcome.error == ""
        record.error = outcome.error
        return outcome.network
