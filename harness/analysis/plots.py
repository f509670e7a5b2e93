"""The paper's Fig. 2a-e, drawn only from files stored in a run directory (PNG and PDF).

2a RDC over time, 2b battery lifetime over time, 2c latency and packet loss over time (each mode
one line, 95% CI band) from ``<mode>/series.csv``; 2d capacity versus optical loss from the run's
own scenario calibration; 2e the Clavis2 KeyResponse datagram decoded from a stored capture.
matplotlib runs with the Agg backend: no display needed.

Every figure carries its provenance at the bottom (scenario, devices, emulated hours, qiot commit,
run, status); a run whose emulation was measured as degraded says so in red on every figure, and
faults injected during the run (metadata ``faults``) are shaded on Fig. 2a-c.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import pandas as pd  # noqa: E402

from harness.analysis.analyze import analyze_run  # noqa: E402
from harness.analysis.capacity import PAPER_POINTS, capacity_table, paper_points_table  # noqa: E402
from harness.analysis.keyresponse import FIELDS, ERROR_TEXT, read_key_responses  # noqa: E402
from harness.analysis.rundir import RunDir, RunDirError, open_run, read_json_object  # noqa: E402
from harness.analysis.served import measures_capacity  # noqa: E402

FORMATS = ("png", "pdf")
_COLOURS = {"qkd": "tab:blue", "dkg": "tab:red"}
#: A colour per fault kind (in the order of harness.faults.FaultKind), none of them a mode's.
_FAULT_PALETTE = ("tab:orange", "tab:purple", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                  "tab:gray")


def _fault_colour(kind: str) -> str:
    from harness.faults import FaultKind

    kinds = [k.value for k in FaultKind]
    return _FAULT_PALETTE[kinds.index(kind) % len(_FAULT_PALETTE)] if kind in kinds else _FAULT_PALETTE[-1]


def provenance(run: RunDir) -> str:
    """One line saying where a figure's numbers come from."""
    hours = run.duration_s / 3600 if run.duration_s else None
    parts = [f"scenario {run.scenario_name}",
             f"{run.devices} devices" if run.devices is not None else "devices ?",
             f"{hours:g} h emulated per mode" if hours is not None else "length ?",
             f"qiot {run.commit}", f"run {run.metadata.get('run_id') or run.path.name}", f"status {run.status}",
             f"emulation {run.emulation}"]
    return " · ".join(parts)


def _stamp(fig, run: RunDir | None, measured: bool = True) -> None:
    """Provenance at the bottom of ``fig``; on figures of measured data, a loud red mark when the
    run's emulation was degraded (``measured`` False: a model figure, e.g. Fig. 2d)."""
    if run is None:
        return
    text = provenance(run) if measured else f"model: scenario {run.scenario_name} calibration · qiot {run.commit}"
    fig.text(0.01, -0.02, text, fontsize=6.5, color="dimgray", va="top", ha="left")
    if measured and run.degraded:
        fig.text(0.5, 1.06, "DEGRADED EMULATION: the emulator fell behind, figures are suspect",
                 fontsize=9, color="red", weight="bold", ha="center", va="bottom")


def _save(fig, stem: Path, formats=FORMATS) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def load_series(run: RunDir) -> dict[str, pd.DataFrame]:
    """``series.csv`` of every mode; raise :class:`RunDirError` if one is missing."""
    out = {}
    for mode in run.modes:
        path = run.mode_dir(mode) / "series.csv"
        if not path.is_file():
            raise RunDirError(f"{path}: missing (run `qiot analyze {run.path}` first)")
        out[mode] = pd.read_csv(path)
    return out


def _hours(series: pd.DataFrame) -> pd.Series:
    return (series["t_start_s"] + series["t_end_s"]) / 2 / 3600.0


def _fault_spans(ax, faults: dict[str, list[dict]]) -> None:
    """Shade each fault's [at_s, at_s + duration_s) (emulated time from the mode's start)."""
    spans = {}
    for mode, listed in faults.items():
        for fault in listed:
            key = (fault["kind"], fault.get("target"), fault["at_s"], fault["duration_s"])
            spans.setdefault(key, []).append(mode)
    labelled = set()
    for (kind, target, start, length), modes in spans.items():
        name = f"fault: {kind}" + (f"@{target}" if target not in (None, "") else "")
        if len(modes) < len(faults):
            name += f" ({', '.join(m.upper() for m in modes)})"
        ax.axvspan(start / 3600, (start + length) / 3600, color=_fault_colour(kind), alpha=0.15, lw=0,
                   label=None if name in labelled else name)
        labelled.add(name)


def _band_plot(ax, series: dict[str, pd.DataFrame], column: str, ci_column: str | None, scale: float = 1.0,
               faults: dict[str, list[dict]] | None = None):
    _fault_spans(ax, faults or {})
    for mode, frame in series.items():
        x, y = _hours(frame), frame[column] * scale
        ax.plot(x, y, marker="o", ms=3, label=mode.upper(), color=_COLOURS.get(mode))
        if ci_column:
            half = frame[ci_column] * scale
            # every quantity of Fig. 2a-c is >= 0: the band is drawn only where values are possible
            ax.fill_between(x, (y - half).clip(lower=0.0), y + half, alpha=0.2, color=_COLOURS.get(mode))
    ax.set_xlabel("time [emulated h]")
    ax.grid(alpha=0.3)
    ax.legend()


