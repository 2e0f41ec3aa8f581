"""The old import path of :class:`~ctshm.errors.ShmDirError` (``ctshm._space.ShmDirError``,
documented before ``ctshm.errors`` existed), kept working.  The /dev/shm directory module
this name used to hold is :mod:`ctshm._shmdir`."""

from __future__ import annotations

from .errors import ShmDirError

__all__ = ["ShmDirError"]
