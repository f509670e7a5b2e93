"""Provisioning registry: classification of sources, provisioning records, key requests, persistence."""

import json

import pytest

from controllers.inventory import Inventory, InventoryError
from controllers.registry import REGISTRY_FILE, Registry, RegistryError

GATEWAY_IP = "10.1.0.1"
ACCESS, INFRA = 4, 3


def inventory(n=3) -> Inventory:
    return Inventory.from_dict({"devices": [
        {"device_id": f"d{i}", "mac": f"02:51:0A:00:00:{i:02X}", "ip": f"10.1.0.{9 + i}",
         "credentials": f"pki/sae/d{i}.crt"} for i in range(1, n + 1)]})


def provisioned_registry(tmp_path, n=3) -> Registry:
    reg = Registry(inventory(n), tmp_path, GATEWAY_IP)
    reg.start_discovery(100.0)
    reg.pin_gateway(ACCESS, 1, "aa:bb:cc:00:00:01", 100.5)
    for i, device in enumerate(reg.inventory, start=2):
        reg.discover(device, ACCESS, i, 101.0)
        reg.provision(device.device_id, 101.25)
    return reg


def test_inventory_rejects_a_bad_mac_and_names_the_entry():
    data = {"devices": [{"device_id": "d1", "mac": "02:51:0a:00:00", "ip": "10.1.0.10", "credentials": "x"}]}
    with pytest.raises(InventoryError, match=r"devices\[0\]: 'mac'"):
        Inventory.from_dict(data)
    data["devices"][0]["mac"] = "02:51:0a:00:00:01"
    data["devices"].append(dict(data["devices"][0], device_id="d2"))
    with pytest.raises(InventoryError, match=r"devices\[1\]: 'mac' 02:51:0a:00:00:01 appears twice"):
        Inventory.from_dict(data)


def test_inventory_normalises_macs_to_lower_case():
    assert inventory().device_for_mac("02:51:0A:00:00:02").device_id == "d2"


def test_classification_rules(tmp_path):
    reg = Registry(inventory(), tmp_path, GATEWAY_IP)
    assert reg.classify(False, INFRA, 7, "aa:aa:aa:aa:aa:aa", None).kind == "infra"
    # Before the gateway is pinned: a silent unknown MAC is only pending, the gateway IP pins.
    assert reg.classify(True, ACCESS, 9, "aa:aa:aa:aa:aa:aa", None).kind == "pending"
    assert reg.classify(True, ACCESS, 9, "aa:aa:aa:aa:aa:aa", "10.1.255.1").kind == "rogue"
    assert reg.classify(True, ACCESS, 1, "aa:bb:cc:00:00:01", GATEWAY_IP).kind == "gateway"
    assert reg.pin_gateway(ACCESS, 1, "aa:bb:cc:00:00:01", 1.0)
    assert not reg.pin_gateway(ACCESS, 9, "aa:aa:aa:aa:aa:aa", 2.0)  # first claim wins
    assert reg.classify(True, ACCESS, 1, "aa:bb:cc:00:00:01", None).kind == "uplink"
    # Once pinned, another station claiming the gateway IP is a rogue.
    assert reg.classify(True, ACCESS, 9, "aa:aa:aa:aa:aa:aa", GATEWAY_IP).kind == "rogue"
    verdict = reg.classify(True, ACCESS, 2, "02:51:0a:00:00:01", "10.1.0.10")
    assert (verdict.kind, verdict.device.device_id) == ("device", "d1")
    reg.discover(verdict.device, ACCESS, 2, 3.0)
    assert reg.classify(True, ACCESS, 2, "02:51:0a:00:00:01", None).kind == "device"
    assert reg.classify(True, ACCESS, 5, "02:51:0a:00:00:01", None).kind == "spoof"


def test_provisioning_records_time_registration_and_completion(tmp_path):
    reg = provisioned_registry(tmp_path)
    record = reg.devices["d2"]
    assert record["port"] == 3 and record["provisioning_ms"] == pytest.approx(250.0)
    assert record["registered_at"] == 101.25
    assert reg.all_provisioned() and reg.discovery["completed_at"] == 101.25 and reg.discovery["missing"] == []
    assert not reg.provision("d2", 200.0)  # registering twice does not count twice
    assert reg.counters["registrations"] == 3


def test_discovery_timeout_reports_the_missing_devices_once(tmp_path):
    reg = Registry(inventory(3), tmp_path, GATEWAY_IP)
    assert reg.start_discovery(10.0) and not reg.start_discovery(30.0)  # started once
    reg.pin_gateway(ACCESS, 1, "aa:bb:cc:00:00:01", 10.0)
    reg.discover(reg.inventory.by_id["d1"], ACCESS, 2, 11.0)
    reg.provision("d1", 11.0)
    # The window counts from the last device found (11.0), not from the start (10.0).
    assert not reg.discovery_timed_out(70.9, 60.0)
    assert reg.discovery_timed_out(71.0, 60.0)
    assert not reg.discovery_timed_out(80.0, 60.0)
    assert reg.discovery["missing"] == ["d2", "d3"]
    assert reg.devices_needing_keys() == ["d1"]


