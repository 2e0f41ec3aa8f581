"""ShmBroadcast: one writer process, many reader processes, every reader gets every message.

The payload is written once into a ring of slots in one POSIX shm object (``/{id}_b``; the
layout and its diagram are in :mod:`ctshm._bcast_layout`); each live reader copies it out
(``get``) or reads it in place (``access``), and the writer overwrites a slot only once every
live reader has released it.  Protocol (model-checked in ``model/broadcast.pml``):

* The writer publishes message ``m`` by writing payload and length into slot ``m % capacity``
  and then storing ``W = m + 1``.  It may write ``m`` only when ``m < limit``, where ``limit``
  is ``min(R of every JOINING/ACTIVE reader) + capacity`` from its last scan of the reader
  table (scanned again only when ``m`` reaches it).
* A reader claims a FREE table slot (or one whose process is dead) by compare-exchange,
  *then* loads ``W`` as its join point ``j`` and stores ``R = j``; it reads ``m`` once
  ``m < W``, copies, checks that its slot is still its own (else :class:`ReaderEvicted`:
  the copy may be torn) and stores ``R = m + 1``.  The end (``FIN``) and a crash (``CRASH``)
  are loaded *before* ``W``, so neither is reported while a message is left.
* Sleep and wake-up: readers announce themselves in ``RMASK`` (one bit each, set by
  compare-exchange), re-check, sleep on their own semaphore; the writer, after each publish,
  takes every bit (compare-exchange to 0) and posts one token per bit.  The writer announces
  in ``WSLEEP``; a reader that advanced ``R`` (or joined, or left) takes the flag and posts.
  Between each store and the load of the other side's sleep word there is a full fence (the
  handle lock's release on x86_64, else an explicit fence), so no wake-up is lost; a token
  left over only causes one spurious wake-up.
* Dead readers: between sleep slices the writer checks the processes of the readers that
  hold it back (pid + start time) and frees their slots by compare-exchange; a stopped reader
  is alive: the writer waits (its ``timeout``), unless the user evicts it (``evict()``, or
  ``evict_after=`` seconds of waiting): its slot becomes EVICTED, the writer stops waiting for
  it, and the reader gets :class:`ReaderEvicted` when it resumes.
* A writer killed mid-``put`` never stored ``W``: nothing partial is published; readers that
  reach ``W`` find its process dead and raise ``ProducerCrashed``.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Optional

from . import _bcast_layout as L, _shm
from ._bcast_peers import AddrSemaphore, ForkRegistry, Spin, spin_then_sleep
from ._bcast_sleep import crashed, notify_crash, reader_doze, writer_doze
from ._checks import MAX_TIMEOUT, check_timeout
from .atomics import PLAIN_ORDERED_ACCESS, get_backend
from .errors import ProducerCrashed, ReaderEvicted, RingFinished, TooManyReaders

__all__ = ["BroadcastGuard", "ReaderEvicted", "ShmBroadcast", "TooManyReaders"]

_FORKS = ForkRegistry()
# Hot-path word indices as module constants (one global lookup instead of two).
_W, _FIN, _WSLEEP, _RMASK = L.W, L.FIN, L.WSLEEP, L.RMASK
_ROLES = ("reader", "writer")


def _kind_of(role: Any) -> str:
    if role not in _ROLES:
        raise ValueError(f"ShmBroadcast role must be 'reader' or 'writer', not {role!r}")
    return str(role)


def _check_timeout(where: str, timeout: Any) -> Optional[float]:
    """``check_timeout``'s rule, but a huge bound stays a bound (``MAX_TIMEOUT``), not None."""
    if timeout is None:
        return None
    t = check_timeout(timeout, where)
    return MAX_TIMEOUT if t is None else t


