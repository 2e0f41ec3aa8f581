"""Who the ring's producer and consumer are, and whether they are alive: the liveness policy
in one place.

Each side registers itself in the ctshm extension as a (pid, start time) pair - the start
time (``_liveness``) guards against pid reuse - on its first ``acquire``/``access``, or is
registered in advance by its parent (``expect_producer``/``expect_consumer``; the Rust
original registers nothing, so this is how its death is seen).  The pair is written pid 0,
start, pid, so a reader that sees the same non-zero pid before and after reading start has a
consistent pair.

Policy:

* A second live process may not register for a side that has a live registered process
  (``RuntimeError``): one producer process, one consumer process.
* A registered process that is dead may be replaced.  A consumer that replaces a dead one
  rewinds ``reserved_idx`` to ``read_idx`` and re-posts their tokens (done by the ring: the
  slots the dead consumer held are delivered again, at-least-once across a restart).
* A consumer unregisters when its last registered handle in the process closes with every
  slot it took released (nothing to deliver again).  The producer stays registered: its
  death after a close without ``mark_finished`` must still reach the consumer.
* Tentative producer record: a process that *opens* a ring (it did not create it) writes
  ``pid | TENTATIVE`` into the producer's pid word while that word is 0 (one
  compare-exchange; the start word is not used).  It is the producer-to-be: if it dies
  before its first ``acquire``/``put`` the consumer is told, like for any producer death.
  Its first ``acquire`` makes the record firm; any process's firm registration replaces a
  tentative record (alive or not); a consumer is never taken for its own record's
  producer (it is alive); a handle closed normally withdraws it (compare-exchange back to
  0: a record someone replaced meanwhile is untouched).  A Rust producer registers nothing
  and is unaffected; ``ctshm stat`` only reads.
* Waiters check the peer between wait slices (``LIVENESS_SLICE``): a consumer reports
  ``Crashed`` (signal 0, ``pid``) once the producer is dead, a producer raises
  ``ConsumerGone`` once the consumer is dead.

The functions take the ring's word accessors (``load(word)``, ``store(word, value)``), so
they follow whatever ordering the ring binds (plain on x86_64, atomics elsewhere).
"""

from __future__ import annotations

import os
from typing import Callable

from . import _liveness
from .layout import MSG_OFF, PRODUCER_TENTATIVE

__all__ = ["TENTATIVE", "attach", "check_pid", "dead", "detach", "live_other", "pid_of",
           "register", "set_pair", "unregister"]

#: Flag in a producer pid word: the record of an opener that has not produced yet.
TENTATIVE = PRODUCER_TENTATIVE

Load = Callable[[int], int]
Store = Callable[[int, int], None]
Cas = Callable[[int, int, int], int]  # (address, expected, new) -> the old value


def pid_of(value: int) -> int:
    """The pid in a pid word (without the ``TENTATIVE`` flag)."""
    return value & ~TENTATIVE


def attach(load: Load, cas: Cas, base: int, word: int) -> None:
    """An opener's tentative producer record at ``word`` of the header mapped at ``base``,
    if no producer is registered."""
    if not load(word):
        cas(base + 8 * word, 0, os.getpid() | TENTATIVE)


def detach(cas: Cas, base: int, word: int) -> None:
    """Withdraw this process's tentative record (nothing if it was replaced): its last
    handle closed normally (a ``with`` block left by an exception keeps it)."""
    cas(base + 8 * word, os.getpid() | TENTATIVE, 0)


def death_note(load: Load, word: int, pid: int) -> bytes:
    """The crash message a consumer records for the dead producer ``pid`` at ``word``: b""
    if it left a note itself (``ctshm._exitnote``: kept), else what is known - an opener
    that never produced, a child's exit status - or b"" (unknown)."""
    if load(MSG_OFF // 8) & 0xFFFFFFFF:  # the u32 length of a note (little-endian)
        return b""
    if load(word) & TENTATIVE:
        return f"producer pid {pid} opened the ring and ended before its first put()".encode()
    how = _liveness.exit_status(pid)
    return f"producer pid {pid} {how}".encode() if how else b""


def set_pair(store: Store, word: int, pid: int, start: int) -> None:
    """Publish (pid, start) at ``word``/``word + 1``: pid 0 while changing, start, pid."""
    store(word, 0)
    store(word + 1, start)
    store(word, pid)


def dead(load: Load, word: int) -> int:
    """The registered process's pid if it is dead, else 0 (alive, none, or changing)."""
    pid = load(word)
    if not pid:
        return 0
    if pid & TENTATIVE:  # an opener's record: no start time, the pid alone
        return 0 if _liveness.is_alive(pid & ~TENTATIVE) else pid & ~TENTATIVE
    start = load(word + 1)
    if load(word) != pid or _liveness.is_alive(pid, start):
        return 0
    return pid


def alive(load: Load, word: int) -> bool:
    """Is a process registered at ``word`` and alive (this process included)?"""
    pid = load(word)
    return bool(pid) and not dead(load, word)


def live_other(load: Load, word: int) -> int:
    """The registered process's pid if it is alive and not this process, else 0 (none, this
    process, dead, or changing).  Loads and ``kill(pid, 0)`` / a ``/proc`` read only: no
    lock, so ``notify_crash`` may call it from a signal handler."""
    pid = load(word)
    if not pid or pid == os.getpid() or pid & TENTATIVE:
        return 0
    start = load(word + 1)
    if load(word) != pid or not _liveness.is_alive(pid, start):
        return 0
    return pid


def register(load: Load, store: Store, word: int, ring: str, role: str) -> int:
    """Register this process at ``word``.  Returns the pid of a dead process it replaced
    (0 if none); ``RuntimeError`` if another live process holds the role."""
    pid, start = _liveness.me()
    old = load(word)
    replaced = 0
    if old & TENTATIVE:
        old = 0  # an opener's record: replaced, alive or not
    if old and old != pid:
        if _liveness.is_alive(old, load(word + 1)):
            other = ("ctshm.ShmQueue (many producers)" if role == "producer" else
                     "ctshm.ShmQueue (many consumers) or ctshm.ShmBroadcast (many readers)")
            raise RuntimeError(f"ring {ring!r} already has a live {role} (pid {old}); a ring "
                               f"has exactly one {role} process, so several processes (the "
                               f"workers of a multiprocessing.Pool, say) cannot share that "
                               f"role: give each its own ring, or use {other}")
        replaced = old
    set_pair(store, word, pid, start)
    return replaced


def unregister(load: Load, store: Store, word: int) -> None:
    """Clear the registration at ``word`` if it still names this process (a handle that
    closes; a successor's registration is never touched)."""
    if load(word) == os.getpid():
        set_pair(store, word, 0, 0)


def check_pid(ring: str, what: str, pid: object) -> int:
    """``pid`` as a process id, or a ``ValueError`` naming the call and the value."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < (1 << 31):
        raise ValueError(f"ring {ring!r}: {what}(pid) needs a process id (an int "
                         f"1..2**31-1), not {pid!r}")
    return pid
