"""The device inventory the provisioning controller recognises devices by: MAC is the key.

The run writes ``config/inventory.json``: ``{"devices": [{"device_id", "mac", "ip", "credentials"}]}``.
Loading validates it fully, because a typo here would silently turn a device into a "rogue".
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
REQUIRED_FIELDS = ("device_id", "mac", "ip", "credentials")


class InventoryError(ValueError):
    """The inventory file is missing, malformed, or names a field or value wrongly."""


def normalise_mac(mac: str) -> str:
    """Lower-case colon-separated form, the form os-ken reports MACs in."""
    return mac.strip().lower().replace("-", ":")


@dataclass(frozen=True)
class InventoryDevice:
    """One expected device: id, MAC (the provisioning key), IP and where its credentials are."""

    device_id: str
    mac: str
    ip: str
    credentials: str

    def as_dict(self) -> dict:
        """The inventory entry as JSON-ready data."""
        return asdict(self)


class Inventory:
    """Devices by id and by MAC; iteration follows the file's order."""

    def __init__(self, devices: list[InventoryDevice]) -> None:
        self.devices = list(devices)
        self.by_mac = {d.mac: d for d in self.devices}
        self.by_id = {d.device_id: d for d in self.devices}

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self):
        return iter(self.devices)

    def device_for_mac(self, mac: str) -> InventoryDevice | None:
        """The device with this MAC (any case), or None for a MAC the inventory does not list."""
        return self.by_mac.get(normalise_mac(mac))

    @classmethod
    def from_dict(cls, data: dict, source: str = "inventory") -> "Inventory":
        """Validate and build; raise :class:`InventoryError` naming the offending entry and key."""
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
            raise InventoryError(f"{source}: expected an object with a 'devices' list")
        devices: list[InventoryDevice] = []
        seen_ids: set[str] = set()
        seen_macs: set[str] = set()
        for n, entry in enumerate(data["devices"]):
            where = f"{source}: devices[{n}]"
            if not isinstance(entry, dict):
                raise InventoryError(f"{where}: expected an object")
            for key in REQUIRED_FIELDS:
                if not isinstance(entry.get(key), str) or not entry[key].strip():
                    raise InventoryError(f"{where}: '{key}' missing or not a non-empty string")
            mac = normalise_mac(entry["mac"])
            if not _MAC.match(mac):
                raise InventoryError(f"{where}: 'mac' {entry['mac']!r} is not a MAC address")
            if int(mac[:2], 16) & 1:
                raise InventoryError(f"{where}: 'mac' {mac} is a multicast address")
            try:
                ipaddress.IPv4Address(entry["ip"])
            except ValueError:
                raise InventoryError(f"{where}: 'ip' {entry['ip']!r} is not an IPv4 address") from None
            if entry["device_id"] in seen_ids:
                raise InventoryError(f"{where}: 'device_id' {entry['device_id']!r} appears twice")
            if mac in seen_macs:
                raise InventoryError(f"{where}: 'mac' {mac} appears twice")
            seen_ids.add(entry["device_id"])
            seen_macs.add(mac)
            devices.append(InventoryDevice(entry["device_id"], mac, entry["ip"], entry["credentials"]))
        return cls(devices)

    @classmethod
    def load(cls, path: str | Path) -> "Inventory":
        """Read and validate an inventory file; raise :class:`InventoryError` with a one-line reason."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InventoryError(f"{path}: inventory file not found") from None
        except json.JSONDecodeError as exc:
            raise InventoryError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, str(path))
