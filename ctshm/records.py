"""Many small variable-length records packed into one ring slot.

A ring slot is 2 MiB or more; sending one 64-byte message per slot pays the whole per-slot
protocol (two semaphore operations and the header updates on each side) for 64 bytes.
:class:`RecordWriter` packs many records into the slot it holds and publishes the slot when
it is full, when ``max_bytes`` is reached, when the linger bound says so (below), on
:meth:`RecordWriter.flush` or on :meth:`RecordWriter.close`; :class:`RecordReader` hands
the records back, in order, as zero-copy read-only memoryviews.

The slot framing is drawn in :mod:`ctshm._record_framing`, beside its parser; the ring
neither knows nor checks it (a reader raises :class:`~ctshm.ring.CorruptRingError`).

Lifetimes: a record view points into the slot.  It stays valid until the reader moves past
the slot's last record (the slot is then released and the producer may overwrite it); after
that the view is *released* (``ValueError`` on use) unless you exported it further
(``memoryview(rec)``, NumPy...), in which case it silently sees new data.  Copy with
``bytes(rec)`` to keep a record.  ``reserve(n)`` returns a writable view of the record's
payload that must be filled before the slot is published (the next ``flush()``, ``close()``
or an ``append``/``reserve`` that does not fit).

Linger (``RecordWriter(linger=...)``, default :data:`DEFAULT_LINGER` = 100 µs): a record
never waits in the writer for a full slot.  The exact rule, applied by every ``append`` after
the record is written (and by ``reserve`` to the records before its own):

1. publish the slot **at once when the ring is empty**, i.e. ``write_idx == read_idx``
   in the shared header (the consumer has released every published slot, so it waits or is
   about to; two memoryview loads, no foreign call) -- **unless the writer streams**: the
   first records of this slot and the 3 before all arrived less than ``STREAM_TEST`` (2)
   slot costs after a publication (a reply after a round trip rarely does, four in a row
   almost never; a slot's cost: its publication and its ``acquire`` up to twice that,
   timed, an outlier raising the estimate by a quarter at most).  Then the slot is held
   until ``STREAM_HOLD`` (16) slot costs after that publication, at most ``linger``
   (docs/messages.md: why; a request of more parts: ``flush()`` it, or ``linger=0``);
2. otherwise, if this is the slot's first record, its deadline is ``clock() + linger``
   (``linger=0``: publish at once);
3. otherwise publish when ``clock() >= deadline`` (one ``time.perf_counter()`` compare);
4. when no further call comes, the writer's **flusher thread** publishes the slot at its
   deadline: started at the first deadline, asleep on a ``threading.Condition`` (woken only
   when a deadline appears while it has none), sharing the writer's lock, gone after
   ``close()``/``abort()`` or with the writer.  A publication it fails (the ring crashed or
   was closed) is raised by the writer's next call.

So a record is published at most ``linger`` after it was appended, except: a slot with an
unfilled ``reserve()`` view waits for the writer's next call; and while the producing thread
runs Python code without calling the writer, the flusher needs the GIL, which CPython hands
over within ``sys.getswitchinterval()`` (5 ms).  ``linger=None`` publishes only full
slots, on ``flush()`` and on ``close()`` (no lock, no thread, the fastest for bulk streams).

Example::

    with RecordWriter(ring) as w:          # producer process
        for msg in messages:
            w.append(msg)                  # close() flushes and calls ring.mark_finished()

    for rec in RecordReader(ring):         # consumer process: ends at Finished
        handle(rec)                        # rec: read-only memoryview, valid until next slot
"""

from __future__ import annotations

import struct
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from typing import Any, Callable, Final, Optional, cast

from . import _linger
from ._checks import byte_view, check_linger, is_int
from ._linger import STREAM_AFTER
from ._record_framing import RECORD_HEADER, SLOT_HEADER, pack_pair as _pack_pair
from ._record_reader import RecordReader
from .layout import READ_IDX, WRITE_IDX
from .ring import (
    ProducerGuard,
    ShmTraceRing,
)

