"""Deriving messages and summaries from raw sent/received records (hand-counted fixtures)."""

import math

import pandas as pd
import pytest

from harness import results


def sent_frame():
    return pd.DataFrame({"device": ["d1", "d1", "d2", "d2"], "seq": [0, 1, 0, 1],
                         "t_emul": [1.0, 61.0, 2.0, 62.0], "t_sent": [100.0, 160.0, 101.0, 161.0]})


def received_frame():
    # d1/1 is lost; d2/0 arrives twice (QoS 1 duplicate): the first arrival counts.
    return pd.DataFrame({"device": ["d1", "d2", "d2", "d2"], "seq": [0, 0, 0, 1],
                         "t_received": [100.010, 101.020, 101.500, 161.030],
                         "t_sent": [100.0, 101.0, 101.0, 161.0]})


def test_join_counts_loss_and_latency():
    messages = results.join_messages(sent_frame(), received_frame())
    assert len(messages) == 4
    assert messages["received"].tolist() == [1, 1, 0, 1]  # ordered by emulated time
    got = dict(zip(zip(messages.device, messages.seq), messages.latency_ms))
    assert got[("d1", 0)] == pytest.approx(10.0)
    assert got[("d2", 0)] == pytest.approx(20.0)
    assert got[("d2", 1)] == pytest.approx(30.0)
    assert math.isnan(got[("d1", 1)])


def test_a_reading_published_again_takes_the_latency_of_the_copy_that_arrived_first():
    """The device's acknowledgement timed out, so it published the reading again a wake later and
    sent.csv keeps that second publish time; the first copy had arrived at once."""
    sent = pd.DataFrame({"device": ["d1"], "seq": [0], "t_emul": [1.0], "t_sent": [160.0], "queued_s": [60.0]})
    received = pd.DataFrame({"device": ["d1", "d1"], "seq": [0, 0], "t_received": [100.012, 160.015],
                             "t_sent": [100.0, 160.0]})
    messages = results.join_messages(sent, received)
    assert messages["latency_ms"].tolist() == [pytest.approx(12.0)]  # not 100.012 - 160.0
    assert messages["t_sent"].tolist() == [160.0]  # the device's own record is kept as it is
    older = results.join_messages(sent, received.drop(columns="t_sent"))  # a platform without stamps
    assert older["latency_ms"].tolist() == [pytest.approx((100.012 - 160.0) * 1000.0)]


