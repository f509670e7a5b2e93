"""The emulator's settings (experiments/emulator.toml) and the --devices limit derived from them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.emulator import (EMULATOR_FILE, DeviceLimit, MemorySettings, access_switch_settings, device_limit,
                              fleet_settings, mem_total_kib, memory_settings)
from harness.settings import SettingsError
from topologies.fig1 import MAX_DEVICES, device_ip


def test_the_shipped_settings_load_with_measured_values():
    assert access_switch_settings().max_ports >= 1
    assert fleet_settings().max_workers >= 1
    memory = memory_settings()
    assert 10.0 <= memory.per_device_kib <= 100_000.0
    assert "measured" in EMULATOR_FILE.read_text() or "MemAvailable" in EMULATOR_FILE.read_text()


def test_memory_bounds_the_limit_when_it_is_smaller_than_the_address_plan():
    settings = MemorySettings(per_device_kib=500.0, reserve_mib=1024.0)
    limit = device_limit(MAX_DEVICES, settings, total_kib=4 * 1024 * 1024)  # a 4 GiB machine
    assert limit.devices == (3 * 1024 * 1024) // 500
    assert "500 KiB per device" in limit.reason
    limit.check(limit.devices)
    with pytest.raises(SettingsError, match=rf"at most {limit.devices} "):
        limit.check(limit.devices + 1)


def test_the_address_plan_bounds_the_limit_on_a_big_machine():
    settings = MemorySettings(per_device_kib=1.0, reserve_mib=0.0)
    limit = device_limit(MAX_DEVICES, settings, total_kib=10**9)
    assert limit.devices == MAX_DEVICES
    assert "addresses" in limit.reason
    assert device_ip(MAX_DEVICES) == "10.1.254.255"  # the last device stays below the rogues' /24


def test_a_machine_smaller_than_the_reserve_still_allows_one_device():
    assert device_limit(MAX_DEVICES, MemorySettings(per_device_kib=400.0, reserve_mib=8192.0),
                        total_kib=1024 * 1024).devices == 1


def test_the_limit_reads_this_machines_memory():
    assert mem_total_kib() > 100 * 1024
    assert isinstance(device_limit(MAX_DEVICES), DeviceLimit)


def test_qiot_run_states_the_limit_in_help_and_refuses_more_devices_in_one_line():
    limit = device_limit(MAX_DEVICES)
    shown = CliRunner().invoke(cli, ["run", "--help"])
    assert shown.exit_code == 0
    assert f"At most {limit.devices} on this machine" in " ".join(shown.output.split())
    refused = CliRunner().invoke(cli, ["run", "--devices", str(limit.devices + 1), "--hours", "0.01"])
    assert refused.exit_code == 2
    assert f"at most {limit.devices}" in refused.output
    assert "Traceback" not in refused.output
