"""ShmBroadcast's cold paths: creating and opening the segment, claiming a reader slot or the
writer seat, eviction, close, statistics and the asyncio layer.  The protocol and the hot
paths are in :mod:`ctshm.broadcast`; the layout in :mod:`ctshm._bcast_layout`."""

from __future__ import annotations

import asyncio
import errno
import os
import queue
import time
from typing import TYPE_CHECKING, Any, Optional

from . import _bcast_layout as L, _liveness, _shm, libc
from ._bcast_peers import AddrSemaphore, slot_alive
from ._checks import check_range
from .errors import ReaderEvicted, TooManyReaders

if TYPE_CHECKING:
    from .broadcast import ShmBroadcast

_KIND = "ShmBroadcast"


def _check_int(what: str, value: Any, lo: int, hi: int) -> int:
    return check_range(f"ShmBroadcast {what}", value, lo, hi)


def create_segment(id: str, capacity: int, slot_size: int, max_readers: int, replace: bool,
                   mode: int) -> tuple[str, int, int]:
    """Create, reserve and initialise ``/{id}_b``; (name, fd, total size)."""
    name = _shm.object_name(_KIND, id, L.SUFFIX)
    _check_int("capacity", capacity, 1, 1 << 32)
    _check_int("slot_size", slot_size, 1, 1 << 40)
    _check_int("max_readers", max_readers, 1, L.MAX_READERS_LIMIT)
    _check_int("mode", mode, 0, 0o777)
    stride, slots_off, total = L.geometry(capacity, slot_size, max_readers, libc.page_size())
    if libc.fn.sem_init is None:
        raise OSError(errno.ENOSYS, f"ShmBroadcast {id!r}: this platform has no sem_init "
                      "(process-shared unnamed semaphores): ShmBroadcast cannot work here")
    if replace:
        _shm.unlink_quietly(name)
    try:
        fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, mode)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"ShmBroadcast {id!r} already exists ({name}): "
                              "open it, pass replace=True, or remove it (python -m ctshm rm)"
                              ) from None
    try:
        libc.ftruncate(fd, total, name=name)
        # Reserve every page now: a full /dev/shm is ENOSPC here, not SIGBUS at a later touch.
        libc.posix_fallocate(fd, 0, total, name=name)
        _initialise(fd, name, total, capacity, slot_size, max_readers, stride, slots_off)
    except BaseException:
        os.close(fd)
        try:
            libc.shm_unlink(name)
        except OSError:
            pass
        raise
    return name, fd, total


def _initialise(fd: int, name: str, total: int, capacity: int, slot_size: int,
                max_readers: int, stride: int, slots_off: int) -> None:
    m = _shm.Mapping(fd, total, True, name)
    hq = m.view(0, slots_off).cast("Q")
    sem = AddrSemaphore(name)
    sem.init(m.addr + L.WRITER_SEM_OFF)
    for i in range(max_readers):
        hq[L.reader_word(i, L.R_STATE)] = L.pack(0, L.FREE, 0)
        sem.init(m.addr + L.reader_sem_off(i))
    for k, v in ((L.H_VERSION, L.VERSION), (L.H_CAPACITY, capacity),
                 (L.H_SLOT_SIZE, slot_size), (L.H_MAX_READERS, max_readers),
                 (L.H_STRIDE, stride), (L.H_SLOTS_OFF, slots_off), (L.H_TOTAL, total)):
        hq[k] = v
    hq[L.CREATOR_PID], hq[L.CREATOR_START] = _liveness.me()
    from .atomics import get_backend
    get_backend().fence()
    hq[L.H_MAGIC] = L.MAGIC   # last: openers wait for it
    hq.release()


