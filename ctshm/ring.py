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
import struct
import threading
import time
import weakref
from typing import Any, Callable, Final, Iterator, NamedTuple, Optional, Union

from . import _proc, _shm, _space, atomics, libc
from .semaphore import NamedSemaphore, sem_file_identity

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

from .layout import (
    CAPACITY as _CAP,
)
from .layout import (
    CONSUMER_PID as _CONSUMER_PID,
)
from .layout import (
    CONSUMER_START as _CONSUMER_START,
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
    CREATOR_START as _CREATOR_START,
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
    EXT_VERSION as _VERSION,
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
    MAGIC,
    MAX_LEN_RECORDS,
    MSG_MAX,
    MSG_OFF,
    STATE_READY,
    VERSION,
    aligned_slot_size,
)
from .layout import (
    LEN_RECORDS as _LEN_RECORDS,
)
from .layout import (
    LEN_WORD as _LEN,
)
from .layout import (
    NONCE as _NONCE,
)
from .layout import (
    PRODUCER_PID as _PRODUCER_PID,
)
from .layout import (
    PRODUCER_START as _PRODUCER_START,
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
from .layout import (
    validate_geometry as _validate_geometry,
)

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


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


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
# Results and errors
# ---------------------------------------------------------------------------------------------


class CrashDetails(NamedTuple):
    """What the producer reported (``notify_crash``); all zero when it died silently."""

    signal: int = 0
    addr: int = 0
    operation: int = 0  # 0 unknown, 1 read, 2 write, 3 exec


class _Result:
    """Base of the access() results: small immutable value objects (cheap to build: one is
    made per message), comparable, printable, and usable with ``match``."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, k) == getattr(other, k) for k in self.__match_args__)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, k) for k in self.__match_args__)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__match_args__)
        return f"{type(self).__name__}({args})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


class Data(_Result):
    """A slot for the consumer: use ``.guard.buf`` and release the guard."""

    __slots__ = ("guard",)
    __match_args__ = ("guard",)
    guard: ConsumerGuard

    def __init__(self, guard: ConsumerGuard) -> None:
        object.__setattr__(self, "guard", guard)


class Finished(_Result):
    """The producer called ``mark_finished()`` and every committed slot was handed out."""

    __slots__ = ()


class Crashed(_Result):
    """The producer crashed (``notify_crash``) or died; every committed slot was handed out.

    ``pid`` is the dead producer's pid when ctshm detected the death itself (``details`` is
    then all zero), else None.  ``message`` is the producer's own account (ctshm producers:
    ``notify_crash(..., message=)`` or the crash hook).
    """

    __slots__ = ("details", "message", "pid")
    __match_args__ = ("details", "pid", "message")
    details: CrashDetails
    pid: Optional[int]
    message: str

    def __init__(self, details: CrashDetails, pid: Optional[int] = None,
                 message: str = "") -> None:
        object.__setattr__(self, "details", details)
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "message", message)

    @property
    def reason(self) -> str:
        if self.pid is not None:
            return f"producer pid {self.pid} died without notify_crash"
        if self.message:
            return f"producer crashed: {self.message}"
        return "producer called notify_crash"


class Timeout(_Result):
    """Nothing arrived within the timeout."""

    __slots__ = ()


_FINISHED_RESULT: Final = Finished()


AccessResult = Union[Data, Finished, Crashed, Timeout]


class CorruptRingError(ValueError):
    """The ring's header is inconsistent (corrupt or hostile peer, or not a ring at all)."""


class ConsumerGone(BrokenPipeError):
    """The ring's registered consumer process died while the producer waited for space."""


class ProducerCrashed(RuntimeError):
    """Raised by the copying helpers (``get``, iteration) when the producer crashed."""

    def __init__(self, result: Crashed) -> None:
        self.details = result.details
        self.pid = result.pid
        super().__init__(f"{result.reason}: {result.details}")


class RingFinished(EOFError):
    """Raised by ``get()`` once the producer finished and everything was delivered."""


# ---------------------------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------------------------


class _Guard:
    """What both guards share: the ring, the message index, the view, done-ness, and the
    pid that made them (finalizers do nothing in a forked child)."""

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


class ProducerGuard(_Guard):
    """A slot being written.  ``commit(nbytes)`` publishes it, ``abort()`` gives it back.

    As a context manager it commits the whole slot on normal exit (unless already committed
    or aborted) and aborts on an exception.  Dropping an unfinished guard aborts it.
    """

    __slots__ = ()

    @property
    def buf(self) -> memoryview:
        """Writable view of the slot (``size`` bytes as given to acquire; default the whole
        slot)."""
        return self._view()

    def __len__(self) -> int:
        return self._ring.slot_size

    def commit(self, nbytes: Optional[int] = None) -> None:
        """Publish the first ``nbytes`` bytes of the view (default: all of it)."""
        self._view()  # raises if already committed or aborted
        self._ring._commit(self, nbytes)

    def abort(self) -> None:
        """Give the slot back unpublished.  Idempotent after commit/abort."""
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
        return f"<ProducerGuard {self._ring.name!r} message={self.index} {state}>"


