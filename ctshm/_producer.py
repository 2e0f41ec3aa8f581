"""The producer side of a ring handle, off the quiet path: the producer turn, acquiring a
slot (and waiting for one), commit and abort, registration, the end of the stream.

Functions of a :class:`~ctshm.ring.ShmTraceRing` (``ring``), called by its methods under the
rules stated there (the lock, in-flight sections).  The quiet path of ``try_put`` is the
ring's own (:mod:`ctshm.ring`, "The quiet path"); everything else a producer does is here,
with every guarantee (threads taking turns, close under a waiter, dead consumers, ENOSPC).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, Optional

from . import _consumer, _exitnote, _peers, libc
from ._checks import check_crash_args, check_timeout, is_int
from ._ringobjects import reserve_range
from ._waiting import LIVENESS_SLICE
from .errors import ConsumerGone
from .guards import ProducerGuard
from .layout import (
    C_SLEEP as _CSLEEP,
    CONSUMER_PID as _CONSUMER_PID,
    FIN_CRASHED as _CRASHED,
    FIN_FINISHED as _FINISHED,
    FINISHED as _FIN,
    HEADER_SIZE,
    LEN_OFF,
    LEN_WORD as _LEN,
    MSG_MAX,
    PRODUCER_PID as _PRODUCER_PID,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    STAT_BYTES,
    WRITE_IDX as _W,
)

if TYPE_CHECKING:
    from .ring import ShmTraceRing

_PAGE: Final = libc.page_size()


def check_acquire_size(ring: ShmTraceRing, size: Optional[int]) -> int:
    if size is None:
        return ring.slot_size
    if not is_int(size):
        raise TypeError(f"ring {ring.name!r}: acquire(size=) must be an int, not "
                        f"{type(size).__name__}")
    if not 0 <= size <= ring.slot_size:
        raise ValueError(f"ring {ring.name!r}: acquire(size={size}) does not fit a slot of "
                         f"{ring.slot_size} bytes")
    return size


def fast_hint(ring: ShmTraceRing) -> str:
    if not ring._fast or ring._load(_CONSUMER_PID):
        return ""
    return ("; this is a fast ring and no ctshm consumer has registered: the Rust "
            "original cannot consume a fast ring (create it with fast=False for it)")


def check_not_mine(ring: ShmTraceRing) -> None:
    """Under ring._lock, the turn taken: not by this thread (its own guard outstanding)."""
    ps = ring._ps
    if ps.turn_owner == threading.get_ident():
        what = repr(ps.producer_guard() or "an acquire() of this thread")
        raise RuntimeError(
            f"ring {ring.name!r}: {what} is still outstanding; commit or abort it "
            "before acquiring another slot (one producer slot at a time keeps "
            "messages in order)")


def slot_now(ring: ShmTraceRing, size: int) -> Optional[ProducerGuard]:
    """Under ring._lock, holding the turn: the guard of a free slot now (compat: with its
    ``empty`` token), or None; raises once the stream ended."""
    fin = ring._load(_FIN)
    if fin:
        raise RuntimeError(f"ring {ring.name!r} is already "
                           f"{'finished' if fin == _FINISHED else 'crashed'}: no "
                           "more messages can be produced")
    if not ring._producer_registered:
        register_producer(ring)
    if (ring._fast or ring._trywait(ring._h_empty) == 0) and space(ring):
        return new_producer_guard(ring, size)
    return None


def put_now(ring: ShmTraceRing, src: memoryview, n: int) -> bool:
    """``try_put`` off the quiet path: take the turn and a free slot if both are there now,
    copy and commit (True), else False; never waits."""
    check_put_size(ring, n)
    with ring._lock:
        ring._check_open()
        if ring._ps.busy():
            check_not_mine(ring)
            return False
        g = slot_now(ring, n)
    if g is None:
        return False
    copy_and_commit(g, src, n)
    return True


def put_waiting(ring: ShmTraceRing, src: memoryview, timeout: Optional[float]) -> None:
    """``put`` once ``try_put`` found no slot: on the quiet path, spin retrying ``try_put``
    (the steady state of a stream that outruns its consumer: no turn, no guard object);
    then acquire (waiting), copy, commit."""
    n = src.nbytes
    check_put_size(ring, n)
    since = spun = None
    if ring._p_quiet and timeout != 0:
        since, spun = time.monotonic(), time.perf_counter()
        ring._enter("put")
        try:
            if ring._waiter.spin_quiet(True, lambda: ring.try_put(src) or None, timeout, spun):
                return
        finally:
            ring._leave()
    copy_and_commit(acquire(ring, timeout, size=n, since=since, spun=spun), src, n)


def check_put_size(ring: ShmTraceRing, n: int) -> None:
    if n > ring.slot_size:
        raise ValueError(f"ring {ring.name!r}: put(): {n} bytes do not fit a slot of "
                         f"{ring.slot_size} bytes")


def copy_and_commit(g: ProducerGuard, src: memoryview, n: int) -> None:
    try:
        g._buf[:n] = src
    except BaseException:
        g.abort()
        raise
    g.commit(n)


def take_turn(ring: ShmTraceRing, deadline: Optional[float], timeout: Optional[float]) -> None:
    """Under ring._lock: wait until no other producer slot of this process is out."""
    ps = ring._ps
    if ring._closed:
        ring._check_open()
    while ps.busy():
        check_not_mine(ring)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"ring {ring.name!r}: another producer thread of this "
                               f"process held the producer slot for all of {timeout} s")
        ps.turn.wait(LIVENESS_SLICE if left is None else min(left, LIVENESS_SLICE))
        if ring._closed:
            raise ring._waiter.closed_while("acquire")


def new_producer_guard(ring: ShmTraceRing, size: int) -> ProducerGuard:
    # Under ring._lock, holding an ``empty`` token.
    w = ring._load(_W)
    slot = w % ring.capacity
    if size > ring._backed[slot]:
        try:
            reserve(ring, slot, size)
        except BaseException:
            if not ring._fast:
                ring._post(ring._h_empty)  # give the slot back: the ring stays usable
            ring._ps.end_turn()
            raise
    v = ring._slot_views[slot]
    if v is None:
        v = ring._view(slot)
    g = ProducerGuard(ring, w, v[:size])
    ps = ring._ps
    ps.pg_ref = weakref.ref(g)
    ps.turn_free = False
    ps.turn_owner = threading.get_ident()
    return g


def reserve(ring: ShmTraceRing, slot: int, size: int) -> None:
    """``posix_fallocate`` the first ``size`` bytes of ``slot`` (rounded up to pages)."""
    size = min(ring.slot_size, -(-size // _PAGE) * _PAGE)
    objs = ring._objs
    assert objs is not None
    reserve_range(objs.fd, HEADER_SIZE + slot * ring.slot_size, size, ring.name,
                   f"slot {slot}")
    ring._backed[slot] = size


def space(ring: ShmTraceRing) -> bool:
    """Is slot write_idx free?  The ``empty`` tokens are only hints; this makes writing
    safe.  A token lost by a consumer killed between storing read_idx and posting is
    replaced by the visibly free slot after a wait slice (see _wait_space); a late token
    finds the ring full and is dropped here."""
    ld = ring._load
    return bool(ld(_W) - ld(_R) < ring.capacity)


def wait_space(ring: ShmTraceRing, timeout: Optional[float], spun: Optional[float] = None
               ) -> bool:
    """Wait for a free slot (compat: and take its ``empty`` token; see _wait): True, or
    False on timeout or close."""
    ring._enter("acquire")
    try:
        return bool(ring._waiter.wait(True, lambda: space_taken(ring),
                                      lambda: space_idle(ring), timeout, "acquire", spun))
    except ValueError:
        if ring._closed:
            return False
        raise
    finally:
        ring._leave()


def orphaned(ring: ShmTraceRing) -> bool:
    """In flight: no consumer is registered and nobody can open the ring to be one (its
    name is gone).  False once this handle is closed: close() sets ``_closed`` before it
    unlinks, so a waiter of the owner's own handle reports the close, not this."""
    objs = ring._objs
    if ring._load(_CONSUMER_PID) or objs is None or not objs.unlinked():
        return False
    return not ring._closed  # read after: see above


