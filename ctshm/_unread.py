"""Messages an owner's unlink would lose: the count, the warning, the wait for the consumer
to drain, and what an opener that finds no ring is told.

An owner's ``close()`` removes the ring's names at once.  A consumer that has the ring open
keeps its mapping and semaphores and reads on; one that opens later finds nothing.  So when
an owner removes a ring holding committed messages and no live consumer is registered,
those messages are lost unless an unregistered reader (a Rust consumer, or a ctshm one that
opened but has not called ``access()`` yet) still has it open: the owner is told, with an
:class:`~ctshm.results.UnreadMessagesWarning` (shown by default) naming the count.
``wait_drained()`` waits until every committed message was released first.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Optional

from . import _peers, _shm, _userwarn, layout as L
from .results import ConsumerGone, UnreadMessagesWarning

if TYPE_CHECKING:
    from .ring import ShmTraceRing

__all__ = ["absent_text", "count", "removed", "wait_drained"]

#: Names this process's owner handles removed: name -> (time.monotonic(), unread).
_REMOVED: dict[str, tuple[float, int]] = {}
_REMOVED_MAX = 256


def count(mapping: Optional[_shm.Mapping]) -> int:
    """Committed messages of the ring mapped by ``mapping`` that no live registered consumer
    will take (0 if one is registered, or nothing is mapped)."""
    if mapping is None:
        return 0
    hq = mapping.view(0, L.LEN_OFF).cast("Q")
    try:
        load = hq.__getitem__
        if _peers.alive(load, L.CONSUMER_PID):
            return 0
        n = int(load(L.WRITE_IDX) - load(L.READ_IDX))
        return n if 0 < n <= load(L.CAPACITY) else 0  # else a corrupt header: no count
    finally:
        hq.release()


def removed(name: str, unread: int) -> None:
    """The owner removed ``name`` holding ``unread`` messages: remember it (for
    :func:`absent_text`) and warn if any were unread."""
    if len(_REMOVED) >= _REMOVED_MAX:
        _REMOVED.pop(next(iter(_REMOVED)))
    _REMOVED[name] = (time.monotonic(), unread)
    if not unread:
        return
    s = "" if unread == 1 else "s"
    text = (f"ring {name!r} was removed by its owner with {unread} committed message{s} no "
            "consumer had taken (no live consumer registered): a consumer that opens it now "
            "finds nothing, so they are lost unless a reader that has it open still takes "
            "them (a Rust consumer, or one that has not called access() yet: register it "
            "with expect_consumer(pid)).  Call ring.wait_drained(timeout) before closing "
            "the owner")
    _userwarn.warn(text, UnreadMessagesWarning)


def absent_text(name: str, id: str, timeout: Optional[float]) -> str:
    """The ``FileNotFoundError`` text of an ``open()`` that found no ring."""
    hint = _shm.id_hint(id, L.RING_SUFFIX, "open")
    gone = _REMOVED.get(name)
    if gone is not None:
        ago, unread = time.monotonic() - gone[0], gone[1]
        lost = f" with {unread} unread message{'s' if unread != 1 else ''}" if unread else ""
        return (f"no such ring: it was created and removed {ago:.1f} s ago by this process "
                f"(pid {os.getpid()}), whose owner handle closed it{lost}{hint}")
    return (f"no such ring (waited {timeout} s): it was never created, or its owner closed "
            "(removed) it before this open - an owner that closes before its consumer "
            "opened deletes the messages it held (the owner should call "
            f"ring.wait_drained(timeout) before closing){hint}")


def wait_drained(ring: ShmTraceRing, timeout: Optional[float]) -> bool:
    """See ``ShmTraceRing.wait_drained``."""
    from ._handle import check_timeout

    timeout = check_timeout(timeout, "wait_drained", ring.name)
    end = None if timeout is None else time.monotonic() + timeout
    delay = 0.0005
    while True:
        if len(ring) == 0:
            return True
        cpid = _peers.dead(ring._load, L.CONSUMER_PID)
        if cpid:
            raise ConsumerGone(32, f"the consumer of ring {ring.name!r} (pid {cpid}) died "
                               f"with {len(ring)} messages not released", ring.name)
        now = time.monotonic()
        if end is not None and now >= end:
            return False
        time.sleep(delay if end is None else min(delay, end - now))
        delay = min(delay * 2, 0.02)
