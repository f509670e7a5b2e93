"""Print the QKD vs DKG energy comparison of the pure simulation, and how long the simulation takes.

Usage: .venv/bin/python benchmarks/bench_energy.py [--hours 24] [--devices 1] [--profile fipy]
Defaults: the hpn/bcn scenarios' wake period (60 s) and the paper's key refresh period (1800 s).
"""

from __future__ import annotations

import argparse
import time

from harness.energy.profile import DeviceProfile
from harness.energy.simulate import SimConfig, simulate
from harness.results import summarize_energy

VARIANTS = [
    ("dkg p256", dict(mode="dkg")),
    ("dkg x25519", dict(mode="dkg", dkg_curve="x25519")),
    ("dkg p256 + ECDSA auth", dict(mode="dkg", dkg_authenticated=True)),
    ("dkg p256 keygen before assoc", dict(mode="dkg", keygen_before_association=True)),
    ("qkd psk_wrap", dict(mode="qkd", qkd_transport="psk_wrap")),
    ("qkd tls_resumed", dict(mode="qkd", qkd_transport="tls_resume")),
    ("qkd tls_full", dict(mode="qkd", qkd_transport="tls_full")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--profile", default="fipy")
    parser.add_argument("--wake-period", type=float, default=60.0)
    parser.add_argument("--refresh-period", type=float, default=1800.0)
    args = parser.parse_args()
    base = DeviceProfile.load(args.profile)
    quiet = base.with_values({"power.radio_listens_while_associated": False})
    profiles = [("radio listens while associated", base), ("radio off while computing", quiet)]
    for label, profile in profiles:
        print(f"\n== {profile.name}: {label}; {args.hours} h, {args.devices} device(s), wake "
              f"{args.wake_period} s, refresh {args.refresh_period} s")
        print(f"{'variant':32s} {'RDC %':>8s} {'+-95%':>7s} {'I_avg mA':>9s} {'life d':>8s} {'+-95%':>6s} "
              f"{'E J/dev':>8s} {'sim s':>6s}")
        results = {}
        for name, kwargs in VARIANTS:
            config = SimConfig(duration_s=args.hours * 3600, devices=args.devices,
                               wake_period_s=args.wake_period, refresh_period_s=args.refresh_period, **kwargs)
            started = time.perf_counter()
            result = simulate(profile, config)
            elapsed = time.perf_counter() - started
            assert result.sent == result.decrypted
            s = summarize_energy(result.rows)
            whole = result.cumulative
            rdc = sum(r.rdc for r in whole) / len(whole)
            life = sum(r.battery_life_days for r in whole) / len(whole)
            current = sum(r.avg_current_ma for r in whole) / len(whole)
            energy = sum(r.energy_j for r in whole) / len(whole)
            results[name] = (rdc, life)
            print(f"{name:32s} {100 * rdc:8.4f} {100 * s['rdc_ci95']:7.4f} {current:9.4f} {life:8.2f} "
                  f"{s['battery_life_days_ci95']:6.2f} {energy:8.1f} {elapsed:6.2f}")
        dkg_rdc, dkg_life = results["dkg p256"]
        for name in ("qkd psk_wrap", "qkd tls_resumed", "qkd tls_full"):
            rdc, life = results[name]
            print(f"  {name} vs dkg p256: RDC {100 * (rdc / dkg_rdc - 1):+.1f}%, "
                  f"battery life {100 * (life / dkg_life - 1):+.1f}%")


if __name__ == "__main__":
    main()
