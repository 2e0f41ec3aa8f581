"""Many small variable-length records packed into one ring slot.

A ring slot is 2 MiB or more; sending one 64-byte message per slot pays the whole per-slot
protocol (two semaphore operations and the header updates on each side) for 64 bytes.
:class:`RecordWriter` packs many records into the slot it holds and publishes the slot when
it is full, when ``max_bytes`` is reached, on :meth:`RecordWriter.flush` or on
:meth:`RecordWriter.close`; :class:`RecordReader` hands the records back, in order, as
zero-copy read-only memoryviews.

Slot framing (all integers little-endian; every offset below is from the start of the slot)::

    offset 0   u32 record_count   number of records in the slot (>= 1)
    offset 4   u32 reserved       0 (writers write 0, readers ignore it)
    offset 8   record 0
               record 1           each record starts at an offset that is a multiple of 8
               ...
    record  =  u32 length         payload bytes (0 allowed)
               u32 reserved       0 (writers write 0, readers ignore it)
               payload            ``length`` bytes, starting 8-aligned (record offset + 8)
               pad                0..7 bytes up to the next multiple of 8 (contents unspecified)

The producer commits exactly the framed length, ``8 + sum(8 + round_up(length, 8))`` (a
multiple of 8), with ``ProducerGuard.commit(nbytes)``, so a ctshm consumer's view ends at the
last record's padding.  A record therefore needs ``8 + round_up(length, 8)`` bytes and the
largest single record a slot can hold is ``slot_size - 16`` bytes.  The slot stays ordinary
slot bytes for the ring and for the Rust peer: the ring neither knows nor checks the framing.
A reader accepts any committed length that covers every record it announces (a Rust
producer's slot is handed out whole); a record that would end beyond the committed bytes
raises :class:`~ctshm.ring.CorruptRingError` and is never handed out.

Lifetimes: a record view points into the slot.  It stays valid until the reader moves past
the slot's last record (the slot is then released and the producer may overwrite it); after
that the view is *released* (``ValueError`` on use) unless you exported it further
(``memoryview(rec)``, NumPy...), in which case it silently sees new data.  Copy with
``bytes(rec)`` to keep a record.  ``reserve(n)`` returns a writable view of the record's
payload that must be filled before the slot is published (the next ``flush()``, ``close()``
or an ``append``/``reserve`` that does not fit).

Example::

    with RecordWriter(ring) as w:          # producer process
        for msg in messages:
            w.append(msg)                  # close() flushes and calls ring.mark_finished()

    for rec in RecordReader(ring):         # consumer process: ends at Finished
        handle(rec)                        # rec: read-only memoryview, valid until next slot
"""

from __future__ import annotations

import struct
import sys
from itertools import chain
from typing import Any, Final, Generator, Iterator, Optional, cast

from .ring import (
    ConsumerGuard,
    CorruptRingError,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    ProducerGuard,
    ShmTraceRing,
)

__all__ = ["RECORD_HEADER", "SLOT_HEADER", "RecordReader", "RecordWriter", "max_record_size"]

#: Bytes before the first record of a slot (u32 count + u32 reserved).
SLOT_HEADER: Final = 8
#: Bytes before each record's payload (u32 length + u32 reserved).
RECORD_HEADER: Final = 8

_PAIR: Final = struct.Struct("<II")
_pack_pair = _PAIR.pack_into
_U32: Final = struct.Struct("<I")
_unpack_u32 = _U32.unpack_from

#: Small records are written with one ``Struct("<II{n}s").pack_into`` (header and payload in
#: one C call: half the cost of a header pack plus a slice assignment); one Struct per size,
#: for sizes up to _STRUCT_MAX, at most _STRUCT_CACHE of them.
_STRUCT_MAX: Final = 1024
_STRUCT_CACHE: Final = 512
#: The fast path packs bytearrays too, except on PyPy, whose struct "s" takes only bytes.
_STRUCT_TYPES: Final = (bytes,) if sys.implementation.name == "pypy" else (bytes, bytearray)
_record_structs: dict[int, Any] = {}


def _record_struct(n: int) -> Any:
    st = struct.Struct(f"<II{n}s") if n <= _STRUCT_MAX else None
    if len(_record_structs) < _STRUCT_CACHE:
        _record_structs[n] = st
    return st


def max_record_size(slot_size: int) -> int:
    """Largest record payload a slot of ``slot_size`` bytes can hold."""
    return (slot_size - SLOT_HEADER - RECORD_HEADER) & ~7


def _framed(n: int) -> int:
    return RECORD_HEADER + ((n + 7) & ~7)


