"""Energest-like accounting: state times, interval rollover, RDC, energy, current, lifetime, CSV."""

import csv
import math

import pytest

from harness.energy.energest import (ENERGY_CSV_COLUMNS, STATES, DeviceTimeline, avg_current_ma,
                                     battery_life_days, energy_j, rdc, write_energy_csv)
from harness.energy.profile import DeviceProfile


@pytest.fixture(scope="module")
def fipy():
    return DeviceProfile.load("fipy")


def test_metrics_by_hand(fipy):
    times = {"deep_sleep": 59.0, "cpu": 0.5, "radio_tx": 0.1, "radio_listen": 0.4}
    assert rdc(times) == pytest.approx(0.5 / 60.0)
    ma = fipy.currents_ma
    charge = 59.0 * ma["deep_sleep"] + 0.5 * ma["cpu"] + 0.1 * ma["radio_tx"] + 0.4 * ma["radio_listen"]  # mA*s
    assert avg_current_ma(times, fipy) == pytest.approx(charge / 60.0)
    assert energy_j(times, fipy) == pytest.approx(charge / 1000.0 * fipy.voltage_v)
    nominal = fipy.settings.battery.capacity_mah
    assert battery_life_days(1.0, fipy) == pytest.approx(nominal * fipy.settings.battery.usable_fraction / 24.0)
    derated = fipy.with_values({"battery.usable_fraction": 0.8, "battery.self_discharge_ua": 250.0})
    assert battery_life_days(0.75, derated) == pytest.approx(0.8 * nominal / 1.0 / 24.0)
    assert rdc({}) == 0.0 and battery_life_days(0.0, fipy) == math.inf


def test_charges_roll_over_intervals_and_sum_to_elapsed(fipy):
    tl = DeviceTimeline(fipy, "d7", start_s=100.0, interval_s=3600.0)
    tl.charge("cpu", 1.0)
    tl.sleep_until(3599.5)
    tl.charge("radio_listen", 2.0)   # crosses the 3600 s boundary: 0.5 s before, 1.5 s after
    tl.charge("deep_sleep", 7200.0)  # to 10801.5 s: fills intervals 1 and 2, 1.5 s into 3
    rows = tl.rows
    assert [r.interval for r in rows] == [0, 1, 2]
    assert rows[0].t_start_s == 100.0 and rows[0].t_end_s == 3600.0
    assert rows[0].times["radio_listen"] == pytest.approx(0.5)
    assert rows[1].times["radio_listen"] == pytest.approx(1.5)
    assert rows[1].t_start_s == 3600.0 and rows[1].t_end_s == 7200.0
    partial = tl.partial_row()
    assert rows[2].times == {"deep_sleep": 3600.0, "cpu": 0.0, "radio_tx": 0.0, "radio_listen": 0.0}
    assert partial.interval == 3 and partial.duration_s == pytest.approx(1.5)
    assert partial.t_end_s == pytest.approx(tl.now)
    for row in rows + [partial]:
        assert sum(row.times.values()) == pytest.approx(row.duration_s, abs=1e-9)
    assert sum(tl.totals().values()) == pytest.approx(tl.elapsed_s, abs=1e-9)
    assert tl.elapsed_s == pytest.approx(1.0 + 3498.5 + 2.0 + 7200.0)
    assert tl.pop_rows() == rows and tl.pop_rows() == []


def test_compute_is_radio_listen_only_while_associated_if_profile_says_so(fipy):
    ecdh = fipy.op_seconds("dkg.ecdh_p256")
    tl = DeviceTimeline(fipy)
    assert tl.compute("dkg.ecdh_p256") == pytest.approx(ecdh)
    assert tl.totals()["cpu"] == pytest.approx(ecdh)
    tl.set_associated(True)
    tl.compute("dkg.ecdh_p256")
    assert tl.totals()["radio_listen"] == pytest.approx(ecdh)
    quiet = DeviceTimeline(fipy.with_values({"power.radio_listens_while_associated": False}))
    quiet.set_associated(True)
    quiet.compute("dkg.ecdh_p256")
    assert quiet.totals()["cpu"] == pytest.approx(ecdh) and quiet.totals()["radio_listen"] == 0.0
    tl.sleep_until(tl.now + 10)
    assert not tl.associated


def test_network_splits_measured_time_into_tx_airtime_and_listen(fipy):
    tl = DeviceTimeline(fipy)
    tx, listen = tl.network(0.030, bytes_tx=400)
    assert tx == pytest.approx(fipy.tx_airtime_s(400))
    assert tx + listen == pytest.approx(0.030)
    assert tl.totals()["radio_tx"] == pytest.approx(tx)
    # An exchange shorter than its own air time lasts the air time.
    tx, listen = tl.network(0.0, bytes_tx=10_000)
    assert listen == 0.0 and tl.now == pytest.approx(0.030 + tx)


def test_bad_charges_are_refused(fipy):
    tl = DeviceTimeline(fipy)
    with pytest.raises(ValueError, match="unknown state 'tx'"):
        tl.charge("tx", 1.0)
    with pytest.raises(ValueError, match="seconds must be"):
        tl.charge("cpu", -1.0)
    with pytest.raises(ValueError, match="seconds must be"):
        tl.charge("cpu", math.nan)
    with pytest.raises(ValueError, match="interval_s"):
        DeviceTimeline(fipy, interval_s=0)
    assert tl.sleep_until(-5.0) == 0.0


def test_energy_csv_has_the_contract_columns(fipy, tmp_path):
    tl = DeviceTimeline(fipy, "d1", interval_s=60.0)
    tl.charge("cpu", 1.0)
    tl.sleep_until(150.0)
    path = tmp_path / "energy.csv"
    write_energy_csv(path, tl.rows + [tl.partial_row()])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ENERGY_CSV_COLUMNS
    assert ENERGY_CSV_COLUMNS[4:4 + len(STATES)] == [f"t_{s}_s" for s in STATES]
    assert len(rows) == 3 and rows[2]["t_end_s"] == "150.0"
    assert float(rows[0]["t_cpu_s"]) == 1.0 and float(rows[0]["rdc"]) == 0.0
    assert float(rows[1]["avg_current_ma"]) == pytest.approx(fipy.currents_ma["deep_sleep"])
    tl.sleep_until(200.0)
    write_energy_csv(path, tl.pop_rows()[-1:], append=True)
    with open(path, newline="") as handle:
        again = list(csv.DictReader(handle))
    assert len(again) == 4 and again[3]["interval"] == "2" and again[3]["t_end_s"] == "180.0"
