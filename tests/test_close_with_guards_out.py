"""Closing a handle while its guards are out: the producer turn stays with an outstanding
guard until it ends (commit refused, abort gives the token back), a dropped guard warns of
nothing, the last consumer handle unregisters, a producer waiting on a ring its owner closed
is told."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ctshm import ShmTraceRing
from ctshm.errors import UnreadMessagesWarning

from .helpers import REPO_ROOT, fork_call, reap, start_thread


def test_closed_handle_keeps_producer_turn_until_its_guard_ends(shm_id: str) -> None:
    # Another handle of the same process must not get the slot while the closed handle's
    # guard can still write it: the stale write would overwrite the published message.
    with ShmTraceRing.create(shm_id, 2, 4096) as r:
        p1, p2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            g = p1.acquire(5, size=8)
            stale = g.buf  # taken before the close
            t, errors = start_thread(lambda: p2.put(b"good....", timeout=30))
            p1.close()
            t.join(0.5)  # not an assertion: lets a put that wrongly got the slot finish
            with pytest.raises(ValueError, match=r"was closed: buf of .* nothing was published"):
                _ = g.buf
            stale[:8] = b"badbadba"  # the slot is still this guard's: harms no message
            g.abort()
            t.join(30)
            assert not t.is_alive() and not errors
            assert r.get(5) == b"good...."
        finally:
            p1.close()
            p2.close()


def test_commit_of_closed_handles_guard_is_refused_and_frees_the_turn(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as r:
        p1, p2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            g = p1.acquire(5, size=3)
            g.buf[:3] = b"bad"
            p1.close()
            with pytest.raises(ValueError, match=rf"{shm_id}_t' was closed: commit.*nothing "
                               "was published"):
                g.commit()
            g.abort()  # idempotent now
            # The turn is free and the empty token came back through p2 (timeout 0: no
            # self-healing wait slice could stand in for it).
            p2.put(b"ok", timeout=0)
            assert r.get(5) == b"ok"
            assert len(r) == 0
        finally:
            p1.close()
            p2.close()


def test_abort_of_closed_handles_guard_gives_the_token_back(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as r:
        p1, p2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            g = p1.acquire(5)
            p1.close()
            g.abort()
            p2.put(b"ok", timeout=0)
            assert r.get(5) == b"ok"
        finally:
            p1.close()
            p2.close()


# ---------------------------------------------------------------------------------------------
# No false RuntimeWarning when a guard is dropped before its view
# ---------------------------------------------------------------------------------------------

_DROP_BEFORE_VIEW = """
import sys
from ctshm import ShmTraceRing

ring = ShmTraceRing.create(sys.argv[1], 2, 4096)
ring.put(b"hello world")
ring.put(b"kept at exit")

def first_five():
    g = ring.access(5).guard
    view = g.buf
    return bytes(view[:5])  # correct: the locals are freed (guard first) after the copy

assert first_five() == b"hello"
assert ring.header()["read_idx"] == 1, ring.header()  # the dropped guard released its slot
g = ring.access(5).guard  # module globals, alive at interpreter exit
view = g.buf
print("done")
"""


@pytest.mark.parametrize("flag", ["error::RuntimeWarning", "always::RuntimeWarning"])
def test_no_warning_for_a_guard_freed_before_its_view(shm_id: str, flag: str) -> None:
    # -W error: a warning raised inside __del__ used to skip the release (read_idx stuck);
    # -W always: it used to be printed, for both cases.
    out = subprocess.run([sys.executable, "-W", flag, "-c", _DROP_BEFORE_VIEW, shm_id],
                         capture_output=True, text=True, timeout=60, check=False,
                         cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert out.returncode == 0 and out.stdout == "done\n", out
    assert "Warning" not in out.stderr, out.stderr


# ---------------------------------------------------------------------------------------------
# The owner (also the consumer) closed, its process alive: a waiting producer is told
# ---------------------------------------------------------------------------------------------

def test_last_consumer_handle_unregisters_on_close(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        c1, c2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            ring.put(b"a")
            ring.put(b"b")
            assert c1.get(5) == b"a"
            held = c2.access(5)  # c2 registered too, and holds a slot
            c1.close()
            assert ring.header()["consumer_pid"] == os.getpid()  # c2 is still registered
            c2.close()
            # A slot is still taken (never released: release after close does nothing):
            # the registration stays, so only this process's death lets a successor take it.
            assert ring.header()["consumer_pid"] == os.getpid()
            del held
        finally:
            c1.close()
            c2.close()
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        c = ShmTraceRing.open(shm_id)
        ring.put(b"a")
        assert c.get(5) == b"a"
        c.close()  # everything released: unregistered
        assert ring.header()["consumer_pid"] == 0
        ring.put(b"b")
        assert ring.get(5) == b"b"  # a new consumer (this handle) registers and resumes
        assert ring.header()["consumer_pid"] == os.getpid()


def test_producer_waiting_on_a_ring_its_owner_closed_is_told(shm_id: str) -> None:
    # A (this process) creates, consumes, and closes (unlinking the names) while alive; B
    # (a forked child) waits in put(timeout=None) on the full ring: it must not wait forever.
    r_pipe, w_pipe = os.pipe()
    ring = ShmTraceRing.create(shm_id, 1, 4096)
    try:
        def producer() -> None:
            from ctshm import ConsumerGone

            p = ShmTraceRing.open(shm_id)
            p.put(b"m0")
            p.put(b"m1", timeout=30)  # after A released m0
            os.write(w_pipe, b"1")
            with pytest.raises(ConsumerGone, match=r"was unlinked .* no consumer is registered"):
                p.put(b"m2", timeout=None)
            p.close()

        pid = fork_call(producer)
        os.close(w_pipe)
        assert ring.get(30) == b"m0"  # A is the registered consumer
        assert os.read(r_pipe, 1) == b"1"  # B has put m1: the ring is full
        with pytest.warns(UnreadMessagesWarning, match="with 1 committed message"):
            ring.close()  # the owner leaves m1 unread: the loss is part of the scenario
        assert reap(pid, 30) == 0
    finally:
        os.close(r_pipe)
        ring.close()
