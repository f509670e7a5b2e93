"""`qiot run`'s progress in a log file: one line per emulated interval of each mode, and where the run
directory is (harness.progress)."""

import json
from datetime import datetime, timezone

import pytest

from harness.progress import ProgressLines, RunDirNotice


def drive(progress, mode: str, hours: float, steps: int, wall: list, wall_per_step: float = 1.0) -> None:
    """Call ``progress`` as the runner does, ``steps`` times from 0 to the end of the mode."""
    for step in range(steps + 1):
        fraction = step / steps
        wall[0] += wall_per_step
        progress(mode, fraction, {"emulated_h": fraction * hours, "hours": hours, "devices": 3,
                                  "wakes": 3 * step, "received": 3 * step})


def test_one_line_per_interval_and_one_at_the_start_of_each_mode():
    lines, wall = [], [0.0]
    progress = ProgressLines(3600.0, lines.append, clock=lambda: wall[0],
                             now=lambda: datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc))
    drive(progress, "qkd", 24.0, 24 * 30, wall)  # the runner calls far more often than once an interval
    drive(progress, "dkg", 24.0, 24 * 30, wall)
    for mode in ("qkd", "dkg"):
        own = [line for line in lines if f" qiot: {mode}: " in line]
        assert len(own) == 1 + 24
        assert own[0].endswith(f"{mode}: devices started, 24 h emulated, a line every 3600 emulated s")
        hours = [float(line.split(f"{mode}: ")[1].split("/")[0]) for line in own[1:]]
        assert hours == pytest.approx([float(h) for h in range(1, 25)])
    assert all(line.startswith("2026-12-02T10:00:00Z qiot: ") for line in lines)
    assert "(50 %)" in lines[12] and "6.0 min elapsed, about 6.0 min left" in lines[12]  # 1 wall s a call
    assert lines[24].endswith("elapsed") and "100 %" in lines[24]


def test_a_run_shorter_than_its_interval_still_ends_with_a_line():
    lines, wall = [], [0.0]
    progress = ProgressLines(3600.0, lines.append, clock=lambda: wall[0])
    drive(progress, "dkg", 0.5, 10, wall)
    assert len(lines) == 2 and "0.50/0.5 h emulated" in lines[-1] and "(100 %)" in lines[-1]


def test_an_interval_must_be_positive():
    with pytest.raises(ValueError):
        ProgressLines(0.0)


def test_the_run_directory_is_named_once_the_runner_made_it(tmp_path):
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "metadata.json").write_text(json.dumps({"status": "running"}))  # a crashed run
    told, shown = [], []
    notice = RunDirNotice(tmp_path, lambda *args: shown.append(args), told.append)
    assert notice.run_dir() is None
    run_dir = tmp_path / "bcn-20261202T100000Z"
    run_dir.mkdir()
    (run_dir / "metadata.json").write_text(json.dumps({"status": "running"}))
    notice("qkd", 0.0, {})
    notice("qkd", 0.5, {})
    assert told == [f"qiot: writing to {run_dir} (kept, marked interrupted, if the run is stopped)"]
    assert [args[:2] for args in shown] == [("qkd", 0.0), ("qkd", 0.5)]
