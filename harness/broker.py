"""The MQTT broker (Mosquitto) on the data-centre host, as a managed process."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.process import ManagedProcess, tcp_listening

MQTT_PORT = 1883


def mosquitto(netns_pid: int | None, listen_ip: str, run_dir: Path, port: int = MQTT_PORT) -> ManagedProcess:
    """Mosquitto listening on ``listen_ip:port`` in a host's namespace (or ours, with None)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    config = run_dir / "config" / "mosquitto.conf"
    return ManagedProcess(
        name="broker", start_order=30, netns_pid=netns_pid,
        argv=[binary, "-c", str(config)],
        config_path=config,
        # persistence off: every run starts with an empty broker, so nothing leaks between modes/runs.
        config_text=(f"listener {port} {listen_ip}\nallow_anonymous true\npersistence false\n"
                     "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                     "connection_messages false\nmax_queued_messages 10000\n"),
        # Mosquitto block-buffers its log when it is not a terminal: readiness is the listening socket.
        ready_pattern=None, ready_check=lambda: tcp_listening(port, netns_pid),
        log_path=run_dir / "logs" / "broker.log")