def test_discovery_window_stays_open_while_devices_keep_arriving(tmp_path):
    reg = Registry(inventory(3), tmp_path, GATEWAY_IP)
    reg.start_discovery(0.0)
    for t, device in ((50.0, "d3"), (100.0, "d1")):  # out of inventory order, 50 s apart
        assert not reg.discovery_timed_out(t, 60.0)
        reg.discover(reg.inventory.by_id[device], ACCESS, 2, t)
    assert not reg.discovery_timed_out(159.9, 60.0) and reg.discovery_timed_out(160.0, 60.0)
    assert reg.discovery["missing"] == ["d2"]
    progress = reg.progress()
    assert (progress["missing"], progress["discovered"], progress["provisioned"], progress["key_ids"]) == (1, 2, 0, 0)
    assert progress["last_found_at"] == 100.0 and progress["timed_out_at"] == 160.0


def test_discovery_never_times_out_before_it_starts(tmp_path):
    reg = Registry(inventory(2), tmp_path, GATEWAY_IP)
    assert not reg.discovery_timed_out(1e9, 60.0)  # waiting for the testbed's signal
    reg.discover(reg.inventory.by_id["d1"], ACCESS, 2, 5.0)  # an early announcement
    reg.start_discovery(100.0)
    assert not reg.discovery_timed_out(159.9, 60.0) and reg.discovery_timed_out(160.0, 60.0)


def test_key_request_hands_out_key_ids_and_counts(tmp_path):
    reg = provisioned_registry(tmp_path)
    devices = reg.devices_needing_keys()
    assert devices == ["d1", "d2", "d3"]
    index = reg.begin_key_request(devices, 200.0, "http://km/keys")
    assert reg.devices_needing_keys() == []  # asked already, even while in progress
    reg.finish_key_request(index, 200.5, {"d1": "k1", "d3": "k3"}, attempts=2)
    request = reg.key_requests[0]
    assert (request["status"], request["missing"], request["keys_received"]) == ("partial", ["d2"], 2)
    assert request["duration_ms"] == pytest.approx(500.0)
    assert reg.devices["d1"]["key_id"] == "k1" and reg.devices["d2"]["key_id"] is None
    assert (reg.counters["key_requests"], reg.counters["keys_requested"], reg.counters["keys_received"]) == (1, 3, 2)


def test_failed_request_is_repeated_only_when_asked(tmp_path):
    reg = provisioned_registry(tmp_path, n=2)
    index = reg.begin_key_request(["d1", "d2"], 1.0, "u")
    reg.finish_key_request(index, 2.0, None, attempts=5, error="unreachable")
    assert reg.key_requests[0]["status"] == "failed"
    assert reg.devices_needing_keys() == []
    assert reg.devices_needing_keys(include_failed=True) == ["d1", "d2"]


def test_registry_survives_a_restart(tmp_path):
    reg = provisioned_registry(tmp_path)
    reg.record_rogue("02:66:0B:00:00:01", ACCESS, 5, 102.0, "not in the inventory")
    reg.record_rogue("02:66:0b:00:00:01", ACCESS, 5, 103.0, "not in the inventory")
    reg.switch_connected(ACCESS, "qap4", "access", [])
    data = json.loads((tmp_path / REGISTRY_FILE).read_text())
    assert data["rogues"]["02:66:0b:00:00:01"]["packet_ins"] == 2
    resumed = Registry(inventory(), tmp_path, GATEWAY_IP)
    assert resumed.load()
    assert resumed.gateway == reg.gateway and resumed.devices == reg.devices
    assert resumed.counters["registrations"] == 3 and resumed.counters["rogue_macs"] == 1
    assert resumed.switches[f"{ACCESS:016x}"]["connected"] is False  # a new process has no connections
    assert resumed.classify(True, ACCESS, 6, "02:51:0a:00:00:01", None).kind == "spoof"
    assert resumed.all_provisioned() and resumed.progress()["provisioned"] == 3  # counts rebuilt


def test_a_resumed_registry_still_knows_who_is_missing(tmp_path):
    reg = Registry(inventory(3), tmp_path, GATEWAY_IP)
    reg.start_discovery(0.0)
    reg.discover(reg.inventory.by_id["d2"], ACCESS, 2, 1.0)
    reg.provision("d2", 1.0)
    reg.save()
    resumed = Registry(inventory(3), tmp_path, GATEWAY_IP)
    assert resumed.load() and not resumed.all_provisioned()
    assert resumed.snapshot()["discovery"]["missing"] == ["d1", "d3"]
    assert resumed.progress()["provisioned"] == 1


def test_registry_of_another_inventory_is_refused(tmp_path):
    provisioned_registry(tmp_path, n=3)
    with pytest.raises(RegistryError, match="'d3'"):
        Registry(inventory(2), tmp_path, GATEWAY_IP).load()


def test_a_damaged_registry_file_is_a_clear_error(tmp_path):
    (tmp_path / REGISTRY_FILE).write_text('{"schema_version": 1, "devices": ')
    with pytest.raises(RegistryError, match="not valid JSON"):
        Registry(inventory(), tmp_path, GATEWAY_IP).load()
