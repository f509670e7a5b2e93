"""The ``qiot`` command line: run experiments, list scenarios, clean up, and the standalone tools.

Every command reports bad input as one line and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

import harness
from harness import scenario as scenarios
from harness.enums import MODES
from harness.settings import SettingsError

DEFAULT_RESULTS_DIR = Path("results")


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise click.ClickException(f"{what} needs root (network namespaces, Open vSwitch, iptables): "
                                   "run it with sudo or as root")


def _load_scenario(name_or_path: str) -> scenarios.Scenario:
    try:
        return scenarios.load(name_or_path)
    except scenarios.ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(harness.__version__, prog_name="qiot")
def cli() -> None:
    """qiot: a Mininet testbed for QKD-keyed, software-defined IoT.

    Reproduces Mavromatis et al. (ECOC 2018): IoT devices obtaining AES keys from an emulated
    QKD link versus generating them on the device with ECC (DKG).
    """


@cli.command("scenarios")
def list_scenarios() -> None:
    """List the scenarios shipped in experiments/ (any .toml path works with --scenario too): fibre,
    devices, emulated hours per mode, time scale, and the expected wall time of `qiot run` with it."""
    from harness import walltime

    costs = _walltime_settings().costs
    rows: list[tuple[str, ...] | str] = [("scenario", "fibre", "devices", "h/mode", "scale",
                                          "wall time (both modes)", "description")]
    for name in scenarios.available():
        try:
            loaded = scenarios.load(name)
        except scenarios.ScenarioError as exc:
            rows.append(f"{name} INVALID: {exc}")
            continue
        settings = loaded.settings
        expected = walltime.estimate(settings, MODES, costs)
        rows.append((name, f"{settings.fibre.length_km:.1f} km, {settings.fibre.loss_db:.1f} dB",
                     str(settings.devices.count), f"{settings.run.hours:g}", f"{settings.run.time_scale:g}",
                     f"about {walltime.format_duration(expected.total_s)}", settings.scenario.description))
    table = [row for row in rows if isinstance(row, tuple)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in rows:  # numbers right-aligned, text left-aligned, the description as it is
        click.echo(row if isinstance(row, str) else "  ".join(
            cell.rjust(width) if 1 < i < 5 else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
            + "  " + row[-1])
    click.echo(f"wall time: expected on this machine at the scenario's time scale ({walltime.WALLTIME_LABEL}); "
               "`qiot run --hours H --time-scale X` shortens it")


def _walltime_settings():
    from harness import walltime

    try:
        return walltime.load_settings()
    except walltime.WallTimeError as exc:
        raise click.ClickException(str(exc)) from None


def _interactive() -> bool:
    """A person at a terminal can answer a question."""
    return sys.stdin.isatty()


def _device_limit():
    from harness.emulator import device_limit
    from topologies.fig1 import MAX_DEVICES

    return device_limit(MAX_DEVICES)


def _device_limit_help() -> str:
    """The limit as --help states it; a broken emulator.toml must not break every command's help."""
    try:
        limit = _device_limit()
    except (SettingsError, OSError) as exc:
        return f"(The limit on this machine is unknown: {exc})"
    return f"At most {limit.devices} on this machine ({limit.reason})."


@cli.command("run")
@click.option("--scenario", "scenario_name", default=scenarios.DEFAULT_SCENARIO, show_default=True,
              help="Scenario name (see `qiot scenarios`) or path to a .toml file.")
@click.option("--hours", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Emulated hours per mode; overrides [run] hours of the scenario.")
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help=f"Number of devices; overrides [devices] count of the scenario. {_device_limit_help()}")
@click.option("--mode", type=click.Choice(["qkd", "dkg", "both"]), default="both", show_default=True,
              help="Key mode: QKD-delivered keys, device key generation, or both one after the other.")
@click.option("--time-scale", type=click.FloatRange(min=0.001), default=None,
              help="Emulated seconds per wall second for sleeps and periodic work (the network is "
                   "never accelerated); overrides [run] time_scale of the scenario.")
@click.option("--seed", type=int, default=None, help="Random seed; overrides [run] seed of the scenario.")
@click.option("--fault", "faults", multiple=True, metavar="KIND[:TARGET]@AT+DURATION",
              help="A fault (emulated seconds after each mode starts, e.g. fibre_cut@600+600); adds to "
                   "[[faults]] of the scenario (repeatable).")
@click.option("--verbose", "-v", is_flag=True,
              help="The run's daemons log at debug level in logs/<daemon>.log; overrides [run] log_level "
                   "of the scenario (default info).")
@click.option("--yes", "-y", is_flag=True,
              help="Start a run expected to take longer than the confirmation limit of "
                   "experiments/walltime.toml without asking.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR,
              show_default=True, help="Folder in which the run directory is created.")
