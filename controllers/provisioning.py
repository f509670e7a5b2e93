"""qiot's IoT provisioning app: discover devices by MAC, provision them, request their keys (Ryu API).

The paper's provisioning application "utilizing the SDN controller, to provision the devices based
on their MAC address"; "when the SDN controller discovers the entire network, the application
requests keys equal to the total amount of the IoT devices". On top of :mod:`controllers.l2switch`:

- Infrastructure switches (every switch but the access switch) keep MAC learning with idle timeouts:
  where dc, alice and the gateway sit is not known in advance.
- The wireless access switch (bridge ``qap4``, identified by its LOCAL port's name in the port
  description, not by dpid) is run proactively from the inventory. Its uplink is pinned to the port
  the gateway IP answers from (the controller ARP-probes it when the switch connects). A device's
  first packet (its own traffic, or its answer to the controller's ARP probe for its inventory IP)
  provisions it: permanent flows device<->uplink, its port added to the uplink's broadcast flow,
  registered and timed in the registry. Devices reach only the uplink (AP isolation). An unknown
  MAC gets a drop flow at its port and is logged and counted; see :mod:`controllers.registry`.
- Discovery starts when the access switch connects, or, with ``discovery_start_on_signal``, when the
  testbed says over REST that its stations are attached (thousands take minutes to make). Once every
  inventoried device is provisioned (or no new one was found for the discovery timeout, recorded with
  the missing ones), one key per device is requested through a :class:`KeyRequester`.
- Switches run in fail-mode secure (set by the harness), so installed flows keep forwarding while
  the controller restarts; the registry is persisted and every flow re-asserted on reconnect.

Settings come from :func:`configure` (called by ``controllers.launch`` before os-ken starts).
"""

from __future__ import annotations

import threading
import time

from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.lib.packet import arp, ether_types, ethernet, ipv4, packet

from controllers.inventory import Inventory
from controllers.keyrequest import HttpKeyRequester, KeyRequester, KeyRequestError
from controllers.l2switch import QiotL2Switch
from controllers.registry import Registry, Verdict
from controllers.rest import NorthboundServer
from controllers.settings import ProvisioningSettings

BROADCAST = "ff:ff:ff:ff:ff:ff"
# Priorities: a rogue's drop beats everything at its port; device flows beat the uplink broadcast.
PRIO_ROGUE_DROP, PRIO_DEVICE, PRIO_UPLINK_BROADCAST = 30, 20, 10
# Cookies tag flows by purpose, so tests and operators can find them with ovs-ofctl.
COOKIE_DEVICE, COOKIE_BROADCAST, COOKIE_ROGUE = 0x51D0, 0x51B0, 0x51DD

_SETTINGS: ProvisioningSettings | None = None
_RUNNING: "QiotProvisioning | None" = None


def configure(settings: ProvisioningSettings) -> None:
    """Hand the app its settings (os-ken instantiates apps itself, without arguments)."""
    global _SETTINGS
    _SETTINGS = settings


def write_final_snapshot() -> None:
    """Write ``snapshot.json`` next to the registry (called on SIGTERM by the launcher)."""
    if _RUNNING is not None:
        _RUNNING.write_snapshot()


def sender_ip(pkt: packet.Packet) -> str | None:
    """The IPv4 address a packet claims as its sender (ARP sender or IPv4 source), if any."""
    arp_pkt = pkt.get_protocol(arp.arp)
    if arp_pkt is not None:
        return arp_pkt.src_ip
    ip_pkt = pkt.get_protocol(ipv4.ipv4)
    return ip_pkt.src if ip_pkt is not None else None


