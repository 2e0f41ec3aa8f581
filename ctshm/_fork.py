"""The one at-fork hook: what a forked child resets, in registration order.

A forked child has one thread and is neither the parent's producer nor its consumer: locks
held by the parent's other threads would never be released there, counts of the parent's
calls in flight are meaningless, and guards taken by the parent are not the child's to
finish.  Each module that keeps such state registers its reset here (:func:`on_fork`); the
hook runs them all, in order, in the child.  ``PID`` is this process's pid, kept current.
"""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["PID", "on_fork"]

#: This process's pid (updated in a forked child before any reset runs).
PID = os.getpid()

_RESETS: list[Callable[[], None]] = []


def on_fork(reset: Callable[[], None]) -> Callable[[], None]:
    """Run ``reset()`` in every forked child (after the ones registered before it)."""
    _RESETS.append(reset)
    return reset


def _after_fork_in_child() -> None:
    global PID
    PID = os.getpid()
    for reset in _RESETS:
        reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