class ShmBroadcast:
    """A broadcast ring: ``create`` (the owner; unlinks on close), ``open`` (a reader by
    default, or ``role="writer"``); ``put``/``get``/``access``; see the module docstring."""

    _map: Any = None
    _owner = False
    _state = 0
    _slot = -1
    _closed = True
    _identity: Optional[tuple[int, int]] = None
    id: str
    name: str
    role: str
    evict_after: Optional[float]
    capacity: int
    slot_size: int
    max_readers: int
    _hq: Any   # memoryview 'Q' over the segment (None once closed)
    _mv: Any   # memoryview 'B' over the segment (None once closed)
    _plen: list[int]
    _poff: list[int]
    _sem: AddrSemaphore
    _base: int
    _cas: Callable[[int, int, int], int]
    _fence: Callable[[], None]
    _fenced: bool
    _lock: threading.Lock
    _spin: Spin
    _pid: int
    _guard: Optional[BroadcastGuard]
    _writer: bool
    _w: int
    _limit: int
    _next: int
    _i_state: int
    _i_r: int
    _rsem: int
    _bit: int
    _reading = False  # a reader handle, open, no guard out: get() may go

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, id: str, capacity: int = 64, slot_size: int = 65536, max_readers: int = 16,
               *, role: str = "writer", replace: bool = False, mode: int = 0o600,
               evict_after: Optional[float] = None) -> ShmBroadcast:
        """Create ``/{id}_b`` (the whole segment is reserved with ``posix_fallocate``: a full
        /dev/shm raises ``OSError(ENOSPC)`` here, never SIGBUS later) and return the owner's
        handle, which unlinks the name on close.  ``role``: what this handle does (a writer
        claims the writer seat at its first ``put``)."""
        from ._bcast_setup import create_segment
        role = _kind_of(role)
        name, fd, total = create_segment(id, capacity, slot_size, max_readers, replace, mode)
        self = cls._new(name, id, fd, total, role, evict_after)
        self._owner = True
        self._identity = _shm.fd_identity(fd)
        os.close(fd)
        return self

    @classmethod
    def open(cls, id: str, timeout: Optional[float] = 10.0, *, role: str = "reader",
             evict_after: Optional[float] = None) -> ShmBroadcast:
        """Open ``/{id}_b``, waiting up to ``timeout`` seconds for its creator to finish it.
        A reader joins now: it gets every message put from now on."""
        from ._bcast_setup import open_segment
        role = _kind_of(role)
        name, fd, total = open_segment(id, _check_timeout(f"ShmBroadcast.open({id!r})",
                                                          timeout))
        try:
            return cls._new(name, id, fd, total, role, evict_after)
        finally:
            os.close(fd)

    @classmethod
    def _new(cls, name: str, id: str, fd: int, total: int, role: str,
             evict_after: Optional[float]) -> ShmBroadcast:
        self = cls.__new__(cls)
        self.name, self.id, self.role = name, id, role
        self.evict_after = _check_timeout("evict_after", evict_after)
        self._map = _shm.Mapping(fd, total, True, name)
        hq = self._map.view().cast("Q")
        self._hq, self._mv = hq, self._map.view()
        self.capacity = int(hq[L.H_CAPACITY])
        self.slot_size = int(hq[L.H_SLOT_SIZE])
        self.max_readers = int(hq[L.H_MAX_READERS])
        stride, off = int(hq[L.H_STRIDE]), int(hq[L.H_SLOTS_OFF])
        self._plen = [(off + k * stride) // 8 for k in range(self.capacity)]
        self._poff = [off + k * stride + L.SLOT_HEADER for k in range(self.capacity)]
        self._sem = AddrSemaphore(name)
        self._base = self._map.addr
        at = get_backend()
        self._cas, self._fence = at.compare_exchange, at.fence
        self._fenced = not PLAIN_ORDERED_ACCESS
        self._lock = threading.Lock()
        self._spin = Spin()
        self._pid = os.getpid()
        self._guard = None
        self._closed = False
        self._writer = False
        self._w = 0
        self._limit = 0
        _FORKS.add(self)
        if role == "reader":
            from ._bcast_setup import join_reader
            join_reader(self)
        return self

    def _forked(self) -> None:
        """In a forked child: this copy's reader slot / writer seat are the parent's."""
        self._slot, self._writer, self._closed, self._owner = -1, False, True, False
        self._reading = False
        self._map = None

    # -- shared words ----------------------------------------------------------------------
    def _addr(self, word: int) -> int:
        return self._base + 8 * word

    def _cas_word(self, word: int, old: int, new: int) -> bool:
        return self._cas(self._addr(word), old, new) == old

    def _set_bits(self, word: int, bits: int) -> None:
        hq = self._hq
        while True:
            old = hq[word]
            if self._cas_word(word, old, old | bits):
                return

    def _clear_bits(self, word: int, bits: int) -> bool:
        """Clear ``bits``; False if they were already clear (a waker took them)."""
        hq = self._hq
        while True:
            old = hq[word]
            if not old & bits:
                return False
            if self._cas_word(word, old, old & ~bits):
                return True

    # -- reader side -----------------------------------------------------------------------
    def _check_reader(self, what: str) -> None:
        if self._closed:
            raise ValueError(f"ShmBroadcast {self.id!r} is closed: open it again to {what}")
        if self.role != "reader":
            raise ValueError(f"ShmBroadcast {self.id!r}: this handle is the writer's; open a "
                             f"reader (ShmBroadcast.open({self.id!r})) to {what}")
        if self._guard is not None:
            raise RuntimeError(f"ShmBroadcast {self.id!r}: release the guard of message "
                               f"{self._guard.index} before you {what}")

    def get(self, timeout: Optional[float] = None) -> bytes:
        """The next message for this reader (bytes).  ``queue.Empty`` after ``timeout``
        seconds without one; ``RingFinished`` after the last one once the writer called
        ``mark_finished``; ``ProducerCrashed`` if the writer died; ``ReaderEvicted``."""
        with self._lock:
            r, off, n = self._next_message(timeout, "get")
            hq = self._hq
            data = self._mv[off:off + n].tobytes()
            if hq[self._i_state] != self._state:
                raise self._evicted()
            if self._fenced:
                self._fence()
            self._next = r + 1
            hq[self._i_r] = r + 1
        # The lock's release was the fence between the store of R and this load.
        if hq[_WSLEEP]:
            self._wake_writer()
        return data  # type: ignore[no-any-return]

    def access(self, timeout: Optional[float] = None) -> BroadcastGuard:
        """The next message in place: a guard whose ``buf`` is a read-only view of the slot
        until ``release()`` (or the end of a ``with`` block).  Same outcomes as ``get``."""
        with self._lock:
            r, off, n = self._next_message(timeout, "access")
            g = BroadcastGuard(self, r, self._mv[off:off + n].toreadonly())
            self._guard, self._reading = g, False
            return g

    def _next_message(self, timeout: Optional[float], what: str) -> tuple[int, int, int]:
        """Under the lock: wait for this reader's next message; (index, offset, length)."""
        if not self._reading:
            self._check_reader(what)
        hq, r = self._hq, self._next
        if hq[_W] == r:
            self._wait_data(r, timeout, what)
        elif self._fenced:
            self._fence()
        k = r % self.capacity
        n = hq[self._plen[k]]
        if n > self.slot_size:
            raise self._corrupt(r, n)
        return r, self._poff[k], n

    def _release(self, g: BroadcastGuard) -> None:
        with self._lock:
            if self._guard is not g:
                return
            self._guard = None
            if self._closed:
                return
            self._reading = True
            hq = self._hq
            if hq[self._i_state] != self._state:
                raise self._evicted()
            if self._fenced:
                self._fence()
            self._next = g.index + 1
            hq[self._i_r] = g.index + 1
        if hq[_WSLEEP]:
            self._wake_writer()

    def _wait_data(self, r: int, timeout: Optional[float], what: str) -> None:
        """Return once message ``r`` is published; else raise what ended the wait."""
        hq, mine, i_state = self._hq, self._state, self._i_state

        def ready() -> bool:
            return bool(hq[L.W] != r or hq[L.FIN] or hq[L.CRASH] or hq[i_state] != mine)

        timeout = _check_timeout(f"ShmBroadcast {self.id!r}.{what}()", timeout)
        if timeout == 0:
            ok = ready()
        else:
            ok = bool(spin_then_sleep(self._spin, ready, lambda c: reader_doze(self, ready, c),
                                      timeout, int(hq[L.N_READERS]) + 1))
        # FIN and CRASH before W (model: mutant-finish-after): never end while one is left.
        fin, crash = hq[L.FIN], hq[L.CRASH]
        if self._fenced:
            self._fence()
        if hq[L.W] != r:
            if hq[i_state] != mine:
                raise self._evicted()
            return
        if hq[i_state] != mine:
            raise self._evicted()
        if fin:
            raise RingFinished(f"ShmBroadcast {self.id!r}: the writer finished and this reader "
                               "got every message")
        if crash:
            raise ProducerCrashed(crashed(self))
        if self._closed:
            raise ValueError(f"ShmBroadcast {self.id!r} was closed while {what}() waited")
        assert not ok
        raise queue.Empty(f"ShmBroadcast {self.id!r}: no message within {timeout} s")

    def _evicted(self) -> ReaderEvicted:
        return ReaderEvicted(f"ShmBroadcast {self.id!r}: this reader (slot {self._slot}) was "
                             "evicted by the writer while it lagged; messages it had not read "
                             "are gone: close() it and open a new reader")

    def _corrupt(self, r: int, n: int) -> ValueError:
        return ValueError(f"ShmBroadcast {self.id!r} is corrupt: message {r} claims {n} "
                          f"bytes in slots of {self.slot_size}")

    def _wake_writer_after_fence(self) -> None:
        self._fence()
        if self._hq[L.WSLEEP]:
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._cas_word(L.WSLEEP, 1, 0):
            self._sem.post(self._base + L.WRITER_SEM_OFF)

    # -- writer side -----------------------------------------------------------------------
    def _become_writer(self, what: str) -> None:
        if self._closed:
            raise ValueError(f"ShmBroadcast {self.id!r} is closed: open it again to {what}")
        if self.role != "writer":
            raise ValueError(f"ShmBroadcast {self.id!r}: this handle is a reader; open it with "
                             f"role='writer' (or use the creator's handle) to {what}")
        if self._writer:
            return
        from ._bcast_setup import claim_writer_seat
        claim_writer_seat(self)
        self._writer = True
        self._w = int(self._hq[L.W])
        self._limit = 0

    def put(self, data: Any, timeout: Optional[float] = None) -> None:
        """Publish ``data`` (bytes-like, at most ``slot_size`` bytes) to every reader; blocks
        while the slowest live reader is ``capacity`` messages behind (``queue.Full`` after
        ``timeout`` seconds)."""
        src = data if type(data) in (bytes, bytearray) else _as_bytes_view(self, data)
        n = len(src)
        if n > self.slot_size:
            raise ValueError(f"ShmBroadcast {self.id!r}.put(): {n} bytes do not fit in a slot "
                             f"of {self.slot_size} bytes (create it with a larger slot_size)")
        hq = self._hq
        with self._lock:
            if not self._writer or hq[_FIN]:
                self._become_writer("put")
                self._check_writable("put")
            w = self._w
            if w >= self._limit and not self._wait_space(w, timeout, "put"):
                raise queue.Full(f"ShmBroadcast {self.id!r}: the slowest reader is still "
                                 f"{self.capacity} messages behind after {timeout} s")
            k = w % self.capacity
            off = self._poff[k]
            self._mv[off:off + n] = src
            hq[self._plen[k]] = n
            if self._fenced:
                self._fence()
            hq[_W] = w + 1
            self._w = w + 1
        if hq[_RMASK]:  # after the lock's release (the fence)
            self._wake_readers()

    def _check_writable(self, what: str) -> None:
        if self._closed:
            raise ValueError(f"ShmBroadcast {self.id!r} is closed: open it again to {what}")
        if self._hq[L.FIN]:
            raise ValueError(f"ShmBroadcast {self.id!r}: mark_finished() was called: no more "
                             "messages")

    def _scan(self, w: int) -> bool:
        """Recompute the limit from the reader table; True if message ``w`` may be written."""
        hq, cap = self._hq, self.capacity
        lim, n = w + cap, 0
        for i in range(self.max_readers):
            base = (L.READERS_OFF + i * L.READER_SIZE) // 8
            kind = (hq[base] >> 32) & 3
            if kind == L.ACTIVE or kind == L.JOINING:
                n += 1
                r = hq[base + L.R_IDX]
                if r + cap < lim:
                    lim = r + cap
        self._limit = lim
        if hq[L.N_READERS] != n:
            hq[L.N_READERS] = n
        return w < lim

    def _wait_space(self, w: int, timeout: Optional[float], what: str) -> bool:
        self._check_writable(what)
        timeout = _check_timeout(f"ShmBroadcast {self.id!r}.{what}()", timeout)
        if self._scan(w):
            return True
        if timeout == 0:
            return False
        waited = [0.0]
        return bool(spin_then_sleep(self._spin, lambda: self._scan(w),
                                    lambda c: writer_doze(self, w, c, waited), timeout,
                                    int(self._hq[L.N_READERS]) + 1))

    def _wake_readers(self) -> None:
        """Take every RMASK bit (compare-exchange to 0) and post one token per bit."""
        hq = self._hq
        while True:
            m = int(hq[L.RMASK])
            if not m or self._cas_word(L.RMASK, m, 0):
                break
        if m:
            hq[L.S_W_WAKEUPS] += 1
        base = self._base
        while m:
            low = m & -m
            self._sem.post(base + L.reader_sem_off(low.bit_length() - 1))
            m ^= low

    def mark_finished(self) -> None:
        """No more messages: readers get ``RingFinished`` after the last one."""
        with self._lock:
            if not self._writer:
                self._become_writer("mark_finished")
            self._hq[L.FIN] = 1
        self._fence()
        self._wake_readers()

    def notify_crash(self, signal: int, addr: int = 0, operation: int = 0, message: str = ""
                     ) -> None:
        """The writer is crashing (a crash handler): readers get ``ProducerCrashed`` with
        these details after the messages already published.  Takes no lock (a signal
        handler, or ``ctshm.crashhook``, may call it).  The first end wins: after
        ``mark_finished`` or an earlier crash report it does nothing."""
        notify_crash(self, signal, addr, operation, message)

    def evict(self, pid: Optional[int] = None) -> int:
        """Evict readers the writer waits for (``pid``: only that process's; None: every
        reader at least ``capacity`` messages behind).  A live reader evicted this way gets
        ``ReaderEvicted``.  Returns how many were evicted."""
        from ._bcast_setup import evict_readers
        return evict_readers(self, pid)

    # -- common ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Messages this reader has not read yet (a writer: the slowest reader's backlog)."""
        from ._bcast_setup import backlog
        return backlog(self)

    def stats(self) -> dict[str, Any]:
        from ._bcast_setup import stats
        return stats(self)

    def close(self) -> None:
        """Leave (a reader frees its slot; a writer frees the seat) and unmap; idempotent.
        The creator's handle also unlinks the name."""
        from ._bcast_setup import close_handle
        if self._closed:
            return
        self._closed = True   # a waiter in another thread (holding the lock) sees it and ends
        self._reading = False
        with self._lock:
            if self._hq is not None:
                close_handle(self)

    def unlink(self) -> None:
        """Remove the name now (mapped handles go on working)."""
        from ._bcast_setup import unlink_name
        unlink_name(self)

    def keep_on_drop(self) -> None:
        """Do not unlink the name when the creator's handle closes."""
        self._owner = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> ShmBroadcast:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and self._pid == os.getpid():
                self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __reduce__(self) -> Any:
        # A spawned child opens it again with the same role (a reader joins anew there).
        return (_reopen, (self.id, self.role, self.evict_after))

    def put_object(self, obj: Any, timeout: Optional[float] = None) -> None:
        """``put(pickle.dumps(obj))``."""
        import pickle
        self.put(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), timeout)

    def get_object(self, timeout: Optional[float] = None) -> Any:
        """``pickle.loads(get())``."""
        import pickle
        return pickle.loads(self.get(timeout))

    async def aput(self, data: Any, timeout: Optional[float] = None) -> None:
        """``put`` for asyncio: waits for space in a worker thread, never blocks the loop."""
        from ._bcast_setup import aput
        await aput(self, data, timeout)

    async def aget(self, timeout: Optional[float] = None) -> bytes:
        """``get`` for asyncio (cancellation never loses a message: the worker thread only
        waits; the message is taken in the loop's thread)."""
        from ._bcast_setup import aget
        return await aget(self, timeout)

    def __repr__(self) -> str:
        if self._closed:
            return f"<ShmBroadcast {self.id!r} closed>"
        what = f"reader slot {self._slot}" if self.role == "reader" else "writer"
        return (f"<ShmBroadcast {self.id!r} {what} capacity={self.capacity} "
                f"slot_size={self.slot_size} max_readers={self.max_readers}>")


