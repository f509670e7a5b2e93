"""Every qiot daemon of a run logs at the run's ``[run] log_level`` (`qiot run --verbose`: debug), read
from run.json; its own ``--log-level`` still wins, and standalone it keeps its quiet default."""

import argparse
import subprocess
import sys

import pytest

from harness import runconfig, scenario
from harness.enums import MODES


@pytest.fixture(scope="module")
def run_json(tmp_path_factory):
    """A real run configuration at debug level, with the run's PKI (the relay and KMEs check it)."""
    from harness.keyservices import make_pki

    run_dir = tmp_path_factory.mktemp("run")
    config = runconfig.build(runconfig.overridden(scenario.load("bcn"), log_level="debug"), run_id="bcn-x",
                             run_dir=run_dir, modes=MODES)
    make_pki(config)
    return config.write()


def _relay(args):
    from harness.kme.relay import _from_run_config
    return _from_run_config(argparse.Namespace(role="relay", clock_epoch=None, restarted=False, **args))


def _kme(args):
    from harness.kme.server import _from_run_config
    return _from_run_config(argparse.Namespace(role="kme-bob", **args))


def _platform(args):
    from harness.iotplatform import _from_run_config
    return _from_run_config(argparse.Namespace(role="platform-dkg", **args))


def _qkd_node(args):
    from harness.qkd.node import _from_run_config
    return _from_run_config(argparse.Namespace(role="qkd-alice", clock_epoch=None, connect_timeout=60.0, **args))


def _controller(args):
    from controllers.launch import _from_run_config
    return _from_run_config(argparse.Namespace(role="controller", **args))


DAEMONS = [_relay, _kme, _platform, _qkd_node, _controller]


@pytest.mark.parametrize("daemon", DAEMONS, ids=lambda d: d.__name__.strip("_"))
def test_a_daemon_takes_the_runs_log_level_unless_told_otherwise(run_json, daemon):
    assert daemon({"config": run_json, "log_level": None}).log_level == "debug"
    assert daemon({"config": run_json, "log_level": "error"}).log_level == "error"


def test_the_log_level_is_a_run_setting_with_a_default_and_checked_values(tmp_path):
    bcn = scenario.load("bcn")
    assert bcn.settings.run.log_level == "info"
    config = runconfig.build(runconfig.overridden(bcn, log_level="debug"), run_id="x", run_dir=tmp_path)
    assert runconfig.read(config.write()).run.log_level == "debug"
    with pytest.raises(scenario.ScenarioError, match=r"\[run\] log_level must be one of 'debug', 'info'"):
        bcn.with_overrides({"run.log_level": "chatty"})


def test_daemon_parsers_refuse_an_unknown_level_in_one_line():
    result = subprocess.run([sys.executable, "-m", "harness.devices.fleet", "--log-level", "chatty"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice: 'chatty'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("level, shown, hidden", [("debug", "DEBUG", None), ("info", "INFO", "DEBUG"),
                                                  (None, "WARNING", "INFO")])
def test_configure_logging_sets_the_level_and_the_common_format(level, shown, hidden):
    code = ("import logging; from harness import runconfig; runconfig.configure_logging(%r); "
            "log = logging.getLogger('qiot.test'); log.debug('d'); log.info('i'); log.warning('w')" % level)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f" {shown} qiot.test: " in result.stderr
    if hidden:
        assert f" {hidden} qiot.test: " not in result.stderr
