"""Pieces shared by ShmMemory and ShmTraceRing: names, identities and mappings.

Names follow the Rust original: an id ``X`` (or ``/X``: a leading slash is not doubled) becomes
``/X_m`` for a memory segment and ``/X_t``, ``/X_t_filled``, ``/X_t_empty`` for a ring.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import weakref
from typing import Any, Callable, ClassVar, Final, Optional, TypeVar

from . import libc

_OFF_T_MAX: Final = (1 << 63) - 1
_PYPY: Final = sys.implementation.name == "pypy"
if _PYPY:
    from . import _pypy

#: Where Linux keeps POSIX shm objects (and glibc its named semaphores, as ``sem.NAME``).
SHM_DIR: Final = "/dev/shm"


def object_name(kind: str, id: Any, suffix: str, extra_suffixes: tuple[str, ...] = ()) -> str:
    """Validate ``id`` and return ``/{id}{suffix}``; ``extra_suffixes`` are appended to that
    name for companion objects (semaphores) and must fit the platform's limit too."""
    if not isinstance(id, str):
        raise TypeError(f"{kind} id must be a str, not {type(id).__name__}")
    body = id[1:] if id.startswith("/") else id
    if not body:
        raise ValueError(f"{kind} id {id!r} is empty: give a short name such as 'trace1'")
    try:
        body.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{kind} id {id!r} cannot be encoded as UTF-8 ({e.reason} at "
                         f"position {e.start}): use a plain text id such as 'trace1'") from None
    if "\0" in body:
        raise ValueError(f"{kind} id {id!r} contains a NUL character")
    bad = next((i for i, c in enumerate(body) if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"{kind} id {id!r} contains a control character ({body[bad]!r} at "
                         f"position {bad}): ids are names listed by `python -m ctshm ls`; "
                         "use printable characters, such as 'trace1'")
    if "/" in body:
        raise ValueError(
            f"{kind} id {id!r} contains '/' after the first character: POSIX shared memory "
            "names are a single path component"
        )
    name = "/" + body + suffix
    longest = max((name + s for s in ("", *extra_suffixes)), key=len)
    if libc.IS_LINUX:
        # Semaphores live at /dev/shm/sem.NAME (the 4-byte "sem." prefix counts too).
        sem_extra = 4 if extra_suffixes else 0
        size = len(longest[1:].encode()) + sem_extra
    else:
        size = len(longest.encode())
    if size > libc.NAME_MAX:
        what = "including the leading '/'" if libc.NAME_MAX_INCLUDES_SLASH else "(NAME_MAX)"
        raise ValueError(
            f"{kind} id {id!r} is too long: the object name {longest!r} needs {size} bytes, "
            f"the platform allows {libc.NAME_MAX} {what}; use a shorter id"
        )
    return name


def id_hint(id: str, suffix: str, call: str) -> str:
    """A hint for a "not found" error when ``id`` looks like an object's name (``x_t`` for
    the ring ``x``): the name exists, the id was meant."""
    body = id.lstrip("/")
    if body.endswith(suffix) and os.path.exists(SHM_DIR + "/" + body):
        return (f"; {id!r} looks like the object's name: pass its id without {suffix!r} "
                f"({call}({body[:-len(suffix)]!r}))")
    return ""


def check_size(kind: str, value: Any, what: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{kind} {what} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{kind} {what} must be > 0, not {value}")
    if value > _OFF_T_MAX:
        raise ValueError(f"{kind} {what} {value} is beyond the largest file size (2**63-1)")
    return value


def fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def name_identity(name: str) -> Optional[tuple[int, int]]:
    """(st_dev, st_ino) of the object currently bound to ``name``, or None if there is none."""
    return read_existing(name, fd_identity)


_T = TypeVar("_T")


def read_existing(name: str, read: Callable[[int], _T]) -> Optional[_T]:
    """``read(fd)`` on the shm object ``name`` opened read-only; None if it cannot be opened
    (there is none, or it is not ours to read).  The fd is closed whatever ``read`` does."""
    try:
        fd = libc.shm_open(name, libc.O_RDONLY, 0)
    except OSError:
        return None
    try:
        return read(fd)
    finally:
        os.close(fd)


def unlink_quietly(name: str) -> None:
    """``shm_unlink(name)``; an absent name is no error (``replace=True`` before a create)."""
    try:
        libc.shm_unlink(name)
    except FileNotFoundError:
        pass


def create_exclusive(name: str, mode: int, what: str) -> int:
    """``shm_open(name, O_CREAT | O_EXCL | O_RDWR, mode)``: the new object's fd; an existing
    one raises ``FileExistsError`` saying "``what`` exists" and what to do."""
    try:
        return libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, mode)
    except FileExistsError as e:
        raise FileExistsError(e.errno, f"{e.strerror}: {what} exists (pass replace=True, or "
                              "remove it with `python -m ctshm rm`)", name) from None


def unlink_if_same(name: str, identity: Optional[tuple[int, int]]) -> bool:
    """``shm_unlink(name)`` only if ``name`` still refers to the object ``identity``.

    A stale owner must never remove a successor that re-created the same name (with
    ``replace=True``).  A successor that unlinks and re-creates the name exactly between our
    check and our ``shm_unlink`` (a window of one system call) would still lose its name; the
    identity check closes every other interleaving.
    """
    if identity is None or name_identity(name) != identity:
        return False
    try:
        libc.shm_unlink(name)
    except FileNotFoundError:
        return False
    return True


def _unmap(addr: int, size: int, pid: int) -> None:
    # Finalizer: never raises, and does nothing in a forked child (its address space is a
    # copy: unmapping there would be harmless, but we keep the rule simple and uniform).
    if os.getpid() != pid:
        return
    try:
        libc.fn.munmap(addr, size)
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


class Mapping:
    """A ``mmap`` of a shared memory object, unmapped when the last reference goes.

    Views handed to users are memoryviews over a ctypes array whose instance holds a strong
    reference to this object: the mapping therefore stays mapped while any view (or slice of
    a view) exists, so no view can ever point at unmapped memory.
    """

    addr: int = 0
    size: int = 0

    def __init__(self, fd: int, size: int, writable: bool, name: str) -> None:
        prot = libc.PROT_READ | (libc.PROT_WRITE if writable else 0)
        try:
            self.addr = libc.mmap(size, prot, libc.MAP_SHARED, fd, 0, name=name)
        except OSError as e:
            if e.errno != errno.ENOMEM:
                raise
            raise OSError(e.errno, f"{os.strerror(e.errno)}: cannot map {size:,} bytes "
                          f"({size / 2**40:.1f} TiB) of {name!r}: more than this process's "
                          "address space allows (x86_64 user space is 128 TiB; also `ulimit "
                          "-v`, vm.overcommit_memory); use fewer or smaller slots",
                          name) from None
        self.size = size
        self.writable = writable
        self.name = name
        self._finalizer = weakref.finalize(self, _unmap, self.addr, size, os.getpid())
        # Never at interpreter exit: a view (a consumer guard's, or one read by an object's
        # __del__ later in the shutdown) may still point here; the exit unmaps it anyway.
        self._finalizer.atexit = False
        if _PYPY:  # a second, natively read-only mapping for read-only views (see _pypy)
            self._ro_map = _pypy.readonly_map(fd, size)

    def view(self, offset: int = 0, length: Optional[int] = None, readonly: bool = False
             ) -> memoryview:
        """A memoryview over ``[offset, offset+length)``; read-only if asked or if the map is."""
        if length is None:
            length = self.size - offset
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range [{offset}, {offset + length}) outside {self.name!r} "
                             f"({self.size} bytes)")
        ro = readonly or not self.writable
        if _PYPY:  # slices of ctypes-array views neither write nor keep the array alive there
            return _pypy.view(self.addr + offset, length, self, ro, self._ro_map, offset)
        arr = _Exporter.make(length, self.addr + offset, self, ro)
        mv = memoryview(arr).cast("B")
        if not ro:
            return mv
        mv = mv.toreadonly()
        if _ReadOnlyExporter is not None:
            # Python >= 3.12: the view's ``.obj`` is a read-only exporter, so not even
            # ``memoryview(view.obj)`` can reach the writable ctypes array underneath.
            return memoryview(_ReadOnlyExporter(mv))
        return mv

    def unmap_now(self) -> None:
        """Unmap immediately (only when no view can exist)."""
        self._finalizer()


