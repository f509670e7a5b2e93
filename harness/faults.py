"""Faults on purpose: the scenario's ``[[faults]]`` schedule (what breaks, when, for how long).

Each entry names a :class:`~harness.enums.FaultKind`, when it starts (emulated seconds after the
mode starts) and how long it lasts; ``target`` says where, for the kinds that need one (which KME
end, which devices). The injector that carries them out on the emulated clock sits at the network
edge (:mod:`harness.faultinjector`); this module is the pure schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.enums import FaultKind
from harness.settings import setting

#: Where a kind may be aimed: KME ends; device targets are ids ("d1,d3") or a fraction ("25%").
KME_TARGETS = ("alice", "bob")
_DEVICE_TARGET = re.compile(r"^(\d+(\.\d+)?%|d\d+(,d\d+)*)$")


@dataclass(frozen=True, kw_only=True)
class FaultSpec:
    """One scheduled fault."""

    kind: FaultKind = setting(doc="what breaks: " + ", ".join(k.value for k in FaultKind))
    at_s: float = setting(doc="emulated seconds after the mode starts", minimum=0.0)
    duration_s: float = setting(doc="emulated seconds until it recovers", above=0.0)
    target: str = setting("", doc="kme_restart: alice or bob (default bob); wireless_outage: device ids "
                                  "'d1,d2' or a share of the devices '25%' (default all)")

    def __post_init__(self) -> None:
        if self.kind == FaultKind.KME_RESTART and self.target not in ("",) + KME_TARGETS:
            raise ValueError(f"[[faults]] kme_restart target must be one of {', '.join(KME_TARGETS)}, "
                             f"got {self.target!r}")
        if self.kind == FaultKind.WIRELESS_OUTAGE and self.target and not _DEVICE_TARGET.match(self.target):
            raise ValueError(f"[[faults]] wireless_outage target must be device ids like 'd1,d2' or a share "
                             f"like '25%', got {self.target!r}")
        if self.kind not in (FaultKind.KME_RESTART, FaultKind.WIRELESS_OUTAGE) and self.target:
            raise ValueError(f"[[faults]] {self.kind.value} takes no target, got {self.target!r}")

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def label(self) -> str:
        """``KIND@AT+DURATION`` (the command-line form)."""
        where = f":{self.target}" if self.target else ""
        return f"{self.kind.value}{where}@{self.at_s:g}+{self.duration_s:g}"


def parse_fault(text: str) -> FaultSpec:
    """Parse the command-line form ``KIND[:TARGET]@AT+DURATION`` (seconds); raise ValueError."""
    match = re.fullmatch(r"([a-z_]+)(?::([^@]+))?@([0-9.]+)\+([0-9.]+)", text.strip())
    if not match:
        raise ValueError(f"{text!r}: expected KIND[:TARGET]@AT+DURATION, e.g. fibre_cut@600+600")
    kind, target, at_s, duration_s = match.groups()
    try:
        kind = FaultKind(kind)
    except ValueError:
        raise ValueError(f"{text!r}: unknown fault kind {kind!r} (known: "
                         f"{', '.join(k.value for k in FaultKind)})") from None
    return FaultSpec(kind=kind, at_s=float(at_s), duration_s=float(duration_s), target=target or "")
