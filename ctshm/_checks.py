"""Argument checks every public call shares: timeouts, ints, buffers.

One home for each rule, so that every call says the same thing about the same mistake:
``check_timeout`` (seconds or None; huge means forever), ``check_linger`` (a finite bound),
``is_int`` (an int that is not a bool), ``check_range`` (an int within bounds),
``check_crash_args`` (``notify_crash``'s arguments), ``not_bytes`` / ``byte_view`` (what a
message is copied from, and the ``TypeError`` text for what is not a buffer).
"""

from __future__ import annotations

from typing import Any, Final, Optional

__all__ = ["MAX_TIMEOUT", "byte_view", "check_crash_args", "check_linger", "check_range",
           "check_timeout", "is_int", "not_bytes"]

#: A timeout beyond this (about 30 years) waits without bound.
MAX_TIMEOUT: Final = 1e9


def is_int(v: Any) -> bool:
    """An ``int`` and not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An ``int`` or ``float`` and not a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_range(what: str, value: Any, low: int, high: int) -> int:
    """``value``, an int (not a bool; else ``TypeError``) from ``low`` to ``high`` (else
    ``ValueError``); ``what`` starts the error (``ShmQueue 'X': capacity``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be from {low} to {high}, not {value}")
    return value


def check_timeout(timeout: Optional[float], where: str = "", ring: str = ""
                  ) -> Optional[float]:
    """``timeout`` as a float (or None): a number of seconds >= 0; huge values mean forever.
    Errors start with ``where`` (``ring``: with "ring NAME: " before it, formatted only then:
    the hot paths call this only when a timeout is given)."""
    if timeout is None:
        return None
    if ring:
        where = f"ring {ring!r}: {where}"
    pre = f"{where}: " if where else ""
    if not is_number(timeout):
        raise TypeError(f"{pre}timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    if timeout != timeout or timeout < 0:
        raise ValueError(f"{pre}timeout must be >= 0 seconds or None, not {timeout!r}")
    if timeout >= MAX_TIMEOUT:
        return None
    return float(timeout)


def check_crash_args(who: str, signal: Any, addr: Any, operation: Any, message: Any,
                     hint: str = "") -> None:
    """``notify_crash``'s arguments: ``signal`` and ``operation`` 32-bit ints, ``addr`` an
    unsigned 64-bit int (else ``ValueError``), ``message`` a str (else ``TypeError``, ending
    with ``hint``); errors start with ``who`` (``ring 'X'``, ``ShmBroadcast 'X'``)."""
    if not (is_int(signal) and -(1 << 31) <= signal < (1 << 31) and is_int(addr)
            and 0 <= addr < (1 << 64) and is_int(operation)
            and -(1 << 31) <= operation < (1 << 31)):
        raise ValueError(f"{who}: notify_crash({signal!r}, {addr!r}, {operation!r}): signal "
                         "and operation must be 32-bit ints and addr an unsigned 64-bit int")
    if not isinstance(message, str):
        raise TypeError(f"{who}: notify_crash(message=) must be a str, not "
                        f"{type(message).__name__}{hint}")


def not_bytes(name: str, what: str, data: Any) -> str:
    """The message of a ``TypeError`` for a non-buffer ``data`` given to ``what``."""
    hint = " (encode text first: .encode())" if isinstance(data, str) else ""
    return (f"ring {name!r}: {what}() needs a bytes-like object (bytes, bytearray, "
            f"memoryview, array, numpy array), not {type(data).__name__}{hint}")


#: A linger bound must be below this: the flusher's wait cannot be longer (threading.TIMEOUT_MAX
#: is ~9.2e9 s), and it is the bound of a finite timeout in ``check_timeout``.
_LINGER_MAX: Final = 1e9


def check_linger(linger: Optional[float], where: str) -> Optional[float]:
    """``linger=`` as a float (or None), for the error messages of ``where``."""
    if linger is None:
        return None
    if not is_number(linger):
        raise TypeError(f"{where}: linger must be a number of seconds or None, not "
                        f"{type(linger).__name__}")
    if not (linger >= 0 and linger < _LINGER_MAX):  # NaN fails; 2**1024 is an int here
        shown = repr(linger) if len(repr(linger)) < 30 else f"{repr(linger)[:20]}..."
        raise ValueError(f"{where}: linger must be a finite number of seconds >= 0 and below "
                         f"{_LINGER_MAX:.0e} (or None: no time bound), not {shown}")
    return float(linger)


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
