"""Northbound REST view of the provisioning controller, on 127.0.0.1 only.

os-ken 4.x no longer ships Ryu's WSGI facility (``os_ken.app.wsgi`` is gone), so this is a plain
``http.server`` in its own thread, reading the thread-safe :class:`~controllers.registry.Registry`.

Endpoints (all JSON):

- ``GET /qiot/switches``: ``{dpid_hex: {"dpid", "name", "role", "connected", "ports"}}``
- ``GET /qiot/devices``: ``{"expected", "discovered", "provisioned", "missing", "devices": {id: record}}``
- ``GET /qiot/rogues``: ``{mac: {"mac", "dpid", "port", "first_seen", "last_seen", "packet_ins", "reason"}}``
- ``GET /qiot/counters``: ``{name: int}``
- ``GET /qiot/keys``: ``{"key_manager", "requests": [...], "key_ids": {id: key_id}}``
- ``GET /qiot/state``: the whole registry (what ``registry.json`` holds)
- ``GET /qiot/progress``: discovery's times and counts (``missing``, ``discovered``, ``provisioned``,
  ``key_ids``), without the records: cheap enough to poll with thousands of devices
- ``POST /qiot/key-manager`` ``{"url", "netns_pid"?, "ca"?, "cert"?, "key"?}``: configure the key
  manager after start-up (the testbed only knows the hosts' namespaces once the network is built).
- ``POST /qiot/discovery/start`` (no body): the testbed's stations are attached; discovery starts now
  if it has not started (a controller launched with ``--discovery-on-signal``). Answers the progress.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from controllers.registry import Registry

log = logging.getLogger(__name__)
MAX_BODY = 64 << 10  # bytes; a key-manager configuration is a few hundred


def devices_view(snapshot: dict) -> dict:
    devices = snapshot["devices"]
    return {"expected": snapshot["inventory_size"], "discovered": sorted(devices),
            "provisioned": sorted(d for d, r in devices.items() if r["provisioned_at"] is not None),
            "missing": snapshot["discovery"]["missing"], "discovery": snapshot["discovery"], "devices": devices}


def keys_view(snapshot: dict) -> dict:
    return {"key_manager": snapshot["key_manager"], "requests": snapshot["key_requests"],
            "key_ids": {d: r["key_id"] for d, r in snapshot["devices"].items() if r["key_id"] is not None}}


#: Each GET view from the registry: most from a snapshot (a consistent copy), the progress from
#: counts alone (a snapshot of 13,000 devices is megabytes; the testbed polls it four times a second).
VIEWS: dict[str, Callable[[Registry], object]] = {
    "/qiot/switches": lambda r: r.snapshot()["switches"],
    "/qiot/devices": lambda r: devices_view(r.snapshot()),
    "/qiot/rogues": lambda r: r.snapshot()["rogues"],
    "/qiot/counters": lambda r: r.snapshot()["counters"],
    "/qiot/keys": lambda r: keys_view(r.snapshot()),
    "/qiot/state": lambda r: r.snapshot(),
    "/qiot/progress": Registry.progress,
}


class NorthboundServer(ThreadingHTTPServer):
    """The REST endpoint; ``configure_key_manager`` is called with a POSTed configuration."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, registry: Registry,
                 configure_key_manager: Callable[[dict], dict] | None = None,
                 start_discovery: Callable[[], dict] | None = None) -> None:
        self.registry = registry
        self.configure_key_manager = configure_key_manager
        self.start_discovery = start_discovery
        super().__init__((host, port), _Handler)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="qiot-rest", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: NorthboundServer

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        view = VIEWS.get(self.path.rstrip("/"))
        if view is None:
            self._send(404, {"error": f"no such endpoint {self.path}", "endpoints": sorted(VIEWS)})
            return
        self._send(200, view(self.server.registry))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.rstrip("/")
        if path == "/qiot/discovery/start" and self.server.start_discovery is not None:
            self._send(200, self.server.start_discovery())
            return
        if path != "/qiot/key-manager" or self.server.configure_key_manager is None:
            self._send(404, {"error": f"no such endpoint {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": "body too large"})
            return
        try:
            config = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(config, dict):
                raise ValueError("expected a JSON object")
            self._send(200, self.server.configure_key_manager(config))
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": str(exc)})

    def _send(self, status: int, data: object) -> None:
        body = json.dumps(data, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("rest: " + fmt, *args)
