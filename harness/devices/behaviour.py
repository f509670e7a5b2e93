"""How a deployed device copes when the network or the key path fails.

A reading that cannot be published waits in a bounded queue and is published at the next
successful wake with its original timestamp; a failed key fetch is retried at later wakes with
exponential backoff; the previous key stays in use until its lifetime runs out, after which the
device either keeps its readings queued (plaintext, sealed when a key arrives) or drops them.
Each figure is a setting; the defaults are assumptions (no measurement of the paper's firmware).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.settings import setting

KEY_EXPIRY_ACTIONS = ("queue", "drop")


@dataclass(frozen=True, kw_only=True)
class DeviceBehaviour:
    """Queueing, retries and key lifetime of one device type."""

    queue_capacity: int = setting(
        60, doc="readings a device keeps while it cannot publish (assumption: an hour of 60 s wakes in "
                "the FiPy's RAM, a few hundred bytes each)", minimum=0)
    key_retry_backoff_max_wakes: int = setting(
        8, doc="after n failed key fetches in a row the next try waits min(2^(n-1), this) wakes "
               "(assumption: exponential backoff, capped)", minimum=1)
    key_lifetime_s: float = setting(
        3600.0, doc="a key may encrypt readings this long after it was obtained, emulated s (assumption: "
                    "two 30 min refresh periods, so one failed refresh is survived)", above=0.0)
    on_key_expiry: str = setting("queue", doc="without a valid key: queue the readings (sealed once a key "
                                              "arrives) or drop them", choices=KEY_EXPIRY_ACTIONS)

    def backoff_wakes(self, failures: int) -> int:
        """Wakes to skip before the next key attempt after ``failures`` failures in a row."""
        return 0 if failures <= 0 else min(2 ** (failures - 1), self.key_retry_backoff_max_wakes) - 1

#: How the ``error`` of a reading dropped by a full queue starts (``sent.csv``; the analysis counts it).
QUEUE_OVERFLOW = "queue overflow"
