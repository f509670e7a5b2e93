"""Deterministic mapping between Clavis 64-bit key ids and ETSI GS QKD 014 key_ID UUIDs.

Both KMEs of a link compute the same UUID for the same Clavis key id without talking to each
other. Layout (a version-8 "custom" UUID, RFC 9562 section 5.8)::

    bits 127..80  fixed 48-bit prefix 0x91071D000000 (_PREFIX, a marker)
    bits  79..76  version nibble 8
    bits  75..64  top 12 bits of the Clavis id
    bits  63..62  RFC 4122 variant 0b10
    bits  61..52  zero
    bits  51..0   low 52 bits of the Clavis id

So every 64-bit id has exactly one UUID and a UUID not of this form is rejected.
"""

from __future__ import annotations

import uuid

_PREFIX = 0x9107_1D00_0000  # arbitrary 48-bit marker so foreign UUIDs are recognised as such
_LOW52 = (1 << 52) - 1


class KeyIdError(ValueError):
    """A key_ID is not a UUID that this project issued."""


def uuid_for(clavis_id: int) -> str:
    """Return the canonical lower-case UUID string for a 64-bit Clavis key id."""
    if not isinstance(clavis_id, int) or not 0 <= clavis_id < 1 << 64:
        raise KeyIdError(f"clavis_id must be an integer in [0, 2**64), got {clavis_id!r}")
    value = (_PREFIX << 80) | (0x8 << 76) | ((clavis_id >> 52) << 64) | (0b10 << 62) | (clavis_id & _LOW52)
    return str(uuid.UUID(int=value))


def clavis_id_for(key_id: str) -> int:
    """Return the Clavis key id encoded in ``key_id``; raise :class:`KeyIdError` if it is not ours."""
    try:
        value = uuid.UUID(str(key_id)).int
    except (ValueError, TypeError, AttributeError):
        raise KeyIdError(f"key_ID {key_id!r} is not a UUID") from None
    if value >> 80 != _PREFIX or (value >> 76) & 0xF != 0x8 or (value >> 62) & 0b11 != 0b10 \
            or (value >> 52) & 0x3FF != 0:
        raise KeyIdError(f"key_ID {key_id!r} was not issued by a qiot KME")
    return (((value >> 64) & 0xFFF) << 52) | (value & _LOW52)
