"""The KME process: ETSI GS QKD 014 over mutual TLS, plus the KME-to-KME channel (also mTLS).

Routes (SAE callers: client certificate OU=SAE, SAE ID = CN)::

    GET       /api/v1/keys/{slave_SAE_ID}/status
    POST|GET  /api/v1/keys/{slave_SAE_ID}/enc_keys     GET takes only ?number=&size=
    POST|GET  /api/v1/keys/{master_SAE_ID}/dec_keys    GET takes ?key_ID= (repeatable)

KME-to-KME (caller certificate OU=KME, CN = the configured peer KME id; anyone else 401)::

    POST /kme/v1/issue    {"master_SAE_ID", "slave_SAE_ID", "number", "size", "lost": [...]}
                          -> {"key_IDs": [...]}
    POST /kme/v1/reserve  {"master_SAE_ID", "slave_SAE_ID", "size", "key_IDs": [...]} -> {"missing": [...]}
    POST /kme/v1/release  {"key_IDs": [...], "lost": [...]} -> {}
    GET  /kme/v1/stored   -> {"stored_key_count": n}

Any other method on these paths: 405 with a JSON body and an ``Allow`` header; unknown paths 404.
Errors carry a JSON body ``{"message", "details"}`` (ETSI GS QKD 014 V1.1.1 gives 400, 401 and 503
the Error data format). A slave SAE "exists" when the PKI's CA has issued an SAE certificate for
it (:class:`harness.kme.pki.KnownSaes`): status and enc_keys naming another id get 400, and no key
is used up.

Run: ``python -m harness.kme.server --listen 127.0.0.1:8443 --kme-id kme-bob --peer-kme-id kme-alice
--peer-kme https://127.0.0.1:8444 --pki DIR --clavis 127.0.0.1:5323 --issuing [--key-store DIR]``;
prints ``READY`` once listening and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from . import etsi, pki
from .client import HttpClient
from .keystore import KeyStore
from .kme import KeyManager
from .suppliers import ClavisSupplier, KeySupplier
from .tlshttp import JsonHandler, MtlsHttpServer, client_context, server_context

log = logging.getLogger(__name__)


class MtlsPeerLink:
    """:class:`harness.kme.kme.PeerLink` over mTLS, with a pool of kept-alive connections.

    Why a pool and not one connection per thread: the server runs a thread per SAE connection, so
    per-thread connections would cost a fresh TLS handshake to the peer for every new SAE connection.
    """

    def __init__(self, peer_url: str, peer_kme_id: str, own: pki.Entity, timeout_s: float = 10.0):
        self.peer_url, self.peer_kme_id = peer_url, peer_kme_id
        self._tls = client_context(own.ca, own.cert, own.key)
        self.timeout_s = timeout_s
        self._idle: list[HttpClient] = []
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: Any | None = None) -> Any:
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = HttpClient(self.peer_url, self._tls, self.peer_kme_id, timeout_s=self.timeout_s)
        try:
            status, data = client.request(method, path, body)
        except OSError as exc:  # includes ssl.SSLError and timeouts
            client.close()
            raise etsi.unavailable(f"peer KME unreachable ({type(exc).__name__})") from None
        with self._lock:
            self._idle.append(client)
        if status != 200:
            data = data if isinstance(data, dict) else {}
            raise etsi.EtsiError(status if status in (400, 401) else 503, data.get("message", ""),
                                 data.get("details"))
        return data

    def issue(self, master: str, slave: str, number: int, size: int, lost: list[str]) -> list[str]:
        data = self._call("POST", "/kme/v1/issue", {"master_SAE_ID": master, "slave_SAE_ID": slave,
                                                    "number": number, "size": size, "lost": lost})
        return list(data["key_IDs"])

    def reserve(self, master: str, slave: str, size: int, key_ids: list[str]) -> list[str]:
        data = self._call("POST", "/kme/v1/reserve", {"master_SAE_ID": master, "slave_SAE_ID": slave,
                                                      "size": size, "key_IDs": key_ids})
        return list(data["missing"])

    def release(self, key_ids: list[str], lost: list[str]) -> None:
        self._call("POST", "/kme/v1/release", {"key_IDs": key_ids, "lost": lost})

    def stored_key_count(self) -> int:
        return int(self._call("GET", "/kme/v1/stored")["stored_key_count"])


#: Methods each route takes (the ETSI routes by their last path segment).
ETSI_METHODS = {"status": ("GET",), "enc_keys": ("GET", "POST"), "dec_keys": ("GET", "POST")}
PEER_METHODS = {"/kme/v1/issue": ("POST",), "/kme/v1/reserve": ("POST",), "/kme/v1/release": ("POST",),
                "/kme/v1/stored": ("GET",)}


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods ``path`` takes, or None if there is no such resource."""
    if path in PEER_METHODS:
        return PEER_METHODS[path]
    if not path.startswith(etsi.API_PREFIX):
        return None
    parts = path[len(etsi.API_PREFIX):].split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    return ETSI_METHODS.get(parts[1])


