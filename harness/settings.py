"""Typed settings: frozen dataclasses read from TOML/JSON tables, checked field by field, written back.

Every configurable part of qiot (the sections of a scenario, of a device profile, and the run
configuration that flows from them to every daemon) is a frozen dataclass whose fields are declared
with :func:`setting`: the type comes from the annotation, bounds, allowed values and meaning from the
field's metadata. One reader (:func:`from_table`) turns a table into the dataclass and reports a bad
value as ``FILE: [section] key must be ...``; one writer (:func:`to_table`) turns it back into a plain
table (JSON-ready). Cross-field rules live in the dataclass's ``__post_init__`` (raising ValueError).

Why hand-written rather than pydantic or cattrs: the checks are few (type, bounds, choices, unknown
keys), the error texts must name the file and the ``[section] key`` exactly as a user wrote them,
TOML integers must be accepted where a number is asked for, and the pure cores that own these
dataclasses should not depend on a validation framework. The whole mechanism is this module.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

MISSING = dataclasses.MISSING


class SettingsError(ValueError):
    """A settings table holds a bad value; the message names the file and the ``[section] key``."""


def setting(default: Any = MISSING, *, doc: str, minimum: float | None = None, maximum: float | None = None,
            above: float | None = None, choices: tuple | None = None, derived: bool = False) -> Any:
    """Declare one settings field.

    ``default``: the value when the table omits the key (MISSING: the key is required);
    ``doc``: what the value means (shown when a required key is missing); ``minimum``/``maximum``:
    inclusive bounds, ``above``: exclusive lower bound; ``choices``: allowed values of a string;
    ``derived``: the value comes from elsewhere in the scenario (e.g. the QKD link's loss from
    ``[fibre]``), so a user's table may not set it, while an internal table (``run.json``) carries it.
    """
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum, "above": above, "choices": choices,
                "derived": derived}
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


def subsection(cls: type, *, inline: bool = False) -> Any:
    """Declare a field holding the settings dataclass ``cls``: a sub-table ``[section.name]``, or,
    with ``inline``, keys that sit directly in the parent's table (e.g. the QKD device physics in
    ``[qkd]``). An omitted sub-table means ``cls``'s own defaults."""
    return dataclasses.field(default_factory=cls, metadata={"inline": inline, "doc": cls.__doc__ or ""})


