"""Inspection of one ring or ring semaphore: what ``ls`` and ``stat`` report (segments:
``ops.segments``).

Nothing is modified: a ring's header words are mapped **read-only** (its creator always
writes that page), length records are read with ``pread`` (a read fault through a mapping
would allocate tmpfs pages of a sparse object, ``pread`` of a hole does not), nothing
registers as producer or consumer, and semaphores are opened existing-only.
"""

from __future__ import annotations

import os
import stat as stat_mod
from typing import Callable, Optional, TypeVar, cast

from .. import _liveness, _shm, layout as L
from ..semaphore import NamedSemaphore
from ._common import NOT_A_RING, OPERATIONS, SEM_T_SIZE, STATES_FIN, sem_path, shm_path
from ._scan import Mappers
from .schema import (
    CrashInfo,
    Extension,
    Party,
    RingInfo,
    SemaphoreInfo,
    SemState,
    SlotInfo,
    StatsInfo,
    _RingBase,
    _SemaphoreBase,
    _StatFields,
)

__all__ = ["inspect_ring", "inspect_semaphore", "party", "read_ring_header",
           "read_shm", "sem_suffix", "stat_fields", "stats_info"]

_T = TypeVar("_T")

_RUNNING_STATES = ("running", "abandoned", "finished", "crashed")


def party(pid: int, start: int, *, unknown: bool = False) -> Optional[Party]:
    """A registered process: pid, start time, alive (None when none is registered)."""
    if pid == 0:
        if unknown:
            return {"pid": None, "start": None, "alive": None, "text": "unknown"}
        return None
    alive = _liveness.is_alive(pid, start)
    return {"pid": pid, "start": start, "alive": alive,
            "text": f"{pid} ({'alive' if alive else 'dead'})"}


def _no_party(text: str) -> Party:
    return {"pid": None, "start": None, "alive": None, "text": text}


def _mode(st: os.stat_result) -> str:
    return f"{stat_mod.S_IMODE(st.st_mode):04o}"


def read_shm(name: str, read: Callable[[int, os.stat_result], _T]) -> Optional[_T]:
    """``read(fd, stat)`` on the shm object ``name`` opened read-only (``_shm.read_existing``:
    None if it does not exist or is not ours to read); the fd is closed whatever ``read``
    does."""
    return _shm.read_existing(name, lambda fd: read(fd, os.fstat(fd)))


def stat_fields(name: str, path: str, st: os.stat_result, mappers: Mappers) -> _StatFields:
    """The fields every object record starts with (after ``kind``), from its ``stat``."""
    return {"name": name, "path": path, "size": st.st_size, "allocated": st.st_blocks * 512,
            "mode": _mode(st), "uid": st.st_uid, "users": mappers.pids(st)}


def sem_state(name: str, with_value: bool) -> SemState:
    """Existence (and value) of the named semaphore ``name``, opening it existing-only."""
    info: SemState = {"name": name, "exists": False}
    try:
        st = os.stat(sem_path(name))
    except FileNotFoundError:
        return info
    except OSError as e:
        info["error"] = e.strerror or str(e)
        return info
    info["exists"] = True
    info["identity"] = [st.st_dev, st.st_ino]
    if not with_value:
        return info
    if st.st_size < SEM_T_SIZE:
        info["error"] = f"not a semaphore ({st.st_size} bytes)"
        return info
    try:
        s = NamedSemaphore(name, wait_mode="polling")  # never O_CREAT
    except OSError as e:
        info["error"] = e.strerror or str(e)
        return info
    try:
        info["value"] = s.value()
    finally:
        s.close()
    return info


def read_ring_header(fd: int, mapped: bool, name: str) -> L.HeaderSnapshot:
    """:func:`ctshm.layout.read_header` of ``fd``'s header words, mapped read-only; all
    zero without mapping anything when ``mapped`` is False (nothing written yet)."""
    if not mapped:
        return L.HeaderSnapshot()
    m = _shm.Mapping(fd, L.HEADER_WORDS_SIZE, writable=False, name=name)
    v = m.view()
    try:
        return L.read_header(v)
    finally:
        v.release()


