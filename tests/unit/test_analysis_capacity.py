"""qiot capacity (Fig. 2d): keys per 30 min and key-buffer fill time versus optical loss."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.analysis.capacity import capacity_table, paper_points_table, parse_loss_values
from harness.analysis.cli import capacity
from harness.scenario import load
from tests.support.scenarios import zero_calibration_scenario


def test_paper_points_from_the_calibrated_model():
    qkd = load("hpn").section("qkd")
    table = capacity_table(qkd, [4.0, 7.0]).set_index("loss_db")
    # reference.md §1: 1880 bit/s -> 13,219 keys per 1800 s and 532 s to fill 1 Mbit
    assert round(table.loc[4.0, "keys_per_refresh"]) == 13219
    assert round(table.loc[4.0, "buffer_fill_s"]) == 532
    assert round(table.loc[7.0, "keys_per_refresh"]) == 8578
    assert round(table.loc[7.0, "buffer_fill_s"]) == 820
    assert table.loc[4.0, "buffer_keys"] == 3906
    points = paper_points_table(qkd)
    assert points.paper_keys_per_refresh.round().tolist() == [13219, 8578]
    assert points.paper_buffer_fill_s.round().tolist() == [532, 820]
    assert points.residual_pct.abs().max() < 0.01


def test_capacity_falls_with_loss_and_rate_is_pluggable():
    qkd = load("bcn").section("qkd")
    table = capacity_table(qkd, parse_loss_values(["0:14:2"]))
    assert table.loss_db.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    assert table.keys_per_refresh.is_monotonic_decreasing and table.buffer_fill_s.is_monotonic_increasing
    flat = capacity_table(qkd, [3.0], rate=lambda loss, cal: 256.0)
    assert flat.keys_per_refresh[0] == pytest.approx(1800.0) and flat.devices_per_refresh[0] == 1800
    with pytest.raises(ValueError):
        parse_loss_values(["1:0:1"])
    with pytest.raises(ValueError):
        parse_loss_values(["-3"])


def test_capacity_cli(tmp_path):
    runner = CliRunner()
    table = runner.invoke(capacity, ["--scenario", "hpn", "--loss-db", "4,7"])
    assert table.exit_code == 0 and "13,219 keys, 532 s" in table.output and "8,578 keys, 820 s" in table.output
    stem = tmp_path / "fig2d"
    as_json = runner.invoke(capacity, ["--scenario", "bcn", "--format", "json", "--plot", str(stem)])
    assert as_json.exit_code == 0
    assert (tmp_path / "fig2d.png").stat().st_size > 1000 and (tmp_path / "fig2d.pdf").is_file()
    payload = json.loads(as_json.stdout)
    assert payload["scenario"] == "bcn" and len(payload["curve"]) == 31
    bad = runner.invoke(capacity, ["--scenario", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown scenario")
    bad_loss = runner.invoke(capacity, ["--scenario", "hpn", "--loss-db", "abc"])
    assert bad_loss.exit_code == 1 and "Traceback" not in bad_loss.output


@pytest.mark.parametrize("loss,needle", [
    ("", "no loss value given"),
    ("0:1e9:0.001", "more than 10,000 values"),
    ("nan", "finite number"),
    ("inf", "finite number"),
    ("-inf", "finite number"),
    ("70", "within 0..60 dB"),
    ("50:70:5", "within 0..60 dB"),
    ("1:2:3:4", "start:stop:step"),
])
def test_bad_loss_values_are_one_line_errors(loss, needle):
    result = CliRunner().invoke(capacity, ["--scenario", "hpn", "--loss-db", loss])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ") and needle in result.output


def test_loss_cap_is_the_scenarios_and_a_full_grid_is_fine():
    from harness.analysis.capacity import MAX_LOSS_VALUES, max_loss_db
    from harness.scenario import ScenarioError
    assert max_loss_db() == 60.0
    with pytest.raises(ScenarioError, match="must be <= 60"):  # the bound is the scenarios' own
        load("hpn").with_overrides({"fibre.loss_db": max_loss_db() + 1})
    assert len(parse_loss_values(["0:60:0.01"])) == 6001 <= MAX_LOSS_VALUES


def test_zero_calibration_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(capacity, ["--scenario", str(zero_calibration_scenario(tmp_path))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and "a_s" in result.output and result.output.count("\n") == 1