def open_segment(id: str, timeout: Optional[float]) -> tuple[str, int, int]:
    name = _shm.object_name(_KIND, id, L.SUFFIX)
    end = None if timeout is None else time.monotonic() + timeout
    delay = 1e-3
    while True:
        try:
            fd = libc.shm_open(name, libc.O_RDWR, 0)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            total = _ready_size(fd, name, id)
            if total:
                return name, fd, total
            os.close(fd)
        if end is not None and time.monotonic() >= end:
            hint = _shm.id_hint(id, L.SUFFIX, "ShmBroadcast.open")
            what = "does not exist" if fd < 0 else "was not finished by its creator"
            raise FileNotFoundError(errno.ENOENT, f"ShmBroadcast {id!r} ({name}) {what} "
                                    f"after {timeout} s{hint}")
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


def _ready_size(fd: int, name: str, id: str) -> int:
    """The segment's size once its creator wrote MAGIC; 0 while it is not ready."""
    size = os.fstat(fd).st_size
    if size < L.READERS_OFF:
        return 0
    m = _shm.Mapping(fd, L.READERS_OFF, False, name)
    hq = m.view().cast("Q")
    try:
        if hq[L.H_MAGIC] != L.MAGIC:
            return 0
        total = int(hq[L.H_TOTAL])
        geo = L.geometry(int(hq[L.H_CAPACITY]), int(hq[L.H_SLOT_SIZE]),
                         int(hq[L.H_MAX_READERS]), libc.page_size())
        ok = (hq[L.H_VERSION] == L.VERSION and total == size and 1 <= hq[L.H_MAX_READERS]
              <= L.MAX_READERS_LIMIT and geo == (hq[L.H_STRIDE], hq[L.H_SLOTS_OFF], total))
    finally:
        hq.release()
    if not ok:
        os.close(fd)
        raise ValueError(f"ShmBroadcast {id!r} ({name}) is corrupt or not a ShmBroadcast "
                         "(inconsistent header): remove it (python -m ctshm rm)")
    return total


def claim_reader_slot(b: ShmBroadcast) -> tuple[int, int]:
    """A FREE slot, else one whose process is dead, claimed as JOINING by compare-exchange:
    (slot, the STATE word we stored)."""
    hq, pid = b._hq, os.getpid()
    for reclaim in (False, True):
        for i in range(b.max_readers):
            w = L.reader_word(i, L.R_STATE)
            s = int(hq[w])
            gen, kind, p = L.unpack(s)
            if kind == L.FREE and not reclaim:
                new = L.pack(gen, L.JOINING, pid)
            elif kind != L.FREE and reclaim and not _occupant_alive(b, i, kind, p):
                new = L.pack(gen + 1, L.JOINING, pid)
            else:
                continue
            if b._cas_word(w, s, new):
                return i, new
    raise TooManyReaders(f"ShmBroadcast {b.id!r}: all {b.max_readers} reader slots are taken "
                         "by live readers; close one, or create it with a larger max_readers")


def _occupant_alive(b: ShmBroadcast, i: int, kind: int, pid: int) -> bool:
    start = int(b._hq[L.reader_word(i, L.R_START)]) if kind != L.JOINING else 0
    return slot_alive(pid, start)


def join_reader(b: ShmBroadcast) -> None:
    """Claim a place, then take the current W as the join point (model: the claim comes
    first, mutant-join-load-first), store R and wake the writer (finding-join-no-wake)."""
    slot, state = claim_reader_slot(b)
    hq, me = b._hq, _liveness.me()
    b._slot, b._i_state = slot, L.reader_word(slot, L.R_STATE)
    b._i_r = L.reader_word(slot, L.R_IDX)
    b._rsem = b._base + L.reader_sem_off(slot)
    b._bit = 1 << slot
    hq[L.reader_word(slot, L.R_START)] = me[1]
    b._sem.drain(b._rsem)  # tokens posted for an earlier occupant
    hq[L.reader_word(slot, L.R_WAITS)] = 0
    j = int(hq[L.W])                  # the join point: loaded after the claim
    hq[b._i_r] = j
    hq[L.reader_word(slot, L.R_JOINED)] = j
    active = L.pack(L.unpack(state)[0], L.ACTIVE, me[0])
    if not b._cas_word(b._i_state, state, active):
        raise ReaderEvicted(f"ShmBroadcast {b.id!r}: evicted while joining")
    b._state, b._next = active, j
    b._reading = True
    b._wake_writer_after_fence()   # its slot's stale R may have held the writer


