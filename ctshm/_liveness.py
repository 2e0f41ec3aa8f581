"""Process identity: a pid plus its start time, so a recycled pid is never mistaken for a
live peer."""

from __future__ import annotations

import os
import signal
from typing import Final, Optional

#: Enough for any ``/proc/PID/stat`` line (a few hundred bytes: the command name is at most
#: 16 bytes).
_STAT_READ: Final = 4096


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (Linux ``/proc/PID/stat`` field 22),
    or 0 where unknown (other platforms, or the process is gone)."""
    data = _read_stat(pid)
    if data is None:
        return 0
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    tail = data[data.rfind(b")") + 2:].split()
    try:
        return int(tail[19])  # field 22 overall; fields 3.. start at index 0 here
    except (IndexError, ValueError):
        return 0


def _read_stat(pid: int) -> Optional[bytes]:
    # Opened relative to a /proc directory descriptor rather than by the path
    # "/proc/PID/stat": qemu-user intercepts that path for the emulated process itself and
    # returns a synthetic file whose start time differs from what every other process sees,
    # which would make a live peer look dead (seen under qemu-aarch64 7.2).
    try:
        dfd = os.open("/proc", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fd = os.open(f"{pid}/stat", os.O_RDONLY, dir_fd=dfd)
        try:
            return os.read(fd, _STAT_READ)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(dfd)


def is_alive(pid: int, start: int = 0) -> bool:
    """True if ``pid`` exists, is not a zombie and (when ``start`` is known) is still the same
    process rather than a recycled pid."""
    if pid <= 0 or pid > 0x7FFFFFFF:  # not a pid (e.g. a corrupt header word)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to another user
    if start and start_time(pid) != start:
        return False  # recycled pid, or it died between the two checks
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    # A killed child that its parent has not reaped yet is a zombie: dead for our purposes.
    data = _read_stat(pid)
    if data is None:
        return not os.path.isdir("/proc/self")  # no /proc (macOS): trust kill(0)
    state = data[data.rfind(b")") + 2:data.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def exit_status(pid: int) -> Optional[str]:
    """How ``pid`` ended, if it is a child of this process that ended ("exited with status
    0 without mark_finished()", "died, killed by signal 9 (SIGKILL)"), without reaping it
    (``WNOWAIT``: its parent's own wait still gets the status); else None."""
    waitid = getattr(os, "waitid", None)
    if waitid is None or not 0 < pid < (1 << 31):  # not a pid: a corrupt header word
        return None
    try:
        r = waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, OSError, OverflowError):
        return None  # not our child, or already reaped
    if r is None:
        return None  # still running
    if r.si_code == os.CLD_EXITED:
        return f"exited with status {r.si_status} without mark_finished()"
    try:
        name = signal.Signals(r.si_status).name
    except ValueError:
        name = "?"
    return f"died, killed by signal {r.si_status} ({name})"


#: This process's (pid, start time), read once per process: a start time never changes, and
#: reading /proc/self/stat costs ~0.1 ms here.  A forked child (another pid) reads its own.
_ME: tuple[int, int] = (0, 0)


def me() -> tuple[int, int]:
    """This process's (pid, start time)."""
    global _ME
    pid = os.getpid()
    if _ME[0] != pid:
        _ME = (pid, start_time(pid))
    return _ME

