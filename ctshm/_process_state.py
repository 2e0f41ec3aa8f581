"""This process's state for each open ring, shared by all its handles here, and its reset
in a forked child.

A ring handle *has* one :class:`ProcessState`: the protocol state every handle of one ring in
this process must share (the lock, the reorder heap, the producer turn, the open handles),
found by the ring object's identity.  The OS objects of a handle are
:class:`ctshm._ringobjects.RingObjects`'.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Optional

from . import _fork

if TYPE_CHECKING:
    from .guards import ProducerGuard
    from .ring import ShmTraceRing

__all__ = ["RINGS", "ProcessState", "state_for"]


class ProcessState:
    """This process's bookkeeping for one ring, shared by all its handles here.

    Several handles of one ring in one process (opened twice, or a creator that also opens)
    must not keep separate reorder buffers - guards released through different handles would
    then never line up and read_idx would stall - nor separate producer slots - two handles
    would hand out the same slot.  Keyed by the shm object's (st_dev, st_ino).

    The lock is re-entrant: a guard's finalizer may run (garbage collection) in a thread that
    is already inside a ring method.  ``turn`` is the producer's turn: one producer slot is
    outstanding at a time (message order), and producer threads of this process wait for it
    in turn.  The outstanding guard is held weakly: dropping it aborts it (its ``__del__``).
    """

    __slots__ = ("__weakref__", "acquiring", "lock", "opened", "owed_empty", "owed_filled",
                 "pending", "pg_ref", "turn", "turn_free", "turn_owner")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # This process's open handles of the ring (under ``lock``): a guard of a closed
        # handle gives its token back through one of them; a consumer unregisters when its
        # last registered handle closes.
        self.opened: weakref.WeakSet[ShmTraceRing] = weakref.WeakSet()
        self.turn = threading.Condition(self.lock)
        self.pending: list[int] = []
        self.pg_ref: Optional[weakref.ref[ProducerGuard]] = None
        self.acquiring = False
        self.turn_owner = 0  # thread ident of the producer thread that holds the turn
        # No guard handed out and no acquire waiting since the last end_turn (the quiet
        # path's one check; busy() is the thorough one).
        self.turn_free = True
        # Compat tokens a batch owes the other side (ctshm._batch): counted before they are
        # posted, so a signal handler's exception between two posts leaves them owed, and
        # the next batch, mark_finished() or close() posts them (under ``lock``).
        self.owed_filled = 0
        self.owed_empty = 0

    def producer_guard(self) -> Optional[ProducerGuard]:
        r = self.pg_ref
        g = r() if r is not None else None
        return g if g is not None and not g._done else None

    def busy(self) -> bool:
        """Is the producer turn taken (a guard outstanding, or a thread waiting for space)?"""
        return self.acquiring or (self.pg_ref is not None and self.producer_guard() is not None)

    def end_turn(self) -> None:
        """Under ``lock``: the outstanding guard (or acquire) is over; wake one producer."""
        self.pg_ref = None
        self.acquiring = False
        self.turn_owner = 0
        self.turn_free = True
        self.turn.notify()


_STATES: weakref.WeakValueDictionary[tuple[int, int], ProcessState] = (
    weakref.WeakValueDictionary())
_STATES_LOCK = threading.Lock()
#: This process's open ring handles (reset in a forked child: see ctshm.ring).
RINGS: weakref.WeakSet[ShmTraceRing] = weakref.WeakSet()


def state_for(identity: tuple[int, int]) -> ProcessState:
    """This process's state for the ring object ``identity`` (st_dev, st_ino), shared by
    every open handle of it here."""
    with _STATES_LOCK:
        st = _STATES.get(identity)
        if st is None:
            st = _STATES[identity] = ProcessState()
        return st


@_fork.on_fork
def _reset_in_child() -> None:
    """A forked child is not the parent's producer or consumer (its handles register anew:
    see ShmTraceRing), and locks held by the parent's other threads would never be released
    here: every state starts afresh, in place (its handles keep it)."""
    global _STATES_LOCK
    _STATES_LOCK = threading.Lock()
    for st in list(_STATES.values()):
        st.__init__()  # type: ignore[misc]