def space_taken(ring: ShmTraceRing) -> Optional[bool]:
    return True if space(ring) else None  # else a surplus token: dropped


def space_idle(ring: ShmTraceRing) -> Optional[bool]:
    if space(ring):  # free, but its token never came (see _space)
        return True
    cpid = _peers.dead(ring._load, _CONSUMER_PID)
    if cpid:
        raise ConsumerGone(
            32, f"the consumer of ring {ring.name!r} (pid {cpid}) died while the "
            "producer waited for a free slot; a new consumer that opens the ring will "
            "resume (slots it had not released are delivered again)", ring.name)
    if orphaned(ring):
        raise ConsumerGone(
            32, f"ring {ring.name!r} was unlinked (its owner closed it) and no "
            "consumer is registered: no consumer can open it any more, so no slot "
            "will be freed (a consumer that opened it but never called access(), or "
            "a Rust consumer, counts only once registered with expect_consumer())",
            ring.name)
    return None


def register_producer(ring: ShmTraceRing) -> None:
    # Under ring._lock.
    _exitnote.clear(ring)  # an opener's note is not this producer's
    _peers.register(ring._load, ring._store, _PRODUCER_PID, ring.name, "producer")
    if ring._has_len and not ring._len_backed:
        # A Rust-created ring never wrote the length records: reserve their pages.
        objs = ring._objs
        assert objs is not None
        reserve_range(objs.fd, LEN_OFF, 16 * ring.capacity, ring.name,
                       "the length records")
        ring._len_backed = True
    ring._producer_registered = True
    # The quiet path: x86_64's plain word access, a ring with length records.
    ring._p_quiet = ring._plain and ring._has_len


