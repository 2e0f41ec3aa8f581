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
* ``get_many`` copies at most half the ring of committed messages out and hands their slots
  back in one lock section (the producer refills the other half meanwhile; ``put_many``
  publishes in rounds of half the ring too): ``reserved_idx`` and ``read_idx`` move by the
  batch's length (from equal values: no guard outstanding in this process), then one fence
  and one check of the producer's sleep word.  These are the model's steps as they stand:
  claims, then an in-order release of several slots with one fence and wake-up (a thread
  holding guards releasing them).  Like ``get``, it hands the slots back before it returns:
  a consumer killed in the call, or a signal handler's exception at its very end, loses
  that call's messages (guards from ``access`` give at-least-once across a restart).
* Compat tokens (one ``filled`` post per message put, one ``empty`` post per message
  taken) are counted as owed before they are posted: a signal handler's exception between
  two posts leaves the rest owed, posted by this process's next batch, ``mark_finished()``
  or ``close()``.

Both take the quiet path's conditions (registered, open, plain word access, no hand-back, no
other producer thread holding the turn); otherwise they are loops of ``put`` / ``try_access``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from ._checks import byte_view, check_timeout, is_int
from .errors import ProducerCrashed, RingFinished
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
from .results import Crashed, Data, Finished

if TYPE_CHECKING:
    from .ring import ShmTraceRing

__all__ = ["end_error", "get_many", "put_many", "settle", "take"]


# -- producer -----------------------------------------------------------------------------------
def put_many(ring: ShmTraceRing, messages: Any, timeout: Optional[float] = None) -> None:
    """Put each message (bytes-like) into its own slot, in order, waiting up to ``timeout``
    seconds for each free slot (``None``: without bound).

    Every message is checked before any is put (a size or type error puts none); an
    iterable other than a list or tuple is copied as it is collected (a generator may
    refill one buffer).  If a wait or a publish fails later (``TimeoutError``,
    ``ConsumerGone``, the ring closed), the messages before the failing one were put, in
    order, and none after: a ``TimeoutError`` says how many."""
    if timeout is not None:
        timeout = check_timeout(timeout, "put_many", ring.name)
    views = _collect(ring, messages)
    if ring._ps.owed_filled:  # an interrupted batch's tokens, first
        with ring._lock:
            settle(ring)
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
            done = f"messages 0..{i - 1} of {total} were put, {i}.. were not" if i else \
                f"none of the {total} messages were put"
            raise TimeoutError(f"ring {ring.name!r}: put_many(): no free slot within "
                               f"{timeout} s; {done}") from None
        i += 1


_PLAIN = (bytes, bytearray)  # taken as they are: len() is their byte count
_ONE_BUFFER = (bytes, bytearray, memoryview, str)


def _collect(ring: ShmTraceRing, messages: Any) -> list[Any]:
    """The messages as bytes-like objects of known length, every one checked."""
    if type(messages) in _SEQUENCES:  # (the common case: no copy)
        try:
            views = [m if type(m) in _PLAIN else _view(ring, m) for m in messages]
        except TypeError:
            views = []  # which one: said below
    else:
        if isinstance(messages, _ONE_BUFFER):
            raise TypeError(f"ring {ring.name!r}: put_many() takes an iterable of messages "
                            f"(e.g. a list of bytes), not one {type(messages).__name__}; "
                            "use put() for one message")
        try:
            it = iter(messages)
        except TypeError:
            raise TypeError(f"ring {ring.name!r}: put_many(): messages must be an iterable "
                            f"of bytes-like objects, not {type(messages).__name__}") from None
        views = [m if type(m) is bytes else bytes(_view(ring, m)) for m in it]
        messages = views
    if len(views) != len(messages):
        for i, m in enumerate(messages):  # the first that is not a buffer, with its index
            if type(m) not in _PLAIN:
                try:
                    _view(ring, m)
                except TypeError as e:
                    raise TypeError(f"message {i}: {e}") from None
    limit = ring.slot_size
    for i, v in enumerate(views):
        if len(v) > limit:
            raise ValueError(f"ring {ring.name!r}: put_many(): message {i} has {len(v)} "
                             f"bytes, more than a slot of {limit} bytes (nothing was put)")
    return views


_SEQUENCES = (list, tuple)


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
            if ps.owed_filled:
                settle(ring)
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
                        ps.owed_filled += done  # owed first: an interrupted post stays owed
                        settle(ring)
    finally:
        if fast and done:
            _wake(ring, hq, _CSLEEP, _PS)
    return done


