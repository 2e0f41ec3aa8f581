"""Calls in flight on a handle, so that ``close()`` never frees what a running call uses.

The OS resources behind a handle (a ``sem_t`` mapping, a descriptor, a shared mapping) are
plain addresses and numbers to the foreign functions that use them.  If one thread calls
``close()`` while another sleeps in ``sem_clockwait`` on the same semaphore, a ``sem_close``
would unmap the very page the sleeper's futex lives on: the sleeper wakes on unmapped memory
and the interpreter dies of SIGSEGV.  A descriptor closed under a running ``posix_fallocate``
may be reused by an unrelated ``open`` before the call resolves it.

So every call that may block, or that uses a resource outside the handle's own lock, brackets
itself with :meth:`InFlight.enter` / :meth:`InFlight.leave`.  ``close()`` marks the handle
closed at once (new calls are refused, running ones see it between their wait slices and
return) and runs the release only when the count is zero, or else lets the last call out run
it.  The release therefore runs exactly once, in whichever thread is last.

After ``fork()`` the child has one thread: counts inherited from the parent's other threads
are meaningless there and a lock one of them held would never be released, so every live
``InFlight`` gets a fresh lock and a zero count in the child.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Optional

from . import _fork

__all__ = ["InFlight"]


class InFlight:
    """A count of running calls and a release deferred until the last one leaves."""

    __slots__ = ("__weakref__", "_lock", "_n", "_release", "closed")

    def __init__(self) -> None:
        # Re-entrant: a Python signal handler (e.g. one calling notify_crash) runs in the main
        # thread between two bytecodes, possibly while that thread is inside enter/leave.
        self._lock = threading.RLock()
        self._n = 0
        self.closed = False
        self._release: Optional[Callable[[], None]] = None
        _LIVE.add(self)

    def enter(self) -> bool:
        """Count one more call; False (and nothing counted) if the handle is closed."""
        with self._lock:
            if self.closed:
                return False
            self._n += 1
            return True

    def leave(self) -> None:
        """The call is over; the last one out of a closed handle runs its release."""
        with self._lock:
            self._n -= 1
            release = self._release if self.closed and self._n == 0 else None
            if release is not None:
                self._release = None
        if release is not None:
            release()

    def close(self, release: Callable[[], None]) -> bool:
        """Mark closed; run ``release`` now if nothing is in flight (True), else defer it to
        the last :meth:`leave` (False).  Idempotent: a second close releases nothing."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            if self._n:
                self._release = release
                return False
        release()
        return True

    @property
    def busy(self) -> int:
        """How many calls are in flight (diagnostics and tests)."""
        return self._n

    def _reset_in_child(self) -> None:
        self._lock = threading.RLock()
        self._n = 0


_LIVE: weakref.WeakSet[InFlight] = weakref.WeakSet()


@_fork.on_fork
def _reset_in_child() -> None:
    for f in list(_LIVE):
        f._reset_in_child()
