"""Generic pieces of ShmBroadcast that another many-process object could share (written here,
not imported from the ring's internals, which are being rewritten):

* :class:`AddrSemaphore` - an unnamed, process-shared POSIX semaphore living in a shared
  mapping (``sem_init(addr, 1, 0)``): one per sleeper, no extra name in /dev/shm;
* :class:`Spin` and :func:`spin_then_sleep` - the wait shape: poll a ready check while an
  adaptive budget lasts, then sleep in slices (the caller's slice announces, re-checks,
  sleeps on a semaphore and withdraws, and runs its liveness checks between slices);
* :func:`slot_alive` - pid + start-time liveness of a table slot's occupant;
* :class:`ForkRegistry` - handles that a forked child must not use.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import weakref
from ctypes import byref, get_errno
from typing import Any, Callable, Final, Optional

from . import _liveness, libc
from ._fork import on_fork
from .libc import fn
from .semaphore import default_wait_mode

__all__ = ["LIVENESS_SLICE", "AddrSemaphore", "ForkRegistry", "Spin", "slot_alive",
           "spin_then_sleep"]

#: Longest one sleep lasts before its liveness checks run again; the first slice of a wait
#: is FIRST_SLICE and each next one twice as long (a peer that died just before the wait is
#: noticed within milliseconds; a long idle wait wakes ~10 times a second).
LIVENESS_SLICE: Final = 0.1
FIRST_SLICE: Final = 0.005
SPIN_DEFAULT: Final = 50e-6
SPIN_FLOOR: Final = 20e-6
SPIN_CEILING: Final = 1e-3
_POLL_MIN: Final = 50e-6
_POLL_MAX: Final = 1e-3


class AddrSemaphore:
    """``sem_t`` objects at addresses of a shared mapping the caller keeps alive.

    One instance serves every semaphore of a segment (it only holds the wait mode).  Errors
    name ``owner`` (the object's name)."""

    __slots__ = ("_clock", "owner", "polling")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        mode = default_wait_mode()
        self.polling = mode == "polling"
        self._clock = mode == "clockwait"

    def init(self, addr: int) -> None:
        if fn.sem_init is None or fn.sem_init(addr, 1, 0) == -1:
            e = get_errno() if fn.sem_init is not None else errno.ENOSYS
            raise OSError(e, f"{self.owner}: sem_init(pshared=1) failed ({os.strerror(e)}): "
                          "this platform has no process-shared unnamed semaphores "
                          "(macOS); ShmBroadcast needs them")

    def post(self, addr: int) -> None:
        if fn.sem_post(addr) == -1:
            raise libc.oserror(get_errno(), self.owner, "sem_post")

    def try_acquire(self, addr: int) -> bool:
        while fn.sem_trywait(addr) == -1:
            e = get_errno()
            if e == errno.EAGAIN:
                return False
            if e != errno.EINTR:
                raise libc.oserror(e, self.owner, "sem_trywait")
        return True

    def drain(self, addr: int) -> None:
        while self.try_acquire(addr):
            pass

    def acquire(self, addr: int, timeout: float) -> bool:
        """Take a token within ``timeout`` seconds (> 0, at most a slice); False on timeout."""
        if self.try_acquire(addr):
            return True
        end = time.monotonic() + timeout
        if self.polling:
            delay = _POLL_MIN
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(delay, left))
                if self.try_acquire(addr):
                    return True
                delay = min(2 * delay, _POLL_MAX)
        ts = libc.timespec()
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self._clock:
                _fill(ts, time.clock_gettime(time.CLOCK_MONOTONIC) + left)
                r = fn.sem_clockwait(addr, libc.CLOCK_MONOTONIC, byref(ts))  # type: ignore[misc]
            else:
                _fill(ts, time.time() + left)
                r = fn.sem_timedwait(addr, byref(ts))  # type: ignore[misc]
            if r == 0:
                return True
            e = get_errno()
            if e not in (errno.ETIMEDOUT, errno.EINTR):
                raise libc.oserror(e, self.owner, "sem_clockwait" if self._clock
                                   else "sem_timedwait")


