"""ShmQueue under a demanding user: exceptions raised inside put/get (a Ctrl-C, a signal
handler's exception) never leave a slot claimed by a live process; argument checks that must
not take or keep messages."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ctshm import ShmQueue, queue_layout as QL
from ctshm._peers_table import PeersFull

from .helpers import CHILD_TIMEOUT


@pytest.fixture
def q(shm_id: str) -> Iterator[ShmQueue]:
    q = ShmQueue.create(shm_id, capacity=2, slot_size=64)
    try:
        yield q
    finally:
        q.close()


class _InterruptedView:
    """Stands in for the queue's byte view: the copy in or out raises KeyboardInterrupt, as
    a Ctrl-C does when CPython runs the signal handler right after the copy's call."""

    def __getitem__(self, key: Any) -> Any:
        class _Slice:
            def tobytes(self) -> bytes:
                raise KeyboardInterrupt

        return _Slice()

    def __setitem__(self, key: Any, value: Any) -> None:
        raise KeyboardInterrupt


# -- an exception inside get/put never wedges the queue ------------------------------------
def test_interrupted_get_gives_the_message_back(q: ShmQueue) -> None:
    q.put(b"keep me")
    real = q._b
    q._b = _InterruptedView()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        q.get()
    q._b = real
    # Before the fix the slot stayed READING by this (live) process: never reaped, the
    # message never delivered, and producers blocked at that slot forever.
    assert q.get(timeout=2) == b"keep me"
    q.put(b"a")
    q.put(b"b", timeout=2)
    assert [q.get(timeout=2), q.get(timeout=2)] == [b"a", b"b"]


def test_interrupted_put_skips_its_slot(q: ShmQueue) -> None:
    real = q._b
    q._b = _InterruptedView()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        q.put(b"half written")
    q._b = real
    # Before the fix the slot stayed WRITING by this live process: consumers stopped at it.
    q.put(b"next")
    assert q.get(timeout=2) == b"next"
    assert "WRITING" not in " ".join(q.slot_states())


_SIGNAL_STORM = textwrap.dedent("""
    import collections, os, queue, signal, sys, time
    from ctshm import ShmQueue
    q = ShmQueue.create(sys.argv[1], capacity=16, slot_size=1 << 20)
    class Tick(Exception):
        pass
    armed = [False]
    def handler(*a):
        if armed[0]:
            armed[0] = False
            raise Tick()
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    data = b"x" * (1 << 20)
    ticks, end = 0, time.monotonic() + 6.0
    held = []
    while time.monotonic() < end and not held:
        for op, args in ((q.put, (data, 0.02)), (q.get, (0.02,))):
            try:
                armed[0] = True
                op(*args)
                armed[0] = False
            except Tick:
                ticks += 1
            except (queue.Empty, queue.Full):
                armed[0] = False
        held = [s for s in q.slot_states() if "READING" in s or "WRITING" in s]
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(ticks, held)
    q.close()
    sys.exit(1 if held else 0)
""")


@pytest.mark.skipif(sys.implementation.name != "cpython",
                    reason="the window is CPython's eval-breaker check after a call")
def _interrupt_after_claim_cas(q: ShmQueue, state: int) -> None:
    """Shadow q._cas: the claim's compare-exchange (to ``state`` by q) happens, then a
    KeyboardInterrupt is raised before its result reaches the caller -- as CPython raises a
    signal handler's exception at the eval-breaker check right after the call returns."""
    real = q._cas
    armed = [True]

    def cas(addr: int, expected: int, new: int) -> int:
        r = real(addr, expected, new)
        if armed[0] and new & 7 == state and new & QL.OWNER_MASK == q._tag:
            armed[0] = False
            raise KeyboardInterrupt
        return int(r)

    q._cas = cas


_SIDES = {"get": lambda q: q.get(), "get_many": lambda q: q.get_many(5),
          "put": lambda q: q.put(b"never")}


