"""The gateway relay: serves each device its current QKD key over the configured wireless transport.

Transports (scenario setting, because the device's energy is sensitive to their cost):

* ``tls_full``   HTTPS, the device presents its SAE certificate; a full handshake per fetch.
* ``tls_resume`` the same, but the device resumes its previous TLS session when it can.
* ``psk_wrap``   plain HTTP; the key travels AES-GCM-wrapped under the device's pre-shared key
  (:mod:`harness.kme.wrap`), bound to a challenge the device sends.

Routes: TLS transports ``GET /device/v1/key`` (device = client-certificate CN);
``psk_wrap`` ``GET /device/v1/{device_id}/key?challenge=<base64url>``. Answers:
``{"device", "key_ID", "valid_until_t_emul", "key"}`` (TLS) or ``..., "nonce", "wrapped"}`` (psk).

In a run: ``python -m harness.kme.relay --config RUN_DIR/config/run.json --role relay --clock-epoch E``:
prints ``READY`` once it serves, obtains the device keys when the SDN provisioning app asks
(:mod:`harness.kme.relay_admin`) and refreshes them every refresh period; SIGTERM exits cleanly.
Standalone: ``--listen ADDR:PORT --transport T --pki DIR --kme URL --device d1 ...`` provisions the
devices' keys itself before serving.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.clock import EmulatedClock
from harness.enums import KeyTransport, values

from . import etsi, pki
from .client import EtsiClient
from .config import GATEWAY_SAE_ID, KME_ALICE_ID, PLATFORM_SAE_ID, RELAY_ID
from .lifecycle import GatewayKeyLifecycle
from .server import parse_address, serve_until_signal
from .tlshttp import JsonHandler, MtlsHttpServer, server_context
from .wrap import CHALLENGE_BYTES, wrap_key

TRANSPORTS = values(KeyTransport)
#: The relay's record of device fetches, in the QKD mode's folder.
FETCH_LOG = "relay.csv"

log = logging.getLogger(__name__)


class RelayHandler(JsonHandler):
    """Answers device key fetches from the lifecycle's current keys."""

    server: "RelayServer"

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        try:
            status, body = 200, self._answer()
        except etsi.EtsiError as exc:
            status, body = exc.status, exc.body()
        self.send_json(status, body)

    def _answer(self) -> dict[str, Any]:
        srv = self.server
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if srv.transport == "psk_wrap":
            if len(parts) != 4 or parts[:2] != ["device", "v1"] or parts[3] != "key":
                raise etsi.EtsiError(404, "no such resource")
            device = parts[2]
            query = urllib.parse.parse_qs(url.query)
            try:
                challenge = base64.urlsafe_b64decode(query["challenge"][0])
            except (KeyError, ValueError):
                raise etsi.bad_request("challenge (base64url) is required") from None
            if len(challenge) != CHALLENGE_BYTES:
                raise etsi.bad_request(f"challenge must be {CHALLENGE_BYTES} bytes")
        else:
            if parts != ["device", "v1", "key"]:
                raise etsi.EtsiError(404, "no such resource")
            device, role = self.peer_identity()
            if role != "SAE":
                raise etsi.unauthorized()
        if srv.transport == "psk_wrap" and device not in srv.psks:
            raise etsi.EtsiError(404, "unknown device")
        if device not in srv.lifecycle.devices:
            raise etsi.EtsiError(404, "unknown device")
        if srv.now is None:
            current = srv.lifecycle.current(device)
        else:  # a key a refresh period old is renewed now; one the link cannot renew is refused
            holding = srv.lifecycle.holds(device)
            current, outcome = srv.lifecycle.key_for(device, srv.now())
            if outcome == "refused" and (holding or not srv.lifecycle.previous_key_on_refusal):
                raise etsi.unavailable("no new key available: keep the previous one")
            # Refused, but never handed one: the device gets its provisioned key (lifecycle.holds).
        if current is None:
            raise etsi.unavailable("no key provisioned yet")
        srv.lifecycle.handed_out(device)
        answer: dict[str, Any] = {"device": device, "key_ID": current.key_id,
                                  "valid_until_t_emul": current.valid_until_t_emul}
        if srv.transport == "psk_wrap":
            nonce, wrapped = wrap_key(srv.psks[device], device, current.key_id, challenge, current.key)
            answer["nonce"] = base64.b64encode(nonce).decode()
            answer["wrapped"] = base64.b64encode(wrapped).decode()
        else:
            answer["key"] = base64.b64encode(current.key).decode()
        return answer


