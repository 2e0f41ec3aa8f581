"""The byte layout of a ShmBroadcast segment (``/{id}_b``): one POSIX shm object, no other
name.  Every word is a little-endian (native) unsigned 64-bit integer; offsets below are in
bytes, and the constants of this module are *word* indices (byte offset // 8) into a ``'Q'``
view of the whole segment.

::

    0     +------------------------------------------------------------------+
          | MAGIC VERSION CAPACITY SLOT_SIZE MAX_READERS STRIDE SLOTS_OFF     |
          | TOTAL                                  (written once, MAGIC last) |
    64    | W: messages published (the writer's release store)               |
    128   | FIN CRASH CRASH_SIG CRASH_ADDR CRASH_OP CRASH_PID                 |
    192   | WRITER_PID WRITER_START WSLEEP CREATOR_PID CREATOR_START N_READERS|
    256   | RMASK: bit i = reader slot i announced asleep on its semaphore    |
    320   | stats: - - W_WAITS W_WAKEUPS EVICT_DEAD EVICT_LIVE                |
    384   | CRASH_MSG: 128 bytes of UTF-8 (notify_crash's message)            |
    512   | writer's sem_t (32 bytes, process-shared, sem_init in the segment)|
    576   +------------------------------------------------------------------+
          | reader slot 0 (128 bytes):                                       |
          |   +0 STATE  gen << 34 | kind << 32 | pid   (changed by CAS only)  |
          |   +8 START  the reader's start time (valid once kind is ACTIVE)   |
          |  +16 R      next message it reads (everything below is released)  |
          |  +24 JOINED its join point   +32 (reserved)   +40 WAITS (sleeps)    |
          |  +64 its sem_t (32 bytes)                                        |
          | reader slot 1 ... reader slot MAX_READERS-1                      |
    SLOTS_OFF (page aligned) +-----------------------------------------------+
          | slot 0: [LEN u64][56 bytes pad][payload: SLOT_SIZE rounded to 64] |
          | slot 1 ... slot CAPACITY-1   (STRIDE bytes each)                  |
    TOTAL +------------------------------------------------------------------+

Message ``m`` lives in slot ``m % CAPACITY``.  Kinds: FREE (0), JOINING (1: claimed, join
point not yet stored), ACTIVE (2), EVICTED (3: the writer gave up on it; the reader frees it
when it notices).  The generation is bumped each time a slot is freed, so a compare-exchange
prepared against an earlier occupant (even the same process rejoining) fails.
"""

from __future__ import annotations

from typing import Final

MAGIC: Final = int.from_bytes(b"CTSHMBC1", "little")
VERSION: Final = 1
SUFFIX: Final = "_b"
#: bits in RMASK: one per reader slot
MAX_READERS_LIMIT: Final = 64

# -- header words ------------------------------------------------------------------------
H_MAGIC, H_VERSION, H_CAPACITY, H_SLOT_SIZE, H_MAX_READERS, H_STRIDE, H_SLOTS_OFF, H_TOTAL = (
    range(8))
W: Final = 8
FIN: Final = 16
CRASH: Final = 17          # 0 none, 1 notify_crash, 2 the writer died (seen by a reader)
CRASH_SIG: Final = 18
CRASH_ADDR: Final = 19
CRASH_OP: Final = 20
CRASH_PID: Final = 21
WRITER_PID: Final = 24
WRITER_START: Final = 25
WSLEEP: Final = 26
CREATOR_PID: Final = 27
CREATOR_START: Final = 28
N_READERS: Final = 29      # active readers the writer's last scan saw (a hint: spinning)
RMASK: Final = 32
S_W_WAITS: Final = 42
S_W_WAKEUPS: Final = 43
S_EVICT_DEAD: Final = 44
S_EVICT_LIVE: Final = 45
CRASH_MSG_OFF: Final = 384   # bytes
CRASH_MSG_LEN: Final = 128
WRITER_SEM_OFF: Final = 512  # bytes
SEM_T_SIZE: Final = 32

# -- reader slots --------------------------------------------------------------------------
READERS_OFF: Final = 576     # bytes
READER_SIZE: Final = 128
R_STATE, R_START, R_IDX, R_JOINED, _R_RESERVED, R_WAITS = range(6)  # words of a reader slot
R_SEM_OFF: Final = 64        # bytes within a reader slot

FREE, JOINING, ACTIVE, EVICTED = range(4)
KIND_NAMES: Final = ("free", "joining", "active", "evicted")
_PID_MASK: Final = (1 << 32) - 1


def pack(gen: int, kind: int, pid: int) -> int:
    return ((gen & ((1 << 30) - 1)) << 34) | (kind << 32) | (pid & _PID_MASK)


def unpack(state: int) -> tuple[int, int, int]:
    """(generation, kind, pid) of a reader slot's STATE word."""
    return state >> 34, (state >> 32) & 3, state & _PID_MASK


def reader_word(slot: int, field: int) -> int:
    """Word index of ``field`` (R_*) of reader slot ``slot``."""
    return (READERS_OFF + slot * READER_SIZE) // 8 + field


def reader_sem_off(slot: int) -> int:
    return READERS_OFF + slot * READER_SIZE + R_SEM_OFF


# -- message slots -------------------------------------------------------------------------
SLOT_HEADER: Final = 64


def geometry(capacity: int, slot_size: int, max_readers: int, page: int = 4096
             ) -> tuple[int, int, int]:
    """(stride, slots_off, total) for these parameters."""
    stride = SLOT_HEADER + ((slot_size + 63) & ~63)
    slots_off = READERS_OFF + max_readers * READER_SIZE
    slots_off = (slots_off + page - 1) // page * page
    return stride, slots_off, slots_off + capacity * stride
