"""Batches: ``put_many`` and ``get_many``, one message per slot, many slots per lock section.

A message through :meth:`~ctshm.ring.ShmTraceRing.put` / ``access`` pays a Python call or
two, a lock section and, on the consumer, two objects (guard, result); a slot's bytes cost
far less.  A batch pays those once for as many messages as the ring holds now:

* ``put_many`` writes each message into its own slot as ``try_put`` does (compat: a token
  taken per message), all in one lock section while the next slot is free; the length records
  first, then one ``write_idx`` store for the batch (compat: then a ``filled`` post per
  message), and in fast mode one fence and one check of the consumer's sleep word.  (The
  model stores ``write_idx`` per message; one store of the last value lets a consumer see
  fewer intermediate values, never other ones.)  A message that finds no free
  slot ends the batch (fenced and woken first), then waits as ``put`` does.  This is the
  model's ``-DBATCH`` (``model/ring.pml``; its mutant goes on when the ring is full and loses
  a wake-up).
* ``get_many`` copies committed messages out and hands their slots back in one lock section
  per round of at most half the ring (the producer refills one half while the other is
  copied; ``put_many`` publishes in rounds of half the ring too): ``reserved_idx`` and
  ``read_idx`` move by the round's length (from equal values: no guard outstanding in this
  process), then one fence and one check of the producer's sleep word.  These are the
  model's steps as they stand: claims, then an in-order release of several slots with one
  fence and wake-up (a thread holding guards releasing them).

Both take the quiet path's conditions (registered, open, plain word access, no hand-back, no
other producer thread holding the turn); otherwise they are loops of ``put`` / ``try_access``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from ._checks import byte_view, check_timeout, is_int
from .layout import (
    C_SLEEP as _CSLEEP,
    CONSUMER_STATS as _CS,
    FINISHED as _FIN,
    LEN_WORD as _LEN,
    P_SLEEP as _PSLEEP,
    PRODUCER_STATS as _PS,
    READ_IDX as _R,
    RESERVED_IDX as _RES,
    STAT_BYTES,
    WRITE_IDX as _W,
)
from .results import Data

if TYPE_CHECKING:
    from .ring import ShmTraceRing

__all__ = ["get_many", "put_many", "take"]


# -- producer -----------------------------------------------------------------------------------
def put_many(ring: ShmTraceRing, messages: Any, timeout: Optional[float] = None) -> None:
    """Put each message (bytes-like) into its own slot, in order, waiting up to ``timeout``
    seconds for each free slot (``None``: without bound).

    Every message is checked before any is put (a size or type error puts none).  If a wait
    or a publish fails later (``TimeoutError``, ``ConsumerGone``, the ring closed), the
    messages before the failing one were put, in order, and none after: a ``TimeoutError``
    says how many."""
    if timeout is not None:
        timeout = check_timeout(timeout, "put_many", ring.name)
    views = [m if type(m) in _PLAIN else _view(ring, m) for m in messages]
    limit = ring.slot_size
    for i, v in enumerate(views):
        if len(v) > limit:
            raise ValueError(f"ring {ring.name!r}: put_many(): message {i} has {len(v)} "
                             f"bytes, more than a slot of {limit} bytes (nothing was put)")
    i, total = 0, len(views)
    while i < total:
        if ring._p_quiet:
            k = _publish(ring, views, i)
            if k:
                i += k
                continue
        try:
            ring.put(views[i], timeout)
        except TimeoutError:
            raise TimeoutError(f"ring {ring.name!r}: put_many(): no free slot within "
                               f"{timeout} s; messages 0..{i - 1} of {total} were put, "
                               f"{i}.. were not") from None
        i += 1


_PLAIN = (bytes, bytearray)  # taken as they are: len() is their byte count


def _view(ring: ShmTraceRing, m: Any) -> memoryview:
    try:
        return memoryview(m).cast("B")
    except TypeError:  # not a buffer (refused), or not C-contiguous (copied in C order)
        return byte_view(m, ring.name, "put_many")


def _publish(ring: ShmTraceRing, views: list[Any], i: int) -> int:
    """The quiet batch: copy views[i:] into the slots free now, publish them with one
    ``write_idx`` store; how many were put."""
    ps, fast, cap = ring._ps, ring._fast, ring.capacity
    done = 0
    hq: Any = None
    try:
        with ring._lock:
            if not (ring._p_quiet and ps.turn_free):
                return 0
            hq = ring._hq
            w0: int = hq[_W]
            w = w0
            if hq[_FIN]:
                return 0
            end = min(len(views), i + cap - (w - hq[_R]), i + ring._batch_half)
            slot_views, backed = ring._slot_views, ring._backed
            nbytes = 0
            try:
                while i < end:
                    src = views[i]
                    n = len(src)
                    slot = w % cap
                    v = slot_views[slot]
                    if v is None or n > backed[slot]:
                        break  # first use of the slot: put() backs it
                    if not fast and ring._trywait(ring._h_empty) != 0:
                        break
                    try:
                        v[:n] = src
                    except BaseException:
                        if not fast:
                            ring._post(ring._h_empty)
                        raise
                    k = _LEN + 2 * slot  # quiet: the ring has length records
                    hq[k + 1] = n
                    hq[k] = w + 1
                    w += 1
                    i += 1
                    nbytes += n
            finally:  # (also when a signal handler's exception stops the copy)
                done = w - w0
                if done:
                    hq[_W] = w  # x86_64 only (quiet): a plain store is a release
                    hq[_PS + STAT_BYTES] += nbytes  # statistics: the producer's own word
                    if not fast:
                        for _ in range(done):
                            if ring._post(ring._h_filled) == -1:
                                ring._filled.post()  # raises the OSError with the name
    finally:
        if fast and done:
            _wake(ring, hq, _CSLEEP, _PS)
    return done


def _wake(ring: ShmTraceRing, hq: Any, word: int, stats: int) -> None:
    """Fast mode, after the batch's lock section (its release is the fence, see _waiting):
    does the other side sleep?  (Re-entrant: signal() fences first.)  The same steps as the
    quiet single-message paths in ring.py, which inline them."""
    try:
        if ring._lock._is_owned() or hq[word]:
            ring._waiter.signal(hq, word, stats)
    except ValueError:
        pass  # closed by another thread meanwhile (its header view is released)


# -- consumer -----------------------------------------------------------------------------------
def get_many(ring: ShmTraceRing, max_messages: int = 100, timeout: Optional[float] = None
             ) -> list[bytes]:
    """At least one message as bytes (waiting as :meth:`get`: ``RingFinished`` at the end,
    ``ProducerCrashed``, ``TimeoutError``), then as many more as are committed now, up to
    ``max_messages`` (an int >= 1).  Each message's slot is handed back before this returns."""
    if (type(max_messages) is not int and not is_int(max_messages)) or max_messages < 1:
        raise ValueError(f"ring {ring.name!r}: get_many(): max_messages must be an int >= 1, "
                         f"not {max_messages!r}")
    if timeout is not None:
        timeout = check_timeout(timeout, "get_many", ring.name)
    if ring._c_quiet:
        out = _take_all(ring, max_messages)
        if out:
            return out
        if timeout != 0:  # spin retrying the batch (no claim, no token of its own)
            t0 = time.perf_counter()
            ring._enter("get_many")
            try:
                spun: Optional[list[bytes]] = ring._waiter.spin_quiet(
                    False, lambda: _take_all(ring, max_messages) or None, timeout, t0)
            finally:
                ring._leave()
            if spun:
                return spun
            if timeout is not None:
                timeout = max(0.0, timeout - (time.perf_counter() - t0))
    out = [ring.get(timeout)]
    while len(out) < max_messages:
        more = take(ring, max_messages - len(out)) if ring._c_quiet else None
        if more:
            out.extend(more)
            continue
        r = ring.try_access()
        if type(r) is not Data:
            break  # nothing now, or the end: the next call reports it
        with r.guard as g:
            out.append(bytes(g.buf))
    return out