class RelayServer(MtlsHttpServer):
    """The relay's HTTP(S) server; ``psks`` maps device id -> pre-shared key (psk_wrap only)."""

    def __init__(self, address: tuple[str, int], transport: str, lifecycle: GatewayKeyLifecycle,
                 pki_dir: Path, relay_id: str = RELAY_ID, psks: Mapping[str, bytes] | None = None,
                 host_ips: tuple[str, ...] = (), now: Callable[[], float] | None = None):
        """``now``: the emulated clock; with it a device's key is renewed when it is a refresh period
        old (:meth:`GatewayKeyLifecycle.key_for`), without it the current key is served as it is."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        self.transport = transport
        self.lifecycle, self.now = lifecycle, now
        self.psks = dict(psks or {})
        tls = None
        if transport != "psk_wrap":
            entity = pki.CertificateAuthority(pki_dir).ensure(relay_id, "RELAY", host_ips or (address[0],))
            tls = server_context(entity.cert, entity.key, entity.ca)
        super().__init__(address, RelayHandler, tls)

    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://{self.server_address[0]}:{self.port}"


def check(config, role: str) -> list[str]:
    """Pre-start check of the relay's part of the run configuration."""
    problems = []
    if role != "relay":
        problems.append(f"unknown role {role!r} (the relay's role is 'relay')")
    gateway = pki.entity_paths(config.pki_dir, GATEWAY_SAE_ID, "SAE")
    for path in (gateway.ca, gateway.cert, gateway.key):
        if not Path(path).is_file():
            problems.append(f"{path}: missing (the run's PKI is made before the daemons start)")
    return problems


