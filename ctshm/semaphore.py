"""Named POSIX counting semaphores (``sem_open(3)``) with bounded waits.

Three wait modes, chosen once per semaphore:

``clockwait``
    ``sem_clockwait(sem, CLOCK_MONOTONIC, deadline)`` (glibc >= 2.30).  Immune to wall-clock
    steps.  The default where available.
``timedwait``
    ``sem_timedwait(sem, deadline)`` against CLOCK_REALTIME (POSIX; older glibc, musl).  A
    wall-clock step can lengthen or shorten one wait; callers that loop re-derive the remaining
    time from the monotonic clock, so a step never turns a bounded wait into an unbounded one.
``polling``
    ``sem_trywait`` with exponential backoff (50 µs doubling to 1 ms).  macOS has neither
    timed wait, so this is its only bounded wait.  Set ``CTSHM_WAIT=polling`` (or pass
    ``wait_mode="polling"``) to run it on Linux, which is how the test suite covers it.

Every wait retries EINTR with the time that remains (the deadline is absolute, so a retry
never waits longer than asked).

``close()`` never frees a semaphore under a running call (see ``ctshm._callgate``): a wait
sleeps in slices of at most ``CLOSE_SLICE`` seconds and, once the handle was closed by another
thread, raises ``ValueError`` at the end of its slice; the last call out runs ``sem_close``.
At interpreter exit nothing is closed (a daemon thread may still be waiting): the process's
exit unmaps it.
"""

from __future__ import annotations

import errno
import os
import time
import weakref
from ctypes import byref, c_int, c_uint, get_errno
from typing import Final, Optional

from . import libc
from ._callgate import InFlight
from ._shm import SHM_DIR
from .libc import fn

__all__ = ["WAIT_MODES", "NamedSemaphore", "default_wait_mode"]

WAIT_MODES: Final = ("clockwait", "timedwait", "polling")

_POLL_MIN: Final = 50e-6
_POLL_MAX: Final = 1e-3
# A timespec's tv_sec must not overflow; anything beyond ~30 years is "forever" for us.
_MAX_TIMEOUT: Final = 1e9
#: POSIX's lower bound for SEM_VALUE_MAX, for a platform whose sysconf does not say.
_SEM_VALUE_MAX_POSIX: Final = 32767
#: Longest one sleep of a wait: how soon a waiter notices that another thread closed the handle.
CLOSE_SLICE: Final = 0.2


def default_wait_mode() -> str:
    """The best wait this platform offers, unless ``CTSHM_WAIT`` names another."""
    forced = os.environ.get("CTSHM_WAIT", "").strip().lower()
    if forced and forced != "auto":
        return _validate_mode(forced)
    if fn.sem_clockwait is not None:
        return "clockwait"
    if fn.sem_timedwait is not None:
        return "timedwait"
    return "polling"


def _validate_mode(mode: str) -> str:
    if mode not in WAIT_MODES:
        raise ValueError(f"unknown wait mode {mode!r}: use one of {', '.join(WAIT_MODES)}")
    if mode == "clockwait" and fn.sem_clockwait is None:
        raise ValueError("wait mode 'clockwait' needs sem_clockwait (glibc >= 2.30): not here")
    if mode == "timedwait" and fn.sem_timedwait is None:
        raise ValueError("wait mode 'timedwait' needs sem_timedwait: not on this platform")
    return mode


def check_wait_mode(where: str, mode: object) -> str:
    """``wait_mode=`` given by the caller of ``where`` (None is handled by the caller)."""
    if not isinstance(mode, str):
        raise TypeError(f"{where}: wait_mode must be one of {', '.join(map(repr, WAIT_MODES))} "
                        f"or None (the platform's best), not {mode!r}")
    try:
        return _validate_mode(mode)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def sem_value_max() -> int:
    """``SEM_VALUE_MAX``: the largest count a semaphore holds (glibc: 2**31 - 1)."""
    try:
        v = os.sysconf("SC_SEM_VALUE_MAX")
    except (AttributeError, ValueError, OSError):  # no sysconf, or the name is unknown here
        v = -1
    return v if v > 0 else _SEM_VALUE_MAX_POSIX


