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
         264 │ version      u64  2 (1: the statistics at 360/400, see below)              │
         272 │ state        u64  0 initializing, 1 ready (written last by the creator)    │
         280 │ creator_pid  u64  │ 288 creator_start u64  (start time: pid reuse guard)   │
         296 │ nonce        u64  random, identifies this incarnation of the ring          │
         304 │ producer_pid u64  │ 312 producer_start u64  (registered on first acquire)  │
             │   bit 62 of producer_pid set: an opener's tentative record (start unused)  │
         320 │ consumer_pid u64  │ 328 consumer_start u64  (registered on first access)   │
         336 │ len_records  u64  number of length records (= capacity when it fits)       │
         344 │ dead_pid     u64  producer found dead by a consumer (0: none)              │
         352 │ crash_w      u64  write_idx + 1 when the crash was recorded (0: unknown)   │
         360 │ (version 1 only: the statistics of both sides, 360..439; 2: unused)        │
         448 │ mode         u64  0 compat, 1 fast (written once by the creator; see ring) │
         512 │ c_sleep      u64  fast mode: consumer threads announced asleep on filled   │
         576 │ p_sleep      u64  fast mode: producer threads announced asleep on empty    │
         640 │ producer stats, own cache line, u64 each, written only by the producer:    │
             │   640 (messages) │ 648 bytes │ 656 waits │ 664 wake-ups sent │ 672 spins   │
         704 │ consumer stats, own cache line, u64 each, written only by the consumer:    │
             │   704 (messages) │ 712 bytes │ 720 waits │ 728 wake-ups sent │ 736 spins   │
             │   (messages: derived, write_idx / reserved_idx; see STAT_MESSAGES)         │
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
from typing import Final, NamedTuple, Optional, Union

#: Object names: id ``X`` -> ring ``/X_t`` with semaphores ``/X_t_filled`` and ``/X_t_empty``,
#: segment ``/X_m`` (the Rust original's names).
RING_SUFFIX: Final = "_t"
FILLED_SUFFIX: Final = "_filled"
EMPTY_SUFFIX: Final = "_empty"
SEM_SUFFIXES: Final = (FILLED_SUFFIX, EMPTY_SUFFIX)
SEGMENT_SUFFIX: Final = "_m"

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
#: In ``producer_pid``: the record of a process that opened the ring and has not produced
#: yet (``ctshm._peers``: it counts as the producer-to-be until it produces or closes).
PRODUCER_TENTATIVE: Final = 1 << 62
CONSUMER_PID: Final = _E + 8
CONSUMER_START: Final = _E + 9
LEN_RECORDS: Final = _E + 10
DEAD_PID: Final = _E + 11
CRASH_W: Final = _E + 12
#: Live statistics (``ring.stats()``, ``ctshm stat``/``top``): five u64 counters per side,
#: each written only by its own side (plain stores), each side's block on a cache line of its
#: own (version 2) so the two processes never write one line.  Version 2 stores no message
#: count (the producer's is ``write_idx``, the consumer's ``reserved_idx``) and, in compat
#: mode, no per-message wake-up (one ``filled`` post per message, one ``empty`` post per
#: released slot: ``write_idx`` and ``read_idx`` more); :func:`side_stats` adds them.
#: Offsets within a side's block:
STAT_MESSAGES: Final = 0
STAT_BYTES: Final = 1
STAT_WAITS: Final = 2  # blocking waits (sleeps on a semaphore)
STAT_WAKEUPS: Final = 3  # semaphore posts that woke (or may have woken) the peer
STAT_SPINS: Final = 4  # waits that ended while spinning
STAT_FIELDS: Final = ("messages", "bytes", "waits", "wakeups", "spins")
PRODUCER_STATS: Final = _E + 48
CONSUMER_STATS: Final = _E + 56
#: Version 1's blocks (every word stored; the two sides shared a cache line).
PRODUCER_STATS_V1: Final = _E + 13
CONSUMER_STATS_V1: Final = _E + 18

