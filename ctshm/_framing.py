"""Record framing inside a slot, and the consumer side of ``ctshm.records``: the parser
(:func:`_split`, pure: a guard's view in, record views out) and :class:`RecordReader`.

The framing is drawn in ``ctshm.records``' module docstring (and summarized in
``ctshm.layout``); the writer is ``ctshm.records.RecordWriter``.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import AsyncIterator, Final, Generator, Iterator, Optional, cast

from .results import AccessResult
from .ring import (
    ConsumerGuard,
    CorruptRingError,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    ShmTraceRing,
)

__all__ = ["RECORD_HEADER", "SLOT_HEADER", "RecordReader"]

#: Bytes before the first record of a slot (u32 count + u32 reserved).
SLOT_HEADER: Final = 8
#: Bytes before each record's payload (u32 length + u32 reserved).
RECORD_HEADER: Final = 8

_PAIR: Final = struct.Struct("<II")
_pack_pair = _PAIR.pack_into
_U32: Final = struct.Struct("<I")
_unpack_u32 = _U32.unpack_from


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
        records = _split(g, self._ring.name)
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


def _split(guard: ConsumerGuard, name: str) -> list[memoryview]:
    """The record views of one slot, after checking every record lies inside the slot."""
    buf = guard.buf
    size = len(buf)
    if size < SLOT_HEADER:
        raise CorruptRingError(f"ring {name!r}: message {guard.index} has {size} bytes, too "
                               "short for a record slot header (8 bytes)")
    count = _unpack_u32(buf, 0)[0]
    out: list[memoryview] = []
    append = out.append
    off = SLOT_HEADER
    try:
        for _ in range(count):
            end = off + RECORD_HEADER + _unpack_u32(buf, off)[0]  # struct.error past the end
            if end > size:
                break
            append(buf[off + RECORD_HEADER:end])
            off = (end + 7) & ~7
        else:
            return out
    except struct.error:
        pass
    for v in out:
        v.release()
    raise _truncated(name, guard.index, len(out), count, size)


def _truncated(name: str, index: int, k: int, count: int, size: int) -> CorruptRingError:
    return CorruptRingError(
        f"ring {name!r}: message {index} announces {count} records but record {k} ends "
        f"beyond its {size} committed bytes (not a RecordWriter slot, or corrupt)")


#: A linger bound must be below this: the flusher's wait cannot be longer (threading.TIMEOUT_MAX
#: is ~9.2e9 s), and it is the bound of a finite timeout in ``check_timeout``.
_LINGER_MAX: Final = 1e9


def check_linger(linger: Optional[float], where: str) -> Optional[float]:
    """``linger=`` as a float (or None), for the error messages of ``where``."""
    if linger is None:
        return None
    if isinstance(linger, bool) or not isinstance(linger, (int, float)):
        raise TypeError(f"{where}: linger must be a number of seconds or None, not "
                        f"{type(linger).__name__}")
    if not (linger >= 0 and linger < _LINGER_MAX):  # NaN fails; 2**1024 is an int here
        shown = repr(linger) if len(repr(linger)) < 30 else f"{repr(linger)[:20]}..."
        raise ValueError(f"{where}: linger must be a finite number of seconds >= 0 and below "
                         f"{_LINGER_MAX:.0e} (or None: no time bound), not {shown}")
    return float(linger)


def _release(g: ConsumerGuard, records: Optional[list[memoryview]]) -> None:
    """A batch is done: its record views (one exported further by the caller stays valid:
    the mapping outlives it), then its slot."""
    for v in records or ():
        try:
            v.release()
        except BufferError:
            pass
    g.release()
