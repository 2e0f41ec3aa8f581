"""How a ring handle waits - the one wait loop of both sides - and fast mode's wake-ups.

A ring handle *has* one :class:`Waiter` (built when it opens).  The wait loop
(:meth:`Waiter.wait`): spin on header loads while the adaptive budget
(:class:`Spin`) lasts, yielding the CPU while spinning does not pay; then sleep on the
side's semaphore in slices of at most :data:`LIVENESS_SLICE`, with the liveness check and
the self-healing claim between slices.  The protocol around it (what is ready, what a claim
is, who is dead) is :mod:`ctshm.ring`'s.

Fast mode (rings created with ``fast=True``; ctshm peers only)
==========================================================

Why
---
The seed's protocol costs a foreign call per message on each side (``sem_trywait`` +
``sem_post``), ~0.5 µs each on a slow box, most of a small message's cost.  In fast mode the
header's indices are the whole truth (they already are for a ctshm side: ``_space()``,
``_claim()``), and the two semaphores only carry wake-ups, posted when the other side has
announced that it sleeps.  In the steady state of a stream (nobody sleeps) a message costs
each side header loads and stores and no foreign call at all.

When
----
A ring is fast iff its creator asked (``ShmTraceRing.create(..., fast=True)``): the creator
writes ``MODE`` before the ring is ready, both semaphores start at 0, and every handle reads
``MODE`` once.  A ring never changes mode, so there is no switch to get right: no late
registration, consumer restart or dead peer changes what a token means.  A Rust-created ring
(its extension is zero) and a ctshm ring created without ``fast`` speak the seed's protocol
byte for byte, so every pairing with the Rust original works as before; the Rust original
cannot use a fast ring (it would wait for tokens that are never posted), as it cannot read
``sender()``'s records message by message.

The words (:mod:`ctshm.layout`): ``C_SLEEP`` counts the consumer threads announced asleep on
``filled``, ``P_SLEEP`` the producer threads asleep on ``empty`` (at most one: producer
threads take turns).  Each sits on a cache line of its own; the peer loads it per message.

The protocol
------------
Waker, per message (producer after publishing ``write_idx``, consumer after advancing
``read_idx``; both stored under the handle lock)::

    store index; release the lock (FENCE); if load(SLEEP) != 0: wake one

    wake one:  c = load(SLEEP); if c == 0: done; if CAS(SLEEP, c, c - 1): post; else retry
    wake all:  the same with CAS(SLEEP, c, 0) and c posts (end of stream, a crash)

Sleeper (the slow path, after spinning)::

    CAS(SLEEP, c, c + 1)          announce (a locked RMW: a full fence)
    if ready(): withdraw; claim   re-check what it waits for
    elif sem_timedwait(slice): claim        the waker took our unit out of SLEEP
    else: withdraw; liveness check; loop

    withdraw:  c = load(SLEEP); if c > 0 and CAS(SLEEP, c, c - 1): done
               if c == 0: a waker took our unit and posts one token for it: take that token,
               waiting for it while the waker may live (the other side's process alive; a
               waker of this process posts under the handle lock, so taking the lock
               outwaits it)

The lost wake-up is the classic hazard: the waker stores the index then loads SLEEP, the
sleeper stores SLEEP then loads the index (Dekker's pattern).  Each side needs its store
ordered before its load, which even x86's TSO does not give plain accesses (a store may wait
in the store buffer while a later load runs).  The sleeper's announce is a compare-exchange,
a full fence.  The waker's fence is the handle lock's release between its store and its
load: on x86_64 every lock release in CPython (``sem_post`` or ``PyMutex``, 3.13) and PyPy
(pthread) is a locked read-modify-write, itself a full fence, so it costs nothing extra.  A
re-entrant call (a finalizer releasing a guard while the lock is held: the release does not
unlock) and every other architecture call the atomics backend's fence instead.  With both
fences, at least one side sees the other's store: the sleeper sees the index and does not
sleep, or the waker sees the announce and posts.

Accounting: every announced unit ends exactly once, taken by a waker (who posts one token
that its sleeper consumes, in its sleep or in withdraw) or withdrawn by its sleeper.  So no
token is ever left over: when both sides are idle, both semaphores are 0 and so are both
counters (``model/ring.pml`` checks this, and the absence of lost wake-ups, exhaustively;
``tests/test_fast.py`` on real processes).  Several consumer threads may sleep at once: one
wake-up per message wakes one of them, and the end of the stream wakes all.

Deaths: sleeps last at most one liveness slice, after which the sleeper withdraws and runs
the usual liveness checks (a dead producer is recorded as a crash; a dead consumer makes the
producer raise ``ConsumerGone``).  A consumer that replaces a dead one rewinds
``reserved_idx`` as in compat mode (no tokens to re-post: the indices are the truth), zeroes
``C_SLEEP`` (the dead process's sleepers are gone) and drops tokens already posted for them.
A wake-up that lands after that drop (its waker was slow between its compare-exchange and its
post while the consumer died and was replaced) stays a stray token: the sleeper that takes it
keeps its unit, so later publishes post spurious wake-ups until the stream ends; none is
lost.  Likewise a sleeper gives up an owed token once the process that could post it (the
other side's, as registered when it announced) is dead.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Final, Optional

from . import _liveness, _peers, libc
from .layout import (
    C_SLEEP as _CSLEEP,
    CONSUMER_PID as _CONSUMER_PID,
    CONSUMER_STATS as _CS,
    FINISHED as _FIN,
    P_SLEEP as _PSLEEP,
    PRODUCER_PID as _PRODUCER_PID,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    RESERVED_IDX as _RES,
    STAT_SPINS,
    STAT_WAITS,
    STAT_WAKEUPS,
    WRITE_IDX as _W,
)
from .semaphore import NamedSemaphore

if TYPE_CHECKING:
    from ._header import Header
    from ._process_state import ProcessState

__all__ = ["DEFAULT_SPIN", "LIVENESS_SLICE", "OWED_TOKEN_WAIT", "SPIN_CEILING", "SPIN_FLOOR",
           "Spin", "Waiter"]

#: Longest a blocked wait goes without checking that the peer is alive.
LIVENESS_SLICE: Final = 0.2
#: Busy-wait before sleeping (seconds): where the adaptive spin starts, and its bounds.  A
#: wake-up costs the poster 15-70 µs (futex wake + reschedule), far more than a message, so a
#: wait that usually ends within a millisecond is better spun; longer waits (idle peer,
#: oversubscribed CPU) shrink the spin to the floor, bounding the CPU a blocked call burns.
DEFAULT_SPIN: Final = 50e-6
SPIN_FLOOR: Final = 20e-6
SPIN_CEILING: Final = 1e-3
#: A fixed spin must be below this (the bound of a finite timeout in ``check_timeout``).
_SPIN_MAX: Final = 1e9


class Spin:
    """A spin budget.  Fixed when the user gave one; else adaptive: after each wait that did
    not end on the first try, the budget becomes twice the time that wait took (so the next
    similar wait ends while spinning), within [SPIN_FLOOR, SPIN_CEILING]; a wait longer than
    the ceiling halves it."""

    __slots__ = ("adaptive", "budget", "yielding")

    def __init__(self, spin: Optional[float], where: str = "") -> None:
        # Yield the CPU between polls while spinning is not paying (the last wait outlasted
        # its spin): with more runnable processes than cores the peer may need this core.
        self.yielding = False
        if spin is None:
            self.budget, self.adaptive = DEFAULT_SPIN, True
        else:
            pre = f"{where}: " if where else ""
            if isinstance(spin, bool) or not isinstance(spin, (int, float)) or not spin >= 0:
                raise ValueError(f"{pre}spin must be >= 0 seconds or None (adaptive), not "
                                 f"{spin!r}")
            if not spin < _SPIN_MAX:  # inf; 2**1024 would overflow float()
                shown = repr(spin) if len(repr(spin)) < 30 else f"{repr(spin)[:20]}..."
                raise ValueError(f"{pre}spin must be below {_SPIN_MAX:.0e} seconds (the "
                                 "busy-wait before a wait sleeps: microseconds; None: "
                                 f"adaptive), not {shown}")
            self.budget, self.adaptive = float(spin), False

    def record(self, waited: float) -> None:
        self.yielding = waited > self.budget
        if not self.adaptive:
            return
        if waited <= SPIN_CEILING:
            self.budget = min(SPIN_CEILING, max(SPIN_FLOOR, 2 * waited))
        else:
            self.budget = max(SPIN_FLOOR, self.budget / 2)


#: A waker posts right after the compare-exchange that took a sleeper's unit: the sleeper
#: waits for that token in slices this long, checking between them that the waker lives.
OWED_TOKEN_WAIT: Final = 0.2


class Waiter:
    """How one ring handle waits (the one wait loop) and, in fast mode, sleeps and wakes its
    peer (see the module docstring).  ``closed`` is set by the handle's ``close()`` (under
    the lock): waits in other threads then end with ``ValueError``."""

    __slots__ = ("closed", "data_ready", "empty", "fast", "filled", "h_empty", "h_filled",
                 "hdr", "name", "post", "ps", "space_ready", "spin", "trywait")

    def __init__(self, name: str, hdr: Header, sems: tuple[NamedSemaphore, NamedSemaphore],
                 ps: ProcessState, spin: Spin) -> None:
        self.name = name
        self.hdr = hdr
        self.filled, self.empty = sems
        self.ps = ps  # its lock: this process's for the ring (renewed in a forked child)
        self.spin = spin
        self.fast = hdr.fast
        self.closed = False
        # In flight: the raw foreign functions and semaphore handles, one ctypes call each
        # (never on a semaphore another thread has closed: see InFlight).
        self.trywait = libc.fn.sem_trywait
        self.post = libc.fn.sem_post
        self.h_filled = self.filled._handle
        self.h_empty = self.empty._handle
        # The spin's two ready checks (header loads only, no foreign call): closures over
        # the header view where loads are plain (x86_64), polled back to back.
        cap = hdr.capacity
        if hdr.plain:
            hq = hdr.hq
            self.data_ready: Callable[[], Any] = (
                lambda: hq[_W] != hq[_RES] or hq[_FIN])
            self.space_ready: Callable[[], Any] = lambda: hq[_W] - hq[_R] < cap
        else:
            ld = hdr.load
            self.data_ready = lambda: ld(_W) != ld(_RES) or ld(_FIN)
            self.space_ready = lambda: ld(_W) - ld(_R) < cap

    def closed_while(self, what: str) -> ValueError:
        return ValueError(f"ring {self.name!r} was closed while {what}() waited (close() was "
                          "called meanwhile: by another thread, or by this task's own code)")

    def wait(self, producer: bool, take: Callable[[], Any], idle: Callable[[], Any],
             timeout: Optional[float], what: str, spun: Optional[float] = None) -> Any:
        """The one wait loop of both sides; in flight (see close()).

        Spin while the adaptive budget lasts, watching the side's ready check (header loads
        only) and, once it says so, claiming: in compat mode after taking a token of the
        side's semaphore (``empty`` for the producer, ``filled`` for the consumer), in fast
        mode at once.  Then sleep in slices of at most LIVENESS_SLICE: compat on the
        semaphore, fast through doze (announce, re-check, sleep).  After each wake-up
        ``take()`` claims what was announced (None: a stale token, or another thread was
        first: keep waiting).  After each empty slice ``idle()`` runs the liveness check and
        the self-healing claim of work visible without its token (None: keep waiting).  None
        on timeout; ``ValueError`` once this handle is closed by another thread.  ``spun``:
        the caller spun already, from that ``perf_counter()`` time (:meth:`spin_quiet`):
        sleep at once (the adaptive budget counts the whole wait).
        """
        if producer:
            sem, ready, stats, word = self.empty, self.space_ready, _PS, _PSLEEP
        else:
            sem, ready, stats, word = self.filled, self.data_ready, _CS, _CSLEEP
        t0 = time.perf_counter() if spun is None else spun
        r = None if spun is not None else self._spin_for(sem, ready, take, timeout, t0)
        if r is not None:
            self.count(stats + STAT_SPINS)
            return r
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed:
                raise self.closed_while(what)
            chunk = LIVENESS_SLICE
            if deadline is not None:
                chunk = min(chunk, deadline - time.monotonic())
                if chunk <= 0:
                    self.spin.record(time.perf_counter() - t0)
                    return None
            self.count(stats + STAT_WAITS)
            if self._sleep(sem, word, ready, chunk, what):
                r = take()
                if r is not None:
                    self.spin.record(time.perf_counter() - t0)
                    return r
                continue
            r = idle()
            if r is not None:
                return r

    def spin_quiet(self, producer: bool, take: Callable[[], Any], timeout: Optional[float],
                   t0: float) -> Any:
        """In flight, for a side on its quiet path: the spin phase alone, polling the side's
        ready check and, once it holds, ``take()`` - a whole non-blocking attempt
        (``try_put``/``try_access``, which takes any token itself).  What ``take`` returned,
        or None once the budget (or the timeout) is spent: then the general wait, without
        a second spin (``wait(..., spun=t0)``).  ``t0``: ``time.perf_counter()`` at the
        start."""
        ready = self.space_ready if producer else self.data_ready
        r = self._spin_for(None, ready, take, timeout, t0)
        if r is not None:
            self.count((_PS if producer else _CS) + STAT_SPINS)
        return r

    def _spin_for(self, sem: Optional[NamedSemaphore], ready: Callable[[], Any],
                  take: Callable[[], Any], timeout: Optional[float], t0: float) -> Any:
        """The spin phase of wait: what ``take()`` claimed, or None once the budget (or the
        timeout, if shorter) is spent.  ``sem`` None: ``take`` takes its token itself."""
        spin = self.spin
        if spin.budget <= 0 or (timeout is not None and timeout <= 0):
            return None
        # In flight: the raw sem_trywait (no enter/leave of the semaphore's own; EINTR is
        # just another miss), as on the lock-held fast paths.
        tokenless = self.fast or sem is None
        trywait, h = self.trywait, (0 if sem is None else sem._handle)
        # A fixed spin longer than the timeout stops at the timeout.
        end = t0 + (spin.budget if timeout is None else min(spin.budget, timeout))
        while time.perf_counter() < end and not self.closed:
            if ready() and (tokenless or trywait(h) == 0):
                r = take()
                if r is not None:
                    spin.record(time.perf_counter() - t0)
                    return r
            elif spin.yielding:
                os.sched_yield()
        return None

    def _sleep(self, sem: NamedSemaphore, word: int, ready: Callable[[], Any], chunk: float,
               what: str) -> bool:
        """One slice of wait's sleep: True if woken (go and claim), False if it ended."""
        if not self.fast:
            if not sem.acquire(chunk):
                return False
            if self.closed:
                sem.post()  # not ours to take any more: for the ring's other handles
                raise self.closed_while(what)
            return True
        if not self.doze(sem, word, ready, chunk):
            return False
        if self.closed:
            raise self.closed_while(what)
        return True

    def count(self, word: int) -> None:
        """A wait/spin statistics word of this side += 1.  In flight (the view is alive) and
        without the lock: two consumer threads finishing waits at the same instant may count
        one (bytes are exact: they are counted under the lock)."""
        self.hdr.hq[word] += 1

    def doze(self, sem: NamedSemaphore, word: int, ready: Callable[[], Any], chunk: float
             ) -> bool:
        """Fast mode, in flight: sleep on ``sem`` for at most ``chunk`` seconds, announced in
        ``word`` (see the module docstring).  True: a wake-up came, or
        ``ready()`` held once announced (go and claim); False: the slice ended."""
        addr = self.hdr.a_psleep if word == _PSLEEP else self.hdr.a_csleep
        waker = self.waker_id(word)  # who may take our unit: the other side, as of now
        self.add_sleeper(word, addr)  # compare-exchange: a full fence before the re-check
        try:
            now = bool(ready())
            if not now and sem.acquire(chunk):
                return True  # the waker took our unit out of ``word``
        except BaseException:
            self.withdraw(sem, word, addr, waker)
            raise
        return self.withdraw(sem, word, addr, waker) or now

    def add_sleeper(self, word: int, addr: int) -> None:
        ld, cas = self.hdr.load, self.hdr.cas
        while True:
            c = ld(word)
            if cas(addr, c, c + 1) == c:
                return

    def withdraw(self, sem: NamedSemaphore, word: int, addr: int,
                 waker: tuple[int, int] = (0, 0)) -> bool:
        """Take our unit back out of ``word`` (False); if a waker already took every unit,
        one token is posted (or about to be) for us: consume it, so that no stray token is
        left (True: we were woken).  ``waker``: the other side's process when we announced."""
        ld, cas = self.hdr.load, self.hdr.cas
        while True:
            c = ld(word)
            if c == 0:
                break
            if cas(addr, c, c - 1) == c:
                return False
        # Wait for the owed token while its waker may still post it: a live waker that is
        # only slow (descheduled between its compare-exchange and its post) would otherwise
        # leave a stray token for good (model/README.md, finding F-1).
        while not sem.acquire(OWED_TOKEN_WAIT):
            if not self.waker_may_live(word, waker):
                with self.ps.lock:  # this process's wakers post under the lock: they are done
                    sem.try_acquire()
                return True
        return True

    def waker_id(self, word: int) -> tuple[int, int]:
        """The other side's registered (pid, start): who may take a unit out of ``word``."""
        w = _PRODUCER_PID if word == _CSLEEP else _CONSUMER_PID
        return int(self.hdr.load(w)), int(self.hdr.load(w + 1))

    def waker_may_live(self, word: int, waker: tuple[int, int]) -> bool:
        """Could a process still post the token owed for a unit taken out of ``word``?  The
        other side's process registered when we announced, while it lives; if none was, the
        one registered now.  Not whoever is registered now: a consumer killed between its
        compare-exchange and its post, then replaced, would keep a producer waiting for as
        long as the successor lives (review finding).  A successor that took the unit itself
        and is slow to post then leaves a stray token: spurious wake-ups, never a lost one.
        This process's own wakers: see withdraw."""
        pid, start = waker
        if pid:
            return _liveness.is_alive(pid, start)
        return _peers.alive(self.hdr.load,
                            _PRODUCER_PID if word == _CSLEEP else _CONSUMER_PID)

    def signal(self, hq: memoryview, word: int, stats: int) -> None:
        """Fast mode, just after a publish (``write_idx`` or ``read_idx``) stored under the
        handle lock and that lock's release: wake one sleeper of the other side if one is
        announced in ``word``.  The release is the fence between the store and this load
        (see the module docstring); a re-entrant call, where the release did not unlock, and
        other architectures fence explicitly."""
        lock: Any = self.ps.lock
        if not self.hdr.plain or lock._is_owned():
            self.hdr.fence()
        try:
            if not hq[word]:
                return  # the steady state: nobody sleeps, no foreign call
        except ValueError:
            return  # closed by another thread meanwhile (its header view is released)
        with lock:
            if not self.closed:
                self.wake(word, False, stats)

    def wake_consumers(self) -> None:
        """The stream ended: wake the other consumer threads (compat: re-post the token)."""
        if self.fast:
            self.wake(_CSLEEP, True, _CS)
        else:
            self.filled.post()

    def wake(self, word: int, every: bool, stats: int) -> None:
        """Under the lock or in flight: take one unit (``every``: all of them) out of
        ``word`` by compare-exchange and post one token per unit taken.  No lock of its own:
        notify_crash may run it from a signal handler."""
        hdr = self.hdr
        addr = hdr.a_psleep if word == _PSLEEP else hdr.a_csleep
        ld, cas = hdr.load, hdr.cas
        while True:
            c = ld(word)
            if c == 0:
                return
            n = c if every else 1
            if cas(addr, c, c - n) == c:
                break
        h, sem = (self.h_empty, self.empty) if word == _PSLEEP else (self.h_filled,
                                                                        self.filled)
        for _ in range(n):
            if self.post(h) == -1:
                sem.post()  # raises the OSError with the name
        hdr.hq[stats + STAT_WAKEUPS] += n

    def forget_sleepers(self) -> None:
        """Fast mode, under the lock, replacing a dead consumer: its announced sleepers are
        gone; drop the wake-ups already posted for them (a late one stays a stray token: see
        the module docstring)."""
        self.hdr.store(_CSLEEP, 0)
        while self.trywait(self.h_filled) == 0:
            pass
