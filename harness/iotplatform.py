"""The IoT platform at the data centre: subscribes to every device's readings and records arrivals.

Run inside the data-centre host as ``python -m harness.iotplatform --broker HOST:PORT --qos Q --out DIR``.
Each arriving reading is stamped with the wall-clock time on arrival (one clock for the whole
emulation, so ``t_received - t_sent`` is the one-way latency) and appended to ``received.csv``,
flushed per row so an interrupted run keeps everything that arrived. Prints ``READY`` once the
subscription is acknowledged.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

RECEIVED_FIELDS = ("device", "seq", "t_received", "t_sent", "key_id", "bytes", "decrypted")
READING_TOPIC_FILTER = "qiot/+/reading"


class Recorder:
    """Writes one ``received.csv`` row per reading that arrives."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if path.stat().st_size == 0:
            self._writer.writerow(RECEIVED_FIELDS)
        self._lock = threading.Lock()
        self.count = 0

    def on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        t_received = time.time()
        try:
            payload = json.loads(message.payload)
            row = [payload["device"], int(payload["seq"]), f"{t_received:.6f}", f"{float(payload['t_sent']):.6f}",
                   payload.get("key_id", ""), len(message.payload), "placeholder"]
        except (ValueError, KeyError, TypeError):
            row = [message.topic.split("/")[1] if "/" in message.topic else "?", -1, f"{t_received:.6f}",
                   "", "", len(message.payload), "malformed"]
        with self._lock:
            self._writer.writerow(row)
            self._file.flush()
            self.count += 1

    def close(self) -> None:
        self._file.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1:1883")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--client-id", default="qiot-platform")
    args = parser.parse_args(argv)
    host, _, port = args.broker.partition(":")
    args.out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(args.out / "received.csv")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=True)
    client.on_message = recorder.on_message
    client.on_connect = lambda c, *_: c.subscribe(READING_TOPIC_FILTER, qos=args.qos)
    client.on_subscribe = lambda *_: print("READY", flush=True)
    client.connect(host, int(port or 1883), keepalive=30)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    recorder.close()
    print(f"platform: {recorder.count} readings recorded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
