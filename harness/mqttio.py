"""Small synchronous MQTT helpers over paho-mqtt, driven by ``loop()`` in the calling thread.

Driving paho's loop from the caller (instead of ``loop_start``) keeps every socket in the calling
thread, which matters for the device fleet: each device thread lives in its own network namespace.
"""

from __future__ import annotations

import time
import paho.mqtt.client as mqtt

from harness.tcpinfo import TcpCounters, tcp_counters


class Session:
    """One MQTT connection of a device wake cycle: connect, exchange, disconnect."""

    def __init__(self, client_id: str, host: str, port: int = 1883, timeout_s: float = 5.0) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.connected = False
        self.tcp = TcpCounters()  # what the connection really carried, read when it closes
        self.messages: list[mqtt.MQTTMessage] = []
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected = not reason_code.is_failure

    def connect(self, deadline: float) -> None:
        """Open the TCP connection and wait for CONNACK; raise TimeoutError/OSError on failure."""
        self.client.connect(self.host, self.port, keepalive=max(5, int(self.timeout_s * 2)))
        self.loop_until(lambda: self.connected, deadline, "CONNACK")

    def loop_until(self, condition, deadline: float, what: str) -> None:
        while not condition():
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within the timeout")
            self.client.loop(timeout=min(0.05, remaining))

    def publish(self, topic: str, payload: bytes, qos: int, deadline: float) -> None:
        """Publish and, for QoS > 0, wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=qos)
        self.loop_until(info.is_published, deadline, "PUBACK" if qos == 1 else "PUBCOMP" if qos == 2 else "send")

    def subscribe(self, topic: str, qos: int, deadline: float) -> None:
        acked = []
        self.client.on_subscribe = lambda *_args: acked.append(True)
        self.client.subscribe(topic, qos=qos)
        self.loop_until(lambda: bool(acked), deadline, "SUBACK")

    def close(self) -> None:
        """Disconnect and close the socket, keeping its TCP counters in ``tcp`` (read just before the
        2-byte DISCONNECT: paho may drop the socket as soon as it has sent it)."""
        self.tcp = tcp_counters(self.client.socket())
        try:
            if self.connected:
                self.client.disconnect()
                self.client.loop(timeout=0.01)
        finally:
            sock = self.client.socket()
            if sock is not None:
                sock.close()