def _as_bytes_view(b: ShmBroadcast, data: Any) -> memoryview:
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"ShmBroadcast {b.id!r}.put(): data must be bytes-like (bytes, "
                        f"bytearray, memoryview), not {type(data).__name__}; use put_object "
                        "for other objects") from None
    if mv.format == "B" and mv.ndim == 1 and mv.c_contiguous:
        return mv
    try:
        return mv.cast("B")
    except TypeError:  # not C-contiguous (a strided slice): copied in C order, as the ring does
        return memoryview(mv.tobytes())


def _reopen(id: str, role: str, evict_after: Optional[float]) -> ShmBroadcast:
    return ShmBroadcast.open(id, role=role, evict_after=evict_after)


class BroadcastGuard:
    """A message read in place (``ShmBroadcast.access``): ``buf`` is valid until
    ``release()``; releasing raises ``ReaderEvicted`` if the writer evicted this reader
    meanwhile (the view may then have been overwritten)."""

    __slots__ = ("_b", "_buf", "index")
    _buf: Optional[memoryview]

    def __init__(self, b: ShmBroadcast, index: int, buf: memoryview) -> None:
        self._b, self.index, self._buf = b, index, buf

    @property
    def buf(self) -> memoryview:
        if self._buf is None:
            raise ValueError("this BroadcastGuard was released: its buffer is gone")
        return self._buf

    def __len__(self) -> int:
        return len(self.buf)

    def release(self) -> None:
        buf, self._buf = self._buf, None
        if buf is None:
            return
        try:
            buf.release()
        except BufferError:
            pass  # the user still exports it: it stays mapped, the slot is released anyway
        self._b._release(self)

    def __enter__(self) -> BroadcastGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __reduce__(self) -> Any:
        raise TypeError("BroadcastGuard cannot be pickled: it is a view of shared memory "
                        "mapped in this process; send bytes(guard.buf) instead")

