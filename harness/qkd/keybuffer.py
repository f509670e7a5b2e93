"""The key buffer (KB) at each end: FIFO of fixed-length keys with 64-bit ids, oldest evicted when full.

Final bits from privacy amplification are appended to a bit stream and cut into keys in order, so
Alice and Bob (which distil identical bits in the same order) assign the same id to the same key
without talking. Ids start at 1 (id 0 means "a new key" in the Clavis request).

"New key" requests hand out the oldest key not yet handed out that the next blocks cannot evict:
the peer's consumer then asks for it by id, and a full buffer evicts its oldest keys, so a key from
the eviction zone (the oldest ids, as many as two blocks cut: the peer may be a block ahead, and one
more may arrive between the two requests) could be gone at the other end. Oldest first, because the
keys a full buffer evicts are then the handed-out ones: handing out the newest (as this buffer did)
left the old fresh keys to be evicted by every new block while devices drew on a full buffer, and a
capacity run lost 2,567 of its initial 3,906 keys that way in its first 10 minutes (measured, bcn,
13,000 devices). Only when every fresh key is in the zone is the newest handed out.
A key stays readable by id until it is evicted, and a key read by id is not handed out as new.
The buffer always holds a contiguous window of ids (keys are cut in id order and evicted oldest
first), so a consumer holding a key id below one that is still readable knows it was evicted.

Keys handed out at one end are reported to the other end with the next block
(:meth:`take_handed_out` / :meth:`mark_handed_out`): that closes the window in which both ends
could hand out the same key as new only after one block, so the contract is that **one end of a
link hands out new keys** and the other is read by id (:mod:`harness.qkd.clavis`, ``new_keys``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


class KeyBuffer:
    """Thread-safe FIFO key store with a fixed capacity in keys."""

    def __init__(self, capacity_keys: int, key_bits: int = 256) -> None:
        if capacity_keys < 1 or key_bits % 8:
            raise ValueError("capacity must be >= 1 key and key_bits a multiple of 8")
        self.capacity = capacity_keys
        self.key_bits = key_bits
        self._keys: OrderedDict[int, bytes] = OrderedDict()
        self._handed_out: set[int] = set()
        # Ids not handed out yet, in id order: take_new pops the newest in O(1) (scanning _keys
        # past thousands of handed-out keys cost more than the whole rest of a request).
        self._fresh: OrderedDict[int, None] = OrderedDict()
        self._to_report: list[int] = []
        self._pending_bits = np.zeros(0, np.uint8)
        self._next_id = 1
        self._block_keys = 0  # the most keys one block has cut (the eviction zone is two of these)
        self._lock = threading.Lock()
        self.produced = 0
        self.evicted = 0

    def add_bits(self, bits: np.ndarray) -> list[int]:
        """Append final key bits; cut whole keys, store them (evicting the oldest); return new ids."""
        with self._lock:
            stream = np.concatenate([self._pending_bits, bits.astype(np.uint8)])
            whole = stream.size // self.key_bits
            self._pending_bits = stream[whole * self.key_bits:]
            packed = np.packbits(stream[: whole * self.key_bits]).tobytes()
            step = self.key_bits // 8
            ids = []
            for i in range(whole):
                key_id = self._next_id
                self._next_id += 1
                self._keys[key_id] = packed[i * step:(i + 1) * step]
                self._fresh[key_id] = None
                ids.append(key_id)
                if len(self._keys) > self.capacity:
                    old, _ = self._keys.popitem(last=False)
                    self._handed_out.discard(old)
                    self._fresh.pop(old, None)
                    self.evicted += 1
            self.produced += whole
            self._block_keys = max(self._block_keys, whole)
            return ids

    def get(self, key_id: int) -> bytes | None:
        """The key with this id, or None if it was never made or has been evicted."""
        with self._lock:
            return self._keys.get(key_id)

    def fetch(self, key_id: int) -> bytes | None:
        """The key with this id for a consumer (by-id request): it is no longer handed out as new."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is not None and key_id not in self._handed_out:
                self._hand_out(key_id)
            return key

    def _hand_out(self, key_id: int) -> None:
        self._handed_out.add(key_id)
        self._fresh.pop(key_id, None)
        self._to_report.append(key_id)

    def take_new(self) -> tuple[int, bytes] | None:
        """Hand out a key not handed out yet (at either end), the oldest outside the eviction zone
        (module docstring); None if there is none."""
        with self._lock:
            if not self._fresh:
                return None
            # Ids below the horizon go with the next two blocks; the window is contiguous, so an
            # id's distance from the oldest stored one is its place in the eviction order.
            oldest = next(iter(self._keys))
            horizon = oldest + max(0, len(self._keys) + 2 * self._block_keys - self.capacity)
            key_id = next((k for k in self._fresh if k >= horizon), None)  # skips at most the zone
            if key_id is None:
                key_id = next(reversed(self._fresh))
            self._hand_out(key_id)
            return key_id, self._keys[key_id]

    def take_handed_out(self) -> list[int]:
        """Ids handed out here since the last call (to tell the peer)."""
        with self._lock:
            ids, self._to_report = self._to_report, []
            return ids

    def mark_handed_out(self, ids) -> None:
        """The peer handed these ids out: do not hand them out here as new keys."""
        with self._lock:
            for key_id in (int(i) for i in ids):
                if key_id in self._keys:
                    self._handed_out.add(key_id)
                    self._fresh.pop(key_id, None)

    def ids(self) -> list[int]:
        """Ids currently stored, oldest first."""
        with self._lock:
            return list(self._keys)

    @property
    def stored(self) -> int:
        """Keys in the buffer."""
        with self._lock:
            return len(self._keys)

    @property
    def available(self) -> int:
        """Keys stored and not handed out yet."""
        with self._lock:
            return len(self._fresh)

    @property
    def pending_bits(self) -> int:
        """Final bits waiting to complete the next key."""
        return int(self._pending_bits.size)
