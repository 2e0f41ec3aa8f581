"""``ShmTraceRing``: the Rust executor's shared-memory trace ring, byte for byte.

One producer process hands large slots to one consumer process (which may hold several slots
at once, from several threads) through POSIX shared memory and two named counting semaphores.

Objects (an id ``X`` or ``/X``; a leading slash is not doubled)::

    /X_t          the ring (shm object): header region + capacity slots
    /X_t_filled   semaphore, initial 0: one token per committed slot (+1 per finish/crash)
    /X_t_empty    semaphore, initial capacity: one token per free slot

The shared byte layout (header, ctshm extension, length records, slots, record framing)
is drawn and defined in :mod:`ctshm.layout`.

Protocol (the Rust original's, with its bugs fixed):

* Producer: take an ``empty`` token (spin briefly on ``read_idx``, then a bounded wait), fill
  slot ``write_idx % capacity``, write the length record, store ``write_idx + 1`` (release),
  post ``filled``.  ``abort()`` (or an exception in the ``with`` block) gives the ``empty``
  token back instead: a half-written slot is never published.  One outstanding
  ``ProducerGuard`` per process: other producer threads wait their turn.
* Consumer: take a ``filled`` token, then reserve ``reserved_idx`` with compare-exchange
  (only while ``reserved_idx < write_idx``: a re-posted finish token can never reserve an
  unwritten slot).  Guards are released in any order from any thread; a lock-protected
  min-heap advances ``read_idx`` strictly in order and posts ``empty`` once per slot.
* ``finished``: 1 after ``mark_finished()``, 2 after ``notify_crash()`` (details first, then a
  fence, then the flag, then a ``filled`` post).  A consumer delivers every committed slot
  first and reports Finished / Crashed only once ``reserved_idx == write_idx``, re-posting the
  token so every consumer thread sees it.  (The Rust original reports a crash before slots
  still in flight; ctshm delivers committed data first.)
* Dead peers: a consumer waiting for data checks the registered producer's pid + start time
  between wait slices (<= 0.2 s) and reports ``Crashed`` (signal 0, ``pid`` set) once it is
  dead; a producer waiting for space raises ``ConsumerGone`` when the registered consumer is
  dead, or when none is registered and the ring's names are gone (unlinked: nobody can open
  it to consume).  A consumer unregisters when its last handle closes with nothing taken.
  A consumer that registers after a dead one rewinds ``reserved_idx`` to ``read_idx`` and
  re-posts the tokens: slots the dead consumer had reserved but not released are delivered
  again (at-least-once across a consumer restart).
* Openers never create: ``open()`` waits (bounded) until the creator has finished
  initializing; a stale owner never unlinks a successor's objects.
* Both sides wait in one loop (spin on header loads, then sleep in liveness slices):
  :mod:`ctshm._waiting`.

Fast mode (``create(..., fast=True)``, ctshm peers only): the same indices, words and steps,
but no token per message: the semaphores start at 0 and carry wake-ups only, posted when the
other side announced in ``c_sleep`` / ``p_sleep`` that it sleeps; in the steady state a
message costs no foreign call.  Where the steps above take or post a token, fast mode
does not, except where it says so.  The argument (lost wake-ups, fences, accounting) is
in :mod:`ctshm._waiting`.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
import weakref
from typing import Any, Final, Optional, TypeVar

from . import _peers, _userwarn, _viewcheck, libc
from ._bytesview import byte_view
from ._conveniences import Buffer, RingConveniences, take_pending
from ._handle import check_timeout, is_int
from ._ringobjects import reserve_range
from ._waiting import (  # noqa: F401 (the spin constants stay importable from here)
    DEFAULT_SPIN,
    LIVENESS_SLICE,
    SPIN_CEILING,
    SPIN_FLOOR,
    Waiting,
    _Spin,
)
from .layout import (
    C_SLEEP as _CSLEEP,
    CONSUMER_PID as _CONSUMER_PID,
    CONSUMER_STATS as _CS,
    CRASH as _CRASH,
    CRASH_OFF as _CRASH_OFF,
    CRASH_W as _CRASH_W,
    DEAD_PID as _DEAD_PID,
    FIN_CRASHED as _CRASHED,
    FIN_FINISHED as _FINISHED,
    FINISHED as _FIN,
    HEADER_SIZE,
    LEN_OFF,
    LEN_WORD as _LEN,
    MSG_LEN,
    MSG_MAX,
    MSG_OFF,
    P_SLEEP as _PSLEEP,
    PRODUCER_PID as _PRODUCER_PID,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    RESERVED_IDX as _RES,
    STAT_BYTES,
    STAT_WAKEUPS,
    WRITE_IDX as _W,
)
from .results import (
    FINISHED_RESULT as _FINISHED_RESULT,
    STALE,
    AccessResult,
    ConsumerGone,
    CorruptRingError,
    CrashDetails,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    RingFinished,
    Timeout,
)

__all__ = [
    "ConsumerGone", "ConsumerGuard", "CorruptRingError", "CrashDetails", "Crashed", "Data",
    "Finished", "ProducerCrashed", "ProducerGuard", "RingFinished", "ShmTraceRing", "Timeout",
]

_PAGE: Final = libc.page_size()
_PID = os.getpid()


# ---------------------------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------------------------


_G = TypeVar("_G", bound="_Guard")


class _Guard:
    """What both guards share: the ring, the message index, the view, done-ness, and the
    pid that made them (in a forked child they are inert: finalizers do nothing, and
    commit/abort/release refuse, since the slot belongs to the parent's registration)."""

    __slots__ = ("__weakref__", "_buf", "_done", "_pid", "_ring", "index")
    _DONE_TEXT = "was already committed or aborted"

    def __init__(self, ring: ShmTraceRing, index: int, buf: memoryview) -> None:
        self._ring = ring
        self.index = index
        self._buf = buf
        self._done: object = False  # True, or STALE: ended with its view exported (warned)
        self._pid = _PID

    def _view(self) -> memoryview:
        if self._done:
            raise ValueError(f"{type(self).__name__} for message {self.index} of "
                             f"{self._ring.name!r} {self._DONE_TEXT}")
        return _viewcheck.own_view(self) if _viewcheck.ENABLED else self._buf

    def __enter__(self: _G) -> _G:
        return self

    def _finish(self) -> None:
        """Done: drop and release the view (under the ring lock); STALE if it is exported."""
        self._done = True
        buf, self._buf = self._buf, _EMPTY
        try:
            buf.release()
        except BufferError:
            self._done = STALE
        if _viewcheck.ENABLED and _viewcheck.leftover(self):  # python -X dev
            self._done = STALE

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} for message {self.index} of "
                        f"{self._ring.name!r} cannot be pickled: it holds a slot of shared "
                        "memory mapped in this process; send bytes(guard.buf) instead (the "
                        "other process can also open the ring by its id)")

    def _check_here(self, what: str) -> None:
        if self._pid != _PID:
            raise RuntimeError(
                f"{type(self).__name__} for message {self.index} of {self._ring.name!r} was "
                f"taken by pid {self._pid}; this forked child (pid {_PID}) cannot {what} it "
                "(nothing shared was changed): only the process that took a slot finishes it")