def commit(ring: ShmTraceRing, guard: ProducerGuard, nbytes: Optional[int]) -> None:
    buf = guard._buf
    if nbytes is None:
        nbytes = len(buf)
    elif isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"{guard!r}: commit(nbytes) must be an int, not "
                        f"{type(nbytes).__name__}")
    elif not 0 <= nbytes <= len(buf):
        raise ValueError(f"{guard!r}: cannot commit {nbytes} bytes: the slot holds "
                         f"0..{len(buf)}")
    with ring._lock:
        if guard._done:
            raise ValueError(f"{guard!r} was already committed or aborted")
        if ring._closed:  # nothing published; the guard ends (and its turn)
            text = guard._closed_text("commit()")
            abort(ring, guard)
            raise ValueError(text)
        idx = guard.index
        if ring._load(_FIN) == _CRASHED:
            guard._finish()
            ring._ps.end_turn()
            raise RuntimeError(f"ring {ring.name!r} crashed (notify_crash) while "
                               f"{guard!r} was being written: it is not published")
        guard._finish()  # no writes through this guard after publication
        publish(ring, idx, nbytes)
        ring._ps.end_turn()
        if not ring._fast:
            if ring._post(ring._h_filled) == -1:
                ring._filled.post()  # raises the OSError with the name
            return
        hq = ring._hq
    ring._waiter.signal(hq, _CSLEEP, _PS)


def publish(ring: ShmTraceRing, idx: int, nbytes: int) -> None:
    """Length record, then write_idx (release): the slot's bytes and its record are
    visible before the index that publishes them.  Under ring._lock."""
    hq = ring._hq
    if ring._has_len:
        k = _LEN + 2 * (idx % ring.capacity)
        hq[k + 1] = nbytes
        hq[k] = idx + 1
    ring._store(_W, idx + 1)
    hq[_PS + STAT_BYTES] += nbytes  # statistics: the producer's own word


