"""The command line: help everywhere, one-line errors and non-zero status for bad input."""

import pytest
from click.testing import CliRunner

from harness.cli import cli


@pytest.mark.parametrize("command", [[], ["run"], ["scenarios"], ["clean"]])
def test_help(command):
    result = CliRunner().invoke(cli, command + ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_scenarios_lists_shipped_ones():
    result = CliRunner().invoke(cli, ["scenarios"])
    assert result.exit_code == 0
    assert "bcn" in result.output and "8.5 km" in result.output and "7.0 dB" in result.output


@pytest.mark.parametrize("args, message", [
    (["run", "--scenario", "atlantis"], "unknown scenario 'atlantis'"),
    (["run", "--devices", "0"], "0 is not in the range 1<=x<=5000"),
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
    result = CliRunner().invoke(cli, ["run", "--scenario", "bcn"])
    assert result.exit_code == 1
    assert "needs root" in result.output