class ProducerGuard(_Guard):
    """A slot being written.  ``commit(nbytes)`` publishes it, ``abort()`` gives it back.

    As a context manager it commits the whole slot on normal exit (unless already committed
    or aborted) and aborts on an exception.  Dropping an unfinished guard aborts it.
    ``len(guard)`` is the ``size`` given to ``acquire`` (default: the whole slot).
    """

    __slots__ = ("size",)

    def __init__(self, ring: ShmTraceRing, index: int, buf: memoryview) -> None:
        super().__init__(ring, index, buf)
        self.size = len(buf)

    @property
    def buf(self) -> memoryview:
        """Writable view of the slot (``size`` bytes as given to acquire; default the whole
        slot)."""
        if self._ring._closed and not self._done:
            raise ValueError(self._closed_text("buf"))
        return self._view()

    def __len__(self) -> int:
        return self.size

    def _closed_text(self, what: str) -> str:
        then = ("the guard is aborted" if what == "commit()" else
                "abort() the guard, or drop it, to free the producer turn")
        return (f"ring {self._ring.name!r} was closed: {what} of {self!r} is refused and "
                f"nothing was published ({then})")

    def commit(self, nbytes: Optional[int] = None) -> None:
        """Publish the first ``nbytes`` bytes of the view (default: all of it)."""
        self._check_here("commit")
        self._view()  # raises if already committed or aborted
        self._ring._commit(self, nbytes)
        if self._done is STALE:
            _userwarn.stale(self)

    def abort(self) -> None:
        """Give the slot back unpublished.  Idempotent after commit/abort."""
        self._check_here("abort")
        if not self._done:
            self._ring._abort(self)
            if self._done is STALE:
                _userwarn.stale(self)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._done:
            (self.commit if exc_type is None else self.abort)()

    def __del__(self) -> None:
        try:
            if not self._done and self._pid == _PID:
                self._ring._abort(self)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return (f"<ProducerGuard {self._ring.name!r} message={self.index} size={self.size} "
                f"{state}>")


