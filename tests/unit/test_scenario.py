"""Scenario files: shipped scenarios load, and every kind of bad file is named precisely."""

import pytest

from harness import scenario


def write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# What a scenario must state itself (figures of the literature or assumptions have no default in code).
REQUIRED = ('[wireless]\ndelay_ms = 5\nrate_mbit = 11\n[devices]\nwake_period_s = 60\npublish_timeout_s = 5\n'
            'energy_profile = "fipy"\n[run]\nhours = 1\n')
MINIMAL = ('[scenario]\nname = "mine"\n[fibre]\nlength_km = 10\nloss_db = 5\npropagation_us_per_km = 4.9\n'
           'classical_rate_mbit = 1000\n' + REQUIRED)


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
    path = write(tmp_path, _merge(MINIMAL, extra))
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load(str(path))
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def _merge(base: str, extra: str) -> str:
    """``base`` with ``extra``'s keys added to (or replacing) its tables: TOML forbids a table twice."""
    import tomllib

    def dump(value):
        return str(value).lower() if isinstance(value, bool) else repr(value).replace("'", '"')

    merged = tomllib.loads(base)
    for section, table in tomllib.loads(extra).items():
        target = merged.setdefault(section, {})
        for key, value in table.items():
            if isinstance(value, dict):
                target.setdefault(key, {}).update(value)
            else:
                target[key] = value
    lines = []
    for section, table in merged.items():
        lines.append(f"[{section}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines += [f"{k} = {dump(v)}" for k, v in table.items() if k not in subtables]
        for name, sub in subtables.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{k} = {dump(v)}" for k, v in sub.items()]
    return "\n".join(lines) + "\n"


def test_missing_required_key_and_broken_toml(tmp_path):
    with pytest.raises(scenario.ScenarioError, match=r"\[fibre\] loss_db is required"):
        scenario.load(str(write(tmp_path, MINIMAL.replace("loss_db = 5\n", ""))))
    with pytest.raises(scenario.ScenarioError, match=r"\[fibre\] propagation_us_per_km is required"):
        scenario.load(str(write(tmp_path, MINIMAL.replace("propagation_us_per_km = 4.9\n", ""))))
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
    # A derived value follows its source: the QKD link's loss is the fibre's.
    assert bcn.with_overrides({"fibre.loss_db": 9.5}).settings.qkd.loss_db == 9.5


def test_unknown_energy_profile_is_refused_at_load(tmp_path):
    path = write(tmp_path, MINIMAL.replace('energy_profile = "fipy"', 'energy_profile = "nosuch"'))
    with pytest.raises(scenario.ScenarioError, match=r"\[devices\] energy_profile: unknown device profile 'nosuch'"):
        scenario.load(str(path))


def test_fault_schedule_is_validated(tmp_path):
    good = MINIMAL + '[[faults]]\nkind = "fibre_cut"\nat_s = 600\nduration_s = 600\n'
    loaded = scenario.load(str(write(tmp_path, good)))
    assert [(f.kind, f.at_s, f.end_s) for f in loaded.settings.faults] == [("fibre_cut", 600.0, 1200.0)]
    for bad, expected in (('kind = "meteor"', "kind must be one of"), ('kind = "kme_restart"\ntarget = "carol"',
                                                                      "kme_restart target must be one of")):
        text = MINIMAL + f'[[faults]]\n{bad}\nat_s = 1\nduration_s = 2\n'
        with pytest.raises(scenario.ScenarioError, match=expected):
            scenario.load(str(write(tmp_path, text, "bad.toml")))
