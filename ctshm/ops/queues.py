"""``ctshm ls/stat/rm/gc`` for ShmQueue objects (``/X_q`` + ``/X_q_items``, ``/X_q_space``).

Read-only inspection: the header words and the peer table are read through a read-only
mapping (never the queue's own code, which would register this process as a peer).
"""

from __future__ import annotations

import os
from typing import Any, Optional, cast

from .. import _liveness, _shm, libc, queue_layout as QL
from .._peers_table import split_identity
from ..semaphore import NamedSemaphore
from ._common import sem_path, shm_path
from ._scan import Mappers
from .inspect import read_shm, stat_fields
from .schema import Party, QueueInfo, _QueueBase

__all__ = ["format_queue_row", "format_queue_stat", "inspect_queue", "queue_gc_decision",
           "remove_queue"]


def _party(ident: int) -> Party:
    pid, start = split_identity(ident)
    if not pid:
        return {"pid": None, "start": None, "alive": None, "text": "unknown"}
    alive = _liveness.is_alive(pid, start)
    return {"pid": pid, "start": start, "alive": alive,
            "text": f"{pid} ({'alive' if alive else 'dead'})"}


def inspect_queue(name: str, mappers: Optional[Mappers] = None, detail: bool = False
                  ) -> Optional[QueueInfo]:
    """What ``/X_q`` holds (None if it does not exist)."""
    mappers = mappers if mappers is not None else Mappers()

    def read(fd: int, st: os.stat_result) -> tuple[os.stat_result, dict[str, Any]]:
        if st.st_size < QL.PEERS_OFF:
            return st, {}
        m = _shm.Mapping(fd, st.st_size, False, name)
        return st, _read(m.view().cast("Q"), st.st_size, detail)

    found = read_shm(name, read)
    if found is None:
        return None
    st, words = found
    base: _QueueBase = {
        "kind": "queue", **stat_fields(name, shm_path(name), st, mappers),
        "mode": oct(st.st_mode & 0o777),  # not stat_fields' 0600 form: kept as it was
        "id": name[1:-len(QL.SUFFIX)],
        "identity": [st.st_dev, st.st_ino],
        "semaphores": [s for s in (name + QL.SEM_ITEMS, name + QL.SEM_SPACE)
                       if os.path.exists(sem_path(s))],
        "state": words.get("state", "not a queue"),
        "creator": _party(words.get("owner", 0)),
        "capacity": words.get("capacity", 0), "slot_size": words.get("slot_size", 0),
        "queued": words.get("queued", 0), "finished": words.get("finished", False),
        "peers": words.get("peers", []), "counters": words.get("counters", {}),
    }
    info = cast(QueueInfo, base)  # plus the stat-only key below
    if detail and "slots" in words:
        info["slots"] = words["slots"]
    return info


def _read(v: Any, size: int, detail: bool) -> dict[str, Any]:
    if v[QL.W_MAGIC] != QL.MAGIC:
        return {"state": "not a queue"}
    if not v[QL.W_READY]:
        return {"state": "initialising", "owner": v[QL.W_OWNER]}
    cap, slot, mp = v[QL.W_CAPACITY], v[QL.W_SLOT_SIZE], v[QL.W_MAX_PEERS]
    if size < QL.total_size(cap, slot, mp) or mp > QL.MAX_PEERS_LIMIT:
        return {"state": "corrupt"}
    w0, sw = v[QL.W_SLOTS_OFF] // 8, v[QL.W_STRIDE] // 8
    states = [v[w0 + i * sw] for i in range(cap)]
    peers = []
    for i in range(mp):
        ident = v[QL.PEERS_OFF // 8 + 2 * i]
        if ident:
            p = _party(ident)
            peers.append({"index": i, "pid": p["pid"], "alive": p["alive"]})
    out: dict[str, Any] = {
        "state": "finished" if v[QL.W_FINISHED] else "open", "owner": v[QL.W_OWNER],
        "capacity": cap, "slot_size": slot, "finished": bool(v[QL.W_FINISHED]),
        "queued": sum(1 for w in states if w & 7 in (QL.FULL, QL.ORPHAN)), "peers": peers,
        "counters": {"skipped": v[QL.W_SKIPPED], "redelivered": v[QL.W_REDELIVERED],
                     "reaped": v[QL.W_REAPED], "orphans": v[QL.W_ORPHANS]},
    }
    if detail:
        out["slots"] = [QL.describe(w) for w in states]
    return out


def queue_gc_decision(o: QueueInfo) -> tuple[bool, str]:
    """Removable once its creator and every registered peer are dead."""
    creator = o["creator"]
    if creator["alive"] is None:
        return False, "queue: creator unknown (use rm)"
    if creator["alive"]:
        return False, f"creator pid {creator['pid']} is alive"
    live = [p["pid"] for p in o["peers"] if p["alive"]]
    if live:
        return False, f"creator dead, but peer pid {', '.join(map(str, live))} alive"
    return True, f"creator pid {creator['pid']} is dead, no live peer"


def remove_queue(name: str, identity: Optional[tuple[int, int]]) -> list[str]:
    """Unlink ``/X_q`` (only if it is still ``identity`` when given) and its semaphores."""
    removed = []
    if identity is None:
        try:
            libc.shm_unlink(name)
            removed.append(name)
        except FileNotFoundError:
            pass
    elif _shm.unlink_if_same(name, identity):
        removed.append(name)
    for s in (name + QL.SEM_ITEMS, name + QL.SEM_SPACE):
        if os.path.exists(sem_path(s)):
            NamedSemaphore.unlink_name(s)
            removed.append(s)
    return removed


def format_queue_row(o: QueueInfo, size: str, alloc: str, users: str) -> list[str]:
    sems = "ok" if len(o["semaphores"]) == 2 else str(len(o["semaphores"]))
    live = sum(1 for p in o["peers"] if p["alive"])
    return ["queue", o["name"], size, alloc, o["state"], f"{o['queued']} queued",
            str(o["capacity"]), str(o["slot_size"]), sems, o["creator"]["text"],
            f"{live} peers", "-", users]


def format_queue_stat(o: QueueInfo, kv: Any) -> None:
    kv("state", o["state"])
    kv("creator", o["creator"]["text"])
    kv("geometry", f"capacity {o['capacity']}, slot_size {o['slot_size']}")
    kv("queued", o["queued"])
    kv("peers", ", ".join(f"{p['pid']} ({'alive' if p['alive'] else 'dead'})"
                          for p in o["peers"]) or "none")
    kv("counters", ", ".join(f"{k} {v}" for k, v in o["counters"].items()))
    kv("semaphores", ", ".join(o["semaphores"]) or "none")
    for i, s in enumerate(o.get("slots", [])):
        kv(f"slot {i}", s)
