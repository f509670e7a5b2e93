"""``qiot sweep``: what-if sweeps of QKD against DKG energy on the pure simulation, and the value that
reaches a target change.

Each point runs both modes of a scenario with some settings changed, through the run's own device
loop (:func:`harness.devices.simulate.simulate`: the same agent, wake plan and cryptography, an
assumed network and a virtual clock), and reports the RDC and battery lifetime of each mode and the
change of QKD relative to DKG, in percent (the paper: -18 % RDC, > +18 % battery). Keys:

- ``SECTION.KEY``: a scenario setting (``devices.wake_period_s``, ``kme.wireless_transport``,
  ``qkd.refresh_period_s``, ``devices.energy_profile``, ...);
- ``profile.SECTION.KEY``: a value of the device profile the scenario names (``profile.dkg.ecc``,
  ``profile.ecc.micropython_affine.ecdh_p256_s``, ``profile.cpu.frequency_mhz``, ...);
- ``profile.dkg.ecc_s`` (derived): the seconds of DKG's ECC per key, key pair plus agreement at the
  profile's clock; setting it scales DKG's implementation alike (``[dkg] ecc_time_scale``), TLS untouched.

``solve`` finds where the change crosses a target: a log-spaced scan of the range, outward from the
current value, then Brent's method (``scipy.optimize.brentq``) inside the first bracket found, so the
answer is the crossing nearest the current value. Figures are means over the simulated devices
(:func:`harness.results.summarize_energy`, one sample per device, as a run's summary).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import click
import numpy as np

from harness.analysis.cli import _friendly  # one way to turn library errors into one-line CLI errors
from harness.scenario import DEFAULT_SCENARIO

#: The columns of a sweep row after the value column(s).
METRIC_COLUMNS = ("rdc_qkd_pct", "rdc_dkg_pct", "rdc_change_pct", "battery_qkd_days", "battery_dkg_days",
                  "battery_change_pct")
#: What ``solve`` can aim at: the two changes, QKD relative to DKG.
TARGETS = ("rdc_change_pct", "battery_change_pct")
PROFILE_PREFIX = "profile."
#: The derived key: seconds of DKG's ECC per key (key pair + agreement).
DKG_ECC_SECONDS = "profile.dkg.ecc_s"
#: At most this many ``--set`` keys (two make a grid).
MAX_KEYS = 2
#: Default range of ``solve``: the current value divided and multiplied by this.
SOLVE_SPAN = 20.0
#: Points of the scan that looks for a bracket before Brent's method refines it.
SCAN_POINTS = 9
#: Relative precision of a solved value (far finer than the simulation's own resolution needs).
SOLVE_RTOL = 1e-4
#: A solved value further than this from its target (percentage points) marks a step in the figures.
STEP_PP = 0.5


class SweepError(ValueError):
    """A bad key, value or option of a sweep; the message is one line."""


class Unsupported(SweepError):
    """A point the device cannot do (e.g. resume TLS on a profile without resumption)."""


@dataclass(frozen=True)
class Evaluation:
    """The simulation's figures at one point: each mode's RDC (%) and battery (days), and the changes."""

    rdc_qkd_pct: float
    rdc_dkg_pct: float
    rdc_change_pct: float
    battery_qkd_days: float
    battery_dkg_days: float
    battery_change_pct: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (``60`` -> 60, ``true`` -> True), else the string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(option: str) -> tuple[str, tuple]:
    """``SECTION.KEY=V1,V2,...`` -> (key, values)."""
    key, sep, values = option.partition("=")
    key = key.strip()
    if not sep or "." not in key or not values.strip():
        raise SweepError(f"--set {option!r}: expected SECTION.KEY=V1,V2,...")
    parsed = tuple(parse_value(v) for v in values.split(",") if v.strip())
    if not parsed:
        raise SweepError(f"--set {option!r}: no values")
    return key, parsed


def configure(scenario, changes: Mapping[str, Any], devices: int = 1):
    """The (settings, profile) of ``scenario`` with ``devices`` devices and ``changes`` applied."""
    from harness.energy.profile import DeviceProfile
    from harness.energy.wakecycle import check_plan

    scenario_changes = {"devices.count": devices}
    scenario_changes.update({k: v for k, v in changes.items() if not k.startswith(PROFILE_PREFIX)})
    profile_changes = {k[len(PROFILE_PREFIX):]: v for k, v in changes.items()
                       if k.startswith(PROFILE_PREFIX) and k != DKG_ECC_SECONDS}
    try:
        settings = scenario.with_overrides(scenario_changes).settings
        profile = DeviceProfile.load(settings.devices.energy_profile).with_values(profile_changes)
        if DKG_ECC_SECONDS in changes:
            profile = profile.with_dkg_key_seconds(_number(DKG_ECC_SECONDS, changes[DKG_ECC_SECONDS]),
                                                   settings.devices.dkg_curve)
    except ValueError as exc:
        raise SweepError(str(exc).splitlines()[0]) from None
    try:
        check_plan(profile, settings.kme.wireless_transport, settings.devices)
    except ValueError as exc:
        raise Unsupported(str(exc).splitlines()[0]) from None
    return settings, profile


def evaluate(scenario, changes: Mapping[str, Any], hours: float, devices: int = 1) -> Evaluation:
    """Simulate both modes with ``changes`` for ``hours`` and compare QKD with DKG."""
    from harness.analysis.stats import relative_difference
    from harness.devices.simulate import simulate
    from harness.enums import MODES
    from harness.results import summarize_energy

    settings, profile = configure(scenario, changes, devices)
    summary = {mode: summarize_energy(simulate(settings, mode, duration_s=hours * 3600.0, profile=profile).rows)
               for mode in MODES}
    qkd, dkg = summary["qkd"], summary["dkg"]
    return Evaluation(
        rdc_qkd_pct=100.0 * qkd["rdc_mean"], rdc_dkg_pct=100.0 * dkg["rdc_mean"],
        rdc_change_pct=100.0 * relative_difference(qkd["rdc_mean"], dkg["rdc_mean"]),
        battery_qkd_days=qkd["battery_life_days_mean"], battery_dkg_days=dkg["battery_life_days_mean"],
        battery_change_pct=100.0 * relative_difference(qkd["battery_life_days_mean"], dkg["battery_life_days_mean"]))


def sweep(scenario, knobs: Sequence[tuple[str, Sequence]], hours: float, devices: int = 1,
          fixed: Mapping[str, Any] | None = None, on_skip: Callable[[dict, str], None] | None = None) -> list[dict]:
    """One row per value (per combination for two keys): ``value`` (and ``value2``) then :data:`METRIC_COLUMNS`.

    A point the device cannot do (:class:`Unsupported`) gets ``None`` figures and is passed to
    ``on_skip(row, reason)``, unless every point is one: then it is raised.
    """
    _check_keys([key for key, _ in knobs] + list(fixed or {}))
    if not 1 <= len(knobs) <= MAX_KEYS:
        raise SweepError(f"give one or two --set keys to sweep, got {len(knobs)}")
    rows, skipped = [], []
    for combination in itertools.product(*(values for _, values in knobs)):
        changes = dict(fixed or {}) | {key: value for (key, _), value in zip(knobs, combination)}
        row = dict(zip(("value", "value2"), combination))
        try:
            row |= evaluate(scenario, changes, hours, devices).as_dict()
        except Unsupported as exc:
            row |= dict.fromkeys(METRIC_COLUMNS)
            skipped.append((row, exc))
        rows.append(row)
    if len(skipped) == len(rows):
        raise skipped[-1][1]
    for row, exc in skipped:
        if on_skip is not None:
            on_skip(row, str(exc))
    return rows


@dataclass(frozen=True)
class Solution:
    """Where ``target`` of ``metric`` is reached (``value`` None: out of reach in ``low..high``)."""

    key: str
    metric: str
    target: float
    low: float
    high: float
    value: float | None
    evaluation: Evaluation | None
    reached: tuple[float, float]  # the metric's smallest and largest value seen in the range
    jump: tuple[float, float] | None = None  # the metric just below and above ``value`` if it steps over the target

    def row(self) -> dict:
        return {"value": self.value, "rdc_change_pct": self.evaluation.rdc_change_pct,
                "battery_change_pct": self.evaluation.battery_change_pct}


def current_value(scenario, key: str, devices: int = 1, changes: Mapping[str, Any] | None = None) -> Any:
    """The value ``key`` has in the scenario (or its profile), with ``changes`` applied."""
    from harness.settings import to_table

    settings, profile = configure(scenario, changes or {}, devices)
    if key == DKG_ECC_SECONDS:
        return profile.dkg_key_seconds(settings.devices.dkg_curve)
    in_profile = key.startswith(PROFILE_PREFIX)
    table = to_table(profile.settings if in_profile else settings)
    for part in (key[len(PROFILE_PREFIX):] if in_profile else key).split("."):
        if not isinstance(table, dict) or part not in table:
            raise SweepError(f"unknown setting {key!r}")
        table = table[part]
    return table


def solve(scenario, key: str, metric: str, target: float, hours: float, devices: int = 1,
          between: tuple[float, float] | None = None, fixed: Mapping[str, Any] | None = None) -> Solution:
    """The value of ``key`` at which ``metric`` (one of :data:`TARGETS`) equals ``target``."""
    from scipy.optimize import brentq

    _check_keys([key] + list(fixed or {}))
    if metric not in TARGETS:
        raise SweepError(f"target metric must be one of {', '.join(TARGETS)}, got {metric!r}")
    base = dict(fixed or {})
    if key in base:
        raise SweepError(f"{key} is both solved for and fixed by --set")
    now = current_value(scenario, key, devices, base)
    if isinstance(now, bool) or not isinstance(now, float):
        raise SweepError(f"--solve needs a real-valued setting; {key} is {now!r}")
    if between is None and not now > 0:
        raise SweepError(f"{key} is {now!r} here: give the range to search with --between LO,HI")
    low, high = between if between is not None else (now / SOLVE_SPAN, now * SOLVE_SPAN)
    if not (0 < low < high and math.isfinite(high)):
        raise SweepError(f"--between must be two numbers 0 < LO < HI, got {low!r}, {high!r}")
    cache: dict[float, Evaluation] = {}

    def measure(x: float) -> float:
        if x not in cache:
            cache[x] = evaluate(scenario, base | {key: float(x)}, hours, devices)
        return getattr(cache[x], metric) - target

    # Scan outward from the current value (the crossing is usually near it, and the extremes of a
    # range, e.g. very short wake periods, are the slowest points to simulate), stop at the first bracket.
    grid = [float(x) for x in np.geomspace(low, high, SCAN_POINTS)]
    centre = min(range(len(grid)), key=lambda i: abs(math.log(grid[i] / now)) if now > 0 else i)
    offsets: dict[int, float] = {}
    for index in sorted(range(len(grid)), key=lambda i: (abs(i - centre), i)):
        offsets[index] = measure(grid[index])
        if offsets[index] == 0:
            return Solution(key, metric, target, low, high, grid[index], cache[grid[index]], _seen(offsets, target))
        for a, b in ((index - 1, index), (index, index + 1)):
            if a in offsets and b in offsets and offsets[a] * offsets[b] < 0:
                root = float(brentq(measure, grid[a], grid[b], xtol=1e-9, rtol=SOLVE_RTOL))
                jump = None
                if abs(measure(root)) > STEP_PP:
                    # No value reaches the target: the figures step over it here (e.g. where the key
                    # refresh moves to another wake). Say so, with both sides of the step.
                    jump = tuple(measure(root * (1 + side * 10 * SOLVE_RTOL)) + target for side in (-1, 1))
                return Solution(key, metric, target, low, high, root, cache[root], _seen(offsets, target), jump)
    return Solution(key, metric, target, low, high, None, None, _seen(offsets, target))


def _seen(offsets: Mapping[int, float], target: float) -> tuple[float, float]:
    return min(offsets.values()) + target, max(offsets.values()) + target


def _check_keys(keys: Sequence[str]) -> None:
    repeated = sorted({k for k in keys if list(keys).count(k) > 1})
    if repeated:
        raise SweepError(f"key {repeated[0]!r} is given twice")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepError(f"{key} must be a number, got {value!r}")
    return float(value)


# --- output ---------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def format_rows(rows: Sequence[Mapping], fmt: str, meta: Mapping[str, Any]) -> str:
    """Rows as an aligned ``table`` (a ``#`` line of provenance first), ``csv`` or ``json`` (with ``meta``)."""
    import json

    if fmt == "json":
        return json.dumps(dict(meta) | {"rows": list(rows)}, indent=2, default=str)
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [columns] + [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.rjust(width) for text, width in zip(line, widths)) for line in cells]
    described = ", ".join(f"{k} {v}" for k, v in meta.items() if not isinstance(v, (dict, list)))
    named = [f"{column} = {key}" for column, key in zip(("value", "value2"), meta.get("keys", ()))]
    fixed = [f"fixed {key} = {value}" for key, value in meta.get("fixed", {}).items()]
    described = "; ".join([described] + named + fixed)
    return "\n".join([f"# {described}"] + lines)


