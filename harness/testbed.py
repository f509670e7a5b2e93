"""The running testbed: controller, Fig. 1 network, wireless shaping and broker, up and torn down.

Used by ``qiot run`` and by the real-network tests, so both exercise exactly the same bring-up.
``Testbed.up()`` starts the parts in order (controller, network, shaper, broker); ``down()`` stops
them in reverse and always runs, from a ``finally`` or the context manager's exit.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import capabilities, capture, network, shaping
from harness.broker import mosquitto
from harness.clock import EmulatedClock
from harness.keyservices import CLAVIS_PORT, RELAY_PORT, KeyServices
from harness.process import ManagedProcess, ProcessGroup
from harness.scenario import Scenario
from harness.state import RunState


def free_tcp_port() -> int:
    """A currently free TCP port on loopback, for the run's OpenFlow controller."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Testbed:
    """Everything of a run that exists independently of the key mode."""

    __test__ = False  # a name pytest would otherwise try to collect as a test class

    scenario: Scenario
    run_dir: Path
    state: RunState
    seed: int = 1
    modes: tuple[str, ...] = ()
    rogue_hosts: int = 0
    caps: capabilities.Capabilities = field(default_factory=capabilities.probe)
    processes: ProcessGroup | None = None
    net: network.QiotNetwork | None = None
    facts: dict = field(default_factory=dict)

    @property
    def devices(self) -> int:
        return self.scenario.section("devices")["count"]

    def fibre_delay_ms(self) -> float:
        fibre = self.scenario.section("fibre")
        return fibre["length_km"] * fibre["propagation_us_per_km"] / 1000.0

    def wireless(self) -> shaping.WirelessShape:
        return shaping.WirelessShape.from_scenario(self.scenario.section("wireless"))

    def mechanisms(self) -> dict:
        """What the run's metadata records about how the network is emulated."""
        return {"switch": f"Open vSwitch, {self.caps.switch_datapath} datapath, OpenFlow 1.3",
                "controller": "os-ken, controllers.provisioning (devices provisioned by MAC from the inventory)",
                "shaping": shaping.describe(self.caps.shaping, self.fibre_delay_ms())}

    keys: KeyServices | None = None
    rest_port: int | None = None

    #: TCP port of the gateway's key relay on the wireless side (devices fetch QKD keys there).
    relay_port: int = RELAY_PORT

    #: The capture of the Clavis datagrams (the paper's Fig. 2e), running as long as the key path.
    key_capture: ManagedProcess | None = None

    def platform_key_args(self, mode: str) -> list[str]:
        """Arguments telling the platform where its keys come from in ``mode``."""
        return self.keys.platform_args() if mode == "qkd" else []

    def device_key_spec(self, mode: str) -> dict:
        """Fleet-spec entries telling devices where to get keys in ``mode``."""
        return self.keys.device_spec() if mode == "qkd" else {}

    def start_key_services(self) -> None:
        """The QKD link, both KMEs and the gateway relay (only when a QKD mode will run)."""
        from topologies.fig1 import ALICE_IP, DC_IP, GW_WIRELESS_IP, device_name

        hosts = ("dc", "alice", "gw")
        self.keys = KeyServices(self.run_dir, self.scenario, [device_name(i) for i in range(1, self.devices + 1)],
                                {h: self.net.netns_pid(h) for h in hosts},
                                {"dc": DC_IP, "alice": ALICE_IP, "gw_wireless": GW_WIRELESS_IP}, self.seed)
        self.keys.make_pki()
        # Clavis datagrams between Bob's KME and Bob's key-extraction service on the data-centre
        # host, from the first provisioning on: keys are reserved when issued, not when used.
        self.key_capture = capture.tcpdump("capture-qkd-keys", self.net.netns_pid("dc"), "lo",
                                           self.run_dir / "qkd" / "pcap" / "keys.pcap", f"udp port {CLAVIS_PORT}",
                                           self.run_dir / "logs")
        self.processes.start(self.key_capture)
        clock = EmulatedClock(time.time(), self.scenario.section("run")["time_scale"])
        self.facts["qkd_clock_epoch"] = clock.epoch_wall
        processes = self.keys.processes(clock)
        self.processes.start(*processes)
        # The provisioning app requests the device keys through the gateway once it has discovered
        # the devices; the run starts its devices when they have keys (or reports that they do not).
        self.controller_rest("/qiot/key-manager", self.keys.key_request_config())
        relay = processes[-1]
        self.facts["device_keys_before_start"] = self.wait_for_device_keys(relay.ready_timeout_s)

    def write_inventory(self) -> Path:
        """The device inventory the provisioning controller recognises devices by (MAC is the key)."""
        import json

        from topologies.fig1 import device_ip, device_mac, device_name

        path = self.run_dir / "config" / "inventory.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        devices = [{"device_id": device_name(i), "mac": device_mac(i), "ip": device_ip(i),
                    "credentials": f"pki/sae/{device_name(i)}.crt"} for i in range(1, self.devices + 1)]
        path.write_text(json.dumps({"devices": devices}, indent=1), encoding="utf-8")
        return path

    def controller_process(self, port: int) -> ManagedProcess:
        """The OpenFlow controller: os-ken running qiot's provisioning app on the run's inventory."""
        from topologies.fig1 import GW_WIRELESS_IP

        self.rest_port = free_tcp_port()
        return ManagedProcess(
            name="controller", start_order=0, log_path=self.run_dir / "logs" / "controller.log",
            argv=[sys.executable, "-m", "controllers.launch", "--port", str(port),
                  "--inventory", str(self.write_inventory()), "--state-dir", str(self.run_dir / "controller"),
                  "--rest-port", str(self.rest_port), "--access-switch", "qap4", "--gateway-ip", GW_WIRELESS_IP])

    def controller_rest(self, path: str, body: dict | None = None, timeout_s: float = 10.0) -> dict:
        """The controller's northbound REST API: GET a view (``/qiot/devices``, ``/qiot/keys``, ...),
        or POST ``body`` (e.g. ``/qiot/key-manager``)."""
        import json
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
        with opener.open(request, timeout=timeout_s) as response:
            return json.loads(response.read())

    def wait_for_device_keys(self, timeout_s: float) -> bool:
        """Wait until the controller's key request has given every device a key id."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.controller_rest("/qiot/keys").get("key_ids", {})) >= self.devices:
                return True
            time.sleep(0.25)
        return False

    def _lock(self) -> None:
        """Take the machine-wide testbed lock: two Fig. 1 networks would collide on their names."""
        import fcntl
        import os

        self.state.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.state.dir / "testbed.lock", "a+")
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

    def up(self) -> "Testbed":
        """Bring everything up; on any failure, tear down what was started and re-raise."""
        if self.caps.shaping == "none":
            raise network.NetworkError("this kernel has neither netem nor NFQUEUE+statistic+HTB: "
                                       "links cannot be shaped")
        self._lock()
        self.state.record_owner()
        from topologies.fig1 import DC_IP, Fig1Topo, LinkShape, device_name

        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessGroup(self.state)
        try:
            self.facts["ovs_started_by_run"] = network.ensure_ovs()
            network.route_mininet_log(logs / "mininet.log")
            port = free_tcp_port()
            self.processes.start(self.controller_process(port))
            started = time.monotonic()
            fibre, wireless = self.scenario.section("fibre"), self.wireless()
            topo = Fig1Topo(devices=self.devices, optical_switch=fibre["optical_switch"],
                            fibre=LinkShape(fibre["classical_rate_mbit"], self.fibre_delay_ms()),
                            wireless=LinkShape(wireless.rate_mbit, wireless.delay_ms, wireless.jitter_ms,
                                               wireless.loss_pct),
                            netem=self.caps.shaping == "netem", rogue_hosts=self.rogue_hosts)
            self.net = network.build(topo, self.caps, port, self.state)
            self.facts["network_start_s"] = round(time.monotonic() - started, 3)
            if self.caps.shaping == "nfqueue":
                hosts = [self.net.host(device_name(i)) for i in range(1, self.devices + 1)]
                shaper = shaping.apply_fallback(self.net.host("gw"), hosts, wireless, logs, self.seed)
                if shaper is not None:
                    self.processes.start(shaper)
            self.processes.start(mosquitto(self.net.netns_pid("dc"), DC_IP, self.run_dir))
            if "qkd" in self.modes:
                self.start_key_services()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process and the network; safe to call more than once."""
        if self.processes is not None:
            self.processes.stop_all()
        if self.net is not None:
            self.net.stop()
            self.net = None
        if getattr(self, "_lock_file", None) is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def __enter__(self) -> "Testbed":
        return self.up()

    def __exit__(self, *_exc) -> None:
        self.down()