# ---------------------------------------------------------------------------------------------
# Ring state
# ---------------------------------------------------------------------------------------------

Verdict = tuple[str, Optional[str]]


def _extension_verdict(h: L.HeaderSnapshot) -> Optional[Verdict]:
    if h.magic not in (0, L.MAGIC):
        return "corrupt", f"extension magic {h.magic:#x} is neither ctshm's nor 0 (Rust)"
    if not h.is_ctshm:
        return None
    if h.version not in L.VERSIONS_READ:
        return "corrupt", f"unsupported ctshm extension version {h.version}"
    if h.ext_state == L.STATE_READY:
        return None
    if h.ext_state != 0:
        return "corrupt", f"extension state {h.ext_state} (0 initializing, 1 ready)"
    return "initializing", "the ctshm creator has not finished initializing"


def _geometry_verdict(h: L.HeaderSnapshot, size: int, ring_name: str) -> Optional[Verdict]:
    cap, slot = h.capacity, h.slot_size
    if cap == 0 or slot == 0:
        if h.is_ctshm:  # a ready ctshm ring always has its geometry
            return "corrupt", f"capacity {cap}, slot_size {slot} in a ready ctshm ring"
        return "initializing", f"header not initialized (capacity {cap}, slot_size {slot})"
    problem = L.validate_geometry(ring_name, cap, slot, size)
    if problem:
        return "corrupt", problem
    r, res, w = h.read_idx, h.reserved_idx, h.write_idx
    if not r <= res <= w <= r + cap:
        return "corrupt", (f"indices write={w} read={r} reserved={res} capacity={cap} (need "
                           "read <= reserved <= write <= read + capacity)")
    if h.finished not in STATES_FIN:
        return "corrupt", f"finished={h.finished} (0 running, 1 finished, 2 crashed)"
    return None


def _semaphore_verdict(h: L.HeaderSnapshot, sems: list[SemState]) -> Optional[Verdict]:
    missing = [s["name"] for s in sems if not s["exists"]]
    if not missing:
        return None
    if h.is_ctshm:
        plural = "s" if len(missing) > 1 else ""
        return "corrupt", f"semaphore{plural} {', '.join(missing)} missing (removed by hand?)"
    return "initializing", f"semaphore {missing[0]} not created yet (or removed)"


def ring_state(h: L.HeaderSnapshot, size: int, sems: list[SemState], ring_name: str
               ) -> Verdict:
    """(state, reason): running / finished / crashed / initializing / corrupt."""
    verdict = (_extension_verdict(h) or _geometry_verdict(h, size, ring_name)
               or _semaphore_verdict(h, sems))
    if verdict is not None:
        return verdict
    return STATES_FIN[h.finished], None


def _classify(h: L.HeaderSnapshot, st: os.stat_result, sems: list[SemState], name: str
              ) -> Verdict:
    """The ring's state, including "not a ring" and an object smaller than a header."""
    if st.st_size < L.HEADER_SIZE:
        reason = (f"the object is {st.st_size} bytes, smaller than a ring header "
                  f"({L.HEADER_SIZE}): not sized yet, or not a ring")
        if st.st_size >= L.HEADER_WORDS_SIZE and (h.capacity or h.magic):
            return "corrupt", reason
        return "initializing", reason
    verdict = ring_state(h, st.st_size, sems, name)
    cap, slot = h.capacity, h.slot_size
    problem = L.validate_geometry(name, cap, slot, st.st_size) if cap and slot else None
    if problem and not h.is_ctshm:  # no ctshm magic, and a header that does not match
        return NOT_A_RING, ("no ctshm magic, and the header does not match the object: "
                            f"{problem}")  # nor a Rust ring
    return verdict


# ---------------------------------------------------------------------------------------------
# Ring details
# ---------------------------------------------------------------------------------------------