__all__ = ["DEFAULT_LINGER", "RECORD_HEADER", "SLOT_HEADER", "RecordReader", "RecordWriter",
           "max_record_size"]

#: Default linger bound of :class:`RecordWriter` (seconds): a record is published at most this
#: long after it was appended.
DEFAULT_LINGER: Final = 100e-6

#: Small records are written with one ``Struct("<II{n}s").pack_into`` (header and payload in
#: one C call: half the cost of a header pack plus a slice assignment); one Struct per size,
#: for sizes up to _STRUCT_MAX, at most _STRUCT_CACHE of them.
_STRUCT_MAX: Final = 1024
_STRUCT_CACHE: Final = 512
#: The fast path packs bytearrays too, except on PyPy, whose struct "s" takes only bytes.
_STRUCT_TYPES: Final = (bytes,) if sys.implementation.name == "pypy" else (bytes, bytearray)
_record_structs: dict[int, Any] = {}


def _record_struct(n: int) -> Any:
    st = struct.Struct(f"<II{n}s") if n <= _STRUCT_MAX else None
    if len(_record_structs) < _STRUCT_CACHE:
        _record_structs[n] = st
    return st


def max_record_size(slot_size: int) -> int:
    """Largest record payload a slot of ``slot_size`` bytes can hold."""
    return (slot_size - SLOT_HEADER - RECORD_HEADER) & ~7


def _framed(n: int) -> int:
    return RECORD_HEADER + ((n + 7) & ~7)


