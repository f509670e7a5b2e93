"""One end of the emulated QKD link (Alice or Bob) as a process, or as an object in a process.

In a run: ``python -m harness.qkd.node --config RUN_DIR/config/run.json --role qkd-bob --clock-epoch E``
(or ``qkd-alice``): addresses, seed, time scale and link settings come from the run configuration.
Standalone: ``python -m harness.qkd.node --role bob --classical-listen 10.0.0.2:7000 --udp-listen 127.0.0.1:5323
--config qkd.json --seed 1 --clock-epoch E --time-scale 60 --out DIR`` (and Alice with
``--classical-peer``). Bob prints ``READY`` once his sockets listen, Alice once she is connected;
both exit cleanly on SIGTERM. Alice runs a block each time emulated time passes a block end, so
key production follows emulated time (without a clock, blocks run back to back). Both ends must
get the same config and seed: the seed also drives the emulated quantum channel.

Per block, ``blocks.csv`` and ``buffer.csv`` in ``--out`` get a row each, flushed at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from harness.clock import EmulatedClock
from harness.qkd.channel import Channel, ChannelClosed, ChannelError, parse_address
from harness.qkd.clavis import DEFAULT_PORT, ClavisServer
from harness.qkd.config import QkdConfigError, QkdLinkConfig
from harness.qkd.keybuffer import KeyBuffer
from harness.qkd.postproc import AliceEngine, BlockStats, BobEngine

BUFFER_COLUMNS = ["t_emul", "block", "keys_stored", "keys_available", "bits_stored", "keys_produced",
                  "keys_evicted"]


class QkdNode:
    """Alice or Bob: key buffer, optional Clavis UDP service, block loop and CSV records."""

    def __init__(self, role: str, config: QkdLinkConfig, seed: int, out_dir: Path | None = None,
                 clock: EmulatedClock | None = None, udp_address: tuple[str, int] | None = None,
                 new_keys: bool = True) -> None:
        if role not in ("alice", "bob"):
            raise ValueError(f"role must be alice or bob, got {role!r}")
        self.role, self.config, self.seed, self.clock = role, config, seed, clock
        self.buffer = KeyBuffer(config.buffer_keys, config.key_bits)
        # One end of a link hands out new keys (harness.qkd.clavis): ``new_keys=False`` at the other.
        self.server = ClavisServer(self.buffer, udp_address, new_keys=new_keys).start() if udp_address else None
        self.stats: list[BlockStats] = []
        self.stop_event = threading.Event()
        self.channel: Channel | None = None
        self._files = []
        self._blocks_csv = self._buffer_csv = None
        # Fibre cuts a run schedules (harness.faultinjector): read by Alice before every block.
        self.cuts_path = out_dir.parent / "cuts.json" if out_dir is not None else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._blocks_csv = self._open_csv(out_dir / "blocks.csv", BlockStats.columns())
            self._buffer_csv = self._open_csv(out_dir / "buffer.csv", BUFFER_COLUMNS)

    def _open_csv(self, path: Path, header: list[str]):
        handle = path.open("w", newline="")
        self._files.append(handle)
        writer = csv.writer(handle)
        writer.writerow(header)
        handle.flush()
        return writer, handle

    def attach(self, sock: socket.socket) -> None:
        """Use this connected socket as the classical channel."""
        self.channel = Channel(sock, self.config.post.auth_key.encode(), self.role)

    def run(self, until_s: float | None = None) -> None:
        """Run blocks until ``until_s`` emulated seconds (Alice), Alice's goodbye (Bob), or stop()."""
        if self.channel is None:
            raise RuntimeError("attach a classical channel first")
        try:
            if self.role == "alice":
                self._run_alice(until_s)
            else:
                self._run_bob()
        except (ChannelError, OSError):
            if not self.stop_event.is_set():
                raise

    def _run_alice(self, until_s: float | None) -> None:
        engine = AliceEngine(self.config, self.channel, self.seed, self.buffer)
        period = self.config.post.block_duration_s
        block = 0
        while not self.stop_event.is_set():
            t_end = (block + 1) * period
            if until_s is not None and t_end > until_s + 1e-9:
                break
            if self.clock is not None and not self.clock.sleep_until(t_end, self.stop_event):
                break
            self._record(engine.run_block(block, block * period, t_end, self.channel_up(block * period, t_end)))
            block += 1
        engine.close()

    def channel_up(self, t_start: float, t_end: float) -> bool:
        """False if a scheduled fibre cut overlaps the block [t_start, t_end) (emulated seconds)."""
        if self.cuts_path is None or not self.cuts_path.exists():
            return True
        try:
            cuts = json.loads(self.cuts_path.read_text())
        except (OSError, ValueError):
            return True  # being rewritten: the next block reads it whole
        return not any(cut["from_s"] < t_end and cut["to_s"] > t_start for cut in cuts)

    def _run_bob(self) -> None:
        engine = BobEngine(self.config, self.channel, self.seed, self.buffer)
        while not self.stop_event.is_set():
            stats = engine.serve_block()
            if stats is None:
                return
            self._record(stats)

    def _record(self, stats: BlockStats) -> None:
        self.stats.append(stats)
        if self._blocks_csv:
            writer, handle = self._blocks_csv
            writer.writerow(stats.row())
            handle.flush()
        if self._buffer_csv:
            writer, handle = self._buffer_csv
            buf = self.buffer
            writer.writerow([stats.t_end, stats.block, buf.stored, buf.available, buf.stored * buf.key_bits,
                             buf.produced, buf.evicted])
            handle.flush()

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler); unblocks a waiting Bob."""
        self.stop_event.set()
        if self.channel is not None and self.role == "bob":
            try:
                self.channel.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Release sockets and files."""
        if self.server:
            self.server.stop()
        if self.channel:
            self.channel.close()
        for handle in self._files:
            handle.close()