@pytest.mark.parametrize("side", sorted(_SIDES))
def test_an_exception_hiding_the_claims_result_gives_the_slot_back(
        q: ShmQueue, side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A single-threaded process: the slot holding this handle's claim word is this call's
    claim, so it is undone (the message goes back; the half-put is skipped).  (The test
    process may keep threads of earlier tests: it is made to look single-threaded; the
    signal storm below runs in a real single-threaded child.)"""
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    q.put(b"keep me")
    _interrupt_after_claim_cas(q, QL.WRITING if side == "put" else QL.READING)
    with pytest.raises(KeyboardInterrupt):
        _SIDES[side](q)
    assert not [s for s in q.slot_states() if "READING" in s or "WRITING" in s]
    assert q.get(timeout=2) == b"keep me"


def test_with_other_threads_a_claim_of_unknown_result_is_left_alone(q: ShmQueue) -> None:
    """The residual window: with another thread alive, a slot holding this handle's claim
    word may be a sibling thread's claim (same handle, same tag), which must never be given
    back under it (a duplicate): the interrupted claim stays until the process exits."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        q.put(b"m")
        _interrupt_after_claim_cas(q, QL.READING)
        with pytest.raises(KeyboardInterrupt):
            q.get()
        assert len([s for s in q.slot_states() if "READING" in s]) == 1
    finally:
        stop.set()
        t.join(CHILD_TIMEOUT)


def test_signal_handler_exceptions_leave_no_claimed_slot(shm_id: str) -> None:
    """Including the window right after the claim's compare-exchange returns (CPython's
    eval-breaker check, before the result is known): in a single-threaded process the slot
    holding this handle's claim word is this call's (queue._peers.only_thread)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _SIGNAL_STORM, shm_id], env=env,
                       capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert int(r.stdout.split()[0]) > 0  # the storm did interrupt puts and gets


# -- arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1])
def test_get_many_below_one_takes_nothing(q: ShmQueue, bad: int) -> None:
    q.put(b"stay")
    with pytest.raises(ValueError, match="max_messages"):
        q.get_many(bad, timeout=0)
    assert len(q) == 1




_CALLS = {  # each with a message ready (gets) or room (puts): it would not block
    "put": lambda q, t: q.put(b"m", timeout=t),
    "put_many": lambda q, t: q.put_many([b"m"], timeout=t),
    "put_object": lambda q, t: q.put_object(1, timeout=t),
    "get": lambda q, t: q.get(timeout=t),
    "get_many": lambda q, t: q.get_many(5, timeout=t),
    "get_with": lambda q, t: q.get_with(bytes, timeout=t),
    "get_object": lambda q, t: q.get_object(timeout=t),
}


@pytest.mark.parametrize("call", sorted(_CALLS))
@pytest.mark.parametrize("bad, exc", [(-1, ValueError), ("soon", TypeError),
                                      (float("nan"), ValueError)])
def test_a_bad_timeout_is_refused_up_front(q: ShmQueue, call: str, bad: Any,
                                           exc: type[Exception]) -> None:
    if call.startswith("get"):
        q.put_object("ready")
    with pytest.raises(exc, match=f"ShmQueue {q.name!r}: {call}: timeout") as ei:
        _CALLS[call](q, bad)
    assert "semaphore" not in str(ei.value)
    # nothing was put or taken
    assert len(q) == (1 if call.startswith("get") else 0)


def test_put_many_says_how_many_were_committed(q: ShmQueue) -> None:
    with pytest.raises(queue.Full, match=r"the first 2 message\(s\) were committed; "
                       r"message 2 and the rest were not") as ei:
        q.put_many([b"a", b"b", b"c", b"d"], timeout=0)
    assert q.name in str(ei.value)
    assert [q.get(timeout=0), q.get(timeout=0)] == [b"a", b"b"]
    too_big = b"x" * 65
    with pytest.raises(ValueError, match=r"the first 1 message.*does not fit"):
        q.put_many([b"a", too_big])


@pytest.mark.parametrize("side", ["get", "put"])
def test_a_wait_ended_by_another_threads_close_names_the_queue(shm_id: str, side: str) -> None:
    q = ShmQueue.create(shm_id, capacity=1, slot_size=64)
    if side == "put":
        q.put(b"full")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            q.get(timeout=CHILD_TIMEOUT) if side == "get" else q.put(b"x", timeout=CHILD_TIMEOUT)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    deadline = time.monotonic() + CHILD_TIMEOUT
    word = QL.W_C_SLEEP if side == "get" else QL.W_P_SLEEP
    while not q._v[word] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert q._v[word], "the waiter never slept"
    q.close()
    t.join(CHILD_TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
    msg = str(errors[0])
    assert q.name in msg and "closed by another thread" in msg and f"{side}()" in msg, msg
    assert "semaphore" not in msg


def test_a_wait_ended_by_this_threads_signal_handler_close_says_so(shm_id: str) -> None:
    q = ShmQueue.create(shm_id, capacity=1, slot_size=64)
    old = signal.signal(signal.SIGALRM, lambda *a: q.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # well into the sleep (0.2 s slices)
        with pytest.raises(ValueError, match="closed by this thread while get") as ei:
            q.get(timeout=CHILD_TIMEOUT)
        assert q.name in str(ei.value) and "semaphore" not in str(ei.value)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        q.close()


# -- fork -----------------------------------------------------------------------------------
def _child_puts(q: ShmQueue) -> None:
    try:
        q.put(b"from the child")
    except PeersFull as e:
        os._exit(3 if "forked child" in str(e) else 4)
    os._exit(0)


def test_forked_child_without_a_peer_entry_refuses_to_act_as_its_parent(shm_id: str) -> None:
    # Before the fix the child's re-registration failed silently and it went on claiming
    # slots under its parent's peer entry: a claim of a killed child was then never reaped
    # while the parent lived (and never at all once the parent left).
    q = ShmQueue.create(shm_id, capacity=2, slot_size=64, max_peers=1)
    try:
        p = multiprocessing.get_context("fork").Process(target=_child_puts, args=(q,))
        p.start()
        p.join(CHILD_TIMEOUT)
        assert p.exitcode == 3
        assert len(q) == 0
    finally:
        q.close()


# -- close racing a get in another thread ---------------------------------------------------
def test_close_during_get_with_still_returns_the_taken_message(shm_id: str) -> None:
    # A producer sleeps on the full queue, so the get that frees the slot must wake it; the
    # handle is closed by another thread while fn runs.  Before the fix the wake-up read the
    # closed handle's view: TypeError, and the message (already taken) was lost.
    q = ShmQueue.create(shm_id, capacity=1, slot_size=64)
    o = ShmQueue.open(shm_id)
    try:
        q.put(b"m1")
        q._atomics.fetch_add(q._base + 8 * QL.W_P_SLEEP, 1)  # an announced sleeping producer
        started = threading.Event()
        out: list[Any] = []

        def fn(view: memoryview) -> bytes:
            started.set()
            time.sleep(0.3)
            return bytes(view)

        def consumer() -> None:
            try:
                out.append(o.get_with(fn, timeout=5))
            except BaseException as e:  # reported by the assert
                out.append(e)

        t = threading.Thread(target=consumer)
        t.start()
        assert started.wait(5)
        o.close()
        t.join(5)
        assert out == [b"m1"]
        assert len(q) == 0
    finally:
        o.close()
        q.close()
