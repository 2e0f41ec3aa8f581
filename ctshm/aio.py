"""asyncio for :class:`~ctshm.ring.ShmTraceRing`: wait for messages and slots without blocking
the event loop, and without busy-polling it.

Consumer::

    r = await ring.aaccess(timeout)        # Data(guard) | Finished | Crashed | Timeout
    data = await ring.aget(timeout)        # bytes; RingFinished / ProducerCrashed / TimeoutError
    async for chunk in ring.aiter():       # bytes until Finished; ProducerCrashed on a crash
        ...

Producer::

    await ring.aput(data, timeout)         # copy + commit; TimeoutError when no slot came
    g = await ring.aacquire(timeout, size=n)   # a ProducerGuard, as ring.acquire()

How it waits.  A call first tries without waiting, on the event loop (one non-blocking
``access(0)`` / ``put(data, 0)``).  Only when it has to wait does a *helper thread* of the
ring handle do the blocking call, in slices of :data:`SLICE` seconds (so it notices
cancellation and ``close()``), and hand the outcome back with
``loop.call_soon_threadsafe``.  A handle has at most one consumer helper thread and at most
one producer helper thread (a handle is normally used in one direction only); a helper
serves every waiting call of its handle, from any event loop, in order, and exits
:data:`LINGER` seconds after the last waiting call is over (or once the ring is closed or
dropped: a helper holds the ring only during a blocking call for a waiting caller, so a
dropped ring is freed at once and its id can be created again).

Cancellation loses nothing.  A message the helper claims after the waiting caller was
cancelled (``task.cancel()``, ``asyncio.wait_for`` timing out, a ``TaskGroup`` shutting
down) is *kept* in the handle's pending buffer, in order, and returned by the next
``aaccess`` / ``aget`` / ``aiter`` on that handle; :func:`take_pending` hands it to the
synchronous ``access()`` path.  A caller receives a message only by taking it from that
buffer itself, after it resumed, so a cancellation can never fall between a message being
taken and being returned.  A cancelled ``aput`` / ``aacquire`` publishes nothing: a slot the
helper found is given back.  A ``Timeout`` result (``aaccess``) or ``TimeoutError`` (the
others) means nothing was taken.

Threads and ordering: messages are delivered exactly once and in order across all async
calls of a handle (the helper is the only one that claims while somebody waits, and the
loop-side fast path claims only when nobody does).  As with the synchronous API, one
producer slot is outstanding per handle: ``aput`` calls of several tasks take turns (in the
order they started waiting); a guard from ``aacquire`` must be committed or aborted before
the same task acquires again.

Hook for the synchronous path: the first async consumer call of a handle sets its pending
buffer as the handle's undelivered source (``ShmTraceRing.set_undelivered_source``), so
``access`` returns what it kept first (see :func:`take_pending`).  The per-handle state
lives here, keyed weakly by the handle; the ring knows nothing of this module.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from typing import Any, AsyncIterator, Callable, Deque, Final, Optional, TypeVar, Union

from ._checks import byte_view, check_timeout as _check_timeout
from .layout import Buffer
from .results import AccessResult
from .ring import (
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    ProducerGuard,
    RingFinished,
    ShmTraceRing,
    Timeout,
)

__all__ = ["LINGER", "SLICE", "aaccess", "aacquire", "aget", "aiter", "aput", "helper_threads",
           "pending_count", "take_pending"]

#: Longest blocking call a helper thread makes before it checks for cancellation and close.
SLICE: Final = 0.1
#: How long an idle helper thread waits for a new waiting call before it exits.
LINGER: Final = 0.1
#: Helper threads are named ``THREAD_PREFIX + "consumer <ring name>"`` (or ``producer``).
THREAD_PREFIX: Final = "ctshm-aio "

_STATE_LOCK = threading.Lock()
_S = TypeVar("_S")
#: Each handle's async state, by role; weak keys: a dropped handle drops its state.
_STATES: dict[str, weakref.WeakKeyDictionary[ShmTraceRing, Any]] = {
    "consumer": weakref.WeakKeyDictionary(), "producer": weakref.WeakKeyDictionary()}


def _ring_state(ring: ShmTraceRing, role: str, cls: type[_S]) -> _S:
    """The handle's ``cls`` state for ``role``, made once on first use."""
    states = _STATES[role]
    st = states.get(ring)
    if st is None:
        with _STATE_LOCK:
            st = states.get(ring)
            if st is None:
                st = states[ring] = cls()
                if isinstance(st, _Consumer):
                    ring.set_undelivered_source(st.take)
    assert isinstance(st, cls)
    return st


