"""Segments (``/X_m``) and their owner records (``/X_m_owner``) for ``ls``, ``stat``, ``rm``
and ``gc``.

A segment's creator is known from the owner record that describes it
(:mod:`ctshm._owner_record`): ``gc`` removes it once that creator is dead, as it does a
ring.  A segment without one (made by the Rust original, kept with ``keep_on_drop()``) has
an unknown owner and is removed only with ``--include-unknown``, when no process uses it.
A record that describes no existing segment is listed on its own (kind ``owner-record``)
and removed by ``gc`` when it is garbage (its segment is gone, or its creator died before
making it).  Inspection only reads (the record through a read-only mapping).
"""

from __future__ import annotations

import os
from typing import Optional

from .. import _owner_record as R, layout as L
from ._common import shm_path
from ._scan import Mappers
from .inspect import party, read_shm, stat_fields
from .schema import OwnerRecordInfo, Party, SegmentInfo

__all__ = ["RECORD_KIND", "inspect_owner_record", "inspect_segment", "record_gc_decision",
           "segment_alive_parties", "segment_creator"]

#: The ``kind`` of an owner record listed on its own.
RECORD_KIND = "owner-record"


def _unknown(text: str) -> Party:
    return {"pid": None, "start": None, "alive": None, "text": text}


def segment_creator(rec: Optional[R.Record]) -> Party:
    """The creator a record names (``unknown (no owner record)`` without one)."""
    if rec is None:
        return _unknown("unknown (no owner record)")
    p = party(rec.pid, rec.start)
    return p if p is not None else _unknown("unknown (owner record being written)")


def inspect_segment(name: str, mappers: Optional[Mappers] = None) -> Optional[SegmentInfo]:
    """Size, allocation, creator and users of the segment ``/X_m`` (None if absent)."""
    mappers = mappers if mappers is not None else Mappers()
    st = read_shm(name, lambda _fd, st: st)
    if st is None:
        return None
    rec = R.read(name + R.SUFFIX)
    owner = rec if R.describes(rec, (st.st_dev, st.st_ino)) else None
    creator = segment_creator(owner)
    state: Optional[str] = None
    if creator["alive"] is False:
        state = "abandoned"  # as a ring: nobody will remove it but gc
    return {
        "kind": "segment",
        **stat_fields(name, shm_path(name), st, mappers),
        "id": name[1:-len(L.SEGMENT_SUFFIX)],
        "identity": [st.st_dev, st.st_ino],
        "state": state,
        "creator": creator,
        "owner_record": owner.name if owner is not None else None,
    }


def inspect_owner_record(name: str, mappers: Optional[Mappers] = None
                         ) -> Optional[OwnerRecordInfo]:
    """The owner record ``/X_m_owner`` as an object of its own, if it describes no existing
    segment (None if absent, or if it is the record of ``/X_m``: listed with it)."""
    mappers = mappers if mappers is not None else Mappers()
    segment = name[:-len(R.SUFFIX)]
    seg_st = read_shm(segment, lambda _fd, st: st)
    rec = R.read(name)
    if rec is None:
        return None
    seg = (seg_st.st_dev, seg_st.st_ino) if seg_st is not None else None
    if seg is not None and R.describes(rec, seg):
        return None
    try:
        st = os.stat(shm_path(name))
    except FileNotFoundError:
        return None
    garbage, why = R.lone_verdict(rec)
    if garbage is None:
        state = "unknown"
    elif rec.segment is None:
        state = "creating" if garbage is False else "orphan"
    else:
        state = "orphan" if seg is None else "stale"
    return {
        "kind": "owner-record",
        **stat_fields(name, shm_path(name), st, mappers),
        "segment": segment,
        "identity": [rec.identity[0], rec.identity[1]],
        "state": state,
        "state_reason": why,
        "creator": segment_creator(rec),
        "describes": list(rec.segment) if rec.segment is not None else None,
    }


def record_gc_decision(o: OwnerRecordInfo, include_unknown: bool) -> tuple[bool, str]:
    """(remove it?, why) for an owner record listed on its own."""
    if o["state"] != "unknown":
        return o["state"] != "creating", f"owner record: {o['state_reason']}"
    if not include_unknown:
        return False, f"owner record: {o['state_reason']} (pass --include-unknown)"
    if o["users"] is None or o["users"]:
        return False, f"owner record: {o['state_reason']}, open or users unknown"
    return True, f"owner record: {o['state_reason']}, used by no process"


def segment_alive_parties(o: Optional[SegmentInfo]) -> list[str]:
    """``rm``'s reason to refuse: the segment's recorded creator is alive."""
    if o is None or not o["creator"]["alive"]:
        return []
    return [f"its creator pid {o['creator']['pid']} is alive"]
