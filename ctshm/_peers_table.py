"""A table of the processes using a shared object, with pid + start-time liveness.

Generic (the queue uses it; a broadcast or any many-process object could): ``count`` entries
of two u64 words in shared memory, ``[identity][generation]``.

* ``identity`` = ``pid | start_time << 22`` (Linux pids are below 2**22; the start time is in
  clock ticks since boot, 42 bits = centuries), 0 for a free entry.  One word, so a process
  registers with one compare-exchange ``0 -> identity``: a death at any step leaves either a
  free entry or a complete identity.  A recycled pid has another start time: never alive.
* ``generation`` counts the entry's occupants.  Whatever a process claims elsewhere names it
  by (index, generation), so a reaper that decided "index 3 is dead" can never act on the next
  occupant of index 3: freeing an entry first bumps its generation (one compare-exchange: of
  several reapers exactly one frees), then clears the identity.

Also here: :func:`slot_alive` (pid + start-time liveness of an entry's occupant) and
:class:`ForkRegistry` (objects to re-register in a forked child), shared with ShmBroadcast.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable, Final, Optional

from . import _liveness
from ._fork import on_fork
from .atomics import Atomics
from .errors import PeersFull

__all__ = ["ForkRegistry", "PeersFull", "PeersTable", "identity_of", "slot_alive",
           "split_identity"]

PID_BITS: Final = 22
_PID_MASK: Final = (1 << PID_BITS) - 1
_MASK64: Final = (1 << 64) - 1


def identity_of(pid: int, start: int) -> int:
    return (pid & _PID_MASK) | ((start << PID_BITS) & _MASK64)


def split_identity(ident: int) -> tuple[int, int]:
    return ident & _PID_MASK, ident >> PID_BITS


def _my_identity() -> int:
    pid, start = _liveness.me()
    return identity_of(pid, start)


class PeersTable:
    """The table at word ``first`` of ``view`` (a ``'Q'`` memoryview of a mapping at ``base``)."""

    def __init__(self, view: memoryview, base: int, first: int, count: int,
                 atomics: Atomics) -> None:
        self._v = view
        self._base = base
        self._first = first
        self.count = count
        self._cas = atomics.compare_exchange

    def _words(self, index: int) -> tuple[int, int]:
        w = self._first + 2 * index
        return w, w + 1

    def entry(self, index: int) -> tuple[int, int]:
        """(identity, generation) of entry ``index``."""
        wi, wg = self._words(index)
        return self._v[wi], self._v[wg]

    def register(self) -> tuple[int, int]:
        """Take a free entry for this process: (index, generation).  Reaps dead entries when
        none is free; ``PeersFull`` if every entry is a live process's."""
        me = _my_identity()
        for attempt in range(2):
            for index in range(self.count):
                wi, wg = self._words(index)
                if self._v[wi] == 0 and self._cas(self._base + 8 * wi, 0, me) == 0:
                    return index, self._v[wg]
            if attempt == 0:
                self.reap(lambda index, gen: None)
        raise PeersFull(f"all {self.count} peer entries belong to live processes")

    def unregister(self, index: int, gen: int) -> None:
        """Free our own entry (a clean close): generation first, then the identity."""
        wi, wg = self._words(index)
        if self._cas(self._base + 8 * wg, gen, (gen + 1) & _MASK64) == gen:
            self._v[wi] = 0

    def alive(self, index: int, gen: Optional[int] = None) -> bool:
        """True while entry ``index`` (at ``gen``, when given) is a live process."""
        ident, g = self.entry(index)
        if ident == 0 or (gen is not None and g != gen):
            return False
        return slot_alive(*split_identity(ident))

    def live(self) -> list[tuple[int, int, int, int]]:
        """(index, generation, pid, start) of every occupied entry."""
        out = []
        for index in range(self.count):
            ident, gen = self.entry(index)
            if ident:
                pid, start = split_identity(ident)
                out.append((index, gen, pid, start))
        return out

    def reap(self, cleanup: Callable[[int, int], Any]) -> int:
        """Free every entry whose process is dead, after ``cleanup(index, gen)`` undid what it
        held; returns how many this call freed (others may free concurrently)."""
        freed = 0
        for index, gen, pid, start in self.live():
            if slot_alive(pid, start):
                continue
            cleanup(index, gen)
            wi, wg = self._words(index)
            if self._cas(self._base + 8 * wg, gen, (gen + 1) & _MASK64) == gen:
                self._cas(self._base + 8 * wi, identity_of(pid, start), 0)
                freed += 1
        return freed


def slot_alive(pid: int, start: int) -> bool:
    """Is the process that occupies a slot (its pid, and its start time if known) alive?"""
    return pid == os.getpid() or _liveness.is_alive(pid, start)


class ForkRegistry:
    """Objects whose ``_forked()`` runs in a forked child while they live (their state there
    is a copy: a peer entry, a reader slot or the writer seat belongs to the parent; a child
    must not act under its parent's identity).  ShmQueue and ShmBroadcast each have one."""

    def __init__(self) -> None:
        self._items: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        on_fork(self._after_fork)  # the one at-fork hook (ctshm._fork)

    def add(self, obj: Any) -> None:
        with self._lock:
            self._items.add(obj)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for obj in list(self._items):
            try:
                obj._forked()
            except Exception:  # pragma: no cover - a hook must not break the fork
                pass