def read_toml(path: Path, error: type[ValueError] = SettingsError) -> dict[str, Any]:
    """Parse a TOML settings file; unreadable or malformed files raise ``error`` naming the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None


# --- reading ------------------------------------------------------------------------------------
def from_table(cls: type, table: Any, *, path: str | Path | None = None, where: tuple[str, ...] = (),
               user: bool = True, error: type[ValueError] = SettingsError) -> Any:
    """Build dataclass ``cls`` from ``table``, checking every key; raise ``error`` naming the key.

    ``user``: the table was written by a person (a scenario or profile file): derived fields may not
    appear in it. ``where`` is the section path used in messages, ``path`` the file.
    """
    prefix = f"{path}: " if path is not None else ""
    place = f"[{'.'.join(where)}] " if where else ""
    if not isinstance(table, Mapping):
        raise error(f"{prefix}{place or 'the settings '}must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    inline = {name for name, f in fields.items() if f.metadata.get("inline")}
    own = {name for name, f in fields.items() if name not in inline and not (user and f.metadata.get("derived"))}
    inline_keys = {name: _keys(hints[name], user) for name in inline}
    readable = own.union(*inline_keys.values())
    unknown = sorted(set(table) - readable)
    if unknown:
        raise error(f"{prefix}{place}unknown key {unknown[0]!r} (allowed: {', '.join(sorted(readable))})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        label = f"{place}{name}"
        if name in inline:
            part = {key: value for key, value in table.items() if key in inline_keys[name]}
            values[name] = from_table(hints[name], part, path=path, where=where, user=user, error=error)
            continue
        present = name in table and name in own
        if not present and _is_dataclass_type(hints[name]) and name in own:
            # An omitted sub-table is an empty one: its own defaults (or required keys) apply.
            values[name] = from_table(hints[name], {}, path=path, where=where + (name,), user=user, error=error)
            continue
        if not present:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise error(f"{prefix}{label} is required ({f.metadata.get('doc') or 'no default'})")
            continue
        values[name] = _convert(hints[name], table[name], f.metadata, path, where + (name,), label, user, error)
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if isinstance(exc, error) and prefix and message.startswith(prefix):
            raise
        raise error(f"{prefix}{message}") from None


def _convert(kind: Any, value: Any, meta: Mapping, path, where, label: str, user: bool, error) -> Any:
    prefix = f"{path}: " if path is not None else ""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        kind = options[0] if len(options) == 1 else kind
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if _is_dataclass_type(kind):
        return from_table(kind, value, path=path, where=where, user=user, error=error)
    if origin is tuple:
        item = args[0]
        if not isinstance(value, (list, tuple)):
            raise error(f"{prefix}{label} must be a list, got {value!r}")
        if _is_dataclass_type(item):
            return tuple(from_table(item, entry, path=path, where=where[:-1] + (f"{where[-1]}[{i}]",),
                                    user=user, error=error) for i, entry in enumerate(value))
        return tuple(_convert(item, entry, meta, path, where, f"{label}[{i}]", user, error)
                     for i, entry in enumerate(value))
    problem = _scalar_problem(kind, value, meta)
    if problem:
        raise error(f"{prefix}{label} {problem}")
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(value)
    if kind is float:
        return float(value)
    return value


def _scalar_problem(kind: Any, value: Any, meta: Mapping) -> str | None:
    """What is wrong with a scalar ``value`` for a field of type ``kind``, or None."""
    if isinstance(kind, type) and issubclass(kind, Enum):
        allowed = tuple(member.value for member in kind)
        if value not in allowed:
            return f"must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        return None
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if isinstance(value, bool) and kind is not bool:
        return f"must be {names.get(kind, kind)}, got {value!r}"
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        return f"must be {names.get(kind, getattr(kind, '__name__', kind))}, got {value!r}"
    if kind is float and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
    if meta.get("minimum") is not None and value < meta["minimum"]:
        return f"must be >= {meta['minimum']}, got {value!r}"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be > {meta['above']}, got {value!r}"
    if meta.get("maximum") is not None and value > meta["maximum"]:
        return f"must be <= {meta['maximum']}, got {value!r}"
    return None


def _keys(cls: type, user: bool) -> set[str]:
    """The table keys a dataclass reads (inline sub-sections included)."""
    hints = typing.get_type_hints(cls)
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("inline"):
            keys |= _keys(hints[f.name], user)
        elif not (user and f.metadata.get("derived")):
            keys.add(f.name)
    return keys


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


# --- writing and changing -----------------------------------------------------------------------
def to_table(obj: Any) -> Any:
    """A settings dataclass (recursively) as plain dicts, lists, strings and numbers."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        table: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = to_table(getattr(obj, f.name))
            if f.metadata.get("inline"):
                table.update(value)
            else:
                table[f.name] = value
        return table
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [to_table(item) for item in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def with_values(obj: Any, changes: Mapping[str, Any], *, path: str | Path | None = None,
                error: type[ValueError] = SettingsError) -> Any:
    """A copy of ``obj`` with ``{"section.key": value}`` changes applied and every field checked again."""
    table = to_table(obj)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = table
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise error(f"{f'{path}: ' if path else ''}no section [{part}] for {dotted!r}")
            target = target[part]
        if key not in target:
            raise error(f"{f'{path}: ' if path else ''}unknown setting {dotted!r}")
        target[key] = to_table(value)
    return from_table(type(obj), table, path=path, user=False, error=error)

