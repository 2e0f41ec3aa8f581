"""ShmQueue: a many-producer, many-consumer queue of byte messages in POSIX shared memory
that a killed process can never block or corrupt.  ctshm-only (no Rust counterpart).

The protocol (model/queue.pml checks it; layout in :mod:`ctshm.queue_layout`): every slot has
one word that is its whole truth, ``(lap, state, owner)``.  A producer walks from the TAIL
hint to the first position whose slot word is exactly ``lap << 24`` (free) and claims it with
one compare-exchange to ``WRITING`` by itself; writes; publishes ``FULL``.  A consumer walks
from the HEAD hint to the first ``FULL`` word at its lap and claims it with one
compare-exchange to ``READING`` by itself; copies; stores the word of the next lap, free.  A
claim and its owner are one atomic fact, so a process SIGKILLed at any instruction leaves
slots that name it: any process that finds a dead owner (after a sleep slice, or a
consumer's periodic check) turns its ``WRITING`` slots into ``SKIP`` (consumers pass over
them: only the dead producer's unfinished message is lost) and its ``READING`` slots into
``ORPHAN`` (the next consumer with nothing else to do takes the message: nothing is lost).
Liveness is pid + start time (a recycled pid is not alive; SIGSTOP is not death).

Steady state: one foreign call per message per side (the claim's compare-exchange); the rest
are ``memoryview`` loads and stores.  Waits spin, then sleep in :data:`LIVENESS_SLICE` slices
(``ctshm._sleepwake``).  End of stream: :meth:`ShmQueue.finish` (docs/queue.md).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Final, Optional

from . import _liveness, _shm, libc, queue_layout as QL
from ._checks import check_range, check_timeout
from ._peers_table import ForkRegistry, PeersTable, identity_of
from ._queue_io import _NOTHING, ObjectsMixin
from ._queue_peers import HOUSEKEEPING, PeersFull, PeersMixin, only_thread
from ._queue_wait import LIVENESS_SLICE, WaitMixin
from ._sleepwake import Sleepers, Spin, fast_atomics as _fast_atomics, full_fence as _make_fence
from .atomics import PLAIN_ORDERED_ACCESS, Atomics, get_backend
from .errors import QueueFinished
from .semaphore import NamedSemaphore

__all__ = ["LIVENESS_SLICE", "QueueFinished", "ShmQueue"]

_KIND: Final = "ShmQueue"
_FORKS: Final = ForkRegistry()

_EMPTY, _WRITING, _FULL, _SKIP = QL.EMPTY, QL.WRITING, QL.FULL, QL.SKIP
_LS: Final = QL.LAP_SHIFT
_W_TAIL, _W_HEAD, _W_FIN = QL.W_TAIL, QL.W_HEAD, QL.W_FINISHED
_W_PSLEEP, _W_CSLEEP = QL.W_P_SLEEP, QL.W_C_SLEEP


def _check_int(name: str, what: str, value: Any, low: int, high: int) -> int:
    return check_range(f"ShmQueue {name!r}: {what}", value, low, high)


def _check_timeout(name: str, what: str, timeout: Any) -> Optional[float]:
    """``timeout`` of ``what`` (checked up front, whether or not the call would block)."""
    return check_timeout(timeout, f"ShmQueue {name!r}: {what}")


def _finalize(name: str, identity: Any, owner: bool, pid: int, table: Any,
              tag: list[int]) -> None:
    """Finalizer: free our peer entry; the owner also unlinks (never raises)."""
    if os.getpid() != pid:
        return
    try:
        if tag[0] >= 0:
            table.unregister(tag[0], tag[1])
        if owner:
            _unlink_names(name, identity)
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


def _unlink_names(name: str, identity: Any) -> None:
    if _shm.unlink_if_same(name, identity):
        NamedSemaphore.unlink_name(name + QL.SEM_ITEMS)
        NamedSemaphore.unlink_name(name + QL.SEM_SPACE)


class ShmQueue(PeersMixin, ObjectsMixin, WaitMixin):
    """A bounded many-producer many-consumer queue of byte messages in ``/ID_q``.

    ``create`` makes the owner (it unlinks on close); ``open`` attaches any other process.
    A handle is safe to share between threads; pickling it re-opens the queue by id (for
    ``multiprocessing.Process``/``Pool`` with spawn); a forked child re-registers itself.
    """

    _closed = True
    _closed_by = 0
    _fork_error = ""
    _finalizer: Optional[weakref.finalize[..., ShmQueue]] = None
    name: str
    id: str
    capacity: int
    slot_size: int
    _owner: bool
    _identity: Any
    _mapping: _shm.Mapping
    _sems: tuple[Any, ...]
    _v: Any  # memoryview cast to 'Q' (Any: indexing a 'Q' view gives int)
    _b: memoryview
    _base: int
    _stride: int
    _sw: int
    _w0: int
    _wake_at: int
    _atomics: Atomics
    _cas: Any
    _fence: Any
    _peers: PeersTable
    _items: Sleepers
    _space: Sleepers
    _stats: dict[str, int]
    _ops: int
    _nput: int
    _next_housekeeping: float
    _tag_cell: list[int]
    _tag: int
    _spin: tuple[Spin, Spin]
    _fence_acquire: Any
    _fence_release: Any

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def create(cls, id: str, capacity: int = 1024, slot_size: int = 4096, *,
               max_peers: int = 128, replace: bool = False, mode: int = 0o600) -> ShmQueue:
        """Create ``/{id}_q`` and its two semaphores; this handle owns (unlinks) them."""
        name = _shm.object_name(_KIND, id, QL.SUFFIX, (QL.SEM_ITEMS, QL.SEM_SPACE))
        capacity = _check_int(name, "capacity", capacity, 1, 1 << 30)
        slot_size = _check_int(name, "slot_size", slot_size, 1, 1 << 40)
        max_peers = _check_int(name, "max_peers", max_peers, 1, QL.MAX_PEERS_LIMIT)
        size = QL.total_size(capacity, slot_size, max_peers)
        if replace:
            for n in (name, name + QL.SEM_ITEMS, name + QL.SEM_SPACE):
                _unlink_quietly(n)
        try:
            fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, mode)
        except FileExistsError as e:
            raise FileExistsError(e.errno, f"{e.strerror}: queue exists (pass replace=True, "
                                  "or remove it with `python -m ctshm rm`)", name) from None
        identity = _shm.fd_identity(fd)
        try:
            libc.ftruncate(fd, size, name)
            libc.posix_fallocate(fd, 0, size, name)  # ENOSPC now, never SIGBUS later
            mapping = _shm.Mapping(fd, size, True, name)
            v = mapping.view().cast("Q")
            for w, val in ((QL.W_VERSION, QL.VERSION), (QL.W_CAPACITY, capacity),
                           (QL.W_SLOT_SIZE, slot_size), (QL.W_STRIDE, QL.stride(slot_size)),
                           (QL.W_MAX_PEERS, max_peers),
                           (QL.W_SLOTS_OFF, QL.slots_offset(max_peers)),
                           (QL.W_OWNER, identity_of(*_liveness.me())), (QL.W_MAGIC, QL.MAGIC)):
                v[w] = val
            sems = tuple(NamedSemaphore(name + s, create=True, value=0, mode=mode)
                         for s in (QL.SEM_ITEMS, QL.SEM_SPACE))
            get_backend().store(mapping.addr + 8 * QL.W_READY, 1)
        except BaseException:
            os.close(fd)
            _unlink_names(name, identity)
            raise
        os.close(fd)
        return cls._attach(name, id, mapping, sems, identity, owner=True)

    @classmethod
    def open(cls, id: str, timeout: float = 10.0) -> ShmQueue:
        """Open an existing queue, waiting up to ``timeout`` s for its creator to finish."""
        name = _shm.object_name(_KIND, id, QL.SUFFIX, (QL.SEM_ITEMS, QL.SEM_SPACE))
        t = _check_timeout(name, "open", timeout)
        deadline = time.monotonic() + (t if t is not None else 1e9)
        while True:
            r = cls._try_open(name, id)
            if r is not None:
                return r
            if time.monotonic() >= deadline:
                raise FileNotFoundError(
                    2, f"no such queue (or its creator has not finished it) after {timeout} s"
                    f"{_shm.id_hint(id, QL.SUFFIX, 'ShmQueue.open')}", name)
            time.sleep(0.01)

    @classmethod
    def _try_open(cls, name: str, id: str) -> Optional[ShmQueue]:
        try:
            fd = libc.shm_open(name, libc.O_RDWR, 0)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            if size < QL.PEERS_OFF:
                return None
            mapping = _shm.Mapping(fd, size, True, name)
            identity = _shm.fd_identity(fd)
        finally:
            os.close(fd)
        v = mapping.view().cast("Q")
        if v[QL.W_MAGIC] != QL.MAGIC or not v[QL.W_READY]:
            if v[QL.W_MAGIC] not in (0, QL.MAGIC):
                raise ValueError(f"{name!r} is not a ShmQueue (magic {v[QL.W_MAGIC]:#x})")
            return None
        cap, slot, mp = v[QL.W_CAPACITY], v[QL.W_SLOT_SIZE], v[QL.W_MAX_PEERS]
        if size < QL.total_size(cap, slot, mp) or v[QL.W_VERSION] != QL.VERSION:
            raise ValueError(f"ShmQueue {name!r} is corrupt or of another version "
                             f"(size {size}, capacity {cap}, slot_size {slot})")
        sems = tuple(NamedSemaphore(name + s) for s in (QL.SEM_ITEMS, QL.SEM_SPACE))
        return cls._attach(name, id, mapping, sems, identity, owner=False)

    @classmethod
    def _attach(cls, name: str, id: str, mapping: _shm.Mapping, sems: tuple[Any, ...],
                identity: Any, owner: bool) -> ShmQueue:
        self = cls.__new__(cls)
        self.name, self.id, self._owner, self._identity = name, id, owner, identity
        self._mapping = mapping
        self._sems = sems
        v = self._v = mapping.view().cast("Q")
        self._b = mapping.view()
        self._base = mapping.addr
        self.capacity = v[QL.W_CAPACITY]
        self.slot_size = v[QL.W_SLOT_SIZE]
        self._stride = v[QL.W_STRIDE]
        self._sw = self._stride // 8
        self._w0 = v[QL.W_SLOTS_OFF] // 8
        self._wake_at = self.capacity - max(1, self.capacity >> 2) + 1  # see _released
        a = self._atomics = _fast_atomics()
        self._cas = a.compare_exchange
        self._fence = _make_fence(a)
        lk = threading.Lock()  # x86_64: a lock acquire/release pair is a full fence
        self._fence_acquire, self._fence_release = lk.acquire, lk.release
        self._peers = PeersTable(v, mapping.addr, QL.PEERS_OFF // 8, v[QL.W_MAX_PEERS], a)
        self._items = Sleepers(v, _W_CSLEEP, self._base + 8 * _W_CSLEEP, sems[0], self._cas)
        self._space = Sleepers(v, _W_PSLEEP, self._base + 8 * _W_PSLEEP, sems[1], self._cas)
        self._stats = {"waits": 0, "reaped": 0}
        self._nput = 0
        self._spin = (Spin(), Spin())  # producer side, consumer side
        self._ops = 0
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING
        self._tag_cell = [-1, 0]
        self._register()
        self._closed = False
        self._finalizer = weakref.finalize(self, _finalize, name, identity, owner, os.getpid(),
                                           self._peers, self._tag_cell)
        _FORKS.add(self)
        return self

    def _forked(self) -> None:
        """In a forked child: register a peer entry of its own (never act as the parent)."""
        if self._closed:
            return
        self._tag_cell[0] = -1  # the parent's entry is the parent's
        if self._finalizer is not None:
            self._finalizer.detach()
        self._owner = False
        try:
            self._register()
        except PeersFull as e:  # never act under the parent's peer entry: refuse every use
            self._fork_error, self._closed, self._v = str(e), True, None
            return
        self._finalizer = weakref.finalize(self, _finalize, self.name, self._identity, False,
                                           os.getpid(), self._peers, self._tag_cell)

    def close(self) -> None:
        """Leave the queue (idempotent); the owner also unlinks it."""
        if self._closed:
            return
        self._closed = True
        self._closed_by = threading.get_ident()  # for the error of a get/put that waited
        self._v = None  # the fast paths' closed check (threads in flight keep their view)
        if self._finalizer is not None:
            self._finalizer()
        for s in self._sems:
            s.close()

    def unlink(self) -> None:
        """Remove the queue's names now (processes that have it open keep using it)."""
        _unlink_names(self.name, self._identity)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> ShmQueue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        return (ShmQueue.open, (self.id,))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} queued"
        return (f"<ShmQueue {self.name!r} capacity={self.capacity} "
                f"slot_size={self.slot_size} {state}>")

    def _check_open(self, what: str) -> None:
        if self._fork_error:
            raise PeersFull(f"{self._fork_error} (so this forked child cannot use it)")
        if self._closed:
            raise ValueError(f"ShmQueue {self.name!r} is closed: open it again to {what}")

    # -- the producer side ------------------------------------------------------------------
    def put(self, data: Any, timeout: Optional[float] = None) -> None:
        """Append one message (bytes-like); blocks while full; ``queue.Full`` on timeout."""
        if timeout is not None:
            timeout = _check_timeout(self.name, "put", timeout)
        if type(data) is not bytes:
            data = self._as_bytes(data)
        if not self._try_put(data, (data,), len(data)):
            self._block(self._try_put_again, (data, (data,), len(data)), timeout, True)

    def put_nowait(self, data: Any) -> None:
        """Append one message or raise ``queue.Full`` at once."""
        self.put(data, 0)

    def _as_bytes(self, data: Any) -> Any:
        self._check_open("put")
        try:
            m = memoryview(data)
        except TypeError:
            raise TypeError(f"ShmQueue {self.name!r}: put() takes a bytes-like object (bytes, "
                            f"bytearray, memoryview...), not {type(data).__name__}; use "
                            "put_object() for other objects") from None
        if not m.c_contiguous:
            raise ValueError(f"ShmQueue {self.name!r}: put() needs a C-contiguous buffer")
        return m.cast("B") if m.format != "B" or m.ndim != 1 else m

    def _try_put_again(self, data: Any, parts: Any, n: int) -> Any:
        return True if self._try_put(data, parts, n) else _NOTHING

    def _try_put(self, data: Any, parts: Any, n: int) -> bool:
        """Claim, fill, publish; False if full.  ``parts``: the pieces that make ``data``."""
        if n > self.slot_size:
            raise ValueError(f"ShmQueue {self.name!r}: a message of {n} bytes does not fit a "
                             f"slot of {self.slot_size} bytes (create the queue with a larger "
                             "slot_size)")
        v, cap, w0, sw = self._v, self.capacity, self._w0, self._sw
        if v is None:
            self._check_open("put")
        t = v[_W_TAIL]
        wi = w = free = -1
        claimed = False  # the claim's CAS returned ours (else an exception may hide it)
        try:
            while True:
                lap, i = divmod(t, cap)
                wi = w0 + i * sw
                w = v[wi]
                free = lap << _LS
                if w == free:
                    if self._cas(self._base + 8 * wi, w, free | self._tag | _WRITING) != w:
                        continue
                    claimed = True
                    break
                if w >> _LS < lap:  # the previous lap is not consumed yet: full
                    if v[_W_TAIL] < t:  # where we stopped (else _ready_put would spin)
                        v[_W_TAIL] = t
                    return False
                t += 1
            if v[_W_TAIL] <= t:
                v[_W_TAIL] = t + 1
            if v[_W_FIN]:  # finish() raced with our claim: refuse (model: MUT_NO_FIN_RECHECK)
                self._publish(wi, free | _SKIP)
                self._items.wake_one()
                raise QueueFinished(f"ShmQueue {self.name!r} is finished: no more puts")
            off = 8 * wi + QL.SLOT_HEADER
            if len(parts) == 1:
                self._b[off:off + n] = data
            else:
                for p in parts:
                    k = len(p)
                    self._b[off:off + k] = p
                    off += k
            v[wi + 1] = n
            if PLAIN_ORDERED_ACCESS:  # _publish inlined: the store, then the fence
                v[wi] = free | _FULL
                self._fence_acquire()
                self._fence_release()
            else:
                self._publish(wi, free | _FULL)
        except BaseException:  # e.g. Ctrl-C: never leave our claim behind
            if w == free >= 0 and (claimed or only_thread()):
                self._drop_claim(wi, free | self._tag | _WRITING, free | _SKIP)
            raise
        if v[_W_CSLEEP]:
            self._items.wake_one()
        if v[_W_PSLEEP] and self._ready_put():
            self._space.wake_one()
        self._nput += 1
        return True

    def _publish(self, wi: int, word: int) -> None:
        """Store our claim's next word (release), then a full fence (the wake check after)."""
        if PLAIN_ORDERED_ACCESS:
            self._v[wi] = word
            self._fence()
        else:
            self._atomics.store(self._base + 8 * wi, word)
            self._atomics.fence()

    # -- the consumer side ------------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> bytes:
        """Take one message; blocks while empty; ``queue.Empty`` on timeout;
        :class:`QueueFinished` once finished and drained."""
        if timeout is not None:
            timeout = _check_timeout(self.name, "get", timeout)
        r = self._try_get(None)
        if r is _NOTHING:
            r = self._block(self._try_get, (None,), timeout, False)
        return r  # type: ignore[no-any-return]

    def get_nowait(self) -> bytes:
        return self.get(0)

    def get_with(self, fn: Any, timeout: Optional[float] = None) -> Any:
        """Zero-copy take: call ``fn(view)`` on the message in place while its slot is
        claimed, free the slot, return what ``fn`` returned.  ``view`` is only valid inside
        ``fn`` (do not keep it).  If ``fn`` raises, the message goes back to the queue (to
        any consumer) and the exception propagates; a process killed inside ``fn`` loses
        nothing either: the message is redelivered within about a second."""
        if not callable(fn):
            raise TypeError(f"ShmQueue {self.name!r}: get_with() needs a callable, not "
                            f"{type(fn).__name__}")
        if timeout is not None:
            timeout = _check_timeout(self.name, "get_with", timeout)
        r = self._try_get(fn)
        if r is _NOTHING:
            r = self._block(self._try_get, (fn,), timeout, False)
        return r

    def get_many(self, max_messages: int = 100, timeout: Optional[float] = None
                 ) -> list[bytes]:
        """At least one message (blocking as ``get``), then as many more as are ready, up to
        ``max_messages`` (an int >= 1).  One batched claim (model/queue.pml BATCH): the
        messages are claimed together, copied out, then their slots released together."""
        if type(max_messages) is not int or max_messages < 1:
            raise ValueError(f"ShmQueue {self.name!r}: get_many(): max_messages must be an "
                             f"int >= 1, not {max_messages!r}")
        if timeout is not None:
            timeout = _check_timeout(self.name, "get_many", timeout)
        r = self._try_get_many(max_messages)
        if r is _NOTHING:
            r = self._block(self._try_get_many, (max_messages,), timeout, False)
        return r  # type: ignore[no-any-return]

    def _claim(self, k: int) -> tuple[list[int], list[int]]:
        """Walk from HEAD and claim up to ``k`` FULL slots, each by compare-exchange to
        READING by us (so a death leaves every slot of the range naming us: the reaper
        orphans each); free SKIP slots on the way; move HEAD past what we walked.  The word
        indexes of our claims in position order ([] if nothing is ready at HEAD) and the
        claim words (what an exception must find there to give the slot back)."""
        v, cap, w0, sw = self._v, self.capacity, self._w0, self._sw
        if v is None:
            self._check_open("get")
        cas, base, mine = self._cas, self._base, self._tag | _WRITING
        held: list[int] = []
        words: list[int] = []
        h = v[_W_HEAD]
        wi = w = -1
        try:
            while True:
                lap, i = divmod(h, cap)
                wi = w0 + i * sw
                w = v[wi]
                wl = w >> _LS
                if wl == lap:
                    st = w & 7
                    if st == _FULL:
                        # FULL (2) | WRITING (1) == READING (3), with our owner bits
                        if cas(base + 8 * wi, w, w | mine) != w:
                            continue  # another consumer won: look again
                        held.append(wi)
                        words.append(w | mine)
                        if len(held) == k:
                            h += 1
                            break
                    elif st in (_EMPTY, _WRITING):
                        break
                    elif st == _SKIP and cas(base + 8 * wi, w, (lap + 1) << _LS) == w:
                        self._freed(v)
                elif wl < lap:
                    break
                h += 1
            if v[_W_HEAD] < h:  # a lagging hint would make _ready_get spin
                v[_W_HEAD] = h
        except BaseException:  # e.g. Ctrl-C: give back what we hold
            self._drop_claims(held, words)
            if (wi >= 0 and w & 7 == _FULL and (not held or held[-1] != wi)
                    and only_thread()):  # a claim whose CAS the exception interrupted
                self._drop_claims((wi,), (w | mine,))
            raise
        return held, words

    def _try_get(self, into: Any) -> Any:
        """One get: _claim(1) specialised (the hot path: no lists), then _take."""
        v, cap, w0, sw = self._v, self.capacity, self._w0, self._sw
        if v is None:
            self._check_open("get")
        h = v[_W_HEAD]
        wi = w = 0
        claimed = False  # the claim's CAS returned ours (else an exception may hide it)
        try:
            while True:
                lap, i = divmod(h, cap)
                wi = w0 + i * sw
                w = v[wi]
                wl = w >> _LS
                if wl == lap:
                    st = w & 7
                    if st == _FULL:
                        if self._cas(self._base + 8 * wi, w, w | self._tag | _WRITING) != w:
                            continue  # another consumer won: look again
                        claimed = True
                        if v[_W_HEAD] <= h:
                            v[_W_HEAD] = h + 1
                        return self._take(wi, lap, into)
                    if st in (_EMPTY, _WRITING):
                        break
                    if st == _SKIP and self._cas(self._base + 8 * wi, w, (lap + 1) << _LS) == w:
                        self._freed(v)
                elif wl < lap:
                    break
                h += 1
        except BaseException:  # fn raised, or e.g. Ctrl-C: give the message back
            if w & 7 == _FULL and (claimed or only_thread()):
                self._drop_claims((wi,), (w | self._tag | _WRITING,))
            raise
        if v[_W_HEAD] < h:  # where we stopped: a lagging hint would make _ready_get spin
            v[_W_HEAD] = h
        return self._nothing_at_head(into)

    def _try_get_many(self, k: int) -> Any:
        held, words = self._claim(k)
        if not held:
            r = self._nothing_at_head(None)
            return r if r is _NOTHING else [r]
        v, b, ss = self._v, self._b, self.slot_size
        try:
            out = []
            for wi in held:
                n = v[wi + 1]
                off = 8 * wi + QL.SLOT_HEADER
                out.append(b[off:off + (n if n <= ss else ss)].tobytes())
            if PLAIN_ORDERED_ACCESS:  # the releases, then one fence
                for wi, w in zip(held, words):
                    v[wi] = ((w >> _LS) + 1) << _LS
                self._fence_acquire()
                self._fence_release()
            else:
                for wi, w in zip(held, words):
                    self._atomics.store(self._base + 8 * wi, ((w >> _LS) + 1) << _LS)
                self._atomics.fence()
        except BaseException:  # e.g. Ctrl-C: what we still hold goes back to the queue
            self._drop_claims(held, words)
            raise
        if v[_W_PSLEEP] or v[_W_FIN]:  # the range's last position
            self._released(v, (words[-1] >> _LS) * self.capacity
                           + (held[-1] - self._w0) // self._sw)
        self._count_gets(len(held))
        return out

    def _take(self, wi: int, lap: int, into: Any) -> Any:
        """Copy the message of our READING slot ``wi`` out, then free the slot."""
        v = self._v
        n = v[wi + 1]
        off = 8 * wi + QL.SLOT_HEADER
        if n > self.slot_size:
            n = self.slot_size  # a corrupt length must not read past the slot
        data: Any = self._b[off:off + n].tobytes() if into is None else into(
            self._b[off:off + n])
        if PLAIN_ORDERED_ACCESS:  # _publish inlined
            v[wi] = (lap + 1) << _LS
            self._fence_acquire()
            self._fence_release()
        else:
            self._publish(wi, (lap + 1) << _LS)
        if v[_W_PSLEEP] or v[_W_FIN]:
            self._released(v, lap * self.capacity + (wi - self._w0) // self._sw)
        self._ops += 1  # gets taken by this handle (stats()["get"])
        if not self._ops & 1023 and time.monotonic() > self._next_housekeeping:
            self.housekeeping()
        return data

    def _count_gets(self, n: int) -> None:
        """``n`` more gets by this handle (stats()["get"]); every 1024, housekeeping if due."""
        before = self._ops
        self._ops = before + n
        if (before ^ self._ops) >> 10 and time.monotonic() > self._next_housekeeping:
            self.housekeeping()


def _unlink_quietly(name: str) -> None:
    try:
        if name.endswith(QL.SUFFIX):
            libc.shm_unlink(name)
        else:
            NamedSemaphore.unlink_name(name)
    except FileNotFoundError:
        pass