def settle(ring: ShmTraceRing) -> None:
    """Post the compat tokens this process owes (under the lock).  The count goes down
    first, then the post: CPython runs a signal handler when a call returns, never between
    the store and the start of a foreign call, so a handler's exception leaves exactly
    the tokens not yet posted owed."""
    ps = ring._ps
    while ps.owed_filled > 0:
        ps.owed_filled -= 1
        if ring._post(ring._h_filled) == -1:
            ring._filled.post()  # raises the OSError with the name
    while ps.owed_empty > 0:
        ps.owed_empty -= 1
        if ring._post(ring._h_empty) == -1:
            ring._empty.post()


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
    ``max_messages`` (an int >= 1) and half the ring.  The messages' slots are handed back
    before this returns."""
    if type(max_messages) is not int:
        if not is_int(max_messages):
            raise TypeError(f"ring {ring.name!r}: get_many(): max_messages must be an int "
                            f">= 1, not {type(max_messages).__name__}")
        max_messages = int(max_messages)  # (a NumPy integer, say)
    if max_messages < 1:
        raise ValueError(f"ring {ring.name!r}: get_many(): max_messages must be an int >= 1, "
                         f"not {max_messages!r}")
    if timeout is not None:
        timeout = check_timeout(timeout, "get_many", ring.name)
    late = ring._batch_error
    if late is not None:  # met after the previous call had taken messages: its turn now
        ring._batch_error = None
        raise late
    max_messages = min(max_messages, ring._batch_half)
    if ring._c_quiet:
        out = take(ring, max_messages)
        if out:
            return out
        if timeout != 0:  # spin retrying the batch (no claim, no token of its own)
            t0 = time.perf_counter()
            ring._enter("get_many")
            try:
                spun: Optional[list[bytes]] = ring._waiter.spin_quiet(
                    False, lambda: take(ring, max_messages) or None, timeout, t0)
            finally:
                ring._leave()
            if spun:
                return spun
    # The general path: guards, each held until the batch is copied (a consumer killed
    # meanwhile hands none back: a restarted one gets them again), then released in order.
    first = ring.access(timeout)
    if not isinstance(first, Data):
        raise end_error(ring, first, timeout, "get_many(): ")
    guards = [first.guard]
    out = [bytes(first.guard.buf)]
    try:
        while len(out) < max_messages:
            r = ring.try_access()
            if not isinstance(r, Data):
                break  # nothing now, or the end: the next call reports it
            guards.append(r.guard)
            out.append(bytes(r.guard.buf))
    except Exception as e:  # (closed meanwhile, a corrupt slot): what was taken first,
        ring._batch_error = e  # the error from the next call
    finally:
        for g in guards:
            g.release()
    return out


def end_error(ring: ShmTraceRing, r: Any, timeout: Optional[float], what: str = ""
              ) -> Exception:
    """The exception the copying calls (``get``, iteration, ``get_many``) raise for a
    result that is not ``Data``: ``Finished``, ``Crashed`` or ``Timeout``."""
    if isinstance(r, Finished):
        return RingFinished(f"ring {ring.name!r} is finished")
    if isinstance(r, Crashed):
        return ProducerCrashed(r)
    return TimeoutError(f"ring {ring.name!r}: {what}no message within {timeout} s")


def take(ring: ShmTraceRing, most: int) -> Optional[list[bytes]]:
    """The quiet batch: copy out up to ``most`` committed messages and hand their slots
    back (None or [] if the quiet path does not apply now: the caller takes the general
    one)."""
    fast, cap = ring._fast, ring.capacity
    out: list[bytes] = []
    hq: Any = None
    try:
        with ring._lock:
            if not ring._c_quiet:
                return None
            ps = ring._ps
            if ps.owed_empty:
                settle(ring)
            hq = ring._hq
            fin, res, w = hq[_FIN], hq[_RES], hq[_W]
            if fin or hq[_FIN] or res >= w or w - res > cap or hq[_R] != res:
                return None  # the end, nothing, or guards outstanding: the general path
            res0 = res
            res, nbytes = _copy_out(ring, hq, res, min(w, res + most), out)
            if out:
                hq[_RES] = res  # claimed ...
                hq[_CS + STAT_BYTES] += nbytes
                hq[_R] = res  # ... and handed back, after the copies
                if not fast:
                    ps.owed_empty += res - res0  # owed first (see settle)
                    settle(ring)
    finally:
        if fast and out:
            _wake(ring, hq, _PSLEEP, _CS)
    return out


def _copy_out(ring: ShmTraceRing, hq: Any, res: int, end: int, out: list[bytes]
              ) -> tuple[int, int]:
    """Under the lock: copy messages res..end-1 into ``out`` while each is there (compat:
    with its ``filled`` token); the next index and the bytes copied.  On an exception
    nothing was taken (``out`` emptied); the tokens of messages not taken go back."""
    fast, cap = ring._fast, ring.capacity
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
        if not fast:
            for _ in range(tokens - len(out)):
                ring._post(ring._h_filled)
    return res, nbytes
