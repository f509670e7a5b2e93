"""Click commands of the analysis: ``analyze``, ``compare``, ``plot``, ``capacity``, ``report``.

The main CLI registers them with ``cli.add_command(...)``; every library error becomes a one-line
:class:`click.ClickException`, never a traceback.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from harness.scenario import DEFAULT_SCENARIO


def _friendly(func):
    """Turn the library's ValueError family (RunDirError, ScenarioError, ...) into ClickException."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except ImportError as exc:
            raise click.ClickException(f"missing component: {exc}") from None
    return wrapper


def _warn(warnings: list[str]) -> None:
    for text in warnings:
        click.echo(f"warning: {text}", err=True)


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


@click.command("analyze")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--interval-s", type=click.FloatRange(min=1.0), default=None,
              help="series interval in emulated seconds (default: the run's energy interval, else the "
                   "scenario's, else the run length / 12)")
@click.option("--broker-port", type=click.IntRange(1, 65535), default=None,
              help="MQTT port in the captures (default: metadata mqtt_port or 1883)")
@click.option("--rederive", is_flag=True,
              help="first rebuild each mode's messages.csv and summary.csv from sent.csv and received.csv")
@_friendly
def analyze(run_dir: str, interval_s: float, broker_port: int | None, rederive: bool) -> None:
    """Parse the captures of RUN_DIR and write wire.csv, capture.json and series.csv per mode."""
    from harness.analysis.analyze import analyze_run, rederive_run
    if rederive:
        for mode in rederive_run(run_dir):
            click.echo(f"{mode}: messages.csv and summary.csv rebuilt from sent.csv and received.csv")
    report = analyze_run(run_dir, interval_s, broker_port)
    click.echo(f"series interval {report['interval_s']:g} s ({report['interval_source']})")
    for mode, info in report["modes"].items():
        drops = info["capture_drops"]
        note = "no broker capture" if drops is None else f"capture drops: {drops}, wire-only: {info['wire_only']}"
        click.echo(f"{mode}: {', '.join(info['files'])} ({note})")
    _warn(report["warnings"])


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="write here instead of stdout")
@click.option("--baseline", default=None, help="label to take relative differences against (default: first dkg)")
@_friendly
def compare(run_dirs: tuple[str, ...], fmt: str, output: str | None, baseline: str | None) -> None:
    """Compare RDC, battery life, latency and loss across modes and runs: n and 95% CI per side, the
    difference to the baseline with its 95% CI and p-value (Welch t; Newcombe/Fisher for loss), the
    relative difference, and the paper's figure."""
    from harness.analysis.compare import compare_runs, render_table, to_csv, to_json
    comparison = compare_runs(list(run_dirs), baseline)
    if fmt == "table":
        _emit(render_table(comparison), output)  # warnings are part of the table
        return
    _emit(to_csv(comparison) if fmt == "csv" else to_json(comparison), output)
    _warn(comparison.warnings)


@click.command("plot")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="where to write figures (default RUN_DIR/figures)")
@_friendly
def plot(run_dir: str, out_dir: str | None) -> None:
    """Draw the paper's Figure 2a-e (PNG and PDF) from the stored results of RUN_DIR."""
    from harness.analysis.plots import plot_run, warnings_of
    written, skipped = plot_run(run_dir, out_dir)
    for path in written:
        click.echo(f"wrote {path}")
    for note in skipped:
        click.echo(f"skipped {note}", err=True)
    _warn(warnings_of(run_dir))


@click.command("capacity")
@click.option("--scenario", "scenario_name", default=DEFAULT_SCENARIO, show_default=True,
              help="scenario name (see `qiot scenarios`) or .toml path: its [qkd] rate calibration, key size, "
                   "buffer and refresh period")
@click.option("--loss-db", "loss_db", multiple=True,
              help="loss value(s) in dB: numbers, comma lists or start:stop:step (default 0:15:0.5); the curve "
                   "runs over loss, so the scenario's [fibre] loss_db is not used")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="write here instead of stdout")
@click.option("--plot", "plot_stem", type=click.Path(dir_okay=False), default=None,
              help="also draw Fig. 2d to this path (.png and .pdf are written)")
@_friendly
def capacity(scenario_name: str, loss_db: tuple[str, ...], fmt: str, output: str | None,
             plot_stem: str | None) -> None:
    """Figure 2d: keys per refresh, devices servable and key-buffer fill time versus optical loss."""
    from harness.analysis.capacity import (DEFAULT_LOSS_GRID, capacity_table, paper_points_table,
                                           parse_loss_values, render_capacity)
    from harness.scenario import load
    scenario = load(scenario_name)
    qkd = scenario.section("qkd")
    losses = parse_loss_values(loss_db) if loss_db else list(DEFAULT_LOSS_GRID)
    table = capacity_table(qkd, losses)
    points = paper_points_table(qkd)
    if fmt == "table":
        _emit(render_capacity(table, points, scenario.name), output)
    else:
        # Versioned like every analysis export (docs/results.md, "Versions").
        from harness.analysis.rundir import ANALYSIS_SCHEMA_VERSION
        if fmt == "csv":
            versioned = table.copy()
            versioned.insert(0, "schema_version", ANALYSIS_SCHEMA_VERSION)  # first, as in `qiot compare`
            _emit(versioned.to_csv(index=False), output)
        else:
            _emit(json.dumps({"schema_version": ANALYSIS_SCHEMA_VERSION, "scenario": scenario.name,
                              "curve": json.loads(table.to_json(orient="records")),
                              "paper_points": json.loads(points.to_json(orient="records"))}, indent=2), output)
    if plot_stem:
        from harness.analysis.plots import fig2d_capacity
        for path in fig2d_capacity(table, points, Path(plot_stem)):
            click.echo(f"wrote {path}", err=True)


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="write the page here (default RUN_DIR/report.html)")
@_friendly
def report(run_dir: str, out: str | None) -> None:
    """One self-contained HTML page for RUN_DIR: status, headline table (n, CI, p, the paper), Fig. 2a-e,
    scenario, capabilities and mechanisms, emulation health and faults, provenance; built only from
    the stored results, with nothing loaded from outside the page."""
    from harness.analysis.report import write_report
    from harness.analysis.plots import warnings_of
    path = write_report(run_dir, out)
    click.echo(f"wrote {path}")
    _warn(warnings_of(run_dir))


#: Commands for the main CLI: ``for c in COMMANDS: cli.add_command(c)``.
COMMANDS = (analyze, compare, plot, capacity, report)