def load_config_file(path: Path, loss_db: float | None = None) -> QkdLinkConfig:
    """Read ``{"qkd": {...}, "fibre": {...}}`` JSON (the scenario's sections) into a config."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise QkdConfigError(f"{path}: cannot read QKD config: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"qkd", "fibre"}:
        raise QkdConfigError(f"{path}: expected an object with 'qkd' and 'fibre' sections")
    config = QkdLinkConfig.from_scenario(data.get("qkd"), data.get("fibre"))
    return config if loss_db is None else config.replace(loss_db=loss_db)


def _connect(address: tuple[str, int], stop: threading.Event, timeout_s: float) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.create_connection(address, timeout=5)
        except OSError:
            if stop.is_set() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


#: The QKD ends' daemon names in a run, and the end each one is.
RUN_ROLES = {"qkd-alice": "alice", "qkd-bob": "bob"}


def check(config, role: str) -> list[str]:
    """Pre-start check of a QKD end's part of the run configuration."""
    return [] if role in RUN_ROLES else [f"unknown role {role!r} (known: {', '.join(RUN_ROLES)})"]


def _from_run_config(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the node's options from the run's run.json for role qkd-alice / qkd-bob."""
    from harness import runconfig

    config = runconfig.read(args.config)
    end = RUN_ROLES[args.role]
    site = config.site
    classical = f"{site.dc_ip}:{site.ports.classical}"
    return argparse.Namespace(
        role=end, qkd=config.qkd, seed=config.run.seed, time_scale=config.run.time_scale,
        clock_epoch=args.clock_epoch, seconds=None, connect_timeout=args.connect_timeout,
        udp_listen=f"127.0.0.1:{site.ports.clavis}", out=config.link_dir / end,
        # Alice's KME issues the keys in a run (harness.keyservices): Bob's end answers by id only.
        new_keys=end == "alice",
        classical_listen=classical if end == "bob" else None, classical_peer=classical if end == "alice" else None,
        log_level=runconfig.log_level_of(args.log_level, config))


def main(argv: list[str] | None = None) -> int:
    """Process entry point; returns the exit status."""
    from harness import runconfig

    parser = argparse.ArgumentParser(prog="python -m harness.qkd.node", description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("alice", "bob", *RUN_ROLES), required=True,
                        help="alice or bob standalone; qkd-alice or qkd-bob in a run (with --config run.json)")
    parser.add_argument("--classical-listen", help="Bob: ADDR:PORT to accept Alice on")
    parser.add_argument("--classical-peer", help="Alice: Bob's ADDR:PORT")
    parser.add_argument("--udp-listen", default=f"127.0.0.1:{DEFAULT_PORT}", help="Clavis key service ADDR:PORT")
    parser.add_argument("--config", type=Path, help="a run's run.json (roles qkd-*), or JSON with the "
                                                    "scenario's qkd and fibre sections (roles alice/bob)")
    parser.add_argument("--loss-db", type=float, help="override the fibre loss")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clock-epoch", type=float)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, help="Alice: stop after this many emulated seconds")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    runconfig.add_log_level_argument(parser)
    args = parser.parse_args(argv)
    try:
        if args.role in RUN_ROLES:
            if args.config is None:
                raise ValueError(f"role {args.role} needs --config RUN_DIR/config/run.json")
            args = _from_run_config(args)
            config = args.qkd
        else:
            config = load_config_file(args.config, args.loss_db) if args.config else QkdLinkConfig(
                **({"loss_db": args.loss_db} if args.loss_db is not None else {}))
        udp = parse_address(args.udp_listen, DEFAULT_PORT)
        peer = parse_address(args.classical_peer) if args.role == "alice" and args.classical_peer else None
        listen = parse_address(args.classical_listen) if args.role == "bob" and args.classical_listen else None
        if (args.role == "alice" and peer is None) or (args.role == "bob" and listen is None):
            raise ValueError("alice needs --classical-peer, bob needs --classical-listen")
        clock = EmulatedClock(args.clock_epoch, args.time_scale) if args.clock_epoch is not None else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runconfig.configure_logging(args.log_level)
    node = QkdNode(args.role, config, args.seed, args.out, clock, udp, new_keys=getattr(args, "new_keys", True))
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    signal.signal(signal.SIGINT, lambda *_: node.stop())
    try:
        if args.role == "bob":
            listener = socket.create_server(listen, reuse_port=False)
            listener.settimeout(0.2)
            print("READY", flush=True)
            while not node.stop_event.is_set():
                try:
                    sock, _ = listener.accept()
                    break
                except socket.timeout:
                    continue
            else:
                return 0
            listener.close()
            sock.settimeout(None)
        else:
            sock = _connect(peer, node.stop_event, args.connect_timeout)
            sock.settimeout(None)
            print("READY", flush=True)
        node.attach(sock)
        node.run(args.seconds)
        return 0
    except ChannelClosed as exc:   # the peer was stopped first: an orderly end
        print(f"{args.role}: {exc}", file=sys.stderr)
        return 0
    except (ChannelError, OSError) as exc:
        if node.stop_event.is_set():
            return 0
        print(f"error: {args.role}: {exc}", file=sys.stderr)
        return 1
    finally:
        node.close()


if __name__ == "__main__":
    sys.exit(main())
