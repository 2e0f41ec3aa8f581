"""``ShmMemory``: a plain POSIX shared memory segment, as in the Rust original.

Lifecycles, same names as the original (object ``/{id}_m``):

* :meth:`ShmMemory.create_readonly` creates the object (``shm_open(O_CREAT|O_EXCL)``), sizes
  it with ``ftruncate`` and maps it **read-only**.  The creator unlinks the name on
  :meth:`close` or garbage collection unless :meth:`keep_on_drop` was called.
* :meth:`ShmMemory.create_readwrite`: the same, mapped read-write (the stdlib's
  ``SharedMemory(create=True)`` habit; not in the Rust original).
* :meth:`ShmMemory.open_readwrite` opens an existing object and maps it read-write; it never
  unlinks.

A creator records itself (pid + start time) in the owner record ``/{id}_m_owner``
(``ctshm._owner_record``: the segment's own bytes are the user's, shared with the Rust
original), made before the segment and removed after it.  It tells ``python -m ctshm ls``
who made the segment and ``gc`` when that creator is dead; ``create_*`` replaces a dead
creator's segment (``replace=None``, the rule rings follow) and refuses a live creator's or
an unrecorded one (the Rust original's, one kept with :meth:`keep_on_drop`).

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

import errno
import os
import weakref
from typing import Any, Final, Optional

from . import _owner_record, _shm, _shmdir, libc
from ._callgate import InFlight
from .layout import SEGMENT_SUFFIX

__all__ = ["ShmMemory"]

_SUFFIX: Final = SEGMENT_SUFFIX


def _check_flag(name: str, what: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"ShmMemory {name!r}: {what}= must be True or False, not {value!r}")


def _finalize(fd: int, name: str, identity: Optional[tuple[int, int]], pid: int,
              unlink: list[bool], record: list[Optional[_owner_record.Record]]) -> None:
    # Never raises; nothing at all in a forked child.  The segment first, then its owner
    # record (a crash between leaves a record alone: garbage that gc removes).
    if os.getpid() != pid:
        return
    try:
        if unlink[0]:
            _shm.unlink_if_same(name, identity)
        rec, record[0] = record[0], None
        if rec is not None:
            _owner_record.remove(rec)
    except Exception:  # pragma: no cover
        pass
    try:
        os.close(fd)
    except OSError:  # pragma: no cover
        pass


def _make_room(name: str, replace: Optional[bool]) -> None:
    """The ``replace`` policy of ``create_*`` (see :meth:`ShmMemory.create_readonly`): clear
    what may be replaced, raise ``FileExistsError`` for what may not."""
    rec_name = name + _owner_record.SUFFIX
    if replace:
        _shm.unlink_quietly(name)
        _shm.unlink_quietly(rec_name)
        return
    seg = _shm.name_identity(name)
    rec = _owner_record.read(rec_name)
    if seg is not None:
        owner = rec if _owner_record.describes(rec, seg) else None
        if replace is None and owner is not None and not owner.alive():
            _shm.unlink_if_same(name, seg)  # a dead creator's: replaced, as a ring is
            _owner_record.remove(owner)
            return
        raise _exists_error(name, owner, replace)
    if rec is not None and _owner_record.lone_verdict(rec)[0]:
        _owner_record.remove(rec)  # garbage: its segment is gone, or its creator died


def _create_record(name: str, mode: int, replace: Optional[bool]
                   ) -> tuple[_owner_record.Record, _shm.Mapping]:
    try:
        return _owner_record.create(name + _owner_record.SUFFIX, mode)
    except FileExistsError:  # a creation in progress, or a record nobody can judge
        rec = _owner_record.read(name + _owner_record.SUFFIX)
        raise _exists_error(name, rec, replace, creating=True) from None


def _exists_error(name: str, owner: Optional[_owner_record.Record], replace: Optional[bool],
                  creating: bool = False) -> FileExistsError:
    """``FileExistsError`` for ``create_*`` over ``name``: whose it is and what to do."""
    rm = f"`python -m ctshm rm {name}`"
    if creating and not (owner is not None and owner.alive()):
        rec = name + _owner_record.SUFFIX
        return FileExistsError(errno.EEXIST, f"{os.strerror(errno.EEXIST)}: shared memory "
                               f"segment {name!r} cannot be created: its owner record {rec!r} "
                               "exists and names no live creator (being written, or not "
                               f"ctshm's): remove it with `python -m ctshm rm {rec}`, or pass "
                               "replace=True", name)
    if replace is False:
        why, todo = "exists (replace=False)", (f"remove it with {rm}, or pass replace=True "
                                               "(or None: replace it if its creator is dead)")
    elif owner is not None and owner.pid and owner.alive():
        doing = "is being created" if creating else "exists and its creator"
        why = f"{doing} (pid {owner.pid}){'' if creating else ' is alive'}"
        todo = (f"open it with ShmMemory.open_readwrite({name[1:-len(_SUFFIX)]!r}), or let "
                f"its creator close it first; `python -m ctshm rm --force {name}` removes it "
                "anyway, replace=True replaces it")
    else:
        why = ("exists and has no owner record (made by the Rust original, or kept with "
               "keep_on_drop(), so nobody can tell whether its creator lives)")
        todo = (f"remove it with {rm} (or `python -m ctshm gc --include-unknown`), or pass "
                "replace=True")
    return FileExistsError(errno.EEXIST, f"{os.strerror(errno.EEXIST)}: shared memory segment "
                           f"{name!r} {why}: {todo}", name)


def _unlink_segment(name: str) -> None:
    seg = _shm.name_identity(name)
    libc.shm_unlink(name)
    _owner_record.remove_for(name, seg)


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
        # The owner record this creator made (``_owner_record``), until it is removed.
        self._record: list[Optional[_owner_record.Record]] = [None]
        self._inflight = InFlight()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create_readonly(cls, id: str, size: int, *, replace: Optional[bool] = None,
                        mode: int = 0o600, reserve: bool = False) -> ShmMemory:
        """Create ``/{id}_m`` of ``size`` bytes (sparse) and map it read-only.

        ``replace``: what to do if the name exists.  ``None`` (default) replaces it only when
        its owner record names a creator that is dead (as a ring is replaced); ``True``
        always replaces (the Rust original's behaviour: the old name is unlinked first, its
        users keep their mapping); ``False`` never.  Otherwise ``FileExistsError`` says who
        holds it and what to do.  ``reserve=True`` reserves backing store for all of it
        first (see the module docstring: ENOSPC now rather than SIGBUS on a first touch).
        """
        return cls._create(id, size, replace, mode, reserve, writable=False)

    @classmethod
    def create_readwrite(cls, id: str, size: int, *, replace: Optional[bool] = None,
                         mode: int = 0o600, reserve: bool = False) -> ShmMemory:
        """Create ``/{id}_m`` like :meth:`create_readonly`, but map it read-write: the
        creator writes, others open it (``open_readwrite``).  Same naming, ownership (the
        creator unlinks on close), replace policy and sparse semantics."""
        return cls._create(id, size, replace, mode, reserve, writable=True)

    @classmethod
    def _create(cls, id: str, size: int, replace: Optional[bool], mode: int, reserve: bool,
                writable: bool) -> ShmMemory:
        name = _shm.object_name("ShmMemory", id, _SUFFIX)
        # The owner record's name must fit as well: a creator's id is 6 bytes shorter than
        # the longest one open_readwrite takes (a Rust-made segment's).
        _shm.object_name("ShmMemory", id, _SUFFIX + _owner_record.SUFFIX)
        size = _shm.check_size("ShmMemory", size)
        if replace is not None and not isinstance(replace, bool):
            raise TypeError(f"ShmMemory {name!r}: replace= must be None (replace a dead "
                            f"creator's segment), True or False, not {replace!r}")
        _check_flag(name, "reserve", reserve)
        # Sparse: a warning, not a refusal; stacklevel 4 is the caller of create_*.
        _shmdir.check_free("ShmMemory", name, size, _shmdir.SPARSE_SEGMENT, 4)
        self = cls(_token=_MAKE)
        self.name = name
        _make_room(name, replace)
        record, rec_map = _create_record(name, mode, replace)
        self._record[0] = record
        self._owner = True
        try:
            self._fd = _shm.create_exclusive(name, mode, "shared memory segment")
        except FileExistsError:  # made since _make_room looked (by a Rust peer, say)
            _owner_record.remove(record)
            raise _exists_error(name, None, replace) from None
        except BaseException:
            _owner_record.remove(record)
            raise
        self._unlink_flag[0] = True
        self._identity = _shm.fd_identity(self._fd)
        self._arm_finalizer()
        try:
            _owner_record.bind(rec_map, self._identity)
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
                                           os.getpid(), self._unlink_flag, self._record)

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
        """Do not unlink the name on close / garbage collection.

        The segment then outlives its creator, which will not remove it: its owner record is
        removed now, so it counts as a segment of unknown owner (as a Rust-made one):
        ``create`` never replaces it by default, and ``python -m ctshm gc`` removes it only
        with ``--include-unknown`` once no process uses it.
        """
        self._unlink_flag[0] = False
        rec = self._record[0]
        if rec is not None and rec.pid == os.getpid():  # not in a forked child
            self._record[0] = None
            _owner_record.remove(rec)

    # -- teardown ----------------------------------------------------------------------------
    def unlink(self) -> None:
        """``shm_unlink(3)`` the name now, and its owner record (any handle may do this
        explicitly)."""
        self._unlink_flag[0] = False
        _unlink_segment(self.name)

    @staticmethod
    def unlink_id(id: str) -> None:
        """Remove the segment ``/{id}_m`` by id, and its owner record (``FileNotFoundError``
        if absent)."""
        _unlink_segment(_shm.object_name("ShmMemory", id, _SUFFIX))

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
