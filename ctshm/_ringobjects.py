"""The OS objects behind one ring handle, and their lifecycle (as trio's ``_FdHolder`` owns an
fd while ``FdStream`` owns the protocol).

:class:`RingObjects` holds the shm descriptor, the mapping, the two semaphores and the
identities that let an owner unlink only *its own* names.  The ring protocol
(``ShmTraceRing``) holds one of these and never closes a descriptor or a semaphore itself.

Lifecycle rules:

* Garbage collection of the ring releases everything (descriptor, semaphores, and, once the
  last view is gone, the mapping) and an owner unlinks its names.  The finalizers hold this
  holder, never the ring, so dropping the last reference to a ring frees it at once.
* At interpreter exit an owner's names are unlinked (nothing left in /dev/shm), but nothing
  is closed or unmapped: a guard or a view may still be reached by a ``__del__`` that runs
  later in the shutdown, and the process exit frees all of it anyway.
* In a forked child the finalizers do nothing: the names and handles are the parent's.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Optional, Union

from . import _liveness, _shm, _unread, layout as L, libc
from ._callgate import InFlight
from .errors import CorruptRingError
from .semaphore import NamedSemaphore, sem_file_identity

__all__ = ["RingObjects", "peek", "reserve_range", "sem_names"]


def sem_names(name: str) -> tuple[str, str]:
    """The ``filled`` and ``empty`` semaphore names of ring object ``name``."""
    return (name + L.FILLED_SUFFIX, name + L.EMPTY_SUFFIX)


class RingObjects:
    """fd, mapping, semaphores, identities and finalizers of one ring handle."""

    # Class defaults: a half-built holder releases cleanly.
    fd: int = -1
    mapping: Optional[_shm.Mapping] = None
    owner: bool = False
    identity: Optional[tuple[int, int]] = None
    sem_identity: tuple[Optional[tuple[int, int]], ...] = (None, None)
    mode: int = 0o600

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = os.getpid()
        self.sems: list[NamedSemaphore] = []
        self.inflight = InFlight()
        self._finalizers: list[weakref.finalize[Any, Any]] = []

    def arm(self, ring: object) -> None:
        """Release with ``ring`` (garbage collection); an owner also unlinks, at exit too."""
        release = weakref.finalize(ring, self._collected)
        release.atexit = False  # never at shutdown: see the module docstring
        self._finalizers.append(release)
        if self.owner:
            self._finalizers.append(weakref.finalize(ring, self._unlink_at_end))

    def _collected(self) -> None:
        # Never raises; nothing in a forked child.
        if os.getpid() != self.pid:
            return
        try:
            if self.owner:
                self.unlink_names()
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _unlink_at_end(self) -> None:
        if os.getpid() != self.pid:
            return
        try:
            self.unlink_names()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def release(self) -> None:
        """Close the semaphores and the descriptor; drop the mapping (unmapped when its last
        view is gone).  Idempotent.  Only when no call is in flight (see InFlight)."""
        for f in self._finalizers:
            f.detach()
        self._finalizers = []
        sems, self.sems = self.sems, []
        for s in sems:
            s.close()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        self.mapping = None

    def unlink_names(self) -> None:
        """Owner: remove the shm object and semaphores, unless a successor re-created them
        (identity check: a name must still refer to *our* object).  Once only."""
        if not self.owner or self.identity is None:
            return
        identity, self.identity = self.identity, None
        if _shm.name_identity(self.name) != identity:
            return
        unread = _unread.count(self.mapping)
        for s, ident in zip(sem_names(self.name), self.sem_identity):
            if ident is not None and sem_file_identity(s) not in (ident, None):
                continue  # a successor's semaphore
            NamedSemaphore.unlink_name(s)
        _shm.unlink_if_same(self.name, identity)
        _unread.removed(self.name, unread)

    # -- create / open -------------------------------------------------------------------
    @classmethod
    def made(cls, name: str, capacity: int, aligned: int, replace: Optional[bool],
             wait_mode: Optional[str], fast: bool, mode: int = 0o600) -> RingObjects:
        """A new ring's objects, this holder their owner: created (``O_EXCL``, after the
        ``replace`` policy), sized, reserved, mapped, header written, semaphores made; not
        yet ready (the ring stores ``STATE_READY`` once it is assembled).  On failure what
        was made is released and unlinked."""
        objs = cls(name)
        try:
            objs.create(replace, mode)
            objs.initialize(capacity, aligned, wait_mode, fast)
        except BaseException:
            objs.discard()
            raise
        return objs

    @classmethod
    def opened(cls, name: str, capacity: Optional[int], slot_size: Optional[int],
               wait_mode: Optional[str]) -> Union[RingObjects, str]:
        """One attempt at opening a ready ring: its objects, mapped, or why not yet
        (``"absent"``: no such object); raises if it never will be ready."""
        objs = cls(name)
        if not objs.open():
            return "absent"
        try:
            why = objs.try_ready(capacity, slot_size, wait_mode)
        except BaseException:
            objs.release()
            raise
        if why is not None:
            objs.release()
            return why
        return objs

    def discard(self) -> None:
        """Release everything and, as owner, unlink the names (a failed create)."""
        try:
            self.unlink_names()
        finally:
            self.release()

    def create(self, replace: Optional[bool], mode: int = 0o600) -> None:
        """Create the object (``O_EXCL``, after the ``replace`` policy) with permission bits
        ``mode`` (exactly: not masked by the umask): this holder owns it.  Then
        :meth:`initialize`; on failure :meth:`discard` releases and unlinks what exists."""
        name = self.name
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(f"ShmTraceRing {name!r}: mode must be permission bits from 0 to "
                             f"0o777 such as 0o600 (this user) or 0o660 (and its group), "
                             f"not {mode!r}")
        _handle_existing(name, replace)
        self.fd = _shm.create_exclusive(name, mode, "ring")
        self.owner = True
        self.identity = _shm.fd_identity(self.fd)
        os.fchmod(self.fd, mode)
        self.mode = mode

    def initialize(self, capacity: int, aligned: int, wait_mode: Optional[str],
                   fast: bool = False) -> None:
        """After :meth:`arm`: size, reserve, map and write the header, make the semaphores."""
        name = self.name
        total = L.ring_size(capacity, aligned)
        libc.ftruncate(self.fd, total, name)
        # Reserve what is about to be written (extension, crash message, length records):
        # on a full /dev/shm the first store would otherwise be a SIGBUS.
        reserve_range(self.fd, 0, L.LEN_OFF + 16 * capacity, name, "the ring header")
        self.map(total)
        assert self.mapping is not None
        hq = self.mapping.view(0, L.LEN_OFF).cast("Q")
        try:
            hq[L.CAPACITY] = capacity
            hq[L.SLOT_SIZE] = aligned
            hq[L.EXT_MAGIC] = L.MAGIC  # before the semaphores exist: see try_open()
            hq[L.EXT_VERSION] = L.VERSION
            hq[L.CREATOR_PID], hq[L.CREATOR_START] = _liveness.me()
            hq[L.NONCE] = int.from_bytes(os.urandom(8), "little")
            hq[L.LEN_RECORDS] = capacity
            hq[L.MODE] = L.MODE_FAST if fast else L.MODE_COMPAT
        finally:
            hq.release()
        # Stale semaphores of a dead ring: we hold the shm name exclusively, so any semaphore
        # under our names is a leftover (never a live ring's).
        filled, empty = sem_names(name)
        for s in (filled, empty):
            NamedSemaphore.unlink_name(s)
        mode = self.mode | 0o600  # the semaphores: the ring's readers and writers post
        self.sems.append(NamedSemaphore(filled, create=True, value=0, mode=mode,
                                        wait_mode=wait_mode))
        # Fast mode: both semaphores carry wake-ups only, so ``empty`` starts at 0 too.
        self.sems.append(NamedSemaphore(empty, create=True, value=0 if fast else capacity,
                                        mode=mode, wait_mode=wait_mode))
        self.sem_identity = tuple(s.identity() for s in self.sems)
        if libc.IS_LINUX and mode != 0o600:  # sem_open masks with the umask: set it exactly
            for s in (filled, empty):
                os.chmod(_shm.SHM_DIR + "/sem." + s.lstrip("/"), mode)

    def unlinked(self) -> bool:
        """Is this incarnation's name gone (unlinked by its owner's close, or replaced)?"""
        return self.fd >= 0 and os.fstat(self.fd).st_nlink == 0

    def open(self) -> bool:
        """``shm_open`` the existing object; False if there is none."""
        try:
            self.fd = libc.shm_open(self.name, libc.O_RDWR, 0)
        except FileNotFoundError:
            return False
        except PermissionError as e:
            raise PermissionError(e.errno, f"{e.strerror}: ring {self.name!r} is not readable "
                                  f"and writable by this user (uid {os.getuid()}): open it as "
                                  "its creator's user, or have it created with mode=0o660 "
                                  "(its group) or 0o666", self.name) from None
        return True

    def try_ready(self, capacity: Optional[int], slot_size: Optional[int],
                  wait_mode: Optional[str]) -> Optional[str]:
        """After :meth:`open` and :meth:`arm`: None once the ring is ready and mapped (both
        semaphores open), else why not yet; raises if it never will be."""
        name = self.name
        size = os.fstat(self.fd).st_size
        if size < L.HEADER_SIZE:
            return (f"the object is {size} bytes, smaller than a ring header "
                    f"({L.HEADER_SIZE}): not yet sized by its creator, or not a ring")
        hdr = _shm.Mapping(self.fd, L.LEN_OFF, writable=False, name=name)
        hq = hdr.view().cast("Q")
        try:
            is_ctshm = hq[L.EXT_MAGIC] == L.MAGIC
            if is_ctshm and hq[L.EXT_STATE] != L.STATE_READY:
                pid, start = int(hq[L.CREATOR_PID]), int(hq[L.CREATOR_START])
                if pid and not _liveness.is_alive(pid, start):  # pid 0: not written yet
                    raise FileNotFoundError(
                        2, f"ring {name!r} was left half-initialized by its creator (pid "
                        f"{pid}), which died: it will never become ready (create() replaces "
                        "it; `python -m ctshm rm` removes it)", name)
                return "the ctshm creator has not finished initializing"
            cap, slot = hq[L.CAPACITY], hq[L.SLOT_SIZE]
        finally:
            hq.release()
            del hdr
        if cap == 0 or slot == 0:
            if is_ctshm:  # a ready ctshm ring never has these: corrupt
                raise CorruptRingError(f"ring {name!r} header is corrupt: capacity={cap} "
                                       f"slot_size={slot}")
            return f"header not initialized (capacity {cap}, slot_size {slot})"
        if not is_ctshm:
            # Rust creator: shm_open, ftruncate, header, sem_unlink (stale), sem_open.  Until
            # it has re-created the semaphores, names from an older ring may still exist.
            fresh = _sems_fresh(name)
            if fresh is not None:
                return fresh
        problem = L.validate_geometry(name, cap, slot, size)
        if problem:
            raise CorruptRingError(problem)
        _check_expected(name, cap, slot, capacity, slot_size)
        try:
            for s in sem_names(name):
                self.sems.append(NamedSemaphore(s, wait_mode=wait_mode))
        except FileNotFoundError:
            return "semaphores not created yet"
        self.map(size)
        return None

    def map(self, total: int) -> None:
        self.mapping = m = _shm.Mapping(self.fd, total, writable=True, name=self.name)
        if libc.IS_LINUX:
            libc.madvise(m.addr, total, libc.MADV_HUGEPAGE)  # advisory, as the original


def reserve_range(fd: int, offset: int, length: int, name: str, what: str) -> None:
    """``posix_fallocate`` ``[offset, offset+length)``: ENOSPC now instead of SIGBUS later."""
    try:
        libc.posix_fallocate(fd, offset, length, name)
    except OSError as e:
        raise OSError(e.errno, f"{os.strerror(e.errno or 0)}: cannot reserve {length} bytes "
                      f"for {what} (is /dev/shm full?)", name) from None


def _check_expected(name: str, cap: int, slot: int, capacity: Optional[int],
                    slot_size: Optional[int]) -> None:
    if capacity is not None and capacity != cap:
        raise ValueError(f"ring {name!r} has capacity {cap}, not {capacity}")
    if slot_size is not None and L.aligned_slot_size(slot_size) != slot:
        raise ValueError(f"ring {name!r} has slot_size {slot} (2 MiB-aligned), which "
                         f"slot_size={slot_size} ({L.aligned_slot_size(slot_size)} aligned) "
                         "does not match")


def _handle_existing(name: str, replace: Optional[bool]) -> None:
    """The ``replace`` policy of ``create``: None replaces only a ctshm ring whose creator is
    dead, True always (the Rust original's behaviour), False never."""
    if replace is False:
        return
    if replace is None:
        info = peek(name)
        if info is None or not info.get("ctshm") or info.get("creator_alive", True):
            return  # absent, not ours, or alive: O_EXCL decides
    _shm.unlink_quietly(name)
    for s in sem_names(name):
        NamedSemaphore.unlink_name(s)


def _sems_fresh(name: str) -> Optional[str]:
    """None if both semaphores exist and (Linux) were born after the ring object.

    The Rust creator runs shm_open, ftruncate, header init, sem_unlink (stale names), sem_open;
    until it has re-created the semaphores, names left by an older ring may still exist and
    an opener that used them would deadlock.  tmpfs records each file's birth time (statx), so
    a semaphore born before the ring object is such a leftover: keep waiting.  (ctime does
    not work: tmpfs updates the ring's ctime whenever a new page is first written.)
    """
    if not libc.IS_LINUX:
        return None  # cannot tell: sem_open decides
    ring_birth = libc.birth_time_ns(_shm.SHM_DIR + "/" + name[1:])
    for s in sem_names(name):
        path = _shm.SHM_DIR + "/sem." + s[1:]
        if not os.path.exists(path):
            return f"semaphore {s!r} not created yet"
        born = libc.birth_time_ns(path)
        if ring_birth is not None and born is not None and born < ring_birth:
            return f"semaphore {s!r} is older than the ring object (a leftover)"
    return None


def peek(name: str) -> Optional[dict[str, Any]]:
    """Read an existing ring's header without opening it as a ring (None if absent)."""
    return _shm.read_existing(name, lambda fd: _peek_fd(fd, name))


def _peek_fd(fd: int, name: str) -> dict[str, Any]:
    size = os.fstat(fd).st_size
    info: dict[str, Any] = {"size": size}
    if size < L.HEADER_SIZE:
        return info
    m = _shm.Mapping(fd, L.LEN_OFF, writable=False, name=name)
    hq = m.view().cast("Q")
    try:
        info["ctshm"] = hq[L.EXT_MAGIC] == L.MAGIC
        pid, start = int(hq[L.CREATOR_PID]), int(hq[L.CREATOR_START])
        info["creator_pid"] = pid
        info["creator_alive"] = _liveness.is_alive(pid, start) if info["ctshm"] else True
    finally:
        hq.release()
    return info