@click.option("--quiet", is_flag=True, help="No progress (a bar on a terminal, else a line per energy interval).")
def run_command(scenario_name, hours, devices, mode, time_scale, seed, faults, verbose, yes, out_dir, quiet) -> None:
    """Build the paper's Figure 1 network, run the devices in each key mode, write a run directory.

    A long run says at start how long it is expected to take, where its results go and how to run
    it shorter; a very long one asks first on a terminal, and elsewhere needs --yes (the limits, and
    the costs measured on this machine: experiments/walltime.toml; `qiot scenarios` lists each
    scenario's expected wall time).
    """
    from harness import runconfig, walltime
    from harness.faults import parse_fault
    from harness.lifecycle import StopRequest, stop_on_signals
    from harness.progress import ProgressBar, ProgressLines, RunDirNotice

    try:
        extra = tuple(parse_fault(text) for text in faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    try:
        loaded = runconfig.overridden(_load_scenario(scenario_name), hours=hours, devices=devices,
                                      time_scale=time_scale, seed=seed, log_level="debug" if verbose else None,
                                      faults=extra)
    except scenarios.ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    try:
        _device_limit().check(loaded.settings.devices.count)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--devices") from None
    modes = MODES if mode == "both" else (mode,)
    limits = _walltime_settings()
    expected = walltime.estimate(loaded.settings, modes, limits.costs)
    run_settings = loaded.settings.run
    click.echo(f"qiot: scenario {loaded.name} ({loaded.path}), {loaded.settings.devices.count} devices, "
               f"{run_settings.hours:g} h per mode, time scale {run_settings.time_scale:g}, "
               f"modes {', '.join(modes)}; expected wall time about {walltime.format_duration(expected.total_s)}")
    if expected.total_s > limits.limits.announce_s:
        for line in _long_run_notice(loaded, modes, expected, limits, out_dir):
            click.echo(f"qiot: {line}")
    _require_root("qiot run")
    if expected.total_s > limits.limits.confirm_s and not yes:
        over = f"over the {walltime.format_duration(limits.limits.confirm_s)} limit"
        if not _interactive():
            raise click.UsageError(f"this run is expected to take about {walltime.format_duration(expected.total_s)}, "
                                   f"{over} for a start without a terminal: add --yes to start it, or shorten it")
        if not click.confirm(f"qiot: start a run of about {walltime.format_duration(expected.total_s)}?",
                             default=False):
            click.echo("qiot: not started")
            sys.exit(1)
    from harness import runner

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {out_dir}: {exc.strerror}", param_hint="--out") from None
    shown = None
    if not quiet:
        interval_s = runconfig.suited_energy_interval(run_settings.hours * 3600.0,
                                                      loaded.settings.devices.energy_interval_s)
        shown = ProgressBar() if sys.stderr.isatty() else ProgressLines(interval_s)
    progress = RunDirNotice(out_dir, shown)
    options = runner.RunOptions(scenario=loaded, modes=modes, out_dir=out_dir, progress=progress)
    # Ctrl-C and SIGTERM only ask the run to stop; it tears down and keeps its results, marked.
    with stop_on_signals(StopRequest()) as stop:
        try:
            outcome = runner.run(options, stop)
        finally:
            progress.finish()
    from harness.analysis.compare import headline

    click.echo("\n" + headline(outcome.run_dir) + "\n")
    if outcome.status == "failed":
        click.echo(f"qiot: run failed: {outcome.reason.splitlines()[0] if outcome.reason else 'see logs/'}",
                   err=True)
    click.echo(f"qiot: run {outcome.status}: {outcome.run_dir}")
    if outcome.status != "completed":
        sys.exit(130 if outcome.status == "interrupted" else 1)


def _long_run_notice(loaded, modes, expected, limits, out_dir: Path) -> list[str]:
    """What a long run says at start: how long and why, where its results go, how to run it shorter."""
    from harness import walltime

    lines = [f"this run is expected to take {expected.describe()} (more if the machine falls behind the time "
             f"scale; costs measured in {walltime.WALLTIME_LABEL})",
             f"its results are written as it goes to {out_dir / loaded.name}-<UTC start time>/; Ctrl-C stops it "
             f"cleanly and keeps them, marked interrupted"]
    shorter = []
    faster = walltime.time_scale_within(loaded.settings, modes, limits.costs, limits.limits.announce_s)
    if faster is not None and faster > loaded.settings.run.time_scale:
        estimate = walltime.estimate(walltime.with_run(loaded.settings, time_scale=faster), modes, limits.costs)
        shorter.append(f"--time-scale {faster:g} (the same {loaded.settings.run.hours:g} h, about "
                       f"{walltime.format_duration(estimate.total_s)})")
    quick = limits.quick
    estimate = walltime.estimate(walltime.with_run(loaded.settings, quick.hours, quick.time_scale), modes,
                                 limits.costs)
    if estimate.total_s < expected.total_s:
        shorter.append(f"--hours {quick.hours:g} --time-scale {quick.time_scale:g} (about "
                       f"{walltime.format_duration(estimate.total_s)})")
    if shorter:
        lines.append("to run it shorter: " + " or ".join(shorter))
    return lines


@cli.command("clean")
@click.option("--force", is_flag=True, help="Also remove the resources of runs whose qiot process still lives.")
def clean_command(force: bool) -> None:
    """Remove what qiot runs left behind (recorded processes, tagged bridges and interfaces) only."""
    _require_root("qiot clean")
    from harness.clean import clean

    report = clean(force=force)
    for run in report.live:
        click.echo(f"qiot clean: run {run} is still running: left alone (stop it, or use --force)")
    if report.empty():
        if not report.live:
            click.echo("qiot clean: nothing to remove")
        return
    for label, items in (("processes", report.processes), ("bridges", report.bridges),
                         ("interfaces", report.interfaces), ("namespaces", report.namespaces),
                         ("run records", report.runs)):
        if items:
            click.echo(f"qiot clean: removed {len(items)} {label}: {', '.join(items)}")


def _register_tool_commands() -> None:
    """The standalone tools of the pure cores: each package owns its command, the CLI lists them."""
    from harness.analysis.cli import COMMANDS as analysis_commands
    from harness.kme.cli import kme
    from harness.qkd.cli import qkd
    from harness.sweep import COMMAND as sweep

    for command in (qkd, kme, sweep, *analysis_commands):
        cli.add_command(command)


_register_tool_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="qiot")


if __name__ == "__main__":
    main()
