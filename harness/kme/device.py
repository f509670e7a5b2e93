"""The device side of the wireless hop: fetch the current QKD key from the gateway relay.

:func:`fetch_device_key` returns a :class:`KeyFetch` with exact operation counts (full TLS
handshakes, resumed handshakes, AES unwraps) for the device energy model, which charges ESP32
times per operation; ``network_s`` is the wall time from connecting to having the answer.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import time
from dataclasses import dataclass, field

from .client import HttpClient
from .pki import DeviceCredentials
from .config import RELAY_ID
from .relay import TRANSPORTS
from .tlshttp import client_context
from .wrap import CHALLENGE_BYTES, unwrap_key


class FetchError(RuntimeError):
    """The relay refused or failed (``status`` is the HTTP status, 0 for a transport failure)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {message}")
        self.status = status


@dataclass(frozen=True)
class KeyFetch:
    """One key fetch: what the device got and what it cost."""

    key_id: str
    key: bytes = field(repr=False)  # never printed: reprs end up in logs
    valid_until_t_emul: float
    network_s: float
    full_handshakes: int
    resumed_handshakes: int
    aes_unwraps: int
    bytes_sent: int = 0      # what the connection really carried (kernel TCP counters)
    bytes_received: int = 0
    frames: int | None = None


@dataclass
class DeviceSession:
    """State a device keeps between fetches: its TLS context and the last TLS session (for resumption)."""

    tls: ssl.SSLContext | None = None
    session: ssl.SSLSession | None = None


def fetch_device_key(transport: str, relay_url: str, credentials: DeviceCredentials,
                     session: DeviceSession | None = None, relay_id: str = RELAY_ID,
                     timeout_s: float = 10.0) -> KeyFetch:
    """Fetch the device's current key over ``transport`` (``tls_full``, ``tls_resume``, ``psk_wrap``).

    Each call opens a new connection (the device sleeps between fetches). Pass the same
    ``session`` across calls so that ``tls_resume`` can resume, and so the TLS context is built once.
    Raises :class:`FetchError` (relay refused, or transport failure with status 0) or, for
    ``psk_wrap``, :class:`harness.kme.wrap.UnwrapError` if the wrapped key does not authenticate.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    session = session if session is not None else DeviceSession()
    device = credentials.device_id
    if transport == "psk_wrap":
        client = HttpClient(relay_url, None, keep_alive=False, timeout_s=timeout_s)
        challenge = os.urandom(CHALLENGE_BYTES)
        path = f"/device/v1/{device}/key?challenge={base64.urlsafe_b64encode(challenge).decode()}"
    else:
        if session.tls is None:
            session.tls = client_context(credentials.ca, credentials.cert, credentials.key)
        client = HttpClient(relay_url, session.tls, relay_id, keep_alive=False,
                            resume=transport == "tls_resume", timeout_s=timeout_s)
        client.session = session.session if transport == "tls_resume" else None
        path = "/device/v1/key"
    started = time.perf_counter()
    try:
        status, body = client.request("GET", path)
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(0, f"relay {relay_url}: {type(exc).__name__}") from None
    finally:
        client.close()
    network_s = time.perf_counter() - started
    if status != 200:
        message = body.get("message", "") if isinstance(body, dict) else ""
        raise FetchError(status, message or "relay refused")
    if transport == "tls_resume":
        session.session = client.session
    unwraps = 0
    if transport == "psk_wrap":
        key = unwrap_key(credentials.psk, device, body["key_ID"], challenge,
                         base64.b64decode(body["nonce"]), base64.b64decode(body["wrapped"]))
        unwraps = 1
    else:
        key = base64.b64decode(body["key"])
    tcp = client.tcp
    return KeyFetch(body["key_ID"], key, float(body["valid_until_t_emul"]), network_s,
                    client.counters.full, client.counters.resumed, unwraps,
                    tcp.bytes_sent, tcp.bytes_received, tcp.segments_out + 1)  # +1: the FIN of the close