class ConsumerGuard(_Guard):
    """A slot handed to the consumer.  ``buf`` is read-only; ``release()`` hands it back.

    Guards may be released in any order and from any thread; the ring advances ``read_idx``
    in order.  Releasing twice is a no-op; a guard dropped unreleased is released, and its
    ``buf`` stops working then: keep the guard while you read (``with ring.access() ...``),
    or take a copy with ``ring.get()``.
    """

    __slots__ = ()
    _DONE_TEXT = "was released"

    @property
    def buf(self) -> memoryview:
        """Read-only view of the committed bytes (the whole slot for a Rust producer)."""
        return self._view()

    def __len__(self) -> int:
        return len(self._buf)

    def release(self) -> None:
        """Hand the slot back.  Idempotent, also when two threads race to release."""
        if not self._done:
            if self._pid != _PID:
                self._check_here("release")
            self._ring._complete(self.index, self)
            if self._done is STALE:
                _userwarn.stale(self)

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        # No StaleViewWarning: locals may free the guard before a view (test_guard_views).
        try:
            if not self._done and self._pid == _PID:
                self._ring._complete(self.index, self)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "released" if self._done else f"{len(self._buf)} bytes"
        return f"<ConsumerGuard {self._ring.name!r} message={self.index} {state}>"


_EMPTY: Final = memoryview(b"")


