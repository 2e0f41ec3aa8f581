"""RecordWriter's linger bound: a record is published at most ``linger`` seconds after it was
appended, at once when the ring is empty (unless the writer streams: then it is held a
little), by a flusher thread when no further call comes.

No assertion measures time: the bound is checked structurally (an injected fake clock, or a
publication that only the flusher thread can have made).
"""

from __future__ import annotations

import gc
import sys
import threading
import warnings

import pytest

from ctshm import ShmTraceRing
from ctshm._record_framing import split
from ctshm.records import DEFAULT_LINGER, RecordReader, RecordWriter

from .helpers import SPAWN, drain, join_all

SLOT = 1 << 16


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def flusher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ctshm-linger[")]


@pytest.fixture
def ring(shm_id: str):  # type: ignore[no-untyped-def]
    r = ShmTraceRing.create(shm_id, 4, SLOT)
    yield r
    drain(r)  # what a test left unread (make_busy's blocker, ...): closing loses nothing
    r.close()


def write_idx(ring: ShmTraceRing) -> int:
    return int(ring.header()["write_idx"])


def make_busy(ring: ShmTraceRing) -> None:
    """Publish one plain message nobody has read: the ring is not empty."""
    ring.put(b"blocker")


def records_of_slots(ring: ShmTraceRing, slots: int) -> list[list[bytes]]:
    out = []
    it = RecordReader(ring, timeout=10).batches()
    for _ in range(slots):
        out.append([bytes(r) for r in next(it)])
    it.close()
    return out


# ---------------------------------------------------------------------------------------------
# Across processes: the flusher publishes a lone record while the producer only waits
# ---------------------------------------------------------------------------------------------


def child_consume(id: str, expected_record: bytes) -> None:
    """Read the plain blocker message, then one record; exit 3 on a mismatch.  Times out
    (exit != 0) if the record is never published."""
    ring = ShmTraceRing.open(id, timeout=30)
    if ring.get(timeout=30) != b"blocker":
        sys.exit(3)
    rx = ring.receiver()
    if rx.recv(timeout=30) != expected_record:
        sys.exit(4)
    rx.close()
    ring.close()


@pytest.mark.timeout_s(90)
def test_lone_record_is_published_by_the_flusher_while_the_producer_waits(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring:
        make_busy(ring)  # not empty: append cannot publish at once
        w = RecordWriter(ring, timeout=5)  # default linger
        assert w.linger == DEFAULT_LINGER
        w.append(b"lone record")
        assert w.flusher is not None and w.flusher.is_alive()
        # The consumer starts only now (the blocker was unread when append ran), and this
        # process makes no further call on the writer until the child is done: only the
        # flusher thread can publish the record.
        p = SPAWN.Process(target=child_consume, args=(shm_id, b"lone record"), daemon=True)
        p.start()
        assert join_all([p]) == [0]
        assert (w.slots_written, w.records_written, w.pending) == (1, 1, 0)
        t = w.flusher
        w.close()
        assert not t.is_alive()


# ---------------------------------------------------------------------------------------------
# The rule, with an injected clock
# ---------------------------------------------------------------------------------------------


def test_append_publishes_when_the_oldest_record_reaches_linger(ring: ShmTraceRing) -> None:
    clock = FakeClock()
    make_busy(ring)
    main = threading.current_thread()
    # A fake linger of 1000 s: the flusher's real-time wait never ends during the test, and
    # its clock stays at 0 (this test is about the append path: a flusher first scheduled
    # after t = 1000 below would otherwise publish "a".."c" before "d" is appended).
    w = RecordWriter(ring, timeout=5, linger=1000.0,
                     clock=lambda: clock() if threading.current_thread() is main else 0.0)
    w.append(b"a")  # t = 0: the deadline is 1000
    clock.t = 500.0
    w.append(b"b")
    clock.t = 999.9
    w.append(b"c")
    assert (w.pending, write_idx(ring)) == (3, 1)  # held: not due, ring not empty
    clock.t = 1000.0
    w.append(b"d")  # the oldest record ("a") is linger old: the slot is published
    assert (w.pending, w.slots_written, write_idx(ring)) == (0, 1, 2)
    clock.t = 1500.0
    w.append(b"e")  # a new slot: its clock starts now (deadline 2500)
    clock.t = 2499.0
    w.append(b"f")
    assert w.pending == 2
    w.close()
    assert ring.get(timeout=5) == b"blocker"
    assert records_of_slots(ring, 2) == [[b"a", b"b", b"c", b"d"], [b"e", b"f"]]


def test_flusher_publishes_a_due_slot_without_further_calls(ring: ShmTraceRing) -> None:
    clock = FakeClock()
    make_busy(ring)
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    w.append(b"x")
    w.append(b"y")
    t = w.flusher
    assert t is not None
    clock.t = 1000.0  # due now; wake the flusher (its real-time wait is 1000 s)
    with w._cond:  # type: ignore[union-attr]
        w._cond.notify_all()  # type: ignore[union-attr]
    assert ring.get(timeout=5) == b"blocker"
    # Blocks until the flusher has published: nothing else in this process calls the writer.
    assert records_of_slots(ring, 1) == [[b"x", b"y"]]
    assert (w.pending, w.slots_written) == (0, 1)
    w.close()
    assert not t.is_alive()


def test_publishes_at_once_when_the_ring_is_empty(ring: ShmTraceRing) -> None:
    clock = FakeClock()  # never advances: only the empty-ring rule can publish
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    w.append(b"first")  # write_idx == read_idx: the consumer would wait
    assert (w.pending, write_idx(ring)) == (0, 1)
    w.append(b"held")  # the first slot is unread: the ring is not empty
    w.append(b"held too")
    assert (w.pending, write_idx(ring)) == (2, 1)
    assert records_of_slots(ring, 1) == [[b"first"]]  # read and released: empty again
    w.append(b"now")  # published with the two held records
    assert (w.pending, write_idx(ring)) == (0, 2)
    assert records_of_slots(ring, 1) == [[b"held", b"held too", b"now"]]
    w.close()


class MainThreadClock:
    """A clock for the writer's own thread: each call advances it by 1 s (so every timed step
    of the writer lasts 1 s), and ``t`` can jump; the flusher thread always reads 0.0 (its
    waits then outlast the test: only the appends below publish)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.main = threading.current_thread()

    def __call__(self) -> float:
        if threading.current_thread() is not self.main:
            return 0.0
        self.t += 1.0
        return self.t


def read_one_slot(ring: ShmTraceRing) -> list[bytes]:
    """The records of the next published slot (released after): the ring is empty again."""
    return records_of_slots(ring, 1)[0]


def test_a_streaming_writer_holds_the_next_slot_instead_of_publishing_at_once(
        ring: ShmTraceRing) -> None:
    # Each writer step lasts 1 s on this clock: a slot's acquire 1 s, its publication 1 s,
    # so a slot costs 2 s.  The streaming test is 2 slot costs (4 s), the hold 16 (32 s).
    clock = MainThreadClock()
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    w.append(b"a")  # the ring is empty and nothing was published before: at once
    assert (w.pending, write_idx(ring)) == (0, 1)
    assert read_one_slot(ring) == [b"a"]  # empty again: the consumer keeps up
    for i, rec in enumerate([b"b1", b"b2", b"b3"]):  # within the test, but a burst of 3
        w.append(rec)
        assert (w.pending, write_idx(ring)) == (0, 2 + i)  # at once
        assert read_one_slot(ring) == [rec]
    published = clock.t  # the end of the last publication
    w.append(b"c")  # the fourth in a row: streaming, held
    assert (w.pending, write_idx(ring)) == (1, 4)
    w.append(b"d")  # still held, though the ring is empty
    assert (w.pending, write_idx(ring)) == (2, 4)
    clock.t = published + 32 - 1  # the next append reads the clock at the hold's end
    w.append(b"e")
    assert (w.pending, w.slots_written, write_idx(ring)) == (0, 5, 5)
    assert read_one_slot(ring) == [b"c", b"d", b"e"]
    clock.t += 100.0  # a reply after a round trip: long after the streaming test
    w.append(b"reply")  # the ring is empty: at once, as before the hold existed
    assert (w.pending, write_idx(ring)) == (0, 6)
    assert read_one_slot(ring) == [b"reply"]
    clock.t += 100.0
    w.append(b"reply 2")  # one quick arrival after a slow one is not a stream: at once
    assert (w.pending, write_idx(ring)) == (0, 7)
    assert read_one_slot(ring) == [b"reply 2"]
    w.close()


def test_one_slow_publication_does_not_widen_the_streaming_test_for_long(
        ring: ShmTraceRing) -> None:
    # Publications cost 2 s (the test: 4 s).  One whose clock reads come 1000 s apart (this
    # process preempted) raises the cost estimate by a quarter, not to 2002 s: a reply 100 s
    # later is not quick, so a burst of three after it is not a stream either.
    clock = MainThreadClock()
    w = RecordWriter(ring, timeout=5, linger=10_000.0, clock=clock)
    w.append(b"a")
    assert read_one_slot(ring) == [b"a"]

    def stalling() -> float:
        clock.t += 1000.0
        return clock()
    w._clock = stalling  # type: ignore[attr-defined]
    w.append(b"b")  # published at once; every clock read of this call comes 1000 s late
    w._clock = clock  # type: ignore[attr-defined]
    assert read_one_slot(ring) == [b"b"]
    clock.t += 100.0
    w.append(b"reply")  # 100 s after: beyond 2 x 2.5 s, not quick
    assert read_one_slot(ring) == [b"reply"]
    for i in range(3):  # quick, but a burst of three after a slow one: at once
        w.append(b"burst %d" % i)
        assert (w.pending, write_idx(ring)) == (0, 4 + i)
        assert read_one_slot(ring) == [b"burst %d" % i]
    w.close()


def test_the_streaming_hold_never_exceeds_linger(ring: ShmTraceRing) -> None:
    clock = MainThreadClock()
    w = RecordWriter(ring, timeout=5, linger=5.0, clock=clock)  # the hold would be 32 s
    for rec in [b"a", b"b1", b"b2", b"b3"]:  # one at once, then a burst of 3: at once
        w.append(rec)
        assert read_one_slot(ring) == [rec]
    published = clock.t
    w.append(b"c")  # streaming: held, but only until linger after the publication
    assert (w.pending, write_idx(ring)) == (1, 4)
    clock.t = published + 5.0 - 1  # the next append reads published + linger
    w.append(b"d")
    assert (w.pending, write_idx(ring)) == (0, 5)
    assert read_one_slot(ring) == [b"c", b"d"]
    w.close()


def test_reserve_applies_the_rule_to_earlier_records_and_holds_its_own(
        ring: ShmTraceRing) -> None:
    clock = FakeClock()
    make_busy(ring)
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    w.append(b"early")
    clock.t = 1000.0
    v = w.reserve(4)  # "early" is due: published first, the reserved record starts a slot
    assert (w.pending, write_idx(ring)) == (1, 2)
    clock.t = 5000.0
    with w._cond:  # type: ignore[union-attr]
        assert w._flusher_step() is None  # an unfilled view: the flusher leaves it alone
    assert (w.pending, write_idx(ring)) == (1, 2)
    v[:] = b"late"
    w.flush()
    assert ring.get(timeout=5) == b"blocker"
    assert records_of_slots(ring, 2) == [[b"early"], [b"late"]]
    w.close()


def test_linger_zero_publishes_every_append(ring: ShmTraceRing) -> None:
    make_busy(ring)
    w = RecordWriter(ring, timeout=5, linger=0)
    w.append(b"1")
    w.append(b"2")
    assert (w.pending, w.slots_written, write_idx(ring)) == (0, 2, 3)
    assert w.flusher is None  # nothing ever lingers: no thread
    w.close()


def test_linger_none_keeps_records_until_flush(ring: ShmTraceRing) -> None:
    w = RecordWriter(ring, timeout=5, linger=None)
    w.append(b"a")  # the ring is empty, but without a bound nothing is published early
    w.append(b"b")
    assert (w.pending, write_idx(ring)) == (2, 0)
    assert w.flusher is None and flusher_threads() == []
    w.flush()
    assert (w.pending, write_idx(ring)) == (0, 1)
    w.close()
    assert records_of_slots(ring, 1) == [[b"a", b"b"]]


# ---------------------------------------------------------------------------------------------
# The flusher thread's life
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["close", "close_no_finish", "abort", "with", "with_error"])
def test_flusher_thread_stops_when_the_writer_ends(ring: ShmTraceRing, end: str) -> None:
    make_busy(ring)
    before = set(flusher_threads())
    w = RecordWriter(ring, timeout=5, linger=1000.0)
    w.append(b"r")
    t = w.flusher
    assert t is not None and t in threading.enumerate()
    if end == "close":
        w.close()
    elif end == "close_no_finish":
        w.close(finish=False)
    elif end == "abort":
        w.abort()
    elif end == "with":
        with w:
            pass
    else:
        with pytest.raises(KeyError), w:
            raise KeyError("x")
    assert not t.is_alive() and t not in threading.enumerate()
    assert set(flusher_threads()) == before


def test_a_dropped_writer_stops_its_flusher(ring: ShmTraceRing) -> None:
    make_busy(ring)
    w = RecordWriter(ring, timeout=5, linger=1000.0)
    w.append(b"dropped")
    t = w.flusher
    assert t is not None
    with pytest.warns(RuntimeWarning, match="dropped with 1 record"):  # (lost: reported)
        del w
        gc.collect()
    t.join(30)  # bounded: the finalizer wakes the thread, which finds its writer gone
    assert not t.is_alive()


@pytest.mark.parametrize("call", ["append", "reserve", "flush", "close"])
def test_a_failed_flusher_publication_is_reported_by_the_next_call(
        ring: ShmTraceRing, call: str) -> None:
    clock = FakeClock()
    make_busy(ring)
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    w.append(b"doomed")
    ring.notify_crash(6, 0, 0, "boom")  # commit refuses after a crash
    clock.t = 1000.0
    with w._cond:  # type: ignore[union-attr]
        w._flusher_step()
    with pytest.raises(RuntimeError, match="linger flusher could not publish"):
        if call == "append":
            w.append(b"next")
        elif call == "reserve":
            w.reserve(4)
        else:
            getattr(w, call)()
    w.abort()


def test_invalid_linger_and_clock(ring: ShmTraceRing) -> None:
    with pytest.raises(ValueError, match=r"RecordWriter\('/.*'\): linger must be"):
        RecordWriter(ring, linger=-1)
    with pytest.raises(ValueError, match="linger"):
        RecordWriter(ring, linger=float("inf"))
    # Was OverflowError (2**1024), and a flusher thread dead of OverflowError (1e10: beyond
    # threading.TIMEOUT_MAX) leaving the records unpublished.
    for huge in (2**1024, 1e10, 10**9):
        with pytest.raises(ValueError, match=r"RecordWriter\('/.*'\): linger must be a finite "
                           r"number of seconds >= 0 and below 1e\+09"):
            RecordWriter(ring, linger=huge)
    with pytest.raises(ValueError, match=r"ring '/.*': sender\(\): linger must be"):
        ring.sender(2**1024)
    with pytest.raises(TypeError, match="linger must be a number"):
        RecordWriter(ring, linger="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="linger"):
        RecordWriter(ring, linger=True)
    with pytest.raises(TypeError, match="clock must be a callable"):
        RecordWriter(ring, clock=1.0)  # type: ignore[arg-type]


def test_replies_after_a_round_trip_go_at_once_on_a_fresh_ring(
        ring: ShmTraceRing, monkeypatch: pytest.MonkeyPatch) -> None:
    # A warm slot costs 2 s on this clock (acquire 1 s, publication 1 s); a round trip takes
    # 100 s, 50 slot costs: a reply is no stream.  The first acquire of each fresh slot also
    # reserves its backing store, 300 s here (the real ratio: ~600 us vs ~6 us per slot).
    clock = MainThreadClock()
    real_acquire = ShmTraceRing.acquire
    fresh = set(range(ring.capacity))

    def acquire(self: ShmTraceRing, *a: object, **k: object) -> object:
        g = real_acquire(self, *a, **k)  # type: ignore[arg-type]
        if g.index % self.capacity in fresh:
            fresh.discard(g.index % self.capacity)
            clock.t += 300.0
        return g
    monkeypatch.setattr(ShmTraceRing, "acquire", acquire)
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    held = []
    for i in range(2 * ring.capacity):
        w.append(b"reply %d" % i)
        held.append(w.pending)  # 0: published at once (the ring is empty: the peer waits)
        w.flush()
        assert read_one_slot(ring) == [b"reply %d" % i]
        clock.t += 100.0  # the round trip
    w.close()
    assert held == [0] * (2 * ring.capacity)


def test_a_three_record_request_then_a_wait_for_the_reply_is_not_held(
        ring: ShmTraceRing) -> None:
    clock = MainThreadClock()
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    for rnd in range(3):
        for part in (b"header", b"body", b"trailer"):
            w.append(b"%d %s" % (rnd, part))
            pending = w.pending
            w.flush()  # (what the flusher would do at the hold's end)
            assert read_one_slot(ring) == [b"%d %s" % (rnd, part)]  # the peer keeps up
            assert pending == 0, f"round {rnd}: {part!r} held on an empty ring"
        clock.t += 100.0  # the reply's round trip
    w.close()


def test_records_held_by_a_dropped_streaming_writer_are_not_lost_silently(
        ring: ShmTraceRing) -> None:
    clock = MainThreadClock()
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    sent = []
    for i in range(7):  # a stream to a consumer that keeps up (it empties the ring each time)
        w.append(b"r%d" % i)
        sent.append(b"r%d" % i)
        if not w.pending:
            assert read_one_slot(ring) == sent[-1:]
            sent.clear()
    assert sent, "the last records should be held (a stream)"
    cond = w._cond  # type: ignore[attr-defined]
    with warnings.catch_warnings(record=True) as caught, cond:
        warnings.simplefilter("always")
        del w  # the writer forgotten without close(): a programming error to report
        gc.collect()  # (holding its lock: its flusher holds no reference meanwhile)
    got = []
    while True:  # every slot published by now, without waiting
        r = ring.try_access()
        if r is None:
            break
        g = r.guard  # type: ignore[union-attr]
        got += [bytes(x) for x in split(g.buf, g.index, ring.name)]
        g.release()
    assert got == sent or any("dropped with" in str(c.message) for c in caught), (
        f"records {sent} lost without a warning")


def test_a_streaming_record_whose_hold_already_ended_is_published_by_its_append(
        ring: ShmTraceRing, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = MainThreadClock()  # every step 1 s: a slot costs 2 s, the hold 32 s
    w = RecordWriter(ring, timeout=5, linger=1000.0, clock=clock)
    w.append(b"a")
    assert read_one_slot(ring) == [b"a"]
    for rec in [b"b1", b"b2", b"b3"]:  # quick arrivals, a burst of 3: at once
        w.append(rec)
        assert read_one_slot(ring) == [rec]
    real_acquire = ShmTraceRing.acquire

    def slow_acquire(self: ShmTraceRing, *a: object, **k: object) -> object:
        g = real_acquire(self, *a, **k)  # type: ignore[arg-type]
        clock.t += 50.0  # this acquire took 50 s (preempted): past the hold's end
        return g
    monkeypatch.setattr(ShmTraceRing, "acquire", slow_acquire)
    w.append(b"c")  # arrived within the test (a stream), but its deadline has passed
    monkeypatch.undo()
    assert (w.pending, write_idx(ring)) == (0, 5)
    w.close()


@pytest.mark.parametrize("call", ["append", "reserve"])
def test_a_writer_with_pending_records_on_a_closed_ring_says_the_ring_is_closed(
        shm_id: str, call: str) -> None:
    ring = ShmTraceRing.create(shm_id, 4, SLOT)
    make_busy(ring)  # not empty: the records wait for their deadline
    w = RecordWriter(ring, timeout=5, linger=60.0)
    w.append(b"a")
    w.append(b"b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unread blocker, reported at close
        ring.close()
    with pytest.raises(ValueError, match=f"ring {ring.name!r} is closed"):
        w.append(b"c") if call == "append" else w.reserve(8)
    cond = w._cond  # type: ignore[attr-defined]
    with pytest.warns(RuntimeWarning, match=r"dropped with \d record"), cond:  # reported
        del w  # (holding its lock: its flusher holds no reference meanwhile)
        gc.collect()
