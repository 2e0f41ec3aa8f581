"""The linger flusher thread of a :class:`ctshm.records.RecordWriter`.

A writer with a linger bound starts one when its first deadline appears.  The thread holds
the writer only weakly (a dropped writer ends it), sleeps on the writer's
``threading.Condition`` and, each time it wakes, asks the writer for one turn
(``writer._flusher_step()``: publish the slot if it is due; how long to wait next, None for
"until notified").  It knows nothing of slots or records.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["start"]


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