#: Fast mode (``ShmTraceRing.create(..., fast=True)``; ctshm peers only, see ctshm.ring):
#: ``MODE`` is written once by the creator before the ring is ready; the two sleep counters
#: (each on a cache line of its own: the peer loads it once per message) count the threads of
#: each side that announced they sleep on its semaphore.
MODE: Final = _E + 24
MODE_COMPAT: Final = 0
MODE_FAST: Final = 1
C_SLEEP: Final = _E + 32
P_SLEEP: Final = _E + 40

MAGIC: Final = int.from_bytes(b"CTSHMRG1", "little")
VERSION: Final = 2
#: Extension versions this ctshm reads (``ctshm stat`` / ``top`` on rings of older peers).
VERSIONS_READ: Final = (1, 2)
STATE_READY: Final = 1

#: Crash message (ctshm only): u32 length + UTF-8 text, written before the crash flag.
MSG_OFF: Final = 1024
MSG_MAX: Final = 1020
MSG_LEN: Final = struct.Struct("<I")

#: Length records: 16 bytes per slot from byte 4096 (word LEN_WORD).
LEN_OFF: Final = 4096
LEN_WORD: Final = LEN_OFF // 8
LEN_RECORD: Final = struct.Struct("<QQ")
MAX_LEN_RECORDS: Final = (HEADER_SIZE - LEN_OFF) // 16
#: Bytes ``[0, HEADER_WORDS_SIZE)`` hold every header word, the extension and the crash
#: message (everything :func:`read_header` reads); length records follow.
HEADER_WORDS_SIZE: Final = LEN_OFF
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
    "dead_pid": DEAD_PID, "mode": MODE, "c_sleep": C_SLEEP, "p_sleep": P_SLEEP,
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


# ---------------------------------------------------------------------------------------------
# Reading a live header
# ---------------------------------------------------------------------------------------------

#: A bytes-like object (anything with the buffer protocol: bytes, bytearray, memoryview,
#: array.array, NumPy arrays, ...), typed by the common ones: what ``put()`` copies from and
#: what the readers here take.
Buffer = Union[bytes, bytearray, memoryview]


class PeerId(NamedTuple):
    """A registered process: pid and start time (0, 0: none registered)."""

    pid: int
    start: int


class SideStats(NamedTuple):
    """One side's live statistics words (:data:`STAT_FIELDS`, in that order)."""

    messages: int
    bytes: int
    waits: int
    wakeups: int
    spins: int

    def as_dict(self) -> dict[str, int]:
        return dict(zip(STAT_FIELDS, self))


_NO_PEER: Final = PeerId(0, 0)
_NO_STATS: Final = SideStats(0, 0, 0, 0, 0)