def claim_writer_seat(b: ShmBroadcast) -> None:
    hq = b._hq
    pid, start = _liveness.me()
    while True:
        cur = int(hq[L.WRITER_PID])
        if cur == 0:
            if b._cas_word(L.WRITER_PID, 0, pid):
                hq[L.WRITER_START] = start
                return
            continue
        if cur == pid:
            raise RuntimeError(f"ShmBroadcast {b.id!r}: another handle of this process is the "
                               "writer already; use that one")
        if slot_alive(cur, int(hq[L.WRITER_START])):
            raise RuntimeError(f"ShmBroadcast {b.id!r} has a writer already: pid {cur}; one "
                               "writer process at a time")
        raise RuntimeError(f"ShmBroadcast {b.id!r}: its writer pid {cur} died without "
                           "closing it (readers get ProducerCrashed); create a new one")


def evict_laggards(b: ShmBroadcast, w: int, live: bool) -> int:
    """Between the writer's sleep slices: free the slots of dead readers that hold message
    ``w`` back; with ``live`` (evict_after passed) mark live ones EVICTED too."""
    hq, n = b._hq, 0
    for i in range(b.max_readers):
        ws = L.reader_word(i, L.R_STATE)
        s = int(hq[ws])
        gen, kind, pid = L.unpack(s)
        if kind not in (L.ACTIVE, L.JOINING) or hq[L.reader_word(i, L.R_IDX)] + b.capacity > w:
            continue
        if not _occupant_alive(b, i, kind, pid):
            if b._cas_word(ws, s, L.pack(gen + 1, L.FREE, 0)):
                hq[L.S_EVICT_DEAD] += 1
                n += 1
        elif live and b._cas_word(ws, s, L.pack(gen, L.EVICTED, pid)):
            hq[L.S_EVICT_LIVE] += 1
            n += 1
    return n


def evict_readers(b: ShmBroadcast, pid: Optional[int]) -> int:
    if b._closed:
        raise ValueError(f"ShmBroadcast {b.id!r} is closed: open it again to evict readers")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise TypeError(f"ShmBroadcast {b.id!r}.evict(pid): pid must be an int or None, not "
                        f"{type(pid).__name__}")
    hq, n = b._hq, 0
    w = int(hq[L.W])
    for i in range(b.max_readers):
        ws = L.reader_word(i, L.R_STATE)
        s = int(hq[ws])
        gen, kind, p = L.unpack(s)
        if kind not in (L.ACTIVE, L.JOINING):
            continue
        if pid is None and hq[L.reader_word(i, L.R_IDX)] + b.capacity > w:
            continue
        if (pid is None or p == pid) and b._cas_word(ws, s, L.pack(gen, L.EVICTED, p)):
            hq[L.S_EVICT_LIVE] += 1
            n += 1
    if n:
        b._wake_writer_after_fence()
        b._wake_readers()
    return n


def backlog(b: ShmBroadcast) -> int:
    if b._closed:
        raise ValueError(f"ShmBroadcast {b.id!r} is closed")
    hq = b._hq
    w = int(hq[L.W])
    if b.role == "reader":
        return w - b._next
    rs = [int(hq[L.reader_word(i, L.R_IDX)]) for i, _ in _readers(b)]
    return w - min(rs) if rs else 0


def _readers(b: ShmBroadcast) -> list[tuple[int, int]]:
    out = []
    for i in range(b.max_readers):
        s = int(b._hq[L.reader_word(i, L.R_STATE)])
        if L.unpack(s)[1] in (L.ACTIVE, L.JOINING):
            out.append((i, s))
    return out


