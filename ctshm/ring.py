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

The quiet path.  The steady state of each side - registered, open, one thread at a time, no
fork since registration, no result handed back by an extension, the slot already backed and
mapped, x86_64's plain word access - runs as straight-line code in :meth:`try_put` and
:meth:`try_access` after one flag check (``_p_quiet`` / ``_c_quiet``), with the same loads,
stores and order as the general path.  Every rare event clears the flag or fails one of the
checks made under the lock, and takes the general path, which keeps every guarantee (close
under a waiter, fork, threads, dead peers).  ``tests/test_hot_path_calls.py`` counts it.

Composition.  A handle *has* its OS objects (:class:`ctshm._ringobjects.RingObjects`), this
process's state for the ring (:class:`ctshm._process_state.ProcessState`), its view of the
header (:class:`ctshm._header.Header`) and its waiter (:class:`ctshm._waiting.Waiter`);
the guards are :mod:`ctshm.guards`', the results :mod:`ctshm.results`', the exceptions
:mod:`ctshm.errors`'.  The copying helpers and the doors to the extensions (asyncio, objects,
channel) are :mod:`ctshm._doors`' functions; the ring names no extension.

Fast mode (``create(..., fast=True)``, ctshm peers only): the same indices, words and steps,
but no token per message: the semaphores start at 0 and carry wake-ups only, posted when the
other side announced in ``c_sleep`` / ``p_sleep`` that it sleeps; in the steady state a
message costs no foreign call.  Where the steps above take or post a token, fast mode
does not, except where it says so.  The argument (lost wake-ups, fences, accounting) is
in :mod:`ctshm._waiting`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Final, Optional, TypeVar

from . import (
    _batch,
    _consumer,
    _doors,
    _exitnote,
    _fork,
    _liveness,
    _peers,
    _producer,
    _shm,
    _shmdir,
    _unread,
    _viewcheck,
    layout as L,
    libc,
)
from ._checks import byte_view, check_timeout
from ._header import Header
from ._process_state import RINGS as _RINGS, ProcessState, state_for
from ._ringobjects import RingObjects
from ._waiting import (  # noqa: F401 (the spin constants stay importable from here)
    DEFAULT_SPIN,
    LIVENESS_SLICE,
    SPIN_CEILING,
    SPIN_FLOOR,
    Spin,
    Waiter,
)
from .errors import ConsumerGone, CorruptRingError, ProducerCrashed, RingFinished
from .guards import _EMPTY, STALE, ConsumerGuard, ProducerGuard
from .layout import (
    C_SLEEP as _CSLEEP,
    CONSUMER_PID as _CONSUMER_PID,
    CONSUMER_STATS as _CS,
    FINISHED as _FIN,
    HEADER_SIZE,
    LEN_WORD as _LEN,
    MAX_LEN_RECORDS,
    P_SLEEP as _PSLEEP,
    PRODUCER_PID as _PRODUCER_PID,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    RESERVED_IDX as _RES,
    STAT_BYTES,
    STATE_READY,
    WRITE_IDX as _W,
    Buffer,
    aligned_slot_size,
)
from .results import (
    AccessResult,
    CrashDetails,
    Crashed,
    Data,
    Finished,
    Timeout,
)
from .semaphore import NamedSemaphore, check_wait_mode

__all__ = [
    "ConsumerGone", "ConsumerGuard", "CorruptRingError", "CrashDetails", "Crashed", "Data",
    "Finished", "ProducerCrashed", "ProducerGuard", "RingFinished", "ShmTraceRing", "Timeout",
]

Self = TypeVar("Self", bound="ShmTraceRing")

_PAGE: Final = libc.page_size()
_MAKE: Final = object()  # create() / open() build rings; the class alone refuses
_MAX_SIZE: Final = (1 << 63) - 1
# The quiet consumer path builds its guard and result without a Python call (the same
# fields as ConsumerGuard.__init__ / Data.__init__ set).
_new_object: Final = object.__new__
_set_field: Final = object.__setattr__

# Locking on the quiet paths (try_put, try_access, _complete; records' append does the same):
# ``try: lock.acquire() ... finally: lock.release()`` costs half a ``with lock:`` block (no
# __exit__ bound method, no three-argument call).  The acquire sits *inside* the try because
# CPython runs a pending signal handler as a call returns: a handler's exception
# (KeyboardInterrupt) right after acquire() returned must release the lock, or it stays held
# by this thread for good.  A blocking acquire() that the handler interrupts before it took
# the lock leaves nothing to release: the RuntimeError of that release() is ignored.