def slots(fd: int, h: L.HeaderSnapshot, empty_value: Optional[int]) -> list[SlotInfo]:
    """Per-slot state derived from the indices (and the ``empty`` count for a slot being
    written), plus the length record where its tag names the message in the slot."""
    cap, r, res, w = h.capacity, h.read_idx, h.reserved_idx, h.write_idx
    out: list[SlotInfo] = [{"slot": k, "state": "free", "message": None, "length": None}
                           for k in range(cap)]
    records = b""
    if cap <= L.MAX_LEN_RECORDS:  # the ring from byte 0 through its last length record
        records = os.pread(fd, L.len_record_offset(cap), 0)
    for i in range(r, w):
        k = i % cap
        s = out[k]
        s["state"] = "reserved-by-consumer" if i < res else "committed-unread"
        s["message"] = i
        if len(records) >= L.len_record_offset(k + 1):
            tag, n = L.read_len_record(records, k)
            if tag == i + 1:
                s["length"] = n
    # Free slots hold one `empty` token each, except the one a producer has taken (compat
    # mode: in fast mode the semaphores carry wake-ups only and say nothing of slots).
    if (h.mode == L.MODE_COMPAT and empty_value is not None
            and 0 <= empty_value < cap - (w - r) and h.finished == 0):
        s = out[w % cap]
        s["state"], s["message"] = "being-written", w
    return out


def stats_info(h: L.HeaderSnapshot) -> StatsInfo:
    """Both sides' live counters (``stat``'s ``stats``)."""
    p, c = h.producer_stats, h.consumer_stats
    return {
        "producer": {"messages": p.messages, "bytes": p.bytes, "waits": p.waits,
                     "wakeups": p.wakeups, "spins": p.spins},
        "consumer": {"messages": c.messages, "bytes": c.bytes, "waits": c.waits,
                     "wakeups": c.wakeups, "spins": c.spins},
    }


def _extension(h: L.HeaderSnapshot) -> Extension:
    magic = h.magic
    return {
        "magic": f"{magic:#018x}",
        "magic_text": magic.to_bytes(8, "little").decode("latin-1") if magic else "",
        "version": h.version,
        "state": {0: "initializing", 1: "ready"}.get(h.ext_state, str(h.ext_state)),
        "creator_pid": h.creator.pid, "creator_start": h.creator.start,
        "nonce": f"{h.nonce:#018x}",
        "producer_pid": h.producer.pid, "producer_start": h.producer.start,
        "consumer_pid": h.consumer.pid, "consumer_start": h.consumer.start,
        "len_records": h.len_records, "dead_pid": h.dead_pid, "crash_w": h.crash_w,
        "mode": "fast" if h.mode == L.MODE_FAST else "compat",
        "c_sleep": h.c_sleep, "p_sleep": h.p_sleep,
    }


def _creator(h: L.HeaderSnapshot, state: str) -> Party:
    if state == NOT_A_RING:
        return _no_party(NOT_A_RING)
    if not h.is_ctshm:  # a Rust ring has its geometry; an empty object has nothing yet
        return _no_party("unknown (Rust peer)" if h.capacity else
                         "unknown (nothing written yet: being created, or its creator died)")
    p = party(h.creator.pid, h.creator.start)
    if p is None:
        return {"pid": 0, "start": 0, "alive": False, "text": "none"}
    return p


def _ring_sems(name: str, detail: bool, mappers: Mappers) -> list[SemState]:
    sems = [sem_state(name + s, detail) for s in L.SEM_SUFFIXES]
    for s in sems:
        if s["exists"]:
            try:
                s["users"] = mappers.pids(os.stat(sem_path(s["name"])))
            except OSError:
                s["users"] = None
    return sems


