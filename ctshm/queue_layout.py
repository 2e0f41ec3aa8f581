"""The byte layout of a ShmQueue (``/ID_q``): one header page, a peer table, the slots.

All words are little-endian u64 (native order on every platform ctshm runs on) and every
word a process shares is 8-byte aligned.  ``W_*`` names are word indexes (byte offset / 8)
into a ``memoryview`` of the whole mapping cast to ``'Q'``.

::

    offset  word        what
    ------  ----------  -------------------------------------------------------------------
       0    MAGIC       b"CTSHMQ\\x00\\x01" (as a u64): what `ctshm ls` recognises
       8    VERSION     1
      16    CAPACITY    slots
      24    SLOT_SIZE   payload bytes per slot (the largest message)
      32    STRIDE      bytes per slot: 16-byte slot header + payload, rounded up to 64
      40    MAX_PEERS   entries in the peer table (<= 1023)
      48    SLOTS_OFF   byte offset of slot 0
      56    READY       0 while the creator initialises; 1 once the queue is usable
      64    OWNER       the creator's peer identity (pid | start << 22; see _peers_table)
     128    TAIL        producers' hint: positions below it are claimed   (own cache line)
     192    HEAD        consumers' hint: positions below it are taken     (own cache line)
     256    C_SLEEP     consumer threads announced asleep on ``/ID_q_items``
     320    P_SLEEP     producer threads announced asleep on ``/ID_q_space``
     384    FINISHED    1 once finish() was called: end of stream after the last message
     392    ORPHANS     >= the number of ORPHAN slots (messages of dead consumers to redeliver)
     400    SKIPPED     claims of dead producers skipped (their unfinished messages)
     408    REDELIVERED messages taken back from dead consumers
     416    REAPED      dead peers reaped
     512    PEERS       MAX_PEERS x 16 bytes: [identity u64][generation u64]
            SLOTS       CAPACITY x STRIDE bytes, from SLOTS_OFF (a multiple of 64):
                          +0  WORD    the slot's whole state (below)
                          +8  LENGTH  payload bytes of the message
                          +16 payload

The slot word (the truth about a slot; changed only by compare-exchange, except by the owner
of a claim)::

    bit  0..2   state: EMPTY 0, WRITING 1, FULL 2, READING 3, SKIP 4, ORPHAN 5
    bit  3..12  owner peer index + 1 (0: nobody)  } WRITING and READING only
    bit 13..23  owner generation (mod 2048)        }
    bit 24..63  lap = position // CAPACITY

Position ``p`` lives in slot ``p % CAPACITY``; the slot is free for it iff its word is
exactly ``lap(p) << 24`` (EMPTY, nobody).  A consumer done with position ``p`` stores
``(lap(p) + 1) << 24``: free for ``p + CAPACITY``.
"""

from __future__ import annotations

from typing import Final

MAGIC: Final = int.from_bytes(b"CTSHMQ\x00\x01", "little")
VERSION: Final = 1
SUFFIX: Final = "_q"
SEM_ITEMS: Final = "_items"
SEM_SPACE: Final = "_space"

W_MAGIC: Final = 0
W_VERSION: Final = 1
W_CAPACITY: Final = 2
W_SLOT_SIZE: Final = 3
W_STRIDE: Final = 4
W_MAX_PEERS: Final = 5
W_SLOTS_OFF: Final = 6
W_READY: Final = 7
W_OWNER: Final = 8
W_TAIL: Final = 128 // 8
W_HEAD: Final = 192 // 8
W_C_SLEEP: Final = 256 // 8
W_P_SLEEP: Final = 320 // 8
W_FINISHED: Final = 384 // 8
W_ORPHANS: Final = 392 // 8
W_SKIPPED: Final = 400 // 8
W_REDELIVERED: Final = 408 // 8
W_REAPED: Final = 416 // 8
PEERS_OFF: Final = 512
PEER_BYTES: Final = 16

SLOT_HEADER: Final = 16
MAX_PEERS_LIMIT: Final = 1023

EMPTY: Final = 0
WRITING: Final = 1
FULL: Final = 2
READING: Final = 3
SKIP: Final = 4
ORPHAN: Final = 5
STATE_NAMES: Final = ("EMPTY", "WRITING", "FULL", "READING", "SKIP", "ORPHAN")

STATE_MASK: Final = 7
OWNER_SHIFT: Final = 3
OWNER_MASK: Final = ((1 << 21) - 1) << OWNER_SHIFT
LAP_SHIFT: Final = 24
GEN_BITS: Final = 11


def stride(slot_size: int) -> int:
    return (SLOT_HEADER + slot_size + 63) & ~63


def slots_offset(max_peers: int) -> int:
    return (PEERS_OFF + PEER_BYTES * max_peers + 63) & ~63


def total_size(capacity: int, slot_size: int, max_peers: int) -> int:
    return slots_offset(max_peers) + capacity * stride(slot_size)


def owner_tag(index: int, gen: int) -> int:
    """The owner bits of a claim by peer ``index`` at generation ``gen``."""
    return (((gen & ((1 << GEN_BITS) - 1)) << 10) | (index + 1)) << OWNER_SHIFT


def owner_of(word: int) -> tuple[int, int]:
    """(peer index, generation mod 2048) of a claim word; index -1: nobody."""
    bits = (word & OWNER_MASK) >> OWNER_SHIFT
    return (bits & 0x3FF) - 1, bits >> 10


def describe(word: int) -> str:
    state = word & STATE_MASK
    name = STATE_NAMES[state] if state < len(STATE_NAMES) else f"?{state}"
    idx, gen = owner_of(word)
    who = f" peer {idx}/{gen}" if idx >= 0 else ""
    return f"lap {word >> LAP_SHIFT} {name}{who}"
