"""One emulated FiPy device: wake on the emulated clock, obtain a key, publish a reading, sleep.

The agent knows nothing about how it is hosted (its own process, or a thread among hundreds in
:mod:`harness.devices.fleet`): it is given an address to reach, a clock and a sink for its records.
Waits between wake-ups are emulated time (compressed by the time scale); everything the device does
on the network while awake takes the real time it takes over the emulated wireless link.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from harness.clock import EmulatedClock
from harness.mqttio import PublishOutcome, Session

#: Version of the reading payload (see docs/helpers-brief.md, "MQTT reading").
PAYLOAD_VERSION = 1


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
    seed: int

    def reading_topic(self) -> str:
        return f"qiot/{self.device_id}/reading"


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
    error: str

    FIELDS = ("device", "seq", "t_emul", "t_start", "t_sent", "acked", "key_id", "error")

    def row(self) -> list:
        return [self.device, self.seq, f"{self.t_emul:.3f}", f"{self.t_start:.6f}",
                "" if self.t_sent is None else f"{self.t_sent:.6f}", int(self.acked), self.key_id, self.error]


def placeholder_key(config: DeviceConfig, refresh_index: int) -> str:
    """PLACEHOLDER key step of the walking skeleton: a key id only, no key material, no cost.

    Replaced by the QKD (gateway relay) and DKG (ECDH with the platform) key steps.
    """
    return f"placeholder-{config.mode}-{config.device_id}-{refresh_index}"


class DeviceAgent:
    """The wake/publish/sleep loop of one device, from emulated time 0 to ``end_emul_s``."""

    def __init__(self, config: DeviceConfig, clock: EmulatedClock, end_emul_s: float,
                 record: Callable[[SentRecord], None], stop: threading.Event) -> None:
        self.config, self.clock, self.end_emul_s = config, clock, end_emul_s
        self.record, self.stop = record, stop
        self.rng = random.Random(f"{config.seed}-{config.device_id}")
        self.key_id = ""
        self.key_refresh_index = -1

    def run(self) -> None:
        """Wake every period (first wake at a random phase, so devices do not all wake together)."""
        t_wake = self.rng.uniform(0.0, self.config.wake_period_s)
        seq = 0
        while t_wake < self.end_emul_s and not self.stop.is_set():
            if not self.clock.sleep_until(t_wake, self.stop):
                break
            self.wake_cycle(seq, t_wake)
            seq += 1
            t_wake += self.config.wake_period_s

    def wake_cycle(self, seq: int, t_emul: float) -> None:
        refresh_index = int(t_emul // self.config.refresh_period_s)
        if refresh_index != self.key_refresh_index:
            self.key_id = placeholder_key(self.config, refresh_index)
            self.key_refresh_index = refresh_index
        outcome = self.publish_reading(seq, t_emul)
        self.record(SentRecord(self.config.device_id, seq, t_emul, outcome.t_start, outcome.t_sent,
                               outcome.acked, self.key_id, outcome.error))

    def publish_reading(self, seq: int, t_emul: float) -> PublishOutcome:
        """Connect, publish one reading carrying its send time, wait for the ack, disconnect."""
        cfg = self.config
        outcome = PublishOutcome(t_start=time.time())
        deadline = outcome.t_start + cfg.publish_timeout_s
        session = Session(f"{cfg.device_id}-{cfg.mode}", cfg.broker_host, cfg.broker_port, cfg.publish_timeout_s)
        try:
            session.connect(deadline)
            outcome.t_sent = time.time()
            session.publish(cfg.reading_topic(), self.payload(seq, t_emul, outcome.t_sent), cfg.mqtt_qos, deadline)
            outcome.acked = True
        except (OSError, TimeoutError) as exc:
            outcome.error = str(exc) or type(exc).__name__
        finally:
            session.close()
            outcome.t_done = time.time()
        return outcome

    def payload(self, seq: int, t_emul: float, t_sent: float) -> bytes:
        reading = {"temperature_c": round(self.rng.gauss(21.0, 2.0), 2)}
        header = {"v": PAYLOAD_VERSION, "device": self.config.device_id, "seq": seq, "t_sent": t_sent,
                  "t_emul": round(t_emul, 3), "mode": self.config.mode, "key_id": self.key_id}
        # PLACEHOLDER until the key steps land: the reading travels base64-encoded, not encrypted.
        body = base64.b64encode(json.dumps(reading).encode()).decode()
        return json.dumps(dict(header, nonce="", ct=body)).encode()
