"""The consumer side of a ring handle, off the quiet path: claiming a slot (and waiting for
one), the end of the stream and the producer's death, registration (and taking over from a
dead consumer), the reorder of out-of-order releases.

Functions of a :class:`~ctshm.ring.ShmTraceRing` (``ring``), called by its methods under the
rules stated there (the lock, in-flight sections).  The quiet path of ``try_access`` and the
in-order release are the ring's own (:mod:`ctshm.ring`, "The quiet path"); everything else
a consumer does is here, with every guarantee.
"""

from __future__ import annotations

import heapq
import time
from typing import TYPE_CHECKING, Optional

from . import _fork, _peers
from .errors import CorruptRingError
from .guards import ConsumerGuard
from .layout import (
    C_SLEEP as _CSLEEP,
    CONSUMER_PID as _CONSUMER_PID,
    CONSUMER_STATS as _CS,
    FIN_CRASHED as _CRASHED,
    FINISHED as _FIN,
    LEN_WORD as _LEN,
    PRODUCER_PID as _PRODUCER_PID,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    RESERVED_IDX as _RES,
    STAT_BYTES,
    WRITE_IDX as _W,
)
from .results import FINISHED_RESULT as _FINISHED_RESULT, AccessResult, Data, Timeout

if TYPE_CHECKING:
    from .ring import ShmTraceRing


def access_now(ring: ShmTraceRing) -> Optional[AccessResult]:
    """access()'s general attempt without waiting: a result an extension took from this
    handle and did not deliver (see :meth:`set_undelivered_source`), else registration
    and one claim under the lock."""
    ring._check_open()
    source = ring._undelivered
    if source is not None:
        kept = source()  # outside the lock: it may wait for its own claim to end
        if kept is not None:
            return kept
    with ring._lock:
        ring._check_open()
        if not ring._consumer_registered:
            register_consumer(ring)
        if ring._fast or ring._trywait(ring._h_filled) == 0:
            return claim(ring)
    return None


def access_wait(ring: ShmTraceRing, timeout: Optional[float]) -> AccessResult:
    """``access`` once ``try_access`` found nothing: on the quiet path, spin retrying
    ``try_access`` (no claim of its own, no token taken for it); then the general wait."""
    ring._enter("access")
    try:
        spun = None
        if ring._c_quiet and timeout != 0:
            spun = time.perf_counter()
            r = ring._waiter.spin_quiet(False, ring.try_access, timeout, spun)
            if r is not None:
                return r  # type: ignore[no-any-return]
            if timeout is not None:
                timeout = max(0.0, timeout - (time.perf_counter() - spun))
        return wait_data(ring, timeout, spun)
    finally:
        ring._leave()


def wait_data(ring: ShmTraceRing, timeout: Optional[float], spun: Optional[float] = None
              ) -> AccessResult:
    """Wait for a slot (compat: take a ``filled`` token) and claim it (see _wait)."""
    r = ring._waiter.wait(False, lambda: take_data(ring), lambda: data_idle(ring), timeout,
                          "access", spun)
    return on_timeout(ring) if r is None else r


def take_data(ring: ShmTraceRing) -> Optional[AccessResult]:
    with ring._lock:
        return None if ring._closed else claim(ring)


def data_idle(ring: ShmTraceRing) -> Optional[AccessResult]:
    check_producer_alive(ring)
    # Self-healing: a consumer that died between taking a token and reserving its slot
    # lost that token.  Work that is visible in the header is claimed without a token; a
    # token left over later finds nothing and is dropped by _claim().
    if ring._load(_RES) < ring._load(_W) or ring._load(_FIN):
        return take_data(ring)
    return None


def claim(ring: ShmTraceRing) -> Optional[AccessResult]:
    """Under the lock, holding one ``filled`` token (fast mode: none): reserve a slot, or
    report the end.  The reservation is a plain store: only this consumer process
    writes reserved_idx, and its threads hold the lock here."""
    ld, st = ring._load, ring._store
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
            w = ring._hdr.crash_limit(w)
        if res < w:
            if w - res > ring.capacity and ring._hdr.indices_corrupt():
                raise CorruptRingError(
                    f"ring {ring.name!r} header is corrupt: write_idx={w} is more than "
                    f"capacity={ring.capacity} ahead of reserved_idx={res}")
            d = data(ring, res)  # its guard is inert until the claim (see try_access)
            if ring._plain:
                ring._hq[_RES] = res + 1  # no call between the claim and the guard's life
            else:
                st(_RES, res + 1)  # (a handler's exception right after it: see data)
            d.guard._done = False
            return d
        if fin:
            ring._waiter.wake_consumers()  # every consumer thread sees the end
            return ring._hdr.crashed() if fin == _CRASHED else _FINISHED_RESULT
        # A token with nothing behind it (only after a hostile or corrupt peer): drop it.
        return None


