"""``qiot qkd`` and ``qiot qkd calibrate`` through click's runner."""

import re

from click.testing import CliRunner

from harness.qkd.cli import qkd
from tests.support.scenarios import zero_calibration_scenario


def test_standalone_run_prints_rate_qber_and_fill(tmp_path):
    result = CliRunner().invoke(qkd, ["--loss-db", "7", "--seconds", "120", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rate = float(re.search(r"secret key rate ([\d.]+) bit/s", result.output).group(1))
    assert 1100 < rate < 1350
    assert "Alice and Bob identical: True" in result.output
    assert re.search(r"buffer \d+/3906 keys", result.output)
    assert (tmp_path / "alice" / "blocks.csv").exists()


def test_calibrate_prints_fits_and_residuals():
    result = CliRunner().invoke(qkd, ["calibrate", "--emulate", "60"])
    assert result.exit_code == 0, result.output
    assert "fit two_constant: a_s = 0.0001151, b_s = 0.0002428" in result.output
    assert "fit physical: duty_cycle" in result.output
    residuals = [float(r) for r in re.findall(r"residual\s+([+-][\d.]+)%", result.output)]
    assert len(residuals) == 6 and all(abs(r) < 5 for r in residuals)


def test_bad_input_is_a_clean_error():
    result = CliRunner().invoke(qkd, ["--scenario", "no-such-scenario", "--seconds", "10"])
    assert result.exit_code != 0 and "unknown scenario" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = CliRunner().invoke(qkd, ["--loss-db", "-3"])
    assert result.exit_code == 2


def one_line_error(result, *needles):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in needles), result.output


def test_zero_calibration_is_a_one_line_error(tmp_path):
    path = zero_calibration_scenario(tmp_path)
    one_line_error(CliRunner().invoke(qkd, ["--scenario", str(path), "--seconds", "10"]), "a_s")
    one_line_error(CliRunner().invoke(qkd, ["calibrate", "--scenario", str(path), "--emulate", "0"]), "a_s")


def test_unwritable_out_and_bad_losses_are_one_line_errors():
    one_line_error(CliRunner().invoke(qkd, ["--out", "/proc/x", "--seconds", "10"]), "--out /proc/x")
    one_line_error(CliRunner().invoke(qkd, ["--loss-db", "nan", "--seconds", "10"]), "not a finite number")
    one_line_error(CliRunner().invoke(qkd, ["--loss-db", "70", "--seconds", "10"]), "--loss-db")
