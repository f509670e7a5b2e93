"""The command line: help everywhere, one-line errors and non-zero status for bad input, one default
scenario, help texts that name the setting each option overrides, and what `qiot run` says before a
long run (with the runner replaced: these tests build no network)."""

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import scenario as scenarios
from harness import walltime
from harness.cli import cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_real"


@pytest.mark.parametrize("command", [[], ["run"], ["scenarios"], ["clean"]])
def test_help(command):
    result = CliRunner().invoke(cli, command + ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_scenarios_lists_hours_devices_and_expected_wall_time():
    result = CliRunner().invoke(cli, ["scenarios"])
    assert result.exit_code == 0, result.output
    assert "bcn" in result.output and "8.5 km" in result.output and "7.0 dB" in result.output
    costs = walltime.load_settings().costs
    for name in scenarios.available():
        settings = scenarios.load(name).settings
        expected = walltime.format_duration(walltime.estimate(settings, ("qkd", "dkg"), costs).total_s)
        (line,) = [line for line in result.output.splitlines() if line.startswith(f"{name} ")]
        cells = re.split(r"\s{2,}", line)
        assert cells[2:6] == [str(settings.devices.count), f"{settings.run.hours:g}",
                              f"{settings.run.time_scale:g}", f"about {expected}"], line
    assert "about 48 h" in result.output  # bcn: 24 h per mode at time scale 1


@pytest.mark.parametrize("args, message", [
    (["run", "--scenario", "atlantis"], "unknown scenario 'atlantis'"),
    (["run", "--devices", "0"], "0 is not in the range x>=1"),
    (["run", "--hours", "-1"], "--hours"),
    (["run", "--mode", "quantum"], "'quantum' is not one of"),
    (["run", "--fault", "meteor@1+2"], "unknown fault kind 'meteor'"),
    (["run", "--fault", "fibre_cut"], "expected KIND[:TARGET]@AT+DURATION"),
])
def test_bad_options_give_one_line_errors(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_scenario_file_names_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "b"\n[fibre]\nlength_km = 1\nloss_db = "high"\n')
    result = CliRunner().invoke(cli, ["run", "--scenario", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: [fibre] loss_db must be a number" in result.output


def test_run_refuses_without_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["run", "--scenario", "bcn", "--hours", "0.1", "--time-scale", "30"])
    assert result.exit_code == 1
    assert "needs root" in result.output


@pytest.mark.parametrize("command", [["scenarios"], ["run", "--hours", "0.1"]])
def test_a_broken_walltime_file_is_one_line(command, tmp_path, monkeypatch):
    broken = tmp_path / "walltime.toml"
    broken.write_text(walltime.WALLTIME_FILE.read_text().replace("[limits]", "[limits]\nannounce_after = 1"))
    monkeypatch.setattr(walltime, "WALLTIME_FILE", broken)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {broken}: [limits] unknown key 'announce_after'" in result.output


# --- one default scenario, help texts that name the setting -----------------------------------------
def _option(command, name):
    return next(p for p in command.params if f"--{name}" in p.opts)


def test_every_command_defaults_to_the_one_default_scenario():
    from harness.analysis.cli import capacity
    from harness.kme.cli import kme
    from harness.qkd.cli import calibrate, qkd
    from harness.sweep import COMMAND as sweep

    assert scenarios.DEFAULT_SCENARIO == "bcn"
    for command in (cli.commands["run"], kme, qkd, calibrate, capacity, sweep):
        option = _option(command, "scenario")
        assert option.default == scenarios.DEFAULT_SCENARIO and not option.required, command.name


def test_the_default_scenario_is_what_the_commands_use():
    # qkd without --scenario: bcn's 7 dB, not a built-in 4 dB
    result = CliRunner().invoke(cli, ["qkd", "--seconds", "30"])
    assert result.exit_code == 0, result.output
    assert "loss 7 dB" in result.output
    # capacity without --scenario: bcn's table, in one line of provenance
    result = CliRunner().invoke(cli, ["capacity", "--loss-db", "7"])
    assert result.exit_code == 0, result.output
    assert "scenario bcn" in result.output


#: Options that override a scenario setting, and the `[section] key` their help must name.
OVERRIDES = {
    "run": {"hours": "[run] hours", "devices": "[devices] count", "time-scale": "[run] time_scale",
            "seed": "[run] seed", "verbose": "[run] log_level"},
    "kme": {"loss-db": "[fibre] loss_db", "time-scale": "[run] time_scale", "seed": "[run] seed"},
    "qkd": {"loss-db": "[fibre] loss_db", "protocol": "[qkd] protocol", "eve": "[qkd] eve_intercept_fraction",
            "model": "[qkd.calibration] model", "seed": "[run] seed"},
    "sweep": {"devices": "[devices] count"},
}
#: Options that look like a scenario setting but deliberately do not take it: their help says so.
NOT_TAKEN = {"qkd": {"time-scale": "[run] time_scale"}, "sweep": {"hours": "[run] hours"},
             "capacity": {"loss-db": "[fibre] loss_db"}}


@pytest.mark.parametrize("command", sorted(set(OVERRIDES) | set(NOT_TAKEN)))
def test_help_names_the_setting_each_option_overrides(command):
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for option, setting in OVERRIDES.get(command, {}).items():
        help_text = _option(cli.commands[command], option).help
        assert f"overrides {setting}" in help_text and setting in text, (option, help_text)
    if command == "run":
        assert "adds to [[faults]] of the scenario" in _option(cli.commands["run"], "fault").help
    for option, setting in NOT_TAKEN.get(command, {}).items():
        help_text = _option(cli.commands[command], option).help
        assert re.search(rf"not (the scenario's )?{re.escape(setting)}|{re.escape(setting)} is not used",
                         help_text), (option, help_text)


def test_scenario_files_only_point_to_options_that_exist_and_override_that_key():
    """A comment such as ``count = 3  # override with --devices`` must be true of `qiot run`."""
    run = cli.commands["run"]
    pointers = 0
    for path in sorted(scenarios.EXPERIMENTS_DIR.glob("*.toml")):
        section = None
        for line in path.read_text().splitlines():
            header = re.match(r"\s*\[+([\w.]+)\]+", line)
            if header:
                section = header.group(1)
            key = re.match(r"\s*(\w+)\s*=", line)
            for option in re.findall(r"(?<![\w-])--([a-z][a-z-]+)", line.partition("#")[2]):
                pointers += 1
                param = next((p for p in run.params if f"--{option}" in p.opts), None)
                assert param is not None, f"{path.name}: `{line.strip()}` names --{option}, not an option of qiot run"
                if key:
                    assert f"[{section}] {key.group(1)}" in param.help, (path.name, line, param.help)
            assert "run --help" not in line or "wireless_transport" not in line, line
    assert pointers >= 4  # every scenario's [devices] count points to --devices


# --- a long run: said at start, confirmed, or refused -------------------------------------------------
@pytest.fixture
def fake_runner(monkeypatch):
    """`runner.run` replaced by one that copies a real run directory and reports progress like the real
    one (the runner builds a Mininet network, which unit tests must not); root pretended."""
    from harness import runner

    calls = []

    def run(options, stop):
        calls.append(options)
        run_dir = options.out_dir / f"{options.scenario.name}-20261201T000000Z"
        shutil.copytree(FIXTURE, run_dir)
        metadata = json.loads((run_dir / "metadata.json").read_text())
        (run_dir / "metadata.json").write_text(json.dumps(dict(metadata, status="running")))
        hours = options.scenario.settings.run.hours
        for mode in options.modes:
            for step in range(101):
                fraction = step / 100
                if options.progress:
                    options.progress(mode, fraction, {"emulated_h": fraction * hours, "hours": hours,
                                                      "devices": 3, "wakes": step, "received": step})
        (run_dir / "metadata.json").write_text(json.dumps(metadata))
        return runner.RunOutcome(run_dir, "completed")

    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    return calls


def _expected(hours: float, time_scale: float) -> str:
    """What the estimator says of bcn (both modes) at ``hours`` and ``time_scale``."""
    settings = walltime.with_run(scenarios.load("bcn").settings, hours, time_scale)
    return walltime.format_duration(walltime.estimate(settings, ("qkd", "dkg"), walltime.load_settings().costs).total_s)


def test_a_short_run_starts_at_once_and_logs_a_line_per_energy_interval(fake_runner, tmp_path):
    # 1 h at x120: energy interval 300 s (12 per mode), under 15 min: no announcement, no question
    result = CliRunner().invoke(cli, ["run", "--hours", "1", "--time-scale", "120", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(fake_runner) == 1 and fake_runner[0].scenario.name == "bcn"
    assert re.search(r"expected wall time about 1\.\d min\n", result.output)
    assert f"expected wall time about {_expected(1, 120)}" in result.output
    assert "to run it shorter" not in result.output
    assert f"writing to {tmp_path / 'bcn-20261201T000000Z'}" in result.stdout
    for mode in ("qkd", "dkg"):
        lines = [line for line in result.stderr.splitlines() if f"qiot: {mode}: " in line]
        assert len(lines) == 1 + 12, lines  # a start line, then one per 300 emulated s
        assert "a line every 300 emulated s" in lines[0]
        assert lines[-1].split(" qiot: ")[1].startswith(f"{mode}: 1.00/1 h emulated")
    assert "qiot: run completed" in result.output


def test_verbose_sets_the_daemons_log_level_in_the_run_configuration(fake_runner, tmp_path):
    CliRunner().invoke(cli, ["run", "--hours", "0.1", "--time-scale", "30", "--quiet", "--out", str(tmp_path)])
    CliRunner().invoke(cli, ["run", "--hours", "0.1", "--time-scale", "30", "--verbose", "--out", str(tmp_path)])
    assert [o.scenario.settings.run.log_level for o in fake_runner] == ["info", "debug"]


def test_a_long_run_says_how_long_where_and_how_to_shorten_it(fake_runner, tmp_path):
    # 24 h at x30: about 1.6 h, over the announcement limit (15 min) and the confirmation limit (1 h)
    result = CliRunner().invoke(cli, ["run", "--time-scale", "30", "--yes", "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"this run is expected to take about 1 h 3\d min: 2 modes x 24 h emulated at time "
                     r"scale 30 \(1 h 36 min\)", out), out
    assert f"its results are written as it goes to {tmp_path / 'bcn'}-<UTC start time>/" in out
    assert "Ctrl-C stops it cleanly and keeps them, marked interrupted" in out
    assert f"to run it shorter: --time-scale 200 (the same 24 h, about {_expected(24, 200)})" in out
    assert f"--hours 1 --time-scale 120 (about {_expected(1, 120)})" in out
    assert len(fake_runner) == 1


def test_the_default_run_is_refused_without_a_terminal_unless_yes(fake_runner, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "expected wall time about 48 h" in result.output
    assert "add --yes to start it, or shorten it" in result.output
    assert "to run it shorter: --time-scale 200" in result.output
    assert "Traceback" not in result.output and fake_runner == []


def test_on_a_terminal_a_long_run_asks_first(fake_runner, tmp_path, monkeypatch):
    monkeypatch.setattr("harness.cli._interactive", lambda: True)
    declined = CliRunner().invoke(cli, ["run", "--out", str(tmp_path)], input="n\n")
    assert declined.exit_code == 1 and "start a run of about 48 h" in declined.output
    assert "qiot: not started" in declined.output and fake_runner == []
    accepted = CliRunner().invoke(cli, ["run", "--out", str(tmp_path), "--quiet"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert len(fake_runner) == 1 and fake_runner[0].scenario.settings.run.hours == 24


def test_a_long_run_under_the_confirmation_limit_is_announced_but_starts(fake_runner, tmp_path):
    # 24 h at x120: about 25 min, over 15 min, under 1 h
    result = CliRunner().invoke(cli, ["run", "--time-scale", "120", "--quiet", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "this run is expected to take about 2" in result.output and len(fake_runner) == 1
