"""What one KME holds between requests: reservations (keys issued, awaiting the slave's dec_keys) and
its pool (keys taken from its own QKD end but not issued yet), optionally kept on disk.

A vendor's KME keeps its key store across restarts; so does this one when given a directory: every
change is one SQLite transaction (the standard library's ``sqlite3``, write-ahead log), so the file
always holds a consistent state and a KME restarted mid-run still answers dec_keys for every key it
had issued. SQLite rather than hand-written files because it gives atomic multi-row changes (a
dec_keys of many keys is all or nothing) with no code of ours to get wrong. The file holds key
material: the directory is created with mode 0700 and the database with 0600. Without a directory
the store lives in memory only (a restart then loses the reservations, which the KME reports).

Reads come from in-memory copies (fast); the disk is written through under the same lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

STORE_FILE = "keystore.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reservation (key_ID TEXT PRIMARY KEY, master TEXT NOT NULL,
                                        slave TEXT NOT NULL, size INTEGER NOT NULL, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pool (clavis_id INTEGER PRIMARY KEY, key BLOB NOT NULL);
"""


@dataclass(frozen=True)
class Reservation:
    """A key issued to ``master`` for ``slave``: ``size`` bits are delivered, a prefix of ``key``."""

    master: str
    slave: str
    size: int
    key: bytes = field(repr=False)  # key bytes stay out of reprs, hence out of logs and tracebacks


class KeyStore:
    """Reservations by key_ID and the pool by Clavis id; ``directory`` None keeps them in memory."""

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self._lock = threading.Lock()
        self._reservations: dict[str, Reservation] = {}
        self._pool: dict[int, bytes] = {}
        self.pool_puts = 0  # changes each time keys enter the pool (lets a reader detect a race)
        self._db: sqlite3.Connection | None = None
        self.path: Path | None = None
        if directory is not None:
            self._open(Path(directory))

    def _open(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / STORE_FILE
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT in _write).
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash or restart
        self._db.executescript(_SCHEMA)
        for kid, master, slave, size, key in self._db.execute("SELECT * FROM reservation"):
            self._reservations[kid] = Reservation(master, slave, size, bytes(key))
        for cid, key in self._db.execute("SELECT * FROM pool"):
            self._pool[cid] = bytes(key)

    def _write(self, statements: Iterable[tuple[str, Iterable[tuple]]]) -> None:
        """Run ``(sql, rows)`` pairs in one transaction (caller holds the lock)."""
        if self._db is None:
            return
        self._db.execute("BEGIN")
        try:
            for sql, rows in statements:
                self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # --- reservations ---------------------------------------------------------------------------
    def reserve(self, items: list[tuple[str, Reservation]]) -> None:
        """Record reservations (a key_ID reserved again replaces the old reservation)."""
        with self._lock:
            self._write([("INSERT OR REPLACE INTO reservation VALUES (?, ?, ?, ?, ?)",
                          [(kid, r.master, r.slave, r.size, r.key) for kid, r in items])])
            self._reservations.update(items)

    def reservations(self, key_ids: list[str]) -> list[Reservation | None]:
        """The reservations of ``key_ids`` (None where there is none)."""
        with self._lock:
            return [self._reservations.get(kid) for kid in key_ids]

    def take_reservations(self, key_ids: list[str], expected: list[Reservation]) -> bool:
        """Remove the reservations of ``key_ids`` if each is still ``expected``; all or nothing."""
        with self._lock:
            if any(res is None or self._reservations.get(kid) is not res for kid, res in zip(key_ids, expected)):
                return False
            self._write([("DELETE FROM reservation WHERE key_ID = ?", [(kid,) for kid in key_ids])])
            for kid in key_ids:
                del self._reservations[kid]
            return True

    def drop_reservations(self, key_ids: Iterable[str], master: str | None = None,
                          slave: str | None = None) -> dict[str, Reservation]:
        """Remove and return the reservations among ``key_ids`` (only those of master/slave if given)."""
        with self._lock:
            gone = {kid: res for kid in key_ids if (res := self._reservations.get(kid)) is not None
                    and (master is None or res.master == master) and (slave is None or res.slave == slave)}
            self._write([("DELETE FROM reservation WHERE key_ID = ?", [(kid,) for kid in gone])])
            for kid in gone:
                del self._reservations[kid]
            return gone

    @property
    def reservation_count(self) -> int:
        """Keys issued and not yet delivered to their slave SAE."""
        with self._lock:
            return len(self._reservations)

    # --- pool -----------------------------------------------------------------------------------
    def pool_put(self, keys: list[tuple[int, bytes]]) -> None:
        """Add keys (Clavis id, bytes) taken from this end's QKD buffer."""
        with self._lock:
            self._write([("INSERT OR REPLACE INTO pool VALUES (?, ?)", keys)])
            self._pool.update(keys)
            self.pool_puts += 1

    def pool_take(self, number: int) -> list[tuple[int, bytes]]:
        """Remove and return up to ``number`` pooled keys, oldest (lowest id) first."""
        with self._lock:
            if not self._pool:
                return []
            taken = [(cid, self._pool[cid]) for cid in sorted(self._pool)[:number]]
            self._write([("DELETE FROM pool WHERE clavis_id = ?", [(cid,) for cid, _ in taken])])
            for cid, _ in taken:
                del self._pool[cid]
            return taken

    def pool_oldest(self) -> int | None:
        """The lowest Clavis id in the pool, or None if it is empty."""
        with self._lock:
            return min(self._pool) if self._pool else None

    def pool_drop(self, clavis_id: int) -> bool:
        """Remove one pooled key (evicted at its QKD end); True if it was there."""
        with self._lock:
            if self._pool.pop(clavis_id, None) is None:
                return False
            self._write([("DELETE FROM pool WHERE clavis_id = ?", [(clavis_id,)])])
            return True

    @property
    def pool_count(self) -> int:
        """Keys in the pool."""
        with self._lock:
            return len(self._pool)

    def close(self) -> None:
        """Close the database (the in-memory copies stay readable)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
