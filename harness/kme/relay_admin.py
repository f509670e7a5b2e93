"""The gateway relay's provisioning endpoint: where the SDN provisioning app asks for device keys.

The paper's provisioning application "requests keys equal to the total amount of the IoT devices"
once the controller has discovered the network. In qiot the controller's key request lands here:
``POST /provision/v1/devices`` with ``{"devices": ["d1", ...]}`` makes the gateway obtain one QKD
key per device from its KME (ETSI 014 ``enc_keys``, via :class:`GatewayKeyLifecycle`) and answers
``{"keys": {"d1": "<key_ID>", ...}}`` — key ids only, never key material. 503 while the QKD link
has not distilled enough keys (the caller retries), 400 for devices the relay does not serve.

The endpoint listens on the gateway host's loopback only: it is a management interface of the
gateway, reachable by a process that has entered the gateway's namespace, not by devices.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from . import etsi
from .lifecycle import GatewayKeyLifecycle

PROVISION_PATH = "/provision/v1/devices"


class ProvisioningHandler(BaseHTTPRequestHandler):
    """Answers the controller's key request."""

    server: "ProvisioningServer"

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        if self.path != PROVISION_PATH:
            return self._reply(404, {"message": "no such resource"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            devices = body["devices"]
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise TypeError("devices must be a list of device ids")
        except (ValueError, KeyError, TypeError) as exc:
            return self._reply(400, {"message": f"bad request: {exc}"})
        unknown = sorted(set(devices) - set(self.server.lifecycle.devices))
        if unknown:
            return self._reply(400, {"message": "devices not served by this relay", "details": unknown})
        try:
            keys = self.server.provision(devices)
        except etsi.EtsiError as exc:
            return self._reply(503 if exc.status == 503 else 502, {"message": f"key manager: {exc}"})
        except OSError as exc:
            return self._reply(502, {"message": f"key manager unreachable: {type(exc).__name__}"})
        self._reply(200, {"keys": keys})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args) -> None:  # requests are counted by the caller's registry, not logged here
        pass


class ProvisioningServer(ThreadingHTTPServer):
    """Provisions the lifecycle's keys on request."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], lifecycle: GatewayKeyLifecycle, now: Callable[[], float]) -> None:
        super().__init__(address, ProvisioningHandler)
        self.lifecycle, self.now = lifecycle, now
        self._lock = threading.Lock()
        self.requests = 0

    def provision(self, devices: list[str]) -> dict[str, str]:
        """The key ids of ``devices``, provisioning one key per served device first if not yet done
        (a 503 keeps what was obtained: the caller's retry goes on from there)."""
        with self._lock:
            self.requests += 1
            # Every served device gets its key at the first provisioning; later requests (devices
            # discovered late) are answered from the current keys, renewed as devices ask.
            if self.lifecycle.generation == 0:
                self.lifecycle.provision(self.now())
            return {d: self.lifecycle.current(d).key_id for d in devices}

    def start_in_thread(self) -> None:
        threading.Thread(target=self.serve_forever, name="relay-provisioning", daemon=True).start()