def stats(b: ShmBroadcast) -> dict[str, Any]:
    if b._closed:
        raise ValueError(f"ShmBroadcast {b.id!r} is closed")
    hq = b._hq
    w = int(hq[L.W])
    readers = []
    for i in range(b.max_readers):
        _gen, kind, pid = L.unpack(int(hq[L.reader_word(i, L.R_STATE)]))
        if kind == L.FREE:
            continue
        r = int(hq[L.reader_word(i, L.R_IDX)])
        readers.append({"slot": i, "pid": pid, "state": L.KIND_NAMES[kind], "next": r,
                        "lag": w - r, "joined_at": int(hq[L.reader_word(i, L.R_JOINED)]),
                        "waits": int(hq[L.reader_word(i, L.R_WAITS)])})
    return {"id": b.id, "capacity": b.capacity, "slot_size": b.slot_size,
            "max_readers": b.max_readers, "published": w, "writer_pid": int(hq[L.WRITER_PID]),
            "finished": bool(hq[L.FIN]), "crashed": int(hq[L.CRASH]),
            "writer_waits": int(hq[L.S_W_WAITS]), "reader_wakeups": int(hq[L.S_W_WAKEUPS]),
            "evicted_dead": int(hq[L.S_EVICT_DEAD]), "evicted_live": int(hq[L.S_EVICT_LIVE]),
            "readers": readers}


def close_handle(b: ShmBroadcast) -> None:
    """Under the handle's lock: leave the slot / seat, unmap, unlink (the creator)."""
    b._closed = True
    hq = b._hq
    b._guard = None
    b._reading = False
    if b._slot >= 0:
        ws = b._i_state
        s = int(hq[ws])
        gen, _kind, pid = L.unpack(s)
        if s == b._state or (s == L.pack(gen, L.EVICTED, pid) and \
                L.pack(gen, L.ACTIVE, pid) == b._state):
            b._cas_word(ws, s, L.pack(gen + 1, L.FREE, 0))
        b._slot = -1
        b._wake_writer_after_fence()   # the freed slot may have held the writer
    if b._writer:
        hq[L.WRITER_START] = 0
        b._cas_word(L.WRITER_PID, os.getpid(), 0)
        b._writer = False
    if b._owner:
        unlink_name(b)
    b._hq = b._mv = b._map = None


def unlink_name(b: ShmBroadcast) -> None:
    b._owner = False
    ident = getattr(b, "_identity", None)
    if ident is not None:
        _shm.unlink_if_same(b.name, ident)
    else:
        _shm.unlink_quietly(b.name)


# -- asyncio ----------------------------------------------------------------------------------
_ASYNC_SLICE = 0.25


async def aget(b: ShmBroadcast, timeout: Optional[float]) -> bytes:
    loop = asyncio.get_running_loop()
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return b.get(timeout=0)
        except queue.Empty:
            pass
        left = _ASYNC_SLICE if end is None else min(_ASYNC_SLICE, end - time.monotonic())
        if left <= 0:
            raise queue.Empty(f"ShmBroadcast {b.id!r}: no message within {timeout} s")
        await loop.run_in_executor(None, _wait_data_ready, b, left)


def _wait_data_ready(b: ShmBroadcast, t: float) -> None:
    with b._lock:
        if b._closed or b._hq[L.W] != b._next:
            return
        try:
            b._wait_data(b._next, t, "aget")
        except Exception:
            pass  # the loop thread's get(timeout=0) raises it again


async def aput(b: ShmBroadcast, data: Any, timeout: Optional[float]) -> None:
    loop = asyncio.get_running_loop()
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return b.put(data, timeout=0)
        except queue.Full:
            pass
        left = _ASYNC_SLICE if end is None else min(_ASYNC_SLICE, end - time.monotonic())
        if left <= 0:
            raise queue.Full(f"ShmBroadcast {b.id!r}: no space within {timeout} s")
        await loop.run_in_executor(None, _wait_space_ready, b, left)


def _wait_space_ready(b: ShmBroadcast, t: float) -> None:
    with b._lock:
        if b._closed or not b._writer:
            return
        try:
            b._wait_space(b._w, t, "aput")
        except Exception:
            pass
