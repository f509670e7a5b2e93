"""Settings of the emulated devices: the scenario's ``[devices]`` section.

How many devices, how often they wake, how they publish, which energy profile describes them and
which curve DKG uses, and the order of a wake's steps (sensor read and DKG key pair before or after
the Wi-Fi association; the association's duration is a device figure, in the energy profile). Every device of a run gets the same settings; its identity (name, address,
namespace) comes from the Fig. 1 site.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.enums import DkgCurve
from harness.settings import setting


@dataclass(frozen=True, kw_only=True)
class DeviceSettings:
    """The scenario's ``[devices]`` table."""

    count: int = setting(3, doc="number of devices (an emulated run allows what fits into the machine's "
                                "memory: harness/emulator.py)", minimum=1)
    wake_period_s: float = setting(doc="a device wakes, reads its sensors and publishes every period, emulated s",
                                   minimum=0.1)
    mqtt_qos: int = setting(1, doc="MQTT QoS of the readings", choices=(0, 1, 2))
    publish_timeout_s: float = setting(doc="a publish not acknowledged by then counts as lost, s", minimum=0.1)
    energy_profile: str = setting(doc="device profile: a file in experiments/profiles/ or a .toml path")
    energy_interval_s: float = setting(3600.0, doc="energy.csv has one row per device per interval of emulated "
                                                   "time, s", minimum=1.0)
    dkg_curve: DkgCurve = setting(DkgCurve.P256, doc="curve of the on-device ECDH key agreement in DKG mode")
    dkg_authenticated: bool = setting(False, doc="DKG signs the device's public key (ECDSA) and verifies the "
                                                 "platform's")
    keygen_before_association: bool = setting(False, doc="DKG makes its key pair before associating (radio "
                                                         "still off)")
    sense_before_association: bool = setting(False, doc="the device reads its sensors before associating (radio "
                                                        "still off) rather than after")
