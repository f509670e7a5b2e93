"""A device through outages: readings queued and published late, backoff on key failures, old key kept.

The real agent and scheduler on the simulated transport, with a wrapper that makes every exchange
fail inside an outage window (as a wireless outage, a broker or relay restart would).
"""

import dataclasses

import pytest

from harness import scenario
from harness.devices.agent import DeviceAgent
from harness.devices.behaviour import QUEUE_OVERFLOW, DeviceBehaviour
from harness.devices.scheduler import VirtualClock, WakeScheduler
from harness.devices.simulated import SimBackend, SimulatedTransport
from harness.devices.transport import PublishOutcome, TransportError
from harness.energy import DeviceProfile
from harness.energy.wakecycle import NetworkOutcome

WAKE_S = 60.0


class Outage:
    """Fails every exchange whose wake falls in [start, end) (emulated s), after ``cost_s`` of radio time."""

    def __init__(self, inner, agent_clock, start, end, what=("publish", "fetch"), cost_s=0.5):
        self.inner, self.clock, self.start, self.end, self.what, self.cost_s = inner, agent_clock, start, end, what, cost_s

    def down(self, what):
        return what in self.what and self.start <= self.clock() < self.end

    def dkg_exchange(self, *args):
        if self.down("fetch"):
            raise TransportError("unreachable", NetworkOutcome(self.cost_s))
        return self.inner.dkg_exchange(*args)

    def fetch_key(self, *args):
        if self.down("fetch"):
            raise TransportError("unreachable", NetworkOutcome(self.cost_s))
        return self.inner.fetch_key(*args)

    def publish(self, device, mode, seals, qos, step, timeout_s):
        if self.down("publish"):
            return PublishOutcome(NetworkOutcome(self.cost_s), 0, "Network is unreachable")
        return self.inner.publish(device, mode, seals, qos, step, timeout_s)


class Sink:
    def __init__(self):
        self.records, self.rows = [], []

    def sent(self, record):
        self.records.append(record)

    def energy(self, rows):
        self.rows.extend(rows)


def run(mode, outage=None, behaviour=DeviceBehaviour(), hours=2.0, refresh_s=1800.0):
    settings = scenario.load("bcn").settings
    devices = dataclasses.replace(settings.devices, wake_period_s=WAKE_S)
    profile = DeviceProfile.load(devices.energy_profile)
    backend = SimBackend()
    inner = SimulatedTransport(backend, profile, settings.wireless, 1)
    sink = Sink()
    agent = DeviceAgent("d1", mode, devices, "psk_wrap", refresh_s, profile, inner, sink, 1, behaviour)
    if outage:
        agent.transport = Outage(inner, lambda: agent._t_wake, *outage)
    WakeScheduler(VirtualClock()).run([agent], hours * 3600)
    return agent, sink, backend


def test_readings_of_an_outage_are_published_late_with_their_own_timestamps():
    agent, sink, backend = run("qkd", outage=(600.0, 1200.0, ("publish",)))
    published = [r for r in sink.records if r.acked]
    assert len(sink.records) == len(published) == 120 == backend.decrypted  # nothing lost
    late = [r for r in published if r.queued_s > 0]
    assert len(late) == 10  # the wakes inside the 10-minute outage
    assert all(600.0 <= r.t_emul < 1200.0 for r in late)
    # Each waited from its own wake to the first wake after the outage.
    first_after = min(r.t_emul for r in published if r.t_emul >= 1200.0)
    assert all(r.queued_s == pytest.approx(first_after - r.t_emul) for r in late)


def test_a_full_queue_drops_the_oldest_and_says_so():
    _, sink, backend = run("dkg", outage=(600.0, 1800.0, ("publish",)), behaviour=DeviceBehaviour(queue_capacity=5))
    dropped = [r for r in sink.records if r.error.startswith(QUEUE_OVERFLOW)]
    # 20 readings of the outage and the first one after it share 5 places: the queue holds the
    # current reading too.
    assert len(dropped) == 20 + 1 - 5 and all(r.t_sent is None for r in dropped)
    assert sorted(r.seq for r in dropped) == [r.seq for r in dropped]  # oldest first
    assert sum(r.acked for r in sink.records) == backend.decrypted == 120 - 16


def attempts(agent):
    return agent.keys.failed_total


def test_a_failed_refresh_keeps_the_old_key_and_backs_off():
    behaviour = DeviceBehaviour(key_lifetime_s=3600.0, key_retry_backoff_max_wakes=4)
    # The relay is unreachable from 1800 s to 3000 s: the refresh due at ~1800 s fails repeatedly.
    agent, sink, _ = run("qkd", outage=(1800.0, 3000.0, ("fetch",)), behaviour=behaviour, hours=1.5)
    published = [r for r in sink.records if r.acked]
    assert len(published) == len(sink.records) == 90  # the old key (obtained at ~0 s) still valid until 3600 s
    keys = sorted({r.key_id for r in published}, key=lambda k: int(k.split("-")[1]))
    # The first key, the one fetched once the relay was back (~3000 s), its regular refresh 30 min later.
    assert len(keys) == 3
    # Attempts: retry next wake, then skip 1, then 3, then 3 (capped at 4 wakes apart) ... until 3000 s.
    failed = [r for r in sink.records if 1800.0 <= r.t_emul < 3000.0]
    assert all(r.key_id == keys[0] for r in failed)
    # Backoff: after n failures in a row the next try waits min(2^(n-1), 4) wakes, so 20 wakes of
    # outage see about 7 attempts, not 20.
    assert agent.keys.failures == 0 and 5 <= attempts(agent) <= 9


def test_without_a_valid_key_readings_wait_and_failed_attempts_cost_energy():
    behaviour = DeviceBehaviour(key_lifetime_s=600.0)
    base, _, _ = run("qkd", behaviour=behaviour, hours=1.0, refresh_s=600.0)
    agent, sink, backend = run("qkd", outage=(600.0, 1500.0, ("fetch",)), behaviour=behaviour, hours=1.0,
                               refresh_s=600.0)
    waited = [r for r in sink.records if r.queued_s > 0]
    assert waited and all(r.acked for r in waited)  # sealed and sent once a key came back
    assert backend.decrypted == len(sink.records) == 60
    # 0.5 s of radio per failed attempt, at least a few attempts: dearer than the run without outage.
    extra = agent.timeline.totals()["radio_listen"] - base.timeline.totals()["radio_listen"]
    assert extra > 1.0
