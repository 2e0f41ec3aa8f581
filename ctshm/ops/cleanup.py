"""``rm`` and ``gc``: removing rings (with both semaphores), segments (with their owner
records), orphan semaphores and lone owner records.

``gc`` removes ctshm rings and segments whose creator is dead, orphan ring semaphores nobody
has mapped or open, and owner records whose segment is gone; rings and segments without
owner information only with ``include_unknown``, and even then only when no process uses
them.  Every removal re-checks that the name still
refers to the object that was inspected (a successor that re-created the name is left
alone).  ``rm`` refuses an object a live process uses unless forced.
"""

from __future__ import annotations

from typing import Optional

from .. import _owner_record, _shm, layout as L, libc
from ..semaphore import NamedSemaphore, sem_file_identity
from ._common import NOT_A_RING
from ._scan import Mappers
from .bcast import gc_decision_broadcast, in_use_broadcast
from .inspect import inspect_ring, inspect_semaphore
from .names import collect
from .queues import inspect_queue, queue_gc_decision, remove_queue
from .schema import GcEntry, GcResult, ObjectInfo
from .segments import (
    RECORD_KIND,
    inspect_owner_record,
    inspect_segment,
    record_gc_decision,
    segment_alive_parties,
)

__all__ = ["gc", "gc_decision", "in_use", "remove", "would_remove"]

Identity = tuple[int, int]


def _unlink_sem(name: str, identity: Optional[Identity]) -> bool:
    if identity is not None and sem_file_identity(name) != identity:
        return False
    try:
        NamedSemaphore.unlink_name(name, missing_ok=False)
    except FileNotFoundError:
        return False
    return True


def _unlink_shm(name: str, identity: Optional[Identity]) -> bool:
    if identity is not None:
        return _shm.unlink_if_same(name, identity)
    try:
        libc.shm_unlink(name)
    except FileNotFoundError:
        return False
    return True


def _ident(v: list[int]) -> Identity:
    return (v[0], v[1])


def _sem_identities(info: ObjectInfo) -> dict[str, Optional[Identity]]:
    """The semaphores ``info`` inspected, by name, with the identity seen."""
    if info["kind"] == "semaphore":
        return {info["name"]: _ident(info["identity"])}
    out: dict[str, Optional[Identity]] = {}
    if info["kind"] == "ring":
        for s in info["semaphores"]:
            if s["exists"] and s.get("identity"):
                out[s["name"]] = _ident(s["identity"])
    return out


def _remove_ring(name: str, info: Optional[ObjectInfo], ident: Optional[Identity]
                 ) -> list[str]:
    removed: list[str] = []
    sem_idents = _sem_identities(info) if info is not None else None
    for sfx in L.SEM_SUFFIXES:
        s = name + sfx
        if sem_idents is not None and s not in sem_idents:
            continue  # not there when inspected
        if _unlink_sem(s, sem_idents.get(s) if sem_idents is not None else None):
            removed.append(s)
    if (info is None or info["kind"] == "ring") and _unlink_shm(name, ident):
        removed.insert(0, name)
    return removed


def remove(kind: str, name: str, info: Optional[ObjectInfo] = None) -> list[str]:
    """Remove a ring (object + both semaphores) or a segment; return the names removed.

    With ``info`` (from :func:`collect`), only the very objects inspected are removed: a name
    that now refers to a successor's object is left alone.
    """
    ident: Optional[Identity] = None
    if info is not None and info["kind"] != "semaphore" and info.get("identity"):
        ident = _ident(info["identity"])
        if _shm.name_identity(name) != ident:
            return []  # replaced since we looked
    if kind == "ring":
        return _remove_ring(name, info, ident)
    if kind == "queue":
        return remove_queue(name, ident)
    if kind == RECORD_KIND:
        rec = _owner_record.read(name)
        ok = rec is not None and (ident is None or rec.identity == ident)
        return [name] if ok and rec is not None and _owner_record.remove(rec) else []
    if kind != "segment":
        return [name] if _unlink_shm(name, ident) else []
    seg = ident if ident is not None else _shm.name_identity(name)
    if not _unlink_shm(name, seg):
        return []
    rec_name = _owner_record.remove_for(name, seg)  # after the segment: see _owner_record
    return [name] + ([rec_name] if rec_name else [])


def _unknown_owner_decision(what: str, users: Optional[list[int]], in_use: str,
                            include_unknown: bool) -> tuple[bool, str]:
    if not include_unknown:
        return False, f"{what}: owner unknown (pass --include-unknown)"
    if users is None:
        return False, f"{what}: owner unknown and users unknown (no /proc)"
    if users:
        return False, f"{what}: owner unknown, {in_use}"
    return True, f"{what}: owner unknown, used by no process"


