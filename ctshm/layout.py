"""The one home of the ring's shared bytes: ``/X_t``'s layout, its words and its checks.

Every module that reads or writes a ring's header (the ring itself, ``ops``, ``bench``,
tests) takes offsets, word indices and geometry rules from here; nothing else spells them.

Shared layout of ``/X_t`` (all integers little-endian, words 8-byte aligned)::

    offset 0 ┌──────────────────────── RingHeader (72 bytes, the Rust #[repr(C)] struct) ──┐
           0 │ write_idx    u64  slots committed by the producer (monotonic)             │
           8 │ read_idx     u64  slots released by the consumer, in order (monotonic)     │
          16 │ reserved_idx u64  slots handed to consumer guards (monotonic)              │
          24 │ capacity     u64  number of slots                                          │
          32 │ slot_size    u64  bytes per slot, already rounded up to 2 MiB              │
          40 │ finished     u64  0 running, 1 finished, 2 crashed                         │
          48 │ crash.signal i32 │ 52 pad │ 56 crash.addr u64 │ 64 crash.operation i32 │ 68 pad │
             └──────────────────────────────────────────────────────────────────────────┘
             ... unused by the Rust original ...
         256 ┌──────────────────────── ctshm extension (the Rust peer never reads it) ────┐
         256 │ magic        u64  b"CTSHMRG1" (written first by a ctshm creator)           │
         264 │ version      u64  1                                                        │
         272 │ state        u64  0 initializing, 1 ready (written last by the creator)    │
         280 │ creator_pid  u64  │ 288 creator_start u64  (start time: pid reuse guard)   │
         296 │ nonce        u64  random, identifies this incarnation of the ring          │
         304 │ producer_pid u64  │ 312 producer_start u64  (registered on first acquire)  │
         320 │ consumer_pid u64  │ 328 consumer_start u64  (registered on first access)   │
         336 │ len_records  u64  number of length records (= capacity when it fits)       │
         344 │ dead_pid     u64  producer found dead by a consumer (0: none)              │
         352 │ crash_w      u64  write_idx + 1 when the crash was recorded (0: unknown)   │
         360 │ producer stats, u64 each, written only by the producer (plain stores):    │
             │   360 messages │ 368 bytes │ 376 waits │ 384 wake-ups sent │ 392 spins     │
         400 │ consumer stats, u64 each, written only by the consumer (plain stores):    │
             │   400 messages │ 408 bytes │ 416 waits │ 424 wake-ups sent │ 432 spins     │
        1024 │ crash_msg    u32 length + up to 1020 bytes UTF-8 (why the producer died)    │
             └──────────────────────────────────────────────────────────────────────────┘
        4096 ┌──────────────────────── length records, 16 bytes per slot ────────────────┐
             │ record k: tag u64 = seq + 1 of the message in slot k │ nbytes u64           │
             └ (at most (2 MiB - 4096) / 16 = 130816 records) ────────────────────────────┘
     2 MiB   slot 0 │ slot 1 │ ... │ slot capacity-1      (slot k at 2 MiB + k * slot_size)

Records (``ctshm.records``; the ring neither knows nor checks this framing): a slot written
by ``RecordWriter`` starts with ``u32 record_count``, ``u32 0``, followed by ``record_count``
records, each ``u32 length``, ``u32 0``, ``length`` payload bytes and 0-7 pad bytes up to
the next multiple of 8 (every record, and so every payload, starts 8-aligned).  The producer
commits exactly ``8 + sum(8 + round_up(length, 8))`` bytes, so a ctshm consumer's view ends
at the last record's padding; to the Rust original such a slot is ordinary bytes.

Message ``seq`` (0, 1, 2, ...) lives in slot ``seq % capacity``.  A ctshm producer writes the
record ``(seq + 1, nbytes)`` for the slot before publishing it, so a ctshm consumer hands out
exactly ``nbytes``; a slot written by the Rust original has a stale or zero tag and is handed
out whole.  A ctshm creator's rings start zeroed; a Rust-created ring's extension is zero
(``magic`` 0): ctshm then treats the creator as unknown.

Word constants are indices into the header viewed as ``'Q'`` (u64); ``*_OFF`` are byte
offsets.
"""

from __future__ import annotations

import struct
from typing import Final, Optional

HUGE_PAGE_SIZE: Final = 2 * 1024 * 1024
#: The header region before slot 0: one huge page (the Rust original's layout).
HEADER_SIZE: Final = HUGE_PAGE_SIZE
#: sizeof(RingHeader) in the Rust original.
HEADER_STRUCT_SIZE: Final = 72

