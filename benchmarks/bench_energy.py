"""Print the QKD vs DKG energy of the pure simulation per device profile and variant, and how long it takes.

Usage: .venv/bin/python benchmarks/bench_energy.py [--scenario bcn] [--hours 24] [--devices 3]
Each variant runs the scenario's one device loop (harness.devices.simulate) with some settings
changed; "n/a" marks a variant the profile cannot do (e.g. X25519 without an implementation of it).
The QKD-vs-DKG lines give Welch's 95% interval of the difference over devices (relative to DKG) and
its p-value: simulated devices differ only in wake phase and jitter, so these intervals measure that
spread, not the uncertainty of the profile's figures. The simulation must answer a sweep point in
well under a second per device-day.
"""

from __future__ import annotations

import argparse
import time

from harness import scenario as scenarios
from harness.analysis.stats import welch_difference
from harness.devices.simulate import simulate
from harness.results import summarize_energy
from harness.sweep import SweepError, configure

PROFILES = ("fipy-micropython", "fipy")
VARIANTS = [
    ("dkg p256", "dkg", {}),
    ("dkg x25519", "dkg", {"devices.dkg_curve": "x25519"}),
    ("dkg p256 + ECDSA auth", "dkg", {"devices.dkg_authenticated": True}),
    ("dkg p256 keygen before assoc", "dkg", {"devices.keygen_before_association": True}),
    ("dkg p256 sense before assoc", "dkg", {"devices.sense_before_association": True}),
    ("qkd psk_wrap", "qkd", {"kme.wireless_transport": "psk_wrap"}),
    ("qkd tls_resume", "qkd", {"kme.wireless_transport": "tls_resume"}),
    ("qkd tls_full", "qkd", {"kme.wireless_transport": "tls_full"}),
    ("qkd tls_full sense before assoc", "qkd", {"kme.wireless_transport": "tls_full",
                                                "devices.sense_before_association": True}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="bcn")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--devices", type=int, default=3)
    args = parser.parse_args()
    base = scenarios.load(args.scenario)
    for profile_name in PROFILES:
        print(f"\n== {args.scenario} with profile {profile_name}: {args.hours:g} h, {args.devices} device(s)")
        print(f"{'variant':34s} {'RDC %':>8s} {'+-95%':>7s} {'life d':>8s} {'+-95%':>6s} {'sim s':>6s} "
              f"{'us/wake':>8s}")
        results = {}
        for name, mode, changes in VARIANTS:
            try:
                settings, profile = configure(base, {"devices.energy_profile": profile_name, **changes}, args.devices)
            except SweepError:
                print(f"{name:34s} {'n/a':>8s}")
                continue
            started = time.perf_counter()
            result = simulate(settings, mode, duration_s=args.hours * 3600, profile=profile)
            elapsed = time.perf_counter() - started
            assert result.sent == result.decrypted
            s = summarize_energy(result.rows)
            results[name] = ([r.rdc for r in result.cumulative], [r.battery_life_days for r in result.cumulative])
            print(f"{name:34s} {100 * s['rdc_mean']:8.4f} {100 * s['rdc_ci95']:7.4f} "
                  f"{s['battery_life_days_mean']:8.2f} {s['battery_life_days_ci95']:6.2f} {elapsed:6.2f} "
                  f"{1e6 * elapsed / max(1, result.sent):8.0f}")
        for name in ("qkd psk_wrap", "qkd tls_resume", "qkd tls_full"):
            if name not in results:
                continue
            parts = []
            for label, side, baseline in zip(("RDC", "battery life"), results[name], results["dkg p256"]):
                diff = welch_difference(side, baseline, "devices")
                scale = 100 / (sum(baseline) / len(baseline))
                parts.append(f"{label} {diff.rel_pct:+.2f}% (95% CI {scale * diff.low:+.3f}..{scale * diff.high:+.3f}, "
                             f"p {diff.p_value:.2g})")
            print(f"  {name} vs dkg p256: " + "; ".join(parts) + f" [{diff.method}]")


if __name__ == "__main__":
    main()
