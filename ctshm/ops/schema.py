"""The typed records ``ctshm.ops`` produces (each is what ``--json`` prints for it).

TypedDicts, so that a record is its JSON object: keys and shapes are part of the interface
(new keys may be added, none renamed or removed).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, TypedDict, Union

__all__ = ["BroadcastInfo", "BroadcastReaderInfo", "CrashInfo", "Extension", "GcEntry",
           "GcResult", "ObjectInfo", "OwnerRecordInfo", "Party", "QueueInfo",
           "RingInfo", "SegmentInfo", "SemState", "SemaphoreInfo", "SideStatsInfo",
           "SlotInfo", "StatsInfo", "TopRecord"]



class Party(TypedDict):
    """A process a ring records: ``pid`` None where unknown (Rust peer, not a ring)."""

    pid: Optional[int]
    start: Optional[int]
    alive: Optional[bool]
    text: str


class _SemStateBase(TypedDict):
    name: str
    exists: bool


class SemState(_SemStateBase, total=False):
    """One of a ring's semaphores, as ``ring["semaphores"]`` lists it."""

    error: str
    identity: list[int]
    value: int
    users: Optional[list[int]]


class _CrashBase(TypedDict):
    signal: int
    addr: int
    operation: int
    message: str


class CrashInfo(_CrashBase, total=False):
    operation_text: str  # stat only


class SlotInfo(TypedDict):
    slot: int
    state: str  # free, committed-unread, reserved-by-consumer, being-written
    message: Optional[int]
    length: Optional[int]


class Extension(TypedDict):
    """The ctshm extension words (``stat`` only)."""

    magic: str
    magic_text: str
    version: int
    state: str
    creator_pid: int
    creator_start: int
    nonce: str
    producer_pid: int
    producer_start: int
    consumer_pid: int
    consumer_start: int
    len_records: int
    dead_pid: int
    crash_w: int
    mode: str  # "compat" (the seed's protocol) or "fast" (ctshm peers only)
    c_sleep: int
    p_sleep: int


class SideStatsInfo(TypedDict):
    """One side's live counters (``layout.STAT_FIELDS``)."""

    messages: int
    bytes: int
    waits: int
    wakeups: int
    spins: int


class StatsInfo(TypedDict):
    producer: SideStatsInfo
    consumer: SideStatsInfo


class _StatFields(TypedDict):
    name: str
    path: str
    size: int
    allocated: int
    mode: str
    uid: int
    users: Optional[list[int]]


class _RingBase(_StatFields):
    kind: Literal["ring"]
    id: str
    identity: list[int]
    semaphores: list[SemState]
    state: str
    state_reason: Optional[str]
    ctshm: bool
    write_idx: int
    read_idx: int
    reserved_idx: int
    capacity: int
    slot_size: int
    finished: int
    crash: CrashInfo
    creator: Party
    producer: Optional[Party]
    consumer: Optional[Party]
    dead_pid: int
    backlog: Optional[int]  # write_idx - read_idx (None: not a ring)
    stats: Optional[StatsInfo]  # None: not a ring


class RingInfo(_RingBase, total=False):
    """A ring ``/X_t`` (``extension`` and ``slots`` with ``stat`` only)."""

    extension: Extension
    slots: list[SlotInfo]


class SegmentInfo(_StatFields):
    """A segment ``/X_m``; its creator from its owner record ``/X_m_owner``, if any."""

    kind: Literal["segment"]
    id: str
    identity: list[int]
    state: Optional[str]  # None, or "abandoned": its recorded creator is dead
    creator: Party
    owner_record: Optional[str]  # the record's name; None: no owner record (unknown)


class OwnerRecordInfo(_StatFields):
    """A segment's owner record ``/X_m_owner`` that describes no existing segment."""

    kind: Literal["owner-record"]
    segment: str
    identity: list[int]
    state: str  # orphan (segment gone), stale (segment re-made), creating, unknown
    state_reason: str
    creator: Party
    describes: Optional[list[int]]  # (st_dev, st_ino) of the segment it was made for


class _SemaphoreBase(_StatFields):
    kind: Literal["semaphore"]
    ring: str
    identity: list[int]
    orphan: bool
    state: Optional[str]


class SemaphoreInfo(_SemaphoreBase, total=False):
    """A ring semaphore listed on its own (its ring is gone, or ``stat`` of an orphan)."""

    value: int
    error: str


class _QueueBase(_StatFields):
    kind: Literal["queue"]
    id: str
    identity: list[int]
    semaphores: list[str]
    state: str  # open, finished, initialising, corrupt, not a queue
    creator: Party
    capacity: int
    slot_size: int
    queued: int
    finished: bool
    peers: list[dict[str, Any]]
    counters: dict[str, int]


class QueueInfo(_QueueBase, total=False):
    """A ShmQueue ``/X_q`` (``slots`` with ``stat`` only)."""

    slots: list[str]




class BroadcastReaderInfo(TypedDict):
    slot: int
    state: str  # joining, active, evicted
    pid: int
    alive: bool
    lag: int


class BroadcastInfo(_StatFields):
    """A ShmBroadcast ``/X_b`` (ctshm.ops.bcast)."""

    kind: Literal["broadcast"]
    id: str
    identity: list[int]
    state: str  # open, finished, crashed, not a broadcast
    creator: Optional[Party]
    writer: Optional[Party]
    capacity: int
    slot_size: int
    max_readers: int
    published: int
    readers: list[BroadcastReaderInfo]




ObjectInfo = Union[RingInfo, SegmentInfo, SemaphoreInfo, QueueInfo, BroadcastInfo,
                   OwnerRecordInfo]


class _GcEntryBase(TypedDict):
    kind: str
    name: str
    reason: str


class GcEntry(_GcEntryBase, total=False):
    objects: list[str]
    error: str


class GcResult(TypedDict):
    dry_run: bool
    removed: list[GcEntry]
    kept: list[GcEntry]
    errors: list[GcEntry]


class TopRecord(TypedDict):
    """One ring in ``top``: rates over the last refresh (None on the first sample, or after
    the ring was re-created)."""

    name: str
    id: str
    state: str
    capacity: int
    write_idx: int
    read_idx: int
    fill: int  # write_idx - read_idx, of capacity
    fill_pct: float
    msg_s: Optional[float]
    mb_s: Optional[float]  # None where only write_idx moved (no byte counter)
    rate_source: Optional[str]  # "counters" (producer stats) or "write_idx"
    interval_s: Optional[float]
    producer: Optional[Party]
    consumer: Optional[Party]
    crashed: bool
    finished: bool
    stats: Optional[StatsInfo]