class KmeHandler(JsonHandler):
    """Routes one request to the :class:`KeyManager` held by the server."""

    server: "KmeServer"

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def __getattr__(self, name: str) -> Any:
        # Any other method (PUT, DELETE, PATCH, OPTIONS, TRACE, HEAD, QUERY, ...): routed too, so it
        # gets 405 with Allow rather than http.server's 501 HTML page.
        if name.startswith("do_"):
            return lambda: self._dispatch(self.command)
        raise AttributeError(name)

    def _dispatch(self, method: str) -> None:
        try:
            body = self.read_body()
        except ValueError as exc:
            self.send_json(400, {"message": str(exc)})
            return
        url = urllib.parse.urlsplit(self.path)
        allowed = allowed_methods(url.path)
        if allowed is None:
            self.send_json(404, {"message": "no such resource"})
            return
        if method not in allowed:
            self.send_json(405, {"message": f"{method} is not allowed here; use {' or '.join(allowed)}"},
                           {"Allow": ", ".join(allowed)})
            return
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            status, answer = 200, self._route(method, url.path, query, body)
        except etsi.EtsiError as exc:
            status, answer = exc.status, exc.body()
        except Exception:  # a bug must not kill the connection thread silently nor leak detail
            log.exception("internal error on %s %s", method, url.path)
            status, answer = 503, {"message": "internal error"}
        self.send_json(status, answer)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Any:
        kme = self.server.kme
        cn, ou = self.peer_identity()
        if path.startswith("/kme/v1/"):
            if ou != "KME" or cn != kme.peer_kme_id:
                raise etsi.unauthorized()
            return self._route_peer(path, body)
        sae_in_path, action = path[len(etsi.API_PREFIX):].split("/")
        sae_in_path = urllib.parse.unquote(sae_in_path)
        if ou != "SAE" or not cn:
            raise etsi.unauthorized()
        if action == "status":
            return kme.status(cn, sae_in_path)
        if action == "enc_keys":
            request = (etsi.key_request_from_query(query) if method == "GET"
                       else etsi.key_request_from_json(body))
            return kme.enc_keys(cn, sae_in_path, request)
        key_ids = etsi.key_ids_from_query(query) if method == "GET" else etsi.key_ids_from_json(body)
        return kme.dec_keys(cn, sae_in_path, key_ids)

    def _route_peer(self, path: str, body: bytes) -> Any:
        kme = self.server.kme
        if path == "/kme/v1/stored":
            return {"stored_key_count": kme.stored_key_count()}
        data = etsi.json_object(body)
        try:
            if path == "/kme/v1/release":
                kme.peer_release(_strings(data["key_IDs"]), _strings(data.get("lost", [])))
                return {}
            master, slave = _string(data["master_SAE_ID"]), _string(data["slave_SAE_ID"])
            size = etsi.as_int(data["size"], "size")
            if path == "/kme/v1/issue":
                return {"key_IDs": kme.peer_issue(master, slave, etsi.as_int(data["number"], "number"), size,
                                                  _strings(data.get("lost", [])))}
            return {"missing": kme.peer_reserve(master, slave, size, _strings(data["key_IDs"]))}
        except (KeyError, TypeError, ValueError):
            raise etsi.bad_request("malformed KME-to-KME request") from None


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError("expected a list of strings")
    return [_string(v) for v in value]


