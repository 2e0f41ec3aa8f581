"""The OS objects behind one ring handle, and their lifecycle (as trio's ``_FdHolder`` owns an
fd while ``FdStream`` owns the protocol).

:class:`RingObjects` holds the shm descriptor, the mapping, the two semaphores and the
identities that let an owner unlink only *its own* names.  The ring protocol
(``ShmTraceRing``) holds one of these and never closes a descriptor or a semaphore itself.

Lifecycle rules:

* Garbage collection of the ring releases everything (descriptor, semaphores, and, once the
  last view is gone, the mapping) and an owner unlinks its names.  The finalizers hold this
  holder, never the ring, so dropping the last reference to a ring frees it at once.
* At interpreter exit an owner's names are unlinked (nothing left in /dev/shm), but nothing
  is closed or unmapped: a guard or a view may still be reached by a ``__del__`` that runs
  later in the shutdown, and the process exit frees all of it anyway.
* In a forked child the finalizers do nothing: the names and handles are the parent's.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Optional

from . import _shm, libc
from ._inflight import InFlight
from .semaphore import NamedSemaphore, sem_file_identity

__all__ = ["RingObjects", "sem_names"]


def sem_names(name: str) -> tuple[str, str]:
    """The ``filled`` and ``empty`` semaphore names of ring object ``name``."""
    return (name + "_filled", name + "_empty")


class RingObjects:
    """fd, mapping, semaphores, identities and finalizers of one ring handle."""

    # Class defaults: a half-built holder releases cleanly.
    fd: int = -1
    mapping: Optional[_shm.Mapping] = None
    owner: bool = False
    identity: Optional[tuple[int, int]] = None
    sem_identity: tuple[Optional[tuple[int, int]], ...] = (None, None)

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = os.getpid()
        self.sems: list[NamedSemaphore] = []
        self.inflight = InFlight()
        self._finalizers: list[weakref.finalize[Any, Any]] = []

    def arm(self, ring: object) -> None:
        """Release with ``ring`` (garbage collection); an owner also unlinks, at exit too."""
        release = weakref.finalize(ring, self._collected)
        release.atexit = False  # never at shutdown: see the module docstring
        self._finalizers.append(release)
        if self.owner:
            self._finalizers.append(weakref.finalize(ring, self._unlink_at_end))

    def _collected(self) -> None:
        # Never raises; nothing in a forked child.
        if os.getpid() != self.pid:
            return
        try:
            if self.owner:
                self.unlink_names()
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _unlink_at_end(self) -> None:
        if os.getpid() != self.pid:
            return
        try:
            self.unlink_names()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def release(self) -> None:
        """Close the semaphores and the descriptor; drop the mapping (unmapped when its last
        view is gone).  Idempotent.  Only when no call is in flight (see InFlight)."""
        for f in self._finalizers:
            f.detach()
        self._finalizers = []
        sems, self.sems = self.sems, []
        for s in sems:
            s.close()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        self.mapping = None

    def unlink_names(self) -> None:
        """Owner: remove the shm object and semaphores, unless a successor re-created them
        (identity check: a name must still refer to *our* object).  Once only."""
        if not self.owner or self.identity is None:
            return
        identity, self.identity = self.identity, None
        if _shm.name_identity(self.name) != identity:
            return
        for s, ident in zip(sem_names(self.name), self.sem_identity):
            if ident is not None and sem_file_identity(s) not in (ident, None):
                continue  # a successor's semaphore
            NamedSemaphore.unlink_name(s)
        _shm.unlink_if_same(self.name, identity)

    def open_fd(self, flags: int, mode: int) -> int:
        self.fd = libc.shm_open(self.name, flags, mode)
        return self.fd