def _take_all(ring: ShmTraceRing, most: int) -> Optional[list[bytes]]:
    """Up to ``most`` messages, in rounds of at most half the ring, each round's slots
    handed back before the next is copied (the producer refills them meanwhile)."""
    half = ring._batch_half
    out = take(ring, min(most, half))
    while out and len(out) < most:
        more = take(ring, min(most - len(out), half))
        if not more:
            break
        out += more
    return out


def take(ring: ShmTraceRing, most: int) -> Optional[list[bytes]]:
    """The quiet batch: copy out up to ``most`` committed messages and hand their slots back
    (None or [] if the quiet path does not apply now: the caller takes the general one)."""
    fast, cap = ring._fast, ring.capacity
    out: list[bytes] = []
    hq: Any = None
    try:
        with ring._lock:
            if not ring._c_quiet:
                return None
            hq = ring._hq
            fin, res, w = hq[_FIN], hq[_RES], hq[_W]
            if fin or hq[_FIN] or res >= w or w - res > cap or hq[_R] != res:
                return None  # the end, nothing, or guards outstanding: the general path
            end = min(w, res + most)
            ro_views, limit = ring._ro_views, ring.slot_size
            nbytes, append, tokens = 0, out.append, 0
            try:
                while res < end:
                    slot = res % cap
                    v = ro_views[slot]
                    if v is None or not (fast or ring._trywait(ring._h_filled) == 0):
                        break
                    tokens += 1
                    k = _LEN + 2 * slot
                    n = hq[k + 1] if hq[k] == res + 1 else len(v)  # Rust: the whole slot
                    if n > limit:
                        break  # the general path reports it (its token is given back below)
                    append(v[:n].tobytes())
                    res += 1
                    nbytes += n
            except BaseException:  # (a signal handler's exception): nothing was taken
                out.clear()
                raise
            finally:
                if not fast:  # the tokens of messages not taken go back
                    for _ in range(tokens - len(out)):
                        ring._post(ring._h_filled)
            if out:
                hq[_RES] = res  # claimed ...
                hq[_CS + STAT_BYTES] += nbytes
                hq[_R] = res  # ... and handed back, after the copies
                if not fast:
                    for _ in out:
                        if ring._post(ring._h_empty) == -1:
                            ring._empty.post()  # raises the OSError with the name
    finally:
        if fast and out:
            _wake(ring, hq, _PSLEEP, _CS)
    return out