class KmeServer(MtlsHttpServer):
    """An mTLS HTTP server bound to one :class:`KeyManager`.

    It sends no TLS session tickets: an SAE authenticates each connection by its certificate, no
    qiot SAE resumes sessions, and each ticket would cost every full handshake an encryption.
    """

    def __init__(self, address: tuple[str, int], kme: KeyManager, identity: pki.Entity, **kwargs: Any):
        self.kme = kme
        super().__init__(address, KmeHandler,
                         server_context(identity.cert, identity.key, identity.ca, session_tickets=0), **kwargs)


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``ADDR:PORT`` -> (addr, port); raise ValueError naming ``what`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{what}: {text!r} is not ADDR:PORT")
    return host.strip("[]"), int(port)


#: The KMEs' daemon names in a run: (QKD end, host, issues keys). Alice's KME issues: the gateway, the
#: master SAE, asks it (harness.keyservices).
RUN_ROLES = {"kme-alice": ("alice", "alice", True), "kme-bob": ("bob", "dc", False)}


def check(config, role: str) -> list[str]:
    """Pre-start check of a KME's part of the run configuration."""
    if role not in RUN_ROLES:
        return [f"unknown role {role!r} (known: {', '.join(RUN_ROLES)})"]
    own = pki.entity_paths(config.pki_dir, role, "KME")
    return [f"{path}: missing (the run's PKI is made before the daemons start)"
            for path in (own.ca, own.cert, own.key) if not Path(path).is_file()]


def _from_run_config(args: argparse.Namespace) -> argparse.Namespace:
    """The KME's options from the run configuration (roles ``kme-alice``, ``kme-bob``)."""
    from harness import runconfig
    from harness.keyservices import kme_url

    config = runconfig.read(args.config)
    problems = check(config, args.role)
    if problems:
        raise ValueError("; ".join(problems))
    _, host, issuing = RUN_ROLES[args.role]
    peer_role = next(r for r in RUN_ROLES if r != args.role)
    ports = config.site.ports
    address = config.site.dc_ip if host == "dc" else config.site.alice_ip
    args.listen, args.kme_id, args.peer_kme_id = f"{address}:{ports.kme}", args.role, peer_role
    args.peer_kme = kme_url(config, RUN_ROLES[peer_role][1])
    args.pki, args.clavis, args.issuing = config.pki_dir, f"127.0.0.1:{ports.clavis}", issuing
    args.max_key_count, args.max_key_per_request = config.qkd.buffer_keys, config.kme.max_key_per_request
    # A vendor's key store survives a restart: keys issued before one stay obtainable by the slave.
    args.key_store = config.path / "kme-store" / args.role
    args.log_level = runconfig.log_level_of(args.log_level, config)
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m harness.kme.server`` (in a run: ``--config run.json --role kme-bob``)."""
    from harness import runconfig

    ap = argparse.ArgumentParser(prog="python -m harness.kme.server", description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, help="a run's config/run.json (with --role kme-alice or kme-bob)")
    ap.add_argument("--role", help="this KME's name in the run")
    ap.add_argument("--listen", help="ADDR:PORT to serve ETSI 014 and KME-to-KME on")
    ap.add_argument("--kme-id", help="this KME's id (certificate kme/<id>.crt in --pki)")
    ap.add_argument("--peer-kme-id", help="the other KME's id")
    ap.add_argument("--peer-kme", help="the other KME's https://ADDR:PORT")
    ap.add_argument("--pki", type=Path, help="PKI folder (harness.kme.pki layout)")
    ap.add_argument("--clavis", help="ADDR:PORT of this end's Clavis key-extraction service")
    ap.add_argument("--clavis-device-id", type=int, default=1, help="requestingDeviceID (1-12)")
    ap.add_argument("--issuing", action="store_true",
                    help="this KME's QKD end issues new keys (request_new_key); else it reads keys by id")
    ap.add_argument("--max-key-count", type=int, default=3906, help="key buffer size in keys (paper: 1 Mbit / 256 bit)")
    ap.add_argument("--max-key-per-request", type=int, default=1000)
    ap.add_argument("--prefetch", type=int, default=0, help="keys to pull ahead from Clavis (issuing end)")
    ap.add_argument("--sae", action="append", default=None,
                    help="SAE id allowed to call this KME (repeatable); default: any SAE of the CA")
    ap.add_argument("--key-store", type=Path, default=None,
                    help="directory to keep reservations and pooled keys in, across restarts (default: memory)")
    runconfig.add_log_level_argument(ap)
    args = ap.parse_args(argv)
    try:
        if args.config is not None:
            args = _from_run_config(args)
        runconfig.configure_logging(args.log_level)
        missing = [o for o in ("listen", "kme_id", "peer_kme_id", "peer_kme", "pki", "clavis") if not getattr(args, o)]
        if missing:
            ap.error("give --config and --role, or " + ", ".join("--" + o.replace("_", "-") for o in missing))
        listen = parse_address(args.listen, "--listen")
        clavis = parse_address(args.clavis, "--clavis")
        own = pki.entity_paths(args.pki, args.kme_id, "KME")
        supplier: KeySupplier = ClavisSupplier(clavis, issuing=args.issuing, device_id=args.clavis_device_id)
        limits = etsi.KmeLimits(max_key_count=args.max_key_count, max_key_per_request=args.max_key_per_request)
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        store = KeyStore(args.key_store)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: --key-store {args.key_store}: {exc}", file=sys.stderr)
        return 2
    peer = MtlsPeerLink(args.peer_kme, args.peer_kme_id, own)
    kme = KeyManager(args.kme_id, args.peer_kme_id, supplier, peer, limits,
                     frozenset(args.sae) if args.sae else None, prefetch=args.prefetch,
                     known_saes=pki.KnownSaes(args.pki), store=store)
    try:
        server = KmeServer(listen, kme, own)
    except OSError as exc:
        print(f"error: --listen {listen[0]}:{listen[1]}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return serve_until_signal(server)
    finally:
        kme.close()


def serve_until_signal(server: MtlsHttpServer) -> int:
    """Print READY, serve until SIGTERM/SIGINT, then shut down cleanly and return 0."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start_in_thread()
    print(f"READY {server.server_address[0]}:{server.port}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
