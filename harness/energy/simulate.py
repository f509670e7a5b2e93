"""Pure simulation of devices and platform: the wake cycle with assumed network times, real crypto.

No sockets: every network step takes ``round_trips`` round trips of ``rtt_s`` (each one-way trip with a
seeded uniform jitter of +/- ``jitter_s``) plus air time; no loss, no retransmissions. Everything else is
what a networked agent does: the device really generates DKG key pairs and agrees keys with a simulated
platform, really unwraps QKD keys a simulated gateway wrapped, seals every reading with AES-GCM, and the
platform opens every reading. Used by the tests of the energy claims and by benchmarks/bench_energy.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from harness import devicecrypto as dc
from harness.energy.energest import DeviceTimeline, IntervalRow
from harness.energy.profile import DeviceProfile
from harness.energy.wakecycle import (MQTT_OVERHEAD_BYTES, NetworkOutcome, Step, assumed_outcome,
                                      key_refresh_due, plan_wake, run_steps)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Defaults: the hpn/bcn scenarios' wake period and the paper's 30 min refresh."""

    mode: str
    duration_s: float
    devices: int = 1
    wake_period_s: float = 60.0        # experiments/hpn.toml [devices] wake_period_s
    refresh_period_s: float = 1800.0   # paper: keys updated every 30 min
    interval_s: float = 3600.0         # energy.csv rows per emulated hour
    rtt_s: float = 0.010               # hpn.toml [wireless] delay_ms = 5 each way (assumption there)
    jitter_s: float = 0.001            # hpn.toml [wireless] jitter_ms = 1: uniform +/- per one-way trip
    qkd_transport: str = "psk_wrap"
    dkg_curve: str = "p256"
    dkg_authenticated: bool = False
    keygen_before_association: bool = False
    mqtt_qos: int = 1
    seed: int = 1


@dataclass
class SimResult:
    """Energy rows (complete and final partial intervals), cumulative rows and message counts."""

    rows: list[IntervalRow]
    cumulative: list[IntervalRow]
    sent: int = 0
    decrypted: int = 0
    key_refreshes: int = 0


@dataclass
class SimPlatform:
    """The platform (and, for QKD, the gateway): hands out keys and decrypts every reading."""

    curve: str = "p256"
    master_secret: bytes = field(default_factory=lambda: os.urandom(dc.KEY_BYTES))
    keys: dict[tuple[str, str], bytes] = field(default_factory=dict)
    decrypted: int = 0
    next_qkd_id: int = 0

    def qkd_fetch(self, device: str) -> tuple[str, bytes]:
        """Gateway: a fresh key (stand-in for a QKD key) wrapped under the device's KEK."""
        self.next_qkd_id += 1
        key_id, key = f"qkd-{self.next_qkd_id}", os.urandom(dc.KEY_BYTES)
        self.keys[(device, key_id)] = key
        return key_id, dc.wrap_key(dc.device_kek(self.master_secret, device), key)

    def dkg_exchange(self, device: str, device_public: bytes) -> tuple[str, bytes]:
        """Platform: answer a device's public key with its own and derive the same AES key."""
        party = dc.DkgParty("platform", self.curve)
        key_id = dc.dkg_key_id(device_public, party.public_bytes)
        self.keys[(device, key_id)] = party.derive_key(device_public, device_id=device)
        return key_id, party.public_bytes

    def receive(self, payload: bytes) -> dict:
        """Decrypt a reading (raises DecryptError if it does not authenticate)."""
        _, reading = dc.open_reading(lambda h: self.keys[(h["device"], h["key_id"])], payload)
        self.decrypted += 1
        return reading


