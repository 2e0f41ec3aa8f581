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
  ``ProducerGuard`` per ring handle; a second ``acquire`` raises ``RuntimeError``.
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
  dead.  A consumer that registers after a dead one rewinds ``reserved_idx`` to ``read_idx``
  and re-posts the tokens: slots the dead consumer had reserved but not released are
  delivered again (at-least-once across a consumer restart).
* Openers never create: ``open()`` waits (bounded) until the creator has finished
  initializing; a stale owner never unlinks a successor's objects.
"""

from __future__ import annotations

import heapq
import os
import sys
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Final, Iterator, Literal, Optional, Union, overload

from . import _peers, _proc, _shm, atomics, libc
from ._ringobjects import RingObjects, reserve_range
from .layout import (
    CAPACITY as _CAP,
)
from .layout import (
    CONSUMER_PID as _CONSUMER_PID,
)
from .layout import (
    CRASH as _CRASH,
)
from .layout import (
    CRASH_OFF as _CRASH_OFF,
)
from .layout import (
    CRASH_W as _CRASH_W,
)
from .layout import (
    CREATOR_PID as _CREATOR_PID,
)
from .layout import (
    DEAD_PID as _DEAD_PID,
)
from .layout import (
    EXT_MAGIC as _MAGIC,
)
from .layout import (
    EXT_STATE as _STATE,
)
from .layout import (
    FIN_CRASHED as _CRASHED,
)
from .layout import (
    FIN_FINISHED as _FINISHED,
)
from .layout import (
    FINISHED as _FIN,
)
from .layout import (
    HEADER_SIZE,
    LEN_OFF,
    MAGIC,
    MAX_LEN_RECORDS,
    MSG_LEN,
    MSG_MAX,
    MSG_OFF,
    STATE_READY,
    aligned_slot_size,
)
from .layout import (
    LEN_WORD as _LEN,
)
from .layout import (
    PRODUCER_PID as _PRODUCER_PID,
)
from .layout import (
    READ_IDX as _R,
)
from .layout import (
    RESERVED_IDX as _RES,
)
from .layout import (
    SLOT_SIZE as _SLOT,
)
from .layout import (
    WRITE_IDX as _W,
)
from .results import (
    FINISHED_RESULT as _FINISHED_RESULT,
)
from .results import (
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
from .semaphore import NamedSemaphore

#: What ``put()`` copies from: any object with the buffer protocol (bytes, bytearray,
#: memoryview, array.array, NumPy arrays, ...); typed by the common ones.
Buffer = Union[bytes, bytearray, memoryview]

__all__ = [
    "ConsumerGone",
    "ConsumerGuard",
    "CorruptRingError",
    "CrashDetails",
    "Crashed",
    "Data",
    "Finished",
    "ProducerCrashed",
    "ProducerGuard",
    "RingFinished",
    "ShmTraceRing",
    "Timeout",
]

#: Longest a blocked wait goes without checking that the peer is alive.
LIVENESS_SLICE: Final = 0.2
#: Busy-wait before sleeping on a semaphore (seconds): where an adaptive spin starts, and its
#: bounds.  Waking a sleeping peer costs the poster 15-70 µs here (futex wake + reschedule),
#: far more than a message, so a wait that usually ends within a millisecond is better spun;
#: a wait that usually lasts longer (idle peer, oversubscribed CPU) shrinks the spin to the
#: floor, bounding the CPU a blocked call can burn.
DEFAULT_SPIN: Final = 50e-6
SPIN_FLOOR: Final = 20e-6
SPIN_CEILING: Final = 1e-3

_MAX_SIZE: Final = (1 << 63) - 1
_PAGE: Final = libc.page_size()


_PID = os.getpid()




class _Spin:
    """A spin budget.  Fixed when the user gave one; else adaptive: after each wait that did
    not end on the first try, the budget becomes twice the time that wait took (so the next
    similar wait ends while spinning), within [SPIN_FLOOR, SPIN_CEILING]; a wait longer than
    the ceiling halves it."""

    __slots__ = ("adaptive", "budget")

    def __init__(self, spin: Optional[float]) -> None:
        if spin is None:
            self.budget, self.adaptive = DEFAULT_SPIN, True
        else:
            if isinstance(spin, bool) or not isinstance(spin, (int, float)) or not spin >= 0:
                raise ValueError(f"spin must be >= 0 seconds or None (adaptive), not {spin!r}")
            self.budget, self.adaptive = float(spin), False

    def record(self, waited: float) -> None:
        if not self.adaptive:
            return
        if waited <= SPIN_CEILING:
            self.budget = min(SPIN_CEILING, max(SPIN_FLOOR, 2 * waited))
        else:
            self.budget = max(SPIN_FLOOR, self.budget / 2)



# ---------------------------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------------------------


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
        self._done = False
        self._pid = _PID

    def _view(self) -> memoryview:
        if self._done:
            raise ValueError(f"{type(self).__name__} for message {self.index} of "
                             f"{self._ring.name!r} {self._DONE_TEXT}")
        return self._buf

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
        return self._view()

    def __len__(self) -> int:
        return self.size

    def commit(self, nbytes: Optional[int] = None) -> None:
        """Publish the first ``nbytes`` bytes of the view (default: all of it)."""
        self._check_here("commit")
        self._view()  # raises if already committed or aborted
        self._ring._commit(self, nbytes)

    def abort(self) -> None:
        """Give the slot back unpublished.  Idempotent after commit/abort."""
        self._check_here("abort")
        if not self._done:
            self._ring._abort(self)

    def __enter__(self) -> ProducerGuard:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()

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
            self._check_here("release")
            self._ring._complete(self.index, self)

    def __enter__(self) -> ConsumerGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            if not self._done and self._pid == _PID:
                if _getrefcount is not None and _getrefcount(self._buf) > 2:
                    # Somebody still holds the view (``x = ring.access().guard.buf``): it is
                    # about to be released with the slot.  Say so before the bare
                    # "released memoryview" error they will meet.
                    warnings.warn(
                        f"ConsumerGuard for message {self.index} of {self._ring.name!r} was "
                        "dropped while its buf was still in use: the slot is released and "
                        "the view stops working now. Keep the guard while reading (`with "
                        "ring.access(t).guard as g:` or `g = result.guard`), or copy with "
                        "ring.get()", RuntimeWarning, stacklevel=2)
                self._ring._complete(self.index, self)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "released" if self._done else f"{len(self._buf)} bytes"
        return f"<ConsumerGuard {self._ring.name!r} message={self.index} {state}>"


_getrefcount: Optional[Callable[[Any], int]] = getattr(sys, "getrefcount", None)
_EMPTY: Final = memoryview(b"")


# ---------------------------------------------------------------------------------------------
# The ring
# ---------------------------------------------------------------------------------------------


class _Shared:
    """This process's bookkeeping for one ring, shared by all its handles here.

    Several handles of one ring in one process (opened twice, or a creator that also opens)
    must not keep separate reorder buffers - guards released through different handles would
    then never line up and read_idx would stall - nor separate producer slots - two handles
    would hand out the same slot.  Keyed by the shm object's (st_dev, st_ino).

    The lock is re-entrant: a guard's finalizer may run (garbage collection) in a thread that
    is already inside a ring method.  ``turn`` is the producer's turn: one producer slot is
    outstanding at a time (message order), and producer threads of this process wait for it
    in turn.  The outstanding guard is held weakly: dropping it aborts it (its ``__del__``).
    """

    __slots__ = ("__weakref__", "acquiring", "lock", "pending", "pg_ref", "turn", "turn_owner")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.turn = threading.Condition(self.lock)
        self.pending: list[int] = []
        self.pg_ref: Optional[weakref.ref[ProducerGuard]] = None
        self.acquiring = False
        self.turn_owner = 0  # thread ident of the producer thread that holds the turn

    def producer_guard(self) -> Optional[ProducerGuard]:
        r = self.pg_ref
        g = r() if r is not None else None
        return g if g is not None and not g._done else None

    def busy(self) -> bool:
        """Is the producer turn taken (a guard outstanding, or a thread waiting for space)?"""
        return self.acquiring or self.producer_guard() is not None

    def end_turn(self) -> None:
        """Under ``lock``: the outstanding guard (or acquire) is over; wake one producer."""
        self.pg_ref = None
        self.acquiring = False
        self.turn_owner = 0
        self.turn.notify()


_SHARED: weakref.WeakValueDictionary[tuple[int, int], _Shared] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()
_RINGS: weakref.WeakSet[ShmTraceRing] = weakref.WeakSet()


def _shared_for(identity: tuple[int, int]) -> _Shared:
    with _SHARED_LOCK:
        st = _SHARED.get(identity)
        if st is None:
            st = _SHARED[identity] = _Shared()
        return st


def _after_fork_in_child() -> None:
    """A forked child is not the parent's producer or consumer: its handles must register
    anew (refused while the parent lives), and locks held by the parent's other threads
    would never be released here."""
    global _PID, _SHARED_LOCK
    _PID = os.getpid()
    _SHARED_LOCK = threading.Lock()
    for st in list(_SHARED.values()):
        st.__init__()  # type: ignore[misc]
    for ring in list(_RINGS):
        ring._lock = ring._ps.lock
        ring._producer_registered = False
        ring._consumer_registered = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_MAKE: Final = object()  # create() / open() build rings; ShmTraceRing() alone refuses


class ShmTraceRing:
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

    # Shared-word access, bound per handle by _bind_word_access (instance attributes, so a
    # test can shadow one to replay an interleaving).
    _load: Callable[[int], int]
    _store: Callable[[int, int], None]

    # Class-level defaults so a half-built object closes cleanly.
    _objs: Optional[RingObjects] = None
    _closed: bool = True
    _wait_mode: Optional[str] = None
    _spin: _Spin = _Spin(None)
    name: str = ""
    id: str = ""

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _MAKE:
            raise TypeError("ShmTraceRing cannot be constructed directly: use "
                            "ShmTraceRing.create(id, capacity, slot_size) or "
                            "ShmTraceRing.open(id)")
        # Reorder buffer + producer-turn bookkeeping, shared by every handle of the same
        # ring in this process once it is open (see _Shared).
        self._ps = _Shared()
        self._lock = self._ps.lock
        self._producer_registered = False
        self._consumer_registered = False
        self._slot_views: list[Optional[memoryview]] = []
        self._ro_views: list[Optional[memoryview]] = []

    @classmethod
    def _new(cls, id: str, name: str, wait_mode: Optional[str], spin: Optional[float]
             ) -> ShmTraceRing:
        self = cls(_token=_MAKE)
        self.id, self.name = id, name
        self._wait_mode = wait_mode
        self._spin = _Spin(spin)
        self._objs = RingObjects(name)
        return self

    # Per-process shared state.
    @property
    def _pending(self) -> list[int]:
        return self._ps.pending

    @property
    def _producer_guard(self) -> Optional[ProducerGuard]:
        return self._ps.producer_guard()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, id: str, capacity: int, slot_size: int, *,
               replace: Optional[bool] = None, wait_mode: Optional[str] = None,
               spin: Optional[float] = None) -> ShmTraceRing:
        """Create ``/{id}_t`` and its semaphores; this handle is the owner.

        ``replace``: what to do if the name exists.  ``None`` (default) replaces it only when
        it is a ctshm ring whose creator is dead; ``True`` always replaces (the Rust
        original's behaviour: its users keep their mapping but lose the names); ``False``
        never (``FileExistsError``).

        The header pages ctshm writes (page 0 and the length records) are reserved before
        anything is written, so a full /dev/shm raises ``OSError(ENOSPC)`` here, never
        SIGBUS; slots are reserved when first acquired (see :meth:`acquire`).
        """
        name = _shm.object_name("ShmTraceRing", id, "_t", ("_filled", "_empty"))
        capacity = _shm.check_size("ShmTraceRing", capacity, "capacity")
        slot_size = _shm.check_size("ShmTraceRing", slot_size, "slot_size")
        if replace is not None and not isinstance(replace, bool):
            raise TypeError(f"ShmTraceRing.create({id!r}): replace must be None, True or "
                            f"False, not {replace!r}")
        if capacity > MAX_LEN_RECORDS:
            raise ValueError(f"ShmTraceRing capacity {capacity} is too large: at most "
                             f"{MAX_LEN_RECORDS} slots (each slot is >= 2 MiB)")
        aligned = aligned_slot_size(slot_size)
        total = HEADER_SIZE + capacity * aligned
        if total > _MAX_SIZE:
            raise ValueError(f"ShmTraceRing of {capacity} slots of {aligned} bytes "
                             f"({total} bytes) is beyond any address space")
        self = cls._new(id, name, wait_mode, spin)
        objs = self._objs
        assert objs is not None
        objs.create(replace)
        self._closed = False
        objs.arm(self)
        try:
            objs.initialize(capacity, aligned, wait_mode)
            self._setup()
            self._fence()
            self._store(_STATE, STATE_READY)
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open(cls, id: str, capacity: Optional[int] = None, slot_size: Optional[int] = None, *,
             timeout: Optional[float] = 10.0, wait_mode: Optional[str] = None,
             spin: Optional[float] = None) -> ShmTraceRing:
        """Open an existing ring.  Never creates anything.

        Waits up to ``timeout`` seconds (``None``: forever) for the creator to finish
        initializing (object sized, header written, both semaphores created), then raises
        ``FileNotFoundError`` (nothing there) or ``TimeoutError`` (never became ready).
        ``capacity`` / ``slot_size``, when given, must match the header (``slot_size`` is
        compared after rounding up to 2 MiB).
        """
        name = _shm.object_name("ShmTraceRing", id, "_t", ("_filled", "_empty"))
        if capacity is not None:
            capacity = _shm.check_size("ShmTraceRing", capacity, "capacity")
        if slot_size is not None:
            slot_size = _shm.check_size("ShmTraceRing", slot_size, "slot_size")
        timeout = _check_timeout(timeout, f"ShmTraceRing.open({id!r})")
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while True:
            self = cls._new(id, name, wait_mode, spin)
            objs = self._objs
            assert objs is not None
            why: Optional[str] = "absent"
            if objs.open():
                self._closed = False
                objs.arm(self)
                try:
                    why = objs.try_ready(capacity, slot_size, wait_mode)
                    if why is None:
                        self._setup()
                        self._check_indices()
                        return self
                except BaseException:
                    self.close()
                    raise
            self.close()
            if end is not None and time.monotonic() >= end:
                if why == "absent":
                    raise FileNotFoundError(2, f"no such ring (waited {timeout} s for its "
                                            f"creator){_id_hint(id, '_t')}", name)
                raise TimeoutError(f"ring {name!r} did not become ready within {timeout} s: "
                                   f"{why}")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def _setup(self) -> None:
        objs = self._objs
        assert objs is not None and objs.mapping is not None
        m = objs.mapping
        self._hv = m.view(0, HEADER_SIZE)
        self._hq = self._hv.cast("Q")
        self._base = m.addr
        self._ps = _shared_for(_shm.fd_identity(objs.fd))
        self._lock = self._ps.lock
        hq = self._hq
        self.capacity = int(hq[_CAP])
        self.slot_size = int(hq[_SLOT])
        self._is_ctshm = hq[_MAGIC] == MAGIC
        self._has_len = self.capacity <= MAX_LEN_RECORDS
        self._slot_views = [None] * self.capacity
        self._ro_views = [None] * self.capacity
        self._backed = [0] * self.capacity  # bytes of each slot this process reserved
        self._len_backed = False  # length-record pages reserved by this process
        self._filled, self._empty = objs.sems
        # Hot path: the raw foreign functions and semaphore handles, one ctypes call each.
        # Used only under self._lock after a closed check, or inside an in-flight section
        # (see close()): never on a semaphore another thread has closed.
        self._trywait = libc.fn.sem_trywait
        self._post = libc.fn.sem_post
        self._h_filled = self._filled._handle
        self._h_empty = self._empty._handle
        b = atomics.get_backend()
        self._atomics = b
        self._plain = atomics.PLAIN_ORDERED_ACCESS
        base = self._base
        self._a_res = base + 8 * _RES
        self._a_fin = base + 8 * _FIN
        self._cas = b.compare_exchange
        self._fence = b.fence
        self._bind_word_access()
        _RINGS.add(self)

    # -- word access ---------------------------------------------------------------------------
    def _bind_word_access(self) -> None:
        """``_load(word)`` / ``_store(word, value)``: shared header words with the ordering
        the protocol needs.  On x86_64 (TSO) plain memoryview loads and stores already have
        acquire/release order (see ctshm.atomics), so they are the memoryview's own bound
        methods - no foreign call, no branch; elsewhere the atomics backend's."""
        if self._plain:
            self._load = self._hq.__getitem__
            self._store = self._hq.__setitem__
            return
        base, load, store = self._base, self._atomics.load, self._atomics.store
        self._load = lambda word: load(base + 8 * word)
        self._store = lambda word, value: store(base + 8 * word, value)

    def _check_indices(self) -> None:
        cap = self.capacity
        # Live peers move the indices while we read them.  Each only grows and
        # read <= reserved <= write <= read + capacity holds at every instant, so reading
        # read, reserved, write, read again gives r1 <= res <= w <= r2 + capacity.
        r = int(self._load(_R))
        res = int(self._load(_RES))
        w = int(self._load(_W))
        r2 = int(self._load(_R))
        fin = int(self._load(_FIN))
        if not r <= res <= w <= r2 + cap:
            raise CorruptRingError(
                f"ring {self.name!r} header is corrupt: write_idx={w} read_idx={r} "
                f"reserved_idx={res} capacity={cap} (need read <= reserved <= write <= "
                "read + capacity)")
        if fin not in (0, _FINISHED, _CRASHED):
            raise CorruptRingError(f"ring {self.name!r} header is corrupt: finished={fin} "
                                   "(0 running, 1 finished, 2 crashed)")

    def _view(self, slot: int) -> memoryview:
        v = self._slot_views[slot]
        if v is None:
            objs = self._objs
            m = objs.mapping if objs is not None else None
            if m is None:
                raise ValueError(f"ring {self.name!r} is closed")
            v = m.view(HEADER_SIZE + slot * self.slot_size, self.slot_size)
            self._slot_views[slot] = v
        return v

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"ring {self.name!r} is closed: open it again to use it")

    def _enter(self, what: str) -> None:
        """Start a call that waits outside the lock (see close())."""
        objs = self._objs
        if self._closed or objs is None or not objs.inflight.enter():
            raise ValueError(f"ring {self.name!r} is closed: open it again to use it")

    def _leave(self) -> None:
        objs = self._objs
        if objs is not None:
            objs.inflight.leave()

    def _closed_while(self, what: str) -> ValueError:
        return ValueError(f"ring {self.name!r} was closed (by another thread) while {what}() "
                          "waited")

    # -- producer ----------------------------------------------------------------------------
    def acquire(self, timeout: Optional[float] = None, *, size: Optional[int] = None
                ) -> ProducerGuard:
        """Wait for a free slot (``None``: without bound) and return its guard.

        ``size``: how many bytes you will write (default: the whole slot).  The guard's
        ``buf`` is then that long, and only that prefix of the slot needs backing store.

        Backing store is reserved (``posix_fallocate``) before the slot is handed out, so a
        full /dev/shm raises ``OSError(ENOSPC)`` here instead of killing the process with
        SIGBUS on the first write.  Each process reserves a slot prefix once (a high-water
        mark per slot), so the steady state costs no system call.

        One slot is outstanding at a time: another thread's acquire waits (within its
        ``timeout``) until this guard is committed, aborted or dropped.

        Raises ``TimeoutError`` on timeout, ``ConsumerGone`` if the registered consumer died
        while we waited, ``RuntimeError`` if this thread already holds an outstanding guard
        or the ring was finished.
        """
        if self._closed:
            self._check_open()
        timeout = _check_timeout(timeout, f"ring {self.name!r}: acquire")
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
            if self._trywait(self._h_empty) == 0 and self._space():  # fast path: never blocks
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
                                   "(the consumer is not releasing slots)")
            ps.acquiring = False
            return self._new_producer_guard(size)

    def _check_acquire_size(self, size: Optional[int]) -> int:
        if size is None:
            return self.slot_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"ring {self.name!r}: acquire(size=) must be an int, not "
                            f"{type(size).__name__}")
        if not 0 <= size <= self.slot_size:
            raise ValueError(f"ring {self.name!r}: acquire(size={size}) does not fit a slot of "
                             f"{self.slot_size} bytes")
        return size

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
        """Is slot write_idx free (write_idx - read_idx < capacity)?

        The ``empty`` semaphore is only a wake-up hint; this is what makes writing safe.  A
        consumer killed between storing read_idx and posting ``empty`` loses that token for
        good; a producer waiting for it takes the visibly free slot after a wait slice
        instead (see _wait_space), and the late token, if it ever comes, finds the ring
        full and is dropped here.
        """
        ld = self._load
        return bool(ld(_W) - ld(_R) < self.capacity)

    def _wait_space(self, timeout: Optional[float]) -> bool:
        """Take an ``empty`` token (see _wait): True, or False on timeout or close."""
        cap = self.capacity

        def free() -> bool:  # memoryview loads only: no foreign call while spinning
            return bool(self._load(_W) - self._load(_R) < cap)

        def taken() -> Optional[bool]:
            return True if self._space() else None  # else a surplus token: dropped

        def idle() -> Optional[bool]:
            if self._space():  # free, but its token never came (see _space)
                return True
            cpid = _peers.dead(self._load, _CONSUMER_PID)
            if cpid:
                raise ConsumerGone(
                    32, f"the consumer of ring {self.name!r} (pid {cpid}) died while the "
                    "producer waited for a free slot; a new consumer that opens the ring will "
                    "resume (slots it had not released are delivered again)", self.name)
            return None

        self._enter("acquire")
        try:
            return bool(self._wait(self._empty, free, taken, idle, timeout, "acquire"))
        except ValueError:
            if self._closed:
                return False
            raise
        finally:
            self._leave()

    def _wait(self, sem: NamedSemaphore, ready: Callable[[], Any], take: Callable[[], Any],
              idle: Callable[[], Any], timeout: Optional[float], what: str) -> Any:
        """The one wait loop of both sides; in flight (see close()).

        Spin while the adaptive budget lasts, watching ``ready()`` (header loads only) and
        taking a token once it says so; then sleep on ``sem`` in slices of at most
        LIVENESS_SLICE.  After each token ``take()`` claims what it announced (None: a stale
        token, keep waiting).  After each empty slice ``idle()`` runs the liveness check and
        the self-healing claim of work visible without its token (None: keep waiting).
        None on timeout; ``ValueError`` once this handle is closed by another thread.
        """
        spin = self._spin
        t0 = time.perf_counter()
        if spin.budget > 0 and (timeout is None or timeout > 0):
            end = t0 + spin.budget
            while time.perf_counter() < end and not self._closed:
                if ready() and sem.try_acquire():
                    r = take()
                    if r is not None:
                        spin.record(time.perf_counter() - t0)
                        return r
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise self._closed_while(what)
            chunk = LIVENESS_SLICE
            if deadline is not None:
                chunk = min(chunk, deadline - time.monotonic())
                if chunk <= 0:
                    spin.record(time.perf_counter() - t0)
                    return None
            if sem.acquire(chunk):
                if self._closed:
                    sem.post()  # not ours to take any more: for the ring's other handles
                    raise self._closed_while(what)
                r = take()
                if r is not None:
                    spin.record(time.perf_counter() - t0)
                    return r
                continue
            r = idle()
            if r is not None:
                return r

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

    def expect_producer(self, pid: int) -> None:
        """Register ``pid`` as the ring's producer now (e.g. the child you just started), so
        that its death is reported even if it dies before its first ``acquire()``.  A Rust
        producer registers nothing itself: this is how its death is seen."""
        self._expect(_PRODUCER_PID, pid, "expect_producer")

    def expect_consumer(self, pid: int) -> None:
        """Register ``pid`` as the ring's consumer now, so a producer waiting for space
        learns of its death even if it dies before its first ``access()``."""
        self._expect(_CONSUMER_PID, pid, "expect_consumer")

    def _expect(self, word: int, pid: int, what: str) -> None:
        start = _proc.start_time(_peers.check_pid(self.name, what, pid))
        with self._lock:
            self._check_open()
            _peers.set_pair(self._store, word, pid, start)

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
            self._check_open()
            idx = guard.index
            if self._load(_FIN) == _CRASHED:
                guard._done = True
                self._ps.end_turn()
                raise RuntimeError(f"ring {self.name!r} crashed (notify_crash) while "
                                   f"{guard!r} was being written: it is not published")
            guard._done = True
            guard._buf = _EMPTY
            buf.release()  # no writes through this guard after publication
            self._publish(idx, nbytes)
            self._ps.end_turn()
            if self._post(self._h_filled) == -1:
                self._filled.post()  # raises the OSError with the name

    def _publish(self, idx: int, nbytes: int) -> None:
        """Length record, then write_idx (release): the slot's bytes and its record are
        visible before the index that publishes them.  Under self._lock."""
        hq = self._hq
        if self._has_len:
            k = _LEN + 2 * (idx % self.capacity)
            hq[k + 1] = nbytes
            hq[k] = idx + 1
        self._store(_W, idx + 1)

    def _abort(self, guard: ProducerGuard) -> None:
        with self._lock:
            if guard._done:
                return
            guard._done = True
            buf, guard._buf = guard._buf, _EMPTY
            try:
                buf.release()
            except BufferError:
                pass
            ps = self._ps
            mine = ps.pg_ref is not None and ps.pg_ref() in (guard, None)
            if mine:
                ps.end_turn()
            if not self._closed:
                self._post(self._h_empty)

    def put(self, data: Buffer, timeout: Optional[float] = None) -> None:
        """Copy ``data`` (bytes-like) into a slot and commit exactly its length."""
        try:
            src = memoryview(data).cast("B")
        except TypeError:
            raise TypeError(_not_bytes(self.name, "put", data)) from None
        n = src.nbytes
        if n > self.slot_size:
            raise ValueError(f"ring {self.name!r}: put(): {n} bytes do not fit a slot of "
                             f"{self.slot_size} bytes")
        timeout = _check_timeout(timeout, f"ring {self.name!r}: put")
        # Fast path: a free slot right now whose prefix is already backed: one lock section,
        # no guard object (sem_trywait, copy, publish, sem_post).  Anything else - waiting,
        # first use of a slot, registration, finished, another producer thread, misuse -
        # takes the general path.
        ps = self._ps
        if self._producer_registered and not self._closed and not ps.busy():
            with self._lock:
                if (not self._closed and not ps.busy()
                        and not self._load(_FIN)
                        and self._trywait(self._h_empty) == 0):
                    w = self._load(_W)
                    slot = w % self.capacity
                    v = self._slot_views[slot]
                    if self._space() and n <= self._backed[slot] and v is not None:
                        try:
                            v[:n] = src
                        except BaseException:
                            self._post(self._h_empty)
                            raise
                        self._publish(w, n)
                        if self._post(self._h_filled) == -1:
                            self._filled.post()
                        return
                    self._post(self._h_empty)  # give the token back: the general path
        g = self.acquire(timeout, size=n)
        try:
            g._buf[:n] = src
        except BaseException:
            g.abort()
            raise
        g.commit(n)

    def mark_finished(self) -> None:
        """End of stream: the consumer gets ``Finished`` after every committed slot."""
        with self._lock:
            self._check_open()
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
            self._filled.post()

    def notify_crash(self, signal: int, addr: int = 0, operation: int = 0,
                     message: str = "") -> None:
        """Report a crash to the consumer.  Only loads, stores, a compare-exchange and
        ``sem_post``: no ring lock, no allocation beyond Python's own, so it may be called
        from a signal handler.  ``message`` (ctshm consumers only) is truncated to 1020
        UTF-8 bytes.

        The crash is recorded at the current ``write_idx``: ctshm consumers deliver every
        message committed before it, and none after, so an outstanding ``ProducerGuard`` is
        never delivered, even if its ``commit()`` was in progress when this ran (a signal
        handler interrupting it).  A stream that already ended (finished or crashed) stays
        as it is: every consumer thread sees the same end."""
        if not (_is_int(signal) and -(1 << 31) <= signal < (1 << 31) and _is_int(addr)
                and 0 <= addr < (1 << 64) and _is_int(operation)
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
            if self._load(_FIN):
                return  # already finished or crashed: the first end wins
            raw = message.encode("utf-8", "replace")[:MSG_MAX] if message else b""
            self._record_crash(signal, addr, operation, raw, 0)
        finally:
            objs.inflight.leave()

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
            kept = _aio_take_pending(self)
            if kept is not None:
                return kept
        if not self._consumer_registered:
            self._register_consumer()
        timeout = _check_timeout(timeout, f"ring {self.name!r}: access")
        with self._lock:
            self._check_open()
            if self._trywait(self._h_filled) == 0:
                r = self._claim()
                if r is not None:
                    return r
        self._enter("access")
        try:
            return self._wait_data(timeout)
        finally:
            self._leave()

    def _wait_data(self, timeout: Optional[float]) -> AccessResult:
        """Take a ``filled`` token and claim its slot (see _wait)."""
        ld = self._load

        def ready() -> bool:  # memoryview loads only: no foreign call while spinning
            return bool(ld(_W) != ld(_RES) or ld(_FIN))

        def idle() -> Optional[AccessResult]:
            self._check_producer_alive()
            # Self-healing: a consumer that died between taking a token and reserving its
            # slot lost that token.  Work that is visible in the header is claimed without a
            # token; a token left over later finds nothing and is dropped by _claim().
            if self._load(_RES) < self._load(_W) or self._load(_FIN):
                return self._claim()
            return None

        r = self._wait(self._filled, ready, self._claim, idle, timeout, "access")
        return self._on_timeout() if r is None else r

    def _claim(self) -> Optional[AccessResult]:
        """We hold one ``filled`` token: reserve a slot, or report the end."""
        ld, cas, a_res = self._load, self._cas, self._a_res
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
                if cas(a_res, res, res + 1) == res:
                    return self._data(res)
                continue
            if fin == _CRASHED:
                self._filled.post()  # wake the other consumer threads
                return self._crashed()
            if fin == _FINISHED:
                self._filled.post()
                return _FINISHED_RESULT
            # A token with nothing behind it (only after a hostile or corrupt peer): drop it.
            return None

    def _crash_limit(self, w: int) -> int:
        """After a crash, messages from the recorded write_idx on do not exist."""
        cw = self._load(_CRASH_W)
        return min(w, cw - 1) if cw else w

    def _indices_corrupt(self) -> bool:
        # reserved was read before write; another consumer thread may have advanced reserved
        # in between.  Read write first, then reserved: write <= read + capacity <=
        # reserved + capacity must then hold unless the header is really corrupt.
        w = self._load(_W)
        res = self._load(_RES)
        return bool(w - res > self.capacity)

    def _data(self, idx: int) -> Data:
        slot = idx % self.capacity
        v = self._ro_views[slot]
        if v is None:
            v = self._ro_views[slot] = self._view(slot).toreadonly()
        if self._has_len:
            k = _LEN + 2 * slot
            hq = self._hq
            if hq[k] == idx + 1:
                n = hq[k + 1]
                if n > self.slot_size:
                    self._complete(idx, None)
                    raise CorruptRingError(
                        f"ring {self.name!r}: length record of message {idx} says {n} bytes, "
                        f"more than the slot ({self.slot_size}); the message was skipped")
                return Data(ConsumerGuard(self, idx, v[:n]))
        return Data(ConsumerGuard(self, idx, v[:]))

    def _crashed(self) -> Crashed:
        signal, addr, operation = _CRASH.unpack_from(self._hv, _CRASH_OFF)
        dead = self._load(_DEAD_PID)
        n = min(MSG_LEN.unpack_from(self._hv, MSG_OFF)[0], MSG_MAX)
        msg = bytes(self._hv[MSG_OFF + 4:MSG_OFF + 4 + n]).decode("utf-8", "replace")
        return Crashed(CrashDetails(signal, addr, operation), dead or None, msg)

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
        self._record_crash(0, 0, 0, b"", ppid)

    def _record_crash(self, signal: int, addr: int, operation: int, message: bytes,
                      dead_pid: int) -> None:
        """The one crash-record writer (notify_crash, or a consumer that found the producer
        dead): at the current write_idx, details and message first, a fence, then the flag
        by compare-exchange (the first end wins) and a ``filled`` post."""
        self._store(_CRASH_W, self._load(_W) + 1)
        if dead_pid:
            self._store(_DEAD_PID, dead_pid)
        hv = self._hv
        if message:
            hv[MSG_OFF + 4:MSG_OFF + 4 + len(message)] = message
        MSG_LEN.pack_into(hv, MSG_OFF, len(message))
        _CRASH.pack_into(hv, _CRASH_OFF, signal, addr & 0xFFFFFFFFFFFFFFFF, operation)
        self._fence()  # details before the flag
        if self._cas(self._a_fin, 0, _CRASHED) == 0:
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
                    for _ in range(res - r):
                        self._filled.post()
            self._consumer_registered = True

    def _complete(self, idx: int, guard: Optional[ConsumerGuard]) -> None:
        """A guard was released: advance read_idx over every in-order completion (the reorder
        buffer: a min-heap of released indices, under the lock, so any thread may release)."""
        with self._lock:
            if guard is not None:
                if guard._done:  # another thread released it first
                    return
                guard._done = True
                buf, guard._buf = guard._buf, _EMPTY
                try:
                    buf.release()
                except BufferError:
                    pass  # exported further (e.g. numpy): the mapping outlives it anyway
            if self._closed:
                return
            pending = self._pending
            cur = self._load(_R)
            if idx == cur and not pending:  # the common in-order case
                self._store(_R, cur + 1)
                if self._post(self._h_empty) == -1:
                    self._empty.post()
                return
            heapq.heappush(pending, idx)
            while pending and pending[0] == cur:
                heapq.heappop(pending)
                cur += 1
                self._store(_R, cur)
                if self._post(self._h_empty) == -1:
                    self._empty.post()

    # -- pythonic layer ----------------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> bytes:
        """The next message as bytes.  ``RingFinished`` at the end, ``ProducerCrashed`` on a
        crash, ``TimeoutError`` on timeout."""
        r = self.access(timeout)
        if isinstance(r, Data):
            with r.guard as g:
                return bytes(g.buf)
        if isinstance(r, Finished):
            raise RingFinished(f"ring {self.name!r} is finished")
        if isinstance(r, Crashed):
            raise ProducerCrashed(r)
        raise TimeoutError(f"ring {self.name!r}: no message within {timeout} s")

    @overload
    def chunks(self, timeout: Optional[float] = None, copy: Literal[True] = True
               ) -> Iterator[bytes]: ...

    @overload
    def chunks(self, timeout: Optional[float], copy: Literal[False]) -> Iterator[memoryview]: ...

    @overload
    def chunks(self, *, copy: Literal[False]) -> Iterator[memoryview]: ...

    @overload
    def chunks(self, timeout: Optional[float] = None, copy: bool = True
               ) -> Iterator[Union[bytes, memoryview]]: ...

    def chunks(self, timeout: Optional[float] = None, copy: bool = True
               ) -> Iterator[Union[bytes, memoryview]]:
        """Iterate messages until Finished; raise ``ProducerCrashed`` on a crash and
        ``TimeoutError`` if one wait exceeds ``timeout``.  With ``copy=False`` each item is a
        read-only memoryview valid until the next item is requested."""
        while True:
            r = self.access(timeout)
            if isinstance(r, Data):
                g = r.guard
                try:
                    yield bytes(g.buf) if copy else g.buf
                finally:
                    g.release()
            elif isinstance(r, Finished):
                return
            elif isinstance(r, Crashed):
                raise ProducerCrashed(r)
            else:
                raise TimeoutError(f"ring {self.name!r}: no message within {timeout} s")

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    # -- state ---------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def owner(self) -> bool:
        return self._objs is not None and self._objs.owner

    def header(self) -> dict[str, Any]:
        """A snapshot of the shared header (diagnostics)."""
        with self._lock:
            self._check_open()
            hq = self._hq
            sig, addr, op = _CRASH.unpack_from(self._hv, _CRASH_OFF)
            return {
                "write_idx": int(hq[_W]), "read_idx": int(hq[_R]),
                "reserved_idx": int(hq[_RES]), "capacity": int(hq[_CAP]),
                "slot_size": int(hq[_SLOT]), "finished": int(hq[_FIN]),
                "crash_details": CrashDetails(sig, addr, op),
                "ctshm": hq[_MAGIC] == MAGIC, "creator_pid": int(hq[_CREATOR_PID]),
                "producer_pid": int(hq[_PRODUCER_PID]),
                "consumer_pid": int(hq[_CONSUMER_PID]), "dead_pid": int(hq[_DEAD_PID]),
            }

    # -- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close this handle (idempotent, from any thread).  The owner also unlinks the
        ring's names (at once).

        Calls waiting in other threads raise ``ValueError`` within one wait slice (0.2 s);
        the semaphores, descriptor and header views are released when the last of them has
        returned.  Outstanding consumer views stay readable (the mapping lives until they are
        gone); releasing their guards afterwards does nothing.  An outstanding ProducerGuard
        can no longer be committed.  In a forked child nothing is unlinked.
        """
        objs = self._objs
        if objs is None:
            self._closed = True
            return
        with self._lock:
            if objs.inflight.closed:
                return
            self._closed = True
            g = self._ps.producer_guard()
            if g is not None and g._ring is self:
                self._ps.end_turn()
            self._ps.turn.notify_all()  # producer threads waiting for their turn
        if objs.owner and objs.pid == _PID:
            objs.unlink_names()
        objs.inflight.close(self._release_now)

    def _release_now(self) -> None:
        # Nothing in flight any more (see close()).
        with self._lock:
            for attr in ("_hq", "_hv"):
                v = self.__dict__.pop(attr, None)
                if v is not None:
                    try:
                        v.release()
                    except BufferError:
                        pass
            self._slot_views = []
            self._ro_views = []
            objs = self._objs
            if objs is not None:
                objs.release()
        _RINGS.discard(self)

    def __enter__(self) -> ShmTraceRing:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        # A spawned child re-opens by id (never the owner).
        self._check_open()
        return (ShmTraceRing.open, (self.id,))

    def __repr__(self) -> str:
        if self._closed:
            return f"<ShmTraceRing {self.name!r} closed>"
        with self._lock:
            if self._closed:
                return f"<ShmTraceRing {self.name!r} closed>"
            h = self._hq
            role = "owner" if self.owner else "opener"
            return (f"<ShmTraceRing {self.name!r} {role} capacity={self.capacity} "
                    f"slot_size={self.slot_size} write={h[_W]} read={h[_R]} "
                    f"reserved={h[_RES]} finished={h[_FIN]}>")

    # -- asyncio and Python objects (ctshm.aio, ctshm.objects) --
    async def aaccess(self, timeout: Optional[float] = None) -> AccessResult:
        from .aio import aaccess
        return await aaccess(self, timeout)

    async def aget(self, timeout: Optional[float] = None) -> bytes:
        from .aio import aget
        return await aget(self, timeout)

    def aiter(self, timeout: Optional[float] = None, copy: bool = True) -> Any:
        from .aio import aiter
        return aiter(self, timeout, copy)

    async def aacquire(self, timeout: Optional[float] = None, *, size: Optional[int] = None
                       ) -> ProducerGuard:
        from .aio import aacquire
        return await aacquire(self, timeout, size=size)

    async def aput(self, data: Buffer, timeout: Optional[float] = None) -> None:
        from .aio import aput
        await aput(self, data, timeout)

    def put_object(self, obj: Any, timeout: Optional[float] = None) -> None:
        from .objects import put_object
        put_object(self, obj, timeout)

    def get_object(self, timeout: Optional[float] = None) -> Any:
        from .objects import get_object
        return get_object(self, timeout)

    def get_object_view(self, timeout: Optional[float] = None) -> Any:
        from .objects import get_object_view
        return get_object_view(self, timeout)

    async def aput_object(self, obj: Any, timeout: Optional[float] = None) -> None:
        from .objects import aput_object
        await aput_object(self, obj, timeout)

    async def aget_object(self, timeout: Optional[float] = None) -> Any:
        from .objects import aget_object
        return await aget_object(self, timeout)

    # -- message channel over records (ctshm.records) --
    def sender(self, linger: Optional[float] = 100e-6, *, max_bytes: Optional[int] = None,
               timeout: Optional[float] = None) -> Any:
        from .channel import Sender
        return Sender(self, linger=linger, max_bytes=max_bytes, timeout=timeout)

    def receiver(self) -> Any:
        from .channel import Receiver
        return Receiver(self)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _aio_take_pending(ring: ShmTraceRing) -> Optional[AccessResult]:
    from .aio import take_pending
    return take_pending(ring)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: A timeout beyond this (about 30 years) waits without bound.
_MAX_TIMEOUT: Final = 1e9


def _check_timeout(timeout: Optional[float], where: str = "") -> Optional[float]:
    """``timeout`` as a float (or None): a number of seconds >= 0; huge values mean forever."""
    if timeout is None:
        return None
    pre = f"{where}: " if where else ""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{pre}timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout != timeout or timeout < 0:
        raise ValueError(f"{pre}timeout must be >= 0 seconds or None, not {timeout!r}")
    if timeout >= _MAX_TIMEOUT:
        return None
    return float(timeout)


def _id_hint(id: str, suffix: str) -> str:
    """A hint when ``id`` looks like an object name rather than an id."""
    body = id.lstrip("/")
    if body.endswith(suffix) and os.path.exists(_shm.SHM_DIR + "/" + body):
        return (f"; {id!r} looks like the object's name: pass the id without {suffix!r} "
                f"(open({body[:-len(suffix)]!r}))")
    return ""


def _not_bytes(name: str, what: str, data: Any) -> str:
    hint = " (encode text first: .encode())" if isinstance(data, str) else ""
    return (f"ring {name!r}: {what}() needs a bytes-like object (bytes, bytearray, "
            f"memoryview, array, numpy array), not {type(data).__name__}{hint}")
