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
    """List the scenarios shipped in experiments/ (any .toml path works with --scenario too)."""
    for name in scenarios.available():
        try:
            loaded = scenarios.load(name)
        except scenarios.ScenarioError as exc:
            click.echo(f"{name:12s} INVALID: {exc}")
            continue
        settings = loaded.settings
        click.echo(f"{name:12s} {settings.fibre.length_km:5.1f} km  {settings.fibre.loss_db:4.1f} dB  "
                   f"{settings.devices.count:4d} devices  {settings.scenario.description}")


@cli.command("run")
@click.option("--scenario", "scenario_name", default="bcn", show_default=True,
              help="Scenario name (see `qiot scenarios`) or path to a .toml file.")
@click.option("--hours", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Emulated hours per mode [default: the scenario's run.hours].")
@click.option("--devices", type=click.IntRange(1, 5000), default=None,
              help="Number of devices [default: the scenario's devices.count].")
@click.option("--mode", type=click.Choice(["qkd", "dkg", "both"]), default="both", show_default=True,
              help="Key mode: QKD-delivered keys, device key generation, or both one after the other.")
@click.option("--time-scale", type=click.FloatRange(min=0.001), default=None,
              help="Emulated seconds per wall second for sleeps and periodic work; the network is "
                   "never accelerated [default: the scenario's run.time_scale].")
@click.option("--seed", type=int, default=None, help="Random seed [default: the scenario's run.seed].")
@click.option("--fault", "faults", multiple=True, metavar="KIND[:TARGET]@AT+DURATION",
              help="Add a fault to the scenario's [[faults]] (emulated seconds after each mode starts), "
                   "e.g. fibre_cut@600+600 (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR,
              show_default=True, help="Folder in which the run directory is created.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_command(scenario_name, hours, devices, mode, time_scale, seed, faults, out_dir, quiet) -> None:
    """Build the paper's Figure 1 network, run the devices in each key mode, write a run directory."""
    from harness import runconfig
    from harness.enums import MODES
    from harness.faults import parse_fault
    from harness.lifecycle import StopRequest, stop_on_signals

    try:
        extra = tuple(parse_fault(text) for text in faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    try:
        loaded = runconfig.overridden(_load_scenario(scenario_name), hours=hours, devices=devices,
                                      time_scale=time_scale, seed=seed, faults=extra)
    except scenarios.ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    _require_root("qiot run")
    from harness import runner

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {out_dir}: {exc.strerror}", param_hint="--out") from None
    bar = None if quiet else _ProgressBar()
    options = runner.RunOptions(scenario=loaded, modes=MODES if mode == "both" else (mode,), out_dir=out_dir,
                                progress=bar)
    run_settings = loaded.settings.run
    click.echo(f"qiot: scenario {loaded.name} ({loaded.path}), {loaded.settings.devices.count} devices, "
               f"{run_settings.hours:g} h per mode, time scale {run_settings.time_scale:g}, "
               f"modes {', '.join(options.modes)}")
    # Ctrl-C and SIGTERM only ask the run to stop; it tears down and keeps its results, marked.
    with stop_on_signals(StopRequest()) as stop:
        try:
            outcome = runner.run(options, stop)
        finally:
            if bar:
                bar.finish()
    from harness.analysis.compare import headline

    click.echo("\n" + headline(outcome.run_dir) + "\n")
    if outcome.status == "failed":
        click.echo(f"qiot: run failed: {outcome.reason.splitlines()[0] if outcome.reason else 'see logs/'}",
                   err=True)
    click.echo(f"qiot: run {outcome.status}: {outcome.run_dir}")
    if outcome.status != "completed":
        sys.exit(130 if outcome.status == "interrupted" else 1)


class _ProgressBar:
    """A click progress bar per mode, advanced with the emulated clock."""

    STEPS = 1000

    def __init__(self) -> None:
        self.mode = None
        self.bar = None
        self.done = 0

    def __call__(self, mode: str, fraction: float, counters: dict) -> None:
        if mode != self.mode:
            self.finish()
            self.mode = mode
            self.bar = click.progressbar(length=self.STEPS, label=f"{mode:>4s}", show_eta=True,
                                         item_show_func=lambda _: self._counters, file=sys.stderr)
            self.bar.__enter__()
            self.done = 0
        self._counters = (f"{counters.get('emulated_h', 0):.2f}/{counters.get('hours', 0):g} h emulated, "
                          f"{counters.get('devices', 0)} devices, wakes {counters.get('wakes', 0)}, "
                          f"received {counters.get('received', 0)}")
        target = int(fraction * self.STEPS)
        if target > self.done:
            self.bar.update(target - self.done, current_item=mode)
            self.done = target
        else:
            self.bar.update(0, current_item=mode)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.mode = None


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