class HeaderSnapshot(NamedTuple):
    """One consistent reading of a ring's header page (see :func:`read_header`)."""

    write_idx: int = 0
    read_idx: int = 0
    reserved_idx: int = 0
    capacity: int = 0
    slot_size: int = 0
    finished: int = 0
    crash_signal: int = 0
    crash_addr: int = 0
    crash_operation: int = 0
    magic: int = 0
    version: int = 0
    ext_state: int = 0
    creator: PeerId = _NO_PEER
    nonce: int = 0
    producer: PeerId = _NO_PEER
    consumer: PeerId = _NO_PEER
    len_records: int = 0
    dead_pid: int = 0
    crash_w: int = 0
    producer_stats: SideStats = _NO_STATS
    consumer_stats: SideStats = _NO_STATS
    #: The raw crash message (at most :data:`MSG_MAX` bytes; not decoded).
    crash_message: bytes = b""
    #: Fast mode (MODE_FAST) or compat (MODE_COMPAT), and the two sleep counters.
    mode: int = 0
    c_sleep: int = 0
    p_sleep: int = 0
    #: False if ``write_idx - read_idx > capacity`` in every attempt (a corrupt header, or
    #: peers far faster than the reader): the indices are then the last attempt's.
    indices_consistent: bool = True
    #: False if a peer's pid changed during every attempt at reading its (pid, start) (a
    #: peer re-registering over and over): that pair may then be torn.
    peers_consistent: bool = True

    @property
    def is_ctshm(self) -> bool:
        """True if a ctshm creator wrote the extension (magic ``CTSHMRG1``)."""
        return self.magic == MAGIC

    @property
    def backlog(self) -> int:
        """Messages committed and not yet released: ``write_idx - read_idx``."""
        return self.write_idx - self.read_idx

    def words(self) -> dict[str, int]:
        """The words of :data:`WORDS`, by name (``ctshm stat``'s keys)."""
        return {
            "write_idx": self.write_idx, "read_idx": self.read_idx,
            "reserved_idx": self.reserved_idx, "capacity": self.capacity,
            "slot_size": self.slot_size, "finished": self.finished,
            "magic": self.magic, "version": self.version, "ext_state": self.ext_state,
            "creator_pid": self.creator.pid, "creator_start": self.creator.start,
            "nonce": self.nonce, "producer_pid": self.producer.pid,
            "producer_start": self.producer.start, "consumer_pid": self.consumer.pid,
            "consumer_start": self.consumer.start, "len_records": self.len_records,
            "dead_pid": self.dead_pid, "mode": self.mode, "c_sleep": self.c_sleep,
            "p_sleep": self.p_sleep,
        }


#: Attempts at a snapshot with ``write - read <= capacity``, and at a stable (pid, start).
_INDEX_ATTEMPTS: Final = 5
_PEER_ATTEMPTS: Final = 1000


def _byte_view(view: Buffer, what: str, need: int) -> memoryview:
    mv = memoryview(view)
    if mv.format not in ("B", "b", "c") or mv.ndim != 1:
        mv = mv.cast("B")
    if mv.nbytes < need:
        n = mv.nbytes
        mv.release()
        raise ValueError(f"{what}: view has {n} bytes, the ring header needs at least "
                         f"{need} (from the ring's byte 0)")
    return mv


def read_peer(hq: memoryview, word: int) -> tuple[PeerId, bool]:
    """The (pid, start) pair at ``word`` of ``hq`` (u64 words), as its writer publishes it
    (``_peers.set_pair``: pid 0 while changing, start, pid): pid, start, pid again until
    both pids agree (False: they never did, the pair is the last attempt's)."""
    pid, start = int(hq[word]), int(hq[word + 1])
    for _ in range(_PEER_ATTEMPTS):
        if int(hq[word]) == pid:
            if pid & PRODUCER_TENTATIVE:  # an opener's record: the pid alone
                return PeerId(pid & ~PRODUCER_TENTATIVE, 0), True
            return PeerId(pid, start), True
        pid, start = int(hq[word]), int(hq[word + 1])
    return PeerId(pid, start), False


def side_stats(hq: memoryview, producer: bool, version: int = VERSION) -> SideStats:
    """One side's statistics from the header viewed as ``'Q'`` (see :data:`STAT_MESSAGES`):
    version 1's stored words, or version 2's with the derived counts added."""
    if version == 1:
        word = PRODUCER_STATS_V1 if producer else CONSUMER_STATS_V1
        return SideStats(*(int(hq[word + k]) for k in range(len(STAT_FIELDS))))
    word = PRODUCER_STATS if producer else CONSUMER_STATS
    done = int(hq[WRITE_IDX if producer else RESERVED_IDX])
    posted = int(hq[word + STAT_WAKEUPS])
    if int(hq[MODE]) != MODE_FAST:
        posted += int(hq[WRITE_IDX if producer else READ_IDX])
    return SideStats(done, int(hq[word + STAT_BYTES]), int(hq[word + STAT_WAITS]), posted,
                     int(hq[word + STAT_SPINS]))


