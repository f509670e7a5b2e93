"""qiot L2 forwarding app for OpenFlow 1.3 switches (Ryu API, run on os-ken).

Written in the style of Ryu's ``simple_switch_13``: a table-miss flow sends unknown traffic to the
controller, which learns source MACs per switch and installs exact flows toward known destinations,
so after the first packet of a conversation the switch forwards on its own. Provisioning by MAC
(devices known from an inventory, rogue MACs dropped) builds on top of this in
:mod:`controllers.provisioning`, which keeps this learning for the infrastructure switches.
"""

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import ofproto_v1_3

# Learned flows expire when a conversation goes idle, so a host that moves (or a restarted run that
# reuses a MAC on another port) is re-learned instead of black-holed.
from controllers.settings import LEARNED_FLOW_IDLE_TIMEOUT_S


class QiotL2Switch(app_manager.OSKenApp):
    """Learning switch: one MAC table per datapath, flows installed for known destinations."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}
        self.learned_idle_timeout_s = LEARNED_FLOW_IDLE_TIMEOUT_S

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev):
        """Install the table-miss flow: without it OpenFlow 1.3 switches drop unknown packets."""
        datapath = ev.msg.datapath
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        match = parser.OFPMatch()
        actions = [parser.OFPActionOutput(ofproto.OFPP_CONTROLLER, ofproto.OFPCML_NO_BUFFER)]
        self._add_flow(datapath, priority=0, match=match, actions=actions)
        self.logger.info("qiot: switch %016x connected", datapath.id)

    def _add_flow(self, datapath, priority, match, actions, idle_timeout=0, buffer_id=None):
        parser = datapath.ofproto_parser
        instructions = [parser.OFPInstructionActions(datapath.ofproto.OFPIT_APPLY_ACTIONS, actions)]
        kwargs = dict(datapath=datapath, priority=priority, match=match, instructions=instructions,
                      idle_timeout=idle_timeout)
        if buffer_id is not None:
            kwargs["buffer_id"] = buffer_id
        datapath.send_msg(parser.OFPFlowMod(**kwargs))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in_handler(self, ev):
        """Learn the source port, then forward (flooding while the destination is unknown)."""
        msg = ev.msg
        datapath = msg.datapath
        ofproto = datapath.ofproto
        parser = datapath.ofproto_parser
        in_port = msg.match["in_port"]

        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return  # link discovery frames are not data traffic
        table = self.mac_to_port.setdefault(datapath.id, {})
        table[eth.src] = in_port

        out_port = table.get(eth.dst, ofproto.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofproto.OFPP_FLOOD:
            match = parser.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src)
            if msg.buffer_id != ofproto.OFP_NO_BUFFER:
                # The switch still holds the packet: the flow-mod releases it, no packet-out needed.
                self._add_flow(datapath, 1, match, actions, self.learned_idle_timeout_s, msg.buffer_id)
                return
            self._add_flow(datapath, 1, match, actions, self.learned_idle_timeout_s)
        data = msg.data if msg.buffer_id == ofproto.OFP_NO_BUFFER else None
        datapath.send_msg(parser.OFPPacketOut(datapath=datapath, buffer_id=msg.buffer_id,
                                              in_port=in_port, actions=actions, data=data))
