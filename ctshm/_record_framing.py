"""The records wire format inside a slot, and its pure parser.

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

:func:`split` parses one slot's committed bytes into record views; the writer is
:class:`ctshm.records.RecordWriter`, the I/O around the parser ``ctshm._record_reader``'s
(and ``ctshm.channel``'s).  ``ctshm.layout`` summarizes this framing.
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import CorruptRingError

__all__ = ["RECORD_HEADER", "SLOT_HEADER", "pack_pair", "split"]

#: Bytes before the first record of a slot (u32 count + u32 reserved).
SLOT_HEADER: Final = 8
#: Bytes before each record's payload (u32 length + u32 reserved).
RECORD_HEADER: Final = 8

_PAIR: Final = struct.Struct("<II")
pack_pair = _PAIR.pack_into
_U32: Final = struct.Struct("<I")
_unpack_u32 = _U32.unpack_from


def split(buf: memoryview, index: int, name: str) -> list[memoryview]:
    """The record views of message ``index``'s committed bytes ``buf`` (of ring ``name``, for
    the errors), after checking every record lies inside them.  Pure: views in, views out."""
    size = len(buf)
    if size < SLOT_HEADER:
        raise CorruptRingError(f"ring {name!r}: message {index} has {size} bytes, too "
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
    raise _truncated(name, index, len(out), count, size)


def _truncated(name: str, index: int, k: int, count: int, size: int) -> CorruptRingError:
    return CorruptRingError(
        f"ring {name!r}: message {index} announces {count} records but record {k} ends "
        f"beyond its {size} committed bytes (not a RecordWriter slot, or corrupt)")