def _from_run_config(args: argparse.Namespace) -> argparse.Namespace:
    """The relay's options from the run configuration (role ``relay``): what the standalone options give."""
    from harness import runconfig
    from harness.keyservices import kme_url

    config = runconfig.read(args.config)
    problems = check(config, args.role)
    if problems:
        raise ValueError("; ".join(problems))
    site = config.site
    return argparse.Namespace(
        listen=f"{site.gw_wireless_ip}:{site.ports.relay}", transport=config.kme.wireless_transport,
        pki=config.pki_dir, relay_id=RELAY_ID, kme=kme_url(config, "alice"), kme_id=KME_ALICE_ID,
        sae_id=GATEWAY_SAE_ID, slave_sae_id=PLATFORM_SAE_ID, device=site.device_names(),
        refresh_period_s=config.qkd.refresh_period_s, max_key_per_request=config.kme.max_key_per_request,
        clock_epoch=args.clock_epoch, time_scale=config.run.time_scale, provision_timeout_s=10.0,
        # In a run the SDN provisioning app asks for the device keys once it has discovered the devices;
        # a relay restarted during the run asks its KME itself, as a rebooted gateway would.
        admin_listen=f"127.0.0.1:{site.ports.relay_admin}", await_provisioning=not args.restarted,
        log_level=runconfig.log_level_of(args.log_level, config), fetch_log=config.mode_dir("qkd") / FETCH_LOG,
        backdate_s=config.qkd.refresh_period_s if config.kme.steady_state_start else 0.0,
        renewal_grace_s=min(config.devices.wake_period_s, config.qkd.refresh_period_s) / 2,
        previous_key_on_refusal=config.kme.steady_state_start and not args.restarted)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m harness.kme.relay`` (in a run: ``--config run.json --role relay``)."""
    from harness import runconfig

    ap = argparse.ArgumentParser(prog="python -m harness.kme.relay", description=__doc__.split("\n")[0])
    runconfig.add_role_arguments(ap)
    ap.add_argument("--listen", help="ADDR:PORT devices connect to")
    ap.add_argument("--transport", choices=TRANSPORTS)
    ap.add_argument("--pki", type=Path, help="PKI folder (harness.kme.pki layout)")
    ap.add_argument("--relay-id", default=RELAY_ID, help="relay certificate id (relay/<id>.crt)")
    ap.add_argument("--kme", help="https://ADDR:PORT of the gateway-side (Alice's) KME")
    ap.add_argument("--kme-id", default=KME_ALICE_ID)
    ap.add_argument("--sae-id", default=GATEWAY_SAE_ID, help="the gateway's SAE id (master SAE)")
    ap.add_argument("--slave-sae-id", default=PLATFORM_SAE_ID, help="the IoT platform's SAE id (slave SAE)")
    ap.add_argument("--device", action="append",
                    help="device id (repeatable, or comma-separated); provisioning asks one key each")
    ap.add_argument("--refresh-period-s", type=float, default=1800.0,
                    help="emulated seconds between key refreshes (paper: 30 min)")
    ap.add_argument("--max-key-per-request", type=int, default=1000)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--provision-timeout-s", type=float, default=60.0,
                    help="wall seconds to wait for the first provisioning before serving anyway")
    ap.add_argument("--admin-listen", default=None,
                    help="loopback ADDR:PORT of the provisioning endpoint the SDN controller calls")
    ap.add_argument("--await-provisioning", action="store_true",
                    help="obtain keys only when the controller asks (--admin-listen), not at start-up")
    ap.add_argument("--fetch-log", type=Path, default=None, help="CSV of every device fetch (a run's qkd/relay.csv)")
    ap.add_argument("--backdate-s", type=float, default=0.0,
                    help="provisioned keys count as issued this long before (steady state: a refresh period)")
    ap.add_argument("--renewal-grace-s", type=float, default=0.0,
                    help="a key counts as due this long before it is a refresh period old (a run: half a wake period)")
    ap.add_argument("--previous-key-on-refusal", action="store_true",
                    help="a refused device that never held a key gets its provisioned one (steady-state start)")
    ap.add_argument("--restarted", action="store_true",
                    help="in a run: this start is a restart (obtain the device keys now, do not wait)")
    runconfig.add_log_level_argument(ap)
    args = ap.parse_args(argv)
    try:
        if args.config is not None:
            args = _from_run_config(args)
        elif not (args.listen and args.transport and args.pki and args.kme and args.device):
            ap.error("give --config and --role, or --listen, --transport, --pki, --kme and --device")
    except ValueError as exc:
        print(f"error: relay: {exc}", file=sys.stderr)
        return 2
    if args.await_provisioning and not args.admin_listen:
        ap.error("--await-provisioning needs --admin-listen")
    runconfig.configure_logging(args.log_level)
    devices = [d for item in args.device for d in item.split(",") if d]
    try:
        listen = parse_address(args.listen, "--listen")
        for device in devices:
            pki.check_id(device, "--device")
        gateway = pki.entity_paths(args.pki, args.sae_id, "SAE")
        clock = EmulatedClock(args.clock_epoch if args.clock_epoch is not None else time.time(), args.time_scale)
        kme = EtsiClient(args.kme, args.kme_id, gateway.ca, gateway.cert, gateway.key)
        fetches = FetchLog(args.fetch_log) if args.fetch_log else None
        lifecycle = GatewayKeyLifecycle(kme, args.slave_sae_id, devices, args.refresh_period_s,
                                        args.max_key_per_request, backdate_s=args.backdate_s, record=fetches,
                                        renewal_grace_s=args.renewal_grace_s,
                                        previous_key_on_refusal=args.previous_key_on_refusal)
        psks = ({d: pki.load_psk(args.pki, d) for d in devices}
                if args.transport == KeyTransport.PSK_WRAP else None)
        server = RelayServer(listen, args.transport, lifecycle, args.pki, args.relay_id, psks, now=clock.now)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.admin_listen:
        try:
            from .relay_admin import ProvisioningServer

            admin = ProvisioningServer(parse_address(args.admin_listen, "--admin-listen"), lifecycle, clock.now)
        except (ValueError, OSError) as exc:
            print(f"error: --admin-listen: {exc}", file=sys.stderr)
            return 2
        admin.start_in_thread()
    if not args.await_provisioning:
        deadline = time.monotonic() + args.provision_timeout_s
        while True:
            try:
                lifecycle.provision(clock.now())
                break
            except (etsi.EtsiError, OSError) as exc:
                if time.monotonic() > deadline:
                    # Serve anyway: a device without a key gets one when it asks and the link has one
                    # (none at all under an eavesdropper: the run records the refusals).
                    print(f"relay: not every device has a key from {args.kme} after {args.provision_timeout_s:g} s "
                          f"({exc}); the others get theirs when they ask", flush=True)
                    break
                time.sleep(0.5)
    try:
        return serve_until_signal(server)
    finally:
        if fetches is not None:
            fetches.close()


class FetchLog:
    """``qkd/relay.csv``: every device fetch and what the relay did (current, renewed, refused), flushed."""

    FIELDS = ("t_emul", "device", "outcome", "key_id")

    def __init__(self, path: Path) -> None:
        import csv

        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._lock = threading.Lock()
        if new:
            self._writer.writerow(self.FIELDS)
            self._file.flush()

    def __call__(self, t_emul: float, device: str, outcome: str, key_id: str) -> None:
        with self._lock:
            self._writer.writerow([f"{t_emul:.3f}", device, outcome, key_id])
            self._file.flush()

    def close(self) -> None:
        self._file.close()


if __name__ == "__main__":
    sys.exit(main())