def data(ring: ShmTraceRing, idx: int) -> Data:
    """Under ring._lock, before message ``idx`` is claimed: its ``Data`` with an *inert*
    guard (done: its finalizer does nothing).  The caller claims the message and makes the
    guard live with no call in between, so a signal handler's exception (raised as a call
    returns) lands before both (nothing claimed; the inert guard is dropped) or after both
    (the guard's finalizer hands the slot back): never a claimed slot without a guard, which
    would stall the ring for good (CPython 3.11+; not x86_64, the claim is a call, and PyPy
    or older CPythons run handlers between any bytecodes: the exception can land between).
    A length record beyond the slot is claimed and skipped here."""
    slot = idx % ring.capacity
    v = ring._ro_views[slot]
    if v is None:
        v = ring._ro_views[slot] = ring._ro_view(slot)
    hq = ring._hq
    n = len(v)
    if ring._has_len:
        k = _LEN + 2 * slot
        if hq[k] == idx + 1:
            n = hq[k + 1]
            if n > ring.slot_size:
                ring._store(_RES, idx + 1)
                ring._complete(idx, None)
                raise CorruptRingError(
                    f"ring {ring.name!r}: length record of message {idx} says {n} bytes, "
                    f"more than the slot ({ring.slot_size}); the message was skipped")
    hq[_CS + STAT_BYTES] += n  # statistics: the consumer's own word
    g = ConsumerGuard.__new__(ConsumerGuard)  # (not __init__: inert from the start)
    g._ring, g.index, g._buf, g._done, g._pid = ring, idx, v[:n], True, _fork.PID
    return Data(g)


def on_timeout(ring: ShmTraceRing) -> AccessResult:
    check_producer_alive(ring)
    fin = ring._load(_FIN)  # first: see _claim
    if fin:
        res, w = ring._load(_RES), ring._load(_W)
        if fin == _CRASHED:
            w = ring._hdr.crash_limit(w)
        if res >= w:
            return ring._hdr.crashed() if fin == _CRASHED else _FINISHED_RESULT
    return Timeout()


def check_producer_alive(ring: ShmTraceRing) -> None:
    """If the registered producer died without notify_crash, record a crash (signal 0)."""
    if ring._load(_FIN):
        return
    ppid = _peers.dead(ring._load, _PRODUCER_PID)
    if not ppid:
        return
    # Dead for sure, so it writes nothing more.  Load `finished` again: a producer that
    # called notify_crash (or mark_finished) just before dying keeps its own account.
    if ring._load(_FIN):
        return
    with ring._lock:  # its wake-ups post under the lock (see _waiting._withdraw)
        record_crash(ring, 0, 0, 0, _peers.death_note(ring._load, _PRODUCER_PID, ppid), ppid)


def record_crash(ring: ShmTraceRing, signal: int, addr: int, operation: int, message: bytes,
                  dead_pid: int) -> None:
    """The one crash-record writer (notify_crash, or a consumer that found the producer
    dead): at the current write_idx, details and message first, a fence, then the flag
    by compare-exchange (the first end wins) and a ``filled`` post."""
    if ring._hdr.record_crash(signal, addr, operation, message, dead_pid):
        if ring._fast:  # the compare-exchange fenced the flag before this load
            ring._waiter.wake(_CSLEEP, True, _CS if dead_pid else _PS)
        else:
            ring._filled.post()


def register_consumer(ring: ShmTraceRing) -> None:
    with ring._lock:
        ring._check_open()
        if ring._consumer_registered:
            return
        r, res = ring._load(_R), ring._load(_RES)
        if _peers.register(ring._load, ring._store, _CONSUMER_PID, ring.name, "consumer"):
            # The previous consumer died: slots it reserved but never released go back
            # to the queue (at-least-once delivery across a consumer restart).
            if not r <= res <= r + ring.capacity:
                raise CorruptRingError(
                    f"ring {ring.name!r} header is corrupt: reserved_idx={res} "
                    f"read_idx={r} capacity={ring.capacity}")
            if res > r:
                ring._store(_RES, r)
                if not ring._fast:  # fast mode: the indices are the truth
                    for _ in range(res - r):
                        ring._filled.post()
            if ring._fast:
                ring._waiter.forget_sleepers()
        ring._consumer_registered = True
        ring._c_quiet = ring._quiet_consumer()


def complete_out_of_order(ring: ShmTraceRing, idx: int, cur: int) -> int:
    """Under the lock: park ``idx`` in the reorder heap and advance read_idx over every
    in-order completion; the number of slots freed."""
    pending = ring._ps.pending
    heapq.heappush(pending, idx)
    freed = 0
    while pending and pending[0] == cur:
        heapq.heappop(pending)
        cur += 1
        freed += 1
        ring._store(_R, cur)
    return freed
