"""Scenario files: shipped scenarios load, and every kind of bad file is named precisely."""

import pytest

from harness import scenario


def write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = '[scenario]\nname = "mine"\n[fibre]\nlength_km = 10\nloss_db = 5\n'


def test_shipped_scenarios_match_the_paper():
    hpn, bcn = scenario.load("hpn"), scenario.load("bcn")
    assert (hpn.section("fibre")["length_km"], hpn.section("fibre")["loss_db"]) == (8.4, 4.0)
    assert (bcn.section("fibre")["length_km"], bcn.section("fibre")["loss_db"]) == (8.5, 7.0)
    assert bcn.section("fibre")["optical_switch"] and not hpn.section("fibre")["optical_switch"]
    for loaded in (hpn, bcn):
        assert loaded.section("qkd")["refresh_period_s"] == 1800.0
        assert loaded.section("qkd")["buffer_bits"] == 1_000_000
    assert set(scenario.available()) >= {"hpn", "bcn"}


def test_user_file_by_path_gets_defaults(tmp_path):
    loaded = scenario.load(str(write(tmp_path, MINIMAL)))
    assert loaded.name == "mine"
    assert loaded.section("fibre")["loss_db"] == 5.0 and isinstance(loaded.section("fibre")["loss_db"], float)
    assert loaded.section("devices")["mqtt_qos"] == 1


@pytest.mark.parametrize("extra, expected", [
    ("[wireless]\nloss_pct = 150\n", "[wireless] loss_pct must be <= 100"),
    ("[wireless]\ndelay_ms = \"fast\"\n", "[wireless] delay_ms must be a number"),
    ("[devices]\nmqtt_qos = 3\n", "[devices] mqtt_qos must be one of 0, 1, 2"),
    ("[devices]\ncount = true\n", "[devices] count must be an integer"),
    ("[devices]\ncuont = 3\n", "[devices] unknown key 'cuont'"),
    ("[qkd.calibration]\nmodel = \"magic\"\n", "[qkd.calibration] model must be one of"),
    ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
])
def test_bad_values_name_file_and_key(tmp_path, extra, expected):
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load(str(path))
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_missing_required_key_and_broken_toml(tmp_path):
    with pytest.raises(scenario.ScenarioError, match=r"\[fibre\] loss_db is required"):
        scenario.load(str(write(tmp_path, '[scenario]\nname = "x"\n[fibre]\nlength_km = 1\n')))
    with pytest.raises(scenario.ScenarioError, match="not valid TOML"):
        scenario.load(str(write(tmp_path, "[scenario\nname=")))


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(scenario.ScenarioError, match="known: .*bcn.*hpn"):
        scenario.load("atlantis")
    with pytest.raises(scenario.ScenarioError, match="no such scenario file"):
        scenario.load("/nonexistent/x.toml")


def test_overrides_are_validated():
    bcn = scenario.load("bcn")
    assert bcn.with_overrides({"devices.count": 7}).section("devices")["count"] == 7
    assert bcn.section("devices")["count"] == 3  # the original is untouched
    with pytest.raises(scenario.ScenarioError, match=r"\[devices\] count must be >= 1"):
        bcn.with_overrides({"devices.count": 0})