class RecordWriter:
    """Producer side: ``append(data)`` / ``reserve(n)`` records, published slot by slot.

    ``max_bytes`` (default: the whole slot) publishes a slot as soon as the next record would
    take it past that many bytes; a smaller value lowers the memory touched per slot (only
    that prefix of each slot is reserved and written), at the price of more slots per record.
    For streams of small records ``max_bytes=64 * 1024`` is usually fastest: a batch stays in
    the CPU caches and the consumer starts sooner.  A record larger than ``max_bytes`` (but
    not than the slot) goes alone into its own slot.  ``timeout`` bounds each wait for a free
    slot (``TimeoutError``; default: wait without bound).

    ``linger`` (seconds, default :data:`DEFAULT_LINGER` = 100 µs) bounds how long a record
    waits in the writer (the rule is in the module docstring, "Linger"): the slot is also
    published when the ring is empty (the consumer has released everything and would wait)
    unless the writer streams (then it is held a little, to batch), and, when no further call
    comes, by a background flusher thread.  ``linger=0`` publishes
    every record at once; ``linger=None`` turns the bound off (records wait for a full slot,
    ``flush()`` or ``close()``; no thread, no lock).  ``clock`` (default
    ``time.perf_counter``) is the monotonic clock the bound is measured with (tests inject a
    fake one).  ``what`` is the call that ``append``'s errors name (a channel's ``send``).

    The writer acquires a slot lazily (at the first record after a flush) and holds at most
    one.  As a context manager it calls ``close()`` on success (flush + ``mark_finished``)
    and ``abort()`` on an exception (unpublished records are dropped, the ring is not
    finished).  With a linger bound the writer's methods and its flusher share one lock, so
    the writer may be used from several threads (one call at a time; a call waiting for a
    free slot holds it); with ``linger=None`` it is not thread-safe (one thread at a time).
    """

    __slots__ = ("__weakref__", "_arrived", "_buf", "_clock", "_closed", "_cond", "_cost",
                 "_count", "_deadline", "_early", "_failure", "_flusher", "_guard", "_hold_end",
                 "_hq", "_idle", "_limit", "_linger", "_lock", "_max", "_pos", "_quick",
                 "_reserving", "_ring", "_slot", "_took", "_what", "records_written",
                 "slots_written", "timeout")

    def __init__(self, ring: ShmTraceRing, *, max_bytes: Optional[int] = None,
                 timeout: Optional[float] = None,
                 linger: Optional[float] = DEFAULT_LINGER,
                 clock: Optional[Callable[[], float]] = None,
                 what: str = "RecordWriter.append") -> None:
        slot = ring.slot_size
        if max_bytes is None:
            max_bytes = slot
        elif not is_int(max_bytes):
            raise TypeError(f"RecordWriter({ring.name!r}): max_bytes must be an int, not "
                            f"{type(max_bytes).__name__}")
        elif max_bytes < SLOT_HEADER + RECORD_HEADER:
            raise ValueError(f"RecordWriter({ring.name!r}): max_bytes must be >= "
                             f"{SLOT_HEADER + RECORD_HEADER}, not {max_bytes}")
        linger = check_linger(linger, f"RecordWriter({ring.name!r})")
        if clock is not None and not callable(clock):
            raise TypeError(f"RecordWriter({ring.name!r}): clock must be a callable returning "
                            f"seconds, not {type(clock).__name__}")
        self._ring = ring
        self._slot = slot
        self._max = min(max_bytes, slot) & ~7
        self.timeout = timeout
        self._guard: Optional[ProducerGuard] = None
        self._buf: Any = None
        self._pos = SLOT_HEADER
        self._count = 0
        self._limit = 0  # 0 while no slot is held: every append takes the slow path
        self._closed = False
        self.records_written = 0  # records published so far
        self.slots_written = 0  # slots published so far
        # Linger bound (None: off).  _cond is the lock the methods and the flusher share.
        self._linger: Optional[float] = linger
        self._clock: Callable[[], float] = time.perf_counter if clock is None else clock
        # Reentrant: a dropped writer's finalizer (which notifies) may run in the flusher
        # thread while it holds the lock.
        self._lock: Optional[threading.RLock] = None if linger is None else threading.RLock()
        self._cond: Optional[threading.Condition] = (
            None if self._lock is None else threading.Condition(self._lock))
        self._deadline = 0.0  # when the oldest pending record must be published
        # Rule 1's streaming test (module docstring, "Linger"): _arrived is when the current
        # slot's first record came, _took the last slot's cost.  After a publication, _early
        # ends the streaming test and _hold_end the hold; while a slot is held, _early is its
        # deadline (so deadline >= early always).
        self._early = self._hold_end = self._arrived = self._took = self._cost = 0.0
        self._quick = 0  # quick first records in a row (rule 1: STREAM_AFTER of them stream)
        self._reserving = False  # a reserve() view not yet filled: the flusher waits
        self._flusher: Optional[threading.Thread] = None
        self._idle = False  # the flusher waits without a deadline (needs a notify)
        self._failure: Optional[BaseException] = None  # a publication the flusher failed
        self._hq: Any = ring.header_words() if linger is not None else None
        self._what = what

    # -- writing -------------------------------------------------------------------------------
    def append(self, data: Any) -> None:
        """Copy one record (any bytes-like object) into the current slot."""
        # One body for both modes (no extra Python call on the hot path): with a linger
        # bound the lock is held throughout and the rule runs after the record is written.
        lock = self._lock
        try:
            if lock is not None:
                lock.acquire()  # inside the try, not `with` (ctshm/ring.py, "Locking")
            if lock is not None and (self._failure is not None or self._reserving):
                self._reserving = False
                if self._failure is not None:
                    self._raise_failure()
            t = type(data)
            if t in _STRUCT_TYPES:
                n = len(data)
                st = _record_structs.get(n, 0)
                if st == 0:
                    st = _record_struct(n)
            else:
                try:
                    data = memoryview(data).cast("B")
                except TypeError:  # not a buffer, or not C-contiguous: see byte_view
                    data = byte_view(data, self._ring.name, self._what)
                n = data.nbytes
                st = None
            pos = self._pos
            end = pos + RECORD_HEADER + n
            if end > self._limit:
                self._make_room(n)
                pos = self._pos
                end = pos + RECORD_HEADER + n
            if st is not None:
                st.pack_into(self._buf, pos, n, 0, data)
            else:
                buf = self._buf
                _pack_pair(buf, pos, n, 0)
                buf[pos + RECORD_HEADER:end] = data
            self._pos = (end + 7) & ~7
            self._count += 1
            if lock is not None:
                # The linger rule (module docstring, "Linger"): publish when the deadline
                # has come, or when the ring is empty after the streaming hold.  Since
                # deadline >= early, nothing is due before early: no header load then.
                now = self._clock()
                if self._count == 1:
                    self._first_record(now)
                elif now >= self._early and (now >= self._deadline or self._ring_empty()):
                    self._flush()
        finally:
            if lock is not None:
                try:
                    lock.release()
                except RuntimeError:  # acquire() itself was interrupted
                    pass

    def _ring_empty(self) -> bool:
        """Has the consumer released every published slot (so it waits)?  Two loads."""
        hq = self._hq
        try:
            return bool(hq[WRITE_IDX] == hq[READ_IDX])
        except ValueError:  # the ring's header view is gone: the ring was closed
            len(self._ring)  # raises the ring's own "is closed" error
            raise

    def _first_record(self, now: float) -> None:
        """The linger rule for a slot's first record, appended at ``now`` (under the lock):
        at once if the ring is empty and the writer does not stream (rule 1), else its
        deadline starts (the hold's end: rule 1; or ``now + linger``: rule 2)."""
        if self._ring_empty():
            # Streaming: the first records of this slot and the 3 before came within the test.
            self._quick = self._quick + 1 if self._arrived < self._early else 0
            if self._quick < STREAM_AFTER:
                self._flush()
                return
            # Held until the hold ends (for the empty-ring test too), unless it has ended
            # already (a slow acquire): then at once, the flusher is a GIL hand-off away.
            self._deadline = self._early = self._hold_end
            if now >= self._deadline:
                self._flush()
                return
        else:
            self._deadline = now + cast(float, self._linger)
            if not self._linger:
                self._flush()
                return
        self._wake_flusher()

    def _wake_flusher(self) -> None:
        """A deadline now exists: start the flusher, or wake it when it waits without one
        (under the lock)."""
        cond = self._cond
        assert cond is not None
        if self._flusher is None:
            self._flusher = _linger.start(self, cond, f"ctshm-linger[{self._ring.name}]")
        elif self._idle:
            self._idle = False
            cond.notify()

    def _flusher_step(self) -> Optional[float]:
        """One turn of the flusher (under the lock): publish the slot when it is due; how
        long to wait (None: until notified)."""
        if self._count and not self._reserving:
            delay = self._deadline - self._clock()
            if delay > 0:
                self._idle = False
                return delay
            try:
                self._flush()
            except BaseException as e:  # raised by the writer's next call
                self._failure = e
        self._idle = True
        return None

    def _raise_failure(self) -> None:
        e, self._failure = self._failure, None
        assert e is not None
        raise RuntimeError(f"RecordWriter for {self._ring.name!r}: the linger flusher could "
                           f"not publish a slot ({type(e).__name__}: {e}); its records are "
                           "lost") from e

    def reserve(self, n: int) -> memoryview:
        """Add a record of ``n`` bytes and return a writable view of its payload.

        Fill the view before the slot is published (``flush()``, ``close()``, or the next
        ``append``/``reserve``); do not keep it afterwards.  With a linger bound the slot is
        not published while the view is outstanding: the flusher leaves it alone until the
        writer's next call (which applies the linger rule, counting from the reserve), so
        call ``flush()`` after filling a record that is the last for a while.
        """
        if not is_int(n):
            raise TypeError(f"RecordWriter for {self._ring.name!r}: record size must be an "
                            f"int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"RecordWriter for {self._ring.name!r}: record size must be "
                             f">= 0, not {n}")
        cond = self._cond
        if cond is None:
            return self._reserve(n)
        with cond:
            self._settle()
            if self._count:  # the linger rule for the records before this one
                now = self._clock()
                if now >= self._deadline or (now >= self._early and self._ring_empty()):
                    self._flush()
            view = self._reserve(n)
            if self._count == 1:
                self._deadline = self._clock() + cast(float, self._linger)
                if self._linger:
                    self._wake_flusher()
            # linger=0 included: the view must be filled first, so it waits for the next call
            self._reserving = True
            return view

    def _reserve(self, n: int) -> memoryview:
        pos = self._pos
        end = pos + RECORD_HEADER + n
        if end > self._limit:
            self._make_room(n)
            pos = self._pos
            end = pos + RECORD_HEADER + n
        buf = self._buf
        _pack_pair(buf, pos, n, 0)
        self._pos = (end + 7) & ~7
        self._count += 1
        view: memoryview = buf[pos + RECORD_HEADER:end]
        return view

    def _make_room(self, n: int) -> None:
        """Slow path: no slot held, or the record does not fit under the limit."""
        size = self._room_needed(n)
        if size is not None:
            self._use_slot(self._ring.acquire(self.timeout, size=size))
        # The caller writes the record without checking again, so a record larger than
        # max_bytes (but not than the slot) goes alone into this slot: the next record finds
        # the position beyond the limit and flushes first.
        self._limit = self._max

    async def _amake_room(self, n: int) -> None:
        """_make_room, waiting for a free slot without blocking the event loop (the lock is
        not held while waiting; nothing is pending then, so the flusher has nothing to do)."""
        cond = self._cond
        if cond is None:
            size = self._room_needed(n)
        else:
            with cond:
                size = self._room_needed(n)
        if size is not None:
            from .aio import aacquire

            g = await aacquire(self._ring, self.timeout, size=size)
            if cond is None:
                self._use_slot(g)
            else:
                with cond:
                    if self._guard is not None:  # another thread took a slot meanwhile
                        g.abort()
                        return
                    self._use_slot(g)
        self._limit = self._max

    def _room_needed(self, n: int) -> Optional[int]:
        """Check the record fits a slot, publish a full slot; the size to acquire, or None
        while a slot is held."""
        if self._closed:
            raise ValueError(f"RecordWriter for {self._ring.name!r} is closed")
        need = SLOT_HEADER + RECORD_HEADER + n
        if need > self._slot:
            raise ValueError(
                f"a record of {n} bytes does not fit a slot of {self._slot} bytes of ring "
                f"{self._ring.name!r} (at most {max_record_size(self._slot)} bytes per record: "
                "the slot also holds an 8-byte slot header and an 8-byte record header); "
                "send it with ring.acquire()/commit() in a ring with larger slots")
        if self._count:
            self._flush()  # publishes the records so far; the new one starts a fresh slot
        if self._guard is None:
            if self._lock is not None:  # when the next slot's first record came (rule 1)
                self._arrived = self._clock()
            # Ask only for the bytes we may use: the ring reserves backing store for that
            # prefix of the slot (and guard.buf is that long), not for the whole slot.
            return max(self._max, SLOT_HEADER + _framed(n))
        return None

    def _use_slot(self, g: ProducerGuard) -> None:
        if self._lock is not None:  # the slot's cost, part 1 (rule 1): its acquire
            self._took = self._clock() - self._arrived  # (capped in _flush)
        self._guard = g
        self._buf = g.buf
        self._pos = SLOT_HEADER
        self._count = 0

    # -- asyncio (waits for a free slot off the event loop: see ctshm.aio) ------------------
    async def aappend(self, data: Any) -> None:
        """:meth:`append` for asyncio: waits for a free slot without blocking the loop.
        A cancelled call adds nothing (records appended before stay pending)."""
        t = type(data)
        n = len(data) if t is bytes or t is bytearray else memoryview(data).nbytes
        if self._pos + RECORD_HEADER + n > self._limit:
            await self._amake_room(n)
        self.append(data)

    async def areserve(self, n: int) -> memoryview:
        """:meth:`reserve` for asyncio."""
        if not isinstance(n, bool) and isinstance(n, int) and n >= 0 \
                and self._pos + RECORD_HEADER + n > self._limit:
            await self._amake_room(n)
        return self.reserve(n)

    async def aflush(self) -> None:
        """:meth:`flush` (publishing never waits); for symmetry in async code."""
        self.flush()

    async def aclose(self, finish: bool = True) -> None:
        """:meth:`close` (never waits); for symmetry in async code."""
        self.close(finish)

    async def __aenter__(self) -> RecordWriter:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def flush(self) -> None:
        """Publish the current slot now (nothing happens when it holds no record)."""
        with self._cond or _UNLOCKED:
            self._settle()
            self._flush()

    def _settle(self) -> None:
        """A writer call (under the lock, if any): a reserve() view counts as filled now, and
        a publication the flusher failed is raised."""
        self._reserving = False
        if self._failure is not None:
            self._raise_failure()

    def _flush(self) -> None:
        count = self._count
        if not count:
            return
        _pack_pair(self._buf, 0, count, 0)
        nbytes, g = self._pos, self._guard
        assert g is not None
        timed = self._lock is not None  # the streaming test's clock (rule 1)
        start = self._clock() if timed else 0.0
        # Forget the slot (no call until the commit's), then publish it: a signal handler's
        # exception at the commit's start would drop the accepted records, so a commit that
        # did not happen is made again before the exception goes on.
        self._guard = self._buf = None
        self._limit, self._pos, self._count = 0, SLOT_HEADER, 0
        try:
            g.commit(nbytes)
        except BaseException:
            try:
                g.commit(nbytes)
            except Exception:  # it was committed, or cannot be: the first error says why
                pass
            raise
        if timed:
            _linger.published(self, start, self._clock())
        self.records_written += count
        self.slots_written += 1

    @property
    def pending(self) -> int:
        """Records written into the current slot but not yet published."""
        return self._count

    @property
    def linger(self) -> Optional[float]:
        """The linger bound in seconds (None: off)."""
        return self._linger

    @property
    def flusher(self) -> Optional[threading.Thread]:
        """The background flusher thread, once started (None before; stopped after close)."""
        return self._flusher

    # -- ending --------------------------------------------------------------------------------
    def close(self, finish: bool = True) -> None:
        """Flush, give back an unused slot, stop the flusher thread, and (``finish=True``)
        ``mark_finished()`` the ring so the reader ends.  Idempotent."""
        if self._closed:
            return
        cond = self._cond
        with cond or _UNLOCKED:
            if self._closed:  # by another thread meanwhile
                return
            try:
                self._settle()
                try:
                    self._flush()
                finally:
                    self._release_slot()
            finally:
                self._closed = True
                if cond is not None:
                    cond.notify_all()
        self._join_flusher()
        if finish:
            self._ring.mark_finished()

    def abort(self) -> None:
        """Drop the unpublished records and give the slot back; the writer is closed."""
        cond = self._cond
        with cond or _UNLOCKED:
            self._count = 0
            self._closed = True
            self._release_slot()
            if cond is not None:
                cond.notify_all()
        self._join_flusher()

    def _join_flusher(self) -> None:
        t = self._flusher
        if t is not None and t is not threading.current_thread():
            t.join(10.0)

    def _release_slot(self) -> None:
        g = self._drop_slot()
        if g is not None:
            g.abort()

    def _drop_slot(self) -> Optional[ProducerGuard]:
        """Forget the current slot (the caller commits or aborts the guard returned)."""
        g, self._guard = self._guard, None
        self._buf = None
        self._limit = 0
        self._pos = SLOT_HEADER
        self._count = 0
        return g

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # Dropped without close(): its pending records are lost (its guard's finalizer gives
        # the slot back).  Reported, not published: in a garbage cycle the slot's mapping may
        # be gone before this runs, so nothing here may write into it.
        try:
            if not self._closed and self._count:
                warnings.warn(f"RecordWriter for ring {self._ring.name!r} was dropped with "
                              f"{self._count} record(s) not published: they are lost; call "
                              "close() (or flush()) before dropping a writer", RuntimeWarning,
                              stacklevel=2)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._count} pending"
        return (f"<RecordWriter {self._ring.name!r} {state} records={self.records_written} "
                f"slots={self.slots_written} linger={self._linger}>")


#: The lock of a writer without a linger bound (no flusher thread: nothing to exclude).
_UNLOCKED: Final = nullcontext()
