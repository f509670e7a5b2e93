"""Keys the QKD link served per key refresh period, measured at the relay (the emulated Fig. 2d points).

The paper counts a link's capacity as the devices it can serve per 30 min refresh period. A run
measures it where devices meet the key path: ``qkd/relay.csv`` records every device fetch with its
outcome (``renewed``: a fresh key; ``refused``: due for renewal, but the KME had none, so the device
keeps its old key; ``current``: its key was still valid). A refused device tries again (its retries
are refused fetches too), so the devices the link could not serve in a period are counted apart:
those refused at least once and not renewed in it. Counted per refresh period of the QKD mode, with
the model's expectation beside each period:

- period 1 of a run that starts from steady state (a full buffer) can serve the buffer plus what
  the link distils in the period: ``buffer_keys + R * T / key_bits``;
- every later period only what is distilled in it, ``R * T / key_bits`` (the paper's figure);
- a device can be served at most once a period, so neither exceeds the devices due.

Pure: frames and numbers in, a frame out; the run directory's reader is :mod:`harness.analysis.rundir`.
"""

from __future__ import annotations

import math

import pandas as pd

#: Columns of :func:`keys_served` (``keys_served.csv`` in the QKD mode's folder).
SERVED_COLUMNS = ("period", "from_s", "to_s", "complete", "fetches", "devices", "renewed", "refused", "current",
                  "devices_refused", "expected_renewed", "renewed_vs_expected_pct")
OUTCOMES = ("renewed", "refused", "current")


def measures_capacity(scenario: dict) -> bool:
    """True for a capacity experiment (``bcn-capacity``, ``hpn-capacity``): every device wakes once per
    key refresh period, so the keys renewed in a period are what the link could serve, not what a
    few devices happened to ask for (a run's ``scenario`` as its metadata holds it)."""
    wake = scenario.get("devices", {}).get("wake_period_s")
    period = scenario.get("qkd", {}).get("refresh_period_s")
    return isinstance(wake, (int, float)) and isinstance(period, (int, float)) and wake >= period


def expected_renewals(period: int, rate_bps: float, key_bits: int, refresh_period_s: float,
                      buffer_keys: int, devices: int, full_buffer_at_start: bool) -> float:
    """Keys the link can hand out in refresh period ``period`` (1-based; see module docstring)."""
    distilled = rate_bps * refresh_period_s / key_bits
    stored = buffer_keys if period == 1 and full_buffer_at_start else 0
    return min(float(devices), distilled + stored)


def keys_served(fetches: pd.DataFrame, mode_start_s: float, duration_s: float, refresh_period_s: float,
                rate_bps: float, key_bits: int, buffer_keys: int, devices: int,
                full_buffer_at_start: bool) -> pd.DataFrame:
    """One row per refresh period of the mode: fetches, outcomes, and the model's renewals.

    ``fetches``: relay.csv (``t_emul`` on the QKD link's clock, ``device``, ``outcome``);
    ``mode_start_s``: the mode's start on that clock; ``duration_s``: the mode's emulated length.
    A period that the run does not cover to its end is marked ``complete`` False (its counts are
    partial and its comparison is left empty)."""
    if refresh_period_s <= 0 or duration_s <= 0:
        raise ValueError("refresh_period_s and duration_s must be > 0")
    unknown = set(fetches["outcome"]) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"relay.csv: unknown outcome(s) {', '.join(sorted(map(str, unknown)))}")
    since = fetches["t_emul"].astype(float) - mode_start_s
    inside = fetches[(since >= 0) & (since < duration_s)].assign(period=(since // refresh_period_s).astype(int) + 1)
    rows = []
    for period in range(1, math.ceil(duration_s / refresh_period_s - 1e-9) + 1):
        start, end = (period - 1) * refresh_period_s, min(period * refresh_period_s, duration_s)
        chosen = inside[inside["period"] == period]
        counts = chosen["outcome"].value_counts()
        complete = end - start >= refresh_period_s - 1e-6
        expected = expected_renewals(period, rate_bps, key_bits, refresh_period_s, buffer_keys, devices,
                                     full_buffer_at_start)
        renewed = int(counts.get("renewed", 0))
        served = set(chosen.loc[chosen["outcome"] == "renewed", "device"])
        unserved = set(chosen.loc[chosen["outcome"] == "refused", "device"]) - served
        rows.append({"period": period, "from_s": start, "to_s": end, "complete": complete,
                     "fetches": len(chosen), "devices": int(chosen["device"].nunique()), "renewed": renewed,
                     "refused": int(counts.get("refused", 0)), "current": int(counts.get("current", 0)),
                     "devices_refused": len(unserved),
                     "expected_renewed": expected if complete else math.nan,
                     "renewed_vs_expected_pct": 100.0 * (renewed - expected) / expected
                     if complete and expected > 0 else math.nan})
    return pd.DataFrame(rows, columns=list(SERVED_COLUMNS))


def served_lines(table: pd.DataFrame, loss_db: float) -> list[str]:
    """Terminal text: one line per refresh period."""
    lines = []
    for row in table.itertuples(index=False):
        compared = (f"; model {row.expected_renewed:,.0f} ({row.renewed_vs_expected_pct:+.1f} %)"
                    if row.complete and math.isfinite(row.expected_renewed) else " (period not complete)")
        lines.append(f"keys served, period {row.period} ({row.from_s / 60:g}-{row.to_s / 60:g} min, {loss_db:g} dB): "
                     f"{row.renewed:,} renewed, {row.devices_refused:,} devices refused (kept their key; "
                     f"{row.refused:,} refused fetches), {row.current:,} still current{compared}")
    return lines
