"""``byte_view``: what ``put``/``aput``/``append``/``send`` copy from, as bytes."""

from __future__ import annotations

from typing import Any

from ._handle import not_bytes

__all__ = ["byte_view"]


def byte_view(data: Any, ring: str, what: str) -> memoryview:
    """``data`` as a flat byte view.  A buffer that is not C-contiguous (a strided slice, a
    Fortran-order or transposed NumPy array) is copied in C (row-major) order first - the
    bytes of ``numpy.ascontiguousarray(data)``; anything else that is not a buffer raises
    ``TypeError`` naming ``what`` and the type."""
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(not_bytes(ring, what, data)) from None
    try:
        return mv.cast("B")
    except TypeError:  # casts need C-contiguous views
        return memoryview(mv.tobytes())