def test_summary_statistics():
    summary = results.summarize(results.join_messages(sent_frame(), received_frame()), "qkd", 2)
    assert (summary["sent"], summary["received"], summary["lost"]) == (4, 3, 1)
    assert summary["loss_pct"] == pytest.approx(25.0)
    assert summary["latency_mean_ms"] == pytest.approx(20.0)
    # t(0.975, 2) = 4.302653; sd of (10, 20, 30) = 10; half-width = 4.302653 * 10 / sqrt(3)
    assert summary["latency_ci95_ms"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    # loss is the pooled proportion of readings (1 of 4) with its Wilson interval, as in qiot compare
    assert (summary["loss_ci95_low_pct"], summary["loss_ci95_high_pct"]) == pytest.approx((4.5587, 69.9358), abs=1e-3)
    assert summary["loss_ci_method"] == "95% CI, Wilson score over 4 readings"
    assert summary["latency_ci_method"] == "95% CI, Student t over 3 messages"
    assert (summary["lost_network"], summary["not_published"], summary["delivered_late"]) == (1, 0, 0)


def test_nothing_received_and_nothing_sent():
    messages = results.join_messages(sent_frame(), pd.DataFrame())
    assert messages["received"].sum() == 0
    assert results.summarize(messages, "dkg", 2)["loss_pct"] == 100.0
    empty = results.summarize(results.join_messages(pd.DataFrame(), pd.DataFrame()), "dkg", 2)
    assert empty["sent"] == 0 and math.isnan(empty["latency_mean_ms"])


def test_finalize_tolerates_a_torn_last_line(tmp_path):
    (tmp_path / "sent.csv").write_text("device,seq,t_emul,t_start,t_sent,acked,key_id,error\n"
                                       "d1,0,1.0,99.9,100.0,1,k,\n"
                                       "d1,1,61.0,159.9,160.0,1,k,\n"
                                       "d1,2,12")  # the run died mid-write
    (tmp_path / "received.csv").write_text("device,seq,t_received,t_sent,key_id,bytes,decrypted\n"
                                           "d1,0,100.005,100.0,k,120,placeholder\n")
    summary = results.finalize_mode(tmp_path, "qkd", 1)
    assert (summary["sent"], summary["received"]) == (2, 1)
    assert summary["lost_network"] == 1 and summary["delivered_late"] == 0    # no queued_s column: 0
    assert pd.read_csv(tmp_path / "messages.csv")["latency_ms"].iloc[0] == pytest.approx(5.0)
    assert pd.read_csv(tmp_path / "summary.csv")["lost"].iloc[0] == 1


def test_key_series_moves_the_buffer_onto_the_mode_clock():
    buffer = pd.DataFrame({"t_emul": [100.0, 110.0, 120.0, 130.0], "keys_available": [40, 80, 75, 115]})
    sent = pd.DataFrame({"t_emul": [1.0, 5.0, 12.0, 25.0], "key_refreshed": [1, 1, 0, 1],
                         "error": [None, "key step: 503", None, None]})
    # The link's clock was 105 emulated seconds ahead when the mode started; the mode lasts 30 s.
    series = results.key_series(buffer, sent, 105.0, 30.0)
    assert series["t_emul"].tolist() == [5.0, 15.0, 25.0]
    assert series["keys_in_buffer"].tolist() == [80, 75, 115]
    # Successful refreshes at 1 and 25 (the one at 5 failed): 1 by t=5 and t=15, 2 by t=25.
    assert series["keys_delivered"].tolist() == [1, 1, 2]


def test_finalize_keeps_the_kinds_of_lost_and_late_readings_apart(tmp_path):
    (tmp_path / "sent.csv").write_text(
        "device,seq,t_emul,t_start,t_sent,acked,key_id,key_refreshed,error,queued_s\n"
        "d1,0,60.0,99.9,100.0,1,k,1,,0\n"
        "d1,1,120.0,159.9,,0,k,0,key step: 503,0\n"
        "d1,2,180.0,219.9,,0,k,0,queue overflow: 16 readings waiting,0\n"
        "d1,3,240.0,279.9,400.0,1,k,0,,150.5\n"
        "d1,4,300.0,339.9,340.0,0,k,0,publish timed out,0\n")
    (tmp_path / "received.csv").write_text("device,seq,t_received,t_sent,key_id,bytes,decrypted\n"
                                           "d1,0,100.010,100.0,k,120,ok\n"
                                           "d1,3,400.020,400.0,k,120,ok\n")
    (tmp_path / "energy.csv").write_text(
        "device,interval,t_start_s,t_end_s,rdc,energy_j,avg_current_ma,battery_life_days\n"
        "d1,0,0.0,3600.0,0.01,10.0,1.0,100.0\n")
    summary = results.finalize_mode(tmp_path, "qkd", 1, 3600.0)
    assert (summary["sent"], summary["received"], summary["lost"]) == (5, 2, 3)
    assert (summary["lost_network"], summary["not_published"], summary["dropped_queue_overflow"],
            summary["delivered_late"]) == (1, 1, 1, 1)
    # latency is publish to arrival: the late reading's 150.5 s in the queue is in queued_s, not here
    assert summary["latency_mean_ms"] == pytest.approx(15.0, abs=1e-6)
    assert summary["energy_devices"] == 1 and summary["device_hours"] == pytest.approx(1.0)
    messages = pd.read_csv(tmp_path / "messages.csv")
    assert list(messages.columns) == results.MESSAGE_COLUMNS
    assert messages["queued_s"].tolist() == [0.0, 0.0, 0.0, 150.5, 0.0]
    written = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    assert written["dropped_queue_overflow"] == 1 and written["rdc_mean"] == pytest.approx(0.01)


def test_base_metadata_records_the_schema_version():
    meta = results.base_metadata()
    assert meta["schema_version"] == results.SCHEMA_VERSION and "git_commit" in meta
