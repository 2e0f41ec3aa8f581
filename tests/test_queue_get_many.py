"""ShmQueue.get_many's batched claim (model/queue.pml, BATCH runs): messages are claimed
together (each slot by compare-exchange naming this peer), copied out, then released
together.  What must hold: order and limits; a dead producer's skipped slot inside the run is
passed over and freed; a consumer SIGKILLed while it holds a range loses none of it (each
slot of the range is redelivered); an exception during the copy gives every claimed message
back; a batched release wakes one sleeping producer, and each put passes the wake-up on
while there is room (the chain)."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ctshm import ShmQueue, queue_layout as QL

from .helpers import CHILD_TIMEOUT

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def q(shm_id: str) -> Iterator[ShmQueue]:
    q = ShmQueue.create(shm_id, capacity=8, slot_size=64)
    try:
        yield q
    finally:
        q.close()


def _slot_word(q: ShmQueue, position: int) -> int:
    return q._w0 + (position % q.capacity) * q._sw


def test_get_many_takes_what_is_ready_in_order_up_to_the_limit(q: ShmQueue) -> None:
    for i in range(5):
        q.put(b"m%d" % i)
    assert q.get_many(3) == [b"m0", b"m1", b"m2"]
    assert q.get_many(10) == [b"m3", b"m4"]
    with pytest.raises(queue.Empty):
        q.get_many(10, timeout=0)
    assert q.stats()["get"] == 5
    # every slot released: a full lap goes round again
    q.put_many([b"n%d" % i for i in range(8)])
    assert q.get_many(8) == [b"n%d" % i for i in range(8)]
    assert all(s.endswith("EMPTY") for s in q.slot_states())


def test_get_many_passes_over_and_frees_a_skipped_slot(q: ShmQueue) -> None:
    for i in range(3):
        q.put(b"m%d" % i)
    wi = _slot_word(q, 1)  # as the reaper leaves a dead producer's slot
    q._v[wi] = (q._v[wi] & ~7 & ~QL.OWNER_MASK) | QL.SKIP
    assert q.get_many(10) == [b"m0", b"m2"]
    q.put_many([b"x"] * 8, timeout=2)  # the skipped slot was freed with the others: room for 8
    assert len(q) == 8


class _KillView:
    """The consumer's byte view: the copy out of the slots SIGKILLs the process (after the
    batched claim, before any release)."""

    def __getitem__(self, key: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)


def _consumer_killed_in_copy(qid: str) -> None:
    h = ShmQueue.open(qid)
    h._b = _KillView()  # type: ignore[assignment]
    h.get_many(4)
    os._exit(0)  # not reached


def test_consumer_killed_holding_a_range_loses_none_of_it(q: ShmQueue) -> None:
    msgs = [b"m%d" % i for i in range(6)]
    q.put_many(msgs)
    p = FORK.Process(target=_consumer_killed_in_copy, args=(q.id,))
    p.start()
    p.join(CHILD_TIMEOUT)
    assert p.exitcode == -signal.SIGKILL
    reading = [s for s in q.slot_states() if "READING" in s]
    assert len(reading) == 4, q.slot_states()  # the range it died with
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(got) < len(msgs) and time.monotonic() < deadline:
        got += q.get_many(10, timeout=1)  # the reaper turns the range into ORPHANs
    assert sorted(got) == msgs  # each exactly once
    assert q.stats()["redelivered"] == 4
    assert all(s.endswith("EMPTY") for s in q.slot_states())


class _InterruptedView:
    def __getitem__(self, key: Any) -> Any:
        raise KeyboardInterrupt


def test_interrupted_get_many_gives_every_claimed_message_back(q: ShmQueue) -> None:
    msgs = [b"m%d" % i for i in range(5)]
    q.put_many(msgs)
    real = q._b
    q._b = _InterruptedView()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        q.get_many(3)
    q._b = real
    assert not [s for s in q.slot_states() if "READING" in s]
    assert sorted(_drain(q)) == msgs  # the three go back (as orphans), nothing twice


def _drain(q: ShmQueue) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out += q.get_many(10, timeout=0)
        except queue.Empty:
            return out


def test_a_batched_release_wakes_one_producer_and_each_put_passes_it_on(shm_id: str) -> None:
    """Two producers announced asleep on a full queue (their words set by hand, so that no
    sleep slice can end meanwhile): get_many frees two slots and posts one wake-up; the put
    of the producer it woke finds a sleeper and a free slot and posts the next (the chain)."""
    q = ShmQueue.create(shm_id, capacity=4, slot_size=64)
    try:
        q.put_many([b"a", b"b", b"c", b"d"])
        q._v[QL.W_P_SLEEP] = 2  # two producers announced (model: psleep)
        assert q.get_many(2) == [b"a", b"b"]
        assert q._v[QL.W_P_SLEEP] == 1 and q.stats()["wakeups"] == 1  # one post for two slots
        q.put(b"e")  # the woken producer's put
        assert q._v[QL.W_P_SLEEP] == 0 and q.stats()["wakeups"] == 2  # passed on
        assert q._space.sem.acquire(0) and q._space.sem.acquire(0)  # both tokens posted
        q.put(b"f")  # no sleeper left: no post
        assert q.stats()["wakeups"] == 2
        assert q.get_many(10) == [b"c", b"d", b"e", b"f"]
    finally:
        q.close()


def test_a_get_wakes_a_producer_once_a_quarter_of_the_queue_is_free(shm_id: str) -> None:
    """The room rule (model: ROOM): a release that leaves the queue more than 3/4 full
    wakes nobody (no post, no preemption per message while 10 producers wait); the one that
    frees the quarter does."""
    q = ShmQueue.create(shm_id, capacity=8, slot_size=64)  # room 2: wake at <= 6 left
    try:
        q.put_many([b"%d" % i for i in range(8)])
        q._v[QL.W_P_SLEEP] = 1  # a producer announced asleep on the full queue
        assert q.get() == b"0"  # 7 left
        assert q._v[QL.W_P_SLEEP] == 1 and q.stats()["wakeups"] == 0
        assert q.get() == b"1"  # 6 left: a quarter free
        assert q._v[QL.W_P_SLEEP] == 0 and q.stats()["wakeups"] == 1
        assert q._space.sem.acquire(0)
    finally:
        q.close()


def test_a_get_with_nothing_to_take_wakes_a_producer_left_asleep(shm_id: str) -> None:
    """The idle wake (model: MUT_NO_IDLE_WAKE): a producer asleep although the slot at TAIL
    is free (a release out of order did not count as room) is woken by the first get that
    finds nothing, so it never waits on a drained queue."""
    q = ShmQueue.create(shm_id, capacity=8, slot_size=64)
    try:
        q._v[QL.W_P_SLEEP] = 1
        with pytest.raises(queue.Empty):
            q.get_nowait()
        assert q._v[QL.W_P_SLEEP] == 0 and q.stats()["wakeups"] == 1
        assert q._space.sem.acquire(0)
    finally:
        q.close()
