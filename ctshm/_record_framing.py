"""The records wire format inside a slot, and its pure parser.

A slot written by :class:`ctshm.records.RecordWriter` starts with ``u32 record_count``,
``u32 0``, followed by ``record_count`` records, each ``u32 length``, ``u32 0``, ``length``
payload bytes and 0-7 pad bytes up to the next multiple of 8 (drawn in ``ctshm.records``'
module docstring and summarized in ``ctshm.layout``).  :func:`split` parses one slot's
committed bytes into record views; the I/O around it is ``ctshm._record_reader``'s (and
``ctshm.channel``'s).
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