class SimDevice:
    """One emulated device: its timeline, sensors, current key and the ``perform`` for each step."""

    def __init__(self, profile: DeviceProfile, config: SimConfig, platform: SimPlatform, name: str,
                 start_s: float, seed: int) -> None:
        self.profile, self.config, self.platform, self.name = profile, config, platform, name
        self.timeline = DeviceTimeline(profile, name, 0.0, config.interval_s)
        self.timeline.sleep_until(start_s)
        self.sensors = dc.PysenseSensors(seed=seed)
        self.rng = np.random.default_rng(seed)
        self.kek = dc.device_kek(platform.master_secret, name)
        self.key: bytes | None = None
        self.key_id = ""
        self.key_time: float | None = None
        self.seq = 0
        self.sent = 0
        self.refreshes = 0
        self._scratch: dict = {}
        self.reading_bytes = len(json.dumps(self.sensors.read(0.0), separators=(",", ":")))

    def wake(self, wake_until: float) -> None:
        """Run one wake cycle starting now and sleep until ``wake_until``."""
        t_wake = self.timeline.now
        due = key_refresh_due(t_wake, self.key_time, self.config.refresh_period_s)
        c = self.config
        steps = plan_wake(self.profile, c.mode, key_refresh_due=due, reading_bytes=self.reading_bytes,
                          qkd_transport=c.qkd_transport, dkg_curve=c.dkg_curve,
                          dkg_authenticated=c.dkg_authenticated,
                          keygen_before_association=c.keygen_before_association, mqtt_qos=c.mqtt_qos)
        if due:
            self.key_time = t_wake
            self.refreshes += 1
        run_steps(self.timeline, steps, self.perform, wake_until=wake_until)

    def perform(self, step: Step) -> NetworkOutcome | None:
        """Do the step's real work; network steps return their assumed outcome."""
        s = self._scratch
        if step.name == "dkg_keygen":
            s["party"] = dc.DkgParty("device", self.config.dkg_curve)
        elif step.name == "dkg_exchange":
            self.key_id, s["peer"] = self.platform.dkg_exchange(self.name, s["party"].public_bytes)
        elif step.name == "dkg_agree":
            self.key = s.pop("party").derive_key(s.pop("peer"), device_id=self.name)
        elif step.name == "qkd_fetch":
            self.key_id, s["wrapped"] = self.platform.qkd_fetch(self.name)
        elif step.name == "qkd_decrypt":
            self.key = dc.unwrap_key(self.kek, s.pop("wrapped"))
        elif step.name == "sense":
            s["reading"] = self.sensors.read(self.timeline.now)
        elif step.name == "encrypt":
            self.seq += 1
            t = self.timeline.now
            s["payload"] = dc.seal_reading(self.key, device=self.name, seq=self.seq, t_sent=t, t_emul=t,
                                           mode=self.config.mode, key_id=self.key_id,
                                           reading=s.pop("reading"))
        elif step.name == "publish":
            payload = s.pop("payload")
            self.platform.receive(payload)
            self.sent += 1
            # Air time from the real payload size rather than the plan's estimate.
            return self._network(dataclasses.replace(step, nbytes=MQTT_OVERHEAD_BYTES + len(payload)))
        if step.kind == "network":
            return self._network(step)
        return None

    def _network(self, step: Step) -> NetworkOutcome:
        """Assumed outcome of a network step, with this device's seeded jitter on every one-way trip."""
        c = self.config
        jitter = float(self.rng.uniform(-c.jitter_s, c.jitter_s, 2 * step.round_trips).sum())
        outcome = assumed_outcome(self.profile, step, c.rtt_s)
        return dataclasses.replace(outcome, duration_s=max(0.0, outcome.duration_s + jitter))


def simulate(profile: DeviceProfile, config: SimConfig) -> SimResult:
    """Run ``config.devices`` devices for ``config.duration_s`` emulated seconds; return their energy rows.

    Device i first wakes at a seeded random offset within one wake period (so devices do not all wake
    together), then every ``wake_period_s``; a wake that overruns its period delays the next one.
    """
    if config.duration_s <= 0 or config.devices < 1:
        raise ValueError("simulate: duration_s must be > 0 and devices >= 1")
    rng = np.random.default_rng(config.seed)
    platform = SimPlatform(curve=config.dkg_curve)
    devices = [SimDevice(profile, config, platform, f"d{i + 1}",
                         float(rng.uniform(0, config.wake_period_s)), config.seed * 1000 + i)
               for i in range(config.devices)]
    result = SimResult([], [])
    for device in devices:
        timeline = device.timeline
        next_wake = timeline.now
        while next_wake < config.duration_s:
            scheduled = next_wake + config.wake_period_s
            device.wake(min(scheduled, config.duration_s))
            next_wake = max(scheduled, timeline.now)
        timeline.sleep_until(config.duration_s)
        result.rows += timeline.rows
        partial = timeline.partial_row()
        if partial is not None:
            result.rows.append(partial)
        result.cumulative.append(timeline.cumulative_row())
        result.sent += device.sent
        result.key_refreshes += device.refreshes
    result.decrypted = platform.decrypted
    return result
