"""Start os-ken with qiot's controller apps: the launcher os-ken >= 4 no longer ships.

In a run: ``python -m controllers.launch --config RUN_DIR/config/run.json --role controller``: ports,
inventory, state folder, access switch and gateway address come from the run configuration.
Standalone: ``python -m controllers.launch --port 6653 [--inventory inventory.json --state-dir DIR
--rest-port R] [--key-request-url URL [--key-request-netns-pid PID]]``. With an inventory the
provisioning app (:mod:`controllers.provisioning`) runs, without one the plain learning switch
(:mod:`controllers.l2switch`). The OpenFlow port is checked before os-ken starts because os-ken
dies with an unrelated ``AttributeError`` when the port is taken (shared/platform-notes.md).
Prints ``READY`` once the OpenFlow listener (and the REST endpoint, if asked for) accept
connections. SIGTERM writes the final northbound snapshot and exits at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from topologies.fig1 import ACCESS_SWITCH, GW_WIRELESS_IP

L2_APP, PROVISIONING_APP = "controllers.l2switch", "controllers.provisioning"
#: The controller's log level when started on its own: os-ken's and the apps' INFO lines say what it did.
STANDALONE_LOG_LEVEL = "info"


def port_is_free(host: str, port: int) -> bool:
    """True if nothing is bound to ``host:port`` (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _announce_when_listening(endpoints: list[tuple[str, int]], timeout_s: float = 30.0) -> None:
    """Print READY once every endpoint accepts connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_accepts(host, port) for host, port in endpoints):
            print("READY", flush=True)
            return
        time.sleep(0.05)
    print(f"controller: {endpoints} did not all open within {timeout_s} s", flush=True)


def build_parser() -> argparse.ArgumentParser:
    from harness import runconfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6653)
    parser.add_argument("--app", action="append", dest="apps", help="app module (repeatable; overrides the default)")
    runconfig.add_log_level_argument(parser, standalone=STANDALONE_LOG_LEVEL)
    parser.add_argument("--inventory", type=Path, help="JSON inventory of the devices (device_id, mac, ip, credentials)")
    parser.add_argument("--state-dir", type=Path, help="folder for the persistent registry and the final snapshot")
    parser.add_argument("--rest-port", type=int, help="northbound REST port on 127.0.0.1")
    parser.add_argument("--access-switch", default=ACCESS_SWITCH, help="bridge name of the wireless access switch")
    parser.add_argument("--gateway-ip", default=GW_WIRELESS_IP, help="the gateway's address on the device side")
    parser.add_argument("--discovery-timeout-s", type=float, default=None,
                        help="seconds without a new device before the missing ones are reported "
                             "(default: the provisioning settings' discovery_timeout_s)")
    parser.add_argument("--discovery-on-signal", action="store_true",
                        help="start discovery on POST /qiot/discovery/start, not when the access switch connects")
    parser.add_argument("--config", type=Path, help="a run's config/run.json (with --role controller)")
    parser.add_argument("--role", help="this daemon's name in the run (controller)")
    parser.add_argument("--key-request-url", help="key manager: POST {'devices': [...]} -> {'keys': {id: key_id}}")
    parser.add_argument("--key-request-netns-pid", type=int,
                        help="PID of a process in the network namespace to send the key request from")
    parser.add_argument("--key-request-ca", type=Path, help="CA bundle for an https key manager")
    parser.add_argument("--key-request-cert", type=Path, help="client certificate (PEM) for the key manager")
    parser.add_argument("--key-request-key", type=Path, help="client key (PEM) for the key manager")
    return parser


def settings_from_args(args: argparse.Namespace):
    """The provisioning app's settings, or None when no inventory was given (plain learning switch)."""
    from controllers.settings import ProvisioningSettings

    if args.inventory is None:
        return None
    timeout = {} if args.discovery_timeout_s is None else {"discovery_timeout_s": args.discovery_timeout_s}
    return ProvisioningSettings(
        inventory_path=args.inventory, state_dir=args.state_dir or args.inventory.parent,
        rest_port=args.rest_port, access_switch=args.access_switch, gateway_ip=args.gateway_ip,
        **timeout, discovery_start_on_signal=args.discovery_on_signal, key_request_url=args.key_request_url,
        key_request_netns_pid=args.key_request_netns_pid, key_request_ca=args.key_request_ca,
        key_request_cert=args.key_request_cert, key_request_key=args.key_request_key)


def inventory_path(config) -> Path:
    """Where a run keeps the device inventory the controller provisions by."""
    return config.config_dir / "inventory.json"


def check(config, role: str) -> list[str]:
    """Pre-start check of the controller's part of the run configuration."""
    problems = [] if role == "controller" else [f"unknown role {role!r} (the controller's role is 'controller')"]
    if not inventory_path(config).is_file():
        problems.append(f"{inventory_path(config)}: missing (written before the daemons start)")
    return problems


def _from_run_config(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the launcher's options from the run configuration (explicit options still win)."""
    from harness import runconfig

    config = runconfig.read(args.config)
    args.port, args.rest_port = config.controller.openflow, config.controller.rest
    args.inventory, args.state_dir = inventory_path(config), config.path / "controller"
    args.access_switch, args.gateway_ip = config.site.access_switch, config.site.gw_wireless_ip
    args.log_level = runconfig.log_level_of(args.log_level, config)
    args.discovery_on_signal = True  # a run's testbed signals once its stations are attached
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        if args.role != "controller":
            parser.error("--config needs --role controller")
        args = _from_run_config(args)
    settings = settings_from_args(args)
    if settings is not None:
        from controllers.inventory import Inventory, InventoryError
        from controllers.registry import Registry, RegistryError

        try:  # fail here with one line, not with a traceback from inside os-ken's app loading
            Registry(Inventory.load(settings.inventory_path), settings.state_dir, settings.gateway_ip).load()
        except (InventoryError, RegistryError) as exc:
            parser.error(str(exc))
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    endpoints = [(args.host, args.port)]
    if not port_is_free(args.host, args.port):
        print(f"controller: OpenFlow port {args.host}:{args.port} is already in use", file=sys.stderr)
        return 2
    if settings is not None and settings.rest_port is not None:
        if not port_is_free(settings.rest_host, settings.rest_port):
            print(f"controller: REST port {settings.rest_host}:{settings.rest_port} is already in use", file=sys.stderr)
            return 2
        endpoints.append((settings.rest_host, settings.rest_port))
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken import cfg, log
    from os_ken.base.app_manager import AppManager

    cfg.CONF(args=["--ofp-listen-host", args.host, "--ofp-tcp-listen-port", str(args.port)],
             project="os_ken", default_config_files=[])
    log.init_log()
    import logging
    logging.getLogger().setLevel((args.log_level or STANDALONE_LOG_LEVEL).upper())

    apps = args.apps or [PROVISIONING_APP if settings is not None else L2_APP]
    if settings is not None:
        from controllers import provisioning

        provisioning.configure(settings)

    def terminate(*_):
        # SIGTERM must end the process promptly (os-ken's joinall would keep waiting); the registry
        # is already on disk, only the final northbound snapshot is written here.
        try:
            if settings is not None:
                from controllers import provisioning

                provisioning.write_final_snapshot()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    threading.Thread(target=_announce_when_listening, args=(endpoints,), daemon=True).start()
    AppManager.run_apps(apps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
