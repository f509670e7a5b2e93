"""analyze_run on the fixture run: capture cross-check, wire loss/latency and the per-hour series."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.analyze import analyze_run
from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION, RunDirError, open_run
from harness.analysis.series import SERIES_COLUMNS, build_series

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"


@pytest.fixture()
def run_copy(tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


def test_capture_check_finds_the_drop_and_the_loss(run_copy):
    report = analyze_run(run_copy)
    assert report["schema_version"] == ANALYSIS_SCHEMA_VERSION and report["modes"]["qkd"]["capture_drops"] == 1
    assert report["interval_s"] == 3600 and report["interval_source"] == "scenario [devices] energy_interval_s"
    assert report["warnings"] == [] and report["emulation"] == "not measured"
    check = json.loads((run_copy / "qkd" / "capture.json").read_text())
    assert check["sent"] == 12 and check["app_received"] == 11 and check["broker_seen"] == 10
    assert check["capture_drop_examples"] == [["d1", 5]]       # app: received; dc.pcap: missing
    assert check["wire_only"] == 0 and check["unknown_in_capture"] == 0
    assert check["device_missing"] == 0                          # gw-wlan.pcap saw all 12
    assert check["wire_loss_pct"] == pytest.approx(100 * 2 / 12)
    assert check["wire_latency_mean_ms"] == pytest.approx(14.7, abs=0.01)
    dkg = json.loads((run_copy / "dkg" / "capture.json").read_text())
    assert dkg["broker_capture"] is False and "capture_drops" not in dkg


def test_wire_csv_rows(run_copy):
    analyze_run(run_copy)
    wire = pd.read_csv(run_copy / "qkd" / "wire.csv")
    assert len(wire) == 12
    lost = wire[(wire.device == "d2") & (wire.seq == 4)].iloc[0]
    assert lost.app_received == 0 and lost.broker_seen == 0 and lost.device_seen == 1
    split = wire[(wire.device == "d1") & (wire.seq == 2)].iloc[0]
    assert split.wire_latency_ms == pytest.approx(20.0, abs=0.01)
    assert split.app_latency_ms == pytest.approx(22.0, abs=1e-3)   # epoch-second doubles: sub-us rounding


def test_hourly_series_matches_hand_count(run_copy):
    analyze_run(run_copy)
    qkd = pd.read_csv(run_copy / "qkd" / "series.csv")
    assert tuple(qkd.columns) == SERIES_COLUMNS and len(qkd) == 2       # 2 emulated hours
    h0, h1 = qkd.iloc[0], qkd.iloc[1]
    assert (h0.sent, h0.received, h1.sent, h1.received, h1.lost) == (6, 6, 6, 5, 1)
    assert h1.loss_pct == pytest.approx(100 / 6)
    assert h0.latency_mean_ms == pytest.approx(15.5, abs=1e-3) and h1.latency_mean_ms == pytest.approx(18.8, abs=1e-3)
    assert h0.wire_latency_mean_ms == pytest.approx(13.5, abs=0.01)
    assert h1.wire_latency_mean_ms == pytest.approx(16.5, abs=0.01)
    assert h1.wire_received == 4 and h1.wire_loss_pct == pytest.approx(100 * 2 / 6)
    assert h0.rdc_mean == pytest.approx(0.019) and h1.rdc_mean == pytest.approx(0.021)
    assert h0.battery_life_days_mean == pytest.approx(105) and h1.battery_life_days_mean == pytest.approx(95)
    assert h0.devices == 2 and h0.rdc_ci95 == pytest.approx(12.706205 * 0.001, rel=1e-5)  # (0.020, 0.018)
    assert (h1.lost_network, h1.not_published, h1.dropped_queue_overflow, h1.delivered_late) == (1, 0, 0, 0)
    assert qkd.faults.isna().all()                                       # no faults in this run
    assert (h0.keys_in_buffer, h0.keys_delivered, h1.keys_in_buffer, h1.keys_delivered) == (3906, 2, 3906, 2)
    dkg = pd.read_csv(run_copy / "dkg" / "series.csv")
    assert dkg.latency_mean_ms.tolist() == pytest.approx([13.0, 13.0], abs=1e-3)
    assert dkg.wire_latency_mean_ms.isna().all() and dkg.keys_in_buffer.isna().all()


def test_energy_rows_combine_harmonically_within_an_interval():
    messages = pd.DataFrame({"device": ["a"], "seq": [0], "t_emul": [10.0], "t_sent": [0.0],
                             "t_received": [0.01], "latency_ms": [10.0], "received": [1]})
    # one device, two half-hour rows in hour 0: lifetime 100 d and 50 d -> 1/(0.5/100 + 0.5/50) = 66.67 d
    energy = pd.DataFrame({"device": ["a", "a"], "interval": [0, 1], "t_start_s": [0.0, 1800.0],
                           "t_end_s": [1800.0, 3600.0], "rdc": [0.01, 0.03], "energy_j": [1.0, 2.0],
                           "avg_current_ma": [1.0, 2.0], "battery_life_days": [100.0, 50.0]})
    series = build_series(messages, energy, interval_s=3600)
    assert len(series) == 1
    assert series.battery_life_days_mean[0] == pytest.approx(200 / 3)
    assert series.rdc_mean[0] == pytest.approx(0.02) and series.energy_j_total[0] == pytest.approx(3.0)
    with pytest.raises(ValueError):
        build_series(messages, energy, interval_s=0)


def test_configurable_interval(run_copy):
    analyze_run(run_copy, interval_s=1800)
    qkd = pd.read_csv(run_copy / "qkd" / "series.csv")
    # bins: [0,1800): t_emul 600 -> 2 msgs; [1800,3600): 1800, 3000 -> 4; [3600,5400): 4200 -> 2;
    # [5400,7200): 5400, 6600 -> 4 (two devices each)
    assert len(qkd) == 4 and qkd.sent.tolist() == [2, 4, 2, 4]
    # keys.csv: last record before 1800 is t=900 (3904 in buffer, 2 delivered since 0)
    assert qkd.keys_in_buffer.tolist() == [3904, 3906, 3904, 3906]
    assert qkd.keys_delivered.tolist() == [2, 0, 2, 0]
    # energy rows are hourly: each lands in the half-hour bin of its start
    assert qkd.devices.tolist() == [2, 0, 2, 0]


def _with_metadata(run, **changes):
    meta = json.loads((run / "metadata.json").read_text())
    meta.update(changes)
    (run / "metadata.json").write_text(json.dumps(meta))
    return meta


def test_series_interval_follows_the_run_energy_interval(run_copy):
    _with_metadata(run_copy, energy_interval_s=600.0)
    report = analyze_run(run_copy)
    assert report["interval_s"] == 600 and report["interval_source"] == "metadata energy_interval_s"
    assert len(pd.read_csv(run_copy / "qkd" / "series.csv")) == 12      # 2 h in 10-minute steps
    meta = _with_metadata(run_copy, energy_interval_s=None)
    del meta["scenario"]["devices"]["energy_interval_s"]
    (run_copy / "metadata.json").write_text(json.dumps(meta))
    report = analyze_run(run_copy)
    assert report["interval_source"] == "run length / 12" and report["interval_s"] == 600
    assert len(pd.read_csv(run_copy / "dkg" / "series.csv")) == 12
    assert analyze_run(run_copy, interval_s=3600)["interval_source"] == "given"


def test_faults_are_named_in_the_intervals_they_overlap(run_copy):
    _with_metadata(run_copy, faults=[
        {"kind": "fibre_cut", "target": "bob", "at_s": 3000.0, "duration_s": 1200.0,
         "injected_wall": 1.0, "recovered_wall": 2.0},
        {"kind": "broker_restart", "at_s": 6000.0, "duration_s": 30.0, "mode": "dkg"}])
    report = analyze_run(run_copy, interval_s=1800)
    assert report["modes"]["qkd"]["faults"] == 1 and report["modes"]["dkg"]["faults"] == 2
    qkd = pd.read_csv(run_copy / "qkd" / "series.csv", keep_default_na=False)
    # [1800, 3600) and [3600, 5400) overlap the cut [3000, 4200)
    assert qkd.faults.tolist() == ["", "fibre_cut@bob", "fibre_cut@bob", ""]
    dkg = pd.read_csv(run_copy / "dkg" / "series.csv", keep_default_na=False)
    assert dkg.faults.tolist() == ["", "fibre_cut@bob", "fibre_cut@bob", "broker_restart"]


@pytest.mark.parametrize("fault", [{"kind": "fibre_cut", "at_s": "soon", "duration_s": 1.0},
                                   {"kind": "fibre_cut", "at_s": 1.0, "duration_s": -5},
                                   "fibre_cut@600"])
def test_malformed_faults_are_refused(run_copy, fault):
    _with_metadata(run_copy, faults=[fault])
    with pytest.raises(RunDirError, match=r"faults\[0\]"):
        analyze_run(run_copy)


def test_bad_run_directories(tmp_path):
    with pytest.raises(RunDirError, match="not a directory"):
        open_run(tmp_path / "missing")
    with pytest.raises(RunDirError, match="metadata.json"):
        open_run(tmp_path)
    (tmp_path / "metadata.json").write_text("{broken")
    with pytest.raises(RunDirError, match="cannot parse"):
        open_run(tmp_path)
    (tmp_path / "metadata.json").write_text('{"modes": ["qkd"]}')
    (tmp_path / "qkd").mkdir()
    (tmp_path / "qkd" / "messages.csv").write_text("device,seq\n")
    with pytest.raises(RunDirError, match="missing column"):
        open_run(tmp_path).messages("qkd")
