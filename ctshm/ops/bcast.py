"""ShmBroadcast objects (``/X_b``) for ``ls``, ``stat``, ``rm`` and ``gc``.

The header is read with ``pread`` (never mapped: inspection changes nothing).  ``gc`` removes
a broadcast whose creator is dead and that no live writer or reader uses (and no process has
mapped or open); ``rm`` refuses one a live process uses unless forced.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .. import _bcast_layout as B
from ._common import shm_path
from ._scan import Mappers
from .inspect import party, read_shm, stat_fields
from .schema import BroadcastInfo

__all__ = ["broadcast_row", "broadcast_stat", "gc_decision_broadcast", "in_use_broadcast",
           "inspect_broadcast"]

NOT_A_BROADCAST = "not a broadcast"


def _words(fd: int, size: int) -> Optional[list[int]]:
    n = min(size, B.READERS_OFF + B.MAX_READERS_LIMIT * B.READER_SIZE)
    raw = os.pread(fd, n, 0)
    if len(raw) < B.READERS_OFF:
        return None
    raw = raw[:len(raw) // 8 * 8]
    return list(memoryview(raw).cast("Q"))


def inspect_broadcast(name: str, mappers: Optional[Mappers] = None
                      ) -> Optional[BroadcastInfo]:
    mappers = mappers if mappers is not None else Mappers()
    found = read_shm(name, lambda fd, st: (st, _words(fd, st.st_size)))
    if found is None:
        return None
    st, hq = found
    info: BroadcastInfo = {
        "kind": "broadcast", **stat_fields(name, shm_path(name), st, mappers),
        "id": name[1:-len(B.SUFFIX)],
        "identity": [st.st_dev, st.st_ino], "state": NOT_A_BROADCAST,
        "creator": None, "writer": None, "capacity": 0, "slot_size": 0, "max_readers": 0,
        "published": 0, "readers": []}
    if hq is None or hq[B.H_MAGIC] != B.MAGIC or hq[B.H_TOTAL] != st.st_size:
        return info
    info["creator"] = party(hq[B.CREATOR_PID], hq[B.CREATOR_START], unknown=True)
    info["writer"] = party(hq[B.WRITER_PID], hq[B.WRITER_START])
    info["capacity"], info["slot_size"] = hq[B.H_CAPACITY], hq[B.H_SLOT_SIZE]
    info["max_readers"], info["published"] = hq[B.H_MAX_READERS], hq[B.W]
    info["state"] = ("finished" if hq[B.FIN] else "crashed" if hq[B.CRASH] else "open")
    for i in range(min(int(hq[B.H_MAX_READERS]), B.MAX_READERS_LIMIT)):
        w = B.reader_word(i, B.R_STATE)
        if w + B.R_WAITS >= len(hq):
            break
        _gen, kind, pid = B.unpack(hq[w])
        if kind == B.FREE:
            continue
        start = hq[B.reader_word(i, B.R_START)] if kind != B.JOINING else 0
        p = party(pid, start)
        info["readers"].append({"slot": i, "state": B.KIND_NAMES[kind], "pid": pid,
                                "alive": bool(p and p["alive"]),
                                "lag": hq[B.W] - hq[B.reader_word(i, B.R_IDX)]})
    return info


def broadcast_row(o: BroadcastInfo, human: Any, users: str) -> list[str]:
    live = sum(1 for r in o["readers"] if r["alive"])
    w = o["writer"]
    return ["broadcast", o["name"], human(o["size"]), human(o["allocated"]), o["state"],
            f"{o['published']}", str(o["capacity"]), human(o["slot_size"]),
            f"{live}/{len(o['readers'])} readers",
            o["creator"]["text"] if o["creator"] else "-", w["text"] if w else "-", "-", users]


def broadcast_stat(o: BroadcastInfo, kv: Any) -> None:
    kv("state", o["state"])
    kv("creator", o["creator"]["text"] if o["creator"] else "-")
    kv("writer", o["writer"]["text"] if o["writer"] else "none")
    kv("geometry", f"capacity {o['capacity']}, slot {o['slot_size']} bytes, "
                   f"max_readers {o['max_readers']}")
    kv("published", o["published"])
    for r in o["readers"]:
        kv(f"reader {r['slot']}", f"pid {r['pid']} ({'alive' if r['alive'] else 'dead'}), "
                                  f"{r['state']}, {r['lag']} behind")


def _alive(o: BroadcastInfo) -> list[str]:
    out = [f"its {who} pid {p['pid']} is alive" for who, p in
           (("creator", o["creator"]), ("writer", o["writer"])) if p and p["alive"]]
    out += [f"its reader pid {r['pid']} is alive" for r in o["readers"] if r["alive"]]
    return out


def gc_decision_broadcast(o: BroadcastInfo) -> tuple[bool, str]:
    if o["state"] == NOT_A_BROADCAST:
        return False, "not a broadcast (bad header); gc never removes it (use rm)"
    alive = _alive(o)
    if alive:
        return False, alive[0]
    if o["users"]:
        return False, f"in use by pid {', '.join(map(str, o['users']))}"
    return True, "creator, writer and readers are dead"


def in_use_broadcast(name: str, mappers: Mappers) -> list[str]:
    o = inspect_broadcast(name, mappers)
    if o is None:
        return []
    why = _alive(o)
    if o["users"]:
        why.append(f"{name} is mapped or open by pid {', '.join(map(str, o['users']))}")
    return why
