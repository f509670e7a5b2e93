"""The provisioning application's key request: one key per discovered device, from the key manager.

The paper: "When the SDN controller discovers the entire network, the application requests keys
equal to the total amount of the IoT devices." The key path itself (KME pair, gateway relay) lives
elsewhere, so the controller only sees :class:`KeyRequester`: ``request(device_ids)`` returns
``{device_id: key_id}``. :class:`HttpKeyRequester` POSTs ``{"devices": [...]}`` as JSON and expects
``{"keys": {"d1": "<key id>", ...}}``. The controller runs in the root network namespace while the
key manager runs inside a Mininet host, so the request can be sent from a thread that first enters
that host's namespace (a socket keeps the namespace it was created in).
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from harness.netns import enter_netns

MAX_RESPONSE_BYTES = 4 << 20  # bytes; a key id is ~40 characters, so far more than 10,000 devices


class KeyRequestError(RuntimeError):
    """The key manager could not be reached or answered something unusable."""


class KeyRequester(Protocol):
    """Asks the key manager for one key per device; returns the key id of each device it served."""

    def request(self, device_ids: list[str]) -> dict[str, str]: ...

    def describe(self) -> dict: ...


def parse_key_response(body: bytes, device_ids: list[str]) -> dict[str, str]:
    """Validate ``{"keys": {id: key_id}}``; keep only the ids that were asked for."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KeyRequestError(f"key manager answered non-JSON: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        raise KeyRequestError("key manager answer lacks a 'keys' object")
    wanted = set(device_ids)
    result = {}
    for device_id, key_id in keys.items():
        if device_id in wanted:
            if not isinstance(key_id, str) or not key_id:
                raise KeyRequestError(f"key manager answer: 'keys.{device_id}' is not a key id string")
            result[device_id] = key_id
    return result


class HttpKeyRequester:
    """POST ``{"devices": [...]}`` to ``url`` (optionally from another network namespace)."""

    def __init__(self, url: str, netns_pid: int | None = None, timeout_s: float = 10.0,
                 ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"key request url {url!r} is not http:// or https://")
        self.url, self.netns_pid, self.timeout_s = url, netns_pid, timeout_s
        self.paths = {"ca": ca, "cert": cert, "key": key}
        self.tls: ssl.SSLContext | None = None
        if url.startswith("https://"):
            self.tls = ssl.create_default_context(cafile=str(ca) if ca else None)
            if cert is not None:
                self.tls.load_cert_chain(str(cert), str(key) if key else None)
        # Environment proxies must not capture a request meant for an emulated host.
        handlers = [urllib.request.ProxyHandler({})]
        if self.tls is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.tls))
        self._opener = urllib.request.build_opener(*handlers)

    def describe(self) -> dict:
        """JSON-ready; also what a restarted controller rebuilds the requester from."""
        return {"configured": True, "url": self.url, "netns_pid": self.netns_pid, "status": "configured",
                **{name: str(path) if path else None for name, path in self.paths.items()}}

    def request(self, device_ids: list[str]) -> dict[str, str]:
        """One POST; raise :class:`KeyRequestError` on any failure."""
        if self.netns_pid is None:
            return self._post(device_ids)
        outcome: dict = {}

        def in_namespace() -> None:
            try:
                enter_netns(self.netns_pid)  # only this short-lived thread moves
                outcome["keys"] = self._post(device_ids)
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc

        worker = threading.Thread(target=in_namespace, name="key-request-netns", daemon=True)
        worker.start()
        worker.join(self.timeout_s + 5.0)
        if worker.is_alive():
            raise KeyRequestError(f"key request to {self.url} did not finish within {self.timeout_s} s")
        if "error" in outcome:
            error = outcome["error"]
            raise error if isinstance(error, KeyRequestError) else KeyRequestError(str(error))
        return outcome["keys"]

    def _post(self, device_ids: list[str]) -> dict[str, str]:
        body = json.dumps({"devices": list(device_ids)}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.timeout_s) as response:
                return parse_key_response(response.read(MAX_RESPONSE_BYTES), device_ids)
        except urllib.error.HTTPError as exc:
            raise KeyRequestError(f"key manager {self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KeyRequestError(f"key manager {self.url} unreachable: {reason}") from None
