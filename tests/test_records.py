"""ctshm.records: many variable-length records per ring slot (RecordWriter / RecordReader).

The child functions at the top run in spawned processes (they import only ctshm).
"""

from __future__ import annotations

import array
import struct
import sys

import pytest

from ctshm import CorruptRingError, ProducerCrashed, ShmTraceRing
from ctshm.layout import HUGE_PAGE_SIZE
from ctshm.records import (
    RECORD_HEADER,
    SLOT_HEADER,
    RecordReader,
    RecordWriter,
    max_record_size,
)

from .helpers import IS_PYPY, SPAWN, collect_garbage, join_all

SLOT = HUGE_PAGE_SIZE
SIZES = [0, 1, 7, 8, 9, 63, 64, 65, 4096, 100_000, 0, 3, 1 << 20]


_TABLE = bytes(range(251)) * ((max(SIZES) // 251) + 2)


def payload(i: int, n: int) -> bytes:
    """Record i of n bytes: i in the first bytes (as much of it as fits), then byte j is
    (i + j) % 251."""
    head = struct.pack("<Q", i)[:n]
    start = (i + len(head)) % 251
    return head + _TABLE[start:start + n - len(head)]


def stream(count: int) -> list[bytes]:
    return [payload(i, SIZES[i % len(SIZES)]) for i in range(count)]


def framed(sizes: list[int]) -> int:
    return SLOT_HEADER + sum(RECORD_HEADER + ((n + 7) & ~7) for n in sizes)


# ---------------------------------------------------------------------------------------------
# Spawned children
# ---------------------------------------------------------------------------------------------


def child_write(id: str, count: int, max_bytes: int, flush_every: int) -> None:
    """Open the ring, write stream(count) (explicit flush every ``flush_every`` records),
    close (flush + mark_finished)."""
    ring = ShmTraceRing.open(id, timeout=30)
    with RecordWriter(ring, max_bytes=max_bytes, timeout=30) as w:
        for i, rec in enumerate(stream(count)):
            if i % 5 == 4:  # every fifth record through reserve()
                w.reserve(len(rec))[:] = rec
            else:
                w.append(rec)
            if flush_every and i % flush_every == flush_every - 1:
                w.flush()
    ring.close()


def child_read(id: str, count: int) -> None:
    """Read every record until Finished and compare with stream(count); exit 3 on mismatch."""
    ring = ShmTraceRing.open(id, timeout=30)
    expected = stream(count)
    got = 0
    for rec in RecordReader(ring, timeout=30):
        if got >= count or bytes(rec) != expected[got] or not rec.readonly:
            sys.exit(3)
        got += 1
    ring.close()
    if got != count:
        sys.exit(4)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ring(shm_id: str):  # type: ignore[no-untyped-def]
    r = ShmTraceRing.create(shm_id, 4, SLOT)
    yield r
    r.close()


def read_all(ring: ShmTraceRing, timeout: float = 5) -> list[bytes]:
    return [bytes(rec) for rec in RecordReader(ring, timeout=timeout)]


# ---------------------------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("max_bytes,flush_every", [(SLOT, 0), (64 * 1024, 0), (4096, 7)])
def test_round_trip_spawned_writer(shm_id: str, max_bytes: int, flush_every: int) -> None:
    count = 400
    ring = ShmTraceRing.create(shm_id, 4, SLOT)
    try:
        p = SPAWN.Process(target=child_write, args=(shm_id, count, max_bytes, flush_every),
                          daemon=True)
        p.start()
        got = read_all(ring, timeout=30)
        assert join_all([p]) == [0]
        assert got == stream(count)
    finally:
        ring.close()


@pytest.mark.timeout_s(90)
def test_round_trip_spawned_reader(shm_id: str) -> None:
    count = 400
    ring = ShmTraceRing.create(shm_id, 4, SLOT)
    try:
        p = SPAWN.Process(target=child_read, args=(shm_id, count), daemon=True)
        p.start()
        with RecordWriter(ring, max_bytes=32 * 1024, timeout=30) as w:
            for rec in stream(count):
                w.append(rec)
        assert w.records_written == count
        assert w.slots_written > 1
        assert join_all([p]) == [0]
    finally:
        ring.close()


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


def test_slot_bytes_follow_the_documented_framing(ring: ShmTraceRing) -> None:
    recs = [b"", b"abc", b"12345678", b"x" * 9]
    w = RecordWriter(ring, timeout=5, linger=None)
    for r in recs:
        w.append(r)
    w.flush()
    d = ring.access(timeout=1)
    g = d.guard  # type: ignore[union-attr]
    raw = bytes(g.buf)
    g.release()
    assert len(raw) == framed([len(r) for r in recs])  # the exact framed length, committed
    assert struct.unpack_from("<II", raw, 0) == (len(recs), 0)
    off = SLOT_HEADER
    for r in recs:
        assert off % 8 == 0
        assert struct.unpack_from("<II", raw, off) == (len(r), 0)
        assert raw[off + 8:off + 8 + len(r)] == r
        off += RECORD_HEADER + ((len(r) + 7) & ~7)
    assert off == len(raw)


def test_zero_length_records(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    for _ in range(1000):
        w.append(b"")
    w.append(memoryview(b""))
    w.reserve(0)
    w.close()
    got = read_all(ring)
    assert got == [b""] * 1002


def test_record_exactly_filling_a_slot(ring: ShmTraceRing) -> None:
    biggest = max_record_size(ring.slot_size)
    assert biggest == ring.slot_size - 16
    w = RecordWriter(ring, timeout=5, linger=None)
    w.append(b"a" * biggest)
    w.append(b"b")  # does not fit behind it: a new slot
    # Two records that fill a slot to its last byte.
    first = 1000
    second = ring.slot_size - SLOT_HEADER - 2 * RECORD_HEADER - first
    w.flush()
    w.append(b"c" * first)
    w.append(b"d" * second)
    w.close()
    r = RecordReader(ring, timeout=5)
    sizes = []
    per_slot = []
    for batch in r.batches():
        per_slot.append(len(batch))
        sizes += [len(x) for x in batch]
    assert sizes == [biggest, 1, first, second]
    assert per_slot == [1, 1, 2]


def test_record_larger_than_a_slot_is_a_clear_error(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    w.append(b"before")
    too_big = max_record_size(ring.slot_size) + 1
    with pytest.raises(ValueError, match=r"does not fit a slot .*at most \d+ bytes per record"):
        w.append(bytes(too_big))
    with pytest.raises(ValueError, match="does not fit a slot"):
        w.reserve(too_big)
    assert w.pending == 1  # nothing was lost or flushed by the failed calls
    w.append(b"after")
    w.close()
    assert read_all(ring) == [b"before", b"after"]


def test_bytes_like_inputs(ring: ShmTraceRing) -> None:
    a = array.array("I", [1, 2, 3])
    w = RecordWriter(ring, timeout=5, linger=None)
    w.append(a)
    w.append(bytearray(b"ba"))
    w.append(memoryview(b"xyz")[1:])
    w.close()
    assert read_all(ring) == [a.tobytes(), b"ba", b"yz"]


def test_reserve_returns_a_writable_view_of_the_payload(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    v = w.reserve(5)
    assert len(v) == 5 and not v.readonly
    v[:] = b"hello"
    struct.pack_into("<I", w.reserve(4), 0, 0xDEADBEEF)
    w.close()
    assert read_all(ring) == [b"hello", struct.pack("<I", 0xDEADBEEF)]


# ---------------------------------------------------------------------------------------------
# Flushing and the slot's life
# ---------------------------------------------------------------------------------------------


def test_flush_semantics(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    w.flush()  # nothing pending: no slot is published (nor even acquired)
    assert ring.header()["write_idx"] == 0
    w.append(b"one")
    w.append(b"two")
    assert w.pending == 2
    assert ring.header()["write_idx"] == 0  # not published before flush
    w.flush()
    assert w.pending == 0 and w.slots_written == 1 and w.records_written == 2
    assert ring.header()["write_idx"] == 1
    w.flush()  # nothing new: still one slot
    assert ring.header()["write_idx"] == 1
    w.append(b"three")
    w.close(finish=False)  # flushes, does not finish
    assert ring.header()["write_idx"] == 2 and ring.header()["finished"] == 0
    r = RecordReader(ring, timeout=0.2)
    got = []
    with pytest.raises(TimeoutError):
        for rec in r:
            got.append(bytes(rec))
    assert got == [b"one", b"two", b"three"]
    assert (r.slots_read, r.records_read) == (2, 3)


def test_max_bytes_flushes_when_the_next_record_would_exceed_it(shm_id: str) -> None:
    ring = ShmTraceRing.create(shm_id, 8, SLOT)
    try:
        _check_max_bytes(ring)
    finally:
        ring.close()


def _check_max_bytes(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, max_bytes=SLOT_HEADER + 3 * (RECORD_HEADER + 8), timeout=5,
                     linger=None)
    for i in range(7):
        w.append(bytes([i]) * 8)
    assert w.slots_written == 2 and w.pending == 1
    # A record larger than max_bytes (but not than the slot) goes alone into a slot.
    w.append(b"L" * 1000)
    w.append(b"s")
    w.close()
    batches = [[bytes(x) for x in b] for b in RecordReader(ring, timeout=5).batches()]
    assert [len(b) for b in batches] == [3, 3, 1, 1, 1]
    assert batches[3] == [b"L" * 1000]


def test_finished_ends_iteration_and_crash_raises(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring:
        w = RecordWriter(ring, timeout=5, linger=None)
        w.append(b"last words")
        w.flush()
        ring.notify_crash(11, 0x10, 2)
        r = RecordReader(ring, timeout=5)
        it = iter(r)
        assert bytes(next(it)) == b"last words"  # committed data first
        with pytest.raises(ProducerCrashed):
            next(it)


def test_views_are_released_when_the_reader_moves_on(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    w.append(b"first slot")
    w.flush()
    w.append(b"second slot")
    w.close()
    it = iter(RecordReader(ring, timeout=5))
    first = next(it)
    assert first.readonly and bytes(first) == b"first slot"
    second = next(it)
    with pytest.raises(ValueError):
        bytes(first)  # its slot was handed back: the view no longer reads shared memory
    assert bytes(second) == b"second slot"
    assert list(it) == []


def test_closing_the_iterator_releases_the_slot(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    for i in range(3):
        w.append(bytes([i]))
    w.close()
    it = iter(RecordReader(ring, timeout=5))
    keep = it  # still referenced: only close() can release the slot
    assert bytes(next(it)) == b"\x00"
    assert ring.header()["read_idx"] == 0
    it.close()  # type: ignore[attr-defined]
    assert ring.header()["read_idx"] == 1
    assert keep is it


def test_break_releases_the_slot(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    for i in range(10):
        w.append(bytes([i]))
    w.close()
    for _rec in RecordReader(ring, timeout=5):
        break
    if IS_PYPY:  # no reference counting: the dropped iterator is finalized by the collector
        collect_garbage()
    h = ring.header()
    assert h["read_idx"] == h["write_idx"] == 1


def test_exception_in_with_block_aborts(ring: ShmTraceRing) -> None:
    with pytest.raises(KeyError), RecordWriter(ring, timeout=5, linger=None) as w:
        w.append(b"lost")
        raise KeyError("boom")
    h = ring.header()
    assert h["write_idx"] == 0 and h["finished"] == 0  # nothing published, not finished
    for _ in range(ring.capacity):  # every slot is free again
        ring.acquire(timeout=1).abort()
    with pytest.raises(ValueError, match="closed"):
        w.append(b"x")


def test_closed_writer_refuses_records(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.append(b"late")
    with pytest.raises(ValueError, match="closed"):
        w.reserve(1)
    assert read_all(ring) == []


def test_corrupt_slot_is_refused_and_released(ring: ShmTraceRing) -> None:
    g = ring.acquire(timeout=1, size=64)
    struct.pack_into("<II", g.buf, 0, 2, 0)  # two records announced ...
    struct.pack_into("<II", g.buf, 8, 8, 0)  # ... the first fits, the second lies beyond
    struct.pack_into("<II", g.buf, 24, 1000, 0)
    g.commit(40)
    ring.mark_finished()
    with pytest.raises(CorruptRingError, match="announces 2 records") as raised:
        read_all(ring)
    # Released by the reader itself, not by the guard's finalizer: the traceback kept in
    # `raised` still holds the reader's frames (and the guard), as a caller's handler would.
    h = ring.header()
    assert h["read_idx"] == h["write_idx"] == 1
    del raised


def test_invalid_arguments(ring: ShmTraceRing) -> None:
    with pytest.raises(TypeError):
        RecordWriter(ring, max_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RecordWriter(ring, max_bytes=8)
    w = RecordWriter(ring, timeout=5, linger=None)
    with pytest.raises(ValueError):
        w.reserve(-1)
    with pytest.raises(TypeError):
        w.reserve(True)
    w.close()
