"""The MQTT broker (Mosquitto) on the data-centre host, as a daemon of the run."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.daemon import Daemon, tcp_listening


def mosquitto(listen_ip: str, port: int, config_dir: Path, log_dir: Path, host: str | None = None,
              name: str = "broker", store_dir: Path | None = None) -> Daemon:
    """Mosquitto listening on ``listen_ip:port``, in ``host``'s namespace (None: the root namespace).

    With ``store_dir`` the broker keeps its sessions and queued QoS > 0 messages there across a
    restart (a broker restart fault must not lose what it had acknowledged); the folder is the run's,
    so every run still starts with an empty broker.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    config = config_dir / "mosquitto.conf"
    persistence = "persistence false\n"
    if store_dir is not None:
        store_dir.mkdir(parents=True, exist_ok=True)
        # user root: as root, Mosquitto would switch to its own user, which cannot write the run folder.
        persistence = f"persistence true\npersistence_location {store_dir}/\nautosave_interval 5\nuser root\n"
    daemon = Daemon(
        name=name, host=host, argv=[binary, "-c", str(config)], config_path=config,
        config_text=(f"listener {port} {listen_ip}\nallow_anonymous true\n{persistence}"
                     "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                     "connection_messages false\nmax_queued_messages 10000\n"),
        # Mosquitto block-buffers its log when it is not a terminal: readiness is the listening socket.
        ready_pattern=None, log_path=log_dir / f"{name}.log")
    daemon.ready_check = lambda: tcp_listening(port, daemon.netns_pid)
    return daemon


def broker_daemon(config) -> Daemon:
    """The run's broker on the data-centre host (``config``: the :class:`~harness.runconfig.RunConfig`)."""
    return mosquitto(config.site.dc_ip, config.site.ports.mqtt, config.config_dir, config.logs_dir, host="dc",
                     store_dir=config.path / "broker")
