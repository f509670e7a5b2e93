"""The MQTT broker (Mosquitto) on the data-centre host, as a managed process."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.process import ManagedProcess, tcp_listening

MQTT_PORT = 1883


def mosquitto(netns_pid: int, listen_ip: str, run_dir: Path) -> ManagedProcess:
    """Mosquitto listening on the data-centre host's address, logging to stdout (the run's log)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    config = run_dir / "config" / "mosquitto.conf"
    return ManagedProcess(
        name="broker", start_order=30, netns_pid=netns_pid,
        argv=[binary, "-c", str(config)],
        config_path=config,
        # persistence off: every run starts with an empty broker, so nothing leaks between modes/runs.
        config_text=(f"listener {MQTT_PORT} {listen_ip}\nallow_anonymous true\npersistence false\n"
                     "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                     "connection_messages false\nmax_queued_messages 10000\n"),
        # Mosquitto block-buffers its log when it is not a terminal: readiness is the listening socket.
        ready_pattern=None, ready_check=lambda: tcp_listening(MQTT_PORT, netns_pid),
        log_path=run_dir / "logs" / "broker.log")
