"""The running testbed: controller, Fig. 1 network, wireless shaping, broker and key path, up and down.

Used by ``qiot run`` and by the real-network tests, so both exercise exactly the same bring-up.
Every daemon of the run (the mode daemons too, which the run adds before :meth:`Testbed.up`) is
declared in one :class:`~harness.daemon.DaemonSet`; ``up()`` first runs every pre-start check, then
starts the controller, builds the network and starts the rest in dependency order; ``down()`` stops
them in reverse and always runs, from a ``finally`` or the context manager's exit.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import urllib.request
from pathlib import Path

from harness import capabilities, capture, network, runconfig, shaping
from harness.broker import broker_daemon
from harness.clock import EmulatedClock
from harness.daemon import Daemon, DaemonSet, python_daemon
from harness.enums import Mode
from harness.keyservices import key_daemons, key_request_config, make_pki, provision_timeout_s
from harness.lifecycle import StopRequest
from harness.runconfig import RunConfig
from harness.state import RunState

#: Machine-wide: two Fig. 1 networks would collide on their switch and host names, whichever state
#: folder their runs record into.
LOCK_PATH = Path(os.environ.get("QIOT_LOCK_PATH", "/run/qiot-testbed.lock"))


class Testbed:
    """Everything of a run that exists independently of the key mode."""

    __test__ = False  # a name pytest would otherwise try to collect as a test class

    def __init__(self, config: RunConfig, state: RunState, stop: StopRequest | None = None,
                 caps: capabilities.Capabilities | None = None) -> None:
        self.config, self.state = config, state
        self.stop = stop or StopRequest()
        self.caps = caps or capabilities.probe()
        self.daemons = DaemonSet(state, netns=self.netns_pid, stop=self.stop)
        self.net: network.QiotNetwork | None = None
        self.facts: dict = {}
        self.key_clock: EmulatedClock | None = None
        self._lock_file = None
        self._declared = False

    @classmethod
    def for_scenario(cls, scenario, run_dir: Path, state: RunState, modes: tuple[str, ...] = (),
                     rogue_hosts: int = 0, stop: StopRequest | None = None) -> "Testbed":
        """A testbed of ``scenario`` for the real-network tests and benchmarks (no mode runs unless asked)."""
        config = runconfig.build(scenario, run_id=state.run_id, run_dir=run_dir, modes=modes,
                                 rogue_hosts=rogue_hosts)
        return cls(config, state, stop)

    # --- facts ----------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.config.path

    @property
    def devices(self) -> int:
        return self.config.devices.count

    def mechanisms(self) -> dict:
        """What the run's metadata records about how the network is emulated."""
        return {"switch": f"Open vSwitch, {self.caps.switch_datapath} datapath, OpenFlow 1.3",
                "controller": "os-ken, controllers.provisioning (devices provisioned by MAC from the inventory)",
                "shaping": shaping.describe(self.caps.shaping, self.config.fibre.delay_ms)}

    def netns_pid(self, host: str) -> int:
        """PID of the process holding ``host``'s namespace (the Mininet host's shell)."""
        if self.net is None:
            raise network.NetworkError(f"host {host!r} has no namespace yet: the network is not up")
        return self.net.netns_pid(host)

    # --- declaration ----------------------------------------------------------------------------
    def controller_daemon(self) -> Daemon:
        """The OpenFlow controller: os-ken running qiot's provisioning app on the run's inventory."""
        return python_daemon(self.config, "controller", "controllers.launch", host=None)

    def write_inventory(self) -> Path:
        """The device inventory the provisioning controller recognises devices by (MAC is the key)."""
        from controllers.launch import inventory_path

        path = inventory_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"devices": self.config.site.inventory()}, indent=1), encoding="utf-8")
        return path

    def key_clock_args(self) -> list[str]:
        return ["--clock-epoch", repr(self.key_clock.epoch_wall)]

    def declare(self) -> None:
        """Declare the testbed's daemons (once): controller, shaper, broker, and the key path if QKD runs."""
        if self._declared:
            return
        self._declared = True
        self.daemons.add(self.controller_daemon())
        if self.caps.shaping == "nfqueue" and shaping.needs_shaper(self.config.wireless):
            self.daemons.add(shaping.shaper_daemon(self.config))
        self.daemons.add(broker_daemon(self.config))
        if Mode.QKD in self.config.modes:
            keys = capture.key_capture(self.config)
            if keys is not None:
                self.daemons.add(keys)
            self.daemons.add(*key_daemons(self.config, self.key_clock_args, keys.name if keys else None))

    # --- bring-up -------------------------------------------------------------------------------
    def _lock(self) -> None:
        """Take the machine-wide testbed lock."""
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(LOCK_PATH, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "unknown"
            self._lock_file.close()
            self._lock_file = None
            raise network.NetworkError(f"another qiot testbed is running ({holder}); wait for it to end, "
                                       "or run `qiot clean` if it was killed") from None
        self._lock_file.truncate(0)
        self._lock_file.write(f"pid {os.getpid()}, run {self.state.run_id}")
        self._lock_file.flush()

    def prepare(self) -> None:
        """Everything that comes before the first daemon: files, declarations, every pre-start check."""
        self.config.write()
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        self.write_inventory()
        if Mode.QKD in self.config.modes:
            make_pki(self.config)
        self.declare()
        self.daemons.preflight()

    def up(self) -> "Testbed":
        """Bring everything up; on any failure (or a stop request), tear down what was started and re-raise."""
        if self.caps.shaping == "none":
            raise network.NetworkError("this kernel has neither netem nor NFQUEUE+statistic+HTB: "
                                       "links cannot be shaped")
        self.prepare()
        self._lock()
        self.state.record_owner()
        try:
            self.facts["ovs_started_by_run"] = network.ensure_ovs()
            network.route_mininet_log(self.config.logs_dir / "mininet.log")
            self.daemons.start("controller")
            started = time.monotonic()
            from harness import stations
            from topologies.fig1 import FIRST_STATION_PORT, mininet_topo
            from topologies.fig1 import stations as cell_stations

            site = self.config.site
            topo = mininet_topo(site, self.config.fibre, netem=self.caps.shaping == "netem")
            planned = stations.plan(self.state.run_id, FIRST_STATION_PORT, cell_stations(site))
            self.net = network.build(topo, self.caps, self.config.controller.openflow, self.state,
                                     cell=(planned, site.access_switch, site.gw_wireless_ip, self.config.wireless))
            self.facts["network_start_s"] = round(time.monotonic() - started, 3)
            self.facts["stations_s"] = self.net.timings
            # Discovery's window opens now, not when the access switch connected minutes ago.
            self.controller_rest("/qiot/discovery/start", {})
            self.facts["sysctls_raised"] = self.net.sysctls_raised
            self.stop.check()
            self.config.write_hosts(self.net.namespaces())
            if self.caps.shaping == "nfqueue":
                shaping.install_fallback_rules(self.net.host("gw"), site.gw_wireless_intf, self.config.wireless)
            self.daemons.start(*[name for name in ("shaper", "broker") if name in self.daemons])
            self.facts["devices_provisioned_s"] = self.wait_for_provisioning()
            if Mode.QKD in self.config.modes:
                self.start_key_services()
        except BaseException:
            self.down()
            raise
        return self

    def start_key_services(self) -> None:
        """The QKD link, both KMEs and the gateway relay; then the controller's key request."""
        # A warmed-up link: its clock started warmup_s emulated seconds ago, so the QKD ends distil those
        # blocks first, as fast as post-processing allows.
        scale = self.config.run.time_scale
        self.key_clock = EmulatedClock(time.time() - self.config.qkd.warmup_s / scale, scale)
        self.facts["qkd_clock_epoch"] = self.key_clock.epoch_wall
        self.daemons.start("relay")
        # The provisioning app requests the device keys through the gateway once it has discovered
        # the devices; the run starts its devices when they have keys (or reports that they do not).
        self.controller_rest("/qiot/key-manager", key_request_config(self.config, self.netns_pid("gw")))
        self.facts["device_keys_before_start"] = self.wait_for_device_keys(provision_timeout_s(self.config))

    def controller_rest(self, path: str, body: dict | None = None, timeout_s: float = 10.0) -> dict:
        """The controller's northbound REST API: GET a view (``/qiot/devices``, ``/qiot/keys``, ...),
        or POST ``body`` (e.g. ``/qiot/key-manager``)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.config.controller.rest}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(request, timeout=timeout_s) as response:
            return json.loads(response.read())

    def wait_for_provisioning(self, timeout_s: float = 300.0) -> float | None:
        """Wait until the controller has discovered and provisioned every device (so the first wakes do
        not meet a switch still taking their flows); the wall seconds it took, None if it did not."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            discovery = self.controller_rest("/qiot/progress")
            if discovery.get("completed_at") or discovery.get("timed_out_at"):
                return round(time.monotonic() - started, 3)
            if self.stop.wait(0.25):
                self.stop.check()
        return None

    def wait_for_device_keys(self, timeout_s: float) -> bool:
        """Wait until the controller's key request has given every device a key id."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.controller_rest("/qiot/progress")["key_ids"] >= self.devices:
                return True
            if self.stop.wait(0.25):
                self.stop.check()
        return False

    def down(self) -> None:
        """Stop every daemon and the network; safe to call more than once."""
        self.daemons.stop_all()
        if self.net is not None:
            self.net.stop()
            self.net = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def __enter__(self) -> "Testbed":
        return self.up()

    def __exit__(self, *_exc) -> None:
        self.down()