class RecordWriter:
    """Producer side: ``append(data)`` / ``reserve(n)`` records, published slot by slot.

    ``max_bytes`` (default: the whole slot) publishes a slot as soon as the next record would
    take it past that many bytes; a smaller value lowers latency and the memory touched per
    slot (only that prefix of each slot is reserved and written), at the price of more slots
    per record.  For streams of small records ``max_bytes=64 * 1024`` is usually fastest: a
    batch stays in the CPU caches and the consumer starts sooner.  A record larger than
    ``max_bytes`` (but not than the slot) goes alone into its own slot.  ``timeout`` bounds
    each wait for a free slot (``TimeoutError``; default: wait without bound).

    The writer acquires a slot lazily (at the first record after a flush) and holds at most
    one.  As a context manager it calls ``close()`` on success (flush + ``mark_finished``)
    and ``abort()`` on an exception (unpublished records are dropped, the ring is not
    finished).  Not thread-safe: one writer per ring, used from one thread at a time.
    """

    __slots__ = ("_buf", "_closed", "_count", "_guard", "_limit", "_max", "_pos", "_ring",
                 "_slot", "records_written", "slots_written", "timeout")

    def __init__(self, ring: ShmTraceRing, *, max_bytes: Optional[int] = None,
                 timeout: Optional[float] = None) -> None:
        slot = ring.slot_size
        if max_bytes is None:
            max_bytes = slot
        elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        elif max_bytes < SLOT_HEADER + RECORD_HEADER:
            raise ValueError(f"max_bytes must be >= {SLOT_HEADER + RECORD_HEADER}, "
                             f"not {max_bytes}")
        self._ring = ring
        self._slot = slot
        self._max = min(max_bytes, slot) & ~7
        self.timeout = timeout
        self._guard: Optional[ProducerGuard] = None
        self._buf: Any = None
        self._pos = SLOT_HEADER
        self._count = 0
        self._limit = 0  # 0 while no slot is held: every append takes the slow path
        self._closed = False
        self.records_written = 0  # records published so far
        self.slots_written = 0  # slots published so far

    # -- writing -------------------------------------------------------------------------------
    def append(self, data: Any) -> None:
        """Copy one record (any bytes-like object) into the current slot."""
        t = type(data)
        if t in _STRUCT_TYPES:
            n = len(data)
            st = _record_structs.get(n, 0)
            if st == 0:
                st = _record_struct(n)
        else:
            data = memoryview(data).cast("B")
            n = data.nbytes
            st = None
        pos = self._pos
        end = pos + RECORD_HEADER + n
        if end > self._limit:
            self._make_room(n)
            pos = self._pos
            end = pos + RECORD_HEADER + n
        if st is not None:
            st.pack_into(self._buf, pos, n, 0, data)
        else:
            buf = self._buf
            _pack_pair(buf, pos, n, 0)
            buf[pos + RECORD_HEADER:end] = data
        self._pos = (end + 7) & ~7
        self._count += 1

    def reserve(self, n: int) -> memoryview:
        """Add a record of ``n`` bytes and return a writable view of its payload.

        Fill the view before the slot is published (``flush()``, ``close()``, or the next
        ``append``/``reserve`` that needs a new slot); do not keep it afterwards.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"record size must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"record size must be >= 0, not {n}")
        pos = self._pos
        end = pos + RECORD_HEADER + n
        if end > self._limit:
            self._make_room(n)
            pos = self._pos
            end = pos + RECORD_HEADER + n
        buf = self._buf
        _pack_pair(buf, pos, n, 0)
        self._pos = (end + 7) & ~7
        self._count += 1
        view: memoryview = buf[pos + RECORD_HEADER:end]
        return view

    def _make_room(self, n: int) -> None:
        """Slow path: no slot held, or the record does not fit under the limit."""
        if self._closed:
            raise ValueError(f"RecordWriter for {self._ring.name!r} is closed")
        need = SLOT_HEADER + RECORD_HEADER + n
        if need > self._slot:
            raise ValueError(
                f"a record of {n} bytes does not fit a slot of {self._slot} bytes of ring "
                f"{self._ring.name!r} (at most {max_record_size(self._slot)} bytes per record: "
                "the slot also holds an 8-byte slot header and an 8-byte record header); "
                "send it with ring.acquire()/commit() in a ring with larger slots")
        if self._count:
            self.flush()  # publishes the records so far; the new one starts a fresh slot
        if self._guard is None:
            # Ask only for the bytes we may use: the ring reserves backing store for that
            # prefix of the slot (and guard.buf is that long), not for the whole slot.
            g = self._ring.acquire(self.timeout, size=max(self._max, SLOT_HEADER + _framed(n)))
            self._guard = g
            self._buf = g.buf
            self._pos = SLOT_HEADER
            self._count = 0
        # The caller writes the record without checking again, so a record larger than
        # max_bytes (but not than the slot) goes alone into this slot: the next record finds
        # the position beyond the limit and flushes first.
        self._limit = self._max

    def flush(self) -> None:
        """Publish the current slot now (nothing happens when it holds no record)."""
        count = self._count
        if not count:
            return
        g = self._guard
        assert g is not None
        _pack_pair(self._buf, 0, count, 0)
        nbytes = self._pos
        self._guard = None
        self._buf = None
        self._limit = 0
        self._pos = SLOT_HEADER
        self._count = 0
        g.commit(nbytes)
        self.records_written += count
        self.slots_written += 1

    @property
    def pending(self) -> int:
        """Records written into the current slot but not yet published."""
        return self._count

    # -- ending --------------------------------------------------------------------------------
    def close(self, finish: bool = True) -> None:
        """Flush, give back an unused slot, and (``finish=True``) ``mark_finished()`` the ring
        so the reader ends.  Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._release_slot()
        if finish:
            self._ring.mark_finished()

    def abort(self) -> None:
        """Drop the unpublished records and give the slot back; the writer is closed."""
        self._count = 0
        self._closed = True
        self._release_slot()

    def _release_slot(self) -> None:
        g, self._guard = self._guard, None
        self._buf = None
        self._limit = 0
        self._pos = SLOT_HEADER
        self._count = 0
        if g is not None:
            g.abort()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._count} pending"
        return (f"<RecordWriter {self._ring.name!r} {state} records={self.records_written} "
                f"slots={self.slots_written}>")


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
                    records = _split(g, self._ring.name)
                    self.slots_read += 1
                    self.records_read += len(records)
                    yield records
                finally:
                    if records is not None:
                        for v in records:
                            try:
                                v.release()
                            except BufferError:  # exported further by the caller
                                pass
                    g.release()
            elif type(r) is Finished:
                return
            elif type(r) is Crashed:
                raise ProducerCrashed(r)
            else:
                raise TimeoutError(f"ring {self._ring.name!r}: no slot within {timeout} s")

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
