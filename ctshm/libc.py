"""The libc functions ctshm uses, declared once and loaded without spawning a process.

Every foreign function is described by one row of :data:`PROTOTYPES` (name -> result type,
fixed argument types, how failure is reported, whether it is required) and bound by one
loader, :func:`_load`.  A missing *required* symbol fails at import with a message naming it
and the libraries searched.

Library lookup never calls :func:`ctypes.util.find_library` (which runs ``ldconfig -p`` or a
compiler in a subprocess: tens of milliseconds at import).  Instead we ``dlopen`` well-known
sonames directly:

* Linux/glibc: ``libc.so.6``.  glibc < 2.34 keeps ``shm_*`` in ``librt.so.1`` and the
  ``sem_*`` functions in ``libpthread.so.0``; a symbol not found in libc is looked up there.
  musl has everything in the process image (``CDLL(None)``).
* macOS: ``libSystem.B.dylib``.

Errors become ``OSError(errno, strerror, name)`` where ``name`` is the shared object's name, so
callers get :class:`FileNotFoundError`, :class:`FileExistsError`, :class:`PermissionError`...
carrying the name.  ``errno`` is read immediately after the call through ctypes' private errno
copy (``use_errno=True``), and EINTR is retried by :func:`retry_eintr`.

Hot-path callers use the raw bound functions on :data:`fn` (one ctypes call each, no Python
error-check wrapper) and test the result inline.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import sys
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int64,
    c_long,
    c_size_t,
    c_uint,
    c_void_p,
    get_errno,
)
from typing import Any, Callable, Final, NamedTuple, Optional

__all__ = [
    "IS_LINUX",
    "IS_MACOS",
    "MAP_FAILED",
    "PROTOTYPES",
    "SEM_FAILED",
    "fn",
    "libraries",
    "oserror",
    "retry_eintr",
]

IS_LINUX: Final = sys.platform.startswith("linux")
IS_MACOS: Final = sys.platform == "darwin"

# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------

c_off_t = c_int64  # off_t is 64-bit on every platform ctshm supports (LP64 Linux, macOS)
c_time_t = c_long


class timespec(Structure):
    """``struct timespec`` (LP64: two longs)."""

    _fields_ = [("tv_sec", c_time_t), ("tv_nsec", c_long)]


# ---------------------------------------------------------------------------------------------
# Constants.  Values per platform; tests compare them with the os/mmap modules' own copies.
# ---------------------------------------------------------------------------------------------

O_RDONLY: Final = 0
O_RDWR: Final = 2
PROT_NONE: Final = 0
PROT_READ: Final = 1
PROT_WRITE: Final = 2
PROT_EXEC: Final = 4
MAP_SHARED: Final = 1
MAP_PRIVATE: Final = 2

if IS_MACOS:
    O_CREAT: Final = 0x200
    O_EXCL: Final = 0x800
    MAP_ANONYMOUS: Final = 0x1000
    MADV_DONTNEED: Final = 4
    MADV_HUGEPAGE: Final = -1  # no such advice on macOS: never passed
    CLOCK_MONOTONIC: Final = 6
    # PSHMNAMLEN: a POSIX shm / semaphore name on macOS is at most 31 bytes, slash included.
    NAME_MAX: Final = 31
    NAME_MAX_INCLUDES_SLASH: Final = True
else:  # Linux, x86_64 and aarch64 share these values (asm-generic)
    O_CREAT: Final = 0o100  # type: ignore[misc]
    O_EXCL: Final = 0o200  # type: ignore[misc]
    MAP_ANONYMOUS: Final = 0x20  # type: ignore[misc]
    MADV_DONTNEED: Final = 4  # type: ignore[misc]
    MADV_HUGEPAGE: Final = 14  # type: ignore[misc]
    CLOCK_MONOTONIC: Final = 1  # type: ignore[misc]
    # glibc maps "/name" to /dev/shm/name (and a semaphore to /dev/shm/sem.name): each path
    # component is limited by NAME_MAX (255) *without* the slash.
    NAME_MAX: Final = 255  # type: ignore[misc]
    NAME_MAX_INCLUDES_SLASH: Final = False  # type: ignore[misc]

#: ``mmap`` returns ``(void *) -1`` on failure; ctypes gives it to us as this integer.
MAP_FAILED: Final = ctypes.c_void_p(-1).value
#: ``sem_open`` failure value: ``NULL`` on glibc/musl (``c_void_p`` gives ``None``), ``-1`` on
#: macOS.  Compare with :func:`sem_failed`, which accepts both spellings.
SEM_FAILED: Final = MAP_FAILED if IS_MACOS else None


def sem_failed(handle: Optional[int]) -> bool:
    """True if a value returned by ``sem_open`` means failure on this platform."""
    return handle is None or handle == 0 or handle == MAP_FAILED


# ---------------------------------------------------------------------------------------------
# The prototype table
# ---------------------------------------------------------------------------------------------

# How a function reports failure.  "neg1": returns -1 and sets errno.  "ptr": returns NULL or
# (void*)-1 and sets errno.  "rc": returns the error number itself (posix_fallocate).
FailKind = str


class Proto(NamedTuple):
    restype: Any
    argtypes: tuple[Any, ...]
    fails: FailKind
    required: bool
    doc: str


PROTOTYPES: Final[dict[str, Proto]] = {
    # --- shared memory objects (librt on glibc < 2.34) ---
    "shm_open": Proto(c_int, (c_char_p, c_int, c_uint), "neg1", True, "open a POSIX shm object"),
    "shm_unlink": Proto(c_int, (c_char_p,), "neg1", True, "remove a POSIX shm object's name"),
    "ftruncate": Proto(c_int, (c_int, c_off_t), "neg1", True, "size a shm object (sparse)"),
    "posix_fallocate": Proto(
        c_int, (c_int, c_off_t, c_off_t), "rc", False, "reserve backing store (Linux)"
    ),
    # --- mappings ---
    "mmap": Proto(
        c_void_p, (c_void_p, c_size_t, c_int, c_int, c_int, c_off_t), "ptr", True, "map memory"
    ),
    "munmap": Proto(c_int, (c_void_p, c_size_t), "neg1", True, "unmap memory"),
    "mprotect": Proto(c_int, (c_void_p, c_size_t, c_int), "neg1", True, "change protection"),
    "madvise": Proto(c_int, (c_void_p, c_size_t, c_int), "neg1", True, "advise the kernel"),
    # --- named semaphores (libpthread on glibc < 2.34) ---
    # sem_open is variadic: only the fixed part (name, oflag) is declared; mode and value are
    # passed as explicit c_uint values so ctypes uses the variadic convention where it differs
    # (Apple arm64 passes variadic arguments on the stack).
    "sem_open": Proto(c_void_p, (c_char_p, c_int), "ptr", True, "open a named semaphore"),
    "sem_close": Proto(c_int, (c_void_p,), "neg1", True, "close a named semaphore"),
    "sem_unlink": Proto(c_int, (c_char_p,), "neg1", True, "remove a named semaphore"),
    "sem_post": Proto(c_int, (c_void_p,), "neg1", True, "increment a semaphore"),
    "sem_wait": Proto(c_int, (c_void_p,), "neg1", True, "decrement, blocking"),
    "sem_trywait": Proto(c_int, (c_void_p,), "neg1", True, "decrement or fail with EAGAIN"),
    "sem_timedwait": Proto(
        c_int, (c_void_p, POINTER(timespec)), "neg1", False, "decrement before a CLOCK_REALTIME "
        "deadline (absent on macOS)"
    ),
    "sem_clockwait": Proto(
        c_int, (c_void_p, c_int, POINTER(timespec)), "neg1", False,
        "decrement before a deadline on a chosen clock (glibc >= 2.30)",
    ),
    "sem_getvalue": Proto(c_int, (c_void_p, POINTER(c_int)), "neg1", False, "read a count"),
    # unnamed semaphores placed in shared memory (ShmBroadcast: sem_t words in its segment)
    "sem_init": Proto(c_int, (c_void_p, c_int, c_uint), "neg1", False,
                      "initialise an unnamed semaphore (pshared=1: in shared memory)"),
    # --- files ---
    "statx": Proto(
        c_int, (c_int, c_char_p, c_int, c_uint, c_void_p), "neg1", False,
        "file status incl. birth time (Linux, glibc >= 2.28)",
    ),
}


class _Functions:
    """Namespace of bound foreign functions (attribute access is the cheapest lookup)."""

    shm_open: Callable[..., int]
    shm_unlink: Callable[..., int]
    ftruncate: Callable[..., int]
    posix_fallocate: Optional[Callable[..., int]]
    mmap: Callable[..., Optional[int]]
    munmap: Callable[..., int]
    mprotect: Callable[..., int]
    madvise: Callable[..., int]
    sem_open: Callable[..., Optional[int]]
    sem_close: Callable[..., int]
    sem_unlink: Callable[..., int]
    sem_post: Callable[..., int]
    sem_wait: Callable[..., int]
    sem_trywait: Callable[..., int]
    sem_timedwait: Optional[Callable[..., int]]
    sem_clockwait: Optional[Callable[..., int]]
    sem_getvalue: Optional[Callable[..., int]]
    sem_init: Optional[Callable[..., int]]
    statx: Optional[Callable[..., int]]


def _candidate_libraries() -> list[str | None]:
    if IS_MACOS:
        return ["/usr/lib/libSystem.B.dylib"]
    # glibc first; then the pre-2.34 split libraries; then the process image (musl).
    return ["libc.so.6", "librt.so.1", "libpthread.so.0", None]


def _load() -> tuple[_Functions, list[str]]:
    # Libraries are opened lazily, in order: on glibc >= 2.34 everything is in libc.so.6 and
    # librt/libpthread are never touched.
    candidates = _candidate_libraries()
    opened: list[tuple[str, ctypes.CDLL]] = []

    def lib(k: int) -> Optional[ctypes.CDLL]:
        while len(opened) <= k and candidates:
            soname = candidates.pop(0)
            try:
                opened.append((soname or "<process>", ctypes.CDLL(soname, use_errno=True)))
            except OSError:
                continue
        return opened[k][1] if k < len(opened) else None

    fns = _Functions()
    missing = []
    for name, proto in PROTOTYPES.items():
        found = None
        k = 0
        while (handle := lib(k)) is not None:
            found = getattr(handle, name, None)
            if found is not None:
                break
            k += 1
        if found is None:
            if proto.required:
                missing.append(name)
            setattr(fns, name, None)
            continue
        found.restype = proto.restype
        found.argtypes = proto.argtypes
        setattr(fns, name, found)
    searched = [n for n, _ in opened]
    if missing:
        raise ImportError(
            f"ctshm: required libc function(s) {', '.join(missing)} not found in "
            f"{searched or 'any library'}; ctshm needs POSIX shared memory and named semaphores"
        )
    return fns, searched


fn, libraries = _load()
fn: _Functions  # type: ignore[no-redef]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def oserror(err: int, name: Optional[str] = None, call: Optional[str] = None) -> OSError:
    """``OSError(errno, strerror, name)``: Python picks the subclass (FileNotFoundError...).

    ``call`` (the libc function) is appended to the message so the user knows which step failed.
    """
    msg = os.strerror(err)
    if call:
        msg = f"{msg} ({call})"
    if call in ("shm_open", "sem_open"):
        from . import _shmdir  # cold path: the directory may be the cause (absent, read-only)

        problem = _shmdir.dir_problem(err, call)
        if problem is not None:
            return _shmdir.ShmDirError(err, f"{msg}: {problem}", name)
    if name is None:
        return OSError(err, msg)
    return OSError(err, msg, name)


def retry_eintr(call: str, func: Callable[..., Any], *args: Any, name: Optional[str] = None) -> Any:
    """Call a "neg1"/"ptr" function, retrying EINTR; raise ``OSError(errno, strerror, name)``."""
    kind = PROTOTYPES[call].fails
    while True:
        r = func(*args)
        if kind == "neg1":
            if r != -1:
                return r
        elif kind == "ptr":
            if not (r is None or r == MAP_FAILED or (call == "sem_open" and sem_failed(r))):
                return r
        else:  # "rc": the return value is the error number
            if r == 0:
                return 0
            if r != _errno.EINTR:
                raise oserror(r, name, call)
            continue
        err = get_errno()
        if err != _errno.EINTR:
            raise oserror(err, name, call)


# ---------------------------------------------------------------------------------------------
# Thin checked wrappers (cold paths). Each names the syscall it wraps.
# ---------------------------------------------------------------------------------------------


def shm_open(name: str, flags: int, mode: int = 0o600) -> int:
    """``shm_open(3)``: return a file descriptor (close-on-exec)."""
    return int(retry_eintr("shm_open", fn.shm_open, name.encode(), flags, mode, name=name))


def shm_unlink(name: str) -> None:
    """``shm_unlink(3)``."""
    retry_eintr("shm_unlink", fn.shm_unlink, name.encode(), name=name)


def ftruncate(fd: int, size: int, name: Optional[str] = None) -> None:
    """``ftruncate(2)``: set the object's size (new bytes read as zero, no store reserved)."""
    retry_eintr("ftruncate", fn.ftruncate, fd, size, name=name)


