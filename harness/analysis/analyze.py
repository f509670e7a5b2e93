"""Derive the stored results of one run: wire.csv, capture.json and series.csv per mode.

This is what ``qiot analyze`` (and ``qiot plot`` when the series is missing) runs. It only reads
files in the run directory and writes new files beside them; ``analysis.json`` at the top records
the analysis schema version and settings so plots and comparisons can tell what they are reading.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION, RunDir, open_run
from harness.analysis.series import DEFAULT_INTERVAL_S, build_series, write_table
from harness.analysis.wire import wire_for_mode

#: Capture file names inside ``<mode>/pcap/`` (run-directory contract).
BROKER_PCAP = "dc.pcap"
DEVICE_PCAP = "gw-wlan.pcap"


def run_duration_s(run: RunDir) -> float | None:
    """Emulated length of each mode from the scenario (``[run] hours``), None if not recorded."""
    hours = run.scenario.get("run", {}).get("hours")
    return float(hours) * 3600.0 if isinstance(hours, (int, float)) and hours > 0 else None


def analyze_run(path: str | Path, interval_s: float = DEFAULT_INTERVAL_S,
                broker_port: int | None = None) -> dict:
    """Analyse every mode of the run at ``path``; write the derived files and return analysis.json's content."""
    run = open_run(path)
    port = broker_port or int(run.metadata.get("mqtt_port", 1883))
    report: dict = {"schema_version": ANALYSIS_SCHEMA_VERSION, "interval_s": interval_s,
                    "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "run_status": run.metadata.get("status"), "modes": {}}
    for mode in run.modes:
        folder = run.mode_dir(mode)
        messages = run.messages(mode)
        wire, check = wire_for_mode(messages, run.pcap(mode, BROKER_PCAP), run.pcap(mode, DEVICE_PCAP), port)
        files = write_table(wire, folder / "wire.csv")
        (folder / "capture.json").write_text(json.dumps(_finite(check), indent=2) + "\n", encoding="utf-8")
        energy_path = folder / "energy.csv"
        energy = run.energy(mode) if energy_path.is_file() else None
        series = build_series(messages, energy, run.keys(mode), wire, interval_s, run_duration_s(run))
        files += write_table(series, folder / "series.csv")
        report["modes"][mode] = {"files": files + ["capture.json"],
                                 "capture_drops": check.get("capture_drops"),
                                 "wire_only": check.get("wire_only"),
                                 "device_missing": check.get("device_missing")}
    (run.path / "analysis.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _finite(value):
    """JSON has no NaN: turn non-finite floats into null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
