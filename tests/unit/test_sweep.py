"""`qiot sweep`: what-if sweeps and solves of QKD vs DKG energy on the pure simulation, and its errors."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from harness import scenario
from harness.sweep import COMMAND, METRIC_COLUMNS, SweepError, evaluate, parse_set, parse_value, solve, sweep

HOURS = 2.0


def invoke(*args):
    return CliRunner().invoke(COMMAND, ["--hours", str(HOURS), *args])


def test_values_are_read_as_toml_would():
    assert parse_value("60") == 60 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("tls_full") == "tls_full" and parse_value(" fipy-micropython ") == "fipy-micropython"
    assert parse_set("devices.wake_period_s=30, 60,120") == ("devices.wake_period_s", (30, 60, 120))
    for bad in ("wake_period_s=30", "devices.wake_period_s", "devices.wake_period_s=", "devices.x=,"):
        with pytest.raises(SweepError):
            parse_set(bad)


def test_the_rdc_change_grows_with_the_wake_period_and_qkd_stays_below_dkg():
    rows = sweep(scenario.load("bcn"), [("devices.wake_period_s", (30, 60, 120, 300))], HOURS)
    assert [row["value"] for row in rows] == [30, 60, 120, 300]
    changes = [row["rdc_change_pct"] for row in rows]
    assert all(change < 0 for change in changes)
    assert all(abs(a) < abs(b) for a, b in zip(changes, changes[1:]))
    for row in rows:
        assert row["rdc_change_pct"] == pytest.approx(100 * (row["rdc_qkd_pct"] / row["rdc_dkg_pct"] - 1))
        assert row["battery_change_pct"] == pytest.approx(
            100 * (row["battery_qkd_days"] / row["battery_dkg_days"] - 1))


def test_a_grid_varies_both_keys_and_a_dkg_only_key_leaves_qkd_alone():
    rows = sweep(scenario.load("bcn"), [("devices.wake_period_s", (60, 120)),
                                        ("profile.dkg.ecc", ("micropython_affine", "micropython_jacobian"))], HOURS)
    assert [(r["value"], r["value2"]) for r in rows] == [(60, "micropython_affine"), (60, "micropython_jacobian"),
                                                        (120, "micropython_affine"), (120, "micropython_jacobian")]
    assert rows[0]["rdc_qkd_pct"] == rows[1]["rdc_qkd_pct"]
    assert rows[0]["rdc_dkg_pct"] > rows[1]["rdc_dkg_pct"]  # affine ECC is slower than Jacobian


def test_a_grid_point_the_device_cannot_do_is_skipped_and_said():
    skipped = []
    rows = sweep(scenario.load("bcn"), [("devices.energy_profile", ("fipy-micropython", "fipy")),
                                        ("kme.wireless_transport", ("tls_resume",))], HOURS,
                 on_skip=lambda row, reason: skipped.append((row["value"], reason)))
    assert rows[0]["rdc_change_pct"] is None and rows[1]["rdc_change_pct"] is not None
    assert [value for value, _ in skipped] == ["fipy-micropython"]
    assert "cannot resume a TLS session" in skipped[0][1]
    result = invoke("--set", "devices.energy_profile=fipy-micropython,fipy", "--set", "kme.wireless_transport=tls_resume")
    assert result.exit_code == 0 and "n/a" in result.output and "warning: skipped fipy-micropython" in result.output


def test_a_solved_value_swept_again_lands_on_its_target():
    base = scenario.load("bcn")
    for key, metric, target in (("devices.wake_period_s", "rdc_change_pct", -18.0),
                                ("profile.dkg.ecc_s", "battery_change_pct", 18.0)):
        found = solve(base, key, metric, target, HOURS)
        assert found.value is not None and found.low < found.value < found.high and found.jump is None
        again = evaluate(base, {key: found.value}, HOURS)
        assert getattr(again, metric) == pytest.approx(target, abs=1.0)
    # The same through the command line, as one row.
    result = invoke("--solve", "devices.wake_period_s", "--target-rdc-change", "-18", "--format", "csv")
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.output))
    assert set(row) == {"value", "rdc_change_pct", "battery_change_pct"}
    assert float(row["rdc_change_pct"]) == pytest.approx(-18.0, abs=1.0)


def test_a_target_inside_a_step_of_the_figures_is_said():
    # At a 900 s wake period the 30 min key refresh moves from every third wake to every second one.
    found = solve(scenario.load("bcn"), "devices.wake_period_s", "rdc_change_pct", -65.0, 6.0, between=(600, 1200))
    assert found.value == pytest.approx(900.0, rel=1e-3)
    below, above = found.jump
    assert below > -65.0 > above and below - above > 2.0
    result = CliRunner().invoke(COMMAND, ["--hours", "6", "--solve", "devices.wake_period_s", "--target-rdc-change",
                                          "-65", "--between", "600,1200"])
    assert result.exit_code == 0 and "warning: no value reaches rdc_change_pct -65 %: it steps from" in result.output


def test_a_solve_can_hold_other_settings_fixed():
    fixed = {"devices.energy_profile": "fipy", "kme.wireless_transport": "psk_wrap"}
    found = solve(scenario.load("bcn"), "devices.wake_period_s", "rdc_change_pct", -18.0, HOURS, fixed=fixed)
    plain = solve(scenario.load("bcn"), "devices.wake_period_s", "rdc_change_pct", -18.0, HOURS)
    # wolfCrypt's 0.5 s DKG key against a key wrap: the same change needs far fewer wakes per refresh.
    assert found.value > 3 * plain.value


def test_an_unreachable_target_is_said_in_one_line():
    result = invoke("--solve", "profile.dkg.ecc_s", "--target-rdc-change", "-18", "--between", "0.01,0.02")
    assert result.exit_code != 0
    assert "out of reach" in result.output and "[0.01, 0.02]" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_formats_carry_the_specified_columns(tmp_path):
    columns = ["value", *METRIC_COLUMNS]
    result = invoke("--set", "devices.wake_period_s=60,120", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == columns and len(rows) == 2
    result = invoke("--set", "devices.wake_period_s=60", "--format", "json")
    data = json.loads(result.output)
    assert data["scenario"] == "bcn" and data["keys"] == ["devices.wake_period_s"] and data["hours"] == HOURS
    assert list(data["rows"][0]) == columns
    table = invoke("--set", "kme.wireless_transport=tls_full,psk_wrap").output.splitlines()
    assert table[0].startswith("# scenario bcn") and "value = kme.wireless_transport" in table[0]
    assert table[1].split() == columns and len(table) == 4
    plot = tmp_path / "sweep.png"
    result = invoke("--set", "devices.wake_period_s=60,120", "--set", "kme.wireless_transport=tls_full,psk_wrap",
                    "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--set", "devices.wake_perio=30"], "unknown setting 'devices.wake_perio'"),
    (["--set", "devices.wake_period_s=-5"], "wake_period_s must be >= 0.1"),
    (["--set", "profile.dkg.ecc=rsa"], "[dkg] ecc must be one of"),
    (["--set", "profile.ecc.micropython_affine.ecdh_p256_s=fast"], "ecdh_p256_s must be a number"),
    (["--set", "kme.wireless_transport=tls_resume"], "cannot resume a TLS session"),
    (["--set", "devices.dkg_curve=x25519"], "cannot do x25519_keygen"),
    (["--set", "a.b=1", "--set", "c.d=1", "--set", "e.f=1"], "at most 2 --set keys"),
    (["--set", "devices.wake_period_s=30", "--set", "devices.wake_period_s=60"], "given twice"),
    ([], "nothing to sweep"),
    (["--set", "devices.wake_period_s=30", "--target-rdc-change", "-18"], "need --solve"),
    (["--solve", "devices.wake_period_s"], "exactly one of --target-rdc-change"),
    (["--solve", "kme.wireless_transport", "--target-rdc-change", "-18"], "needs a real-valued setting"),
    (["--solve", "devices.count", "--target-rdc-change", "-18"], "needs a real-valued setting"),
    (["--solve", "devices.nosuch", "--target-rdc-change", "-18"], "unknown setting"),
    (["--solve", "devices.wake_period_s", "--target-rdc-change", "-18", "--set", "devices.count=1,2"],
     "each --set takes one value"),
    (["--solve", "devices.wake_period_s", "--target-rdc-change", "-18", "--between", "9"], "expected LO,HI"),
    (["--solve", "devices.wake_period_s", "--target-rdc-change", "-18", "--between", "9,3"], "0 < LO < HI"),
    (["--solve", "devices.wake_period_s", "--target-rdc-change", "-18", "--plot", "x.png"], "not a --solve"),
    (["--solve", "profile.battery.self_discharge_ua", "--target-rdc-change", "-18"], "give the range"),
    (["--set", "profile.dkg.ecc_s=fast"], "profile.dkg.ecc_s must be a number"),
    (["--scenario", "nosuch", "--set", "devices.wake_period_s=30"], "unknown scenario 'nosuch'"),
])
def test_bad_input_is_one_line_without_traceback(args, message):
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