def _check_create_args(name: str, value: object, mode: object) -> None:
    """``value=`` and ``mode=`` of a create: ``c_uint`` would silently truncate them."""
    where = f"NamedSemaphore({name!r}, create=True)"
    top = sem_value_max()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: value (the initial count) must be an int from 0 to {top}, "
                        f"not {type(value).__name__}")
    if not 0 <= value <= top:
        raise ValueError(f"{where}: value (the initial count) must be from 0 to {top} "
                         f"(SEM_VALUE_MAX), not {value}")
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"{where}: mode must be an int of permission bits such as 0o600, not "
                        f"{type(mode).__name__}")
    if not 0 <= mode <= 0o777:
        shown = oct(mode) if mode >= 0 else repr(mode)
        raise ValueError(f"{where}: mode must be permission bits from 0 to 0o777 such as "
                         f"0o600 (setuid, setgid and sticky bits mean nothing for a "
                         f"semaphore), not {shown}")


def _close_handle(handle: int) -> None:
    # Finalizer: never raises.  sem_close only drops this process's mapping of the semaphore,
    # so running it in a forked child is harmless to the parent.
    try:
        fn.sem_close(handle)
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


class NamedSemaphore:
    """A handle on a named semaphore.  ``close()`` is idempotent; ``unlink()`` is separate."""

    _handle: int = 0  # class default: a half-built object closes cleanly
    _finalizer: Optional[weakref.finalize[..., NamedSemaphore]] = None
    _inflight: Optional[InFlight] = None

    def __init__(self, name: str, *, create: bool = False, value: int = 0, mode: int = 0o600,
                 wait_mode: Optional[str] = None) -> None:
        _check_name(name)
        self.name = name
        self.wait_mode = (default_wait_mode() if wait_mode is None
                          else check_wait_mode(f"semaphore {name!r}", wait_mode))
        bname = name.encode()
        if create:
            _check_create_args(name, value, mode)
            # O_EXCL: we never adopt a semaphore somebody else made with another count.
            h = libc.retry_eintr("sem_open", fn.sem_open, bname, libc.O_CREAT | libc.O_EXCL,
                                 c_uint(mode), c_uint(value), name=name)
        else:
            _check_sem_file(name)
            h = libc.retry_eintr("sem_open", fn.sem_open, bname, 0, name=name)
        self._handle = int(h)
        self._inflight = InFlight()
        self._finalizer = weakref.finalize(self, _close_handle, self._handle)
        # Not at exit: a daemon thread may still sleep on it (the process exit unmaps it).
        self._finalizer.atexit = False

    # -- state -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        f = self._inflight
        return f is None or f.closed

    def _enter(self, what: str) -> int:
        f = self._inflight
        if f is None or not f.enter():
            raise ValueError(f"semaphore {self.name!r} is closed: open it again to {what}")
        return self._handle

    def _leave(self) -> None:
        f = self._inflight
        if f is not None:
            f.leave()

    def _h(self) -> int:
        if self.closed:
            raise ValueError(f"semaphore {self.name!r} is closed")
        return self._handle

    def close(self) -> None:
        """``sem_close(3)``; idempotent.  A call running in another thread keeps the
        semaphore until it returns (a waiter raises ``ValueError`` within CLOSE_SLICE)."""
        f = self._inflight
        if f is not None:
            f.close(self._release)

    def _release(self) -> None:
        h, self._handle = self._handle, 0
        fin, self._finalizer = self._finalizer, None
        if fin is not None:
            fin.detach()
        if h:
            fn.sem_close(h)

    @staticmethod
    def unlink_name(name: str, missing_ok: bool = True) -> None:
        """``sem_unlink(3)``."""
        _check_name(name)
        try:
            libc.retry_eintr("sem_unlink", fn.sem_unlink, name.encode(), name=name)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def identity(self) -> Optional[tuple[int, int]]:
        """(st_dev, st_ino) of the semaphore's file on Linux (``/dev/shm/sem.NAME``), else None."""
        return sem_file_identity(self.name)

    # -- operations ------------------------------------------------------------------------
    def post(self) -> None:
        """``sem_post(3)``."""
        h = self._enter("post it")
        try:
            if fn.sem_post(h) == -1:
                raise libc.oserror(get_errno(), self.name, "sem_post")
        finally:
            self._leave()

    def try_acquire(self) -> bool:
        """``sem_trywait(3)``: True if a token was taken."""
        h = self._enter("take a token")
        try:
            while True:
                if fn.sem_trywait(h) == 0:
                    return True
                e = get_errno()
                if e == errno.EAGAIN:
                    return False
                if e != errno.EINTR:
                    raise libc.oserror(e, self.name, "sem_trywait")
        finally:
            self._leave()

    def value(self) -> int:
        """``sem_getvalue(3)`` (diagnostics only; -1 where unsupported)."""
        if fn.sem_getvalue is None:
            return -1
        h = self._enter("read its value")
        try:
            v = c_int(0)
            if fn.sem_getvalue(h, byref(v)) == -1:
                return -1
            return v.value
        finally:
            self._leave()

    def acquire(self, timeout: Optional[float]) -> bool:
        """Take a token, waiting at most ``timeout`` seconds (``None``: without bound).

        Returns False on timeout.  EINTR is retried with the remaining time.  Raises
        ``ValueError`` if another thread closes this handle while it waits.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"semaphore {self.name!r}: timeout must be a number of seconds "
                                f"or None, not {type(timeout).__name__}")
            if timeout != timeout or timeout < 0:  # NaN or negative
                raise ValueError(f"semaphore {self.name!r}: timeout must be a non-negative "
                                 f"number of seconds, not {timeout!r}")
            timeout = float(timeout) if timeout < _MAX_TIMEOUT else _MAX_TIMEOUT
        h = self._enter("wait on it")
        try:
            if fn.sem_trywait(h) == 0:  # fast path: no clock read, no timespec
                return True
            if timeout == 0:
                return False
            end = None if timeout is None else time.monotonic() + timeout
            if self.wait_mode == "polling":
                return self._poll(h, end)
            return self._wait(h, end)
        finally:
            self._leave()

    def _closed_while_waiting(self) -> ValueError:
        return ValueError(f"semaphore {self.name!r} was closed (by another thread) while "
                          "acquire() waited")

    def _wait(self, h: int, end: Optional[float]) -> bool:
        clockwait = self.wait_mode == "clockwait"
        call = "sem_clockwait" if clockwait else "sem_timedwait"
        ts = libc.timespec()
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                return False
            step = CLOSE_SLICE if end is None else min(CLOSE_SLICE, end - now)
            if clockwait:
                _fill(ts, time.clock_gettime(time.CLOCK_MONOTONIC) + step)
                r = fn.sem_clockwait(h, libc.CLOCK_MONOTONIC, byref(ts))  # type: ignore[misc]
            else:
                _fill(ts, time.time() + step)
                r = fn.sem_timedwait(h, byref(ts))  # type: ignore[misc]
            if r == 0:
                return True
            e = get_errno()
            if e not in (errno.ETIMEDOUT, errno.EINTR):
                raise libc.oserror(e, self.name, call)
            # A realtime-clock step may end a timedwait early: the monotonic end decides.
            if self.closed:
                raise self._closed_while_waiting()

    def _poll(self, h: int, end: Optional[float]) -> bool:
        delay = _POLL_MIN
        trywait = fn.sem_trywait
        while True:
            if trywait(h) == 0:
                return True
            e = get_errno()
            if e not in (errno.EAGAIN, errno.EINTR):
                raise libc.oserror(e, self.name, "sem_trywait")
            if self.closed:
                raise self._closed_while_waiting()
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(delay, left))
            else:
                time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"wait={self.wait_mode}"
        return f"<NamedSemaphore {self.name!r} {state}>"


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"NamedSemaphore name must be a str such as '/job1_sem', not "
                        f"{type(name).__name__}")


def _fill(ts: libc.timespec, t: float) -> None:
    sec = int(t)
    nsec = int((t - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    elif nsec < 0:
        nsec = 0
    ts.tv_sec = sec
    ts.tv_nsec = nsec


_SEM_T_SIZE: Final = 32  # sizeof(sem_t) on 64-bit glibc and musl


def _check_sem_file(name: str) -> None:
    """Refuse a Linux semaphore file too short to hold a ``sem_t``: glibc would map it and the
    first access would kill the process with SIGBUS (a truncated or foreign file)."""
    if not libc.IS_LINUX:
        return
    try:
        size = os.stat(SHM_DIR + "/sem." + name.lstrip("/")).st_size
    except OSError:
        return  # sem_open reports it
    if size < _SEM_T_SIZE:
        raise ValueError(f"semaphore {name!r} is corrupt: its file /dev/shm/sem."
                         f"{name.lstrip('/')} has {size} bytes, a sem_t needs {_SEM_T_SIZE}; "
                         "remove it (python -m ctshm rm) and re-create the ring")


def sem_file_identity(name: str) -> Optional[tuple[int, int]]:
    """Linux/glibc keeps named semaphore ``/X`` as the file ``/dev/shm/sem.X``."""
    if not libc.IS_LINUX:
        return None
    try:
        st = os.stat(SHM_DIR + "/sem." + name.lstrip("/"))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