def _state(ring: ShmTraceRing, role: str) -> Any:
    """The handle's state for ``role``, or None if it never made an async call."""
    return _STATES[role].get(ring)


_RingRef = Callable[[], Optional[ShmTraceRing]]


_Step = Callable[[Any, _RingRef], bool]


def _start_helper(st: Any, ring: ShmTraceRing, role: str, step: _Step,
                  on_exit: Callable[[Any], None]) -> threading.Thread:
    """Under ``st.lock``: start ``st.helper``, a daemon thread that runs
    ``step(st, weakref.ref(ring))`` until it returns False (``step`` calls ``on_exit(st)``
    then; on an exception the thread does, if it is still ``st.helper``).

    The helper holds the ring only while it makes a blocking call for a waiting caller (who
    holds it too): a dropped ring is freed at once, its names with it, and its helper exits
    (as for a closed ring)."""
    t = st.helper = threading.Thread(target=_run_helper, args=(st, weakref.ref(ring), step,
                                                                on_exit),
                                     daemon=True, name=f"{THREAD_PREFIX}{role} {ring.name}")
    t.start()
    return t


def _run_helper(st: Any, ref: _RingRef, step: _Step, on_exit: Callable[[Any], None]) -> None:
    try:
        while step(st, ref):
            pass
    finally:
        with st.lock:
            if st.helper is threading.current_thread():
                on_exit(st)


def _gone(ref: _RingRef) -> bool:
    """The helper's ring was dropped or closed (no strong reference kept)."""
    ring = ref()
    return ring is None or ring.closed


