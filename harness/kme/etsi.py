"""ETSI GS QKD 014 V1.1.1 request and response rules, free of any HTTP or TLS code.

Parses key requests (POST JSON body, or GET query ``?number=&size=``) and key-ID lists (POST
JSON body, or GET ``?key_ID=``), checks number and size against the KME's limits, and builds key
containers. Errors are :class:`EtsiError` with the status the spec prescribes, each with the
Error data format ``{"message", "details"}`` as body (ETSI GS QKD 014 V1.1.1 sections 5.1-5.3 give
400, 401 and 503 the Error data model; 6.4 defines it: ``message`` mandatory, ``details`` optional).
JSON values must have the type the spec gives them: ``"size": null`` or ``"number": "2"`` is a 400.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

API_PREFIX = "/api/v1/keys/"


class EtsiError(Exception):
    """An ETSI 014 error answer: ``status`` (400, 401, 503), ``message`` and ``details``."""

    def __init__(self, status: int, message: str = "", details: list[dict[str, Any]] | None = None):
        super().__init__(f"{status} {message}".strip())
        self.status = status
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        """The JSON body to send (the Error data format, for every status)."""
        body: dict[str, Any] = {"message": self.message}
        if self.details:
            body["details"] = self.details
        return body


def bad_request(message: str, **details: Any) -> EtsiError:
    """A 400 answer; keyword arguments become one entry of ``details``."""
    return EtsiError(400, message, [details] if details else None)


def unauthorized(message: str = "unauthorized") -> EtsiError:
    """A 401 answer (caller not allowed); the reason stays generic so nothing leaks to a prober."""
    return EtsiError(401, message)


def unavailable(message: str) -> EtsiError:
    """A 503 answer (server-side error), with a body."""
    return EtsiError(503, message)


@dataclass(frozen=True)
class KmeLimits:
    """Capabilities a KME reports in its status and enforces on key requests.

    Sizes are in bits. ``max_key_size`` defaults to one Clavis key (32 bytes, reference.md
    section 3: "keyLength u8 (at most 32 bytes)"); smaller sizes are prefixes of one QKD key.
    ``max_key_count`` defaults to the paper's key buffer, 1 Mbit / 256 bit = 3,906 keys.
    ``max_key_per_request`` is an assumption (the spec leaves it to the KME).
    """

    key_size: int = 256
    min_key_size: int = 8
    max_key_size: int = 256
    max_key_count: int = 3906
    max_key_per_request: int = 1000
    max_SAE_ID_count: int = 0  # key multicast (additional_slave_SAE_IDs) is not supported

    def __post_init__(self) -> None:
        for name in ("key_size", "min_key_size", "max_key_size"):
            if getattr(self, name) % 8 or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive multiple of 8, got {getattr(self, name)}")
        if not self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("key_size must lie between min_key_size and max_key_size")
        if self.max_key_per_request < 1:
            raise ValueError("max_key_per_request must be >= 1")


@dataclass(frozen=True)
class KeyRequest:
    """A Get key request (spec section 6.2): number of keys and size in bits (None = default)."""

    number: int = 1
    size: int | None = None
    additional_slave_SAE_IDs: tuple[str, ...] = ()
    extension_mandatory: tuple[Any, ...] = field(default=())
    extension_optional: tuple[Any, ...] = field(default=())


_QUERY_INT = re.compile(r"^[+-]?[0-9]{1,18}$")  # ASCII digits only; bounded so int() stays cheap


def as_int(value: Any, name: str) -> int:
    """A JSON integer (not a boolean, float, string or null); else a 400 naming ``name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise bad_request(f"{name} shall be an integer", parameter=name)


def _query_int(text: str, name: str) -> int:
    if not _QUERY_INT.match(text.strip()):
        raise bad_request(f"{name} shall be an integer", parameter=name)
    return int(text)


