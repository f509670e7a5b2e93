"""Real-network tier: ``qiot run`` end to end, interruption, and ``qiot clean`` after a killed run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from harness import results
from harness.analysis.docscheck import undocumented
from harness.analysis.report import write_report
from harness.scenario import load as load_scenario
from harness.sweep import evaluate
from harness.state import INTERFACE_ALIAS_PREFIX, STATE_DIR
from harness.stations import NETNS_PREFIX, run_tag

QIOT = [sys.executable, "-m", "harness.cli"]


def qiot_run(out_dir, *extra, **popen_kwargs):
    return subprocess.Popen(QIOT + ["run", "--scenario", "bcn", "--devices", "3", "--out", str(out_dir),
                                    "--quiet"] + list(extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen_kwargs)


def only_run_dir(out_dir: Path) -> Path:
    (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
    return run_dir


def wait_for(path: Path, timeout_s: float) -> None:
    """Wait until a CSV has its header and at least one row."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_bytes().count(b"\n") >= 2):
        assert time.monotonic() < deadline, f"{path} not written within {timeout_s} s"
        time.sleep(0.2)


def test_run_both_modes_end_to_end(network_ok, tmp_path):
    # 0.1 h at time scale 30 = 12 s of wall time per mode; the bcn wireless delay is 5 ms one way.
    proc = qiot_run(tmp_path, "--hours", "0.1", "--time-scale", "30", "--mode", "both")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    run_dir = only_run_dir(tmp_path)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["status"] == "completed" and metadata["schema_version"] == results.SCHEMA_VERSION
    assert metadata["scenario"]["fibre"]["loss_db"] == 7.0
    assert metadata["mechanisms"]["shaping"]["mechanism"] in ("netem", "nfqueue")
    assert metadata["analysis"] == "analysis.json"
    for mode in ("qkd", "dkg"):
        messages = pd.read_csv(run_dir / mode / "messages.csv")
        summary = pd.read_csv(run_dir / mode / "summary.csv").iloc[0]
        received_rows = pd.read_csv(run_dir / mode / "received.csv")
        assert len(messages) >= 15, f"{mode}: 3 devices waking every 60 s for 360 emulated s"
        assert set(messages["device"]) == {"d1", "d2", "d3"}
        assert summary["sent"] == len(messages)
        received = messages[messages["received"] == 1]
        assert len(received) >= len(messages) - 1  # 1 % loss per direction is mostly hidden by TCP
        # Every reading that arrived was decrypted with the key its device used.
        assert (received_rows["decrypted"] == "ok").all(), received_rows["decrypted"].value_counts()
        assert summary["decrypt_failures"] == 0
        # One-way latency: 5 ms wireless delay +/- 1 ms jitter plus switching and MQTT handling
        # (the median: a TCP retransmission after a loss adds ~200 ms to single messages).
        assert 4.0 <= received["latency_ms"].median() <= 15.0, received["latency_ms"].describe()
        energy = pd.read_csv(run_dir / mode / "energy.csv")
        state_sum = energy[["t_deep_sleep_s", "t_cpu_s", "t_radio_tx_s", "t_radio_listen_s"]].sum(axis=1)
        assert (abs(state_sum - (energy["t_end_s"] - energy["t_start_s"])) < 1e-6).all()
        assert energy.groupby("device")["t_end_s"].max().round(3).eq(360.0).all()
        assert 0 < summary["rdc_mean"] < 0.2
        assert (run_dir / mode / "pcap" / "dc.pcap").stat().st_size > 0
        assert metadata["mode_results"][mode]["status"] == "completed"
    qkd_keys = pd.read_csv(run_dir / "qkd" / "sent.csv")["key_id"]
    assert qkd_keys.str.fullmatch(r"[0-9a-f-]{36}").all()  # ETSI 014 UUID key ids from the KME
    assert (run_dir / "qkd" / "pcap" / "keys.pcap").stat().st_size > 24  # Clavis datagrams were captured
    # The run drew its figures; the report renders from the stored files; docs/results.md describes
    # every file, column and key the run wrote.
    assert all((run_dir / "figures" / f"fig2{name}.png").stat().st_size > 1000
               for name in ("a_rdc", "b_battery", "c_latency_loss", "d_capacity", "e_key_response"))
    report = write_report(run_dir)
    html = report.read_bytes()
    assert len(html) > 10_000 and html.count(b"data:image/png;base64,") >= 5  # the figures, embedded
    assert undocumented(run_dir) == []
    # The pure simulation of the same settings (the same device loop, on the network the energy model
    # assumes) gives the emulation's QKD-vs-DKG RDC difference: within the run's 95 % interval of the
    # difference, widened by the radio-on time the emulated network really took beyond the assumed
    # one (each mode's measured exchange excess, metadata emulation health).
    compared = subprocess.run(QIOT + ["compare", str(run_dir), "--format", "json"], capture_output=True,
                              text=True, check=True)
    rdc = {row["mode"]: row for row in json.loads(compared.stdout)["rows"] if row["metric"] == "rdc"}
    simulated = evaluate(load_scenario("bcn"), {}, hours=0.1, devices=3)
    health = {mode: metadata["mode_results"][mode]["health"]["figures"] for mode in ("qkd", "dkg")}
    network_extra = sum(rdc[mode]["mean"] * health[mode]["exchange_excess_share_pct"] / 100.0
                        for mode in ("qkd", "dkg"))
    simulated_diff = simulated.rdc_qkd_pct - simulated.rdc_dkg_pct
    assert simulated_diff < 0 and rdc["qkd"]["diff"] < 0
    assert (rdc["qkd"]["diff_ci95_low"] - network_extra <= simulated_diff
            <= rdc["qkd"]["diff_ci95_high"] + network_extra), (simulated, rdc["qkd"], network_extra)


