"""The linger machinery of a :class:`ctshm.records.RecordWriter`: the streaming test's
estimate of a slot's cost (rule 1 of ``ctshm.records``' "Linger"), and the flusher thread.

A writer with a linger bound starts a flusher when its first deadline appears.  The thread holds
the writer only weakly (a dropped writer ends it), sleeps on the writer's
``threading.Condition`` and, each time it wakes, asks the writer for one turn
(``writer._flusher_step()``: publish the slot if it is due; how long to wait next, None for
"until notified"): the thread knows nothing of slots or records.  :func:`published` is the
streaming test's arithmetic, apart from the writer's I/O.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Final

__all__ = ["STREAM_AFTER", "STREAM_HOLD", "STREAM_TEST", "published", "start"]

#: The streaming test and hold of rule 1, in units of a slot's cost (its publication, and
#: its acquire up to twice that): a first record arriving within STREAM_TEST of them after
#: a publication is quick; from the STREAM_AFTER-th quick one in a row (a burst of up to 4
#: records, a request and its parts, still goes at once) the slot is held for STREAM_HOLD
#: of them (at most ``linger``).
STREAM_TEST: Final = 2.0
STREAM_HOLD: Final = 16.0
STREAM_AFTER: Final = 4


def published(w: Any, start: float, end: float) -> None:
    """Writer ``w`` published a slot from ``start`` to ``end`` (its clock): update the slot
    cost estimate, a decaying minimum (an outlier, this process preempted, raises it by a
    quarter at most; the acquire counts up to twice the publication: a slot's first one
    also reserves its backing store, ~0.5 ms for 2 MiB, and one may wait for a free slot),
    and the ends of the streaming test and of the hold (both at most ``linger``, so no
    deadline comes before ``_early``)."""
    took, est = end - start + min(w._took, 2 * (end - start)), w._cost
    if est and took > est:
        took = min(took, 1.25 * est)
    w._cost = took
    linger = w._linger
    w._early = end + min(linger, STREAM_TEST * took)
    w._hold_end = end + min(linger, STREAM_HOLD * took)


def start(writer: Any, cond: threading.Condition, name: str) -> threading.Thread:
    """Start ``writer``'s flusher thread (under ``cond``'s lock); a dropped writer stops it."""
    t = threading.Thread(target=_main, args=(weakref.ref(writer), cond), name=name,
                         daemon=True)
    weakref.finalize(writer, _wake, cond)
    t.start()
    return t


def _main(ref: weakref.ReferenceType[Any], cond: threading.Condition) -> None:
    with cond:
        while True:
            w = ref()
            if w is None or w._closed:
                return
            delay = w._flusher_step()
            del w
            cond.wait(delay)


def _wake(cond: threading.Condition) -> None:
    with cond:
        cond.notify_all()