# ---------------------------------------------------------------------------------------------
# The ring
# ---------------------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    global _PID
    _PID = os.getpid()  # guards made before the fork are the parent's (see _Guard)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ShmTraceRing(Waiting, RingConveniences):
    """A ring of large slots in POSIX shared memory (see :mod:`ctshm.layout` for the bytes).

    Create with :meth:`create` (the owner: unlinks everything on close) or :meth:`open`.
    Producer: :meth:`acquire`, :meth:`put`, :meth:`mark_finished`, :meth:`notify_crash`.
    Consumer: :meth:`access`, :meth:`get`, iteration.

    Threads: one producer *process* and one consumer *process* per ring.  In the producer
    process any number of threads may call ``acquire``/``put`` on one handle (or on several
    handles of the ring): they take turns, one outstanding slot at a time, each waiting at
    most its ``timeout``; a thread that acquires again while its own guard is outstanding
    gets ``RuntimeError``.  In the consumer process any number of threads may call ``access``
    /``get`` and release guards in any order.  ``close()`` may be called from any thread at
    any time: calls waiting in other threads raise ``ValueError`` within 0.2 s, and the
    semaphores and mapping are released when the last of them has returned.
    """

    _spin: _Spin = _Spin(None)

    def _configure(self, spin: Optional[float]) -> None:
        self._spin = _Spin(spin, f"ShmTraceRing {self.name!r}")

    # Per-process shared state.
    @property
    def _pending(self) -> list[int]:
        return self._ps.pending

    @property
    def _producer_guard(self) -> Optional[ProducerGuard]:
        return self._ps.producer_guard()

    # -- producer ----------------------------------------------------------------------------
    def acquire(self, timeout: Optional[float] = None, *, size: Optional[int] = None
                ) -> ProducerGuard:
        """Wait for a free slot (``None``: without bound) and return its guard; ``size``: the
        bytes you will write (default: the whole slot), the length of ``guard.buf``.

        The slot prefix is reserved (``posix_fallocate``, once per slot and process) before
        it is handed out: a full /dev/shm raises ``OSError(ENOSPC)`` here, never SIGBUS.  One
        slot is outstanding at a time: other threads wait (within their ``timeout``) until it
        is committed, aborted or dropped.  ``TimeoutError``, ``ConsumerGone`` (the consumer
        died while we waited), ``RuntimeError`` (this thread holds the outstanding guard, or
        the ring ended)."""
        if self._closed:
            self._check_open()
        timeout = check_timeout(timeout, "acquire", self.name)
        size = self._check_acquire_size(size)
        deadline = None if timeout is None else time.monotonic() + timeout
        ps = self._ps
        with self._lock:
            self._take_turn(deadline, timeout)
            fin = self._load(_FIN)
            if fin:
                raise RuntimeError(f"ring {self.name!r} is already "
                                   f"{'finished' if fin == _FINISHED else 'crashed'}: no "
                                   "more messages can be produced")
            if not self._producer_registered:
                self._register_producer()
            # Fast path, never blocks: a free slot (compat: and its ``empty`` token).
            if (self._fast or self._trywait(self._h_empty) == 0) and self._space():
                return self._new_producer_guard(size)
            ps.acquiring = True
            ps.turn_owner = threading.get_ident()
        # The wait happens outside the lock: a consumer thread of this same handle must be
        # able to release slots meanwhile.
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            got = self._wait_space(left)
        except BaseException:
            with self._lock:
                ps.end_turn()
            raise
        with self._lock:
            if self._closed:  # a token taken meanwhile is lost: tokens are only hints
                ps.end_turn()
                raise self._closed_while("acquire")
            if not got:
                ps.end_turn()
                raise TimeoutError(f"ring {self.name!r}: no free slot within {timeout} s "
                                   f"(the consumer is not releasing slots){self._fast_hint()}")
            ps.acquiring = False
            return self._new_producer_guard(size)

    def _fast_hint(self) -> str:
        if not self._fast or self._load(_CONSUMER_PID):
            return ""
        return ("; this is a fast ring and no ctshm consumer has registered: the Rust "
                "original cannot consume a fast ring (create it with fast=False for it)")

    def _take_turn(self, deadline: Optional[float], timeout: Optional[float]) -> None:
        """Under self._lock: wait until no other producer slot of this process is out."""
        ps = self._ps
        if self._closed:
            self._check_open()
        while ps.busy():
            if ps.turn_owner == threading.get_ident():
                what = repr(ps.producer_guard() or "an acquire() of this thread")
                raise RuntimeError(
                    f"ring {self.name!r}: {what} is still outstanding; commit or abort it "
                    "before acquiring another slot (one producer slot at a time keeps "
                    "messages in order)")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"ring {self.name!r}: another producer thread of this "
                                   f"process held the producer slot for all of {timeout} s")
            ps.turn.wait(LIVENESS_SLICE if left is None else min(left, LIVENESS_SLICE))
            if self._closed:
                raise self._closed_while("acquire")

    def _new_producer_guard(self, size: int) -> ProducerGuard:
        # Under self._lock, holding an ``empty`` token.
        w = self._load(_W)
        slot = w % self.capacity
        if size > self._backed[slot]:
            try:
                self._reserve(slot, size)
            except BaseException:
                if not self._fast:
                    self._post(self._h_empty)  # give the slot back: the ring stays usable
                self._ps.end_turn()
                raise
        v = self._slot_views[slot]
        if v is None:
            v = self._view(slot)
        g = ProducerGuard(self, w, v[:size])
        ps = self._ps
        ps.pg_ref = weakref.ref(g)
        ps.turn_owner = threading.get_ident()
        return g

    def _reserve(self, slot: int, size: int) -> None:
        """``posix_fallocate`` the first ``size`` bytes of ``slot`` (rounded up to pages)."""
        size = min(self.slot_size, -(-size // _PAGE) * _PAGE)
        objs = self._objs
        assert objs is not None
        reserve_range(objs.fd, HEADER_SIZE + slot * self.slot_size, size, self.name,
                       f"slot {slot}")
        self._backed[slot] = size

    def _space(self) -> bool:
        """Is slot write_idx free?  The ``empty`` tokens are only hints; this makes writing
        safe.  A token lost by a consumer killed between storing read_idx and posting is
        replaced by the visibly free slot after a wait slice (see _wait_space); a late token
        finds the ring full and is dropped here."""
        ld = self._load
        return bool(ld(_W) - ld(_R) < self.capacity)

    def _wait_space(self, timeout: Optional[float]) -> bool:
        """Wait for a free slot (compat: and take its ``empty`` token; see _wait): True, or
        False on timeout or close."""
        self._enter("acquire")
        try:
            return bool(self._wait(self._empty, self._space_ready, self._space_taken,
                                   self._space_idle, timeout, "acquire"))
        except ValueError:
            if self._closed:
                return False
            raise
        finally:
            self._leave()

    _space_ready = _space  # the spin's check (x86_64: a closure, see Waiting)

    def _orphaned(self) -> bool:
        """In flight: no consumer is registered and nobody can open the ring to be one (its
        name is gone).  False once this handle is closed: close() sets ``_closed`` before it
        unlinks, so a waiter of the owner's own handle reports the close, not this."""
        objs = self._objs
        if self._load(_CONSUMER_PID) or objs is None or not objs.unlinked():
            return False
        return not self._closed  # read after: see above

    def _space_taken(self) -> Optional[bool]:
        return True if self._space() else None  # else a surplus token: dropped

    def _space_idle(self) -> Optional[bool]:
        if self._space():  # free, but its token never came (see _space)
            return True
        cpid = _peers.dead(self._load, _CONSUMER_PID)
        if cpid:
            raise ConsumerGone(
                32, f"the consumer of ring {self.name!r} (pid {cpid}) died while the "
                "producer waited for a free slot; a new consumer that opens the ring will "
                "resume (slots it had not released are delivered again)", self.name)
        if self._orphaned():
            raise ConsumerGone(
                32, f"ring {self.name!r} was unlinked (its owner closed it) and no "
                "consumer is registered: no consumer can open it any more, so no slot "
                "will be freed (a consumer that opened it but never called access(), or "
                "a Rust consumer, counts only once registered with expect_consumer())",
                self.name)
        return None

    def _register_producer(self) -> None:
        # Under self._lock.
        _peers.register(self._load, self._store, _PRODUCER_PID, self.name, "producer")
        if self._has_len and not self._len_backed:
            # A Rust-created ring never wrote the length records: reserve their pages.
            objs = self._objs
            assert objs is not None
            reserve_range(objs.fd, LEN_OFF, 16 * self.capacity, self.name,
                           "the length records")
            self._len_backed = True
        self._producer_registered = True

    def _commit(self, guard: ProducerGuard, nbytes: Optional[int]) -> None:
        buf = guard._buf
        if nbytes is None:
            nbytes = len(buf)
        elif isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"{guard!r}: commit(nbytes) must be an int, not "
                            f"{type(nbytes).__name__}")
        elif not 0 <= nbytes <= len(buf):
            raise ValueError(f"{guard!r}: cannot commit {nbytes} bytes: the slot holds "
                             f"0..{len(buf)}")
        with self._lock:
            if guard._done:
                raise ValueError(f"{guard!r} was already committed or aborted")
            if self._closed:  # nothing published; the guard ends (and its turn)
                text = guard._closed_text("commit()")
                self._abort(guard)
                raise ValueError(text)
            idx = guard.index
            if self._load(_FIN) == _CRASHED:
                guard._finish()
                self._ps.end_turn()
                raise RuntimeError(f"ring {self.name!r} crashed (notify_crash) while "
                                   f"{guard!r} was being written: it is not published")
            guard._finish()  # no writes through this guard after publication
            self._publish(idx, nbytes)
            self._ps.end_turn()
            if not self._fast:
                if self._post(self._h_filled) == -1:
                    self._filled.post()  # raises the OSError with the name
                return
            hq = self._hq
        self._signal(hq, _CSLEEP, _PS)

    def _publish(self, idx: int, nbytes: int) -> None:
        """Length record, then write_idx (release): the slot's bytes and its record are
        visible before the index that publishes them.  Under self._lock."""
        hq = self._hq
        if self._has_len:
            k = _LEN + 2 * (idx % self.capacity)
            hq[k + 1] = nbytes
            hq[k] = idx + 1
        self._store(_W, idx + 1)
        hq[_PS] += 1  # statistics: plain stores of the producer's own words
        hq[_PS + STAT_BYTES] += nbytes
        if not self._fast:
            hq[_PS + STAT_WAKEUPS] += 1  # the filled post that follows

    def _abort(self, guard: ProducerGuard) -> None:
        with self._lock:
            if guard._done:
                return
            guard._finish()
            ps = self._ps
            mine = ps.pg_ref is not None and ps.pg_ref() in (guard, None)
            if mine:
                ps.end_turn()
            if self._fast:
                return  # fast mode took no token
            if not self._closed:
                self._post(self._h_empty)
            else:
                self._post_empty_via_open_handle()

    def put(self, data: Buffer, timeout: Optional[float] = None) -> None:
        """Copy ``data`` (any buffer; non-contiguous: in C order) into a slot; commit its length."""
        try:
            src = memoryview(data).cast("B")
        except TypeError:  # not a buffer (refused), or not C-contiguous (copied in C order)
            src = byte_view(data, self.name, "put")
        n = src.nbytes
        if n > self.slot_size:
            raise ValueError(f"ring {self.name!r}: put(): {n} bytes do not fit a slot of "
                             f"{self.slot_size} bytes")
        timeout = check_timeout(timeout, "put", self.name)
        if self._producer_registered and not self._closed:
            hq = self._put_at_once(src, n)
            if hq is not None:
                if self._fast:  # after the lock: a load of the consumer's sleep counter
                    self._signal(hq, _CSLEEP, _PS)
                return
        g = self.acquire(timeout, size=n)
        try:
            g._buf[:n] = src
        except BaseException:
            g.abort()
            raise
        g.commit(n)

    def _put_at_once(self, src: memoryview, n: int) -> Optional[memoryview]:
        """put()'s fast path: a free slot right now whose prefix is already backed: one lock
        section, no guard object (compat: sem_trywait, copy, publish, sem_post; fast mode:
        no token).  The header view once published, or None: anything else - waiting, first
        use of a slot, registration, finished, another producer thread - takes the general
        path."""
        fast, ps = self._fast, self._ps
        with self._lock:
            if (self._closed or ps.busy() or self._load(_FIN)
                    or not (fast or self._trywait(self._h_empty) == 0)):
                return None
            w = self._load(_W)
            slot = w % self.capacity
            v = self._slot_views[slot]
            if not (self._space() and n <= self._backed[slot] and v is not None):
                if not fast:
                    self._post(self._h_empty)  # give the token back: the general path
                return None
            try:
                v[:n] = src
            except BaseException:
                if not fast:
                    self._post(self._h_empty)
                raise
            self._publish(w, n)
            if not fast and self._post(self._h_filled) == -1:
                self._filled.post()
            return self._hq

    def mark_finished(self) -> None:
        """End of stream: the consumer gets ``Finished`` after every committed slot."""
        with self._lock:
            self._check_open()
            self._check_may_end("mark_finished")
            g = self._producer_guard
            if g is not None:
                raise RuntimeError(f"ring {self.name!r}: commit or abort {g!r} before "
                                   "mark_finished()")
            # Compare-exchange, not load-then-store: a notify_crash (a signal handler, no lock)
            # between the two would be erased.
            fin = self._cas(self._a_fin, 0, _FINISHED)
            if fin:
                raise RuntimeError(f"ring {self.name!r} is already "
                                   f"{'finished' if fin == _FINISHED else 'crashed'}")
            if self._fast:
                self._wake(_CSLEEP, True, _PS)  # after a compare-exchange: fenced
            else:
                self._filled.post()

    def notify_crash(self, signal: int, addr: int = 0, operation: int = 0,
                     message: str = "") -> None:
        """Report a crash to the consumer: loads, stores, a compare-exchange, ``sem_post``,
        no ring lock, so a signal handler may call it.  ``message`` (ctshm consumers only):
        at most 1020 UTF-8 bytes.  Recorded at the current ``write_idx``: every message
        committed before is delivered, none after (an outstanding guard never is, even with
        its ``commit()`` interrupted by the handler).  A stream that already ended stays
        ended: the first end wins, so every consumer thread sees the same end."""
        if not (is_int(signal) and -(1 << 31) <= signal < (1 << 31) and is_int(addr)
                and 0 <= addr < (1 << 64) and is_int(operation)
                and -(1 << 31) <= operation < (1 << 31)):
            raise ValueError(f"ring {self.name!r}: notify_crash({signal!r}, {addr!r}, "
                             f"{operation!r}): signal and operation must be 32-bit ints and "
                             "addr an unsigned 64-bit int")
        if not isinstance(message, str):
            raise TypeError(f"ring {self.name!r}: notify_crash(message=) must be a str, not "
                            f"{type(message).__name__} (decode bytes first)")
        objs = self._objs
        if self._closed or objs is None or not objs.inflight.enter():
            return
        try:
            self._check_may_end("notify_crash")
            if self._load(_FIN):
                return  # already finished or crashed: the first end wins
            raw = message.encode("utf-8", "replace")[:MSG_MAX] if message else b""
            self._record_crash(signal, addr, operation, raw, 0)
        finally:
            objs.inflight.leave()

    def _check_may_end(self, what: str) -> None:
        """Only the producer ends the stream: refuse while another live process (a forked
        child's parent, say) is the registered producer.  Header loads only (no lock)."""
        other = _peers.live_other(self._load, _PRODUCER_PID)
        if other:
            raise RuntimeError(
                f"ring {self.name!r}: {what}() refused: the registered producer is pid "
                f"{other}, alive, and this is pid {os.getpid()} (a forked child?); nothing "
                "shared was changed. Only the producer process ends its stream")

    # -- consumer ------------------------------------------------------------------------------
    def access(self, timeout: Optional[float] = None) -> AccessResult:
        """Wait up to ``timeout`` seconds (``None``: without bound) for the next slot.

        Returns ``Data(guard)``, ``Finished()``, ``Crashed(details, pid)`` or ``Timeout()``.
        Keep the guard while you read ``guard.buf``: releasing or dropping it hands the slot
        back and invalidates the view.
        """
        if self._closed:
            self._check_open()
        if "_ctshm_aio_consumer" in self.__dict__:  # async calls may have kept a message
            kept = take_pending(self)
            if kept is not None:
                return kept
        if not self._consumer_registered:
            self._register_consumer()
        timeout = check_timeout(timeout, "access", self.name)
        with self._lock:
            self._check_open()
            if self._fast or self._trywait(self._h_filled) == 0:
                r = self._claim()
                if r is not None:
                    return r
        self._enter("access")
        try:
            return self._wait_data(timeout)
        finally:
            self._leave()

    def _wait_data(self, timeout: Optional[float]) -> AccessResult:
        """Wait for a slot (compat: take a ``filled`` token) and claim it (see _wait)."""
        r = self._wait(self._filled, self._data_ready, self._take_data, self._data_idle,
                       timeout, "access")
        return self._on_timeout() if r is None else r

    def _data_ready(self) -> bool:  # memoryview loads only: no foreign call while spinning
        ld = self._load
        return bool(ld(_W) != ld(_RES) or ld(_FIN))

    def _take_data(self) -> Optional[AccessResult]:
        with self._lock:
            return None if self._closed else self._claim()

    def _data_idle(self) -> Optional[AccessResult]:
        self._check_producer_alive()
        # Self-healing: a consumer that died between taking a token and reserving its slot
        # lost that token.  Work that is visible in the header is claimed without a token; a
        # token left over later finds nothing and is dropped by _claim().
        if self._load(_RES) < self._load(_W) or self._load(_FIN):
            return self._take_data()
        return None

    def _claim(self) -> Optional[AccessResult]:
        """Under the lock, holding one ``filled`` token (fast mode: none): reserve a slot, or
        report the end.  The reservation is a plain store: only this consumer process
        writes reserved_idx, and its threads hold the lock here."""
        ld, st = self._load, self._store
        while True:
            # `finished` first: the producer sets it after its last commit, so having seen it
            # we also see every write_idx it published (loaded after).  The other order lets
            # a commit + finish slip between the loads: Finished with a message unread.
            fin = ld(_FIN)
            res, w = ld(_RES), ld(_W)
            # ... and `finished` again: if it changed meanwhile, write_idx may include a
            # commit published after a crash flag that this thread did not see.  With the
            # same value before and after, a write_idx read while running was published
            # before any crash, and one read after a crash is capped below.
            if ld(_FIN) != fin:
                continue
            if fin == _CRASHED:
                w = self._crash_limit(w)
            if res < w:
                if w - res > self.capacity and self._indices_corrupt():
                    raise CorruptRingError(
                        f"ring {self.name!r} header is corrupt: write_idx={w} is more than "
                        f"capacity={self.capacity} ahead of reserved_idx={res}")
                st(_RES, res + 1)
                return self._data(res)
            if fin:
                self._wake_consumers()  # every consumer thread sees the end
                return self._crashed() if fin == _CRASHED else _FINISHED_RESULT
            # A token with nothing behind it (only after a hostile or corrupt peer): drop it.
            return None

    def _crash_limit(self, w: int) -> int:
        """After a crash, messages from the recorded write_idx on do not exist."""
        cw = self._load(_CRASH_W)
        return min(w, cw - 1) if cw else w

    def _data(self, idx: int) -> Data:
        # Under self._lock (the consumer's statistics words are written under it).
        slot = idx % self.capacity
        v = self._ro_views[slot]
        if v is None:
            v = self._ro_views[slot] = self._ro_view(slot)
        hq = self._hq
        hq[_CS] += 1  # statistics: messages and bytes (plain stores of the consumer's words)
        if self._has_len:
            k = _LEN + 2 * slot
            if hq[k] == idx + 1:
                n = hq[k + 1]
                if n > self.slot_size:
                    hq[_CS] -= 1
                    self._complete(idx, None)
                    raise CorruptRingError(
                        f"ring {self.name!r}: length record of message {idx} says {n} bytes, "
                        f"more than the slot ({self.slot_size}); the message was skipped")
                hq[_CS + STAT_BYTES] += n
                return Data(ConsumerGuard(self, idx, v[:n]))
        hq[_CS + STAT_BYTES] += len(v)
        return Data(ConsumerGuard(self, idx, v[:]))

    def _on_timeout(self) -> AccessResult:
        self._check_producer_alive()
        fin = self._load(_FIN)  # first: see _claim
        if fin:
            res, w = self._load(_RES), self._load(_W)
            if fin == _CRASHED:
                w = self._crash_limit(w)
            if res >= w:
                return self._crashed() if fin == _CRASHED else _FINISHED_RESULT
        return Timeout()

    def _check_producer_alive(self) -> None:
        """If the registered producer died without notify_crash, record a crash (signal 0)."""
        if self._load(_FIN):
            return
        ppid = _peers.dead(self._load, _PRODUCER_PID)
        if not ppid:
            return
        # Dead for sure, so it writes nothing more.  Load `finished` again: a producer that
        # called notify_crash (or mark_finished) just before dying keeps its own account.
        if self._load(_FIN):
            return
        with self._lock:  # its wake-ups post under the lock (see _waiting._withdraw)
            self._record_crash(0, 0, 0, _peers.death_note(self._load, _PRODUCER_PID, ppid), ppid)

    def _record_crash(self, signal: int, addr: int, operation: int, message: bytes,
                      dead_pid: int) -> None:
        """The one crash-record writer (notify_crash, or a consumer that found the producer
        dead): at the current write_idx, details and message first, a fence, then the flag
        by compare-exchange (the first end wins) and a ``filled`` post."""
        self._store(_CRASH_W, self._load(_W) + 1)
        if dead_pid:
            self._store(_DEAD_PID, dead_pid)
        hv = self._hv
        if message or not dead_pid:  # a dead producer's own note stays (ctshm._exitnote)
            hv[MSG_OFF + 4:MSG_OFF + 4 + len(message)] = message
            MSG_LEN.pack_into(hv, MSG_OFF, len(message))
        _CRASH.pack_into(hv, _CRASH_OFF, signal, addr & 0xFFFFFFFFFFFFFFFF, operation)
        self._fence()  # details before the flag
        if self._cas(self._a_fin, 0, _CRASHED) == 0:
            if self._fast:  # the compare-exchange fenced the flag before this load
                self._wake(_CSLEEP, True, _CS if dead_pid else _PS)
            else:
                self._filled.post()

    def _register_consumer(self) -> None:
        with self._lock:
            self._check_open()
            if self._consumer_registered:
                return
            r, res = self._load(_R), self._load(_RES)
            if _peers.register(self._load, self._store, _CONSUMER_PID, self.name, "consumer"):
                # The previous consumer died: slots it reserved but never released go back
                # to the queue (at-least-once delivery across a consumer restart).
                if not r <= res <= r + self.capacity:
                    raise CorruptRingError(
                        f"ring {self.name!r} header is corrupt: reserved_idx={res} "
                        f"read_idx={r} capacity={self.capacity}")
                if res > r:
                    self._store(_RES, r)
                    if not self._fast:  # fast mode: the indices are the truth
                        for _ in range(res - r):
                            self._filled.post()
                if self._fast:
                    self._forget_sleepers()
            self._consumer_registered = True

    def _complete(self, idx: int, guard: Optional[ConsumerGuard]) -> None:
        """A guard was released: advance read_idx over every in-order completion (the reorder
        buffer: a min-heap of released indices, under the lock, so any thread may release).
        Compat: one ``empty`` post per slot freed; fast: one wake-up, if the producer
        sleeps."""
        with self._lock:
            if guard is not None:
                if guard._done:  # another thread released it first
                    return
                guard._finish()
            if self._closed:
                return
            pending = self._pending
            cur = self._load(_R)
            if idx == cur and not pending:  # the common in-order case
                self._store(_R, cur + 1)
                freed = 1
            else:
                heapq.heappush(pending, idx)
                freed = 0
                while pending and pending[0] == cur:
                    heapq.heappop(pending)
                    cur += 1
                    freed += 1
                    self._store(_R, cur)
            if not self._fast:
                self._hq[_CS + STAT_WAKEUPS] += freed
                for _ in range(freed):
                    if self._post(self._h_empty) == -1:
                        self._empty.post()
                return
            hq = self._hq
        if freed:
            self._signal(hq, _PSLEEP, _CS)
