"""Start os-ken with qiot's controller apps: the launcher os-ken >= 4 no longer ships.

Usage: ``python -m controllers.launch --port 6653 [--app controllers.l2switch]``. The OpenFlow port
is checked before os-ken starts because os-ken dies with an unrelated ``AttributeError`` when the
port is taken (shared/platform-notes.md). Prints ``READY`` once the OpenFlow listener is bound.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

DEFAULT_APPS = ["controllers.l2switch"]


def port_is_free(host: str, port: int) -> bool:
    """True if nothing is bound to ``host:port`` (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _announce_when_listening(host: str, port: int, timeout_s: float = 30.0) -> None:
    """Print READY once os-ken accepts connections on the OpenFlow port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                print("READY", flush=True)
                return
        except OSError:
            time.sleep(0.05)
    print(f"controller: OpenFlow port {host}:{port} did not open within {timeout_s} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6653)
    parser.add_argument("--app", action="append", dest="apps", help="app module (repeatable)")
    parser.add_argument("--log-level", default="INFO")
    # Provisioning (issue 3) settings; accepted now so the testbed's command line stays stable.
    parser.add_argument("--inventory", help="JSON inventory of the devices (device_id, mac, ip, credentials)")
    parser.add_argument("--state-dir", help="folder for the controller's persistent registry")
    parser.add_argument("--rest-port", type=int, help="northbound REST port on 127.0.0.1")
    args = parser.parse_args(argv)

    if not port_is_free(args.host, args.port):
        print(f"controller: OpenFlow port {args.host}:{args.port} is already in use", file=sys.stderr)
        return 2
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken import cfg, log
    from os_ken.base.app_manager import AppManager

    cfg.CONF(args=["--ofp-listen-host", args.host, "--ofp-tcp-listen-port", str(args.port)],
             project="os_ken", default_config_files=[])
    log.init_log()
    import logging
    logging.getLogger().setLevel(args.log_level)

    # SIGTERM must end the process promptly: os-ken's joinall would otherwise keep waiting.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=_announce_when_listening, args=(args.host, args.port), daemon=True).start()
    AppManager.run_apps(args.apps or DEFAULT_APPS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
