"""Warnings that point at the user's line: the first frame outside the ctshm package."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from .results import StaleViewWarning, stale_view_text

__all__ = ["stale", "warn"]

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