def posix_fallocate(fd: int, offset: int, length: int, name: Optional[str] = None) -> bool:
    """``posix_fallocate(3)``: reserve backing store.  False if the platform lacks it."""
    if fn.posix_fallocate is None:
        return False
    retry_eintr("posix_fallocate", fn.posix_fallocate, fd, offset, length, name=name)
    return True


def mmap(length: int, prot: int, flags: int, fd: int, offset: int = 0,
         name: Optional[str] = None) -> int:
    """``mmap(2)``: return the address of a new mapping."""
    return int(retry_eintr("mmap", fn.mmap, None, length, prot, flags, fd, offset, name=name))


def munmap(addr: int, length: int) -> None:
    """``munmap(2)``."""
    retry_eintr("munmap", fn.munmap, addr, length)


def mprotect(addr: int, length: int, prot: int) -> None:
    """``mprotect(2)``."""
    retry_eintr("mprotect", fn.mprotect, addr, length, prot)


def madvise(addr: int, length: int, advice: int) -> bool:
    """``madvise(2)``, advisory: returns False (never raises) when the kernel declines."""
    return bool(fn.madvise(addr, length, advice) == 0)


_AT_FDCWD: Final = -100
_STATX_BTIME: Final = 0x800
_STATX_SIZE: Final = 256
_STATX_BTIME_OFF: Final = 80  # struct statx: stx_btime {s64 tv_sec; u32 tv_nsec; s32 pad}


def birth_time_ns(path: str) -> Optional[int]:
    """``statx(2)`` birth time of ``path`` in ns, or None if the platform/file system has none
    (tmpfs reports it on Linux >= 5.x; /dev/shm is tmpfs)."""
    if fn.statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if fn.statx(_AT_FDCWD, path.encode(), 0, _STATX_BTIME, buf) != 0:
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & _STATX_BTIME:
        return None
    sec = int.from_bytes(buf.raw[_STATX_BTIME_OFF:_STATX_BTIME_OFF + 8], "little", signed=True)
    nsec = int.from_bytes(buf.raw[_STATX_BTIME_OFF + 8:_STATX_BTIME_OFF + 12], "little")
    return sec * 1_000_000_000 + nsec


def page_size() -> int:
    return int(os.sysconf("SC_PAGE_SIZE"))

