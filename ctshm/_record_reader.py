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
        # dropped (break), since batches() releases it when its `with` block exits.
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
            with _Batch(self, access(timeout), timeout) as records:
                if records is None:
                    return
                yield records

    # -- asyncio (see ctshm.aio) ------------------------------------------------------------
    async def abatches(self) -> AsyncIterator[list[memoryview]]:
        """:meth:`batches` for asyncio: ``async for batch in reader.abatches():``."""
        from .aio import aaccess

        ring = self._ring
        timeout = self.timeout
        while True:
            with _Batch(self, await aaccess(ring, timeout), timeout) as records:
                if records is None:
                    return
                yield records

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


class _Batch:
    """``with _Batch(reader, r, timeout) as records:`` the records of access result ``r``'s
    slot, counted; None at Finished (``ProducerCrashed`` on a crash, ``TimeoutError`` on a
    timeout).  On exit the record views are released (one exported further by the caller
    stays valid: the mapping outlives it), then the slot; a slot that does not parse is
    released at once."""

    __slots__ = ("_guard", "_records")

    def __init__(self, reader: RecordReader, r: AccessResult, timeout: Optional[float]) -> None:
        self._guard: Optional[ConsumerGuard] = None
        self._records: Optional[list[memoryview]] = None
        if type(r) is Data:
            g = self._guard = r.guard
            try:
                records = self._records = split(g.buf, g.index, reader._ring.name)
            except BaseException:
                g.release()
                raise
            reader.slots_read += 1
            reader.records_read += len(records)
        elif type(r) is Crashed:
            raise ProducerCrashed(r)
        elif type(r) is not Finished:
            raise TimeoutError(f"ring {reader._ring.name!r}: no slot within {timeout} s")

    def __enter__(self) -> Optional[list[memoryview]]:
        return self._records

    def __exit__(self, *exc: object) -> None:
        g = self._guard
        if g is None:
            return
        for v in self._records or ():
            try:
                v.release()
            except BufferError:
                pass
        g.release()
