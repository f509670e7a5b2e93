"""The one settings mechanism: typed reading with named errors, writing back, overrides, inline keys."""

from dataclasses import dataclass

import pytest

from harness.enums import KeyTransport
from harness.settings import SettingsError, from_table, setting, subsection, to_table, with_values


@dataclass(frozen=True, kw_only=True)
class Inner:
    depth: float = setting(1.5, doc="how deep", minimum=0.0)


@dataclass(frozen=True, kw_only=True)
class Outer:
    count: int = setting(doc="how many", minimum=1, maximum=10)
    ratio: float = setting(0.5, doc="a share", above=0.0, maximum=1.0)
    transport: KeyTransport = setting(KeyTransport.TLS_FULL, doc="an enumeration")
    points: tuple[float, ...] = setting((1.0, 2.0), doc="a list")
    derived: float = setting(0.0, doc="set by the builder", derived=True)
    inner: Inner = subsection(Inner)
    flat: Inner = subsection(Inner, inline=True)


def test_reads_converts_and_fills_defaults():
    value = from_table(Outer, {"count": 3, "ratio": 1, "transport": "psk_wrap", "points": [4, 5],
                               "inner": {"depth": 2}, "depth": 7})
    assert value.count == 3 and value.ratio == 1.0 and isinstance(value.ratio, float)
    assert value.transport is KeyTransport.PSK_WRAP and value.points == (4.0, 5.0)
    assert value.inner.depth == 2.0 and value.flat.depth == 7.0  # an inline section reads the parent's keys


@pytest.mark.parametrize("table, message", [
    ({}, r"f\.toml: \[s\] count is required \(how many\)"),
    ({"count": 0}, r"\[s\] count must be >= 1, got 0"),
    ({"count": 11}, r"count must be <= 10"),
    ({"count": True}, r"count must be an integer, got True"),
    ({"count": 2, "ratio": 0}, r"ratio must be > 0.0"),
    ({"count": 2, "ratio": float("nan")}, r"ratio must be a finite number"),
    ({"count": 2, "transport": "carrier pigeon"}, r"transport must be one of 'tls_full', 'tls_resume', 'psk_wrap'"),
    ({"count": 2, "points": 3}, r"points must be a list"),
    ({"count": 2, "cuont": 3}, r"\[s\] unknown key 'cuont' \(allowed: .*count"),
    ({"count": 2, "derived": 1.0}, r"unknown key 'derived'"),
    ({"count": 2, "inner": {"depth": -1}}, r"\[s.inner\] depth must be >= 0.0"),
])
def test_bad_values_name_file_section_and_key(table, message):
    with pytest.raises(SettingsError, match=message):
        from_table(Outer, table, path="f.toml", where=("s",))


def test_writes_back_and_round_trips_with_derived_values():
    value = from_table(Outer, {"count": 2, "depth": 3.0})
    table = to_table(value)
    assert table["transport"] == "tls_full" and table["points"] == [1.0, 2.0] and table["depth"] == 3.0
    assert "flat" not in table and table["inner"] == {"depth": 1.5}
    changed = with_values(value, {"derived": 9.0, "inner.depth": 4.0})
    assert from_table(Outer, to_table(changed), user=False) == changed
    assert changed.derived == 9.0 and changed.inner.depth == 4.0 and value.derived == 0.0
    with pytest.raises(SettingsError, match=r"count must be >= 1"):
        with_values(value, {"count": 0})
    with pytest.raises(SettingsError, match="unknown setting 'inner.width'"):
        with_values(value, {"inner.width": 1})