def gc_decision(o: ObjectInfo, include_unknown: bool) -> tuple[bool, str]:
    """(remove it?, why) for one object :func:`collect` found."""
    users = o["users"]
    in_use = f"in use by pid {', '.join(map(str, users))}" if users else ""
    if o["kind"] == "semaphore":
        if users is None:
            return False, "orphan semaphore; cannot tell who has it open (no /proc)"
        if users:
            return False, f"orphan semaphore, but {in_use}"
        return True, f"orphan semaphore: ring {o['ring']} is gone, unused"
    if o["kind"] == "queue":
        return queue_gc_decision(o)
    if o["kind"] == "broadcast":
        return gc_decision_broadcast(o)
    if o["kind"] == "owner-record":
        return record_gc_decision(o, include_unknown)
    if o["kind"] == "segment" and o["owner_record"] is not None:
        creator = o["creator"]
        if creator["alive"] is not False:
            return False, f"creator pid {creator['pid']} is alive"
        why = f"creator pid {creator['pid']} is dead"
        return True, why + (f" (still {in_use})" if in_use else "")
    if o["kind"] == "ring" and o["ctshm"]:
        creator = o["creator"]
        if creator["alive"]:
            return False, f"creator pid {creator['pid']} is alive"
        why = f"creator pid {creator['pid']} is dead"
        return True, why + (f" (still {in_use})" if in_use else "")
    if o["kind"] == "ring" and o["state"] == NOT_A_RING:
        return False, f"not a ring ({o['state_reason']}); gc never removes it (use rm)"
    what = "Rust-created ring" if o["kind"] == "ring" else "segment"
    return _unknown_owner_decision(what, users, in_use, include_unknown)


def would_remove(o: ObjectInfo) -> list[str]:
    """The names removing ``o`` takes away."""
    if o["kind"] == "ring":
        return [o["name"]] + [s["name"] for s in o["semaphores"] if s["exists"]]
    if o["kind"] == "queue":
        return [o["name"], *o["semaphores"]]
    if o["kind"] == "segment" and o["owner_record"]:
        return [o["name"], o["owner_record"]]
    return [o["name"]]


def gc(prefix: str = "", include_unknown: bool = False, dry_run: bool = False) -> GcResult:
    """Remove objects whose owners are dead (see the module docstring)."""
    result: GcResult = {"dry_run": dry_run, "removed": [], "kept": [], "errors": []}
    for o in collect(prefix):
        go, why = gc_decision(o, include_unknown)
        entry: GcEntry = {"kind": o["kind"], "name": o["name"], "reason": why}
        if not go:
            result["kept"].append(entry)
            continue
        if dry_run:
            entry["objects"] = would_remove(o)
            result["removed"].append(entry)
            continue
        kind = o["kind"] if o["kind"] in ("segment", "queue", "broadcast", RECORD_KIND
                                          ) else "ring"
        name = o["ring"] if o["kind"] == "semaphore" else o["name"]
        try:
            entry["objects"] = remove(kind, name, o)
        except OSError as e:
            entry["error"] = f"{e.strerror}"
            result["errors"].append(entry)
            continue
        result["removed"].append(entry)
    return result


def _alive_parties(o: ObjectInfo) -> list[str]:
    if o["kind"] != "ring" or o["state"] == NOT_A_RING:
        return []
    out = []
    for who, p in (("creator", o["creator"]), ("producer", o["producer"]),
                   ("consumer", o["consumer"])):
        if p and p["alive"]:
            out.append(f"its {who} pid {p['pid']} is alive")
    return out


Users = Optional[list[int]]


def _ring_users(name: str, mappers: Mappers) -> tuple[list[str], list[tuple[str, Users]]]:
    ring = inspect_ring(name, mappers)
    if ring is not None:
        return _alive_parties(ring), [(ring["name"], ring["users"])] + [
            (s["name"], s.get("users")) for s in ring["semaphores"] if s["exists"]]
    sems = (inspect_semaphore(name + s, mappers) for s in L.SEM_SUFFIXES)
    return [], [(s["name"], s["users"]) for s in sems if s is not None]


def in_use(kind: str, name: str, mappers: Mappers) -> list[str]:
    """Why removing ``(kind, name)`` would pull it from under a live process (empty: no one
    uses it): a live creator, producer or consumer, or a process that maps or opens one of
    the objects it would remove."""
    if kind == "broadcast":
        return in_use_broadcast(name, mappers)
    if kind == RECORD_KIND:
        rec = inspect_owner_record(name, mappers)
        creating = rec is not None and rec["state"] == "creating"
        return [f"its creator pid {rec['creator']['pid']} is alive, creating {rec['segment']}"
                ] if rec is not None and creating else []
    if kind in ("segment", "queue"):
        seg = inspect_segment(name, mappers) if kind == "segment" else None
        found = seg if kind == "segment" else inspect_queue(name, mappers)
        why: list[str] = segment_alive_parties(seg)
        objs: list[tuple[str, Users]] = ([] if found is None
                                         else [(found["name"], found["users"])])
    else:
        why, objs = _ring_users(name, mappers)
    for obj, users in objs:
        if users:
            why.append(f"{obj} is mapped or open by pid {', '.join(map(str, users))}")
    return why