class ShmTraceRing:
    """A ring of large slots in POSIX shared memory (see :mod:`ctshm.layout` for the bytes).

    Create with :meth:`create` (the owner: unlinks everything on close) or :meth:`open`.
    Producer: :meth:`acquire`, :meth:`put`, :meth:`try_put`, :meth:`mark_finished`,
    :meth:`notify_crash`.  Consumer: :meth:`access`, :meth:`try_access`, :meth:`get`,
    iteration.

    Threads: one producer *process* and one consumer *process* per ring.  In the producer
    process any number of threads may call ``acquire``/``put`` on one handle (or on several
    handles of the ring): they take turns, one outstanding slot at a time, each waiting at
    most its ``timeout``; a thread that acquires again while its own guard is outstanding
    gets ``RuntimeError``.  In the consumer process any number of threads may call ``access``
    /``get`` and release guards in any order.  ``close()`` may be called from any thread at
    any time: calls waiting in other threads raise ``ValueError`` within 0.2 s, and the
    semaphores and mapping are released when the last of them has returned.
    """

    # Class-level defaults so a half-built handle closes cleanly.
    _objs: Optional[RingObjects] = None
    _closed: bool = True
    _fast: bool = False  # see "Fast mode" above
    _plain: bool = False
    # The quiet path of each side (see the module docstring): True only while nothing rare
    # is going on; every rare event clears it.
    _p_quiet: bool = False
    _c_quiet: bool = False
    _undelivered: Optional[Callable[[], Optional[AccessResult]]] = None
    _batch_half: int = 1  # put_many / get_many: slots per round (half the ring)
    _batch_error: Optional[BaseException] = None  # get_many: raised by the next call
    _keep_attachment: bool = False  # set by __exit__ on an exception (see _on_close)
    name: str = ""
    id: str = ""
    capacity: int = 0
    slot_size: int = 0
    # Members, once open: the header, the waiter, and what the paths read per message.
    _hdr: Header
    _waiter: Waiter
    _wait_mode: Optional[str]
    _filled: NamedSemaphore
    _empty: NamedSemaphore
    _hq: memoryview
    _hv: memoryview
    _has_len: bool
    _backed: list[int]
    _len_backed: bool
    _load: Callable[[int], int]
    _store: Callable[[int, int], None]
    _cas: Callable[[int, int, int], int]
    _fence: Callable[[], None]
    _a_fin: int
    _trywait: Callable[[int], int]
    _post: Callable[[int], int]
    _h_filled: int
    _h_empty: int
    _lock: Any  # the ProcessState's RLock

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _MAKE:
            kind = type(self).__name__
            raise TypeError(f"{kind} cannot be constructed directly: use {kind}.create(id, "
                            f"capacity, slot_size) or {kind}.open(id)")
        self._slot_views: list[Optional[memoryview]] = []
        self._ro_views: list[Optional[memoryview]] = []
        # This process's state for the ring (the lock, the reorder heap, the producer turn),
        # shared by every handle of the ring here once it is open.
        self._ps = ProcessState()
        self._lock = self._ps.lock
        self._producer_registered = False
        self._consumer_registered = False

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def create(cls: type[Self], id: str, capacity: int, slot_size: int, *,
               replace: Optional[bool] = None, wait_mode: Optional[str] = None,
               spin: Optional[float] = None, fast: bool = False, mode: int = 0o600) -> Self:
        """Create ``/{id}_t`` and its semaphores; this handle is the owner.

        ``fast``: a ring for ctshm peers only, whose steady state makes no foreign call per
        message (the semaphores carry wake-ups only; see "Fast mode" in :mod:`ctshm.ring`).
        The Rust original cannot use such a ring; the default (compat) ring is the seed's
        protocol byte for byte.

        ``replace``: what to do if the name exists.  ``None`` (default) replaces it only when
        it is a ctshm ring whose creator is dead; ``True`` always replaces (the Rust
        original's behaviour: its users keep their mapping but lose the names); ``False``
        never (``FileExistsError``).  ``mode``: permission bits (default 0o600: this user).

        The header pages ctshm writes (page 0 and the length records) are reserved before
        anything is written, so a full /dev/shm raises ``OSError(ENOSPC)`` here, never
        SIGBUS; slots are reserved when first acquired (see :meth:`acquire`).  A ring larger
        than the free space of /dev/shm is sparse, so it is made, with a ``ResourceWarning``
        giving the figures: ``acquire``/``put`` raise ``OSError(ENOSPC)`` if it runs out.
        """
        name = _shm.object_name("ShmTraceRing", id, L.RING_SUFFIX, L.SEM_SUFFIXES)
        capacity = _shm.check_size("ShmTraceRing", capacity, "capacity")
        slot_size = _shm.check_size("ShmTraceRing", slot_size, "slot_size")
        if replace is not None and not isinstance(replace, bool):
            raise TypeError(f"ShmTraceRing.create({id!r}): replace must be None, True or "
                            f"False, not {replace!r}")
        if not isinstance(fast, bool):
            raise TypeError(f"ShmTraceRing.create({id!r}): fast must be True (ctshm peers "
                            f"only) or False (the seed's protocol), not {fast!r}")
        if capacity > MAX_LEN_RECORDS:
            raise ValueError(f"ShmTraceRing capacity {capacity} is too large: at most "
                             f"{MAX_LEN_RECORDS} slots (each slot is >= 2 MiB)")
        aligned = aligned_slot_size(slot_size)
        total = HEADER_SIZE + capacity * aligned
        if total > _MAX_SIZE:
            raise ValueError(f"ShmTraceRing of {capacity} slots of {aligned} bytes "
                             f"({total} bytes) is beyond any address space")
        # Sparse: a warning with the figures; the header reserve below raises ENOSPC.
        _shmdir.check_free("ShmTraceRing", name, total, _shmdir.SPARSE_RING, 3)
        wait_mode, spinner = cls._settings(name, wait_mode, spin)
        objs = RingObjects.made(name, capacity, aligned, replace, wait_mode, fast, mode)
        self = cls._assemble(id, objs, wait_mode, spinner)
        self._hdr.fence()
        self._hdr.store(L.EXT_STATE, STATE_READY)
        return self

    @classmethod
    def open(cls: type[Self], id: str, capacity: Optional[int] = None,
             slot_size: Optional[int] = None, *, timeout: Optional[float] = 10.0,
             wait_mode: Optional[str] = None, spin: Optional[float] = None) -> Self:
        """Open an existing ring.  Never creates anything.

        Waits up to ``timeout`` seconds (``None``: forever) for the creator to finish
        initializing (object sized, header written, both semaphores created), then raises
        ``FileNotFoundError`` (nothing there) or ``TimeoutError`` (never became ready).
        ``capacity`` / ``slot_size``, when given, must match the header (``slot_size`` is
        compared after rounding up to 2 MiB).  A ctshm ring whose creator died before it was
        ready raises ``FileNotFoundError`` at once: it will never be ready.
        """
        return cls._open(id, capacity, slot_size, timeout, wait_mode, spin, wait_absent=True)

    @classmethod
    def _from_pickle(cls: type[Self], id: str) -> Self:
        """Unpickling: the ring existed when it was pickled, so a missing one was unlinked
        (its owner closed, or died): ``FileNotFoundError`` at once, no waiting for a creator.
        Still waits (bounded) while a live creator re-creating the name initializes."""
        return cls._open(id, None, None, 10.0, None, None, wait_absent=False)

    @classmethod
    def _open(cls: type[Self], id: str, capacity: Optional[int], slot_size: Optional[int],
              timeout: Optional[float], wait_mode: Optional[str], spin: Optional[float], *,
              wait_absent: bool) -> Self:
        name = _shm.object_name("ShmTraceRing", id, L.RING_SUFFIX, L.SEM_SUFFIXES)
        if capacity is not None:
            capacity = _shm.check_size("ShmTraceRing", capacity, "capacity")
        if slot_size is not None:
            slot_size = _shm.check_size("ShmTraceRing", slot_size, "slot_size")
        timeout = check_timeout(timeout, f"ShmTraceRing.open({id!r})")
        wait_mode, spinner = cls._settings(name, wait_mode, spin)
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while True:
            got = RingObjects.opened(name, capacity, slot_size, wait_mode)
            if not isinstance(got, str):
                self = cls._assemble(id, got, wait_mode, spinner)
                try:
                    self._hdr.check_indices(name)
                    with self._lock:  # the producer-to-be until it shows otherwise
                        _peers.attach(self._load, self._cas, self._hdr.base, _PRODUCER_PID)
                except BaseException:
                    self.close()
                    raise
                return self
            if got == "absent" and not wait_absent:
                raise FileNotFoundError(2, f"ring {name!r} does not exist any more: it existed "
                                        "when this handle was pickled, and its owner has "
                                        "closed (unlinked) it or died since", name)
            if end is not None and time.monotonic() >= end:
                if got == "absent":
                    raise FileNotFoundError(2, _unread.absent_text(name, id, timeout), name)
                raise TimeoutError(f"ring {name!r} did not become ready within {timeout} s: "
                                   f"{got}")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    @staticmethod
    def _settings(name: str, wait_mode: Optional[str], spin: Optional[float]
                  ) -> tuple[Optional[str], Spin]:
        """The handle's settings, checked before anything is made (the errors name it)."""
        if wait_mode is not None:
            wait_mode = check_wait_mode(f"ShmTraceRing {name!r}", wait_mode)
        return wait_mode, Spin(spin, f"ShmTraceRing {name!r}")

    @classmethod
    def _assemble(cls: type[Self], id: str, objs: RingObjects, wait_mode: Optional[str],
                  spin: Spin) -> Self:
        """A handle around ready-made objects: the header, this process's state, the
        waiter; released with the handle (garbage collection: see RingObjects.arm)."""
        self = cls(_token=_MAKE)
        self.id, self.name = id, objs.name
        self._wait_mode = wait_mode
        self._objs = objs
        self._closed = False
        objs.arm(self)
        try:
            assert objs.mapping is not None
            self._hdr = hdr = Header(objs.mapping)
            self._ps = ps = state_for(_shm.fd_identity(objs.fd))
            self._lock = ps.lock
            self._filled, self._empty = sems = objs.sems[0], objs.sems[1]
            self._waiter = Waiter(objs.name, hdr, sems, ps, spin)
        except BaseException:
            self.close()
            raise
        # Read once, used on every message (the quiet paths and the claims).
        self._hq, self._hv = hdr.hq, hdr.hv
        self.capacity, self.slot_size = hdr.capacity, hdr.slot_size
        self._batch_half = max(1, hdr.capacity // 2)
        self._fast, self._plain, self._has_len = hdr.fast, hdr.plain, hdr.has_len
        self._slot_views = [None] * self.capacity
        self._ro_views = [None] * self.capacity
        self._backed = [0] * self.capacity  # bytes of each slot this process reserved
        self._len_backed = False  # length-record pages reserved by this process
        # Word access and the raw foreign calls (instance attributes, so that a test can
        # shadow one to replay an interleaving); used only under the lock after a closed
        # check, or in flight (see close()): never on a semaphore another thread closed.
        self._load, self._store = hdr.load, hdr.store
        self._cas, self._fence, self._a_fin = hdr.cas, hdr.fence, hdr.a_fin
        w = self._waiter
        self._trywait, self._post = w.trywait, w.post
        self._h_filled, self._h_empty = w.h_filled, w.h_empty
        with self._lock:
            ps.opened.add(self)
        _RINGS.add(self)
        return self

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

    def _ro_view(self, slot: int) -> memoryview:
        """Read-only view of ``slot``; on PyPy a natively read-only one (slices of PyPy's
        ``toreadonly()`` views copy the whole buffer on every ``struct.unpack_from``)."""
        v = self._view(slot)
        objs = self._objs
        m = objs.mapping if objs is not None else None
        if not _shm._PYPY or m is None:
            return v.toreadonly()
        return m.view(HEADER_SIZE + slot * self.slot_size, self.slot_size, readonly=True)

    # -- state -------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fast(self) -> bool:
        """True if the ring was created with ``fast=True`` (ctshm peers only; see "Fast
        mode" in :mod:`ctshm.ring`), False for the seed's protocol (and any Rust-created
        ring)."""
        return self._fast

    @property
    def owner(self) -> bool:
        return self._objs is not None and self._objs.owner

    def __len__(self) -> int:
        """Messages committed and not yet released (``write_idx - read_idx``): the backlog."""
        with self._lock:
            self._check_open()
            return self._hdr.backlog()

    def __bool__(self) -> bool:
        return True  # an empty ring is still a ring (len() is its backlog)

    def stats(self) -> dict[str, Any]:
        """Live counters of both sides (each written only by its own side, with plain
        stores): messages and bytes produced/consumed, blocking waits, wake-up posts, waits
        that ended while spinning; and the backlog.  Also ``python -m ctshm stat``."""
        with self._lock:
            self._check_open()
            return self._hdr.stats()

    def wait_drained(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: without bound) until the consumer has
        released every committed message (``len(ring) == 0``): True, or False on timeout.
        An owner calls it before closing: its ``close()`` removes the ring, and messages no
        consumer took are then lost (``UnreadMessagesWarning``).  ``ConsumerGone`` if the
        registered consumer died."""
        return _unread.wait_drained(self, timeout)

    def header_words(self) -> memoryview:
        """The live shared header as u64 words, read-only (word indices: :mod:`ctshm.layout`),
        for an extension that polls the indices without a call per poll (records' linger
        rule: ``w[WRITE_IDX] == w[READ_IDX]``).  Released when this handle closes (reads
        then raise ``ValueError``)."""
        with self._lock:
            self._check_open()
            v = self.__dict__.get("_hq_ro")
            if v is None:
                v = self._hq_ro = self._hq.toreadonly()
            return v

    def header(self) -> dict[str, Any]:
        """A snapshot of the shared header (diagnostics)."""
        with self._lock:
            self._check_open()
            return self._hdr.snapshot()

    # Per-process shared state.
    @property
    def _pending(self) -> list[int]:
        return self._ps.pending

    @property
    def _producer_guard(self) -> Optional[ProducerGuard]:
        return self._ps.producer_guard()

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
        start = _liveness.start_time(_peers.check_pid(self.name, what, pid))
        with self._lock:
            self._check_open()
            _peers.set_pair(self._store, word, pid, start)

    # -- producer: the non-blocking core, and the blocking calls around it --------------------
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
        return _producer.acquire(self, timeout, size=size)

    def try_put(self, data: Buffer) -> bool:
        """Copy ``data`` (bytes-like) into a free slot and commit exactly its length, without
        waiting: False (nothing published) if no slot is free now, or another producer
        thread of this process holds the turn.  Raises as :meth:`put`."""
        try:
            src = memoryview(data).cast("B")
        except TypeError:  # not a buffer (refused), or not C-contiguous (copied in C order)
            src = byte_view(data, self.name, "put")
        n = src.nbytes  # (too large for a slot: never backed that far; put_now says so)
        if self._p_quiet:
            # The steady state, straight-line (see "The quiet path" in the module docstring):
            # a free slot right now whose prefix is already backed, nobody else's turn: one
            # lock section, no guard object (compat: sem_trywait, copy, publish, sem_post;
            # fast mode: no token).  Anything else takes the general path below.
            ps, fast, hq, lock = self._ps, self._fast, None, self._lock
            try:
                lock.acquire()  # inside the try, not `with` (see "Locking" above)
                if self._p_quiet and ps.turn_free:
                    hq = self._hq
                    w = hq[_W]
                    slot = w % self.capacity
                    v = self._slot_views[slot]
                    if (hq[_FIN] or w - hq[_R] >= self.capacity or v is None
                            or n > self._backed[slot]
                            or not (fast or self._trywait(self._h_empty) == 0)):
                        hq = None
                    else:
                        try:
                            v[:n] = src
                        except BaseException:
                            if not fast:
                                self._post(self._h_empty)
                            raise
                        k = _LEN + 2 * slot  # quiet: the ring has length records
                        hq[k + 1] = n
                        hq[k] = w + 1
                        hq[_W] = w + 1  # x86_64 only (quiet): a plain store is a release
                        hq[_PS + STAT_BYTES] += n  # statistics: the producer's own word
                        if not fast:
                            if self._post(self._h_filled) == -1:
                                self._filled.post()  # raises the OSError with the name
                            return True
            finally:
                try:
                    lock.release()
                except RuntimeError:  # acquire() itself was interrupted (see "Locking" above)
                    pass
            if hq is not None:
                # Fast mode, after the lock's release (the fence, see _waiting): does the
                # consumer sleep?  (Re-entrant: signal() fences first.)
                try:
                    if self._lock._is_owned() or hq[_CSLEEP]:
                        self._waiter.signal(hq, _CSLEEP, _PS)
                except ValueError:
                    pass  # closed by another thread meanwhile (its header view is released)
                return True
        return _producer.put_now(self, src, n)

    def put(self, data: Buffer, timeout: Optional[float] = None) -> None:
        """Copy ``data`` (bytes-like) into a slot and commit exactly its length, waiting up to
        ``timeout`` seconds (``None``: without bound) for a free slot (see :meth:`acquire`)."""
        if timeout is not None:
            timeout = check_timeout(timeout, "put", self.name)
        if not self.try_put(data):
            _producer.put_waiting(self, memoryview(data).cast("B"), timeout)

    def _commit(self, guard: ProducerGuard, nbytes: Optional[int]) -> None:
        _producer.commit(self, guard, nbytes)  # ProducerGuard.commit

    def _abort(self, guard: ProducerGuard) -> None:
        _producer.abort(self, guard)  # ProducerGuard.abort and finalizer

    def mark_finished(self) -> None:
        """End of stream: the consumer gets ``Finished`` after every committed slot."""
        if self._ps.owed_filled:
            with self._lock:
                _batch.settle(self)  # an interrupted batch's tokens first
        _producer.mark_finished(self)

    def notify_crash(self, signal: int, addr: int = 0, operation: int = 0,
                     message: str = "") -> None:
        """Report a crash to the consumer: loads, stores, a compare-exchange, ``sem_post``,
        no ring lock, so a signal handler may call it.  ``message`` (ctshm consumers only):
        at most 1020 UTF-8 bytes.  Recorded at the current ``write_idx``: every message
        committed before is delivered, none after (an outstanding guard never is, even with
        its ``commit()`` interrupted by the handler).  A stream that already ended stays
        ended: the first end wins, so every consumer thread sees the same end."""
        _producer.notify_crash(self, signal, addr, operation, message)

    # -- consumer: the non-blocking core, and the blocking call around it ---------------------
    def try_access(self) -> Optional[AccessResult]:
        """The next slot without waiting: ``Data(guard)``, ``Finished()`` or ``Crashed(...)``,
        or None if nothing is there now."""
        if self._c_quiet:
            lock = self._lock
            try:
                lock.acquire()  # inside the try, not `with` (see "Locking" above)
                # The steady state, straight-line (see "The quiet path"): a committed
                # message whose slot view exists, nothing ended, the header sane.  The
                # checks are _claim's and _data's (`finished` loaded before and after the
                # indices); anything else is _claim's.
                if self._c_quiet and (self._fast or self._trywait(self._h_filled) == 0):
                    hq = self._hq
                    fin, res, w = hq[_FIN], hq[_RES], hq[_W]
                    slot = res % self.capacity
                    v = self._ro_views[slot]
                    if (not fin and res < w and not hq[_FIN] and w - res <= self.capacity
                            and v is not None):
                        n = len(v)
                        if hq[_LEN + 2 * slot] == res + 1:  # quiet: length records exist
                            n = hq[_LEN + 2 * slot + 1]
                        if n <= self.slot_size:
                            g = _new_object(ConsumerGuard)  # ConsumerGuard(...), inline
                            g._ring, g.index, g._buf, g._done, g._pid = (
                                self, res, v[:n], True, _fork.PID)  # inert: see below
                            d = _new_object(Data)  # Data(g), inline
                            _set_field(d, "guard", g)
                            # The claim, then the guard's life, with no call between them
                            # (see _consumer.data): never a claimed slot without a guard.
                            hq[_RES] = res + 1
                            g._done = False
                            hq[_CS + STAT_BYTES] += n
                            return d
                    return _consumer.claim(self)  # holding the token (compat)
                return None
            finally:
                try:
                    lock.release()
                except RuntimeError:  # acquire() itself was interrupted (see "Locking" above)
                    pass
        return _consumer.access_now(self)

    def access(self, timeout: Optional[float] = None) -> AccessResult:
        """Wait up to ``timeout`` seconds (``None``: without bound) for the next slot.

        Returns ``Data(guard)``, ``Finished()``, ``Crashed(details, pid)`` or ``Timeout()``.
        Keep the guard while you read ``guard.buf``: releasing or dropping it hands the slot
        back and invalidates the view.
        """
        if timeout is not None:
            timeout = check_timeout(timeout, "access", self.name)
        r = self.try_access()
        return r if r is not None else _consumer.access_wait(self, timeout)

    def set_undelivered_source(self, source: Optional[Callable[[], Optional[AccessResult]]]
                               ) -> None:
        """Let an extension hand results back: ``source()`` returns a result it took from
        this handle and did not deliver (an asyncio call cancelled after its message was
        claimed), or None; every :meth:`access` returns those first, in order.  The
        handle's quiet path is off while a source is set (None removes it)."""
        with self._lock:
            self._undelivered = source
            self._c_quiet = self._quiet_consumer()

    def _quiet_consumer(self) -> bool:
        """May access() take the quiet path?  Registered, open, x86_64 (plain word access),
        no extension handing results back."""
        return bool(self._consumer_registered and not self._closed and self._plain
                    and self._has_len and self._undelivered is None)

    def _complete(self, idx: int, guard: Optional[ConsumerGuard]) -> None:
        """A guard was released: advance read_idx over every in-order completion (the reorder
        buffer: a min-heap of released indices, under the lock, so any thread may release).
        Compat: one ``empty`` post per slot freed; fast: one wake-up, if the producer
        sleeps."""
        lock, buf = self._lock, None
        try:
            lock.acquire()  # inside the try, not `with` (see "Locking" above)
            if guard is not None:
                if guard._done:  # another thread released it first
                    return
                # Done, and its view dropped (released below, as _Guard._finish does: after
                # read_idx moved, so a signal handler's exception as a call returns cannot
                # leave a done guard whose slot is never handed back).
                guard._done = True
                buf, guard._buf = guard._buf, _EMPTY
            if self._closed:
                return
            pending = self._ps.pending
            hq = self._hq
            cur = hq[_R] if self._plain else self._load(_R)
            if idx == cur and not pending:  # the common in-order case
                if self._plain:
                    hq[_R] = cur + 1
                else:
                    self._store(_R, cur + 1)
                freed = 1
            else:
                freed = _consumer.complete_out_of_order(self, idx, cur)
            if not self._fast:
                for _ in range(freed):
                    if self._post(self._h_empty) == -1:
                        self._empty.post()
                return
            if not freed:
                return
        finally:
            try:
                lock.release()
            except RuntimeError:  # acquire() itself was interrupted (see "Locking" above)
                pass
            if buf is not None:
                try:
                    buf.release()
                except BufferError:
                    guard._done = STALE  # type: ignore[union-attr]  # exported: release() warns
                if _viewcheck.ENABLED and _viewcheck.leftover(guard):  # python -X dev
                    guard._done = STALE  # type: ignore[union-attr]
        # Fast mode, after the lock's release (the fence, see _waiting): does the producer
        # sleep?  (Re-entrant, or not x86_64: signal() fences first.)
        try:
            if self._plain and not self._lock._is_owned() and not hq[_PSLEEP]:
                return
        except ValueError:
            return  # closed by another thread meanwhile (its header view is released)
        self._waiter.signal(hq, _PSLEEP, _CS)

    # -- teardown ----------------------------------------------------------------------------------
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

    def close(self) -> None:
        """Close this handle (idempotent, from any thread).  The owner also unlinks the
        ring's names (at once).

        Calls waiting in other threads raise ``ValueError`` within one wait slice (0.2 s);
        the semaphores, descriptor and header views are released when the last of them has
        returned.  Outstanding consumer views stay readable (the mapping lives until they are
        gone); releasing their guards afterwards does nothing.  An outstanding ProducerGuard
        can no longer be committed (``ValueError``, nothing published) and keeps this
        process's producer turn until it is aborted, dropped or refused its commit.
        In a forked child nothing is unlinked.
        """
        objs = self._objs
        if objs is None:
            self._closed = True
            return
        with self._lock:
            if objs.inflight.closed:
                return
            ps = self._ps
            if ps.owed_filled or ps.owed_empty:
                _batch.settle(self)  # tokens an interrupted batch still owes the peer
            self._closed = True
            self._on_close()
        if objs.owner and objs.pid == os.getpid():
            objs.unlink_names()
        objs.inflight.close(self._release_now)

    def _on_close(self) -> None:
        # Under the lock.  An outstanding ProducerGuard of this handle keeps the producer
        # turn: a view of its slot (``buf`` taken before the close, or exported further,
        # e.g. to NumPy, which cannot be released) may still be written, and handing the slot
        # to another handle of this process now would let those stale writes overwrite the
        # message it publishes there.  The turn ends when the guard does (abort, drop, or a
        # refused commit: see ShmTraceRing._commit/_abort).
        self._p_quiet = self._c_quiet = False
        waiter = self.__dict__.get("_waiter")
        if waiter is not None:
            waiter.closed = True  # waits in other threads end (ValueError)
        ps = self._ps
        ps.opened.discard(self)
        ps.turn.notify_all()  # producer threads waiting for their turn
        hdr = self.__dict__.get("_hdr")  # the last handle, closed normally (see _peers)
        if hdr is not None and not ps.opened and not self._keep_attachment:
            _peers.detach(hdr.cas, hdr.base, _PRODUCER_PID)
        if self._consumer_registered:
            self._consumer_registered = False
            # The last registered consumer handle of this process, with every slot it took
            # released: unregister, so a producer waiting on a ring whose names are gone is
            # told no consumer is left (ShmTraceRing._wait_space).  With slots still taken
            # the registration stays: a successor may take over (and deliver them again)
            # only once this process is dead.
            if (not any(h._consumer_registered for h in ps.opened)
                    and self._load(_RES) == self._load(_R)):
                _peers.unregister(self._load, self._store, _CONSUMER_PID)

    def _post_empty_via_open_handle(self) -> None:
        """Under the lock, this handle closed: give an ``empty`` token back through another
        open handle of the ring in this process (its semaphores are open: it is not closed,
        and closing needs this lock).  With none, the token is dropped: tokens are hints,
        and a producer's wait finds the visibly free slot after a slice (see _space)."""
        for h in list(self._ps.opened):
            if not h._closed:
                h._post(h._h_empty)
                return

    def _release_now(self) -> None:
        # Nothing in flight any more (see close()).
        with self._lock:
            for attr in ("_hq", "_hv"):
                self.__dict__.pop(attr, None)
            ro = self.__dict__.pop("_hq_ro", None)
            if ro is not None:
                ro.release()
            hdr = self.__dict__.pop("_hdr", None)
            if hdr is not None:
                hdr.release()
            self._slot_views = []
            self._ro_views = []
            objs = self._objs
            if objs is not None:
                objs.release()
        _RINGS.discard(self)

    def __enter__(self: Self) -> Self:
        self._check_open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            _exitnote.on_exception(self, exc)  # keeps an opener's record; notes why
        self.close()

    def __reduce__(self) -> Any:
        # A spawned child re-opens by id (never the owner); see _from_pickle.
        self._check_open()
        return (type(self)._from_pickle, (self.id,))

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

    # -- batches: one message per slot, many slots per lock section (ctshm._batch) ----------
    put_many = _batch.put_many
    get_many = _batch.get_many

    # -- copying helpers and the doors to the extensions (ctshm._doors) ---------------------
    get = _doors.get
    chunks = _doors.chunks
    __iter__ = _doors.iter_chunks
    aaccess = _doors.aaccess
    aget = _doors.aget
    aiter = _doors.aiter
    aacquire = _doors.aacquire
    aput = _doors.aput
    put_object = _doors.put_object
    get_object = _doors.get_object
    get_object_view = _doors.get_object_view
    aput_object = _doors.aput_object
    aget_object = _doors.aget_object
    sender = _doors.sender
    receiver = _doors.receiver


@_fork.on_fork
def _reset_in_child() -> None:
    """A forked child is not the parent's producer or consumer: its handles register anew
    (refused while the parent lives) and take the general path until then; they join their
    ring's fresh process state (see ctshm._process_state)."""
    for ring in list(_RINGS):
        ring._lock = ring._ps.lock
        if not ring._closed:
            ring._ps.opened.add(ring)
        ring._producer_registered = False
        ring._consumer_registered = False
        ring._p_quiet = ring._c_quiet = False
