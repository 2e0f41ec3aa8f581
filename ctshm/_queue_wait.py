"""ShmQueue's waiting and waking (a part of ctshm/queue.py's class, split out for size): the
wake-ups a get owes producers (``_released``, ``_freed``), the one wait
loop -- spin (yielding the CPU between polls) for the side's adaptive budget
(:class:`~ctshm._sleepwake.Spin`, as the broadcast's), then sleep in
:data:`LIVENESS_SLICE` slices on the side's :class:`~ctshm._sleepwake.Sleepers` -- and the
"ready" predicates a sleeper re-checks after announcing itself (model/queue.pml)."""

from __future__ import annotations

import os
import queue as _queue
import threading
import time
from typing import Any, Callable, Final, Optional

from . import queue_layout as QL
from ._queue_io import _NOTHING
from ._sleepwake import Spin

__all__ = ["LIVENESS_SLICE", "WaitMixin"]

#: Longest a blocked put/get sleeps before it checks its peers' liveness.
LIVENESS_SLICE: Final = 0.2

_LS: Final = QL.LAP_SHIFT
_EMPTY, _WRITING, _ORPHAN = QL.EMPTY, QL.WRITING, QL.ORPHAN
_W_TAIL, _W_HEAD, _W_FIN, _W_ORPH = QL.W_TAIL, QL.W_HEAD, QL.W_FINISHED, QL.W_ORPHANS
_W_PSLEEP: Final = QL.W_P_SLEEP


class WaitMixin:
    """_block, _ready_get, _ready_put for ShmQueue."""

    name: str
    capacity: int
    _v: Any
    _w0: int
    _sw: int
    _items: Any
    _space: Any
    _spin: tuple[Spin, Spin]  # producer side, consumer side
    _stats: dict[str, int]
    _closed: bool
    _closed_by: int
    _wake_at: int
    _check_open: Callable[[str], None]
    _all_empty: Callable[[], bool]
    housekeeping: Callable[[], int]

    def _ready_get(self) -> bool:
        v, cap = self._v, self.capacity
        h = v[_W_HEAD]
        lap, i = divmod(h, cap)
        w = v[self._w0 + i * self._sw]
        st = w & 7
        if (w >> _LS == lap and st != _EMPTY and st != _WRITING) or w >> _LS > lap:
            return True
        # ORPHANS may over-count (a consumer killed between taking an orphan and lowering
        # the count): only an ORPHAN slot makes a get ready, else an idle get would spin.
        if v[_W_ORPH] and any(v[self._w0 + k * self._sw] & 7 == _ORPHAN for k in range(cap)):
            return True
        return bool(v[_W_FIN] and self._all_empty())

    def _ready_put(self) -> bool:
        v, cap = self._v, self.capacity
        t = v[_W_TAIL]
        lap, i = divmod(t, cap)
        return v[self._w0 + i * self._sw] >> _LS >= lap or bool(v[_W_FIN])

    def _block(self, attempt: Any, args: tuple[Any, ...], timeout: Optional[float],
               producer: bool) -> Any:
        """The one wait loop (``timeout``: already checked by the caller): spin (yielding
        the CPU between polls) for the side's adaptive budget, then sleep in liveness
        slices."""
        self._check_open("put" if producer else "get")
        t0 = time.monotonic()
        deadline = None if timeout is None else t0 + timeout
        spin = self._spin[0 if producer else 1]
        budget = spin.budget
        spin_end = t0 + (budget if timeout is None else min(budget, timeout))
        while time.monotonic() < spin_end:
            os.sched_yield()
            r = attempt(*args)
            if r is not _NOTHING:
                return r
        side, ready = ((self._space, self._ready_put) if producer
                       else (self._items, self._ready_get))
        try:
            while True:
                r = attempt(*args)
                if r is not _NOTHING:
                    spin.record(time.monotonic() - t0)
                    return r
                chunk = LIVENESS_SLICE
                if deadline is not None:
                    chunk = min(chunk, deadline - time.monotonic())
                    if chunk <= 0:
                        raise (_queue.Full if producer else _queue.Empty)()
                self._stats["waits"] += 1
                if not side.sleep(ready, chunk):
                    self.housekeeping()
        except (ValueError, TypeError):  # the semaphore or the view went away under us
            if self._closed:
                raise self._closed_while_waiting("put" if producer else "get") from None
            raise

    def _closed_while_waiting(self, what: str) -> ValueError:
        """The error of a ``what`` that was waiting when the queue was closed."""
        by = "this thread" if self._closed_by == threading.get_ident() else "another thread"
        return ValueError(f"ShmQueue {self.name!r} was closed by {by} while {what}() waited "
                          f"(open the queue again to {what})")

    def _released(self, v: Any, pos: int) -> None:
        """A get released position ``pos`` (a batch: its last) and producers sleep: wake one
        once the queue has room for a burst -- at most ``capacity - room`` messages left
        after ``pos`` (by the TAIL hint), ``room`` a quarter of the queue -- and the
        producers' chain wakes the others (model: ROOM).  Waking a producer per freed slot
        of a full queue cost the consumer a post and a preemption per message (10 producers:
        2x slower).  A producer that misses a freed slot finds it when its slice ends."""
        if v[_W_FIN] or v[_W_TAIL] - pos <= self._wake_at:
            self._freed(v)

    def _freed(self, v: Any) -> None:
        """A slot became free: wake a producer; after finish() also every consumer (one may
        wait for the last slot to empty: model MUT_NO_EOS_WAKE).  Closed meanwhile by another
        thread: no wake-ups (sleepers wake at their slice's end), the get still returns."""
        try:
            if v[_W_PSLEEP]:
                self._space.wake_one()
            if v[_W_FIN]:
                self._items.wake_all()
        except ValueError:
            if not self._closed:
                raise
