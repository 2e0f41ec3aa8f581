"""One process's handle on a ring: its named objects, the mapped header and slot views, the
word access, and the handle's lifecycle - create, open, close, diagnostics.

The protocol (``ctshm.ring.ShmTraceRing``: producer and consumer paths, guards, the reorder
logic, the wait loop) derives from :class:`RingHandle` and supplies ``_configure(spin)``.
This process's bookkeeping for a ring - the reorder heap, the producer turn, the lock - is
one :class:`_Shared` per ring object, found by its identity, so that every handle of a ring
in this process shares it; a forked child resets it.  The OS objects themselves belong to
:class:`ctshm._ringobjects.RingObjects`; the bytes to :mod:`ctshm.layout`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable, Final, Optional, TypeVar

from . import _exitnote, _peers, _proc, _shm, _space, _unread, atomics, layout as L, libc
from ._procstate import RINGS as _RINGS, Shared as _Shared, shared_for as _shared_for
from ._ringobjects import RingObjects
from .layout import (
    CAPACITY as _CAP,
    CONSUMER_PID as _CONSUMER_PID,
    CONSUMER_STATS as _CS,
    CRASH as _CRASH,
    CRASH_OFF as _CRASH_OFF,
    CREATOR_PID as _CREATOR_PID,
    DEAD_PID as _DEAD_PID,
    EXT_MAGIC as _MAGIC,
    EXT_STATE as _STATE,
    FIN_CRASHED as _CRASHED,
    FIN_FINISHED as _FINISHED,
    FINISHED as _FIN,
    HEADER_SIZE,
    MAGIC,
    MAX_LEN_RECORDS,
    MSG_LEN,
    MSG_MAX,
    MSG_OFF,
    PRODUCER_PID as _PRODUCER_PID,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    RESERVED_IDX as _RES,
    SLOT_SIZE as _SLOT,
    STAT_FIELDS,
    STATE_READY,
    WRITE_IDX as _W,
    aligned_slot_size,
)
from .results import CorruptRingError, CrashDetails, Crashed
from .semaphore import check_wait_mode

if TYPE_CHECKING:
    from .semaphore import NamedSemaphore

__all__ = ["RingHandle", "check_timeout", "is_int", "not_bytes"]

Self = TypeVar("Self", bound="RingHandle")

_MAKE: Final = object()  # create() / open() build rings; the class alone refuses
_MAX_SIZE: Final = (1 << 63) - 1
#: A timeout beyond this (about 30 years) waits without bound.
_MAX_TIMEOUT: Final = 1e9


class RingHandle:
    """The handle part of a ring (see the module docstring)."""

    # Shared-word access, bound per handle by _bind_word_access (instance attributes, so a
    # test can shadow one to replay an interleaving).
    _load: Callable[[int], int]
    _store: Callable[[int, int], None]
    _lock: Any  # the _Shared's RLock
    _filled: NamedSemaphore
    _empty: NamedSemaphore

    # Class-level defaults so a half-built object closes cleanly.
    _objs: Optional[RingObjects] = None
    _closed: bool = True
    _fast: bool = False  # see "Fast mode" in ctshm.ring
    _wait_mode: Optional[str] = None
    _keep_attachment: bool = False  # set by __exit__ on an exception (see _on_close)
    name: str = ""
    id: str = ""
    capacity: int = 0
    slot_size: int = 0

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _MAKE:
            kind = type(self).__name__
            raise TypeError(f"{kind} cannot be constructed directly: use {kind}.create(id, "
                            f"capacity, slot_size) or {kind}.open(id)")
        self._slot_views: list[Optional[memoryview]] = []
        self._ro_views: list[Optional[memoryview]] = []
        # Reorder buffer + producer-turn bookkeeping, shared by every handle of the same
        # ring in this process once it is open (see _Shared).
        self._ps = _Shared()
        self._lock = self._ps.lock
        self._producer_registered = False
        self._consumer_registered = False

    def _configure(self, spin: Optional[float]) -> None:
        """Hook: the protocol's settings, checked before anything is opened."""
        raise NotImplementedError

    def _attach(self, identity: tuple[int, int]) -> None:
        """Once mapped: join this process's state for the ring (see _Shared)."""
        self._ps = _shared_for(identity)
        self._lock = self._ps.lock
        self._backed = [0] * self.capacity  # bytes of each slot this process reserved
        self._len_backed = False  # length-record pages reserved by this process
        with self._lock:
            self._ps.opened.add(self)
        _RINGS.add(self)

    def _on_close(self) -> None:
        # Under the lock.  An outstanding ProducerGuard of this handle keeps the producer
        # turn: a view of its slot (``buf`` taken before the close, or exported further,
        # e.g. to NumPy, which cannot be released) may still be written, and handing the slot
        # to another handle of this process now would let those stale writes overwrite the
        # message it publishes there.  The turn ends when the guard does (abort, drop, or a
        # refused commit: see ShmTraceRing._commit/_abort).
        ps = self._ps
        ps.opened.discard(self)
        ps.turn.notify_all()  # producer threads waiting for their turn
        cas = self.__dict__.get("_cas")  # the last handle, closed normally (see _peers)
        if cas is not None and not ps.opened and not self._keep_attachment:
            _peers.detach(cas, self._base, _PRODUCER_PID)
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

    def _detach(self) -> None:
        _RINGS.discard(self)

    @classmethod
    def _new(cls: type[Self], id: str, name: str, wait_mode: Optional[str], spin: Optional[float]
             ) -> Self:
        if wait_mode is not None:  # before anything is made: the error names the ring
            wait_mode = check_wait_mode(f"ShmTraceRing {name!r}", wait_mode)
        self = cls(_token=_MAKE)
        self.id, self.name = id, name
        self._wait_mode = wait_mode
        self._configure(spin)
        self._objs = RingObjects(name)
        return self

    # -- construction ------------------------------------------------------------------------
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
        _space.check_free("ShmTraceRing", name, total, _space.SPARSE_RING, 3)
        self = cls._new(id, name, wait_mode, spin)
        objs = self._objs
        assert objs is not None
        objs.create(replace, mode)
        self._closed = False
        objs.arm(self)
        try:
            objs.initialize(capacity, aligned, wait_mode, fast)
            self._setup()
            self._fence()
            self._store(_STATE, STATE_READY)
        except BaseException:
            self.close()
            raise
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
                        with self._lock:  # the producer-to-be until it shows otherwise
                            _peers.attach(self._load, self._cas, self._base, _PRODUCER_PID)
                        return self
                except BaseException:
                    self.close()
                    raise
            self.close()
            if why == "absent" and not wait_absent:
                raise FileNotFoundError(2, f"ring {name!r} does not exist any more: it existed "
                                        "when this handle was pickled, and its owner has "
                                        "closed (unlinked) it or died since", name)
            if end is not None and time.monotonic() >= end:
                if why == "absent":
                    raise FileNotFoundError(2, _unread.absent_text(name, id, timeout), name)
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
        hq = self._hq
        self.capacity = int(hq[_CAP])
        self.slot_size = int(hq[_SLOT])
        self._is_ctshm = hq[_MAGIC] == MAGIC
        # Fast mode is the creator's choice, read once: it never changes for a ring.
        self._fast = self._is_ctshm and hq[L.MODE] == L.MODE_FAST
        self._has_len = self.capacity <= MAX_LEN_RECORDS
        self._slot_views = [None] * self.capacity
        self._ro_views = [None] * self.capacity
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
        self._a_csleep = base + 8 * L.C_SLEEP
        self._a_psleep = base + 8 * L.P_SLEEP
        self._cas = b.compare_exchange
        self._fence = b.fence
        self._bind_word_access()
        self._attach(_shm.fd_identity(objs.fd))

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

    def _ro_view(self, slot: int) -> memoryview:
        """Read-only view of ``slot``; on PyPy a natively read-only one (slices of PyPy's
        ``toreadonly()`` views copy the whole buffer on every ``struct.unpack_from``)."""
        v = self._view(slot)
        objs = self._objs
        m = objs.mapping if objs is not None else None
        if not _shm._PYPY or m is None:
            return v.toreadonly()
        return m.view(HEADER_SIZE + slot * self.slot_size, self.slot_size, readonly=True)

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
        return ValueError(f"ring {self.name!r} was closed while {what}() waited (close() was "
                          "called meanwhile: by another thread, or by this task's own code)")

    # -- registration in advance, checks and records shared by both paths -------------------
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

    def _indices_corrupt(self) -> bool:
        # reserved was read before write; another consumer thread may have advanced reserved
        # in between.  Read write first, then reserved: write <= read + capacity <=
        # reserved + capacity must then hold unless the header is really corrupt.
        w = self._load(_W)
        res = self._load(_RES)
        return bool(w - res > self.capacity)

    def _crashed(self) -> Crashed:
        signal, addr, operation = _CRASH.unpack_from(self._hv, _CRASH_OFF)
        dead = self._load(_DEAD_PID)
        n = min(MSG_LEN.unpack_from(self._hv, MSG_OFF)[0], MSG_MAX)
        msg = bytes(self._hv[MSG_OFF + 4:MSG_OFF + 4 + n]).decode("utf-8", "replace")
        return Crashed(CrashDetails(signal, addr, operation), dead or None, msg)

    # -- state ---------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fast(self) -> bool:
        """True if the ring was created with ``fast=True`` (ctshm peers only; see "Fast
        mode" in :mod:`ctshm.ring`), False for the seed's protocol (and any Rust-created
        ring)."""
        return self._fast

    def __len__(self) -> int:
        """Messages committed and not yet released (``write_idx - read_idx``): the backlog."""
        with self._lock:
            self._check_open()
            return int(self._load(_W) - self._load(_R))

    def __bool__(self) -> bool:
        return True  # an empty ring is still a ring (len() is its backlog)

    def stats(self) -> dict[str, Any]:
        """Live counters of both sides (each written only by its own side, with plain
        stores): messages and bytes produced/consumed, blocking waits, wake-up posts, waits
        that ended while spinning; and the backlog.  Also ``python -m ctshm stat``."""
        with self._lock:
            self._check_open()
            hq = self._hq
            out: dict[str, Any] = {
                side: {f: int(hq[base + i]) for i, f in enumerate(STAT_FIELDS)}
                for side, base in (("producer", _PS), ("consumer", _CS))}
            out["backlog"] = int(self._load(_W) - self._load(_R))
            return out

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
                "mode": int(hq[L.MODE]), "c_sleep": int(hq[L.C_SLEEP]),
                "p_sleep": int(hq[L.P_SLEEP]),
            }

    # -- teardown ------------------------------------------------------------------------------
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
            self._closed = True
            self._on_close()
        if objs.owner and objs.pid == os.getpid():
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
        self._detach()

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


def check_timeout(timeout: Optional[float], where: str = "", ring: str = ""
                  ) -> Optional[float]:
    """``timeout`` as a float (or None): a number of seconds >= 0; huge values mean forever.
    Errors start with ``where`` (``ring``: with "ring NAME: " before it, formatted only then:
    the hot paths call this once per message)."""
    if timeout is None:
        return None
    if ring:
        where = f"ring {ring!r}: {where}"
    pre = f"{where}: " if where else ""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{pre}timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout != timeout or timeout < 0:
        raise ValueError(f"{pre}timeout must be >= 0 seconds or None, not {timeout!r}")
    if timeout >= _MAX_TIMEOUT:
        return None
    return float(timeout)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def not_bytes(name: str, what: str, data: Any) -> str:
    """The message of a ``TypeError`` for a non-buffer ``data`` given to ``what``."""
    hint = " (encode text first: .encode())" if isinstance(data, str) else ""
    return (f"ring {name!r}: {what}() needs a bytes-like object (bytes, bytearray, "
            f"memoryview, array, numpy array), not {type(data).__name__}{hint}")
