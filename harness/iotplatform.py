"""The IoT platform at the data centre: receives, decrypts and records every device reading.

In a run, inside the data-centre host: ``python -m harness.iotplatform --config RUN_DIR/config/run.json
--role platform-qkd`` (or ``platform-dkg``); standalone (e.g. on loopback in tests):
``python -m harness.iotplatform --mode dkg|qkd --broker HOST:PORT --qos Q --out DIR [...]``.

- Each arriving reading is stamped with the wall-clock time on arrival (one clock serves the whole
  emulation, so ``t_received - t_sent`` is the one-way latency), decrypted with the key its header
  names, and appended to ``received.csv`` (flushed per row, so an interrupted run keeps it all).
- DKG mode: answers each device's public key on ``qiot/<device>/dkg/request`` with its own on
  ``qiot/<device>/dkg/response`` and derives the same AES key (ECDH + HKDF).
- QKD mode: resolves a reading's key id through ETSI GS QKD 014 ``dec_keys`` at Bob's KME, over mutual
  TLS, as the slave SAE the gateway named when it obtained the key.

Prints ``READY`` once its subscriptions are acknowledged.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

import paho.mqtt.client as mqtt

from harness import devicecrypto
from harness.devicecrypto import DKG_REQUEST_TOPIC, DKG_RESPONSE_TOPIC
from harness.enums import Mode, values
from harness.kme.config import GATEWAY_SAE_ID, PLATFORM_SAE_ID

RECEIVED_FIELDS = ("device", "seq", "t_received", "t_sent", "key_id", "bytes", "decrypted")
READING_TOPIC_FILTER = devicecrypto.READING_TOPIC.format(device="+")
DKG_TOPIC_FILTER = DKG_REQUEST_TOPIC.format(device="+")
#: dec_keys answers 503 while Bob's end is still distilling a key Alice's end already handed out
#: (the two ends finish a post-processing block a moment apart); retried this often, this far apart.
DEC_KEYS_ATTEMPTS, DEC_KEYS_RETRY_S = 5, 0.2


class Platform:
    """Decrypts readings with keys from ``key_for(header)`` and records them in ``received.csv``."""

    def __init__(self, path: Path, key_for: Callable[[Mapping], bytes], qos: int) -> None:
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if path.stat().st_size == 0:
            self._writer.writerow(RECEIVED_FIELDS)
        self._lock = threading.Lock()
        self.key_for, self.qos = key_for, qos
        self.dkg_keys: dict[tuple[str, str], bytes] = {}
        self.counts = {"ok": 0, "failed": 0, "malformed": 0, "unknown_key": 0}
        # Readings are stamped on arrival and decrypted by a worker: a key lookup that waits for the
        # KME must not hold up (and so delay the arrival stamps of) the readings behind it.
        self._readings: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._decrypt_loop, name="decrypt", daemon=True)
        self._worker.start()

    def on_message(self, client: mqtt.Client, _userdata, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/dkg/request"):
            self.answer_dkg(client, message)
        else:
            self._readings.put((time.time(), message))

    def _decrypt_loop(self) -> None:
        while (item := self._readings.get()) is not None:
            self.record_reading(*item)

    def record_reading(self, t_received: float, message: mqtt.MQTTMessage) -> None:
        try:
            header, _, _ = devicecrypto.parse_payload(message.payload)
        except devicecrypto.PayloadError:
            device = message.topic.split("/")[1] if message.topic.count("/") >= 2 else "?"
            self._write([device, -1, f"{t_received:.6f}", "", "", len(message.payload), "malformed"])
            return
        try:
            devicecrypto.open_reading(self.key_for, message.payload)
            status = "ok"
        except devicecrypto.DecryptError:
            status = "failed"
        except Exception:  # no key for that id (unknown, refused by the KME): counted, never fatal
            status = "unknown_key"
        self._write([header["device"], header["seq"], f"{t_received:.6f}", f"{header['t_sent']:.6f}",
                     header["key_id"], len(message.payload), status])

    def answer_dkg(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        """Platform half of DKG: our own ephemeral key pair, the shared key, our public key back."""
        device = message.topic.split("/")[1]
        try:
            request = json.loads(message.payload)
            party = devicecrypto.DkgParty("platform", request.get("curve", "p256"))
            device_public = base64.b64decode(request["public"])
            key = party.derive_key(device_public, device_id=device)
            key_id = devicecrypto.dkg_key_id(device_public, party.public_bytes)
            with self._lock:
                self.dkg_keys[(device, key_id)] = key
            answer = {"key_id": key_id, "public": base64.b64encode(party.public_bytes).decode()}
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        client.publish(DKG_RESPONSE_TOPIC.format(device=device), json.dumps(answer), qos=self.qos)

    def dkg_key(self, header: Mapping) -> bytes:
        with self._lock:
            return self.dkg_keys[(header["device"], header["key_id"])]

    def _write(self, row: list) -> None:
        with self._lock:
            self._writer.writerow(row)
            self._file.flush()
            self.counts[row[-1]] += 1

    def close(self) -> None:
        """Finish the readings already received, then close the file."""
        self._readings.put(None)
        self._worker.join(timeout=30)
        self._file.close()


def qkd_key_lookup(kme_url: str, pki_dir: Path, sae_id: str, master_sae_id: str) -> Callable[[Mapping], bytes]:
    """Key lookup by key id through dec_keys at the platform's KME (cached: keys are handed out once)."""
    from harness.kme.client import EtsiClient
    from harness.kme.etsi import EtsiError
    from harness.kme.lifecycle import PlatformKeyResolver

    resolver = PlatformKeyResolver(EtsiClient.for_sae(kme_url, pki_dir, sae_id), master_sae_id)
    refused: dict[str, Exception] = {}

    def lookup(header: Mapping) -> bytes:
        # A refused id stays refused, so the KME is asked about it once; 503 (Bob's end has not
        # distilled the key yet) is transient and asked again, after a short wait, a few times.
        key_id = header["key_id"]
        if key_id in refused:
            raise refused[key_id]
        for attempt in range(DEC_KEYS_ATTEMPTS):
            try:
                return resolver.key_for(key_id)
            except EtsiError as exc:
                if exc.status != 503 or attempt == DEC_KEYS_ATTEMPTS - 1:
                    refused[key_id] = exc
                    raise
                time.sleep(DEC_KEYS_RETRY_S)

    return lookup


