"""ShmQueue's end of stream, dead-peer handling and introspection (a part of
ctshm/queue.py's class, split out for size): reaping a dead peer's claims -- WRITING ->
SKIP (its unfinished put is skipped), READING -> ORPHAN (its unfinished get is
redelivered) --, the same undo for a claim of ours that an exception interrupted, and
len/stats/slot states.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Sequence

from . import queue_layout as QL
from ._peers_table import PeersTable
from ._queue_io import _NOTHING
from .errors import PeersFull, QueueFinished

__all__ = ["PeersFull", "PeersMixin", "only_thread"]

_LS = QL.LAP_SHIFT
_W_ORPH = QL.W_ORPHANS
_W_FIN = QL.W_FINISHED
_W_PSLEEP = QL.W_P_SLEEP
_FULL, _READING, _WRITING, _SKIP, _ORPHAN = QL.FULL, QL.READING, QL.WRITING, QL.SKIP, QL.ORPHAN
_MASK64 = (1 << 64) - 1
HOUSEKEEPING = 0.5


def only_thread() -> bool:
    """Is this the process's only thread?  Then a slot holding this handle's claim word
    after an exception interrupted the claim's compare-exchange (CPython runs signal
    handlers right after a call returns, before its result is known) was claimed by this
    call: no sibling thread shares the handle's tag.  With other threads the claim word
    cannot tell (tests/test_queue_misuse_and_signals.py: the residual window, threads only)."""
    return threading.active_count() == 1


class PeersMixin:
    """housekeeping (reap dead peers), len, stats, slot_states for ShmQueue."""

    name: str
    capacity: int
    _v: Any
    _w0: int
    _sw: int
    _cas: Any
    _base: int
    _atomics: Any
    _peers: PeersTable
    _items: Any
    _space: Any
    _mapping: Any
    _stats: dict[str, int]
    _tag_cell: list[int]
    _tag: int
    _nput: int
    _ops: int
    _next_housekeeping: float
    _check_open: Callable[[str], None]
    _closed: bool
    get: Callable[..., bytes]
    _take: Callable[..., Any]
    _ready_put: Callable[[], bool]

    def _register(self) -> None:
        try:
            index, gen = self._peers.register()
        except PeersFull:
            raise PeersFull(f"ShmQueue {self.name!r}: all {self._peers.count} peer entries "
                            "belong to live processes; create the queue with a larger "
                            "max_peers") from None
        self._tag_cell[:] = [index, gen]
        self._tag = QL.owner_tag(index, gen)

    # -- dead peers -------------------------------------------------------------------------
    def housekeeping(self) -> int:
        """Reap dead peers: their unfinished puts are skipped, their unfinished gets are
        redelivered.  Runs by itself (after each sleep slice, and every ~0.5 s of a busy
        consumer); returns how many peers this call reaped."""
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING
        n = self._peers.reap(self._reap_slots)
        if n:
            self._stats["reaped"] += n
            self._atomics.fetch_add(self._base + 8 * QL.W_REAPED, n)
        return n

    def _reap_slots(self, index: int, gen: int) -> None:
        """Undo what dead peer (index, gen) held: WRITING -> SKIP, READING -> ORPHAN."""
        v, w0, sw, cas, base = self._v, self._w0, self._sw, self._cas, self._base
        tag = QL.owner_tag(index, gen)
        changed = False
        for i in range(self.capacity):
            wi = w0 + i * sw
            w = v[wi]
            if w & QL.OWNER_MASK != tag:
                continue
            st, lapbits = w & 7, w & ~((1 << _LS) - 1)
            if st == _WRITING and cas(base + 8 * wi, w, lapbits | _SKIP) == w:
                self._atomics.fetch_add(base + 8 * QL.W_SKIPPED, 1)
                changed = True
            elif st == _READING:
                self._atomics.fetch_add(base + 8 * _W_ORPH, 1)  # first: never under-counts
                if cas(base + 8 * wi, w, lapbits | _ORPHAN) == w:
                    self._atomics.fetch_add(base + 8 * QL.W_REDELIVERED, 1)
                    changed = True
                else:
                    self._atomics.fetch_add(base + 8 * _W_ORPH, _MASK64)
        if changed:
            self._items.wake_all()
            self._space.wake_all()

    def _drop_claim(self, wi: int, mine: int, word: int) -> None:
        """An exception left our claim ``mine`` of slot ``wi`` unfinished: if the slot is
        still ours (not yet published or released), store ``word``: SKIP for a put, ORPHAN
        for a get (the message goes back to the consumers; HEAD moved past it).  A live
        process's claim is never reaped, so without this the slot would block the queue."""
        v = self._v
        if v is None:  # closed meanwhile by another thread: the mapping is still there
            v = self._mapping.view().cast("Q")
        if v[wi] != mine:
            return
        if word & 7 == _ORPHAN:
            self._atomics.fetch_add(self._base + 8 * _W_ORPH, 1)  # first: never under-counts
        self._atomics.store(self._base + 8 * wi, word)
        self._atomics.fence()
        if not self._closed:
            self._items.wake_one()

    def _drop_claims(self, held: Sequence[int], words: Sequence[int]) -> None:
        """_drop_claim for each claim of a get: the slot ``held[j]`` still holding our claim
        word ``words[j]`` (not yet released) becomes ORPHAN: the message goes back."""
        for wi, w in zip(held, words):
            self._drop_claim(wi, w, (w & ~((1 << _LS) - 1)) | _ORPHAN)

    def __len__(self) -> int:
        """Messages committed and not yet taken (a snapshot)."""
        self._check_open("count messages")
        v, w0, sw = self._v, self._w0, self._sw
        return sum(1 for i in range(self.capacity)
                   if v[w0 + i * sw] & 7 in (_FULL, _ORPHAN))

    def qsize(self) -> int:
        return len(self)

    def empty(self) -> bool:
        return len(self) == 0

    def full(self) -> bool:
        return len(self) >= self.capacity

    def stats(self) -> dict[str, Any]:
        """This handle's counters and the queue's shared ones."""
        self._check_open("read stats")
        v = self._v
        d: dict[str, Any] = {"put": self._nput, "get": self._ops, **self._stats}
        d["wakeups"] = self._items.wakeups + self._space.wakeups
        d.update(queued=len(self), skipped=v[QL.W_SKIPPED], redelivered=v[QL.W_REDELIVERED],
                 reaped_total=v[QL.W_REAPED], finished=bool(v[_W_FIN]),
                 peers=len(self._peers.live()))
        return d

    def slot_states(self) -> list[str]:
        """Each slot's word, decoded (for `ctshm stat` and debugging)."""
        v, w0, sw = self._v, self._w0, self._sw
        return [QL.describe(v[w0 + i * sw]) for i in range(self.capacity)]

    # -- orphans and the end of stream ----------------------------------------------------
    def _nothing_at_head(self, into: Any) -> Any:
        """Nothing at HEAD: an orphan to redeliver, the end of the stream, or nothing.  First
        the idle wake: a producer asleep while the slot at TAIL is free (a release out of
        order, or before it slept, did not wake it: _released's room rule) is woken (model:
        MUT_NO_IDLE_WAKE)."""
        v = self._v
        if v[_W_PSLEEP] and self._ready_put():
            self._space.wake_one()
        if v[_W_ORPH]:
            r = self._take_orphan(into)
            if r is not _NOTHING:
                return r
        if v[_W_FIN] and self._all_empty():
            raise QueueFinished(f"ShmQueue {self.name!r} is finished and drained")
        return _NOTHING

    def _take_orphan(self, into: Any) -> Any:
        v, w0, sw = self._v, self._w0, self._sw
        for i in range(self.capacity):
            wi = w0 + i * sw
            w = v[wi]
            if w & 7 == _ORPHAN:
                # ORPHAN (5) -> READING (3) by us: clear bit 2, set bit 1 and our tag
                new = (w & ~7) | self._tag | _READING
                claimed = False
                try:
                    if self._cas(self._base + 8 * wi, w, new) != w:
                        continue
                    claimed = True
                    self._atomics.fetch_add(self._base + 8 * _W_ORPH, _MASK64)  # -= 1
                    return self._take(wi, w >> _LS, into)
                except BaseException:  # as in _try_get
                    if claimed or only_thread():
                        self._drop_claim(wi, new, w)  # w: the ORPHAN word we took
                    raise
        return _NOTHING

    def _all_empty(self) -> bool:
        v, w0, sw = self._v, self._w0, self._sw
        return all(not v[w0 + i * sw] & 7 for i in range(self.capacity))

    # -- end of stream ----------------------------------------------------------------------
    def finish(self) -> None:
        """End the stream: later puts raise QueueFinished; gets drain, then raise it."""
        self._check_open("finish")
        self._cas(self._base + 8 * _W_FIN, 0, 1)
        self._items.wake_all()
        self._space.wake_all()

    @property
    def finished(self) -> bool:
        return bool(self._v[_W_FIN]) if not self._closed else False

    def __iter__(self) -> Iterator[bytes]:
        """Messages until the end of the stream."""

        while True:
            try:
                yield self.get()
            except QueueFinished:
                return