# RingHeader words.
WRITE_IDX: Final = 0
READ_IDX: Final = 1
RESERVED_IDX: Final = 2
CAPACITY: Final = 3
SLOT_SIZE: Final = 4
FINISHED: Final = 5
#: ``finished`` values.
FIN_RUNNING: Final = 0
FIN_FINISHED: Final = 1
FIN_CRASHED: Final = 2

#: Crash details: signal i32 @48, addr u64 @56, operation i32 @64.
CRASH_OFF: Final = 48
CRASH: Final = struct.Struct("<i4xQi")

# ctshm extension words.
EXT_OFF: Final = 256
_E: Final = EXT_OFF // 8
EXT_MAGIC: Final = _E + 0
EXT_VERSION: Final = _E + 1
EXT_STATE: Final = _E + 2
CREATOR_PID: Final = _E + 3
CREATOR_START: Final = _E + 4
NONCE: Final = _E + 5
PRODUCER_PID: Final = _E + 6
PRODUCER_START: Final = _E + 7
CONSUMER_PID: Final = _E + 8
CONSUMER_START: Final = _E + 9
LEN_RECORDS: Final = _E + 10
DEAD_PID: Final = _E + 11
CRASH_W: Final = _E + 12
#: Live statistics (``ring.stats()``, ``ctshm stat``/``top``): five u64 counters per side,
#: each written only by its own side.  Offsets within a side's block:
STAT_MESSAGES: Final = 0
STAT_BYTES: Final = 1
STAT_WAITS: Final = 2  # blocking waits (sleeps on a semaphore)
STAT_WAKEUPS: Final = 3  # semaphore posts that woke (or may have woken) the peer
STAT_SPINS: Final = 4  # waits that ended while spinning
STAT_FIELDS: Final = ("messages", "bytes", "waits", "wakeups", "spins")
PRODUCER_STATS: Final = _E + 13
CONSUMER_STATS: Final = _E + 18

MAGIC: Final = int.from_bytes(b"CTSHMRG1", "little")
VERSION: Final = 1
STATE_READY: Final = 1

#: Crash message (ctshm only): u32 length + UTF-8 text, written before the crash flag.
MSG_OFF: Final = 1024
MSG_MAX: Final = 1020
MSG_LEN: Final = struct.Struct("<I")

#: Length records: 16 bytes per slot from byte 4096 (word LEN_WORD).
LEN_OFF: Final = 4096
LEN_WORD: Final = LEN_OFF // 8
MAX_LEN_RECORDS: Final = (HEADER_SIZE - LEN_OFF) // 16
#: The header pages a ring touches (extension, crash message, length records of up to
#: 256 slots); ``create`` reserves them before writing any.
HEADER_TOUCHED: Final = LEN_OFF + 16 * 256

#: Name -> word index of the words ``ctshm stat`` reports (its JSON keys).
WORDS: Final = {
    "write_idx": WRITE_IDX, "read_idx": READ_IDX, "reserved_idx": RESERVED_IDX,
    "capacity": CAPACITY, "slot_size": SLOT_SIZE, "finished": FINISHED,
    "magic": EXT_MAGIC, "version": EXT_VERSION, "ext_state": EXT_STATE,
    "creator_pid": CREATOR_PID, "creator_start": CREATOR_START,
    "nonce": NONCE, "producer_pid": PRODUCER_PID,
    "producer_start": PRODUCER_START, "consumer_pid": CONSUMER_PID,
    "consumer_start": CONSUMER_START, "len_records": LEN_RECORDS,
    "dead_pid": DEAD_PID,
}


def aligned_slot_size(slot_size: int) -> int:
    """Slot size rounded up to 2 MiB, as the Rust original does."""
    return (slot_size + HUGE_PAGE_SIZE - 1) & ~(HUGE_PAGE_SIZE - 1)


def ring_size(capacity: int, aligned_slot: int) -> int:
    """Bytes of ``/X_t`` for this geometry."""
    return HEADER_SIZE + capacity * aligned_slot


def slot_offset(slot: int, aligned_slot: int) -> int:
    """Byte offset of slot ``slot``."""
    return HEADER_SIZE + slot * aligned_slot


def len_record_offset(slot: int) -> int:
    """Byte offset of slot ``slot``'s length record."""
    return LEN_OFF + 16 * slot


def validate_geometry(name: str, cap: int, slot: int, size: int) -> Optional[str]:
    """None if ``capacity`` x ``slot_size`` + header matches the object's ``size``, else why."""
    if slot % HUGE_PAGE_SIZE:
        return (f"ring {name!r} header is corrupt: slot_size={slot} is not a multiple of "
                f"2 MiB")
    expect = ring_size(cap, slot)
    if expect != size:
        return (f"ring {name!r} header is corrupt or not a ring: capacity={cap} x "
                f"slot_size={slot} + 2 MiB header = {expect} bytes, but the object is "
                f"{size} bytes")
    return None