def _fill(ts: libc.timespec, t: float) -> None:
    sec = int(t)
    ts.tv_sec = sec
    ts.tv_nsec = min(999_999_999, max(0, int((t - sec) * 1e9)))


def _ncpu() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_NCPU: Final = _ncpu()
#: How often (seconds) a Spin re-reads the load average.
_LOAD_EVERY: Final = 1.0


class Spin:
    """An adaptive busy-wait budget: after a wait that did not end at once, twice the time it
    took, within [SPIN_FLOOR, SPIN_CEILING]; a longer wait halves it.  ``yielding`` (the last
    wait outlasted its spin) makes the poll loop give the core away between polls.

    No spinning at all where it only steals the core a peer needs: when the processes that
    take part (``parties``) outnumber the CPUs this process may run on, or the load average
    (re-read once a second) is at least that number.  Measured on 2 cores, 1 writer and 4
    readers of 4 KiB messages: spinning readers made the stream 3-5x slower."""

    __slots__ = ("_busy", "_checked", "budget", "yielding")

    def __init__(self) -> None:
        self.budget = SPIN_DEFAULT
        self.yielding = False
        self._checked = -_LOAD_EVERY
        self._busy = False

    def allowed(self, parties: int) -> bool:
        if parties > _NCPU:
            return False
        now = time.monotonic()
        if now - self._checked >= _LOAD_EVERY:
            self._checked = now
            try:
                self._busy = os.getloadavg()[0] >= _NCPU
            except OSError:
                self._busy = False
        return not self._busy

    def record(self, waited: float) -> None:
        self.yielding = waited > self.budget
        if waited <= SPIN_CEILING:
            self.budget = min(SPIN_CEILING, max(SPIN_FLOOR, 2 * waited))
        else:
            self.budget = max(SPIN_FLOOR, self.budget / 2)


def spin_then_sleep(spin: Spin, ready: Callable[[], Any],
                    sleep: Callable[[float], Any], timeout: Optional[float],
                    parties: int = 2) -> Any:
    """Poll ``ready()`` while the spin budget lasts, then call ``sleep(chunk)`` (one slice:
    FIRST_SLICE seconds, doubling up to LIVENESS_SLICE; it announces, re-checks, sleeps and
    withdraws, and may raise) until either returns a true value, which is returned; None
    once ``timeout`` (seconds, None: no bound) has passed."""
    t0 = time.perf_counter()
    r = ready()
    if r:
        return r
    budget = spin.budget if spin.allowed(parties) else 0.0
    end = t0 + budget if timeout is None else t0 + min(budget, timeout)
    now = t0
    while now < end:
        r = ready()
        if r:
            spin.record(time.perf_counter() - t0)
            return r
        if spin.yielding:
            os.sched_yield()
        now = time.perf_counter()
    deadline = None if timeout is None else t0 + timeout
    slice_ = FIRST_SLICE
    while True:
        chunk = slice_
        slice_ = min(LIVENESS_SLICE, 2 * slice_)
        if deadline is not None:
            chunk = min(chunk, deadline - time.perf_counter())
            if chunk <= 0:
                spin.record(time.perf_counter() - t0)
                return None
        r = sleep(chunk)
        if r:
            spin.record(time.perf_counter() - t0)
            return r


def slot_alive(pid: int, start: int) -> bool:
    """Is the process that occupies a slot (its pid, and its start time if known) alive?"""
    return pid == os.getpid() or _liveness.is_alive(pid, start)


class ForkRegistry:
    """Objects whose ``_forked()`` runs in a forked child (their state there is a copy:
    a reader slot or the writer seat belongs to the parent)."""

    def __init__(self) -> None:
        self._items: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        on_fork(self._after_fork)  # the one at-fork hook (ctshm._fork)

    def add(self, obj: Any) -> None:
        with self._lock:
            self._items.add(obj)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for obj in list(self._items):
            obj._forked()
