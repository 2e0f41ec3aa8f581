"""The consumer side of ``ctshm.records``: :class:`RecordReader` takes slots from a ring and
hands out their records (parsed by :func:`ctshm._record_framing.split`).
"""

from __future__ import annotations

from itertools import chain
from typing import AsyncIterator, Generator, Iterator, Optional, cast

from ._record_framing import split
from .results import AccessResult
from .ring import ConsumerGuard, Crashed, Data, Finished, ProducerCrashed, ShmTraceRing

__all__ = ["RecordReader"]


class RecordReader:
    """Consumer side: iterate the records of successive slots until the ring is Finished.

    Iterating yields each record as a read-only memoryview (see the module docstring for how
    long it stays valid); :meth:`batches` yields one list of record views per slot.  Both
    end at ``Finished``, raise :class:`~ctshm.ring.ProducerCrashed` when the producer crashed
    (after every committed slot) and ``TimeoutError`` if one wait exceeds ``timeout``
    (default: wait without bound).  Leaving a loop early (``break``) releases the slot, and
    so does ``close()`` on the iterator.
    """

    __slots__ = ("_ring", "records_read", "slots_read", "timeout")

    def __init__(self, ring: ShmTraceRing, *, timeout: Optional[float] = None) -> None:
        self._ring = ring
        self.timeout = timeout
        self.records_read = 0
        self.slots_read = 0

    def __iter__(self) -> Iterator[memoryview]:
        # chain walks each slot's list in C: no generator frame is resumed per record.  The
        # slot is released when the next one is requested, or when the iterator is closed or
        # dropped (break), since batches() releases it in a finally.
        gen = self.batches()
        it = cast(_Records, _Records.from_iterable(gen))
        it._batches = gen
        return it

    def batches(self) -> Generator[list[memoryview], None, None]:
        """One list of record views per slot, in order; a list's views are valid until the
        next list is requested (they are released then)."""
        access = self._ring.access
        timeout = self.timeout
        while True:
            r = access(timeout)
            if type(r) is Data:
                g = r.guard
                records = None
                try:
                    records = self._take(g)
                    yield records
                finally:
                    _release(g, records)
            elif self._ended(r, timeout):
                return

    def _take(self, g: ConsumerGuard) -> list[memoryview]:
        """A slot's records as views, counted."""
        records = split(g.buf, g.index, self._ring.name)
        self.slots_read += 1
        self.records_read += len(records)
        return records

    def _ended(self, r: AccessResult, timeout: Optional[float]) -> bool:
        """True at Finished; ``ProducerCrashed`` on a crash, ``TimeoutError`` on a timeout."""
        if type(r) is Finished:
            return True
        if type(r) is Crashed:
            raise ProducerCrashed(r)
        raise TimeoutError(f"ring {self._ring.name!r}: no slot within {timeout} s")

    # -- asyncio (see ctshm.aio) ------------------------------------------------------------
    async def abatches(self) -> AsyncIterator[list[memoryview]]:
        """:meth:`batches` for asyncio: ``async for batch in reader.abatches():``."""
        from .aio import aaccess

        ring = self._ring
        timeout = self.timeout
        while True:
            r = await aaccess(ring, timeout)
            if type(r) is Data:
                g = r.guard
                records = None
                try:
                    records = self._take(g)
                    yield records
                finally:
                    _release(g, records)
            elif self._ended(r, timeout):
                return

    async def aiter(self) -> AsyncIterator[memoryview]:
        """``async for rec in reader.aiter():`` each record as a read-only memoryview (valid
        until the reader moves past its slot).  Ends at Finished; ``ProducerCrashed`` on a
        crash.  Leaving early releases the slot when the generator is closed
        (``contextlib.aclosing``, or when it is garbage-collected)."""
        batches = self.abatches()
        try:
            async for records in batches:
                for rec in records:
                    yield rec
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self.aiter()

    def __repr__(self) -> str:
        return (f"<RecordReader {self._ring.name!r} records={self.records_read} "
                f"slots={self.slots_read}>")


class _Records(chain):  # type: ignore[type-arg]
    """The records of successive slots (``next`` runs in C) with ``close()``, which releases
    the current slot at once."""

    _batches: Generator[list[memoryview], None, None]

    def close(self) -> None:
        self._batches.close()


def _release(g: ConsumerGuard, records: Optional[list[memoryview]]) -> None:
    """A batch is done: its record views (one exported further by the caller stays valid:
    the mapping outlives it), then its slot."""
    for v in records or ():
        try:
            v.release()
        except BufferError:
            pass
    g.release()
