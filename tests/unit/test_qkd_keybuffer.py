"""Key buffer: FIFO, oldest replaced when full, same ids from the same bits."""

import numpy as np
import pytest

from harness.qkd.keybuffer import KeyBuffer


def test_keys_are_cut_in_order_with_sequential_ids():
    buf = KeyBuffer(capacity_keys=10, key_bits=256)
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, 256 * 3 + 100, dtype=np.uint8)
    assert buf.add_bits(bits[:300]) == [1]
    assert buf.add_bits(bits[300:]) == [2, 3]
    assert buf.pending_bits == 100
    assert buf.get(2) == np.packbits(bits[256:512]).tobytes()
    assert buf.get(4) is None


def test_full_buffer_replaces_oldest():
    buf = KeyBuffer(capacity_keys=3, key_bits=256)
    for i in range(5):
        buf.add_bits(np.full(256, i % 2, np.uint8))
    assert buf.ids() == [3, 4, 5]
    assert buf.get(1) is None and buf.get(2) is None and buf.get(5) is not None
    assert buf.stored == 3 and buf.evicted == 2 and buf.produced == 5


def test_a_full_buffer_drawn_on_keeps_its_keys_for_the_consumers():
    """Devices drawing on a full buffer while blocks keep arriving: the fresh keys are handed out
    oldest first, so each block evicts keys already handed out, not the stored ones (handing out the
    newest lost one fresh key per key distilled until the buffer was empty)."""
    capacity, per_block, take_per_block = 100, 5, 8   # demand above the distillation rate
    buf = KeyBuffer(capacity)
    rng = np.random.default_rng(3)
    while buf.stored < capacity:
        buf.add_bits(rng.integers(0, 2, 256 * per_block, dtype=np.uint8))
    handed = 0
    while True:
        taken = [buf.take_new() for _ in range(take_per_block)]
        handed += sum(1 for t in taken if t is not None)
        if taken[-1] is None:
            break
        buf.add_bits(rng.integers(0, 2, 256 * per_block, dtype=np.uint8))
    blocks = buf.produced // per_block - capacity // per_block
    # Everything stored plus everything distilled since, less at most the two blocks' zone.
    assert capacity + blocks * per_block - handed <= 2 * per_block
    assert handed >= capacity + blocks * per_block - 2 * per_block


def test_new_key_hands_out_newest_once_and_peer_reports():
    alice, bob = KeyBuffer(5), KeyBuffer(5)
    bits = np.random.default_rng(1).integers(0, 2, 256 * 3, dtype=np.uint8)
    alice.add_bits(bits)
    bob.add_bits(bits)
    key_id, key = alice.take_new()
    assert key_id == 3 and bob.get(3) == key           # same id, same key at both ends
    assert alice.take_new()[0] == 2
    bob.mark_handed_out(alice.take_handed_out())
    assert bob.take_new()[0] == 1                        # Bob skips what Alice handed out
    assert bob.take_new() is None and bob.available == 0
    assert alice.get(3) == key                           # still readable by id until evicted


def test_a_handed_out_key_outlives_the_peers_evictions():
    """The newest key is handed out, so the peer still holds it while full buffers turn over."""
    alice, bob = KeyBuffer(4), KeyBuffer(4)
    rng = np.random.default_rng(2)
    first = rng.integers(0, 2, 256 * 4, dtype=np.uint8)
    alice.add_bits(first)
    bob.add_bits(first)
    key_id, key = alice.take_new()
    more = rng.integers(0, 2, 256 * 3, dtype=np.uint8)  # both ends evict their three oldest keys
    alice.add_bits(more)
    bob.add_bits(more)
    assert bob.fetch(key_id) == key


def test_bad_sizes_rejected():
    with pytest.raises(ValueError):
        KeyBuffer(0)
    with pytest.raises(ValueError):
        KeyBuffer(10, key_bits=100)


def test_key_read_by_id_is_not_handed_out_as_new():
    buf = KeyBuffer(5)
    buf.add_bits(np.zeros(256 * 2, np.uint8))
    assert buf.fetch(1) is not None and buf.fetch(9) is None
    assert buf.take_new()[0] == 2
    assert buf.take_handed_out() == [1, 2]