class ConsumerGuard(_Guard):
    """A slot handed to the consumer.  ``buf`` is read-only; ``release()`` hands it back.

    Guards may be released in any order and from any thread; the ring advances ``read_idx``
    in order.  Releasing twice is a no-op; a guard dropped unreleased is released.
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
            self._ring._complete(self.index, self)

    def __enter__(self) -> ConsumerGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            if not self._done and self._pid == _PID:
                self.release()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "released" if self._done else f"{len(self._buf)} bytes"
        return f"<ConsumerGuard {self._ring.name!r} message={self.index} {state}>"


_EMPTY: Final = memoryview(b"")


# ---------------------------------------------------------------------------------------------
# The ring
# ---------------------------------------------------------------------------------------------


class _Shared:
    """This process's bookkeeping for one ring, shared by all its handles here.

    Several handles of one ring in one process (opened twice, or a creator that also opens)
    must not keep separate reorder buffers - guards released through different handles would
    then never line up and read_idx would stall - nor separate producer-guard slots - two
    handles would hand out the same slot.  Keyed by the shm object's (st_dev, st_ino).
    The lock is re-entrant: a guard's finalizer may run (garbage collection) in a thread
    that is already inside a ring method.
    """

    __slots__ = ("__weakref__", "acquiring", "lock", "pending", "producer_guard")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pending: list[int] = []
        self.producer_guard: Optional[ProducerGuard] = None
        self.acquiring = False


_SHARED: weakref.WeakValueDictionary[tuple[int, int], _Shared] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def _shared_for(identity: tuple[int, int]) -> _Shared:
    with _SHARED_LOCK:
        st = _SHARED.get(identity)
        if st is None:
            st = _SHARED[identity] = _Shared()
        return st


def _finalize_ring(pid: int, fd: int, unlink: Optional[Callable[[], None]],
                   sems: list[NamedSemaphore]) -> None:
    # Never raises; does nothing in a forked child (the parent owns the names and handles).
    if os.getpid() != pid:
        return
    for s in sems:
        try:
            s.close()
        except Exception:  # pragma: no cover
            pass
    if unlink is not None:
        try:
            unlink()
        except Exception:  # pragma: no cover
            pass
    try:
        os.close(fd)
    except OSError:  # pragma: no cover
        pass


class ShmTraceRing:
    """A ring of large slots in POSIX shared memory (see the module docstring for the layout).

    Create with :meth:`create` (the owner: unlinks everything on close) or :meth:`open`.
    Producer: :meth:`acquire`, :meth:`put`, :meth:`mark_finished`, :meth:`notify_crash`.
    Consumer: :meth:`access`, :meth:`get`, iteration.
    """

    # Class-level defaults so a half-built object closes cleanly.
    _fd: int = -1
    _mapping: Optional[_shm.Mapping] = None
    _closed: bool = True
    _finalizer: Optional[weakref.finalize[Any, Any]] = None
    _owner: bool = False
    _wait_mode: Optional[str] = None
    _spin: _Spin = _Spin(None)
    _identity: Optional[tuple[int, int]] = None
    _sem_identity: tuple[Optional[tuple[int, int]], ...] = (None, None)
    name: str = ""
    id: str = ""

    def __init__(self) -> None:  # use create() / open()
        # Reorder buffer + producer-guard bookkeeping, shared by every handle of the same
        # ring in this process once it is open (see _Shared).
        self._ps = _Shared()
        self._lock = self._ps.lock
        self._producer_registered = False
        self._consumer_registered = False
        self._sems: list[NamedSemaphore] = []
        self._slot_views: list[Optional[memoryview]] = []

    # Per-process shared state, reached through these properties.
    @property
    def _pending(self) -> list[int]:
        return self._ps.pending

    @property
    def _producer_guard(self) -> Optional[ProducerGuard]:
        return self._ps.producer_guard

    @_producer_guard.setter
    def _producer_guard(self, g: Optional[ProducerGuard]) -> None:
        self._ps.producer_guard = g

    @property
    def _acquiring(self) -> bool:
        return self._ps.acquiring

    @_acquiring.setter
    def _acquiring(self, v: bool) -> None:
        self._ps.acquiring = v

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
        """
        name = _shm.object_name("ShmTraceRing", id, "_t", ("_filled", "_empty"))
        capacity = _shm.check_size("ShmTraceRing", capacity, "capacity")
        slot_size = _shm.check_size("ShmTraceRing", slot_size, "slot_size")
        if capacity > MAX_LEN_RECORDS:
            raise ValueError(f"ShmTraceRing capacity {capacity} is too large: at most "
                             f"{MAX_LEN_RECORDS} slots (each slot is >= 2 MiB)")
        aligned = aligned_slot_size(slot_size)
        total = HEADER_SIZE + capacity * aligned
        if total > _MAX_SIZE:
            raise ValueError(f"ShmTraceRing of {capacity} slots of {aligned} bytes "
                             f"({total} bytes) is beyond any address space")
        _space.check_free("ShmTraceRing", name, total)  # ENOSPC with the figures
        self = cls()
        self.id, self.name = id, name
        self._wait_mode = wait_mode
        self._spin = _Spin(spin)
        sem_names = (name + "_filled", name + "_empty")
        self._handle_existing(name, sem_names, replace)
        try:
            self._fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
        except FileExistsError as e:
            raise FileExistsError(e.errno, f"{e.strerror}: ring exists (pass replace=True, or "
                                  "remove it with `python -m ctshm rm`)", name) from None
        self._owner = True
        self._closed = False
        self._identity = _shm.fd_identity(self._fd)
        self._finalizer = weakref.finalize(self, _finalize_ring, os.getpid(), self._fd,
                                           self._unlink_names, self._sems)
        try:
            libc.ftruncate(self._fd, total, name)
            self._map(total)
            hq = self._hq
            hq[_CAP] = capacity
            hq[_SLOT] = aligned
            hq[_MAGIC] = MAGIC  # before the semaphores exist: see open()
            hq[_VERSION] = VERSION
            pid, start = _proc.me()
            hq[_CREATOR_PID] = pid
            hq[_CREATOR_START] = start
            hq[_NONCE] = int.from_bytes(os.urandom(8), "little")
            hq[_LEN_RECORDS] = capacity
            # Stale semaphores of a dead ring: we hold the shm name exclusively, so any
            # semaphore under our names is a leftover (never a live ring's).
            for s in sem_names:
                NamedSemaphore.unlink_name(s)
            self._sems.append(NamedSemaphore(sem_names[0], create=True, value=0, mode=0o644,
                                             wait_mode=wait_mode))
            self._sems.append(NamedSemaphore(sem_names[1], create=True, value=capacity,
                                             mode=0o644, wait_mode=wait_mode))
            self._sem_identity = tuple(s.identity() for s in self._sems)
            self._setup()
            self._fence()
            self._store(_STATE, STATE_READY)
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _handle_existing(name: str, sem_names: tuple[str, str], replace: Optional[bool]) -> None:
        if replace is False:
            return
        if replace is None:
            info = _peek(name)
            if info is None or not info.get("ctshm") or info.get("creator_alive", True):
                return  # absent, not ours, or alive: O_EXCL below decides
        for n in (name,):
            try:
                libc.shm_unlink(n)
            except FileNotFoundError:
                pass
        for s in sem_names:
            NamedSemaphore.unlink_name(s)

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
        _check_timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while True:
            self = cls()
            self.id, self.name = id, name
            self._wait_mode = wait_mode
            self._spin = _Spin(spin)
            try:
                problem = self._try_open(capacity, slot_size)
            except BaseException:
                self.close()
                raise
            if problem is None:
                return self
            self.close()
            if end is not None and time.monotonic() >= end:
                kind, why = problem
                if kind == "absent":
                    raise FileNotFoundError(2, f"no such ring (waited {timeout} s for its "
                                            "creator)", name)
                raise TimeoutError(f"ring {name!r} did not become ready within {timeout} s: "
                                   f"{why}")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def _try_open(self, capacity: Optional[int], slot_size: Optional[int]
                  ) -> Optional[tuple[str, str]]:
        """One attempt.  None on success, (kind, why) if not ready yet; raises if hopeless."""
        name = self.name
        try:
            self._fd = libc.shm_open(name, libc.O_RDWR, 0)
        except FileNotFoundError:
            return ("absent", "no such object")
        self._closed = False
        self._finalizer = weakref.finalize(self, _finalize_ring, os.getpid(), self._fd, None,
                                           self._sems)
        st = os.fstat(self._fd)
        if st.st_size < HEADER_SIZE:
            return ("init", f"the object is {st.st_size} bytes, smaller than a ring header "
                    f"({HEADER_SIZE}): not yet sized by its creator, or not a ring")
        hdr = _shm.Mapping(self._fd, HEADER_SIZE, writable=False, name=name)
        hq = hdr.view().cast("Q")
        try:
            is_ctshm = hq[_MAGIC] == MAGIC
            if is_ctshm and hq[_STATE] != STATE_READY:
                return ("init", "the ctshm creator has not finished initializing")
            cap, slot = hq[_CAP], hq[_SLOT]
            if cap == 0 or slot == 0:
                if is_ctshm:  # a ready ctshm ring never has these: corrupt
                    raise CorruptRingError(f"ring {name!r} header is corrupt: capacity={cap} "
                                           f"slot_size={slot}")
                return ("init", f"header not initialized (capacity {cap}, slot_size {slot})")
        finally:
            hq.release()
            del hdr
        sem_names = (name + "_filled", name + "_empty")
        if not is_ctshm:
            # Rust creator: shm_open, ftruncate, header, sem_unlink (stale), sem_open.  Until
            # it has re-created the semaphores, names from an older ring may still exist:
            # on Linux accept only semaphore files at least as new as the ring's last change.
            fresh = _sems_fresh(name, sem_names)
            if fresh is not None:
                return ("init", fresh)
        problem = _validate_geometry(name, cap, slot, st.st_size)
        if problem:
            raise CorruptRingError(problem)
        if capacity is not None and capacity != cap:
            raise ValueError(f"ring {name!r} has capacity {cap}, not {capacity}")
        if slot_size is not None and aligned_slot_size(slot_size) != slot:
            raise ValueError(f"ring {name!r} has slot_size {slot} (2 MiB-aligned), which "
                             f"slot_size={slot_size} ({aligned_slot_size(slot_size)} aligned) "
                             "does not match")
        try:
            for s in sem_names:
                self._sems.append(NamedSemaphore(s, wait_mode=self._wait_mode))
        except FileNotFoundError:
            return ("init", "semaphores not created yet")
        self._map(st.st_size)
        self._setup()
        self._check_indices()
        return None

    def _map(self, total: int) -> None:
        self._mapping = m = _shm.Mapping(self._fd, total, writable=True, name=self.name)
        if libc.IS_LINUX:
            libc.madvise(m.addr, total, libc.MADV_HUGEPAGE)  # advisory, as the original
        self._hv = m.view(0, HEADER_SIZE)
        self._hq = self._hv.cast("Q")
        self._base = m.addr

    def _setup(self) -> None:
        self._ps = _shared_for(_shm.fd_identity(self._fd))
        self._lock = self._ps.lock
        hq = self._hq
        self.capacity = int(hq[_CAP])
        self.slot_size = int(hq[_SLOT])
        self._is_ctshm = hq[_MAGIC] == MAGIC
        self._has_len = self.capacity <= MAX_LEN_RECORDS
        self._slot_views = [None] * self.capacity
        self._ro_views: list[Optional[memoryview]] = [None] * self.capacity
        self._backed = [0] * self.capacity  # bytes of each slot this process reserved
        self._filled, self._empty = self._sems
        # Hot path: the raw foreign functions and semaphore handles, one ctypes call each.
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

    # -- word access ---------------------------------------------------------------------------
    def _load(self, word: int) -> int:
        if self._plain:
            return int(self._hq[word])
        return self._atomics.load(self._base + 8 * word)

    def _store(self, word: int, value: int) -> None:
        if self._plain:
            self._hq[word] = value
        else:
            self._atomics.store(self._base + 8 * word, value)

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
            m = self._mapping
            if m is None:
                raise ValueError(f"ring {self.name!r} is closed")
            v = m.view(HEADER_SIZE + slot * self.slot_size, self.slot_size)
            self._slot_views[slot] = v
        return v

    def _ro_view(self, slot: int) -> memoryview:
        """Read-only view of ``slot``; on PyPy a natively read-only one (slices of PyPy's
        ``toreadonly()`` views copy the whole buffer on every ``struct.unpack_from``)."""
        v = self._view(slot)
        m = self._mapping
        if not _shm._PYPY or m is None:
            return v.toreadonly()
        return m.view(HEADER_SIZE + slot * self.slot_size, self.slot_size, readonly=True)

    def _check_open(self) -> None:
        if self._closed or self._mapping is None:
            raise ValueError(f"ring {self.name!r} is closed: open it again to use it")

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

        Raises ``TimeoutError`` on timeout, ``ConsumerGone`` if the registered consumer died
        while we waited, ``RuntimeError`` if this handle already has an outstanding guard or
        the ring was finished.
        """
        if self._closed:
            self._check_open()
        if timeout is not None:
            _check_timeout(timeout)
        if size is None:
            size = self.slot_size
        elif isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        elif not 0 <= size <= self.slot_size:
            raise ValueError(f"size {size} does not fit a slot of {self.slot_size} bytes")
        with self._lock:
            if self._producer_guard is not None or self._acquiring:
                what = (repr(self._producer_guard) if self._producer_guard is not None
                        else "another acquire() (in another thread)")
                raise RuntimeError(
                    f"ring {self.name!r}: {what} is still outstanding; commit or abort it "
                    "before acquiring another slot (one producer slot at a time keeps "
                    "messages in order)")
            fin = self._hq[_FIN] if self._plain else self._load(_FIN)
            if fin:
                raise RuntimeError(f"ring {self.name!r} is already "
                                   f"{'finished' if fin == _FINISHED else 'crashed'}: no "
                                   "more messages can be produced")
            if not self._producer_registered:
                self._register_producer()
            if self._trywait(self._h_empty) == 0 and self._space():  # fast path: never blocks
                return self._new_producer_guard(size)
            self._acquiring = True
        # The wait happens outside the lock: a consumer thread of this same handle must be
        # able to release slots meanwhile.
        try:
            if not self._wait_space(timeout):
                raise TimeoutError(f"ring {self.name!r}: no free slot within {timeout} s "
                                   "(the consumer is not releasing slots)")
        except BaseException:
            self._acquiring = False
            raise
        with self._lock:
            self._acquiring = False
            if self._closed:
                raise ValueError(f"ring {self.name!r} was closed while acquire() waited")
            return self._new_producer_guard(size)

    def _new_producer_guard(self, size: int) -> ProducerGuard:
        # Under self._lock, holding an ``empty`` token.
        w = self._hq[_W] if self._plain else self._load(_W)
        slot = w % self.capacity
        if size > self._backed[slot]:
            try:
                self._reserve(slot, size)
            except BaseException:
                self._empty.post()  # give the slot back: the ring stays usable
                raise
        v = self._slot_views[slot]
        if v is None:
            v = self._view(slot)
        g = ProducerGuard(self, w, v[:size])
        self._producer_guard = g
        return g

    def _reserve(self, slot: int, size: int) -> None:
        """``posix_fallocate`` the first ``size`` bytes of ``slot`` (rounded up to pages)."""
        size = min(self.slot_size, -(-size // _PAGE) * _PAGE)
        try:
            libc.posix_fallocate(self._fd, HEADER_SIZE + slot * self.slot_size, size, self.name)
        except OSError as e:
            raise OSError(e.errno, f"{os.strerror(e.errno or 0)}: cannot reserve {size} bytes "
                          f"for slot {slot} (is /dev/shm full?)", self.name) from None
        self._backed[slot] = size

    def _space(self) -> bool:
        """Is slot write_idx free (write_idx - read_idx < capacity)?

        The ``empty`` semaphore is only a wake-up hint; this is what makes writing safe.  A
        consumer killed between storing read_idx and posting ``empty`` loses that token for
        good; a producer waiting for it takes the visibly free slot after a wait slice
        instead (see _wait_space), and the late token, if it ever comes, finds the ring
        full and is dropped here.
        """
        if self._plain:
            hq = self._hq
            return bool(hq[_W] - hq[_R] < self.capacity)
        return bool(self._load(_W) - self._load(_R) < self.capacity)

    def _wait_space(self, timeout: Optional[float]) -> bool:
        """Take an ``empty`` token: spin briefly watching read_idx, then sleep in slices,
        checking between slices that the registered consumer is alive, and taking a slot
        that is visibly free even without its token (lost by a killed consumer)."""
        hq, cap, plain = self._hq, self.capacity, self._plain
        empty, spin = self._empty, self._spin
        t0 = time.perf_counter()
        if spin.budget > 0 and (timeout is None or timeout > 0):
            end = t0 + spin.budget
            while time.perf_counter() < end:
                free = (hq[_W] - hq[_R] < cap if plain
                        else self._load(_W) - self._load(_R) < cap)
                if free and empty.try_acquire():
                    spin.record(time.perf_counter() - t0)
                    return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = LIVENESS_SLICE
            if deadline is not None:
                chunk = min(chunk, deadline - time.monotonic())
                if chunk <= 0:
                    spin.record(time.perf_counter() - t0)
                    return False
            if empty.acquire(chunk):
                if self._space():
                    spin.record(time.perf_counter() - t0)
                    return True
                continue  # a surplus token: dropped
            if self._space():  # free, but its token never came (see _space)
                return True
            cpid = self._dead_peer(_CONSUMER_PID)
            if cpid:
                raise ConsumerGone(
                    32, f"the consumer of ring {self.name!r} (pid {cpid}) died while the "
                    "producer waited for a free slot; a new consumer that opens the ring will "
                    "resume (slots it had not released are delivered again)", self.name)

    def _register_producer(self) -> None:
        pid, start = _proc.me()
        old = self._load(_PRODUCER_PID)
        if old and old != pid and _proc.is_alive(old, self._load(_PRODUCER_START)):
            raise RuntimeError(f"ring {self.name!r} already has a live producer (pid {old}); "
                               "a ring has exactly one producer process")
        self._set_peer(_PRODUCER_PID, pid, start)
        self._producer_registered = True

    def expect_producer(self, pid: int) -> None:
        """Register ``pid`` as the ring's producer now (e.g. the child you just started), so
        that its death is reported even if it dies before its first ``acquire()``."""
        self._check_open()
        self._set_peer(_PRODUCER_PID, pid, _proc.start_time(pid))

    def expect_consumer(self, pid: int) -> None:
        """Register ``pid`` as the ring's consumer now, so a producer waiting for space
        learns of its death even if it dies before its first ``access()``."""
        self._check_open()
        self._set_peer(_CONSUMER_PID, pid, _proc.start_time(pid))

    def _set_peer(self, word: int, pid: int, start: int) -> None:
        # pid (0 while changing), start, pid: a reader that sees the same non-zero pid before
        # and after reading start has a consistent pair (see _dead_peer).
        self._store(word, 0)
        self._store(word + 1, start)
        self._store(word, pid)

    def _dead_peer(self, word: int) -> int:
        """The registered peer's pid if it is dead, else 0 (alive, none, or changing)."""
        pid = self._load(word)
        if not pid:
            return 0
        start = self._load(word + 1)
        if self._load(word) != pid or _proc.is_alive(pid, start):
            return 0
        return pid

    def _commit(self, guard: ProducerGuard, nbytes: Optional[int]) -> None:
        buf = guard._buf
        if nbytes is None:
            nbytes = len(buf)
        elif isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"nbytes must be an int, not {type(nbytes).__name__}")
        elif not 0 <= nbytes <= len(buf):
            raise ValueError(f"cannot commit {nbytes} bytes: the slot holds 0..{len(buf)}")
        with self._lock:
            if guard._done:
                raise ValueError(f"{guard!r} was already committed or aborted")
            self._check_open()
            idx = guard.index
            hq = self._hq
            if (hq[_FIN] if self._plain else self._load(_FIN)) == _CRASHED:
                guard._done = True
                self._producer_guard = None
                raise RuntimeError(f"ring {self.name!r} crashed (notify_crash) while "
                                   f"{guard!r} was being written: it is not published")
            guard._done = True
            guard._buf = _EMPTY
            buf.release()  # no writes through this guard after publication
            self._publish(idx, nbytes)
            self._producer_guard = None
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
        if self._plain:
            hq[_W] = idx + 1
        else:
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
            if self._producer_guard is guard:
                self._producer_guard = None
            if self._closed:
                return
        self._empty.post()

    def put(self, data: Any, timeout: Optional[float] = None) -> None:
        """Copy ``data`` (bytes-like) into a slot and commit exactly its length."""
        src = memoryview(data).cast("B")
        n = src.nbytes
        if n > self.slot_size:
            raise ValueError(f"{n} bytes do not fit a slot of {self.slot_size} bytes")
        if timeout is not None:
            _check_timeout(timeout)
        # Fast path: a free slot right now whose prefix is already backed: one lock section,
        # no guard object (sem_trywait, copy, publish, sem_post).  Anything else - waiting,
        # first use of a slot, registration, finished, misuse - takes the general path.
        if (self._producer_registered and not self._closed and self._producer_guard is None
                and not self._acquiring):
            with self._lock:
                hq, plain = self._hq, self._plain
                if (self._producer_guard is None and not self._acquiring
                        and not (hq[_FIN] if plain else self._load(_FIN))
                        and self._trywait(self._h_empty) == 0 and self._space()):
                    w = hq[_W] if plain else self._load(_W)
                    slot = w % self.capacity
                    v = self._slot_views[slot]
                    if n <= self._backed[slot] and v is not None:
                        try:
                            v[:n] = src
                        except BaseException:
                            self._empty.post()
                            raise
                        self._publish(w, n)
                        published = True
                    else:  # give the token back and take the general path
                        self._empty.post()
                        published = False
                else:
                    published = False
            if published:
                if self._post(self._h_filled) == -1:
                    self._filled.post()
                return
        g = self.acquire(timeout, size=n)
        try:
            g._buf[:n] = src
        except BaseException:
            g.abort()
            raise
        g.commit(n)

    def mark_finished(self) -> None:
        """End of stream: the consumer gets ``Finished`` after every committed slot."""
        self._check_open()
        with self._lock:
            if self._producer_guard is not None:
                raise RuntimeError(f"ring {self.name!r}: commit or abort "
                                   f"{self._producer_guard!r} before mark_finished()")
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
        ``sem_post``: no lock, no allocation beyond Python's own, so it may be called from a
        signal handler.  ``message`` (ctshm consumers only) is truncated to 1020 UTF-8 bytes.

        The crash is recorded at the current ``write_idx``: ctshm consumers deliver every
        message committed before it, and none after, so an outstanding ``ProducerGuard`` is
        never delivered, even if its ``commit()`` was in progress when this ran (a signal
        handler interrupting it).  A stream that already ended (finished or crashed) stays
        as it is: every consumer thread sees the same end."""
        if self._closed:
            return
        if not (_is_int(signal) and -(1 << 31) <= signal < (1 << 31) and _is_int(addr)
                and 0 <= addr < (1 << 64) and _is_int(operation)
                and -(1 << 31) <= operation < (1 << 31)):
            raise ValueError(f"notify_crash({signal!r}, {addr!r}, {operation!r}): signal and "
                             "operation must be 32-bit ints and addr an unsigned 64-bit int")
        if self._load(_FIN):
            return  # already finished or crashed: the first end wins
        self._store(_CRASH_W, self._load(_W) + 1)
        raw = message.encode("utf-8", "replace")[:MSG_MAX] if message else b""
        if raw:
            self._hv[MSG_OFF + 4:MSG_OFF + 4 + len(raw)] = raw
        struct.pack_into("<I", self._hv, MSG_OFF, len(raw))
        _CRASH.pack_into(self._hv, _CRASH_OFF, signal, addr & 0xFFFFFFFFFFFFFFFF, operation)
        self._fence()  # details before the flag
        if self._cas(self._a_fin, 0, _CRASHED) == 0:
            self._filled.post()

    # -- consumer ------------------------------------------------------------------------------
    def access(self, timeout: Optional[float] = None) -> AccessResult:
        """Wait up to ``timeout`` seconds (``None``: without bound) for the next slot.

        Returns ``Data(guard)``, ``Finished()``, ``Crashed(details, pid)`` or ``Timeout()``.
        """
        if self._closed:
            self._check_open()
        if not self._consumer_registered:
            self._register_consumer()
        if timeout is not None:
            _check_timeout(timeout)
        filled = self._filled
        if self._trywait(self._h_filled) == 0:
            r = self._claim()
            if r is not None:
                return r
        deadline = None if timeout is None else time.monotonic() + timeout
        spin = self._spin
        t0 = time.perf_counter()
        if spin.budget > 0 and (timeout is None or timeout > 0):
            hq, plain = self._hq, self._plain
            end = t0 + spin.budget
            while time.perf_counter() < end:
                if plain:
                    ready = hq[_W] != hq[_RES] or hq[_FIN]
                else:
                    ready = self._load(_W) != self._load(_RES) or self._load(_FIN)
                if ready and filled.try_acquire():
                    r = self._claim()
                    if r is not None:
                        spin.record(time.perf_counter() - t0)
                        return r
        while True:
            chunk = LIVENESS_SLICE
            if deadline is not None:
                chunk = min(chunk, deadline - time.monotonic())
                if chunk <= 0:
                    spin.record(time.perf_counter() - t0)
                    return self._on_timeout()
            if filled.acquire(chunk):
                r = self._claim()
                if r is not None:
                    spin.record(time.perf_counter() - t0)
                    return r
                continue
            self._check_producer_alive()
            # Self-healing: a consumer that died between taking a token and reserving its
            # slot lost that token.  Work that is visible in the header is claimed without a
            # token; a token left over later finds nothing and is dropped by _claim().
            if self._load(_RES) < self._load(_W) or self._load(_FIN):
                r = self._claim()
                if r is not None:
                    return r

    def _claim(self) -> Optional[AccessResult]:
        """We hold one ``filled`` token: reserve a slot, or report the end."""
        hq, plain, cas, a_res = self._hq, self._plain, self._cas, self._a_res
        while True:
            # `finished` first: the producer sets it after its last commit, so having seen it
            # we also see every write_idx it published (loaded after).  The other order lets
            # a commit + finish slip between the loads: Finished with a message unread.
            fin = hq[_FIN] if plain else self._load(_FIN)
            if plain:
                res, w = hq[_RES], hq[_W]
            else:
                res, w = self._load(_RES), self._load(_W)
            # ... and `finished` again: if it changed meanwhile, write_idx may include a
            # commit published after a crash flag that this thread did not see.  With the
            # same value before and after, a write_idx read while running was published
            # before any crash, and one read after a crash is capped below.
            if (hq[_FIN] if plain else self._load(_FIN)) != fin:
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
            v = self._ro_views[slot] = self._ro_view(slot)
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
        n = min(struct.unpack_from("<I", self._hv, MSG_OFF)[0], MSG_MAX)
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
        ppid = self._dead_peer(_PRODUCER_PID)
        if not ppid:
            return
        # Dead for sure, so it writes nothing more.  Load `finished` again: a producer that
        # called notify_crash (or mark_finished) just before dying keeps its own account.
        if self._load(_FIN):
            return
        self._store(_CRASH_W, self._load(_W) + 1)
        self._store(_DEAD_PID, ppid)
        _CRASH.pack_into(self._hv, _CRASH_OFF, 0, 0, 0)
        struct.pack_into("<I", self._hv, MSG_OFF, 0)
        self._fence()
        if self._cas(self._a_fin, 0, _CRASHED) == 0:
            self._filled.post()

    def _register_consumer(self) -> None:
        with self._lock:
            if self._consumer_registered:
                return
            pid, start = _proc.me()
            old = self._load(_CONSUMER_PID)
            if old and old != pid:
                if _proc.is_alive(old, self._load(_CONSUMER_START)):
                    raise RuntimeError(f"ring {self.name!r} already has a live consumer (pid "
                                       f"{old}); a ring has exactly one consumer process")
                # The previous consumer died: slots it reserved but never released go back
                # to the queue (at-least-once delivery across a consumer restart).
                r, res = self._load(_R), self._load(_RES)
                if not r <= res <= r + self.capacity:
                    raise CorruptRingError(
                        f"ring {self.name!r} header is corrupt: reserved_idx={res} "
                        f"read_idx={r} capacity={self.capacity}")
                if res > r:
                    self._store(_RES, r)
                    for _ in range(res - r):
                        self._filled.post()
            self._set_peer(_CONSUMER_PID, pid, start)
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
            plain, hq = self._plain, self._hq
            cur = hq[_R] if plain else self._load(_R)
            if idx == cur and not pending:  # the common in-order case
                if plain:
                    hq[_R] = cur + 1
                else:
                    self._store(_R, cur + 1)
                if self._post(self._h_empty) == -1:
                    self._empty.post()
                return
            heapq.heappush(pending, idx)
            while pending and pending[0] == cur:
                heapq.heappop(pending)
                cur += 1
                self._store(_R, cur)
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

    def __iter__(self) -> Iterator[Union[bytes, memoryview]]:
        return self.chunks()

    # -- state ---------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def owner(self) -> bool:
        return self._owner

    def header(self) -> dict[str, Any]:
        """A snapshot of the shared header (diagnostics)."""
        self._check_open()
        hq = self._hq
        sig, addr, op = _CRASH.unpack_from(self._hv, _CRASH_OFF)
        return {
            "write_idx": int(hq[_W]), "read_idx": int(hq[_R]), "reserved_idx": int(hq[_RES]),
            "capacity": int(hq[_CAP]), "slot_size": int(hq[_SLOT]), "finished": int(hq[_FIN]),
            "crash_details": CrashDetails(sig, addr, op),
            "ctshm": hq[_MAGIC] == MAGIC, "creator_pid": int(hq[_CREATOR_PID]),
            "producer_pid": int(hq[_PRODUCER_PID]), "consumer_pid": int(hq[_CONSUMER_PID]),
            "dead_pid": int(hq[_DEAD_PID]),
        }

    # -- teardown ------------------------------------------------------------------------------
    def _unlink_names(self) -> None:
        """Owner only: remove the shm object and semaphores, unless a successor re-created
        them (identity check: the name must still refer to *our* object)."""
        if _shm.name_identity(self.name) != self._identity:
            return
        for s, ident in zip((self.name + "_filled", self.name + "_empty"), self._sem_identity):
            if ident is not None and sem_file_identity(s) not in (ident, None):
                continue  # a successor's semaphore
            NamedSemaphore.unlink_name(s)
        _shm.unlink_if_same(self.name, self._identity)

    def close(self) -> None:
        """Close this handle (idempotent).  The owner also unlinks the ring's names.

        Outstanding consumer views stay readable (the mapping lives until they are gone);
        releasing their guards afterwards does nothing.  An outstanding ProducerGuard can no
        longer be committed.
        """
        with self._lock:
            if self._closed and self._finalizer is None:
                return
            self._closed = True
            self._producer_guard = None
            fin, self._finalizer = self._finalizer, None
        for attr in ("_hq", "_hv"):
            v = self.__dict__.pop(attr, None)
            if v is not None:
                try:
                    v.release()
                except BufferError:
                    pass
        self._slot_views = []
        self._ro_views = []
        if fin is not None:
            fin()  # closes semaphores, unlinks (owner, same objects), closes the fd
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._mapping = None

    def __enter__(self) -> ShmTraceRing:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        # A spawned child re-opens by id (never the owner).
        return (ShmTraceRing.open, (self.id,))

    def __repr__(self) -> str:
        if self._closed:
            return f"<ShmTraceRing {self.name!r} closed>"
        h = self._hq
        role = "owner" if self._owner else "opener"
        return (f"<ShmTraceRing {self.name!r} {role} capacity={self.capacity} "
                f"slot_size={self.slot_size} write={h[_W]} read={h[_R]} reserved={h[_RES]} "
                f"finished={h[_FIN]}>")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout != timeout or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, not {timeout!r}")


def _sems_fresh(name: str, sem_names: tuple[str, str]) -> Optional[str]:
    """None if both semaphores exist and (Linux) were born after the ring object.

    The Rust creator runs shm_open, ftruncate, header init, sem_unlink (stale names), sem_open;
    until it has re-created the semaphores, names left by an older ring may still exist and
    an opener that used them would deadlock.  tmpfs records each file's birth time (statx), so
    a semaphore born before the ring object is such a leftover: keep waiting.  (ctime does
    not work: tmpfs updates the ring's ctime whenever a new page is first written.)
    """
    if not libc.IS_LINUX:
        return None  # cannot tell: sem_open decides
    ring_birth = libc.birth_time_ns("/dev/shm/" + name[1:])
    for s in sem_names:
        path = "/dev/shm/sem." + s[1:]
        if not os.path.exists(path):
            return f"semaphore {s!r} not created yet"
        born = libc.birth_time_ns(path)
        if ring_birth is not None and born is not None and born < ring_birth:
            return f"semaphore {s!r} is older than the ring object (a leftover)"
    return None


def _peek(name: str) -> Optional[dict[str, Any]]:
    """Read an existing ring's header without opening it as a ring (None if absent)."""
    try:
        fd = libc.shm_open(name, libc.O_RDONLY, 0)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        info: dict[str, Any] = {"size": size}
        if size < HEADER_SIZE:
            return info
        m = _shm.Mapping(fd, 4096, writable=False, name=name)
        hq = m.view().cast("Q")
        try:
            info["ctshm"] = hq[_MAGIC] == MAGIC
            pid, start = int(hq[_CREATOR_PID]), int(hq[_CREATOR_START])
            info["creator_pid"] = pid
            info["creator_alive"] = _proc.is_alive(pid, start) if info["ctshm"] else True
        finally:
            hq.release()
        return info
    finally:
        os.close(fd)