def test_an_overloaded_emulation_is_marked_degraded_not_silently_completed(network_ok, tmp_path):
    # 30 devices waking every 60 s at 600x ask for 300 wakes per wall second, and give each device
    # 0.1 wall s per wake, less than a wake takes whenever TCP retransmits (>= 200 ms). The fleet runs
    # as two shards of 15 devices; the wakes start seconds late, so the run must say it fell behind.
    proc = qiot_run(tmp_path, "--hours", "0.2", "--time-scale", "600", "--mode", "qkd", "--devices", "30")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    run_dir = only_run_dir(tmp_path)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["status"] == "completed"
    verdict = metadata["emulation_health"]
    assert verdict["status"] == "degraded", verdict
    # The fleet never catches up: the lag grows to the end, so no minute settles.
    figures = verdict["modes"]["qkd"]["figures"]
    assert figures["wake_lag_steady_p95_s"] > verdict["modes"]["qkd"]["thresholds"]["wake_lag_p95_s"]
    assert figures["startup_share"] == 1.0
    assert any(r.startswith("qkd: wake_lag_steady_p95_s") for r in verdict["reasons"])
    # Both shards hosted their devices to the end, and every wake's reading is in the one sent.csv.
    fleet = json.loads((run_dir / "qkd" / "fleet.json").read_text())
    assert fleet["shards"] == 2 and fleet["complete"], fleet["by_shard"]
    assert [s["devices"] for s in fleet["by_shard"]] == [15, 15]
    assert all(s["exit_code"] == 0 for s in fleet["by_shard"])
    sent = pd.read_csv(run_dir / "qkd" / "sent.csv")
    assert len(sent) == fleet["lag"]["wakes"] and sent["device"].nunique() == 30
    compared = subprocess.run(QIOT + ["compare", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert "DEGRADED" in compared.stdout, compared.stdout


def test_interrupted_run_keeps_partial_results_marked(network_ok, tmp_path):
    proc = qiot_run(tmp_path, "--hours", "1", "--time-scale", "20", "--mode", "qkd")
    try:
        wait_for_run_dir = time.monotonic() + 60
        while not list(tmp_path.glob("*/qkd/sent.csv")):
            assert time.monotonic() < wait_for_run_dir, "run never started its devices"
            time.sleep(0.2)
        wait_for(next(tmp_path.glob("*/qkd/sent.csv")), 60)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    run_dir = only_run_dir(tmp_path)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["status"] == "interrupted"
    assert metadata["mode_results"]["qkd"]["status"] == "interrupted"
    messages = pd.read_csv(run_dir / "qkd" / "messages.csv")
    assert len(messages) >= 1 and messages["received"].sum() >= 1


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def qiot_leftovers(run_id: str) -> dict:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {"interfaces": [line for line in links.splitlines() if INTERFACE_ALIAS_PREFIX in line or "qdc1-" in line],
            "bridges": [b for b in bridges if b in ("qdc1", "qox2", "qed3", "qap4")],
            "namespaces": [n for n in namespaces.split() if n.startswith(f"{NETNS_PREFIX}{run_tag(run_id)}-")],
            "state": (STATE_DIR / f"{run_id}.jsonl").exists()}


def test_clean_after_a_killed_run_leaves_nothing(network_ok, tmp_path):
    # SIGKILL: the run gets no chance to tear down, exactly the case qiot clean exists for.
    proc = qiot_run(tmp_path, "--hours", "1", "--time-scale", "20", "--mode", "qkd", start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("*/qkd/sent.csv")):
            assert time.monotonic() < deadline, "run never started its devices"
            time.sleep(0.2)
        run_id = only_run_dir(tmp_path).name
        records = (STATE_DIR / f"{run_id}.jsonl").read_text().splitlines()
        pids = [json.loads(r)["pid"] for r in records if json.loads(r)["kind"] in ("process", "netns")]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert qiot_leftovers(run_id)["bridges"], "the killed run should have left its switches behind"

    first = subprocess.run(QIOT + ["clean"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "removed" in first.stdout
    assert qiot_leftovers(run_id) == {"interfaces": [], "bridges": [], "namespaces": [], "state": False}
    time.sleep(0.5)
    alive = [pid for pid in pids if running(pid)]
    assert not alive, f"recorded processes still alive: {alive}"
    again = subprocess.run(QIOT + ["clean"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_eavesdropper_stops_key_delivery_and_the_run_shows_it(network_ok, tmp_path):
    """Full intercept-resend: QBER near 25 %, every block aborted, no key reaches a device."""
    scenario = tmp_path / "eve.toml"
    scenario.write_text((Path(__file__).parents[2] / "experiments" / "bcn.toml").read_text()
                        .replace('name = "bcn"', 'name = "eve"')
                        .replace("[qkd]\n", "[qkd]\neve_intercept_fraction = 1.0\n"))
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(QIOT + ["run", "--scenario", str(scenario), "--devices", "2", "--hours", "0.05",
                                    "--time-scale", "30", "--mode", "qkd", "--out", str(out_dir), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    run_dir = only_run_dir(out_dir)
    blocks = pd.read_csv(run_dir / "qkd-link" / "bob" / "blocks.csv")
    assert len(blocks) >= 3 and blocks["aborted"].notna().all()
    assert 0.22 <= blocks["qber_est"].mean() <= 0.28  # sampled QBER of the aborted blocks
    assert blocks["keys_added"].sum() == 0
    sent = pd.read_csv(run_dir / "qkd" / "sent.csv")
    assert len(sent) >= 2 and sent["error"].str.contains("503").all()
    summary = pd.read_csv(run_dir / "qkd" / "summary.csv").iloc[0]
    assert summary["received"] == 0 and summary["loss_pct"] == 100.0
