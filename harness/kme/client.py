"""An HTTP/1.1 client over (m)TLS with keep-alive and TLS session resumption, counting handshakes.

Used by SAEs and tests (ETSI 014 calls), by a KME to reach its peer, by the benchmark, and by the
device side of the wireless hop. The server is checked by its entity id (``server_id``) through
the TLS hostname check against the certificate's SAN DNS name, whatever address it listens on,
and optionally by its role (``server_role``: the subject OU of its certificate).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.tcpinfo import TcpCounters, tcp_counters

from . import etsi
from .tlshttp import client_context


@dataclass
class TlsCounters:
    """Handshakes made by one client: full ones and resumed ones (exact, from ``session_reused``)."""

    full: int = 0
    resumed: int = 0


class _Connection(http.client.HTTPConnection):
    """HTTPConnection whose socket is wrapped with our context, SNI/hostname and optional session."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, server_id: str,
                 owner: "HttpClient", timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._tls, self._server_id, self._owner = tls, server_id, owner
        self.tls_sock: ssl.SSLSocket | None = None

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            session = self._owner.session if self._owner.resume else None
            self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_id, session=session)
            self.tls_sock = self.sock  # kept: http.client drops self.sock on "Connection: close"
            if self._owner.server_role is not None and _role_of(self.sock) != self._owner.server_role:
                self.sock.close()
                raise ssl.SSLCertVerificationError(f"server certificate is not a {self._owner.server_role}")
            if self.sock.session_reused:
                self._owner.counters.resumed += 1
            else:
                self._owner.counters.full += 1


class HttpClient:
    """Requests to one server. ``keep_alive``: reuse the connection; ``resume``: resume TLS sessions.

    ``tls=None`` means plain HTTP (the psk_wrap wireless transport).
    """

    def __init__(self, base_url: str, tls: ssl.SSLContext | None, server_id: str | None = "",
                 keep_alive: bool = True, resume: bool = False, timeout_s: float = 10.0,
                 server_role: str | None = None):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname or not url.port:
            raise ValueError(f"url {base_url!r} must look like https://ADDR:PORT")
        if (url.scheme == "https") != (tls is not None):
            raise ValueError(f"url {base_url!r}: scheme does not match the TLS setting")
        self.host, self.port = url.hostname, url.port
        self.tls, self.server_id, self.server_role = tls, server_id or None, server_role
        self.keep_alive, self.resume, self.timeout_s = keep_alive, resume, timeout_s
        self.session: ssl.SSLSession | None = None
        self.counters = TlsCounters()
        self.tcp = TcpCounters()  # what this client's connections really carried (kernel TCP_INFO)
        self._conn: _Connection | None = None

    def request(self, method: str, path: str, body: Any | None = None) -> tuple[int, Any | None]:
        """Send one request (``body``: JSON-able, or raw bytes); return (status, JSON body or None)."""
        payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if not self.keep_alive:
            headers["Connection"] = "close"
        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = _Connection(self.host, self.port, self.tls, self.server_id, self, self.timeout_s)
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                tls_sock = getattr(self._conn, "tls_sock", None)
                if tls_sock is not None and self.resume:
                    # TLS 1.3 session tickets arrive after the handshake, before the response:
                    # take the session now, while the socket is still open. (Only when resuming:
                    # reading .session costs ~0.2 ms.)
                    self.session = tls_sock.session
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    ssl.SSLEOFError, ssl.SSLZeroReturnError):
                self.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle kept-alive connection: retry once, fresh
                raise
            except (OSError, http.client.HTTPException):
                self.close()  # never reuse a connection in an unknown state
                raise
            if not self.keep_alive or response.will_close:
                self.close()
            try:
                return response.status, (json.loads(data) if data else None)
            except ValueError:  # not JSON (e.g. the stdlib's HTML error page for a malformed request)
                return response.status, None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection (the TLS session is kept for resumption)."""
        if self._conn is not None:
            sock = self._conn.tls_sock or self._conn.sock
            self.tcp = self.tcp + tcp_counters(sock)
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EtsiClient:
    """An SAE's ETSI GS QKD 014 client to its KME, over mTLS. Errors raise :class:`EtsiError`."""

    def __init__(self, kme_url: str, kme_id: str | None, ca: Path, cert: Path, key: Path,
                 keep_alive: bool = True, timeout_s: float = 10.0):
        tls = client_context(ca, cert, key)
        if kme_id is None:
            # No KME id to check the name against: accept any certificate of the CA whose role
            # (subject OU) is KME, so a relay or SAE certificate cannot stand in for a KME.
            tls.check_hostname = False
        self.http = HttpClient(kme_url, tls, kme_id, keep_alive=keep_alive, timeout_s=timeout_s,
                               server_role="KME")

    @classmethod
    def for_sae(cls, kme_url: str, pki_dir: str | Path, sae_id: str, kme_id: str | None = None,
                keep_alive: bool = True, timeout_s: float = 10.0) -> "EtsiClient":
        """Client for SAE ``sae_id`` using ``pki_dir/sae/<sae_id>.crt``; ``kme_id`` checks the KME by id."""
        from .pki import entity_paths
        own = entity_paths(pki_dir, sae_id, "SAE")
        return cls(kme_url, kme_id, own.ca, own.cert, own.key, keep_alive, timeout_s)

    def _call(self, method: str, path: str, body: Any | None = None) -> Any:
        status, data = self.http.request(method, path, body)
        if status != 200:
            data = data if isinstance(data, dict) else {}
            raise etsi.EtsiError(status, data.get("message", ""), data.get("details"))
        return data

    def status(self, slave_sae_id: str) -> dict[str, Any]:
        """GET status for the link to ``slave_sae_id``."""
        return self._call("GET", f"{etsi.API_PREFIX}{slave_sae_id}/status")

    def enc_keys(self, slave_sae_id: str, number: int = 1, size: int | None = None) -> list[tuple[str, bytes]]:
        """POST enc_keys; return [(key_ID, key bytes), ...]."""
        body: dict[str, Any] = {"number": number}
        if size is not None:
            body["size"] = size
        return _keys(self._call("POST", f"{etsi.API_PREFIX}{slave_sae_id}/enc_keys", body))

    def dec_keys(self, master_sae_id: str, key_ids: list[str]) -> list[tuple[str, bytes]]:
        """POST dec_keys; return [(key_ID, key bytes), ...]."""
        body = {"key_IDs": [{"key_ID": kid} for kid in key_ids]}
        return _keys(self._call("POST", f"{etsi.API_PREFIX}{master_sae_id}/dec_keys", body))

    def close(self) -> None:
        """Close the connection."""
        self.http.close()


def _role_of(sock: ssl.SSLSocket) -> str:
    """Subject OU of the peer certificate (the role in the qiot PKI)."""
    cert = sock.getpeercert() or {}
    return next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "organizationalUnitName"), "")


def _keys(container: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(k["key_ID"], base64.b64decode(k["key"])) for k in container["keys"]]