def _set(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _discard(q: Deque[Any], x: Any) -> None:
    try:
        q.remove(x)
    except ValueError:  # already dropped (its loop was closed)
        pass


class _Error:
    """An exception raised by a helper's blocking call, for one caller to raise."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_Item = Union[Data, Finished, Crashed, Timeout, _Error]


class _Waiter:
    __slots__ = ("fut", "loop", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.woken = False

    def wake(self) -> bool:
        """Resolve the future from any thread; False if its loop is gone."""
        self.woken = True
        try:
            self.loop.call_soon_threadsafe(_set, self.fut)
        except RuntimeError:  # the loop was closed
            return False
        return True


# ---------------------------------------------------------------------------------------------
# Consumer
# ---------------------------------------------------------------------------------------------


class _Consumer:
    """Per-handle consumer state: the pending buffer, the waiting calls, the helper."""

    __slots__ = ("claim", "cond", "helper", "helper_ident", "lock", "pending", "waiters")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        # Held around every ring.access() this module makes: the results of one claim are in
        # `pending` before anybody else may claim, so messages keep their order.
        # Re-entrant: ring.access() may call take_pending() while aaccess holds it.
        self.claim = threading.RLock()
        self.pending: Deque[_Item] = deque()
        self.waiters: Deque[_Waiter] = deque()
        self.helper: Optional[threading.Thread] = None
        self.helper_ident = 0

    def demand(self) -> int:
        """Under lock: waiting calls that no pending result is set aside for."""
        return len(self.waiters) - len(self.pending)

    def rebalance(self) -> None:
        """Under lock: wake as many waiting calls (oldest first) as there are results."""
        n = len(self.pending)
        dead = []
        for w in self.waiters:
            if n <= 0:
                break
            if w.loop.is_closed() or (not w.woken and not w.wake()):
                dead.append(w)
                continue
            n -= 1
        for w in dead:
            _discard(self.waiters, w)

    def take(self) -> Optional[AccessResult]:
        """The oldest kept result, or None (see :func:`take_pending`)."""
        if self.helper_ident == threading.get_ident():
            return None
        with self.lock:
            if self.pending:
                return _unwrap(self.pending.popleft())
            idle_helper = self.helper is not None and not self.waiters
        if idle_helper:
            with self.claim, self.lock:  # the helper's slice in progress, if any, ends first
                if self.pending:
                    return _unwrap(self.pending.popleft())
        return None

    def start_helper(self, ring: ShmTraceRing) -> None:
        """Under lock: make sure the helper runs (it waits on `cond` while idle)."""
        if self.helper is None:
            # Known before the helper's first access(): it takes the lock (held here) first.
            self.helper_ident = _start_helper(self, ring, "consumer", _consumer_step,
                                              _consumer_exit).ident or 0
        else:
            self.cond.notify()


def _consumer_state(ring: ShmTraceRing) -> _Consumer:
    return _ring_state(ring, "consumer", _Consumer)


def _consumer_step(st: _Consumer, ref: _RingRef) -> bool:
    """One blocking slice for the waiting calls; False once the helper is done.  The ring is
    held only in this frame, never while the helper idles."""
    with st.lock:
        if st.demand() <= 0 and not _gone(ref):
            st.cond.wait(LINGER)
        ring = ref()
        if ring is None or ring.closed or st.demand() <= 0:
            # Decided under the lock that also starts helpers: a call that starts
            # waiting from now on starts a new one.
            _consumer_exit(st)
            return False
    with st.claim:
        try:
            r: _Item = ring.access(SLICE)
        except BaseException as e:  # delivered to one caller, who raises it
            r = _Error(e)
        del ring  # before a caller is woken: the ring may be dropped as soon as it returns
        if type(r) is not Timeout:
            with st.lock:
                st.pending.append(r)
                st.rebalance()
    return True


def _consumer_exit(st: _Consumer) -> None:
    """Under lock: this helper is gone; calls still waiting (ring closed) raise."""
    st.helper = None
    st.helper_ident = 0
    for w in st.waiters:
        if not w.woken:
            w.wake()


def _closed(ring: ShmTraceRing) -> ValueError:
    return ValueError(f"ring {ring.name!r} is closed: open it again to use it")


def _unwrap(r: _Item) -> AccessResult:
    if isinstance(r, _Error):
        raise r.exc
    return r


def take_pending(ring: ShmTraceRing) -> Optional[AccessResult]:
    """The oldest result an async call of ``ring`` claimed but nobody received, or None.

    The hook for the synchronous consumer path: ``ShmTraceRing.access`` returns this first
    when it is not None, so a message claimed for a cancelled ``aget`` is not skipped by a
    later ``access``/``get``/iteration.  Thread-safe and cheap (a dict lookup) for a handle
    that never used the async API.  It returns None at once when called from the handle's
    own helper thread (whose ``access`` calls fill the buffer).  When no async call is
    waiting but the helper is still in its last blocking slice, it first waits for that
    slice to end (at most :data:`SLICE` seconds), so a message the helper claims meanwhile
    is returned here, in order, and not overtaken.  An exception a helper caught for a
    cancelled caller (e.g. ``CorruptRingError``) is raised here.
    """
    st = _state(ring, "consumer")
    return None if st is None else st.take()


def pending_count(ring: ShmTraceRing) -> int:
    """How many results async calls of ``ring`` set aside (claimed, not yet received)."""
    st = _state(ring, "consumer")
    if st is None:
        return 0
    assert isinstance(st, _Consumer)
    with st.lock:
        return len(st.pending)


def helper_threads(ring: Optional[ShmTraceRing] = None) -> list[threading.Thread]:
    """The live helper threads of the handle ``ring`` (default: of every handle)."""
    if ring is None:
        return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    out = []
    for role in ("consumer", "producer"):
        t = getattr(_state(ring, role), "helper", None)
        if t is not None and t.is_alive():
            out.append(t)
    return out


async def aaccess(ring: ShmTraceRing, timeout: Optional[float] = None) -> AccessResult:
    """``ring.access(timeout)`` for asyncio: ``Data(guard)``, ``Finished()``,
    ``Crashed(...)``, or ``Timeout()`` when nothing arrived within ``timeout`` seconds
    (``None``: wait without bound).  Keep the guard while reading ``guard.buf``."""
    timeout = _check_timeout(timeout, f"ring {ring.name!r}: aaccess")
    if ring.closed:
        raise _closed(ring)
    st = _consumer_state(ring)
    loop = asyncio.get_running_loop()
    with st.lock:
        if st.pending and not st.waiters:
            return _unwrap(st.pending.popleft())
        idle = not st.waiters
    # Fast path: nobody waits, so a claim made here keeps the order.
    if idle and st.claim.acquire(blocking=False):
        try:
            with st.lock:
                item: Optional[_Item] = st.pending.popleft() if st.pending else None
            r = _unwrap(item) if item is not None else ring.access(0)
        finally:
            st.claim.release()
        if type(r) is not Timeout or timeout == 0:
            return r
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        w = _Waiter(loop)
        with st.lock:
            st.waiters.append(w)
            st.rebalance()
            st.start_helper(ring)
        timer = None if deadline is None else loop.call_at(deadline, _set, w.fut)
        try:
            await w.fut
        except BaseException:
            # Cancelled: take nothing; a result set aside for us goes to the next caller.
            with st.lock:
                _discard(st.waiters, w)
                st.rebalance()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        with st.lock:
            _discard(st.waiters, w)
            item = st.pending.popleft() if st.pending else None
            st.rebalance()
        if item is not None:
            return _unwrap(item)
        if ring.closed:
            raise _closed(ring)
        if deadline is not None and loop.time() >= deadline:
            return Timeout()
        # Woken, but another caller took the result first: wait again.


async def aget(ring: ShmTraceRing, timeout: Optional[float] = None) -> bytes:
    """``ring.get(timeout)`` for asyncio: the next message as bytes; ``RingFinished`` at the
    end, ``ProducerCrashed`` on a crash, ``TimeoutError`` when nothing arrived in time."""
    timeout = _check_timeout(timeout, f"ring {ring.name!r}: aget")
    r = await aaccess(ring, timeout)
    if type(r) is Data:
        with r.guard as g:
            return bytes(g.buf)
    if type(r) is Finished:
        raise RingFinished(f"ring {ring.name!r} is finished")
    if isinstance(r, Crashed):
        raise ProducerCrashed(r)
    raise TimeoutError(f"ring {ring.name!r}: no message within {timeout} s")


async def aiter(ring: ShmTraceRing, timeout: Optional[float] = None, copy: bool = True
                ) -> AsyncIterator[Any]:
    """``async for chunk in ring.aiter():`` each message as bytes (``copy=False``: a read-only
    memoryview valid until the next one is requested) until Finished; ``ProducerCrashed``
    on a crash, ``TimeoutError`` if one wait exceeds ``timeout``.  Leave early with
    ``break`` and the current slot is released when the generator is closed (use
    ``contextlib.aclosing`` on 3.10+ to release it at once)."""
    timeout = _check_timeout(timeout, f"ring {ring.name!r}: aiter")
    while True:
        r = await aaccess(ring, timeout)
        if type(r) is Data:
            g = r.guard
            try:
                yield bytes(g.buf) if copy else g.buf
            finally:
                g.release()
        elif type(r) is Finished:
            return
        elif isinstance(r, Crashed):
            raise ProducerCrashed(r)
        else:
            raise TimeoutError(f"ring {ring.name!r}: no message within {timeout} s")


# ---------------------------------------------------------------------------------------------
# Producer
# ---------------------------------------------------------------------------------------------


class _Request:
    """One waiting aacquire/aput.  The helper finds a free slot (acquire + abort: the slot
    stays free), marks the request ``ready`` and waits until its caller has taken the slot
    itself, on the loop, or given up (``done``)."""

    __slots__ = ("done", "error", "ready", "size", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: Optional[int]) -> None:
        self.waiter = _Waiter(loop)
        self.size = size
        self.ready = False
        self.done = False
        self.error: Optional[BaseException] = None


class _Producer:
    __slots__ = ("cond", "helper", "lock", "queue")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queue: Deque[_Request] = deque()
        self.helper: Optional[threading.Thread] = None

    def start_helper(self, ring: ShmTraceRing) -> None:
        if self.helper is None:
            _start_helper(self, ring, "producer", _producer_step, _producer_exit)
        else:
            self.cond.notify_all()

    def finish(self, req: _Request) -> None:
        with self.lock:
            req.done = True
            _discard(self.queue, req)
            self.cond.notify_all()


def _producer_state(ring: ShmTraceRing) -> _Producer:
    return _ring_state(ring, "producer", _Producer)


def _producer_step(st: _Producer, ref: _RingRef) -> bool:
    """One turn of the producer helper; False once it is done.  The ring is held only in
    this frame, never while the helper idles."""
    with st.lock:
        q = st.queue
        while q and (q[0].done or q[0].waiter.loop.is_closed()):
            q.popleft()
        if not q and not _gone(ref):
            st.cond.wait(LINGER)
        if not q or _gone(ref):
            _producer_exit(st)
            return False
        req = q[0]
        if req.ready or req.done:  # its caller is taking the slot: wait until done
            st.cond.wait(SLICE)
            return True
    ring = ref()
    if ring is None:  # dropped since the check: nobody is left to serve
        with st.lock:
            _producer_exit(st)
        return False
    try:
        ring.acquire(SLICE, size=req.size).abort()  # the slot stays free for the caller: it
    except TimeoutError:                            # acquires it on its loop
        return True
    except BaseException as e:
        del ring  # before the caller is woken (see _consumer_step)
        with st.lock:
            req.error = e
            req.ready = True
            req.waiter.wake()
        return True
    del ring
    with st.lock:
        if not req.done:
            req.ready = True
            req.waiter.wake()
    return True


def _producer_exit(st: _Producer) -> None:
    st.helper = None
    for req in st.queue:
        if not req.waiter.woken:
            req.waiter.wake()


async def aacquire(ring: ShmTraceRing, timeout: Optional[float] = None, *,
                   size: Optional[int] = None) -> ProducerGuard:
    """``ring.acquire(timeout, size=size)`` for asyncio: a free slot's guard.  Commit or
    abort it before this task acquires again.  ``TimeoutError`` when no slot came within
    ``timeout`` seconds; cancelling the call leaves the ring as it was."""
    timeout = _check_timeout(timeout, f"ring {ring.name!r}: aacquire")
    if ring.closed:
        raise _closed(ring)
    st = _producer_state(ring)
    loop = asyncio.get_running_loop()
    if not st.queue:
        try:
            return ring.acquire(0, size=size)
        except TimeoutError:
            if timeout == 0:
                raise
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        req = _Request(loop, size)
        with st.lock:
            st.queue.append(req)
            st.start_helper(ring)
        timer = None if deadline is None else loop.call_at(deadline, _set, req.waiter.fut)
        try:
            await req.waiter.fut
            if req.error is not None:
                raise req.error
            if req.ready:
                try:
                    return ring.acquire(0, size=size)
                except TimeoutError:
                    pass  # taken meanwhile by another thread of this process: wait again
        finally:
            if timer is not None:
                timer.cancel()
            st.finish(req)
        if ring.closed:
            raise _closed(ring)
        if deadline is not None and loop.time() >= deadline:
            raise TimeoutError(f"ring {ring.name!r}: no free slot within {timeout} s (the "
                               "consumer is not releasing slots)")


async def aput(ring: ShmTraceRing, data: Buffer, timeout: Optional[float] = None) -> None:
    """``ring.put(data, timeout)`` for asyncio: copy ``data`` (bytes-like) into a slot and
    commit exactly its length.  A cancelled or timed-out call publishes nothing."""
    src = byte_view(data, ring.name, "aput")
    n = src.nbytes
    if n > ring.slot_size:
        raise ValueError(f"ring {ring.name!r}: aput(): {n} bytes do not fit a slot of "
                         f"{ring.slot_size} bytes")
    timeout = _check_timeout(timeout, f"ring {ring.name!r}: aput")
    st = _producer_state(ring)
    if not st.queue and not ring.closed:
        if ring.try_put(src):
            return
        if timeout == 0:
            ring.put(src, 0)  # published if a slot came meanwhile, else TimeoutError (why)
            return
    g = await aacquire(ring, timeout, size=n)
    try:
        g.buf[:n] = src
    except BaseException:
        g.abort()
        raise
    g.commit(n)