def _ring_info(name: str, st: os.stat_result, h: L.HeaderSnapshot, sems: list[SemState],
               mappers: Mappers) -> RingInfo:
    state, reason = _classify(h, st, sems, name)
    creator = _creator(h, state)
    if state == "running" and h.is_ctshm and creator["alive"] is False:
        state, reason = "abandoned", (f"running, but its creator (pid {creator['pid']}) is "
                                      "dead: nobody will remove it (`python -m ctshm gc`)")
    is_ring = state != NOT_A_RING
    # A ctshm peer registers itself in the extension even on a Rust-created ring.
    unknown = not h.is_ctshm and is_ring
    crash: CrashInfo = {"signal": h.crash_signal, "addr": h.crash_addr,
                        "operation": h.crash_operation,
                        "message": h.crash_message.decode("utf-8", "replace")
                        if h.is_ctshm else ""}
    # Typed as the base: a ** item may not leave RingInfo's stat-only keys out.
    info: _RingBase = {
        "kind": "ring",
        **stat_fields(name, shm_path(name), st, mappers),
        "id": name[1:-len(L.RING_SUFFIX)],
        "identity": [st.st_dev, st.st_ino],
        "semaphores": sems,
        "state": state,
        "state_reason": reason,
        "ctshm": h.is_ctshm,
        "write_idx": h.write_idx, "read_idx": h.read_idx, "reserved_idx": h.reserved_idx,
        "capacity": h.capacity, "slot_size": h.slot_size, "finished": h.finished,
        "crash": crash,
        "creator": creator,
        "producer": party(*h.producer, unknown=unknown) if is_ring else None,
        "consumer": party(*h.consumer, unknown=unknown) if is_ring else None,
        "dead_pid": h.dead_pid,
        "backlog": h.backlog if is_ring else None,
        "stats": stats_info(h) if is_ring else None,
    }
    return cast(RingInfo, info)


def inspect_ring(name: str, mappers: Optional[Mappers] = None, detail: bool = False
                 ) -> Optional[RingInfo]:
    """Everything about the ring ``/X_t`` (None if it does not exist); ``detail``: also the
    extension words, semaphore values and every slot (``stat``)."""
    maps = mappers if mappers is not None else Mappers()

    def read(fd: int, st: os.stat_result) -> RingInfo:
        sems = _ring_sems(name, detail, maps)
        # Map the header only if something was written (a sparse object reads as zero).
        h = read_ring_header(fd, st.st_size >= L.HEADER_WORDS_SIZE and st.st_blocks > 0, name)
        info = _ring_info(name, st, h, sems, maps)
        if detail:
            info["extension"] = _extension(h)
            op = h.crash_operation
            info["crash"]["operation_text"] = OPERATIONS.get(op, str(op))
            info["slots"] = []
            if info["state"] in _RUNNING_STATES:
                empty = sems[1].get("value")
                info["slots"] = slots(fd, h, empty if isinstance(empty, int) else None)
        return info

    return read_shm(name, read)


# ---------------------------------------------------------------------------------------------
# Semaphores (segments: ops.segments)
# ---------------------------------------------------------------------------------------------


def sem_suffix(name: str) -> str:
    """``_filled`` / ``_empty`` if ``name`` is a ring semaphore's name, else ``""``."""
    for s in L.SEM_SUFFIXES:
        if name.endswith(L.RING_SUFFIX + s):
            return s
    return ""


def inspect_semaphore(name: str, mappers: Optional[Mappers] = None, detail: bool = False
                      ) -> Optional[SemaphoreInfo]:
    """A ring semaphore ``/X_t_filled`` or ``/X_t_empty`` as an object of its own."""
    mappers = mappers if mappers is not None else Mappers()
    try:
        st = os.stat(sem_path(name))
    except FileNotFoundError:
        return None
    ring = name[:-len(sem_suffix(name))]
    orphan = not os.path.exists(shm_path(ring))
    base: _SemaphoreBase = {
        "kind": "semaphore",
        **stat_fields(name, sem_path(name), st, mappers),
        "ring": ring,
        "identity": [st.st_dev, st.st_ino],
        "orphan": orphan,
        "state": "orphan" if orphan else None,
    }
    info = cast(SemaphoreInfo, base)
    if detail:
        s = sem_state(name, True)
        if "value" in s:
            info["value"] = s["value"]
        if "error" in s:
            info["error"] = s["error"]
    return info
