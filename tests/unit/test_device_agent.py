"""Device agents and the platform over a real Mosquitto on loopback (no Mininet, no root needed).

The DKG key exchange, AES-GCM sealing, the platform's decryption and the energy accounting all run
for real, driven by the run's scheduler with worker threads on the emulated clock; only the network
is loopback instead of the emulated wireless link.
"""

import dataclasses
import shutil
import socket
import sys
import threading
import time

import pandas as pd
import pytest

from harness import scenario
from harness.broker import mosquitto
from harness.clock import EmulatedClock
from harness.daemon import Daemon
from harness.devices.agent import DeviceAgent
from harness.devices.fleet import CsvSink
from harness.devices.scheduler import WakeScheduler
from harness.devices.transport import NetworkTransport
from harness.energy import DeviceProfile

pytestmark = pytest.mark.skipif(not (shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")),
                                reason="mosquitto not installed (install.sh installs it)")

WAKE_S, HOURS_S, TIME_SCALE, REFRESH_S = 60.0, 600.0, 200.0, 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def broker_and_platform(tmp_path):
    port = free_port()
    broker = mosquitto("127.0.0.1", port, tmp_path, tmp_path).start()
    platform = Daemon(name="platform", argv=[sys.executable, "-m", "harness.iotplatform", "--mode", "dkg",
                                             "--broker", f"127.0.0.1:{port}", "--out", str(tmp_path / "dkg")],
                      log_path=tmp_path / "platform.log").start()
    yield port
    platform.stop()
    broker.stop()


def run_devices(tmp_path, port, profile, count=2):
    out = tmp_path / "dkg"
    devices = dataclasses.replace(scenario.load("bcn").settings.devices, wake_period_s=WAKE_S,
                                  energy_interval_s=300.0)
    clock = EmulatedClock(time.time() + 0.2, TIME_SCALE)
    sink = CsvSink(out)
    transport = NetworkTransport(("127.0.0.1", port), 1)
    agents = [DeviceAgent(f"d{i}", "dkg", devices, "tls_resume", REFRESH_S, profile, transport, sink, 7)
              for i in range(1, count + 1)]
    scheduler = WakeScheduler(clock, workers=4, stop=threading.Event())
    scheduler.run(agents, HOURS_S)
    sink.close()
    assert scheduler.failures == []
    time.sleep(0.5)  # the last readings reach the platform
    return pd.read_csv(out / "sent.csv"), pd.read_csv(out / "energy.csv"), scheduler


def test_dkg_devices_publish_readings_the_platform_decrypts(tmp_path, broker_and_platform):
    sent, energy, scheduler = run_devices(tmp_path, broker_and_platform, DeviceProfile.load("fipy"))
    assert len(sent) == 2 * int(HOURS_S / WAKE_S)
    assert sent["acked"].all() and sent["error"].isna().all()
    # The key is renewed every 300 emulated s: twice per device in 600 s, with distinct key ids.
    assert sent.groupby("device")["key_refreshed"].sum().tolist() == [2, 2]
    assert sent.groupby("device")["key_id"].nunique().tolist() == [2, 2]
    received = pd.read_csv(tmp_path / "dkg" / "received.csv")
    assert len(received) == len(sent) and (received["decrypted"] == "ok").all()
    # Energest: every device's states add up to the whole run, in every interval.
    states = energy[["t_deep_sleep_s", "t_cpu_s", "t_radio_tx_s", "t_radio_listen_s"]].sum(axis=1)
    assert (abs(states - (energy["t_end_s"] - energy["t_start_s"])) < 1e-6).all()
    assert energy.groupby("device")["t_end_s"].max().tolist() == [HOURS_S, HOURS_S]
    # The scheduler kept up with 200x on loopback: no wake started an emulated minute late.
    assert scheduler.lag.wakes == len(sent) and scheduler.lag.max_s < WAKE_S


def test_slower_ecc_costs_dkg_devices_more_energy(tmp_path, broker_and_platform):
    """Doubling the ESP32's ECC times raises a DKG device's energy by at least the added ECC time."""
    profile = DeviceProfile.load("fipy")
    _, base, _ = run_devices(tmp_path / "base", broker_and_platform, profile, count=1)
    _, slow, _ = run_devices(tmp_path / "slow", broker_and_platform, profile.scaled_ecc(2.0), count=1)
    ecc_s = profile.op_seconds("ecc_keygen_p256") + profile.op_seconds("ecdh_p256")
    extra_j = slow["energy_j"].sum() - base["energy_j"].sum()
    # Two refreshes, each with ECC work charged at (at least) the CPU current.
    assert extra_j >= 2 * ecc_s * profile.currents_ma["cpu"] / 1000 * profile.voltage_v * 0.99


def test_bytes_charged_are_the_bytes_really_sent(tmp_path, broker_and_platform):
    """A publish's TX is what TCP really sent: more than the sealed payload, far less than a kilobyte more."""
    profile = DeviceProfile.load("fipy")
    transport = NetworkTransport(("127.0.0.1", broker_and_platform), 1)
    payload = b"x" * 400
    outcome = transport.publish("d9", "dkg", [lambda _t: payload], 1, None, 5.0)
    assert outcome.error == "" and outcome.acked == 1
    assert len(payload) < outcome.network.bytes_tx < len(payload) + 200
    assert outcome.network.frames >= 3  # SYN, CONNECT, PUBLISH at least
    assert profile.tx_airtime_s(outcome.network.bytes_tx, outcome.network.frames) > 0
