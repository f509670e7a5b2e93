"""Derive the stored results of one run: wire.csv, capture.json and series.csv per mode.

This is what ``qiot analyze`` (and ``qiot plot`` when the series is missing or older) runs. It only
reads files in the run directory and writes new files beside them; ``analysis.json`` at the top
records the analysis schema version, the settings, and what the integrity checks flagged, so plots
and comparisons can tell what they are reading.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION, RunDir, RunDirError, open_run, read_metadata
from harness.analysis.series import DEFAULT_INTERVAL_S, build_series, write_table
from harness.analysis.wire import wire_for_mode

#: Capture file names inside ``<mode>/pcap/`` (run-directory contract).
BROKER_PCAP = "dc.pcap"
DEVICE_PCAP = "gw-wlan.pcap"
#: Without a recorded energy interval, a run is cut into this many series intervals (Fig. 2a-c
#: then show a curve, not a dot, however short the run).
FALLBACK_POINTS = 12


def series_interval(run: RunDir) -> tuple[float, str]:
    """The series interval of a run and where it came from: the run's energy interval (metadata
    ``energy_interval_s``), else the scenario's ``[devices] energy_interval_s``, else the run length
    / :data:`FALLBACK_POINTS`, else :data:`DEFAULT_INTERVAL_S`."""
    recorded = run.metadata.get("energy_interval_s")
    if _positive(recorded):
        return float(recorded), "metadata energy_interval_s"
    scenario = run.scenario.get("devices", {}).get("energy_interval_s")
    if _positive(scenario):
        return float(scenario), "scenario [devices] energy_interval_s"
    if run.duration_s:
        return run.duration_s / FALLBACK_POINTS, f"run length / {FALLBACK_POINTS}"
    return DEFAULT_INTERVAL_S, "default"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def analyze_run(path: str | Path, interval_s: float | None = None, broker_port: int | None = None) -> dict:
    """Analyse every mode of the run at ``path``; write the derived files and return analysis.json's content.

    ``interval_s``: series interval in emulated seconds (None: :func:`series_interval`).
    Raises :class:`~harness.analysis.rundir.RunDirError` on a damaged run (see rundir).
    """
    run = open_run(path)
    if interval_s is None:
        interval_s, source = series_interval(run)
    else:
        source = "given"
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    port = broker_port or int(run.metadata.get("mqtt_port", 1883))
    report: dict = {"schema_version": ANALYSIS_SCHEMA_VERSION, "interval_s": interval_s,
                    "interval_source": source,
                    "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "run_status": run.status, "run_schema_version": run.schema_version,
                    "emulation": run.emulation, "modes": {}}
    for mode in run.modes:
        folder = run.mode_dir(mode)
        messages = run.messages(mode)
        wire, check = wire_for_mode(messages, run.pcap(mode, BROKER_PCAP), run.pcap(mode, DEVICE_PCAP), port)
        files = write_table(wire, folder / "wire.csv")
        (folder / "capture.json").write_text(json.dumps(_finite(check), indent=2) + "\n", encoding="utf-8")
        faults = run.faults(mode)
        series = build_series(messages, run.energy(mode), run.keys(mode), wire, interval_s, run.duration_s,
                              faults)
        files += write_table(series, folder / "series.csv")
        report["modes"][mode] = {"files": files + ["capture.json"],
                                 "capture_drops": check.get("capture_drops"),
                                 "wire_only": check.get("wire_only"),
                                 "device_missing": check.get("device_missing"),
                                 "faults": len(faults)}
        served = served_table(run, mode)
        if served is not None:
            report["modes"][mode]["files"] += write_table(served, folder / "keys_served.csv")
            report["modes"][mode]["keys_served"] = _finite(served.to_dict(orient="records"))
    report["warnings"] = list(run.warnings)
    (run.path / "analysis.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def served_table(run: RunDir, mode: str):
    """Keys served per refresh period (:mod:`harness.analysis.served`) for the QKD mode of a run
    with a relay log, else None."""
    from harness.analysis.capacity import capacity_row
    from harness.analysis.served import keys_served
    from harness.qkd.rate import secret_key_rate

    fetches = run.relay_fetches() if mode == "qkd" else None
    offset = run.key_clock_offset_s(mode)
    qkd, loss = run.scenario.get("qkd", {}), run.scenario.get("fibre", {}).get("loss_db")
    if fetches is None or offset is None or not run.duration_s or "calibration" not in qkd or loss is None:
        return None
    row = capacity_row(float(secret_key_rate(float(loss), qkd["calibration"])), int(qkd["key_bits"]),
                       int(qkd["buffer_bits"]), float(qkd["refresh_period_s"]))
    return keys_served(fetches, offset, run.duration_s, row["refresh_period_s"], row["key_rate_bps"],
                       int(qkd["key_bits"]), row["buffer_keys"], run.devices or 0,
                       bool(run.scenario.get("kme", {}).get("steady_state_start")))


def rederive_run(path: str | Path) -> list[str]:
    """Rebuild every mode's messages.csv and summary.csv from its raw sent.csv and received.csv
    (what ``qiot run`` does at the end of a mode); return the modes rebuilt.

    The repair for a damaged or deleted derived file; the raw files are not touched.
    """
    from harness.results import finalize_mode

    root = Path(path)
    run = RunDir(root, read_metadata(root))  # not open_run: that refuses the damage being repaired
    listed = run.metadata.get("modes")
    names = [str(m) for m in listed] if isinstance(listed, list) else sorted(p.name for p in root.iterdir())
    rebuilt = []
    for mode in names:
        if (root / mode / "sent.csv").is_file():
            finalize_mode(root / mode, mode, run.devices or 0)
            rebuilt.append(mode)
    if not rebuilt:
        raise RunDirError(f"{root}: no <mode>/sent.csv to derive messages.csv from")
    return rebuilt


def _finite(value):
    """JSON has no NaN: turn non-finite floats into null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
