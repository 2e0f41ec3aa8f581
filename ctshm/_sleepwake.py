"""Sleep and wake without a foreign call per message: a counter of announced sleepers in
shared memory plus a named semaphore that only carries wake-ups.

Generic (the queue uses it for both of its sides; :class:`Spin`, the adaptive busy-wait
budget before a sleep, serves the queue and the broadcast); the protocol is the ring's fast mode
(``ctshm/_waiting.py``, model/ring.pml -DFAST), checked again for many sleepers, many wakers
and deaths in model/queue.pml::

    waker (after its store of what the sleeper waits for, then a full fence):
        c = load(SLEEP); while c: if CAS(SLEEP, c, c - 1) == c: post; return; c = load(SLEEP)
    sleeper:
        CAS(SLEEP, c, c + 1)            announce (a locked RMW: a full fence)
        if ready(): withdraw            re-check what it waits for
        elif sem_timedwait(slice): woken
        else: withdraw
    withdraw: c = load; c > 0 and CAS(c, c - 1): done.  c == 0: a waker took our unit and
        posts one token for it: take it, waiting at most OWED_WAIT (the waker may have been
        SIGKILLed between its CAS and its post: the token never comes, and a late one is a
        stray token, i.e. one spurious wake-up later, never a lost one).

A sleeper killed while announced leaves its unit in SLEEP: the next waker takes it and posts
a stray token (one spurious wake-up), so the count heals itself.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Final

from .atomics import PLAIN_ORDERED_ACCESS, Atomics, AtomicsUnavailable, get_backend
from .semaphore import NamedSemaphore

__all__ = ["OWED_WAIT", "SPIN_CEILING", "SPIN_DEFAULT", "SPIN_FLOOR", "Sleepers", "Spin",
           "fast_atomics", "full_fence"]

#: Longest a withdrawing sleeper waits for the token a waker owes it.
OWED_WAIT: Final = 0.05
#: Busy-wait before sleeping (seconds), adaptive (:class:`Spin`): twice the last wait that
#: outlasted the spin, within [SPIN_FLOOR, SPIN_CEILING].
SPIN_DEFAULT: Final = 50e-6
SPIN_FLOOR: Final = 20e-6
SPIN_CEILING: Final = 1e-3


class Sleepers:
    """The sleepers of one side: word ``word`` of ``view`` (at address ``addr``), ``sem``."""

    __slots__ = ("_addr", "_cas", "_v", "_w", "sem", "wakeups")

    def __init__(self, view: memoryview, word: int, addr: int, sem: NamedSemaphore,
                 cas: Callable[[int, int, int], int]) -> None:
        self._v = view
        self._w = word
        self._addr = addr
        self._cas = cas
        self.sem = sem
        self.wakeups = 0

    def wake_one(self) -> None:
        v, w, cas, addr = self._v, self._w, self._cas, self._addr
        c = v[w]
        while c:
            if cas(addr, c, c - 1) == c:
                self.wakeups += 1
                self.sem.post()
                return
            c = v[w]

    def wake_all(self) -> None:
        v, w, cas, addr = self._v, self._w, self._cas, self._addr
        c = v[w]
        while c:
            if cas(addr, c, 0) == c:
                for _ in range(c):
                    self.sem.post()
                self.wakeups += c
                return
            c = v[w]

    def sleep(self, ready: Callable[[], Any], chunk: float) -> bool:
        """Announce, re-check, sleep at most ``chunk`` s: True if ``ready()`` held or a waker
        woke us (go and try), False if the slice ended."""
        v, w, cas, addr = self._v, self._w, self._cas, self._addr
        c = v[w]
        while cas(addr, c, c + 1) != c:
            c = v[w]
        if ready():
            self._withdraw()
            return True
        if self.sem.acquire(chunk):
            return True
        self._withdraw()
        return False

    def _withdraw(self) -> None:
        v, w, cas, addr = self._v, self._w, self._cas, self._addr
        c = v[w]
        while c:
            if cas(addr, c, c - 1) == c:
                return
            c = v[w]
        # A waker took our unit: its token is ours.
        self.sem.acquire(OWED_WAIT)


def fast_atomics() -> Atomics:
    """The backend whose compare-exchange is cheapest to call: the machine-code routines are
    bare ctypes function pointers, libatomic's exchange needs a Python wrapper, a c_uint64
    and byref (~3x the cost).  CTSHM_ATOMICS still forces a backend."""
    if os.environ.get("CTSHM_ATOMICS", "auto").strip().lower() in ("", "auto"):
        try:
            return get_backend("machine-code")
        except AtomicsUnavailable:
            pass
    return get_backend()


def full_fence(a: Any) -> Any:
    """A full fence.  On x86_64 (plain access) a lock acquire/release pair: each is a locked
    read-modify-write in CPython and PyPy (see ctshm/_waiting.py), ~0.1 us instead of a
    foreign call."""
    if not PLAIN_ORDERED_ACCESS:
        return a.fence
    lk = threading.Lock()
    acquire, release = lk.acquire, lk.release

    def fence() -> None:
        acquire()
        release()

    return fence


def _ncpu() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_NCPU: Final = _ncpu()
#: How often (seconds) a Spin re-reads the load average.
_LOAD_EVERY: Final = 1.0


class Spin:
    """An adaptive busy-wait budget (ShmQueue and ShmBroadcast): after a wait that did not
    end at once, twice the time it took, within [SPIN_FLOOR, SPIN_CEILING]; a longer wait
    halves it.  ``yielding`` (the last
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