def fig2a_rdc(series: dict[str, pd.DataFrame], stem: Path, run: RunDir | None = None,
              faults: dict[str, list[dict]] | None = None, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Fig. 2a: mean radio duty cycle per interval (%), 95% CI band across devices.

    ``run`` (for the provenance line and the degraded mark) and ``faults`` (per mode, shaded) are optional;
    ``formats`` are the files written (every figure function takes it).
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _band_plot(ax, series, "rdc_mean", "rdc_ci95", 100.0, faults)
    ax.set_ylabel("RDC [%]")
    ax.set_title("Fig. 2a: radio duty cycle (band: 95% CI across devices)")
    _stamp(fig, run)
    return _save(fig, stem, formats)


def fig2b_battery(series: dict[str, pd.DataFrame], stem: Path, run: RunDir | None = None,
                  faults: dict[str, list[dict]] | None = None, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Fig. 2b: projected battery lifetime per interval (days), 95% CI band across devices."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _band_plot(ax, series, "battery_life_days_mean", "battery_life_days_ci95", faults=faults)
    ax.set_ylabel("battery lifetime [days]")
    ax.set_title("Fig. 2b: battery lifetime (band: 95% CI across devices)")
    _stamp(fig, run)
    return _save(fig, stem, formats)


def fig2c_latency_loss(series: dict[str, pd.DataFrame], stem: Path, run: RunDir | None = None,
                       faults: dict[str, list[dict]] | None = None, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Fig. 2c: mean latency (left, CI band) and packet loss (right, dashed; never below 0) per interval."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _band_plot(ax, series, "latency_mean_ms", "latency_ci95_ms", faults=faults)
    ax.set_ylabel("latency [ms]")
    loss_ax = ax.twinx()
    for mode, frame in series.items():
        loss_ax.plot(_hours(frame), frame["loss_pct"], ls="--", marker="x", ms=3,
                     color=_COLOURS.get(mode), label=f"{mode.upper()} loss")
    loss_ax.set_ylabel("packet loss [%] (dashed)")
    loss_ax.set_ylim(bottom=0.0)  # a proportion: an axis below 0 would draw impossible values
    if loss_ax.get_ylim()[1] <= 0:
        loss_ax.set_ylim(0.0, 1.0)
    ax.set_title("Fig. 2c: latency (band: 95% CI) and packet loss")
    _stamp(fig, run)
    return _save(fig, stem, formats)


def fig2d_capacity(table: pd.DataFrame, points: pd.DataFrame, stem: Path, title: str = "",
                   run: RunDir | None = None, formats: tuple[str, ...] = FORMATS,
                   emulated: pd.DataFrame | None = None, loss_db: float | None = None) -> list[Path]:
    """Fig. 2d: keys per refresh period (left) and key-buffer fill time (right) vs optical loss;
    with ``emulated`` (:func:`harness.analysis.served.keys_served` of the run, at ``loss_db``), the
    keys the run's relay handed out in each complete period that only distillation could serve."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["loss_db"], table["keys_per_refresh"], color="tab:blue", label="keys per refresh")
    ax.set_xlabel("optical loss of the quantum channel [dB]")
    period_min = table["refresh_period_s"].iloc[0] / 60
    ax.set_ylabel(f"256-bit keys per {period_min:g} min", color="tab:blue")
    fill_ax = ax.twinx()
    fill_ax.plot(table["loss_db"], table["buffer_fill_s"] / 60, color="tab:green", ls="--",
                 label="buffer fill time")
    fill_ax.set_ylabel(f"time to fill buffer ({table['buffer_keys'].iloc[0]} keys) [min]", color="tab:green")
    for row in points.itertuples(index=False):
        ax.plot(row.loss_db, row.paper_keys_per_refresh, "o", color="black")
        fill_ax.plot(row.loss_db, row.paper_buffer_fill_s / 60, "s", color="black")
        ax.annotate(f"{row.point}\n{row.paper_keys_per_refresh:,.0f} keys, {row.paper_buffer_fill_s:.0f} s",
                    (row.loss_db, row.paper_keys_per_refresh), textcoords="offset points",
                    xytext=(6, 6), fontsize=7)
    shown = emulated_points(emulated) if emulated is not None and loss_db is not None else None
    if shown is not None and len(shown):
        ax.plot([loss_db] * len(shown), shown["renewed"], "D", color="tab:red", fillstyle="none",
                label="emulated (this run)")
        for row in shown.itertuples(index=False):
            refused = f"{row.devices_refused:,} devices refused" if row.devices_refused else "every device due served"
            ax.annotate(f"run, period {row.period}: {row.renewed:,} renewed, {refused}",
                        (loss_db, row.renewed), textcoords="offset points", xytext=(6, -12), fontsize=7,
                        color="tab:red")
    ax.grid(alpha=0.3)
    measured = shown is not None and len(shown) > 0
    ax.set_title((title or "Fig. 2d: QKD capacity (markers: paper)") + (" · diamonds: this run" if measured else ""))
    _stamp(fig, run, measured=measured)
    return _save(fig, stem, formats)


def emulated_points(served: pd.DataFrame) -> pd.DataFrame:
    """The periods of a keys-served table comparable with the curve: complete, and served by
    distillation alone (not period 1 of a run that began with a full buffer, whose expectation
    includes the buffer)."""
    return served[served["complete"].astype(bool) & (served["period"] > 1)]


def fig2e_datagram(raw: bytes, info: dict, stem: Path, run: RunDir | None = None,
                   formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Fig. 2e: the KeyResponse datagram as a Wireshark-like field table and hex dump."""
    lines = [f"UDP {info['src']}:{info['sport']} -> {info['dst']}:{info['dport']}, "
             f"{len(raw)} bytes (Clavis2 KeyResponse)", ""]
    for name, offset, size in FIELDS:
        chunk = raw[offset:offset + size]
        value = _field_value(name, chunk)
        hex_text = chunk.hex(" ") if size <= 10 else chunk[:16].hex(" ") + "\n" + " " * 26 + chunk[16:].hex(" ")
        lines.append(f"{offset:3d} {name:<13} {size:2d}  {hex_text}   {value}")
    lines.append("")
    for start in range(0, len(raw), 16):
        lines.append(f"{start:04x}  {raw[start:start + 16].hex(' ')}")
    fig = plt.figure(figsize=(9, 0.2 * len(lines) + 0.8))
    fig.text(0.01, 0.98, "\n".join(lines), family="monospace", fontsize=7, va="top")
    fig.suptitle("Fig. 2e: UDP key response carrying a 32-byte key", y=1.02)
    _stamp(fig, run)
    return _save(fig, stem, formats)


def _field_value(name: str, chunk: bytes) -> str:
    number = int.from_bytes(chunk, "little") if len(chunk) <= 8 else None
    if name == "errorStatus":
        return f"= {number} ({ERROR_TEXT.get(number, '?')})"
    if name == "type":
        return f"= {number} ({'response' if number == 1 else 'request'})"
    if number is not None and name != "reserved":
        return f"= {number}"
    return ""


def find_key_response(run: RunDir) -> tuple[bytes, dict] | None:
    """First KeyResponse in any stored capture of the run (qkd mode first), or None."""
    modes = sorted(run.modes, key=lambda m: m != "qkd")
    for mode in modes:
        folder = run.mode_dir(mode) / "pcap"
        for path in sorted(folder.glob("*.pcap*")) if folder.is_dir() else []:
            responses = read_key_responses(path)
            if len(responses):
                row = responses.iloc[0].to_dict()
                return bytes.fromhex(row["raw_hex"]), row
    return None


def plot_run(path: str | Path, out_dir: str | Path | None = None,
             formats: tuple[str, ...] = FORMATS) -> tuple[list[Path], list[str]]:
    """Draw every figure the run's stored files allow, as ``formats`` (default PNG and PDF); return
    (files written, notes on skipped ones).

    If the run has no analysis yet, or one of an older analysis version, the analysis
    (:func:`analyze_run`) runs first. What the integrity checks flagged is in ``analysis.json``
    (``warnings``) and in :func:`warnings_of`.
    """
    run = open_run(path)
    if run.needs_analysis():
        analyze_run(run.path)
    series = load_series(run)
    faults = {mode: run.faults(mode) for mode in run.modes}
    out = Path(out_dir) if out_dir else run.path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written = fig2a_rdc(series, out / "fig2a_rdc", run, faults, formats)
    written += fig2b_battery(series, out / "fig2b_battery", run, faults, formats)
    written += fig2c_latency_loss(series, out / "fig2c_latency_loss", run, faults, formats)
    skipped = []
    qkd = run.scenario.get("qkd")
    if isinstance(qkd, dict) and "calibration" in qkd:
        table = capacity_table(qkd)
        points = paper_points_table(qkd, points=PAPER_POINTS)
        served = run.keys_served() if measures_capacity(run.scenario) else None  # stored by the analysis
        written += fig2d_capacity(table, points, out / "fig2d_capacity",
                                  f"Fig. 2d: QKD capacity, {run.scenario_name} calibration", run, formats,
                                  served, run.scenario.get("fibre", {}).get("loss_db"))
    else:
        skipped.append("fig2d: metadata.json has no scenario [qkd] section")
    found = find_key_response(run)
    if found:
        written += fig2e_datagram(found[0], found[1], out / "fig2e_key_response", run, formats)
    else:
        skipped.append("fig2e: no Clavis KeyResponse (UDP source port 5323) in any <mode>/pcap/ capture")
    return written, skipped


def warnings_of(path: str | Path) -> list[str]:
    """What the last analysis of the run flagged (analysis.json ``warnings``; [] without one)."""
    report = Path(path) / "analysis.json"
    if not report.is_file():
        return []
    return [str(w) for w in read_json_object(report).get("warnings", [])]
