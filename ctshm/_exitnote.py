"""A producer's last words: why it ended without ``mark_finished()``.

A consumer learns of a producer's death from its registration (``ctshm._peers``), which
says nothing about why.  So the producer process leaves a note in the crash-message area of
the header (``layout.MSG_OFF``; ``finished`` is not touched, the stream goes on) when

* a ``with`` block of one of its ring handles ends with an exception (its type and text), or
* its interpreter exits after an uncaught exception with a handle still open (its text),

and a consumer that then finds it dead reports the note as ``Crashed.message`` (else the
exit status if the producer is its child, see ``_peers.death_note``).  A note is
written only by the process registered as the producer (firmly or tentatively) and only
while the stream runs: the area is the producer's (``notify_crash``), and a consumer writes
it only once the producer is dead.  A later ``mark_finished()`` makes the note moot.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING, Optional

from . import _peers
from ._procstate import RINGS
from .layout import FINISHED, MSG_LEN, MSG_MAX, MSG_OFF, PRODUCER_PID

if TYPE_CHECKING:
    from ._handle import RingHandle

__all__ = ["on_exception"]


def _write(ring: RingHandle, why: str) -> None:
    load = ring._load
    if ring._closed or load(FINISHED) or _peers.pid_of(load(PRODUCER_PID)) != os.getpid():
        return
    pid = os.getpid()
    if _peers.dead(load, PRODUCER_PID) == 0 and load(PRODUCER_PID) & _peers.TENTATIVE:
        text = f"producer pid {pid} opened the ring and ended before its first put(), {why}"
    else:
        text = f"producer pid {pid} ended {why}, without mark_finished()"
    raw = text.encode("utf-8", "replace")[:MSG_MAX]
    hv = ring._hv
    hv[MSG_OFF + 4:MSG_OFF + 4 + len(raw)] = raw
    MSG_LEN.pack_into(hv, MSG_OFF, len(raw))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"after {type(exc).__name__}" + (f": {text}" if text else "")


def on_exception(ring: RingHandle, exc: Optional[BaseException]) -> None:
    """A ``with`` block of ``ring`` ends with ``exc``: keep the opener's producer record
    (see ``ctshm._peers``) and leave a note."""
    ring._keep_attachment = True
    try:
        with ring._lock:
            if exc is not None:
                _write(ring, _describe(exc))
    except Exception:  # a note is a courtesy: never mask the user's exception
        pass


@atexit.register
def _at_exit() -> None:
    exc = getattr(sys, "last_value", None)  # an uncaught exception, already printed
    if exc is None:
        return
    for ring in list(RINGS):
        try:
            _write(ring, _describe(exc))
        except Exception:
            pass
