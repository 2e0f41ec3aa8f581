"""Batches: ``ring.put_many`` / ``ring.get_many`` move every message exactly once, in order,
one message per slot -- across processes, both ring modes, with guards outstanding, at the
end of a stream, and byte for byte with the Rust original (compat ring)."""

from __future__ import annotations

import struct

import pytest

from ctshm import ProducerCrashed, RingFinished, ShmTraceRing

from . import helpers, ring_children as rc
from .test_interop import finish_peer, start_peer

_SEQ = struct.Struct("<Q")
MODES = [pytest.param(False, id="compat"), pytest.param(True, id="fast")]


def msg(i: int) -> bytes:
    """Message i: its sequence number, then i % 50 bytes of a pattern (lengths vary)."""
    return _SEQ.pack(i) + bytes((i + j) & 0xFF for j in range(i % 50))


def check(got: list[bytes], start: int) -> None:
    for k, m in enumerate(got):
        assert m == msg(start + k), f"message {start + k}: {m[:16]!r}"


@pytest.mark.parametrize("fast", MODES)
def test_round_trip_in_one_process(shm_id: str, fast: bool) -> None:
    with ShmTraceRing.create(shm_id, 8, 4096, fast=fast) as ring, \
            ShmTraceRing.open(shm_id) as reader:
        n = 0
        for size in (1, 3, 8, 5, 8, 2):  # batches smaller than, equal to the capacity
            ring.put_many([msg(n + k) for k in range(size)])
            got = reader.get_many(100)
            assert len(got) == size
            check(got, n)
            n += size
        hdr = ring.header()
        assert hdr["write_idx"] == hdr["read_idx"] == hdr["reserved_idx"] == n
        ring.mark_finished()
        with pytest.raises(RingFinished):
            reader.get_many()


@pytest.mark.parametrize("fast", MODES)
def test_more_than_capacity_across_processes(shm_id: str, fast: bool) -> None:
    """A batch larger than the ring waits for space; a consumer process takes batches of
    at most 7: all 5000 arrive once, in order."""
    count = 5000

    def produce() -> None:
        with ShmTraceRing.open(shm_id, timeout=10) as r:
            for start in range(0, count, 100):
                r.put_many([msg(i) for i in range(start, min(count, start + 100))],
                           timeout=30)
            r.mark_finished()

    with ShmTraceRing.create(shm_id, 4, 4096, fast=fast) as ring:
        pid = helpers.fork_call(produce)
        n = 0
        try:
            while True:
                got = ring.get_many(7, timeout=30)
                assert 1 <= len(got) <= 7
                check(got, n)
                n += len(got)
        except RingFinished:
            pass
        assert helpers.reap(pid, 60) == 0
        assert n == count


@pytest.mark.parametrize("fast", MODES)
def test_get_many_with_a_guard_outstanding(shm_id: str, fast: bool) -> None:
    """A guard held from access() puts get_many on the general path; both end in order."""
    with ShmTraceRing.create(shm_id, 8, 4096, fast=fast) as ring, \
            ShmTraceRing.open(shm_id) as reader:
        for _ in range(2):  # every slot used once (mapped, backed): the quiet paths apply
            ring.put_many([msg(i) for i in range(8)])
            check(reader.get_many(8), 0)
        ring.put_many([msg(i) for i in range(6)])
        r = reader.access(5)
        g = r.guard  # type: ignore[union-attr]
        assert bytes(g.buf) == msg(0)
        got = reader.get_many(3)
        check(got, 1)
        assert ring.header()["read_idx"] == 16  # message 0 (16) still held
        g.release()
        assert ring.header()["read_idx"] == 20
        check(reader.get_many(10), 4)
        assert ring.header()["read_idx"] == 22


@pytest.mark.parametrize("fast", MODES)
def test_a_message_too_large_puts_none(shm_id: str, fast: bool) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096, fast=fast) as ring, \
            ShmTraceRing.open(shm_id) as reader:
        big = bytes(ring.slot_size + 1)
        with pytest.raises(ValueError, match=r"message 1 has \d+ bytes.*nothing was put"):
            ring.put_many([msg(0), big, msg(2)])
        assert ring.header()["write_idx"] == 0
        with pytest.raises(TypeError, match="put_many"):
            ring.put_many([msg(0), 42])
        assert ring.header()["write_idx"] == 0
        ring.put_many([msg(0)])
        assert reader.get_many() == [msg(0)]


@pytest.mark.parametrize("fast", MODES)
def test_put_many_timeout_says_how_many_were_put(shm_id: str, fast: bool) -> None:
    with ShmTraceRing.create(shm_id, 3, 4096, fast=fast) as ring, \
            ShmTraceRing.open(shm_id) as reader:
        with pytest.raises(TimeoutError, match=r"messages 0\.\.2 of 5 were put, 3\.\. were not"):
            ring.put_many([msg(i) for i in range(5)], timeout=0.2)
        got = reader.get_many(10)
        check(got, 0)
        assert len(got) == 3


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_get_many_refuses_a_bad_count(shm_id: str, bad: object) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring, \
            pytest.raises(ValueError, match=r"_t'.*max_messages must be an int >= 1"):
        ring.get_many(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("fast", MODES)
def test_get_many_timeout_and_crash(shm_id: str, fast: bool) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096, fast=fast) as ring, \
            ShmTraceRing.open(shm_id) as reader:
        with pytest.raises(TimeoutError):
            reader.get_many(timeout=0.05)
        ring.put_many([msg(0), msg(1)])
        ring.notify_crash(11, 0x10, 2)
        check(reader.get_many(), 0)  # what was committed before the crash first
        with pytest.raises(ProducerCrashed):
            reader.get_many()


def test_buffers_of_every_kind(shm_id: str) -> None:
    import array
    with ShmTraceRing.create(shm_id, 8, 4096) as ring, ShmTraceRing.open(shm_id) as reader:
        a = array.array("I", [1, 2, 3])
        ring.put_many([b"ab", bytearray(b"cd"), memoryview(b"efgh")[1:3], a])
        assert reader.get_many() == [b"ab", b"cd", b"fg", a.tobytes()]


@pytest.mark.seedref
def test_put_many_to_the_rust_consumer(seedref: str, shm_id: str) -> None:
    """Compat ring: a Rust consumer reads put_many's slots frame by frame."""
    count, plen = 300, 40
    frames = []
    for i in range(count):
        buf = bytearray(64)
        n = rc.write_frame(memoryview(buf), i, plen)
        frames.append(bytes(buf[:n]))
    with ShmTraceRing.create(shm_id, 3, 4096) as ring:
        p = start_peer(seedref, "consume", shm_id, 3, 4096, "--expect-count", count,
                       "--expect-len", plen)
        for start in range(0, count, 50):
            ring.put_many(frames[start:start + 50], timeout=30)
        ring.mark_finished()
        out = finish_peer(p)
    assert out["count"] == count and out["finished"] is True and out["errors"] == 0


@pytest.mark.seedref
def test_get_many_from_the_rust_producer(seedref: str, shm_id: str) -> None:
    count, plen = 300, 40
    p = start_peer(seedref, "produce", shm_id, 3, 4096, count, plen, "--create")
    with ShmTraceRing.open(shm_id, 3, 4096, timeout=20) as ring:
        n = 0
        try:
            while True:
                for m in ring.get_many(16, timeout=30):
                    assert len(m) == ring.slot_size  # a Rust slot: no length record
                    rc.check_frame(memoryview(m), n, plen)
                    n += 1
        except RingFinished:
            pass
    assert n == count
    out = finish_peer(p)
    assert out["count"] == count and out["drained"] is True
