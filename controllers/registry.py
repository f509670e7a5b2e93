"""The provisioning registry: what the controller knows, decided and promised, persisted atomically.

Pure and thread-safe (the OpenFlow event loop, the probe loop, the key-request thread and the REST
threads all use it); every time is an explicit wall-clock argument, so tests need no clock.

How a source MAC seen on a switch port is told apart (:meth:`Registry.classify`):

- on any switch other than the access switch: ``infra`` (dc, alice, gw are not inventoried and
  devices never reach the optical side at layer 2, because the gateway routes);
- on the access switch, at the pinned gateway port: ``uplink`` (everything behind the gateway);
- an inventoried MAC: ``device`` on the port it was first seen on; on any other port ``spoof``
  (a second station using a device's MAC), dropped;
- an unknown MAC whose packet claims the gateway IP while no gateway is pinned: ``gateway`` (the
  port is pinned as the uplink and persisted; the controller also ARP-probes the gateway IP when
  the access switch connects, so the real gateway answers before any host has run a program);
- an unknown MAC with no IPv4 sender address while no gateway is pinned: ``pending`` (dropped
  without a flow: it may be the gateway's own IPv6 chatter, which must not get it blacklisted);
- any other unknown MAC: ``rogue``: a drop flow at its access port, logged and counted.

The file (``registry.json`` in the state dir) is rewritten atomically on every change, so a
restarted controller resumes with its gateway, device bindings, registrations and key ids.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from controllers.inventory import Inventory, InventoryDevice, normalise_mac

SCHEMA_VERSION = 1
REGISTRY_FILE = "registry.json"
COUNTERS = ("packet_in", "packet_in_access", "devices_discovered", "devices_provisioned", "registrations",
            "rogue_macs", "rogue_packet_ins", "spoof_packet_ins", "pending_packet_ins",
            "uplink_unknown_destination", "rogue_flows_expired", "rogue_packets_dropped",
            "key_requests", "keys_requested", "keys_received", "switch_connects", "controller_starts")


class RegistryError(ValueError):
    """The persisted registry cannot be used (other inventory, unknown schema)."""


@dataclass(frozen=True)
class Verdict:
    """What a packet's source is: ``infra``, ``uplink``, ``device``, ``spoof``, ``gateway``,
    ``pending`` or ``rogue``; ``device`` is set for ``device`` and ``spoof``."""

    kind: str
    device: InventoryDevice | None = None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so a reader (or a crash) never sees a half-written file."""
    write_text_atomic(path, json.dumps(data, indent=1))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Registry:
    """Gateway pin, devices, rogues, switches, discovery, key requests and counters."""

    def __init__(self, inventory: Inventory, state_dir: Path | None, gateway_ip: str,
                 save_interval_s: float = 0.0) -> None:
        self.inventory = inventory
        # Each change rewrites the whole file: with thousands of devices, registering them one by one
        # would write O(N^2) bytes. With an interval, changes within it are written together
        # (flush() writes what is pending; a crash loses at most that interval).
        self.save_interval_s = save_interval_s
        self._dirty = False
        self._last_save = float("-inf")
        self.gateway_ip = gateway_ip
        self.path = Path(state_dir) / REGISTRY_FILE if state_dir is not None else None
        self.lock = threading.RLock()
        self.gateway: dict | None = None          # {"dpid", "port", "mac", "pinned_at"}
        self.devices: dict[str, dict] = {}        # device_id -> record (discovered devices only)
        self.rogues: dict[str, dict] = {}         # MAC -> record
        self.switches: dict[str, dict] = {}       # dpid (hex) -> record, runtime view
        self.discovery: dict = {"expected": len(inventory), "started_at": None, "last_found_at": None,
                                "completed_at": None, "timed_out_at": None, "missing": []}
        # Who is still missing, in inventory order, and how many are provisioned: kept as they change
        # so each packet costs O(1) (a list search and a count of all devices per packet made the
        # controller drop announcements past ~8,000 devices; ``discovery["missing"]`` is filled from
        # this when the registry is read).
        self._missing: dict[str, None] = dict.fromkeys(d.device_id for d in inventory)
        self._provisioned = 0
        self.key_requests: list[dict] = []
        self.key_manager: dict = {"configured": False, "status": "no key manager configured"}
        self.counters = dict.fromkeys(COUNTERS, 0)

    # -- persistence --------------------------------------------------------------------------
    def load(self) -> bool:
        """Resume from the state dir if a registry is there; True if one was loaded."""
        if self.path is None or not self.path.exists():
            return False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise RegistryError(f"{self.path}: 'schema_version' {data.get('schema_version')!r} is not {SCHEMA_VERSION}")
        with self.lock:
            for device_id in data.get("devices", {}):
                if device_id not in self.inventory.by_id:
                    raise RegistryError(f"{self.path}: 'devices' has {device_id!r}, which the inventory lacks")
            self.gateway = data.get("gateway")
            self.devices = data.get("devices", {})
            self.rogues = data.get("rogues", {})
            self.discovery.update(data.get("discovery", {}))
            self._missing = dict.fromkeys(d.device_id for d in self.inventory if d.device_id not in self.devices)
            self._provisioned = sum(1 for r in self.devices.values() if r.get("provisioned_at") is not None)
            self.key_requests = data.get("key_requests", [])
            self.counters.update(data.get("counters", {}))
            for dpid, switch in data.get("switches", {}).items():
                self.switches[dpid] = dict(switch, connected=False)
        return True

    def save(self) -> None:
        """Rewrite the registry file atomically now (no-op without a state dir)."""
        if self.path is None:
            return
        with self.lock:  # serialised once, under the lock; written outside it
            text = json.dumps(self._state())
            self._dirty, self._last_save = False, time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, text)

    def changed(self) -> None:
        """Something changed: save now, or with the next :meth:`flush` if saved less than an interval ago."""
        if time.monotonic() - self._last_save >= self.save_interval_s:
            self.save()
        else:
            self._dirty = True

    def flush(self) -> None:
        """Write pending changes (called every probe interval and at shutdown)."""
        if self._dirty:
            self.save()

    def snapshot(self) -> dict:
        """Everything, as JSON-ready data: the registry file and the REST ``/qiot/state`` view."""
        with self.lock:
            return json.loads(json.dumps(self._state()))

    def _state(self) -> dict:
        """The live objects a snapshot copies (call with the lock held)."""
        self.discovery["missing"] = list(self._missing)
        return {"schema_version": SCHEMA_VERSION, "gateway_ip": self.gateway_ip, "gateway": self.gateway,
                "switches": self.switches, "inventory_size": len(self.inventory), "devices": self.devices,
                "rogues": self.rogues, "discovery": self.discovery, "key_manager": self.key_manager,
                "key_requests": self.key_requests, "counters": self.counters}

    def progress(self) -> dict:
        """Discovery, provisioning and keys in counts: what a poller needs, without copying every
        record (a snapshot of 13,000 devices is megabytes; the testbed polls four times a second)."""
        with self.lock:
            view = {k: v for k, v in self.discovery.items() if k != "missing"}
            view.update(missing=len(self._missing), discovered=len(self.devices), provisioned=self._provisioned,
                        key_ids=sum(1 for r in self.devices.values() if r["key_id"] is not None))
            return view

    # -- classification ------------------------------------------------------------------------
    def classify(self, on_access_switch: bool, dpid: int, port: int, mac: str,
                 sender_ip: str | None) -> Verdict:
        """Decide what the source of a packet is (see the module docstring for the rules)."""
        if not on_access_switch:
            return Verdict("infra")
        mac = normalise_mac(mac)
        with self.lock:
            gateway = self.gateway
            if gateway is not None and gateway["dpid"] == dpid and gateway["port"] == port:
                return Verdict("uplink")
            device = self.inventory.device_for_mac(mac)
            if device is not None:
                record = self.devices.get(device.device_id)
                if record is not None and (record["dpid"], record["port"]) != (dpid, port):
                    return Verdict("spoof", device)
                return Verdict("device", device)
            if gateway is None:
                if sender_ip == self.gateway_ip:
                    return Verdict("gateway")
                if sender_ip is None:
                    return Verdict("pending")
            return Verdict("rogue")

    # -- state changes (each persists) ---------------------------------------------------------
    def count(self, name: str, by: int = 1) -> None:
        """Add to a counter (not persisted by itself: the next state change saves it)."""
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + by

    def pin_gateway(self, dpid: int, port: int, mac: str, now: float) -> bool:
        """Pin the access switch's uplink; False if one is pinned already (first claim wins)."""
        with self.lock:
            if self.gateway is not None:
                return False
            self.gateway = {"dpid": dpid, "port": port, "mac": normalise_mac(mac), "pinned_at": now}
        self.changed()
        return True

    def discover(self, device: InventoryDevice, dpid: int, port: int, now: float) -> bool:
        """Bind a device to the port its first packet came from; True if it is newly discovered."""
        with self.lock:
            if device.device_id in self.devices:
                return False
            self.devices[device.device_id] = dict(device.as_dict(), dpid=dpid, port=port, first_seen=now,
                                                  provisioned_at=None, provisioning_ms=None,
                                                  registered_at=None, key_id=None)
            self.counters["devices_discovered"] += 1
            self._missing.pop(device.device_id, None)
            self.discovery["last_found_at"] = now
        self.changed()
        return True

    def provision(self, device_id: str, now: float) -> bool:
        """Mark flows installed and the device registered with the IoT platform; True the first time."""
        with self.lock:
            record = self.devices[device_id]
            if record["provisioned_at"] is not None:
                return False
            record["provisioned_at"] = now
            record["provisioning_ms"] = round((now - record["first_seen"]) * 1000.0, 3)
            # "Registered with the IoT platform" is this persisted, REST-visible record (issue 3).
            record["registered_at"] = now
            self.counters["devices_provisioned"] += 1
            self._provisioned += 1
            self.counters["registrations"] += 1
            if self.all_provisioned() and self.discovery["completed_at"] is None:
                self.discovery.update(completed_at=now, missing=list(self._missing))
        self.changed()
        return True

    def record_rogue(self, mac: str, dpid: int, port: int, now: float, reason: str) -> bool:
        """Log a rogue sighting; True if the MAC is new (a drop flow should then be installed)."""
        mac = normalise_mac(mac)
        with self.lock:
            self.counters["rogue_packet_ins"] += 1
            record = self.rogues.get(mac)
            if record is None:
                self.rogues[mac] = {"mac": mac, "dpid": dpid, "port": port, "first_seen": now,
                                    "last_seen": now, "packet_ins": 1, "reason": reason}
                self.counters["rogue_macs"] += 1
            else:
                record.update(last_seen=now, port=port, packet_ins=record["packet_ins"] + 1)
        self.changed()
        return record is None

    def switch_connected(self, dpid: int, name: str | None, role: str, ports: list[dict]) -> None:
        """Record a switch that connected and the role its bridge name gave it."""
        with self.lock:
            self.switches[f"{dpid:016x}"] = {"dpid": dpid, "name": name, "role": role, "connected": True,
                                             "ports": ports}
            self.counters["switch_connects"] += 1
        self.changed()

    def switch_disconnected(self, dpid: int) -> None:
        """Mark a switch as no longer connected (its flows stay: fail-mode secure)."""
        with self.lock:
            record = self.switches.get(f"{dpid:016x}")
            if record is not None:
                record["connected"] = False
        self.changed()

    # -- discovery and keys --------------------------------------------------------------------
    def all_provisioned(self) -> bool:
        """True when every inventoried device is provisioned (discovery complete)."""
        with self.lock:
            return len(self.inventory) > 0 and self._provisioned == len(self.inventory)

    def start_discovery(self, now: float) -> bool:
        """Start the discovery clock (once; kept across restarts); True if this call started it."""
        with self.lock:
            started = self.discovery["started_at"] is None
            if started:
                self.discovery["started_at"] = now
        self.changed()
        return started

    def discovery_timed_out(self, now: float, timeout_s: float) -> bool:
        """True (once, and recorded with the missing devices) when discovery has started, is not
        complete, and no new device was found for ``timeout_s``: a window that closes on silence, so
        thousands of devices found at a bounded rate are not cut off by a fixed deadline."""
        with self.lock:
            d = self.discovery
            if d["started_at"] is None or d["completed_at"] is not None or d["timed_out_at"] is not None:
                return False
            if now - max(d["started_at"], d["last_found_at"] or d["started_at"]) < timeout_s:
                return False
            d["timed_out_at"] = now
            d["missing"] = list(self._missing)
        self.changed()
        return True

    def devices_needing_keys(self, include_failed: bool = False) -> list[str]:
        """Provisioned devices without a key id that no earlier request covers; a request that
        failed covers its devices unless ``include_failed``, an interrupted one never does."""
        with self.lock:
            retry = {"interrupted", "failed"} if include_failed else {"interrupted"}
            asked = {d for r in self.key_requests for d in r["devices"] if r["status"] not in retry}
            return [d.device_id for d in self.inventory
                    if self.devices.get(d.device_id, {}).get("provisioned_at") is not None
                    and self.devices[d.device_id]["key_id"] is None and d.device_id not in asked]

    def begin_key_request(self, device_ids: list[str], now: float, url: str | None) -> int:
        """Record a key request for ``device_ids``; return its index for :meth:`finish_key_request`."""
        with self.lock:
            self.key_requests.append({"requested_at": now, "devices": list(device_ids), "url": url,
                                      "status": "in progress", "attempts": 0, "completed_at": None,
                                      "duration_ms": None, "keys_received": 0, "missing": [], "error": None,
                                      "discovery_missing": list(self._missing)})
            self.counters["key_requests"] += 1
            self.counters["keys_requested"] += len(device_ids)
            index = len(self.key_requests) - 1
        self.changed()
        return index

    def finish_key_request(self, index: int, now: float, keys: dict[str, str] | None, attempts: int,
                           error: str | None = None) -> None:
        """Record the outcome and hand each device its key id."""
        with self.lock:
            request = self.key_requests[index]
            request.update(attempts=attempts, completed_at=now, error=error,
                           duration_ms=round((now - request["requested_at"]) * 1000.0, 3))
            if keys is None:
                request["status"] = "failed"
            else:
                for device_id in request["devices"]:
                    if device_id in keys:
                        self.devices[device_id]["key_id"] = keys[device_id]
                request["keys_received"] = sum(1 for d in request["devices"] if d in keys)
                request["missing"] = [d for d in request["devices"] if d not in keys]
                request["status"] = "completed" if not request["missing"] else "partial"
                self.counters["keys_received"] += request["keys_received"]
        self.changed()

    def set_key_manager(self, description: dict) -> None:
        """Record which key manager is configured (also what a restart rebuilds it from)."""
        with self.lock:
            self.key_manager = dict(description)
        self.changed()