def plot(rows: Sequence[Mapping], path: str, meta: Mapping[str, Any]) -> None:
    """Both changes against the swept value (a line per ``value2``), the paper's figures marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.analysis.paper import load_paper

    paper = load_paper().qkd_vs_dkg
    numeric = all(isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool) for r in rows)
    labels = list(dict.fromkeys(r["value"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric, paper_metric, title in ((axes[0], "rdc_change_pct", "rdc", "radio duty cycle"),
                                            (axes[1], "battery_change_pct", "battery_life_days", "battery lifetime")):
        for group in dict.fromkeys(r.get("value2") for r in rows):
            part = [r for r in rows if r.get("value2") == group and r[metric] is not None]
            xs = [r["value"] if numeric else labels.index(r["value"]) for r in part]
            ax.plot(xs, [r[metric] for r in part], marker="o",
                    label=None if group is None else f"{meta['keys'][1]} = {group}")
        figure = paper.get(paper_metric)
        if figure is not None and figure.relative_change_pct is not None:
            ax.axhline(figure.relative_change_pct, color="crimson", linestyle="--", linewidth=1)
            ax.annotate(f"paper: {figure.text}", (0.01, figure.relative_change_pct), xycoords=("axes fraction", "data"),
                        color="crimson", fontsize=8, va="bottom")
        ax.axhline(0.0, color="gray", linewidth=0.6)
        if not numeric:
            ax.set_xticks(range(len(labels)), [str(label) for label in labels], rotation=20)
        ax.set_xlabel(meta["keys"][0])
        ax.set_ylabel(f"QKD vs DKG, {title} change (%)")
        if any(r.get("value2") is not None for r in rows):
            ax.legend(fontsize=7)
    fig.text(0.01, -0.02, f"model: simulation · scenario {meta['scenario']} · {meta['devices']} device(s) · "
                          f"{meta['hours']:g} h · qiot {meta['commit']}", fontsize=6.5, color="dimgray", va="top")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# --- the command -----------------------------------------------------------------------------------
def _between(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = [parse_value(p) for p in text.split(",")]
    if len(parts) != 2 or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
        raise SweepError(f"--between {text!r}: expected LO,HI")
    return float(parts[0]), float(parts[1])


@click.command("sweep")
@click.option("--scenario", "scenario_name", default=DEFAULT_SCENARIO, show_default=True,
              help="Scenario name (see `qiot scenarios`) or path to a .toml file.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=V1,V2,...",
              help="Values to sweep (twice: a grid); each overrides [SECTION] KEY of the scenario or of its "
                   "device profile. Scenario keys (devices.wake_period_s), profile keys "
                   "(profile.dkg.ecc, profile.ecc.micropython_affine.ecdh_p256_s) or the derived "
                   "profile.dkg.ecc_s (DKG's ECC seconds per key). With --solve: fixed values, one each.")
@click.option("--hours", type=click.FloatRange(min=0.0, min_open=True), default=6.0, show_default=True,
              help="Simulated hours per mode and point, not the scenario's [run] hours (the wake cycle repeats "
                   "every key refresh).")
@click.option("--devices", type=click.IntRange(1, 5000), default=1, show_default=True,
              help="Simulated devices per point; overrides [devices] count of the scenario (they differ only in "
                   "wake phase and jitter).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the changes against the value (png, pdf, svg), the paper's -18 %/+18 % marked.")
@click.option("--solve", "solve_key", default=None, metavar="SECTION.KEY",
              help="Find the value of this real-valued key that reaches the target change.")
@click.option("--target-rdc-change", type=float, default=None, help="With --solve: target RDC change, %.")
@click.option("--target-battery-change", type=float, default=None, help="With --solve: target battery change, %.")
@click.option("--between", default=None, metavar="LO,HI",
              help=f"With --solve: the range searched [default: the current value /{SOLVE_SPAN:g} to x{SOLVE_SPAN:g}].")
@_friendly
def COMMAND(scenario_name, sets, hours, devices, fmt, plot_path, solve_key, target_rdc_change,
            target_battery_change, between) -> None:
    """What-if: QKD vs DKG radio duty cycle and battery life over settings, on the pure simulation."""
    from harness import scenario as scenarios
    from harness.results import git_commit

    base = scenarios.load(scenario_name)
    knobs = [parse_set(option) for option in sets]
    meta = {"scenario": base.name, "devices": devices, "hours": hours, "commit": git_commit()[:12]}
    if solve_key is None:
        if target_rdc_change is not None or target_battery_change is not None or between is not None:
            raise SweepError("--target-rdc-change, --target-battery-change and --between need --solve")
        if not knobs:
            raise SweepError("nothing to sweep: give --set SECTION.KEY=V1,V2,... (or --solve)")
        if len(knobs) > MAX_KEYS:
            raise SweepError(f"at most {MAX_KEYS} --set keys (two make a grid), got {len(knobs)}")
        rows = sweep(base, knobs, hours, devices, on_skip=lambda row, reason: click.echo(
            f"warning: skipped {', '.join(map(str, (v for k, v in row.items() if k.startswith('value'))))}: "
            f"{reason}", err=True))
        meta["keys"] = [key for key, _ in knobs]
        click.echo(format_rows(rows, fmt, meta))
        if plot_path:
            plot(rows, plot_path, meta)
            click.echo(f"wrote {plot_path}", err=True)
        return
    if plot_path:
        raise SweepError("--plot draws a sweep (--set V1,V2,...), not a --solve")
    if (target_rdc_change is None) == (target_battery_change is None):
        raise SweepError("--solve needs exactly one of --target-rdc-change and --target-battery-change")
    if any(len(values) != 1 for _, values in knobs):
        raise SweepError("with --solve, each --set takes one value (the fixed context)")
    metric, target = (("rdc_change_pct", target_rdc_change) if target_rdc_change is not None
                      else ("battery_change_pct", target_battery_change))
    fixed = {key: values[0] for key, values in knobs}
    found = solve(base, solve_key, metric, target, hours, devices, _between(between), fixed)
    if found.value is None:
        raise click.ClickException(
            f"{metric} {target:+g} % is out of reach for {solve_key} in [{found.low:g}, {found.high:g}]: "
            f"there it runs from {found.reached[0]:+.2f} % to {found.reached[1]:+.2f} %")
    meta |= {"key": solve_key, "target": f"{metric} {target:+g}"} | ({"fixed": fixed} if fixed else {})
    click.echo(format_rows([found.row()], fmt, meta))
    if found.jump is not None:
        click.echo(f"warning: no value reaches {metric} {target:+g} %: it steps from {found.jump[0]:+.2f} % to "
                   f"{found.jump[1]:+.2f} % at {solve_key} = {found.value:.6g}", err=True)