def json_object(body: bytes) -> Mapping[str, Any]:
    """Parse a request body as a JSON object (an empty body is ``{}``); else a 400."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: bad JSON or a huge integer
        raise bad_request("request body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise bad_request("request body shall be a JSON object")
    return data


def key_request_from_json(body: bytes) -> KeyRequest:
    """Parse a POST enc_keys body (an empty body means all defaults)."""
    data = json_object(body)
    known = {"number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad_request("unknown request parameter", parameter=unknown[0])
    lists = {}
    for name, item_type, what in (("additional_slave_SAE_IDs", str, "strings"),
                                  ("extension_mandatory", dict, "objects"),
                                  ("extension_optional", dict, "objects")):
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, item_type) for v in value):
            raise bad_request(f"{name} shall be an array of {what}", parameter=name)
        lists[name] = tuple(value)
    size = data.get("size", _ABSENT)
    return KeyRequest(number=as_int(data.get("number", 1), "number"),
                      size=None if size is _ABSENT else as_int(size, "size"), **lists)


_ABSENT = object()


def key_request_from_query(query: Mapping[str, list[str]]) -> KeyRequest:
    """Parse GET enc_keys parameters: only ``number`` and ``size``, each at most once."""
    unknown = sorted(set(query) - {"number", "size"})
    if unknown:
        raise bad_request("only number and size may be given with GET", parameter=unknown[0])
    for name, values in query.items():
        if len(values) != 1:
            raise bad_request(f"{name} given more than once", parameter=name)
    size = query.get("size")
    return KeyRequest(number=_query_int(query.get("number", ["1"])[0], "number"),
                      size=None if size is None else _query_int(size[0], "size"))


def check_request(request: KeyRequest, limits: KmeLimits) -> tuple[int, int]:
    """Return (number, size in bits) if the request is acceptable, else raise a 400 EtsiError."""
    number, size = request.number, request.size if request.size is not None else limits.key_size
    if number < 1:
        raise bad_request("number shall be a positive integer", number=number)
    if number > limits.max_key_per_request:
        raise bad_request("number of keys requested exceeds max_key_per_request",
                          number=number, max_key_per_request=limits.max_key_per_request)
    if size % 8:
        raise bad_request("size shall be a multiple of 8", size=size)
    if not limits.min_key_size <= size <= limits.max_key_size:
        raise bad_request("requested key size is out of range", size=size,
                          min_key_size=limits.min_key_size, max_key_size=limits.max_key_size)
    if len(request.additional_slave_SAE_IDs) > limits.max_SAE_ID_count:
        raise bad_request("additional_slave_SAE_IDs exceeds max_SAE_ID_count",
                          max_SAE_ID_count=limits.max_SAE_ID_count)
    if request.extension_mandatory:
        raise bad_request("not all extension_mandatory parameters are supported",
                          extension_mandatory=list(request.extension_mandatory))
    return number, size


def key_ids_from_json(body: bytes) -> list[str]:
    """Parse a POST dec_keys body ``{"key_IDs": [{"key_ID": ...}, ...]}``."""
    data = json_object(body)
    entries = data.get("key_IDs")
    if not isinstance(entries, list) or not entries:
        raise bad_request("key_IDs shall be a non-empty array", parameter="key_IDs")
    ids = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key_ID"), str):
            raise bad_request("each key_IDs entry shall be an object with a key_ID string")
        ids.append(entry["key_ID"])
    return ids


def key_ids_from_query(query: Mapping[str, list[str]]) -> list[str]:
    """Parse GET dec_keys parameters: ``key_ID`` (repeatable), nothing else."""
    unknown = sorted(set(query) - {"key_ID"})
    if unknown:
        raise bad_request("only key_ID may be given with GET", parameter=unknown[0])
    ids = query.get("key_ID", [])
    if not ids:
        raise bad_request("key_ID is required", parameter="key_ID")
    return list(ids)


def key_container(keys: list[tuple[str, bytes]]) -> dict[str, Any]:
    """``{"keys": [{"key_ID": uuid, "key": base64}, ...]}`` (spec section 6.3)."""
    return {"keys": [{"key_ID": key_id, "key": base64.b64encode(key).decode("ascii")}
                     for key_id, key in keys]}