class QiotProvisioning(QiotL2Switch):
    """Learning on infrastructure switches, inventory-driven provisioning on the access switch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if _SETTINGS is None:
            raise RuntimeError("controllers.provisioning.configure() was not called before os-ken started")
        global _RUNNING
        _RUNNING = self
        self.settings = settings = _SETTINGS
        self.learned_idle_timeout_s = settings.learned_idle_timeout_s
        self._probe_turn = 0
        self.registry = Registry(Inventory.load(settings.inventory_path), settings.state_dir, settings.gateway_ip,
                                 save_interval_s=settings.registry_save_interval_s)
        resumed = self.registry.load()
        self._mark_interrupted_requests()
        self.registry.count("controller_starts")
        self.registry.save()
        self.roles: dict[int, str] = {}        # dpid -> "access" | "infra"
        self.access_dp = None                  # the access switch's datapath, once identified
        self._send_lock = threading.Lock()     # datapath.send_msg is used from several threads
        self._key_lock = threading.Lock()
        self._key_thread: threading.Thread | None = None
        self._retry_failed = False             # set when the key manager is (re)configured
        self._broadcast_ports: set[int] = set()  # the uplink broadcast flow's outputs, as last sent
        self.requester: KeyRequester | None = None
        if settings.key_request_url:
            self.configure_key_manager({"url": settings.key_request_url, "netns_pid": settings.key_request_netns_pid,
                                        "ca": settings.key_request_ca, "cert": settings.key_request_cert,
                                        "key": settings.key_request_key}, retry_failed=False)
        elif self.registry.key_manager.get("configured"):
            # Configured over REST before a restart: the same key manager, from the registry.
            self.configure_key_manager(self.registry.key_manager, retry_failed=False)
        self.rest = None
        if settings.rest_port is not None:
            self.rest = NorthboundServer(settings.rest_host, settings.rest_port, self.registry,
                                         self.configure_key_manager, self.start_discovery)
            self.rest.start()
        self.logger.info("qiot: provisioning %d inventoried devices (%s registry)", len(self.registry.inventory),
                         "resumed" if resumed else "new")
        hub.spawn(self._probe_loop)

    # -- switch life cycle ---------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        """Table-miss as in l2switch, then ask for the port names: the LOCAL port carries the bridge name."""
        super().switch_features_handler(ev)
        datapath = ev.msg.datapath
        datapath.send_msg(datapath.ofproto_parser.OFPPortDescStatsRequest(datapath, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc_handler(self, ev):
        """Give the switch its role; the access switch gets its flows re-asserted and is probed."""
        datapath = ev.msg.datapath
        ofproto = datapath.ofproto
        ports = [{"port_no": p.port_no, "name": _text(p.name), "hw_addr": p.hw_addr} for p in ev.msg.body]
        name = next((p["name"] for p in ports if p["port_no"] == ofproto.OFPP_LOCAL), None)
        role = "access" if name == self.settings.access_switch else "infra"
        self.roles[datapath.id] = role
        self.registry.switch_connected(datapath.id, name, role,
                                       [p for p in ports if p["port_no"] != ofproto.OFPP_LOCAL])
        self.logger.info("qiot: switch %s (dpid %016x) is %s", name, datapath.id, role)
        if role == "access":
            self.access_dp = datapath
            if not self.settings.discovery_start_on_signal:
                self.registry.start_discovery(time.time())
            self._reassert_access_flows(datapath)
            self._probe(datapath)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def state_change_handler(self, ev):
        datapath = ev.datapath
        if datapath.id is None:
            return
        self.registry.switch_disconnected(datapath.id)
        if self.access_dp is datapath:
            self.access_dp = None

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def flow_removed_handler(self, ev):
        """A rogue's drop flow expired: count what it dropped (the next packet re-examines the MAC)."""
        if ev.msg.cookie == COOKIE_ROGUE:
            self.registry.count("rogue_flows_expired")
            self.registry.count("rogue_packets_dropped", ev.msg.packet_count)

    # -- packets -------------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in_handler(self, ev):
        """Infrastructure: learn and forward. Access switch: classify the source, then act on it."""
        msg = ev.msg
        datapath = msg.datapath
        self.registry.count("packet_in")
        role = self.roles.get(datapath.id)
        if role is None:
            return  # port description not answered yet: the sender will retransmit
        if role == "infra":
            super().packet_in_handler(ev)
            return
        self.registry.count("packet_in_access")
        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        in_port = msg.match["in_port"]
        verdict = self.registry.classify(True, datapath.id, in_port, eth.src, sender_ip(pkt))
        handler = getattr(self, f"_on_{verdict.kind}")
        handler(datapath, in_port, eth, msg, verdict)

    def _on_uplink(self, datapath, in_port, eth, msg, verdict: Verdict):
        device = self.registry.inventory.device_for_mac(eth.dst)
        record = self.registry.devices.get(device.device_id) if device else None
        if record is not None and record["provisioned_at"] is not None:
            # Its downlink flow is missing (e.g. not yet re-asserted): put it back and deliver.
            self._install_device_flows(datapath, record)
            self._packet_out(datapath, msg, in_port, record["port"])
        elif eth.dst != self.settings.probe_mac:
            self.registry.count("uplink_unknown_destination")

    def _on_gateway(self, datapath, in_port, eth, msg, verdict: Verdict):
        if self.registry.pin_gateway(datapath.id, in_port, eth.src, time.time()):
            self.logger.info("qiot: gateway %s pinned at port %d of the access switch", eth.src, in_port)
            self._reassert_access_flows(datapath)
            self._probe(datapath)  # now the devices, without waiting for the next probe round

    def _on_device(self, datapath, in_port, eth, msg, verdict: Verdict):
        device = verdict.device
        now = time.time()
        if self.registry.discover(device, datapath.id, in_port, now):
            self.logger.info("qiot: device %s (%s) discovered at port %d", device.device_id, device.mac, in_port)
        self._provision(datapath, device.device_id)
        gateway = self.registry.gateway
        if gateway is not None and eth.dst != self.settings.probe_mac:
            self._packet_out(datapath, msg, in_port, gateway["port"])

    def _on_spoof(self, datapath, in_port, eth, msg, verdict: Verdict):
        self.registry.count("spoof_packet_ins")
        self._on_rogue(datapath, in_port, eth, msg, verdict, reason=f"uses the MAC of {verdict.device.device_id}")

    def _on_pending(self, datapath, in_port, eth, msg, verdict: Verdict):
        self.registry.count("pending_packet_ins")

    def _on_rogue(self, datapath, in_port, eth, msg, verdict: Verdict, reason: str = "not in the inventory"):
        if self.registry.record_rogue(eth.src, datapath.id, in_port, time.time(), reason):
            self.logger.warning("qiot: rogue MAC %s at port %d of the access switch (%s): dropped",
                                eth.src, in_port, reason)
        # A packet-in means no drop flow is in place (new MAC, or its flow expired): install one.
        parser = datapath.ofproto_parser
        self._flow(datapath, PRIO_ROGUE_DROP, parser.OFPMatch(in_port=in_port, eth_src=eth.src), [],
                   cookie=COOKIE_ROGUE, idle_timeout=self.settings.rogue_idle_timeout_s,
                   hard_timeout=self.settings.rogue_hard_timeout_s, flags=datapath.ofproto.OFPFF_SEND_FLOW_REM)

    # -- provisioning --------------------------------------------------------------------------
    def _provision(self, datapath, device_id: str) -> None:
        """Install a discovered device's flows once the uplink is known; register it the first time."""
        if self.registry.gateway is None:
            return  # provisioned when the gateway is pinned (_reassert_access_flows)
        record = self.registry.devices[device_id]
        self._install_device_flows(datapath, record)
        if record["provisioned_at"] is None:
            if record["port"] not in self._broadcast_ports:  # a cell's first device: its port joins
                self._install_uplink_broadcast(datapath, extra_port=record["port"])
            if self.registry.provision(device_id, time.time()):
                self.logger.info("qiot: device %s provisioned in %.1f ms", device_id,
                                 self.registry.devices[device_id]["provisioning_ms"])
                if self.registry.all_provisioned():
                    self._maybe_request_keys()  # no need to wait for the next probe tick

    def _install_device_flows(self, datapath, record: dict) -> None:
        """Permanent flows: the registry is the truth and re-asserts them on every reconnect, and a
        sleeping device's next wake must not depend on the controller being reachable."""
        parser = datapath.ofproto_parser
        uplink = self.registry.gateway["port"]
        self._flow(datapath, PRIO_DEVICE, parser.OFPMatch(in_port=record["port"], eth_src=record["mac"]),
                   [parser.OFPActionOutput(uplink)], cookie=COOKIE_DEVICE)
        self._flow(datapath, PRIO_DEVICE, parser.OFPMatch(in_port=uplink, eth_dst=record["mac"]),
                   [parser.OFPActionOutput(record["port"])], cookie=COOKIE_DEVICE)

    def _install_uplink_broadcast(self, datapath, extra_port: int | None = None) -> None:
        """The gateway's broadcasts (ARP for a device) reach the ports of provisioned devices only,
        never a port with rogues alone. Rebuilt from the registry here (a reconnect); a device
        provisioned later changes the flow only if its port is new (many devices share a cell's)."""
        parser = datapath.ofproto_parser
        with self.registry.lock:
            ports = {r["port"] for r in self.registry.devices.values() if r["provisioned_at"] is not None}
        if extra_port is not None:
            ports.add(extra_port)
        self._broadcast_ports = ports
        self._flow(datapath, PRIO_UPLINK_BROADCAST,
                   parser.OFPMatch(in_port=self.registry.gateway["port"], eth_dst=BROADCAST),
                   [parser.OFPActionOutput(p) for p in sorted(ports)], cookie=COOKIE_BROADCAST)

    def _reassert_access_flows(self, datapath) -> None:
        """After a (re)connect or the gateway pin: every known device's flows, from the registry."""
        if self.registry.gateway is None:
            return
        self._install_uplink_broadcast(datapath)
        with self.registry.lock:
            device_ids = list(self.registry.devices)
        for device_id in device_ids:
            self._provision(datapath, device_id)

    # -- discovery probes and the key request --------------------------------------------------
    def _probe_loop(self) -> None:
        """Every probe interval: probe what is still unknown, then check discovery and keys."""
        while True:
            hub.sleep(self.settings.probe_interval_s)
            try:
                datapath = self.access_dp
                if datapath is not None and not self.registry.all_provisioned():
                    self._probe(datapath)
                self.registry.flush()
                if self.registry.discovery_timed_out(time.time(), self.settings.discovery_timeout_s):
                    missing = self.registry.discovery["missing"]
                    self.logger.warning("qiot: discovery timed out; %d missing: %s%s", len(missing),
                                        ", ".join(missing[:20]), ", ..." if len(missing) > 20 else "")
                self._maybe_request_keys()
            except Exception:  # the loop must survive a switch vanishing mid-probe
                self.logger.exception("qiot: probe loop")

    def _probe(self, datapath) -> None:
        """ARP-probe (sender 0.0.0.0, RFC 5227) the gateway IP until it is pinned, then each undiscovered
        device (devices found first would wait for the uplink, and the gateway's answer would queue
        behind theirs)."""
        if self.registry.gateway is None:
            targets = [self.settings.gateway_ip]
        else:
            with self.registry.lock:
                targets = [d.ip for d in self.registry.inventory if d.device_id not in self.registry.devices]
            # Each probe is flooded to every port of the access switch: probing thousands of devices
            # at once would cost ports x devices packets a round. A bounded share per round, in turn;
            # stations also announce themselves (a gratuitous ARP each, sent by the testbed).
            start = self._probe_turn % len(targets) if targets else 0
            targets = (targets[start:] + targets[:start])[: self.settings.probes_per_round]
            self._probe_turn += len(targets)
        for ip in targets:
            probe = packet.Packet()
            probe.add_protocol(ethernet.ethernet(dst=BROADCAST, src=self.settings.probe_mac,
                                                 ethertype=ether_types.ETH_TYPE_ARP))
            probe.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=self.settings.probe_mac, src_ip="0.0.0.0",
                                       dst_mac="00:00:00:00:00:00", dst_ip=ip))
            probe.serialize()
            ofproto, parser = datapath.ofproto, datapath.ofproto_parser
            self._send(datapath, parser.OFPPacketOut(datapath=datapath, buffer_id=ofproto.OFP_NO_BUFFER,
                                                     in_port=ofproto.OFPP_CONTROLLER,
                                                     actions=[parser.OFPActionOutput(ofproto.OFPP_FLOOD)],
                                                     data=probe.data))

    def start_discovery(self) -> dict:
        """The testbed's stations are attached: the discovery window opens now (REST)."""
        if self.registry.start_discovery(time.time()):
            self.logger.info("qiot: discovery started on the testbed's signal")
        return self.registry.progress()

    def configure_key_manager(self, config: dict, retry_failed: bool = True) -> dict:
        """Set (or replace) the key manager; with ``retry_failed`` (a new configuration over REST),
        devices whose earlier request failed are asked again."""
        url = config.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError("'url' missing or not a string")
        pid = config.get("netns_pid")
        if pid is not None and not isinstance(pid, int):
            raise ValueError("'netns_pid' is not an integer")
        requester = HttpKeyRequester(url, pid, self.settings.key_request_timeout_s,
                                     config.get("ca"), config.get("cert"), config.get("key"))
        with self._key_lock:
            self.requester = requester
            self._retry_failed = retry_failed
        self.registry.set_key_manager(requester.describe())
        self.logger.info("qiot: key manager %s (netns of pid %s)", url, pid)
        return requester.describe()

    def _maybe_request_keys(self) -> None:
        """One request per device once discovery is over (complete or timed out); late devices later."""
        discovery = self.registry.discovery
        if discovery["completed_at"] is None and discovery["timed_out_at"] is None:
            return
        with self._key_lock:
            if self.requester is None or (self._key_thread is not None and self._key_thread.is_alive()):
                return
            devices = self.registry.devices_needing_keys(include_failed=self._retry_failed)
            self._retry_failed = False
            if not devices:
                return
            index = self.registry.begin_key_request(devices, time.time(), self.requester.describe()["url"])
            self._key_thread = threading.Thread(target=self._key_request_worker,
                                                args=(self.requester, index, devices), daemon=True)
            self._key_thread.start()

    def _key_request_worker(self, requester: KeyRequester, index: int, devices: list[str]) -> None:
        """Retry until the key manager answers or the deadline passes (it may still be starting)."""
        deadline = time.monotonic() + self.settings.key_request_deadline_s
        attempts, error = 0, None
        while True:
            attempts += 1
            try:
                keys = requester.request(devices)
            except KeyRequestError as exc:
                if error != str(exc):  # each new kind of failure once, not every retry
                    self.logger.warning("qiot: key request attempt %d: %s", attempts, exc)
                error = str(exc)
                if time.monotonic() + self.settings.key_request_retry_s > deadline:
                    break
                time.sleep(self.settings.key_request_retry_s)
                continue
            self.registry.finish_key_request(index, time.time(), keys, attempts)
            self.logger.info("qiot: %d keys requested, %d key ids received", len(devices), len(keys))
            return
        self.registry.finish_key_request(index, time.time(), None, attempts, error)
        self.logger.error("qiot: key request for %d devices failed after %d attempts: %s", len(devices), attempts, error)

    def _mark_interrupted_requests(self) -> None:
        """A request the previous controller process left in progress is asked again."""
        with self.registry.lock:
            for request in self.registry.key_requests:
                if request["status"] == "in progress":
                    request["status"] = "interrupted"

    # -- helpers -------------------------------------------------------------------------------
    def _flow(self, datapath, priority, match, actions, cookie=0, idle_timeout=0, hard_timeout=0, flags=0):
        parser = datapath.ofproto_parser
        instructions = [parser.OFPInstructionActions(datapath.ofproto.OFPIT_APPLY_ACTIONS, actions)]
        self._send(datapath, parser.OFPFlowMod(datapath=datapath, priority=priority, match=match, cookie=cookie,
                                               instructions=instructions, idle_timeout=idle_timeout,
                                               hard_timeout=hard_timeout, flags=flags))

    def _packet_out(self, datapath, msg, in_port: int, out_port: int) -> None:
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        data = msg.data if msg.buffer_id == ofproto.OFP_NO_BUFFER else None
        self._send(datapath, parser.OFPPacketOut(datapath=datapath, buffer_id=msg.buffer_id, in_port=in_port,
                                                 actions=[parser.OFPActionOutput(out_port)], data=data))

    def _send(self, datapath, message) -> None:
        with self._send_lock:
            datapath.send_msg(message)

    def write_snapshot(self) -> None:
        """The final northbound view, next to the registry (what ``qiot run`` keeps of the controller)."""
        from controllers.registry import write_json_atomic

        self.registry.flush()  # what changed since the last save is kept too
        if self.settings.state_dir is not None:
            write_json_atomic(self.settings.state_dir / "snapshot.json", self.registry.snapshot())


def _text(name) -> str:
    return name.decode("utf-8", "replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