def read_header(view: Buffer) -> HeaderSnapshot:
    """A snapshot of the header of the ring mapped at ``view`` (its first
    :data:`HEADER_WORDS_SIZE` bytes at least, from byte 0), safe while peers run.

    Indices are read in the order read, reserved, write (each monotonic, so ``read <=
    reserved <= write`` holds in the snapshot), retried a few times while ``write - read >
    capacity``.  Each peer's (pid, start) is read as its writer publishes it (pid 0 while
    changing, start, pid): pid, start, pid again until both pids agree (``peers_consistent``
    False if they never did).  Stats words are
    plain u64 loads (each written by one side only).  ``view`` itself is not released.
    """
    mv = _byte_view(view, "read_header", HEADER_WORDS_SIZE)
    head = mv[:HEADER_WORDS_SIZE]
    hq = head.cast("Q")
    try:
        consistent = False
        for _ in range(_INDEX_ATTEMPTS):
            r, res, w = int(hq[READ_IDX]), int(hq[RESERVED_IDX]), int(hq[WRITE_IDX])
            cap = int(hq[CAPACITY])
            if w - r <= cap:
                consistent = True
                break
        (creator, c_ok), (producer, p_ok), (consumer, k_ok) = (
            read_peer(hq, word) for word in (CREATOR_PID, PRODUCER_PID, CONSUMER_PID))
        sig, addr, op = CRASH.unpack_from(head, CRASH_OFF)
        n = min(MSG_LEN.unpack_from(head, MSG_OFF)[0], MSG_MAX)
        return HeaderSnapshot(
            write_idx=w, read_idx=r, reserved_idx=res, capacity=cap,
            slot_size=int(hq[SLOT_SIZE]), finished=int(hq[FINISHED]),
            crash_signal=sig, crash_addr=addr, crash_operation=op,
            magic=int(hq[EXT_MAGIC]), version=int(hq[EXT_VERSION]),
            ext_state=int(hq[EXT_STATE]), creator=creator,
            nonce=int(hq[NONCE]), producer=producer,
            consumer=consumer, len_records=int(hq[LEN_RECORDS]),
            dead_pid=int(hq[DEAD_PID]), crash_w=int(hq[CRASH_W]),
            producer_stats=side_stats(hq, True, int(hq[EXT_VERSION])),
            consumer_stats=side_stats(hq, False, int(hq[EXT_VERSION])),
            crash_message=bytes(head[MSG_OFF + 4:MSG_OFF + 4 + n]),
            mode=int(hq[MODE]), c_sleep=int(hq[C_SLEEP]), p_sleep=int(hq[P_SLEEP]),
            indices_consistent=consistent, peers_consistent=c_ok and p_ok and k_ok,
        )
    finally:
        hq.release()
        head.release()
        mv.release()


def read_len_record(view: Buffer, slot: int) -> tuple[int, int]:
    """Slot ``slot``'s length record ``(tag, nbytes)`` from ``view``, a buffer holding the
    ring from byte 0 (at least up to the end of that record).  ``tag`` is ``seq + 1`` of the
    message the record describes (0 or stale: no record, e.g. the Rust original's slot)."""
    if isinstance(slot, bool) or not isinstance(slot, int):
        raise TypeError(f"read_len_record: slot must be an int, not {type(slot).__name__}")
    if not 0 <= slot < MAX_LEN_RECORDS:
        raise ValueError(f"read_len_record: slot {slot} is outside the length records "
                         f"(0 <= slot < {MAX_LEN_RECORDS})")
    off = len_record_offset(slot)
    mv = _byte_view(view, f"read_len_record(slot={slot})", off + LEN_RECORD.size)
    try:
        tag, nbytes = LEN_RECORD.unpack_from(mv, off)
    finally:
        mv.release()
    return int(tag), int(nbytes)
