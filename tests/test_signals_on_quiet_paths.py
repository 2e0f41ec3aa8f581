"""A signal handler's exception on a quiet path leaves the handle usable.

The quiet paths (``put``/``try_put``, ``access``/``try_access``, a guard's ``release``, and a
RecordWriter's ``append`` with a linger bound) take their lock with an explicit
``acquire()`` (cheaper than ``with``).  CPython runs a pending signal handler as a call
returns, so a handler's exception can surface right after ``acquire()`` returned: the lock
must be released then, or it stays held by that thread for good (another thread's next call,
or a ``close()`` from one, would wait forever).  Simulated here with a lock whose
``acquire()`` raises as it returns, exactly where CPython would raise the handler's exception.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from ctshm import ShmTraceRing
from ctshm.records import RecordWriter

MODES = [pytest.param(False, id="compat"), pytest.param(True, id="fast")]


class Interrupted(Exception):
    """What the simulated signal handler raises."""


class InterruptedOnAcquire:
    """Wraps an RLock: its ``nth`` acquire() takes the lock and then raises ``Interrupted``."""

    def __init__(self, real: Any, nth: int = 1) -> None:
        self.real, self.nth, self.calls = real, nth, 0

    def acquire(self, *a: Any) -> bool:
        got: bool = self.real.acquire(*a)
        self.calls += 1
        if self.calls == self.nth:
            raise Interrupted
        return got

    def __getattr__(self, name: str) -> Any:  # release, _is_owned, __enter__, __exit__...
        return getattr(self.real, name)

    def __enter__(self) -> Any:
        return self.real.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.real.__exit__(*exc)


def free_for_another_thread(lock: Any) -> bool:
    """Can another thread take ``lock`` within 2 s?"""
    got: list[bool] = []

    def take() -> None:
        ok = lock.acquire(timeout=2)
        got.append(ok)
        if ok:
            lock.release()

    t = threading.Thread(target=take)
    t.start()
    t.join(10)
    return got == [True]


def interrupt_once(obj: Any, call: Callable[[], Any]) -> None:
    """Run ``call`` with ``obj._lock`` interrupted on its first acquire; the lock is back after."""
    real = obj._lock
    obj._lock = InterruptedOnAcquire(real)
    try:
        with pytest.raises(Interrupted):
            call()
    finally:
        obj._lock = real
    assert free_for_another_thread(real), "the interrupted call left its lock held"


@pytest.mark.parametrize("fast", MODES)
def test_put_access_and_release_release_their_lock_when_interrupted(shm_id: str,
                                                                    fast: bool) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096, fast=fast) as ring, \
            ShmTraceRing.open(shm_id) as reader:
        for _ in range(8):  # warm: every slot backed and mapped, both sides quiet
            ring.put(b"warm")
            reader.access().guard.release()  # type: ignore[union-attr]
        assert ring._p_quiet and reader._c_quiet
        interrupt_once(ring, lambda: ring.put(b"x"))  # raised before it published
        ring.put(b"y")  # the handle goes on
        interrupt_once(reader, reader.access)  # raised before it took a message
        r = reader.access(timeout=5)
        guard = r.guard  # type: ignore[union-attr]
        assert bytes(guard.buf) == b"y"
        interrupt_once(reader, guard.release)
        guard.release()  # not released by the interrupted call: now it is
        assert len(ring) == 0
        ring.put(b"z")
        assert reader.get(timeout=5) == b"z"


def test_append_with_a_linger_bound_releases_its_lock_when_interrupted(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring:
        w = RecordWriter(ring, timeout=5)  # default linger: a lock per append
        w.append(b"first")
        interrupt_once(w, lambda: w.append(b"second"))
        w.append(b"third")
        w.close()
        rx = ring.receiver()  # "second" was not added: the call raised before it wrote it
        assert [bytes(m) for m in rx] == [b"first", b"third"]