def abort(ring: ShmTraceRing, guard: ProducerGuard) -> None:
    with ring._lock:
        if guard._done:
            return
        guard._finish()
        ps = ring._ps
        mine = ps.pg_ref is not None and ps.pg_ref() in (guard, None)
        if mine:
            ps.end_turn()
        if ring._fast:
            return  # fast mode took no token
        if not ring._closed:
            ring._post(ring._h_empty)
        else:
            ring._post_empty_via_open_handle()


def check_may_end(ring: ShmTraceRing, what: str) -> None:
    """Only the producer ends the stream: refuse while another live process (a forked
    child's parent, say) is the registered producer.  Header loads only (no lock)."""
    other = _peers.live_other(ring._load, _PRODUCER_PID)
    if other:
        raise RuntimeError(
            f"ring {ring.name!r}: {what}() refused: the registered producer is pid "
            f"{other}, alive, and this is pid {os.getpid()} (a forked child?); nothing "
            "shared was changed. Only the producer process ends its stream")


def acquire(ring: ShmTraceRing, timeout: Optional[float] = None, *, size: Optional[int] = None,
            since: Optional[float] = None, spun: Optional[float] = None) -> ProducerGuard:
    """See ``ShmTraceRing.acquire``.  ``since``/``spun``: when the call began
    (``time.monotonic()``/``perf_counter()``) if it spun already (``put``): the timeout
    counts from then, and no second spin."""
    if ring._closed:
        ring._check_open()
    timeout = check_timeout(timeout, "acquire", ring.name)
    size = check_acquire_size(ring, size)
    start = time.monotonic() if since is None else since
    deadline = None if timeout is None else start + timeout
    ps = ring._ps
    with ring._lock:
        take_turn(ring, deadline, timeout)
        g = slot_now(ring, size)  # never blocks
        if g is not None:
            return g
        ps.acquiring = True
        ps.turn_free = False
        ps.turn_owner = threading.get_ident()
    # The wait happens outside the lock: a consumer thread of this same handle must be
    # able to release slots meanwhile.
    try:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        got = wait_space(ring, left, spun)
    except BaseException:
        with ring._lock:
            ps.end_turn()
        raise
    with ring._lock:
        if ring._closed:  # a token taken meanwhile is lost: tokens are only hints
            ps.end_turn()
            raise ring._waiter.closed_while("acquire")
        if not got:
            ps.end_turn()
            raise TimeoutError(f"ring {ring.name!r}: no free slot within {timeout} s "
                               f"(the consumer is not releasing slots){fast_hint(ring)}")
        ps.acquiring = False
        return new_producer_guard(ring, size)


def mark_finished(ring: ShmTraceRing) -> None:
    """See ``ShmTraceRing.mark_finished``."""
    with ring._lock:
        ring._check_open()
        check_may_end(ring, "mark_finished")
        g = ring._producer_guard
        if g is not None:
            raise RuntimeError(f"ring {ring.name!r}: commit or abort {g!r} before "
                               "mark_finished()")
        # Compare-exchange, not load-then-store: a notify_crash (a signal handler, no lock)
        # between the two would be erased.
        fin = ring._cas(ring._a_fin, 0, _FINISHED)
        if fin:
            raise RuntimeError(f"ring {ring.name!r} is already "
                               f"{'finished' if fin == _FINISHED else 'crashed'}")
        if ring._fast:
            ring._waiter.wake(_CSLEEP, True, _PS)  # after a compare-exchange: fenced
        else:
            ring._filled.post()


def notify_crash(ring: ShmTraceRing, signal: int, addr: int = 0, operation: int = 0,
                 message: str = "") -> None:
    """See ``ShmTraceRing.notify_crash``."""
    check_crash_args(f"ring {ring.name!r}", signal, addr, operation, message,
                     " (decode bytes first)")
    objs = ring._objs
    if ring._closed or objs is None or not objs.inflight.enter():
        return
    try:
        check_may_end(ring, "notify_crash")
        if ring._load(_FIN):
            return  # already finished or crashed: the first end wins
        raw = message.encode("utf-8", "replace")[:MSG_MAX] if message else b""
        _consumer.record_crash(ring, signal, addr, operation, raw, 0)
    finally:
        objs.inflight.leave()
