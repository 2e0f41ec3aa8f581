"""Warnings that point at the user's line: the first frame outside the ctshm package."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from .errors import StaleViewWarning

__all__ = ["stale", "stale_view_text", "warn"]

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(text: str, category: type[Warning]) -> None:
    """``warnings.warn`` with the stack level of the first caller outside ctshm."""
    level, f = 1, sys._getframe(0)
    while f.f_back is not None and f.f_code.co_filename.startswith(_PKG):
        f = f.f_back
        level += 1
    warnings.warn(text, category, stacklevel=level)


def stale(guard: Any) -> None:
    """A guard ended with a view of its ``buf`` still exported: warn once (the guard's
    release, commit or abort is complete, so an error filter raises harmlessly)."""
    guard._done = True
    warn(stale_view_text(type(guard).__name__, guard.index, guard._ring.name,
                         type(guard).__name__ == "ProducerGuard"), StaleViewWarning)


def stale_view_text(kind: str, index: int, ring: str, producer: bool) -> str:
    """The :class:`StaleViewWarning` text for a guard that ended with an exported view."""
    if producer:
        risk = ("a write through it changes the published message (or a later one in the "
                "same slot); write through g.buf and drop such views before the with block "
                "ends, or use put()")
    else:
        risk = ("it will show a later message's bytes once the producer reuses the slot; "
                "use such views only inside the with block, and copy what must outlive it "
                "(bytes(g.buf), arr.copy())")
    return (f"{kind} for message {index} of {ring!r} ended while a view made from its buf "
            f"(a NumPy array, memoryview(g.buf), ...) still exists: {risk}")
