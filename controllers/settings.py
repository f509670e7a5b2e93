"""Settings of the provisioning controller: where its inputs are, and every timing it uses.

Pure (no os-ken import), so the launcher can build it from the command line before os-ken starts
and unit tests can construct it. The timings are engineering choices for an emulated testbed, not
figures from the paper (which gives none for provisioning): each is marked as an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from topologies.fig1 import ACCESS_SWITCH, GW_WIRELESS_IP

# Assumption: learned flows idle out after 60 s (infrastructure switches of the provisioning app and
# the plain learning switch alike), so a host that moves (or a restarted run) is relearned.
LEARNED_FLOW_IDLE_TIMEOUT_S = 60


@dataclass(frozen=True)
class ProvisioningSettings:
    """Inputs, identities and timings of the provisioning app (see each field's comment)."""

    inventory_path: Path
    state_dir: Path
    rest_port: int | None = None
    rest_host: str = "127.0.0.1"

    #: Bridge name of the wireless access switch (Fig. 1's ``qap4``); devices attach only there.
    access_switch: str = ACCESS_SWITCH
    #: The gateway's address on the wireless side: the access-switch port it answers from is the uplink.
    gateway_ip: str = GW_WIRELESS_IP
    #: Source MAC of the controller's own ARP probes: locally administered, outside the device range.
    probe_mac: str = "02:51:c0:00:00:01"

    # Assumption: 1 s between ARP probe rounds for undiscovered devices (Linux re-ARPs at 1 s too).
    probe_interval_s: float = 1.0
    # Assumption: at most 20 devices probed per round: each probe floods every port of the access switch.
    probes_per_round: int = 20
    # Assumption: the registry is rewritten at most once a second (a crash loses at most that).
    registry_save_interval_s: float = 1.0
    # Assumption: once 60 s pass without a new device, the ones still undiscovered are reported
    # missing and the keys of the discovered ones are requested without them. The window is counted
    # from the last device found, so a large fleet found at a bounded rate is not cut off.
    discovery_timeout_s: float = 60.0
    #: Discovery starts on the REST signal (``POST /qiot/discovery/start``, sent by the testbed once
    #: its stations are attached) instead of when the access switch connects: 13,000 stations take
    #: minutes to make, longer than any fixed window (measured: 150 s before the network was up).
    discovery_start_on_signal: bool = False
    learned_idle_timeout_s: int = LEARNED_FLOW_IDLE_TIMEOUT_S
    # Assumption: a rogue's drop flow idles out after 60 s and is re-examined at the latest after
    # 300 s, so a MAC-flooding host cannot fill the flow table with permanent entries.
    rogue_idle_timeout_s: int = 60
    rogue_hard_timeout_s: int = 300

    #: Key manager endpoint (POST ``{"devices": [...]}`` -> ``{"keys": {id: key_id}}``); None = none.
    key_request_url: str | None = None
    #: PID of a process in the network namespace the key request must be sent from (Mininet host).
    key_request_netns_pid: int | None = None
    #: CA bundle for an https key manager, and an optional client certificate and key (PEM files).
    key_request_ca: Path | None = None
    key_request_cert: Path | None = None
    key_request_key: Path | None = None
    # Assumption: the key manager may still be starting when discovery completes (the testbed starts
    # the key services after the network): retry every 2 s for up to 180 s, 10 s per attempt.
    key_request_retry_s: float = 2.0
    key_request_deadline_s: float = 180.0
    key_request_timeout_s: float = 10.0