def _refuse_write(self: Any, key: Any, value: Any) -> None:
    raise TypeError("cannot modify read-only memory (a read-only shared memory mapping)")


class _Exporter:
    """Builds ctypes arrays (one class per length and mode, cached) that keep their Mapping
    alive.  Arrays over read-only memory refuse item assignment, so ``view.obj[i] = x``
    raises TypeError instead of faulting on the PROT_READ page."""

    _types: ClassVar[dict[tuple[int, bool], Any]] = {}

    @classmethod
    def make(cls, length: int, addr: int, owner: Mapping, readonly: bool = False) -> Any:
        key = (length, readonly)
        t: Any = cls._types.get(key)
        if t is None:
            ns: dict[str, Any] = {"__slots__": ("_owner",)}
            if readonly:
                ns["__setitem__"] = _refuse_write
            t = type("ShmBytes", (ctypes.c_ubyte * length,), ns)
            if len(cls._types) < 256:
                cls._types[key] = t
        arr = t.from_address(addr)
        arr._owner = owner
        return arr


_ReadOnlyExporter: Any = None
if sys.version_info >= (3, 12):
    import inspect

    class _ReadOnlyExporterImpl:
        """A buffer exporter (PEP 688) that only ever exports a read-only view."""

        __slots__ = ("_view",)

        def __init__(self, view: memoryview) -> None:
            self._view = view

        def __buffer__(self, flags: int) -> memoryview:
            if flags & inspect.BufferFlags.WRITABLE:
                raise BufferError("read-only shared memory mapping: writable buffer refused")
            return self._view

        def __release_buffer__(self, view: memoryview) -> None:
            pass

    _ReadOnlyExporter = _ReadOnlyExporterImpl
