"""ctshm.channel: ring.sender() / ring.receiver(), a message channel over records.

The child functions at the top run in spawned processes (they import only ctshm).
"""

from __future__ import annotations

import os
import random
import sys
import time

import pytest

from ctshm import ProducerCrashed, RingFinished, ShmTraceRing, crashhook
from ctshm.channel import Receiver, Sender

from .helpers import SPAWN, join_all

SLOT = 1 << 18  # 256 KiB (rounded up to 2 MiB by the ring)
COUNT = 5000


def messages(seed: int, count: int) -> list[bytes]:
    """``count`` messages of random sizes (mostly small, some up to 100 KB), each starting
    with its number."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        r = rnd.random()
        n = rnd.randrange(0, 100) if r < 0.8 else rnd.randrange(0, 5000) if r < 0.98 \
            else rnd.randrange(0, 100_000)
        out.append((b"%d:" % i + rnd.randbytes(n))[:max(n, 1)] if n else b"")
    return out


# ---------------------------------------------------------------------------------------------
# Spawned children
# ---------------------------------------------------------------------------------------------


def child_send(id: str, seed: int, count: int, pause_at: int) -> None:
    """Send messages(seed, count); at ``pause_at`` sleep without flushing (the linger bound
    must publish what was sent), then carry on; close() finishes the stream."""
    ring = ShmTraceRing.open(id, timeout=30)
    with ring.sender(timeout=30) as tx:
        for i, m in enumerate(messages(seed, count)):
            tx.send(m)
            if i == pause_at:
                time.sleep(0.2)
    ring.close()


def child_recv(id: str, seed: int, count: int) -> None:
    """Receive every message, compare, then expect the end; exit 3..5 on a mismatch."""
    ring = ShmTraceRing.open(id, timeout=30)
    rx = ring.receiver()
    expected = messages(seed, count)
    for i in range(count):
        v = rx.recv_view(timeout=30) if i % 2 else memoryview(rx.recv(timeout=30))
        if bytes(v) != expected[i]:
            sys.exit(3)
    try:
        rx.recv(timeout=30)
        sys.exit(4)
    except RingFinished:
        pass
    rx.close()
    ring.close()


def child_send_then_crash(id: str, n: int) -> None:
    ring = ShmTraceRing.open(id, timeout=30)
    with crashhook.reporting(ring), ring.sender(timeout=30) as tx:
        for i in range(n):
            tx.send(b"m%d" % i)
        raise ValueError("producer failed")


def child_send_then_die(id: str, n: int) -> None:
    ring = ShmTraceRing.open(id, timeout=30)
    tx = ring.sender(timeout=30)
    for i in range(n):
        tx.send(b"m%d" % i)
    tx.flush()
    os._exit(0)  # no close, no notify_crash: a dead producer


# ---------------------------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout_s(120)
def test_round_trip_to_a_spawned_receiver(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring:
        p = SPAWN.Process(target=child_recv, args=(shm_id, 7, COUNT), daemon=True)
        p.start()
        ring.expect_consumer(p.pid)
        with ring.sender(timeout=30) as tx:
            assert isinstance(tx, Sender)
            for i, m in enumerate(messages(7, COUNT)):
                tx.send(m)
                if i == 10:
                    time.sleep(0.2)  # no flush: the linger bound publishes them
        assert tx.messages_sent == COUNT and tx.pending == 0
        assert join_all([p]) == [0]


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("pause_at", [-1, 3])
def test_round_trip_from_a_spawned_sender(shm_id: str, pause_at: int) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring:
        p = SPAWN.Process(target=child_send, args=(shm_id, 11, COUNT, pause_at), daemon=True)
        p.start()
        ring.expect_producer(p.pid)
        rx = ring.receiver()
        assert isinstance(rx, Receiver)
        got = list(rx)  # bytes until Finished
        assert join_all([p]) == [0]
        assert got == messages(11, COUNT)  # exact content and order
        assert rx.messages_received == COUNT
        with pytest.raises(RingFinished):
            rx.recv(timeout=5)


@pytest.mark.timeout_s(90)
def test_crash_is_raised_after_the_sent_messages(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring:
        p = SPAWN.Process(target=child_send_then_crash, args=(shm_id, 50), daemon=True)
        p.start()
        ring.expect_producer(p.pid)
        rx = ring.receiver()
        got = []
        with pytest.raises(ProducerCrashed, match="producer failed"):
            while True:
                got.append(rx.recv(timeout=30))
        assert got == [b"m%d" % i for i in range(50)]  # sent before the crash: delivered
        assert join_all([p]) == [1]


@pytest.mark.timeout_s(90)
def test_dead_producer_is_raised_after_the_sent_messages(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring:
        p = SPAWN.Process(target=child_send_then_die, args=(shm_id, 20), daemon=True)
        p.start()
        ring.expect_producer(p.pid)
        rx = ring.receiver()
        got = []
        with pytest.raises(ProducerCrashed):
            for m in rx:
                got.append(m)
        assert got == [b"m%d" % i for i in range(20)]
        assert join_all([p]) == [0]


# ---------------------------------------------------------------------------------------------
# In one process
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def pair(shm_id: str):  # type: ignore[no-untyped-def]
    with ShmTraceRing.create(shm_id, 4, SLOT) as ring, ShmTraceRing.open(shm_id) as prod:
        yield prod, ring


def three_messages(prod: ShmTraceRing, ring: ShmTraceRing) -> Receiver:
    """b"one", b"two", b"three" in one slot, the stream finished; a receiver on ``ring``."""
    tx = prod.sender(linger=None)
    for m in (b"one", b"two", b"three"):
        tx.send(m)
    tx.close()
    return ring.receiver()


def test_recv_view_is_valid_until_the_next_call(pair: tuple[ShmTraceRing, ShmTraceRing]
                                                ) -> None:
    rx = three_messages(*pair)
    v = rx.recv_view(timeout=5)
    assert v.readonly and bytes(v) == b"one"
    w = rx.recv_view(timeout=5)
    with pytest.raises(ValueError):
        bytes(v)  # released by the next call
    assert bytes(w) == b"two"
    assert rx.recv(timeout=5) == b"three"
    with pytest.raises(ValueError):
        bytes(w)
    with pytest.raises(RingFinished):
        rx.recv_view(timeout=5)
    with pytest.raises(RingFinished):  # stays at the end
        rx.recv(timeout=5)


def test_receiver_releases_its_slot_on_close(pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    prod, ring = pair
    tx = prod.sender(linger=None)
    tx.send(b"a")
    tx.send(b"b")
    tx.flush()
    with ring.receiver() as rx:
        assert rx.recv(timeout=5) == b"a"
        assert ring.header()["read_idx"] == 0  # "b" is still in the held slot
    assert ring.header()["read_idx"] == 1
    tx.close()


def test_recv_timeout_and_argument_errors(pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    prod, ring = pair
    rx = ring.receiver()
    with pytest.raises(TimeoutError, match=r"no message within 0\.01 s"):
        rx.recv(timeout=0.01)
    with pytest.raises(ValueError, match="timeout"):
        rx.recv(timeout=-1)
    with pytest.raises(ValueError, match="linger"):
        prod.sender(linger=-1)
    tx = prod.sender()
    for data in ("x", 0):  # named its own call: it said RecordWriter.append()
        with pytest.raises(TypeError, match=rf"ring {prod.name!r}: sender\(\)\.send\(\) needs a "
                           "bytes-like object") as info:
            tx.send(data)  # type: ignore[arg-type]
        assert "RecordWriter" not in str(info.value)
    with pytest.raises(ValueError, match="does not fit a slot"):
        tx.send(bytes(ring.slot_size))
    tx.close()
    tx.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        tx.send(b"late")
    with pytest.raises(RingFinished):
        rx.recv(timeout=5)


def test_sender_exception_publishes_but_does_not_finish(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    prod, ring = pair
    with pytest.raises(KeyError), prod.sender(linger=None) as tx:
        tx.send(b"sent")
        raise KeyError("x")
    assert ring.header()["finished"] == 0
    rx = ring.receiver()
    assert rx.recv(timeout=5) == b"sent"
    with pytest.raises(TimeoutError):
        rx.recv(timeout=0.01)


def test_lone_message_into_an_empty_ring_is_published_by_send(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    prod, ring = pair
    tx = prod.sender(linger=3600.0)  # the bound cannot be what publishes it
    tx.send(b"ping")
    assert tx.pending == 0
    assert ring.receiver().recv(timeout=0) == b"ping"
    tx.close()


def test_a_ring_get_sees_one_record_framed_slot(pair: tuple[ShmTraceRing, ShmTraceRing]
                                               ) -> None:
    prod, ring = pair
    tx = prod.sender(linger=None)
    tx.send(b"a")
    tx.send(b"b")
    tx.close()
    raw = ring.get(timeout=5)  # what a one-message-per-slot peer (Rust) sees
    assert raw[:4] == (2).to_bytes(4, "little") and len(raw) == 8 + 2 * 16


def test_a_view_exported_further_is_retried_with_the_slot(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """recv_view's previous view is released by the next call; if the caller exported it
    further (an export of it still alive), that release fails and is retried when the slot is
    dropped: an export ended by then leaves no stale view (no warning), the view is released
    with the slot, and the slot goes."""
    import pickle
    import warnings
    ring = pair[1]
    rx = three_messages(*pair)
    v = rx.recv_view(timeout=5)
    part = pickle.PickleBuffer(v)  # an export of v (a slice would share v's buffer)
    assert bytes(rx.recv_view(timeout=5)) == b"two"  # v's release fails: kept
    assert bytes(part.raw()) == b"one"  # still readable: nothing was freed under it
    part.release()  # the export ends; v is still held (against the rule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stale view would warn here
        assert rx.recv(timeout=5) == b"three"
        with pytest.raises(RingFinished):
            rx.recv(timeout=5)
    assert ring.header()["read_idx"] == 1
    with pytest.raises(ValueError):
        bytes(v)  # released with the slot: never a read of a slot handed back
