"""Checking mode for views made from a guard's ``buf`` (``python -X dev``, or
``CTSHM_CHECK_VIEWS=1``; CPython only).

A guard's view is a slice of its slot's cached view, so a slice of ``g.buf``, a
``memoryview(g.buf)`` or a NumPy array made from it shares the slot view's buffer and
survives ``release()``/``commit()`` unnoticed: it then shows (or changes) whatever message
the slot holds next.  In checking mode the first ``g.buf`` of a guard is a view with a buffer
of its own (a ctypes exporter over the same bytes, holding the mapping); when the guard ends,
any view still made from it keeps that exporter referenced, so the leftover is seen exactly
and reported as a ``StaleViewWarning``.  It costs about a microsecond per guard whose ``buf``
is read, so it is off by default, where only a direct export of ``buf`` (one whose
``release()`` fails) is reported.
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import Any

from .layout import HEADER_SIZE

__all__ = ["ENABLED", "leftover", "own_view"]

ENABLED: bool = hasattr(sys, "getrefcount") and (
    bool(sys.flags.dev_mode) or os.environ.get("CTSHM_CHECK_VIEWS") == "1")

#: guard -> the exporter of the view its ``buf`` handed out (checking mode only).
_OWN: weakref.WeakKeyDictionary[Any, object] = weakref.WeakKeyDictionary()


def own_view(guard: Any) -> memoryview:
    """Replace ``guard._buf`` by a view over the same bytes with an exporter of its own."""
    old: memoryview = guard._buf
    if guard in _OWN:
        return old
    ring = guard._ring
    objs = ring._objs
    mapping = objs.mapping if objs is not None else None
    if mapping is None:
        return old
    offset = HEADER_SIZE + (guard.index % ring.capacity) * ring.slot_size
    view: memoryview = mapping.view(offset, len(old), readonly=old.readonly)
    _OWN[guard] = view.obj
    guard._buf = view
    try:
        old.release()
    except BufferError:
        pass
    return view


def leftover(guard: Any) -> bool:
    """Once the guard's view was released: is a view made from it still alive?"""
    exp = _OWN.pop(guard, None)
    return exp is not None and sys.getrefcount(exp) > 2
