"""A segment's owner record: ``/X_m_owner``, a tiny companion object next to ``/X_m``.

A segment's bytes are the user's, shared byte for byte with the Rust original, so unlike a
ring it has no header to name its creator in.  A ctshm creator records itself in a
companion shm object instead (64 bytes, u64 little-endian words)::

    offset 0 ┌──────────────── /X_m_owner ──────────────────────────────────────────────┐
           0 │ magic    u64  b"CTSHMOW1" (written first)                               │
           8 │ pid      u64  │ 16 start u64: the creator, pid + start time (_liveness) │
             │               start is written first, then pid (read with read_peer)    │
          24 │ seg_dev  u64  │ 32 seg_ino u64: (st_dev, st_ino) of the segment this    │
             │               record describes; 0, 0 until the segment exists           │
          40 │ zero up to 64                                                           │
             └──────────────────────────────────────────────────────────────────────────┘

Rules (``ShmMemory`` creates and removes; ``ctshm.ops`` and ``create``'s replace policy read):

* Made **before** the segment (``O_EXCL``: it is the creation lock too), the segment's
  identity written into it once the segment exists; removed **after** the segment.  So a
  crash anywhere leaves either nothing, a record alone, or a segment with a record naming a
  dead creator: each is something ``gc`` removes.
* A record *describes* ``/X_m`` if it holds that object's identity, or no identity yet (its
  creator is between the two creates, or died there).  Only a record that describes the
  segment makes its creator known; a segment without one (made by the Rust original, kept
  with ``keep_on_drop()``) has an unknown owner: never replaced, never collected without
  ``--include-unknown``.
* A record that describes no existing segment (:func:`lone_verdict`) is garbage if its
  segment was made (it is gone or was replaced) or its creator is dead; while its live
  creator has not made the segment yet it is a creation in progress.
"""

from __future__ import annotations

import os
from typing import Final, NamedTuple, Optional

from . import _liveness, _shm, libc
from .layout import read_peer

__all__ = ["SUFFIX", "Record", "create", "describes", "lone_verdict", "read", "remove_for"]

#: Appended to the segment's name: ``/X_m`` -> ``/X_m_owner``.
SUFFIX: Final = "_owner"
SIZE: Final = 64
MAGIC: Final = int.from_bytes(b"CTSHMOW1", "little")
_MAGIC, _PID, _START, _DEV, _INO = range(5)  # word indices

Identity = tuple[int, int]


class Record(NamedTuple):
    """One reading of an owner record."""

    name: str
    identity: Identity  # of the record object itself
    pid: int  # 0: not readable or not written yet (owner unknown)
    start: int
    segment: Optional[Identity]  # the segment it describes; None: not made yet

    def alive(self) -> bool:
        return bool(self.pid) and _liveness.is_alive(self.pid, self.start)


def create(name: str, mode: int) -> tuple[Record, _shm.Mapping]:
    """Create the record ``name`` (``O_EXCL``) naming this process; the record and its
    mapping, for :func:`bind`.  ``FileExistsError`` if it exists; ``OSError(ENOSPC)`` if
    /dev/shm cannot hold its page (reserved before it is written: never SIGBUS)."""
    fd = _shm.create_exclusive(name, mode, "owner record")
    try:
        identity = _shm.fd_identity(fd)
        try:
            libc.ftruncate(fd, SIZE, name)
            libc.posix_fallocate(fd, 0, SIZE, name)
            m = _shm.Mapping(fd, SIZE, writable=True, name=name)
        except BaseException:
            _shm.unlink_if_same(name, identity)
            raise
    finally:
        os.close(fd)
    hq = m.view().cast("Q")
    try:
        hq[_MAGIC] = MAGIC
        pid, start = _liveness.me()
        hq[_START] = start  # then the pid (0 until now): the order of _peers.set_pair
        hq[_PID] = pid
    finally:
        hq.release()
    return Record(name, identity, pid, start, None), m


def bind(m: _shm.Mapping, segment: Identity) -> None:
    """Write the identity of the segment the record describes (once it exists)."""
    hq = m.view().cast("Q")
    try:
        hq[_DEV], hq[_INO] = segment
    finally:
        hq.release()


def read(name: str) -> Optional[Record]:
    """The record ``name`` (None if there is none).  One that cannot be read or is not
    written yet has ``pid`` 0."""
    try:
        fd = libc.shm_open(name, libc.O_RDONLY, 0)
    except FileNotFoundError:
        return None
    except OSError:  # another user's, say: it exists, its owner is unknown to us
        ident = _shm.name_identity(name) or (0, 0)
        return Record(name, ident, 0, 0, None)
    try:
        identity = _shm.fd_identity(fd)
        if os.fstat(fd).st_size < SIZE:
            return Record(name, identity, 0, 0, None)
        m = _shm.Mapping(fd, SIZE, writable=False, name=name)
    finally:
        os.close(fd)
    hq = m.view().cast("Q")
    try:
        if hq[_MAGIC] != MAGIC:
            return Record(name, identity, 0, 0, None)
        (pid, start), _ = read_peer(hq, _PID)
        seg = (int(hq[_DEV]), int(hq[_INO]))
    finally:
        hq.release()
    return Record(name, identity, pid, start, seg if seg != (0, 0) else None)


def describes(rec: Optional[Record], segment: Optional[Identity]) -> bool:
    """Does ``rec`` name the creator of the segment ``segment`` (see the module docstring)?"""
    if rec is None or not rec.pid or segment is None:
        return False
    return rec.segment is None or rec.segment == segment


def lone_verdict(rec: Record) -> tuple[Optional[bool], str]:
    """A record that describes no existing segment: (garbage?, why); None: unknown (its
    creator is not recorded: being written, or not readable)."""
    if not rec.pid:
        return None, "owner record without a creator (being written, or not ctshm's)"
    if rec.segment is not None:
        return True, f"its segment is gone (creator pid {rec.pid})"
    if rec.alive():
        return False, f"creator pid {rec.pid} is alive, creating its segment"
    return True, f"creator pid {rec.pid} died before making its segment"


def remove(rec: Record) -> bool:
    """Unlink the record ``rec`` read, unless its name now refers to another object."""
    return _shm.unlink_if_same(rec.name, rec.identity)


def remove_for(segment_name: str, segment: Optional[Identity]) -> Optional[str]:
    """After ``segment_name`` (whose identity was ``segment``) was removed: remove the record
    that described it, or that is garbage now; its name if removed."""
    rec = read(segment_name + SUFFIX)
    if rec is None:
        return None
    if not describes(rec, segment) and lone_verdict(rec)[0] is not True:
        return None
    return rec.name if remove(rec) else None
