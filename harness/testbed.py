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

from harness import capabilities, network, shaping
from harness.broker import mosquitto
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

    scenario: Scenario
    run_dir: Path
    state: RunState
    seed: int = 1
    modes: tuple[str, ...] = ()
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
                "controller": "os-ken, controllers.l2switch",
                "shaping": shaping.describe(self.caps.shaping, self.wireless(), self.fibre_delay_ms())}

    #: TCP port of the gateway's key relay on the wireless side (devices fetch QKD keys there).
    relay_port: int = 8443

    def key_captures(self, mode: str, pcap_dir: Path) -> list[ManagedProcess]:
        """Captures of the key traffic of ``mode`` (the Clavis datagrams of Fig. 2e in QKD mode)."""
        return []

    def platform_key_args(self, mode: str) -> list[str]:
        """Arguments telling the platform where its keys come from in ``mode``."""
        if mode == "dkg":
            return []
        raise NotImplementedError("QKD key services are not wired yet")

    def device_key_spec(self, mode: str) -> dict:
        """Fleet-spec entries telling devices where to get keys in ``mode``."""
        if mode == "dkg":
            return {}
        raise NotImplementedError("QKD key services are not wired yet")

    def up(self) -> "Testbed":
        """Bring everything up; on any failure, tear down what was started and re-raise."""
        if self.caps.shaping == "none":
            raise network.NetworkError("this kernel has neither netem nor NFQUEUE+statistic+HTB: "
                                       "links cannot be shaped")
        from topologies.fig1 import DC_IP, Fig1Topo, LinkShape, device_name

        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.processes = ProcessGroup(self.state)
        try:
            self.facts["ovs_started_by_run"] = network.ensure_ovs()
            network.route_mininet_log(logs / "mininet.log")
            port = free_tcp_port()
            self.processes.start(ManagedProcess(
                name="controller", start_order=0, log_path=logs / "controller.log",
                argv=[sys.executable, "-m", "controllers.launch", "--port", str(port)]))
            started = time.monotonic()
            fibre, wireless = self.scenario.section("fibre"), self.wireless()
            topo = Fig1Topo(devices=self.devices, optical_switch=fibre["optical_switch"],
                            fibre=LinkShape(fibre["classical_rate_mbit"], self.fibre_delay_ms()),
                            wireless=LinkShape(wireless.rate_mbit, wireless.delay_ms, wireless.jitter_ms,
                                               wireless.loss_pct),
                            netem=self.caps.shaping == "netem")
            self.net = network.build(topo, self.caps, port, self.state)
            self.facts["network_start_s"] = round(time.monotonic() - started, 3)
            if self.caps.shaping == "nfqueue":
                hosts = [self.net.host(device_name(i)) for i in range(1, self.devices + 1)]
                shaper = shaping.apply_fallback(self.net.host("gw"), hosts, wireless, logs, self.seed)
                if shaper is not None:
                    self.processes.start(shaper)
            self.processes.start(mosquitto(self.net.netns_pid("dc"), DC_IP, self.run_dir))
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

    def __enter__(self) -> "Testbed":
        return self.up()

    def __exit__(self, *_exc) -> None:
        self.down()
