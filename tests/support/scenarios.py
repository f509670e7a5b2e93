"""Test-only: scenario files with deliberately bad settings."""

from __future__ import annotations

from pathlib import Path

from harness.scenario import load


def zero_calibration_scenario(directory: Path) -> Path:
    """A copy of the hpn scenario whose two-constant calibration is a_s = b_s = 0 (no finite rate)."""
    lines = [("a_s = 0.0" if line.startswith("a_s =") else "b_s = 0.0" if line.startswith("b_s =") else line)
             for line in load("hpn").path.read_text(encoding="utf-8").splitlines()]
    assert "a_s = 0.0" in lines and "b_s = 0.0" in lines, "hpn.toml no longer has a_s/b_s lines"
    path = directory / "zero-calibration.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
