"""The directory POSIX shared memory lives in (Linux: ``/dev/shm``): presence, mode, space.

* :func:`status`: what ``python -m ctshm info`` reports (size, free, read-only, absent).
* :func:`dir_problem`: why ``shm_open`` / ``sem_open`` failed when the *directory* is the
  cause (absent, as on AWS Lambda; mounted read-only; not writable), with the fix.  libc
  then raises :class:`ShmDirError`, which is not a ``FileNotFoundError``: ``ShmTraceRing.open``
  must not mistake a missing /dev/shm for a ring whose creator has not started yet.
* :func:`check_free`: a ring or segment larger than the free space gets a
  ``ResourceWarning`` with the figures at create; both are sparse, so it is not refused (what
  is really written is reserved first and raises ``OSError(ENOSPC)`` when it cannot be had).

glibc keeps shm objects and named semaphores (``sem.NAME``) in ``/dev/shm``; other systems
(macOS) have no such directory and every function here does nothing there.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import warnings
from typing import Any, Final, Optional

from .errors import ShmDirError

__all__ = ["SHM_DIR", "SPARSE_RING", "SPARSE_SEGMENT", "ShmDirError", "check_free", "describe",
           "dir_problem", "status"]

SHM_DIR: Final = "/dev/shm"
_LINUX: Final = sys.platform.startswith("linux")

_FIX_ABSENT: Final = (
    "POSIX shared memory needs a tmpfs there: as root `mkdir -p /dev/shm && mount -t tmpfs "
    "-o mode=1777 tmpfs /dev/shm`; in a container start it with a /dev/shm (Docker: "
    "--shm-size or --tmpfs /dev/shm). Some sandboxes (AWS Lambda) have none at all: use "
    "pipes or sockets between processes there")
_FIX_READONLY: Final = (
    "remount it read-write (`mount -o remount,rw /dev/shm`) or, in a container, give it a "
    "writable tmpfs (Docker: --tmpfs /dev/shm:rw or --shm-size)")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def status() -> dict[str, Any]:
    """``{"path", "present", "size", "free", "readonly", "writable"}`` for ``/dev/shm``
    (``present`` False and nothing else where there is none; ``{}`` off Linux)."""
    if not _LINUX:
        return {}
    try:
        st = os.stat(SHM_DIR)
    except OSError as e:
        return {"path": SHM_DIR, "present": False, "error": e.strerror}
    if not stat.S_ISDIR(st.st_mode):
        return {"path": SHM_DIR, "present": False, "error": "not a directory"}
    out: dict[str, Any] = {"path": SHM_DIR, "present": True}
    try:
        vfs = os.statvfs(SHM_DIR)
    except OSError as e:  # pragma: no cover - a directory statvfs refuses
        out["error"] = e.strerror
        return out
    out["size"] = vfs.f_blocks * vfs.f_frsize
    out["free"] = vfs.f_bavail * vfs.f_frsize
    out["readonly"] = bool(vfs.f_flag & getattr(os, "ST_RDONLY", 1))  # PyPy lacks os.ST_RDONLY
    out["writable"] = not out["readonly"] and os.access(SHM_DIR, os.W_OK | os.X_OK)
    return out


def describe() -> str:
    """One line for ``python -m ctshm info``."""
    s = status()
    if not s:
        return "n/a (no /dev/shm on this system)"
    if not s["present"]:
        return f"{SHM_DIR} absent ({s.get('error')}): {_FIX_ABSENT}"
    if "size" not in s:
        return f"{SHM_DIR} ({s.get('error')})"
    line = f"{SHM_DIR} size {_mib(s['size'])}, free {_mib(s['free'])}"
    if s["readonly"]:
        line += f", READ-ONLY: {_FIX_READONLY}"
    elif not s["writable"]:
        line += ", not writable by this user"
    return line


def dir_problem(err: int, call: str) -> Optional[str]:
    """Why ``call`` (``shm_open``/``sem_open``) failing with ``err`` is the directory's fault,
    with the fix; None if the directory is fine (the object itself is the cause)."""
    if not _LINUX or err not in (errno.ENOENT, errno.EROFS, errno.EACCES):
        return None
    s = status()
    if not s["present"]:
        return f"{SHM_DIR} does not exist ({s.get('error')}); {_FIX_ABSENT}"
    if s.get("readonly"):
        return f"{SHM_DIR} is mounted read-only; {_FIX_READONLY}"
    if err == errno.EACCES and not s.get("writable", True):
        return (f"{SHM_DIR} is not writable by this user (uid {os.getuid()}); it should be "
                "mode 1777 (`chmod 1777 /dev/shm` as root)")
    return None


#: What fails when a sparse object outgrows /dev/shm, and what to do: the end of the warning.
SPARSE_RING: Final = (
    "the ring is sparse (create reserves only its header; a slot is reserved when first "
    "acquired), so acquire()/put() raise OSError(ENOSPC) once /dev/shm runs out, never "
    "SIGBUS. If that is a risk: use fewer or smaller slots, free space in /dev/shm "
    "(`python -m ctshm gc`), or enlarge it (Docker: --shm-size; "
    "`mount -o remount,size=2G /dev/shm`)")
SPARSE_SEGMENT: Final = (
    "the object is sparse: once /dev/shm is full, touching a page never touched before "
    "kills the process with SIGBUS - writing it, and also reading it (the kernel must "
    "allocate the page either way); create it with reserve=True, or call reserve(), to get "
    "OSError(ENOSPC) up front instead")


def check_free(kind: str, name: str, nbytes: int, consequence: str, stacklevel: int) -> None:
    """Warn (``ResourceWarning``, with the figures and ``consequence``) when the object
    ``name`` of ``nbytes`` is larger than the free space of ``/dev/shm``.

    Never refuses: rings and segments are sparse, so an object larger than the free space
    works as long as what is really written fits, and what is reserved (a ring's header, a
    slot, ``reserve=True``) raises ``OSError(ENOSPC)`` when it cannot be had.  ``stacklevel``
    is that of ``warnings.warn`` from here (3: the caller's caller).  Silent where the free
    space cannot be read (no /dev/shm: ``shm_open`` reports that).
    """
    if not _LINUX:
        return
    try:
        vfs = os.statvfs(SHM_DIR)
    except OSError:
        return
    free = vfs.f_bavail * vfs.f_frsize
    if nbytes <= free:
        return
    size = vfs.f_blocks * vfs.f_frsize
    warnings.warn(f"{kind} {name!r} needs {nbytes:,} bytes ({_mib(nbytes)}), {SHM_DIR} has "
                  f"{free:,} bytes ({_mib(free)}) free of {_mib(size)}: {consequence}",
                  ResourceWarning, stacklevel=stacklevel)
