"""A threaded HTTP/1.1 server over TLS with client certificates, and the TLS contexts qiot uses.

Built on the standard library (``http.server.ThreadingHTTPServer`` + ``ssl``): no extra
dependency, persistent connections (HTTP/1.1 keep-alive), TLS 1.2 minimum. The TLS handshake
runs in the per-connection worker thread, not in the accept loop, so one slow or hostile client
cannot hold up the others. Request logs carry method, path and status only: never bodies, so key
material cannot reach a log.
"""

from __future__ import annotations

import http
import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes; a dec_keys body for max_key_per_request ids is far smaller


#: Key-exchange group qiot's clients offer: P-256, the group TLS 1.3 makes mandatory (RFC 8446
#: section 9.1) and the curve of qiot's certificates; OpenSSL's P-256 is assembly-optimised and
#: cheaper per handshake here than its X25519. Servers keep OpenSSL's default list (any client works).
CLIENT_ECDH_GROUP = "prime256v1"


def server_context(cert: Path, key: Path, ca: Path | None, require_client_cert: bool = True,
                   session_tickets: int = 2) -> ssl.SSLContext:
    """TLS >= 1.2 server context; with ``require_client_cert`` the client must present a CA-signed cert.

    ``session_tickets``: TLS 1.3 tickets sent after each full handshake (OpenSSL's default 2); each
    costs the server an encryption per handshake, and a server whose clients never resume sends 0.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.num_tickets = session_tickets
    if require_client_cert:
        ctx.load_verify_locations(str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS >= 1.2 client context verifying the server against ``ca`` (hostname check on)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ecdh_curve(CLIENT_ECDH_GROUP)
    ctx.load_verify_locations(str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


class MtlsHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that wraps each accepted socket in TLS inside its worker thread."""

    daemon_threads = True
    request_queue_size = 128  # why: bursts of new connections (benchmark, many devices waking)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext | None, handshake_timeout_s: float = 10.0,
                 idle_timeout_s: float = 30.0):
        self.tls = tls
        self.handshake_timeout_s = handshake_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.handshakes_failed = 0
        super().__init__(address, handler)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                request.settimeout(self.handshake_timeout_s)
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                # The refusal itself (no cert, foreign CA) is the answer; note it without detail.
                self.handshakes_failed += 1
                log.info("TLS handshake from %s refused: %s", client_address[0], type(exc).__name__)
                self.shutdown_request(request)
                return
        request.settimeout(self.idle_timeout_s)
        super().process_request_thread(request, client_address)

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread (tests, in-process use); stop with ``shutdown()``."""
        # A short poll interval makes shutdown() quick (the stdlib default waits up to 0.5 s).
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="https", daemon=True)
        thread.start()
        return thread

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        return self.server_address[1]


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler base: peer identity from the client certificate, JSON answers, quiet logs."""

    protocol_version = "HTTP/1.1"
    server_version = "qiot-kme"
    sys_version = ""

    def peer_identity(self) -> tuple[str, str]:
        """(CN, OU) of the verified client certificate, or ("", "") without one.

        Read once per connection (a handler lives as long as its connection; the certificate
        cannot change on it), because decoding the certificate costs more than a small request.
        """
        identity = self.__dict__.get("_identity")
        if identity is None:
            getpeercert = getattr(self.connection, "getpeercert", None)
            cert = getpeercert() if getpeercert else None
            fields = {k: v for rdn in (cert or {}).get("subject", ()) for k, v in rdn}
            identity = self._identity = (fields.get("commonName", ""), fields.get("organizationalUnitName", ""))
        return identity

    def read_body(self) -> bytes:
        """The request body (Content-Length framed); oversize bodies close the connection."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ValueError("bad Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, status: int, body: Any | None, headers: dict[str, str] | None = None) -> None:
        """Send one complete response in a single write (one TLS record, no Nagle stall).

        A response to HEAD carries the headers only (RFC 9110 section 9.3.2), so kept-alive
        connections stay in step.
        """
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        phrase = http.HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {phrase}", f"Server: {self.server_version}",
                 f"Content-Length: {len(payload)}"]
        if payload:
            lines.append("Content-Type: application/json; charset=utf-8")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        if getattr(self, "command", None) == "HEAD":
            payload = b""
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + payload)
        self.log_request(status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own error answers (malformed request line, unknown method...), as JSON."""
        self.close_connection = True  # after a malformed request the stream cannot be trusted
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.send_json(code, {"message": message or phrase})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        # Why: the stdlib writes to stderr; route to logging. The request line holds only ids.
        log.debug("%s %s", self.address_string(), format % args)