def platform_daemon(config, mode: str):
    """The platform of one mode on the data-centre host, after the broker (and Bob's KME for QKD)."""
    from harness.daemon import python_daemon

    requires = ("broker", "kme-bob") if mode == Mode.QKD else ("broker",)
    return python_daemon(config, f"platform-{mode}", "harness.iotplatform", host="dc", requires=requires)


def check(config, role: str) -> list[str]:
    """Pre-start check of a platform's part of the run configuration."""
    mode = role.removeprefix("platform-")
    if not role.startswith("platform-") or mode not in values(Mode):
        return [f"unknown role {role!r} (known: {', '.join(f'platform-{m}' for m in values(Mode))})"]
    if mode == Mode.QKD and not (config.pki_dir / "sae" / f"{PLATFORM_SAE_ID}.crt").is_file():
        return [f"{config.pki_dir / 'sae' / PLATFORM_SAE_ID}.crt: missing (the run's PKI is made first)"]
    return []


def _from_run_config(args: argparse.Namespace) -> argparse.Namespace:
    """The platform's options from the run configuration (role ``platform-<mode>``)."""
    from harness import runconfig
    from harness.keyservices import kme_url

    config = runconfig.read(args.config)
    problems = check(config, args.role)
    if problems:
        raise SystemExit(f"error: platform: {'; '.join(problems)}")
    mode = args.role.removeprefix("platform-")
    return argparse.Namespace(mode=mode, broker=f"{config.site.dc_ip}:{config.site.ports.mqtt}",
                              qos=config.devices.mqtt_qos, out=config.mode_dir(mode),
                              client_id=f"qiot-platform-{mode}", kme=kme_url(config, "dc"), pki=config.pki_dir,
                              sae_id=PLATFORM_SAE_ID, master_sae_id=GATEWAY_SAE_ID,
                              log_level=runconfig.log_level_of(args.log_level, config))


def main(argv: list[str] | None = None) -> int:
    from harness import runconfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a run's config/run.json (with --role platform-<mode>)")
    parser.add_argument("--role", help="platform-qkd or platform-dkg in a run")
    parser.add_argument("--mode", choices=values(Mode))
    parser.add_argument("--broker", default="127.0.0.1:1883")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--client-id", default="qiot-platform")
    parser.add_argument("--kme", help="QKD mode: URL of the platform's KME (Bob's)")
    parser.add_argument("--pki", type=Path, help="QKD mode: PKI folder holding the platform's SAE certificate")
    parser.add_argument("--sae-id", default=PLATFORM_SAE_ID)
    parser.add_argument("--master-sae-id", default=GATEWAY_SAE_ID, help="SAE that obtained the keys (enc_keys)")
    runconfig.add_log_level_argument(parser)
    args = parser.parse_args(argv)
    if args.config is not None:
        args = _from_run_config(args)
    if args.mode is None or args.out is None:
        parser.error("give --config and --role, or --mode and --out")
    if args.mode == "qkd" and not (args.kme and args.pki):
        parser.error("--mode qkd needs --kme and --pki")
    runconfig.configure_logging(args.log_level)
    host, _, port = args.broker.partition(":")
    args.out.mkdir(parents=True, exist_ok=True)

    platform = Platform(args.out / "received.csv", lambda h: b"", args.qos)
    platform.key_for = (platform.dkg_key if args.mode == "dkg"
                        else qkd_key_lookup(args.kme, args.pki, args.sae_id, args.master_sae_id))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    subscriptions = [(READING_TOPIC_FILTER, args.qos)] + ([(DKG_TOPIC_FILTER, args.qos)] if args.mode == "dkg" else [])
    # A persistent session: across a broker restart (the broker keeps sessions on disk) and the
    # platform's reconnect, QoS 1 readings that arrived meanwhile are delivered, not lost.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=False)
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    client.enable_logger()  # paho's own lines (connects, every packet at debug) go to the platform's log
    client.on_message = platform.on_message
    client.on_connect = lambda c, *_: c.subscribe(subscriptions)
    client.on_subscribe = lambda *_: print("READY", flush=True)
    client.connect(host, int(port or 1883), keepalive=30)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    platform.close()
    print("platform: " + ", ".join(f"{k} {v}" for k, v in platform.counts.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
