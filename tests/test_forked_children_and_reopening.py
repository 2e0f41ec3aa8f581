"""Forked children and reopening: a child cannot end the parent's stream (it may end its own,
or one nobody registered for); a ring that can no longer become ready (unlinked, or its
creator died before ready) fails at once on unpickling or opening."""

from __future__ import annotations

import os
import pickle

import pytest

from ctshm import Crashed, Finished, ShmTraceRing

from .helpers import fork_call, reap

# ---------------------------------------------------------------------------------------------
# A forked child cannot end the stream of its parent, the registered producer
# ---------------------------------------------------------------------------------------------

def test_forked_child_cannot_end_the_parents_stream(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        ring.put(b"one")  # the parent is the registered producer now
        parent = os.getpid()

        def child() -> None:
            for what, call in (("mark_finished", ring.mark_finished),
                               ("notify_crash", lambda: ring.notify_crash(11, 0, 0, "x"))):
                with pytest.raises(RuntimeError) as e:
                    call()
                text = str(e.value)
                assert f"{what}() refused" in text, text
                assert f"producer is pid {parent}" in text and f"pid {os.getpid()}" in text
                assert "nothing shared was changed" in text and ring.name in text

        assert reap(fork_call(child)) == 0
        assert ring.header()["finished"] == 0
        ring.put(b"two")
        ring.mark_finished()
        assert [ring.get(5), ring.get(5)] == [b"one", b"two"]
        assert isinstance(ring.access(5), Finished)


def test_forked_child_that_produces_may_finish(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        def child() -> None:
            ring.put(b"from the child")  # registers the child as producer
            ring.mark_finished()

        assert reap(fork_call(child)) == 0
        assert ring.get(5) == b"from the child"
        assert isinstance(ring.access(5), Finished)


@pytest.mark.parametrize("end", ["mark_finished", "notify_crash"])
def test_forked_child_may_end_a_stream_nobody_registered_for(shm_id: str, end: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        def child() -> None:
            if end == "mark_finished":
                ring.mark_finished()
            else:
                ring.notify_crash(6, 0, 0, "child")

        assert reap(fork_call(child)) == 0
        r = ring.access(5)
        assert isinstance(r, Finished if end == "mark_finished" else Crashed), r


# ---------------------------------------------------------------------------------------------
# Unpickling (or opening) a ring that can no longer become ready fails at once
# ---------------------------------------------------------------------------------------------

def test_unpickling_an_unlinked_ring_fails_at_once(shm_id: str) -> None:
    ring = ShmTraceRing.create(shm_id, 2, 4096)
    data = pickle.dumps(ring)
    ring.close()  # the owner unlinks the names
    # Before: a 10 s wait "for its creator", then "no such ring (waited 10.0 s ...)".
    with pytest.raises(FileNotFoundError, match=rf"ring '/{shm_id}_t' does not exist any "
                       "more: it existed when this handle was pickled"):
        pickle.loads(data)


def _dead_pid() -> int:
    pid = fork_call(lambda: None)
    assert reap(pid) == 0
    return pid


@pytest.mark.parametrize("how", ["unpickle", "open"])
def test_ring_whose_creator_died_before_ready_fails_at_once(shm_id: str, how: str) -> None:
    from ctshm.layout import CREATOR_PID, CREATOR_START, EXT_STATE

    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        data = pickle.dumps(ring)
        # As a creator killed before it was ready leaves it: state 0, creator dead.
        ring._hq[EXT_STATE] = 0
        ring._hq[CREATOR_START] = 0
        ring._hq[CREATOR_PID] = _dead_pid()
        # Before: waited the whole timeout, then TimeoutError.
        with pytest.raises(FileNotFoundError, match=rf"ring '/{shm_id}_t' was left "
                           r"half-initialized by its creator \(pid \d+\), which died"):
            if how == "unpickle":
                pickle.loads(data)
            else:
                ShmTraceRing.open(shm_id, timeout=15)
