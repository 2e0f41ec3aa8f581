"""``ShmMemory``: a plain POSIX shared memory segment, as in the Rust original.

Lifecycles, same names as the original (object ``/{id}_m``):

* :meth:`ShmMemory.create_readonly` creates the object (``shm_open(O_CREAT|O_EXCL)``), sizes
  it with ``ftruncate`` and maps it **read-only**.  The creator unlinks the name on
  :meth:`close` or garbage collection unless :meth:`keep_on_drop` was called.
* :meth:`ShmMemory.create_readwrite`: the same, mapped read-write (the stdlib's
  ``SharedMemory(create=True)`` habit; not in the Rust original).
* :meth:`ShmMemory.open_readwrite` opens an existing object and maps it read-write; it never
  unlinks.

Sparse by default, as the original: a segment costs memory only for the pages touched, so a
2 TiB segment is fine.  The price: when /dev/shm is full, the first touch of a page - a
write, and on tmpfs a *read* of a never-written page too - kills the process with SIGBUS.
Where that matters, reserve what you will touch: ``reserve=True`` at create/open reserves
the whole segment (``posix_fallocate``: ``OSError(ENOSPC)`` at once instead of SIGBUS later),
:meth:`ShmMemory.reserve` a range.

Views never outlive the mapping: ``.buf`` and every slice of it keep the mapping alive, so
:meth:`close` releases the name and the descriptor at once but the pages are unmapped only
when the last view is gone.  Using the object after ``close()`` raises :class:`ValueError`.

Fork safety: a forked child inherits the object, but its finalizer does nothing (pid check):
only the process that created the segment ever unlinks it, and only if the name still refers
to the object it created (a successor that re-created the same id is left alone).
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Final, Optional

from . import _shm, _shmdir, libc
from ._callgate import InFlight
from .layout import SEGMENT_SUFFIX

__all__ = ["ShmMemory"]

_SUFFIX: Final = SEGMENT_SUFFIX


def _check_flag(name: str, what: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"ShmMemory {name!r}: {what}= must be True or False, not {value!r}")


def _finalize(fd: int, name: str, identity: Optional[tuple[int, int]], pid: int,
              unlink: list[bool]) -> None:
    # Never raises; nothing at all in a forked child.
    if os.getpid() != pid:
        return
    try:
        if unlink[0]:
            _shm.unlink_if_same(name, identity)
    except Exception:  # pragma: no cover
        pass
    try:
        os.close(fd)
    except OSError:  # pragma: no cover
        pass


_MAKE: Final = object()


class ShmMemory:
    """A mapped POSIX shared memory object (``/{id}_m``)."""

    # Class-level defaults: a half-built object (constructor failed midway) closes cleanly.
    _fd: int = -1
    _mapping: Optional[_shm.Mapping] = None
    _buf: Optional[memoryview] = None
    _size: int = 0
    _readonly: bool = True
    _owner: bool = False
    _identity: Optional[tuple[int, int]] = None
    _finalizer: Optional[weakref.finalize[..., ShmMemory]] = None
    name: str = ""

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _MAKE:
            raise TypeError("ShmMemory cannot be constructed directly: use "
                            "ShmMemory.create_readonly(id, size), ShmMemory.create_readwrite("
                            "id, size) or ShmMemory.open_readwrite(id)")
        self._unlink_flag = [False]
        self._inflight = InFlight()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create_readonly(cls, id: str, size: int, *, replace: bool = False,
                        mode: int = 0o600, reserve: bool = False) -> ShmMemory:
        """Create ``/{id}_m`` of ``size`` bytes (sparse) and map it read-only.

        ``FileExistsError`` if the name exists, unless ``replace=True`` (the Rust original's
        behaviour: the old name is unlinked first; its users keep their mapping).
        ``reserve=True`` reserves backing store for all of it first (see the module
        docstring: ENOSPC now rather than SIGBUS on a first touch).
        """
        return cls._create(id, size, replace, mode, reserve, writable=False)

    @classmethod
    def create_readwrite(cls, id: str, size: int, *, replace: bool = False,
                         mode: int = 0o600, reserve: bool = False) -> ShmMemory:
        """Create ``/{id}_m`` like :meth:`create_readonly`, but map it read-write: the
        creator writes, others open it (``open_readwrite``).  Same naming, ownership (the
        creator unlinks on close) and sparse semantics."""
        return cls._create(id, size, replace, mode, reserve, writable=True)

    @classmethod
    def _create(cls, id: str, size: int, replace: bool, mode: int, reserve: bool,
                writable: bool) -> ShmMemory:
        name = _shm.object_name("ShmMemory", id, _SUFFIX)
        size = _shm.check_size("ShmMemory", size)
        _check_flag(name, "replace", replace)
        _check_flag(name, "reserve", reserve)
        # Sparse: a warning, not a refusal; stacklevel 4 is the caller of create_*.
        _shmdir.check_free("ShmMemory", name, size, _shmdir.SPARSE_SEGMENT, 4)
        self = cls(_token=_MAKE)
        self.name = name
        if replace:
            _shm.unlink_quietly(name)
        self._fd = _shm.create_exclusive(name, mode, "shared memory segment")
        self._owner = True
        self._unlink_flag[0] = True
        self._identity = _shm.fd_identity(self._fd)
        self._arm_finalizer()
        try:
            libc.ftruncate(self._fd, size, name)
            self._map(size, reserve, writable)
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open_readwrite(cls, id: str, *, reserve: bool = False) -> ShmMemory:
        """Open the existing ``/{id}_m`` and map all of it read-write.  Never unlinks.

        Sparse by default (the original's semantics: pages cost memory when touched).
        ``reserve=True`` reserves backing store for the whole object first
        (``posix_fallocate``), so a full /dev/shm raises ``OSError(ENOSPC)`` here rather than
        SIGBUS on a later write - this allocates all of it now; :meth:`reserve` reserves
        just the ranges you will touch.
        """
        name = _shm.object_name("ShmMemory", id, _SUFFIX)
        _check_flag(name, "reserve", reserve)
        self = cls(_token=_MAKE)
        self.name = name
        try:
            self._fd = libc.shm_open(name, libc.O_RDWR, 0)
        except FileNotFoundError as e:
            raise FileNotFoundError(e.errno, f"{e.strerror}: no such shared memory segment"
                                    f"{_shm.id_hint(id, _SUFFIX, 'open_readwrite')}",
                                    name) from None
        self._arm_finalizer()
        try:
            size = os.fstat(self._fd).st_size
            if size <= 0:
                raise ValueError(f"shared memory segment {name!r} has size 0: its creator has "
                                 "not sized it yet (or it is not a ShmMemory); retry later")
            self._map(size, reserve, writable=True)
        except BaseException:
            self.close()
            raise
        return self

    def _map(self, size: int, reserve: bool, writable: bool) -> None:
        self._size = size
        if reserve:
            self.reserve(0, size)
        self._mapping = _shm.Mapping(self._fd, size, writable=writable, name=self.name)
        self._readonly = not writable

    def _arm_finalizer(self) -> None:
        self._finalizer = weakref.finalize(self, _finalize, self._fd, self.name, self._identity,
                                           os.getpid(), self._unlink_flag)

    # -- accessors ---------------------------------------------------------------------------
    def _check_open(self) -> _shm.Mapping:
        m = self._mapping
        if m is None:
            raise ValueError(f"ShmMemory {self.name!r} is closed: open it again to use it")
        return m

    @property
    def buf(self) -> memoryview:
        """The whole mapping as a memoryview (read-only for a read-only map)."""
        if self._buf is None:
            self._buf = self._check_open().view()
        return self._buf

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        self._check_open()
        return self._size

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def closed(self) -> bool:
        return self._mapping is None

    @property
    def address(self) -> int:
        """Address of the mapping in this process (for ctypes/atomics)."""
        return self._check_open().addr

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def reserve(self, offset: int = 0, length: Optional[int] = None) -> bool:
        """Reserve backing store for ``[offset, offset+length)`` (``posix_fallocate``).

        ``OSError(ENOSPC)`` if /dev/shm is full.  False where the platform cannot reserve
        (macOS): writes there may still fail with SIGBUS when memory runs out.
        """
        for what, v, hint in (("offset", offset, "0: from the start"),
                              ("length", length, "None: to the end")):
            if (v is not None or what == "offset") and (isinstance(v, bool)
                                                        or not isinstance(v, int)):
                raise TypeError(f"ShmMemory {self.name!r}: reserve({what}=) must be an int "
                                f"({hint}), not {type(v).__name__}")
        if length is None:
            length = self._size - offset
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ValueError(f"range [{offset}, {offset + length}) is outside {self.name!r} "
                             f"({self._size} bytes)")
        if self._fd < 0 or not self._inflight.enter():
            raise ValueError(f"ShmMemory {self.name!r} is closed: open it again to use it")
        try:  # in flight: a close() in another thread waits to close the descriptor
            if length == 0:
                return True
            return libc.posix_fallocate(self._fd, offset, length, self.name)
        except OSError as e:
            raise OSError(e.errno, f"{os.strerror(e.errno or 0)}: cannot reserve {length} "
                          "bytes of backing store (is /dev/shm full?)", self.name) from None
        finally:
            self._inflight.leave()

    def keep_on_drop(self) -> None:
        """Do not unlink the name on close / garbage collection."""
        self._unlink_flag[0] = False

    # -- teardown ----------------------------------------------------------------------------
    def unlink(self) -> None:
        """``shm_unlink(3)`` the name now (any handle may do this explicitly)."""
        self._unlink_flag[0] = False
        libc.shm_unlink(self.name)

    @staticmethod
    def unlink_id(id: str) -> None:
        """Remove the segment ``/{id}_m`` by id (``FileNotFoundError`` if absent)."""
        libc.shm_unlink(_shm.object_name("ShmMemory", id, _SUFFIX))

    def close(self) -> None:
        """Release the descriptor and, for the creator, the name.  Idempotent.

        Outstanding views stay valid: the pages are unmapped when the last one is released.
        """
        mapping, self._mapping = self._mapping, None
        # Not released: a caller may hold .buf itself, which stays valid like any other view.
        self._buf = None
        inflight: Optional[InFlight] = self.__dict__.get("_inflight")
        if inflight is None:
            self._release()
        else:
            inflight.close(self._release)  # after a reserve() running in another thread
        del mapping  # unmapped now unless a view still holds it

    def _release(self) -> None:
        fin, self._finalizer = self._finalizer, None
        if fin is not None:
            fin()  # unlinks (creator, same object) and closes the fd exactly once
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> ShmMemory:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        # Spawned children re-open by id (read-write, never the owner).
        self._check_open()
        # The id, not the name: open_readwrite("/X_m") would open "/X_m_m".
        return (ShmMemory.open_readwrite, (self.name[:-len(_SUFFIX)],))

    def __repr__(self) -> str:
        if self.closed:
            return f"<ShmMemory {self.name!r} closed>"
        mode = "read-only" if self._readonly else "read-write"
        role = "creator" if self._owner else "opener"
        unlink = "unlinks on close" if self._unlink_flag[0] else "keeps name"
        return f"<ShmMemory {self.name!r} size={self._size} {mode} {role} fd={self._fd} {unlink}>"
