"""Key requester and REST endpoint of the provisioning controller, over real HTTP on 127.0.0.1."""

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controllers.inventory import Inventory
from controllers.keyrequest import HttpKeyRequester, KeyRequestError, parse_key_response
from controllers.launch import build_parser, settings_from_args
from controllers.registry import Registry
from controllers.rest import NorthboundServer


@pytest.fixture
def key_manager():
    """Answers POST /keys with a key id per asked device (and one extra it was not asked for)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            if self.path == "/broken":
                self.send_response(503)
                self.end_headers()
                return
            answer = json.dumps({"keys": {**{d: f"uuid-{d}" for d in body["devices"]}, "zz": "x"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_http_requester_posts_the_device_list_and_keeps_asked_ids(key_manager):
    url, seen = key_manager
    keys = HttpKeyRequester(url + "/keys", timeout_s=5).request(["d1", "d2"])
    assert keys == {"d1": "uuid-d1", "d2": "uuid-d2"}
    assert seen == [("/keys", {"devices": ["d1", "d2"]})]


def test_http_requester_reports_http_errors_and_unreachable_managers(key_manager):
    url, _ = key_manager
    with pytest.raises(KeyRequestError, match="HTTP 503"):
        HttpKeyRequester(url + "/broken", timeout_s=5).request(["d1"])
    with pytest.raises(KeyRequestError, match="unreachable"):
        HttpKeyRequester("http://127.0.0.1:1/keys", timeout_s=2).request(["d1"])


def test_http_requester_in_our_own_namespace_through_the_netns_thread(key_manager):
    url, seen = key_manager
    if not os.access(f"/proc/{os.getpid()}/ns/net", os.R_OK) or os.geteuid() != 0:
        pytest.skip("setns needs root")
    assert HttpKeyRequester(url + "/keys", netns_pid=os.getpid(), timeout_s=5).request(["d3"]) == {"d3": "uuid-d3"}


def test_key_response_must_carry_key_id_strings():
    with pytest.raises(KeyRequestError, match="lacks a 'keys' object"):
        parse_key_response(b'{"key_ids": {}}', ["d1"])
    with pytest.raises(KeyRequestError, match="'keys.d1'"):
        parse_key_response(b'{"keys": {"d1": 7}}', ["d1"])
    with pytest.raises(ValueError, match="not http"):
        HttpKeyRequester("ftp://x/keys")


def test_rest_views_and_key_manager_configuration(tmp_path):
    inv = Inventory.from_dict({"devices": [{"device_id": "d1", "mac": "02:51:0a:00:00:01", "ip": "10.1.0.10",
                                            "credentials": "c"}, {"device_id": "d2", "mac": "02:51:0a:00:00:02",
                                                                  "ip": "10.1.0.11", "credentials": "c"}]})
    reg = Registry(inv, tmp_path, "10.1.0.1")
    reg.pin_gateway(4, 1, "aa:bb:cc:dd:ee:ff", 1.0)
    reg.discover(inv.by_id["d1"], 4, 2, 2.0)
    reg.provision("d1", 2.5)
    reg.record_rogue("02:66:0b:00:00:01", 4, 5, 3.0, "not in the inventory")
    configured = []
    starts = []
    server = NorthboundServer("127.0.0.1", 0, reg, lambda c: configured.append(c) or {"configured": True},
                              lambda: starts.append(1) or reg.start_discovery(4.0) and reg.progress())
    server.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    try:
        devices = get("/qiot/devices")
        assert (devices["expected"], devices["provisioned"], devices["missing"]) == (2, ["d1"], ["d2"])
        assert list(get("/qiot/rogues")) == ["02:66:0b:00:00:01"]
        assert get("/qiot/counters")["rogue_macs"] == 1
        assert get("/qiot/keys")["key_manager"]["status"] == "no key manager configured"
        assert get("/qiot/state")["gateway"]["port"] == 1
        with pytest.raises(urllib.error.HTTPError) as missing:
            get("/qiot/nothing")
        assert missing.value.code == 404
        assert get("/qiot/key-manager", {"url": "http://10.0.0.1/keys"}) == {"configured": True}
        assert configured == [{"url": "http://10.0.0.1/keys"}]
        progress = get("/qiot/progress")
        assert (progress["discovered"], progress["provisioned"], progress["missing"], progress["started_at"]) == (
            1, 1, 1, None)
        assert get("/qiot/discovery/start", {})["started_at"] == 4.0 and starts == [1]
        assert get("/qiot/progress")["started_at"] == 4.0
    finally:
        server.shutdown()


def test_launcher_settings_and_one_line_error_for_a_bad_inventory(tmp_path):
    inv = tmp_path / "inventory.json"
    inv.write_text('{"devices": [{"device_id": "d1", "mac": "nope", "ip": "10.1.0.10", "credentials": "c"}]}')
    args = build_parser().parse_args(["--inventory", str(inv), "--rest-port", "8081", "--key-request-url", "http://x/k"])
    settings = settings_from_args(args)
    assert (settings.state_dir, settings.rest_port, settings.key_request_url) == (tmp_path, 8081, "http://x/k")
    assert not settings.discovery_start_on_signal  # standalone: discovery starts with the access switch
    signalled = build_parser().parse_args(["--inventory", str(inv), "--discovery-on-signal"])
    assert settings_from_args(signalled).discovery_start_on_signal
    assert settings_from_args(build_parser().parse_args([])) is None
    result = subprocess.run([sys.executable, "-m", "controllers.launch", "--port", "1", "--inventory", str(inv)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "devices[0]: 'mac' 'nope' is not a MAC address" in result.stderr
    assert "Traceback" not in result.stderr
