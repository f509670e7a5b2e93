"""One emulated FiPy device: wake on the emulated clock, obtain a key, publish a sealed reading, sleep.

The agent knows nothing about how it is hosted (its own process, or a thread among hundreds in
:mod:`harness.devices.fleet`): it is given addresses, a clock, key steps and sinks for its records.
Each wake follows the plan of :func:`harness.energy.wakecycle.plan_wake` (boot, associate, key step
if a refresh is due, sense, encrypt, publish, sleep). Network steps really happen over the emulated
wireless link and are charged with the time they really took (the network is never accelerated);
compute steps (ECC, AES, TLS crypto) are done with real cryptography on the host but charged at the
profile's ESP32 time. Waits between wakes are emulated time, compressed by the time scale.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from harness import devicecrypto
from harness.clock import EmulatedClock
from harness.devices.keysteps import KeySteps
from harness.energy import DeviceProfile, DeviceTimeline, IntervalRow
from harness.energy.wakecycle import (MQTT_OVERHEAD_BYTES, NetworkOutcome, Step, key_refresh_due, plan_wake,
                                      run_steps)
from harness.mqttio import Session


@dataclass(frozen=True)
class DeviceConfig:
    """Everything one device needs to run; built by the run from the scenario and the topology."""

    device_id: str
    index: int
    mode: str  # "qkd" or "dkg"
    broker_host: str
    broker_port: int
    wake_period_s: float
    mqtt_qos: int
    publish_timeout_s: float
    refresh_period_s: float
    energy_interval_s: float
    qkd_transport: str
    dkg_curve: str
    seed: int


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


class DeviceAgent:
    """The wake/publish/sleep loop of one device, from emulated time 0 to ``end_emul_s``."""

    def __init__(self, config: DeviceConfig, profile: DeviceProfile, keys: KeySteps, clock: EmulatedClock,
                 end_emul_s: float, record: Callable[[SentRecord], None],
                 record_energy: Callable[[list[IntervalRow]], None], stop: threading.Event) -> None:
        self.config, self.profile, self.keys, self.clock = config, profile, keys, clock
        self.end_emul_s, self.record, self.record_energy, self.stop = end_emul_s, record, record_energy, stop
        self.timeline = DeviceTimeline(profile, config.device_id, 0.0, config.energy_interval_s)
        # Seeds from a stable digest: Python's hash() of strings changes from process to process.
        self.sensors = devicecrypto.PysenseSensors(seed=zlib.crc32(f"{config.seed}-{config.device_id}".encode()))
        self.last_refresh: float | None = None
        self._reading = None
        self._outcome: SentRecord | None = None

    def run(self) -> None:
        """Wake every period (first wake at a seeded phase, so devices do not all wake together)."""
        phase = random.Random(f"{self.config.seed}-{self.config.device_id}-phase").random()
        t_wake = phase * self.config.wake_period_s
        self.timeline.sleep_until(min(t_wake, self.end_emul_s))
        seq = 0
        try:
            while t_wake < self.end_emul_s and not self.stop.is_set():
                if not self.clock.sleep_until(t_wake, self.stop):
                    break
                next_wake = t_wake + self.config.wake_period_s
                self.wake_cycle(seq, t_wake, min(next_wake, self.end_emul_s))
                seq += 1
                t_wake = max(next_wake, self.timeline.now)  # a wake that overran delays the next one
        finally:
            # Account up to where the run ended (the end of the run, or now if it was stopped).
            self.timeline.sleep_until(min(self.end_emul_s, max(self.clock.now(), self.timeline.now)))
            rows = self.timeline.pop_rows()
            partial = self.timeline.partial_row()
            self.record_energy(rows + ([partial] if partial is not None else []))

    def wake_cycle(self, seq: int, t_wake: float, wake_until: float) -> None:
        """One wake: run the plan's steps on the timeline, then record the publish and energy rows."""
        if self.timeline.now < t_wake:
            self.timeline.sleep_until(t_wake)
        due = key_refresh_due(t_wake, self.last_refresh, self.config.refresh_period_s)
        steps = plan_wake(self.profile, self.config.mode, key_refresh_due=due, mqtt_qos=self.config.mqtt_qos,
                          qkd_transport=self.config.qkd_transport, dkg_curve=self.config.dkg_curve)
        self._outcome = SentRecord(self.config.device_id, seq, t_wake, time.time(), None, False, "", due, "")
        try:
            run_steps(self.timeline, steps, self.perform, wake_until=max(wake_until, self.timeline.now))
        except KeyStepFailed as exc:
            # No key, no reading: the device goes back to sleep and tries again next wake.
            self._outcome.error = f"key step: {exc}"
            self.timeline.sleep_until(max(wake_until, self.timeline.now))
        else:
            if due:
                self.last_refresh = t_wake
        self._outcome.key_id = self.keys.key_id
        self.record(self._outcome)
        self.record_energy(self.timeline.pop_rows())

    def perform(self, step: Step) -> NetworkOutcome | None:
        """Do a step's real work; network steps return what they really took."""
        if step.name == "sense":
            self._reading = self.sensors.read(self.timeline.now)
        elif step.name == "publish":
            return self.publish()
        elif step.name.startswith(("dkg_", "qkd_", "tls_")):
            try:
                return self.keys.perform(step, self.config.publish_timeout_s)
            except (OSError, TimeoutError, ValueError) as exc:
                raise KeyStepFailed(str(exc) or type(exc).__name__) from None
        elif step.kind == "network":
            raise ValueError(f"step {step.name!r}: the agent has no network action for it")
        return None

    def publish(self) -> NetworkOutcome:
        """Connect, seal the reading with the send time, publish, wait for the ack, disconnect.

        The reading is sealed after CONNACK because its send time is part of the authenticated header.
        A publish that fails still took radio time: the outcome charges what was spent.
        """
        cfg, record = self.config, self._outcome
        start = time.time()
        deadline = start + cfg.publish_timeout_s
        session = Session(f"{cfg.device_id}-{cfg.mode}", cfg.broker_host, cfg.broker_port, cfg.publish_timeout_s)
        payload = b""
        try:
            session.connect(deadline)
            record.t_sent = time.time()
            payload = devicecrypto.seal_reading(self.keys.key, device=cfg.device_id, seq=record.seq,
                                                t_sent=record.t_sent, t_emul=record.t_emul, mode=cfg.mode,
                                                key_id=self.keys.key_id, reading=self._reading)
            session.publish(devicecrypto.topic_for(cfg.device_id), payload, cfg.mqtt_qos, deadline)
            record.acked = True
        except (OSError, TimeoutError) as exc:
            record.error = str(exc) or type(exc).__name__
        finally:
            session.close()
        return NetworkOutcome(time.time() - start, MQTT_OVERHEAD_BYTES + len(payload))


class KeyStepFailed(RuntimeError):
    """The device could not obtain a key this wake (network failure or refusal)."""
