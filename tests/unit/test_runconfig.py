"""The run configuration: built once from the scenario, written to run.json, read back by daemons."""

import json

import pytest

from harness import runconfig, scenario
from harness.faults import parse_fault


def test_round_trip_through_run_json_keeps_every_part(tmp_path):
    bcn = runconfig.overridden(scenario.load("bcn"), hours=2, devices=5, time_scale=60,
                               faults=(parse_fault("fibre_cut@600+300"),))
    config = runconfig.build(bcn, run_id="bcn-x", run_dir=tmp_path, modes=("dkg", "qkd"))
    assert runconfig.read(config.write()) == config
    assert config.site.device_names() == ["d1", "d2", "d3", "d4", "d5"] and config.site.optical_switch
    assert config.qkd.loss_db == config.fibre.loss_db == 7.0  # derived once, from [fibre]
    assert config.duration_s == 7200.0 and config.run.time_scale == 60.0
    assert [f.label() for f in config.faults] == ["fibre_cut@600+300"]
    assert config.modes == ("dkg", "qkd") and config.controller.openflow != config.controller.rest


def test_bad_or_foreign_run_json_is_refused_in_one_line(tmp_path):
    config = runconfig.build(scenario.load("hpn"), run_id="hpn-x", run_dir=tmp_path)
    path = config.write()
    table = json.loads(path.read_text())
    table["version"] = 99
    path.write_text(json.dumps(table))
    with pytest.raises(runconfig.RunConfigError, match="version 99, this qiot reads version 1"):
        runconfig.read(path)
    table["version"] = 1
    table["devices"]["count"] = 7  # disagrees with the site
    path.write_text(json.dumps(table))
    with pytest.raises(runconfig.RunConfigError, match="site.devices and devices.count disagree"):
        runconfig.read(path)
    with pytest.raises(runconfig.RunConfigError, match="cannot read"):
        runconfig.read(tmp_path / "missing.json")


@pytest.mark.parametrize("hours, preferred, expected", [(24, 3600, 3600), (1, 3600, 300), (2, 3600, 600),
                                                        (0.1, 3600, 30), (0.001, 3600, 1.0), (6, 900, 900)])
def test_short_runs_get_an_energy_interval_with_a_dozen_rows(hours, preferred, expected):
    assert runconfig.suited_energy_interval(hours * 3600, preferred) == expected
