"""Operations on the objects ctshm (or the Rust original) leaves in ``/dev/shm``.

``python -m ctshm ls | stat NAME | rm NAME | gc`` (each with ``--json``) dispatch here.

What is recognised (Linux keeps POSIX shm objects as ``/dev/shm/NAME`` and named semaphores
as ``/dev/shm/sem.NAME``)::

    /X_t                        ring        (ShmTraceRing, created by ctshm or by Rust)
    sem.X_t_filled, sem.X_t_empty  its semaphores; without /X_t: orphan semaphores
    /X_m                        segment     (ShmMemory; no header, so no owner information)

Inspection never modifies anything: a ring's first page (header + ctshm extension, always
written by its creator) is mapped **read-only**; its length records are read with
``pread`` (a read fault through a mapping would allocate tmpfs pages of a sparse object,
``pread`` of a hole does not); nothing registers as producer or consumer; semaphores are
opened existing-only (``sem_open`` without ``O_CREAT``) for ``sem_getvalue``.

Liveness: a ctshm ring records its creator's (and registered producer's / consumer's) pid and
start time, so a recycled pid is not taken for the creator.  A Rust-created ring (extension
magic 0) and a segment carry no owner: ``ls`` says "unknown (Rust peer)".  For every object,
``users`` lists the processes that have it mapped or open (``/proc/PID/maps`` and
``/proc/PID/fd``, matched by device and inode; best effort: without root, other users'
processes are not visible).

``gc`` removes ctshm rings whose creator is dead (ring + both semaphores) and orphan ring
semaphores nobody has mapped or open.  Rings without owner information and segments are
removed only with ``--include-unknown``, and even then only when no process uses them.
Every removal re-checks that the name still refers to the object that was inspected (a
successor that re-created the name is left alone).

``rm`` refuses an object a live process uses (a ring's creator, producer or consumer is
alive, or ``/proc`` shows a process with it mapped or open) unless ``--force`` is given.
A ``/X_t`` without ctshm's magic whose header geometry does not match its size is reported
as "not a ring" (``gc`` never removes one).

Exit codes: 0 ok, 1 not found, refused or error, 2 usage (argparse).  With ``--json``, an
error is printed as JSON on stdout: ``{"error": ..., "command": ..., "name": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat as stat_mod
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Optional

from . import _proc, _shm, layout as L, libc
from .semaphore import NamedSemaphore, sem_file_identity

__all__ = [
    "COMMANDS",
    "SHM_DIR",
    "add_subcommands",
    "collect",
    "gc",
    "inspect_ring",
    "inspect_segment",
    "inspect_semaphore",
    "remove",
    "resolve",
    "run",
]

SHM_DIR: Final = "/dev/shm"
COMMANDS: Final = ("ls", "stat", "rm", "gc")

RING_SUFFIX: Final = "_t"
SEGMENT_SUFFIX: Final = "_m"
SEM_SUFFIXES: Final = ("_filled", "_empty")

#: ``sizeof(sem_t)`` with glibc on 64-bit Linux.  A shorter ``sem.*`` file is not a semaphore:
#: ``sem_open`` would map it and ``sem_getvalue`` would die of SIGBUS.
_SEM_T_SIZE: Final = 32

_PAGE: Final = 4096
_STATES_FIN: Final = {0: "running", 1: "finished", 2: "crashed"}
#: The state of a ``/X_t`` whose header geometry does not match the object's size.
NOT_A_RING: Final = "not a ring"
_OPERATIONS: Final = {0: "unknown", 1: "read", 2: "write", 3: "exec"}


class OpsError(Exception):
    """A failure to report with exit code 1: on stderr, or with ``--json`` as a JSON object
    ``{"error": message, "command": ..., "name": ..., **details}`` on stdout."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


# ---------------------------------------------------------------------------------------------
# Who has an object mapped
# ---------------------------------------------------------------------------------------------


@dataclass
class _Mappers:
    """(st_dev, st_ino) -> pids that have the object mapped or open, from one scan of
    /proc/*/maps and /proc/*/fd (an fd alone: e.g. a creator between shm_open and mmap)."""

    by_inode: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    available: bool = False  # /proc readable at all
    unreadable: list[int] = field(default_factory=list)  # pids we may not inspect

    def pids(self, st: os.stat_result) -> Optional[list[int]]:
        if not self.available:
            return None
        return sorted(self.by_inode.get((st.st_dev, st.st_ino), ()))


def _scan_mappers() -> _Mappers:
    res = _Mappers()
    try:
        dev = os.stat(SHM_DIR).st_dev
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return res
    res.available = True
    dev_text = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    me = os.getpid()
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if dev_text not in line:
                        continue
                    parts = line.split(None, 5)
                    if len(parts) < 5 or parts[3] != dev_text:
                        continue
                    res.by_inode.setdefault((dev, int(parts[4])), set()).add(pid)
            fd_dir = f"/proc/{pid}/fd"
            for fd in os.listdir(fd_dir):
                try:
                    if not os.readlink(f"{fd_dir}/{fd}").startswith(SHM_DIR + "/"):
                        continue
                    st = os.stat(f"{fd_dir}/{fd}")
                except OSError:
                    continue  # closed meanwhile
                if st.st_dev == dev:
                    res.by_inode.setdefault((dev, st.st_ino), set()).add(pid)
        except PermissionError:
            res.unreadable.append(pid)
        except (OSError, ValueError):
            continue  # the process exited meanwhile
    return res


# ---------------------------------------------------------------------------------------------
# Inspection
# ---------------------------------------------------------------------------------------------


def _party(pid: int, start: int, *, unknown: bool = False) -> Optional[dict[str, Any]]:
    """A registered process: pid, start time, alive (None when none is registered)."""
    if pid == 0:
        if unknown:
            return {"pid": None, "start": None, "alive": None, "text": "unknown"}
        return None
    alive = _proc.is_alive(pid, start)
    return {"pid": pid, "start": start, "alive": alive,
            "text": f"{pid} ({'alive' if alive else 'dead'})"}


def _stat_info(kind: str, name: str, st: os.stat_result, mappers: _Mappers) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "path": SHM_DIR + "/" + name[1:] if kind != "semaphore" else SHM_DIR + "/sem." + name[1:],
        "size": st.st_size,
        "allocated": st.st_blocks * 512,
        "mode": f"{stat_mod.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "users": mappers.pids(st),
    }


def _sem_state(name: str, with_value: bool) -> dict[str, Any]:
    """Existence (and value) of the named semaphore ``name``, opening it existing-only."""
    path = SHM_DIR + "/sem." + name[1:]
    info: dict[str, Any] = {"name": name, "exists": False}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return info
    except OSError as e:
        info["error"] = e.strerror
        return info
    info["exists"] = True
    info["identity"] = [st.st_dev, st.st_ino]
    if not with_value:
        return info
    if st.st_size < _SEM_T_SIZE:
        info["error"] = f"not a semaphore ({st.st_size} bytes)"
        return info
    try:
        s = NamedSemaphore(name, wait_mode="polling")  # never O_CREAT
    except OSError as e:
        info["error"] = e.strerror
        return info
    try:
        info["value"] = s.value()
    finally:
        s.close()
    return info


def _read_header(fd: int, mapped: bool, name: str) -> tuple[dict[str, int], bytes]:
    """The header and extension words from page 0, mapped read-only, and the raw crash
    message.

    Indices are read in the order read, reserved, write (each monotonic), so ``read <=
    reserved <= write`` holds in the snapshot even while peers run (retried a few times if
    ``write - read > capacity``).  A peer's (pid, start) pair is read as its writer publishes
    it (pid 0 while changing, start, pid): pid, start, pid again until both pids agree.
    """
    words: list[int] = [0] * (_PAGE // 8)
    crash: tuple[int, int, int] = (0, 0, 0)
    msg = b""
    if not mapped:  # nothing written yet: all zero, map nothing
        return _header_dict(words, crash), msg
    m = _shm.Mapping(fd, _PAGE, writable=False, name=name)
    v = m.view()
    hq = v.cast("Q")
    try:
        for _ in range(5):
            r, res, w = int(hq[L.READ_IDX]), int(hq[L.RESERVED_IDX]), int(hq[L.WRITE_IDX])
            if w - r <= int(hq[L.CAPACITY]):
                break
        words = [int(x) for x in hq]
        words[L.READ_IDX], words[L.RESERVED_IDX], words[L.WRITE_IDX] = r, res, w
        for pid_word in (L.PRODUCER_PID, L.CONSUMER_PID):
            for _ in range(100):
                pid, start = int(hq[pid_word]), int(hq[pid_word + 1])
                if int(hq[pid_word]) == pid:
                    break
            words[pid_word], words[pid_word + 1] = pid, start
        crash = L.CRASH.unpack_from(v, L.CRASH_OFF)
        n = min(struct.unpack_from("<I", v, L.MSG_OFF)[0], L.MSG_MAX)
        msg = bytes(v[L.MSG_OFF + 4:L.MSG_OFF + 4 + n])
    finally:
        hq.release()
        v.release()
    return _header_dict(words, crash), msg


_WORDS: Final = L.WORDS


def _header_dict(words: list[int], crash: tuple[int, int, int]) -> dict[str, int]:
    h = {k: words[i] for k, i in _WORDS.items()}
    h["crash_signal"], h["crash_addr"], h["crash_operation"] = crash
    return h


def _ring_state(h: dict[str, int], size: int, sems: list[dict[str, Any]], ring_name: str
                ) -> tuple[str, Optional[str]]:
    """(state, reason): running / finished / crashed / initializing / corrupt."""
    magic = h["magic"]
    is_ctshm = magic == L.MAGIC
    if magic not in (0, L.MAGIC):
        return "corrupt", f"extension magic {magic:#x} is neither ctshm's nor 0 (Rust)"
    if is_ctshm and h["version"] != L.VERSION:
        return "corrupt", f"unsupported ctshm extension version {h['version']}"
    if is_ctshm and h["ext_state"] != L.STATE_READY:
        if h["ext_state"] != 0:
            return "corrupt", f"extension state {h['ext_state']} (0 initializing, 1 ready)"
        return "initializing", "the ctshm creator has not finished initializing"
    cap, slot = h["capacity"], h["slot_size"]
    if cap == 0 or slot == 0:
        if is_ctshm:  # a ready ctshm ring always has its geometry
            return "corrupt", f"capacity {cap}, slot_size {slot} in a ready ctshm ring"
        return "initializing", f"header not initialized (capacity {cap}, slot_size {slot})"
    problem = L.validate_geometry(ring_name, cap, slot, size)
    if problem:
        return "corrupt", problem
    r, res, w, fin = h["read_idx"], h["reserved_idx"], h["write_idx"], h["finished"]
    if not r <= res <= w <= r + cap:
        return "corrupt", (f"indices write={w} read={r} reserved={res} capacity={cap} (need "
                           "read <= reserved <= write <= read + capacity)")
    if fin not in _STATES_FIN:
        return "corrupt", f"finished={fin} (0 running, 1 finished, 2 crashed)"
    missing = [s["name"] for s in sems if not s["exists"]]
    if missing:
        if is_ctshm:
            return "corrupt", f"semaphore{'s' if len(missing) > 1 else ''} " \
                              f"{', '.join(missing)} missing (removed by hand?)"
        return "initializing", f"semaphore {missing[0]} not created yet (or removed)"
    return _STATES_FIN[fin], None


def _slots(fd: int, h: dict[str, int], empty_value: Optional[int]) -> list[dict[str, Any]]:
    """Per-slot state derived from the indices (and the ``empty`` count for a slot being
    written), plus the length record where its tag names the message in the slot."""
    cap, r, res, w = h["capacity"], h["read_idx"], h["reserved_idx"], h["write_idx"]
    slots: list[dict[str, Any]] = [{"slot": k, "state": "free", "message": None,
                                    "length": None} for k in range(cap)]
    records: Optional[bytes] = None
    if cap <= L.MAX_LEN_RECORDS:
        records = os.pread(fd, 16 * cap, L.LEN_OFF)
    for i in range(r, w):
        s = slots[i % cap]
        s["state"] = "reserved-by-consumer" if i < res else "committed-unread"
        s["message"] = i
        if records is not None and len(records) >= 16 * (i % cap + 1):
            tag, n = struct.unpack_from("<QQ", records, 16 * (i % cap))
            if tag == i + 1:
                s["length"] = n
    # Free slots hold one `empty` token each, except the one a producer has taken.
    if (empty_value is not None and 0 <= empty_value < cap - (w - r)
            and h["finished"] == 0):
        s = slots[w % cap]
        s["state"], s["message"] = "being-written", w
    return slots


def inspect_ring(name: str, mappers: Optional[_Mappers] = None, detail: bool = False
                 ) -> Optional[dict[str, Any]]:
    """Everything about the ring ``/X_t`` (None if it does not exist)."""
    mappers = mappers if mappers is not None else _Mappers()
    try:
        fd = libc.shm_open(name, libc.O_RDONLY, 0)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        info = _stat_info("ring", name, st, mappers)
        info["id"] = name[1:-len(RING_SUFFIX)]
        info["identity"] = [st.st_dev, st.st_ino]
        sems = [_sem_state(name + s, detail) for s in SEM_SUFFIXES]
        info["semaphores"] = sems
        for s in sems:
            if s["exists"]:
                try:
                    sst = os.stat(SHM_DIR + "/sem." + s["name"][1:])
                    s["users"] = mappers.pids(sst)
                except OSError:
                    s["users"] = None
        # Map page 0 only if something was written (a sparse object reads as zero).
        h, crash_msg = _read_header(fd, st.st_size >= _PAGE and st.st_blocks > 0, name)
        is_ctshm = h["magic"] == L.MAGIC
        if st.st_size < L.HEADER_SIZE:
            state: str = "initializing"
            reason: Optional[str] = (f"the object is {st.st_size} bytes, smaller than a ring "
                                     f"header ({L.HEADER_SIZE}): not sized yet, or not a "
                                     "ring")
            if st.st_size >= _PAGE and (h["capacity"] or h["magic"]):
                state = "corrupt"
        else:
            state, reason = _ring_state(h, st.st_size, sems, name)
            cap, slot = h["capacity"], h["slot_size"]
            problem = L.validate_geometry(name, cap, slot, st.st_size) if cap and slot \
                else None
            if problem and not is_ctshm:  # no ctshm magic, and a header that does not
                state, reason = NOT_A_RING, ("no ctshm magic, and the header does not match "
                                             f"the object: {problem}")  # nor a Rust ring
        info["state"] = state
        info["state_reason"] = reason
        info["ctshm"] = is_ctshm
        for k in ("write_idx", "read_idx", "reserved_idx", "capacity", "slot_size",
                  "finished"):
            info[k] = h[k]
        info["crash"] = {"signal": h["crash_signal"], "addr": h["crash_addr"],
                         "operation": h["crash_operation"],
                         "message": crash_msg.decode("utf-8", "replace") if is_ctshm else ""}
        if state == NOT_A_RING:
            info["creator"] = {"pid": None, "start": None, "alive": None, "text": NOT_A_RING}
        elif is_ctshm:
            info["creator"] = _party(h["creator_pid"], h["creator_start"])
            if info["creator"] is None:
                info["creator"] = {"pid": 0, "start": 0, "alive": False, "text": "none"}
        else:
            info["creator"] = {"pid": None, "start": None, "alive": None,
                               "text": "unknown (Rust peer)"}
        # A ctshm peer registers itself in the extension even on a Rust-created ring.
        unknown = not is_ctshm and state != NOT_A_RING
        info["producer"] = _party(h["producer_pid"], h["producer_start"], unknown=unknown) \
            if state != NOT_A_RING else None
        info["consumer"] = _party(h["consumer_pid"], h["consumer_start"], unknown=unknown) \
            if state != NOT_A_RING else None
        info["dead_pid"] = h["dead_pid"]
        if detail:
            magic = h["magic"]
            info["extension"] = {
                "magic": f"{magic:#018x}",
                "magic_text": magic.to_bytes(8, "little").decode("latin-1")
                if magic else "",
                "version": h["version"],
                "state": {0: "initializing", 1: "ready"}.get(h["ext_state"],
                                                             str(h["ext_state"])),
                "creator_pid": h["creator_pid"], "creator_start": h["creator_start"],
                "nonce": f"{h['nonce']:#018x}",
                "producer_pid": h["producer_pid"], "producer_start": h["producer_start"],
                "consumer_pid": h["consumer_pid"], "consumer_start": h["consumer_start"],
                "len_records": h["len_records"], "dead_pid": h["dead_pid"],
            }
            op = h["crash_operation"]
            info["crash"]["operation_text"] = _OPERATIONS.get(op, str(op))
            if state in ("running", "finished", "crashed"):
                empty = sems[1].get("value")
                info["slots"] = _slots(fd, h, empty if isinstance(empty, int) else None)
            else:
                info["slots"] = []
        return info
    finally:
        os.close(fd)


def inspect_segment(name: str, mappers: Optional[_Mappers] = None
                    ) -> Optional[dict[str, Any]]:
    """Size, allocation and users of the segment ``/X_m`` (None if it does not exist)."""
    mappers = mappers if mappers is not None else _Mappers()
    try:
        fd = libc.shm_open(name, libc.O_RDONLY, 0)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    info = _stat_info("segment", name, st, mappers)
    info["id"] = name[1:-len(SEGMENT_SUFFIX)]
    info["identity"] = [st.st_dev, st.st_ino]
    info["state"] = None
    info["creator"] = {"pid": None, "start": None, "alive": None,
                       "text": "unknown (no owner record)"}
    return info


def inspect_semaphore(name: str, mappers: Optional[_Mappers] = None, detail: bool = False
                      ) -> Optional[dict[str, Any]]:
    """A ring semaphore ``/X_t_filled`` or ``/X_t_empty`` as an object of its own."""
    mappers = mappers if mappers is not None else _Mappers()
    try:
        st = os.stat(SHM_DIR + "/sem." + name[1:])
    except FileNotFoundError:
        return None
    info = _stat_info("semaphore", name, st, mappers)
    ring = name[:-len(_sem_suffix(name))]
    info["ring"] = ring
    info["identity"] = [st.st_dev, st.st_ino]
    info["orphan"] = not os.path.exists(SHM_DIR + "/" + ring[1:])
    info["state"] = "orphan" if info["orphan"] else None
    if detail:
        s = _sem_state(name, True)
        if "value" in s:
            info["value"] = s["value"]
        if "error" in s:
            info["error"] = s["error"]
    return info


def _sem_suffix(name: str) -> str:
    for s in SEM_SUFFIXES:
        if name.endswith(RING_SUFFIX + s):
            return s
    return ""


# ---------------------------------------------------------------------------------------------
# Listing and name resolution
# ---------------------------------------------------------------------------------------------


def _entries() -> list[str]:
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        raise OpsError(f"{SHM_DIR} does not exist: listing shared memory objects needs Linux "
                       "(macOS cannot enumerate POSIX shm names)") from None
    out = []
    for e in names:
        try:
            if stat_mod.S_ISREG(os.lstat(os.path.join(SHM_DIR, e)).st_mode):
                out.append(e)
        except OSError:
            continue  # removed meanwhile
    return sorted(out)


def collect(prefix: str = "", mappers: Optional[_Mappers] = None, detail: bool = False
            ) -> list[dict[str, Any]]:
    """Every ring, segment and orphan ring semaphore in /dev/shm whose name (without the
    leading slash) starts with ``prefix``."""
    entries = _entries()
    present = set(entries)
    mappers = mappers if mappers is not None else _scan_mappers()
    out: list[dict[str, Any]] = []
    for e in entries:
        if e.startswith("sem.") or not e.startswith(prefix):
            continue
        info: Optional[dict[str, Any]] = None
        if e.endswith(RING_SUFFIX):
            info = inspect_ring("/" + e, mappers, detail)
        elif e.endswith(SEGMENT_SUFFIX):
            info = inspect_segment("/" + e, mappers)
        if info is not None:
            out.append(info)
    for e in entries:
        if not e.startswith("sem." + prefix):
            continue
        sem = "/" + e[4:]
        suffix = _sem_suffix(sem)
        if not suffix:
            continue
        if sem[1:-len(suffix)] in present:
            continue  # belongs to a ring listed above
        info = inspect_semaphore(sem, mappers, detail)
        if info is not None:
            out.append(info)
    return out


def _body(arg: str) -> str:
    body = arg
    if body.startswith(SHM_DIR + "/"):
        body = body[len(SHM_DIR) + 1:]
    elif body.startswith("/"):
        body = body[1:]
    if body.startswith("sem."):
        body = body[4:]
    if not body or "/" in body or "\0" in body:
        raise OpsError(f"{arg!r} is not a ctshm name: give an id ('trace1'), an object name "
                       "('/trace1_t', '/trace1_m') or a semaphore name ('/trace1_t_filled')")
    return body


def _ring_group_exists(ring: str) -> bool:
    if os.path.exists(SHM_DIR + "/" + ring[1:]):
        return True
    return any(os.path.exists(SHM_DIR + "/sem." + ring[1:] + s) for s in SEM_SUFFIXES)


def resolve(arg: str) -> list[tuple[str, str]]:
    """What ``arg`` names: ``[(kind, name)]`` with kind ``ring`` (``/X_t``, including its
    semaphores, or only orphan semaphores) or ``segment`` (``/X_m``).

    An object or semaphore name (``X_t``, ``/X_m``, ``/X_t_filled``, ``sem.X_t_empty``, a
    path under /dev/shm) names that object if it exists; otherwise ``arg`` is taken as an id:
    everything ctshm has under it (its ring and its segment).
    """
    body = _body(arg)
    exact: list[tuple[str, str]] = []
    sfx = _sem_suffix("/" + body)
    if sfx:
        exact.append(("ring", "/" + body[:-len(sfx)]))
    elif body.endswith(RING_SUFFIX):
        exact.append(("ring", "/" + body))
    elif body.endswith(SEGMENT_SUFFIX):
        exact.append(("segment", "/" + body))
    found = [t for t in exact if _exists(*t)]
    if found:
        return found
    as_id = [("ring", "/" + body + RING_SUFFIX), ("segment", "/" + body + SEGMENT_SUFFIX)]
    return [t for t in as_id if _exists(*t)]


def _exists(kind: str, name: str) -> bool:
    if kind == "ring":
        return _ring_group_exists(name)
    return os.path.exists(SHM_DIR + "/" + name[1:])


# ---------------------------------------------------------------------------------------------
# Removal
# ---------------------------------------------------------------------------------------------


def _unlink_sem(name: str, identity: Optional[tuple[int, int]]) -> bool:
    if identity is not None and sem_file_identity(name) != identity:
        return False
    try:
        NamedSemaphore.unlink_name(name, missing_ok=False)
    except FileNotFoundError:
        return False
    return True


def _unlink_shm(name: str, identity: Optional[tuple[int, int]]) -> bool:
    if identity is not None:
        return _shm.unlink_if_same(name, identity)
    try:
        libc.shm_unlink(name)
    except FileNotFoundError:
        return False
    return True


def remove(kind: str, name: str, info: Optional[dict[str, Any]] = None) -> list[str]:
    """Remove a ring (object + both semaphores) or a segment; return the names removed.

    With ``info`` (from :func:`collect`), only the very objects inspected are removed: a name
    that now refers to a successor's object is left alone.
    """
    removed: list[str] = []
    ident: Optional[tuple[int, int]] = None
    if info is not None and info.get("identity") and info["kind"] != "semaphore":
        ident = (info["identity"][0], info["identity"][1])
        if _shm.name_identity(name) != ident:
            return removed  # replaced since we looked
    if kind == "ring":
        sem_idents: dict[str, Optional[tuple[int, int]]] = {}
        if info is not None:
            for s in info.get("semaphores", ()):
                if s.get("exists") and s.get("identity"):
                    sem_idents[s["name"]] = (s["identity"][0], s["identity"][1])
            if info["kind"] == "semaphore":
                sem_idents[info["name"]] = (info["identity"][0], info["identity"][1])
        for sfx in SEM_SUFFIXES:
            s = name + sfx
            if info is not None and s not in sem_idents:
                continue
            if _unlink_sem(s, sem_idents.get(s)):
                removed.append(s)
        if (info is None or info["kind"] == "ring") and _unlink_shm(name, ident):
            removed.insert(0, name)
    else:
        if _unlink_shm(name, ident):
            removed.append(name)
    return removed


def _gc_decision(o: dict[str, Any], include_unknown: bool) -> tuple[bool, str]:
    users = o.get("users")
    in_use = f"in use by pid {', '.join(map(str, users))}" if users else ""
    if o["kind"] == "semaphore":
        if users is None:
            return False, "orphan semaphore; cannot tell who has it open (no /proc)"
        if users:
            return False, f"orphan semaphore, but {in_use}"
        return True, f"orphan semaphore: ring {o['ring']} is gone, unused"
    creator = o.get("creator") or {}
    if o["kind"] == "ring" and o.get("ctshm"):
        if creator.get("alive"):
            return False, f"creator pid {creator['pid']} is alive"
        why = f"creator pid {creator.get('pid')} is dead"
        return True, why + (f" (still {in_use})" if in_use else "")
    if o["kind"] == "ring" and o.get("state") == NOT_A_RING:
        return False, f"not a ring ({o['state_reason']}); gc never removes it (use rm)"
    what = "Rust-created ring" if o["kind"] == "ring" else "segment"
    if not include_unknown:
        return False, f"{what}: owner unknown (pass --include-unknown)"
    if users is None:
        return False, f"{what}: owner unknown and users unknown (no /proc)"
    if users:
        return False, f"{what}: owner unknown, {in_use}"
    return True, f"{what}: owner unknown, used by no process"


def gc(prefix: str = "", include_unknown: bool = False, dry_run: bool = False
       ) -> dict[str, Any]:
    """Remove objects whose owners are dead (see the module docstring)."""
    objs = collect(prefix)
    removed: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for o in objs:
        go, why = _gc_decision(o, include_unknown)
        entry = {"kind": o["kind"], "name": o["name"], "reason": why}
        if not go:
            kept.append(entry)
            continue
        if dry_run:
            entry["objects"] = _would_remove(o)
            removed.append(entry)
            continue
        kind = "segment" if o["kind"] == "segment" else "ring"
        name = o["ring"] if o["kind"] == "semaphore" else o["name"]
        try:
            entry["objects"] = remove(kind, name, o)
        except OSError as e:
            entry["error"] = f"{e.strerror}"
            errors.append(entry)
            continue
        removed.append(entry)
    return {"dry_run": dry_run, "removed": removed, "kept": kept, "errors": errors}


def _would_remove(o: dict[str, Any]) -> list[str]:
    if o["kind"] == "ring":
        return [o["name"]] + [s["name"] for s in o["semaphores"] if s["exists"]]
    return [o["name"]]


# ---------------------------------------------------------------------------------------------
# Text output
# ---------------------------------------------------------------------------------------------


def _human(n: Optional[int]) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return str(n)
    v = float(n)
    for unit in "KMGTP":
        v /= 1024
        if v < 1024 or unit == "P":
            break
    return f"{v:.0f}{unit}" if v.is_integer() else f"{v:.1f}{unit}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _ptext(p: Optional[dict[str, Any]]) -> str:
    return "-" if p is None else str(p["text"])


def _users_text(users: Optional[list[int]]) -> str:
    if users is None:
        return "?"
    return ",".join(map(str, users)) or "-"


def format_ls(objs: list[dict[str, Any]]) -> str:
    header = ["KIND", "NAME", "SIZE", "ALLOC", "STATE", "W/R/RES", "CAP", "SLOT", "SEMS",
              "CREATOR", "PRODUCER", "CONSUMER", "USED BY"]
    rows = []
    for o in objs:
        if o["kind"] == "ring":
            sems = o["semaphores"]
            have = [s["name"][len(o["name"]) + 1:] for s in sems if s["exists"]]
            if o["state"] == NOT_A_RING:  # its "indices" and "geometry" are garbage
                rows.append(["ring?", o["name"], _human(o["size"]), _human(o["allocated"]),
                             o["state"], "-", "-", "-",
                             "ok" if len(have) == 2 else ("+".join(have) or "none"),
                             o["creator"]["text"], "-", "-", _users_text(o["users"])])
                continue
            rows.append([
                "ring", o["name"], _human(o["size"]), _human(o["allocated"]), o["state"],
                f"{o['write_idx']}/{o['read_idx']}/{o['reserved_idx']}",
                str(o["capacity"]), _human(o["slot_size"]),
                "ok" if len(have) == 2 else ("+".join(have) or "none"),
                _ptext(o["creator"]), _ptext(o["producer"]), _ptext(o["consumer"]),
                _users_text(o["users"]),
            ])
        elif o["kind"] == "segment":
            rows.append(["segment", o["name"], _human(o["size"]), _human(o["allocated"]),
                         "-", "-", "-", "-", "-", o["creator"]["text"], "-", "-",
                         _users_text(o["users"])])
        else:
            rows.append(["semaphore", o["name"], _human(o["size"]), _human(o["allocated"]),
                         o["state"] or "-", "-", "-", "-", "-", "-", "-", "-",
                         _users_text(o["users"])])
    if not rows:
        return f"no ctshm objects in {SHM_DIR}"
    return _table(header, rows)


def _compress_slots(slots: list[dict[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []
    i = 0
    while i < len(slots):
        s = slots[i]
        j = i
        if s["state"] == "free":
            while j + 1 < len(slots) and slots[j + 1]["state"] == "free":
                j += 1
        label = str(s["slot"]) if i == j else f"{s['slot']}-{slots[j]['slot']}"
        msg = "-" if s["message"] is None else str(s["message"])
        if s["length"] is not None:
            length = str(s["length"])
        elif s["state"] in ("committed-unread", "reserved-by-consumer"):
            length = "whole slot (no record)"
        else:
            length = "-"
        rows.append([label, s["state"], msg, length])
        i = j + 1
    return rows


def format_stat(o: dict[str, Any]) -> str:
    lines = [f"{o['kind']} {o['name']}"]

    def kv(k: str, v: Any) -> None:
        lines.append(f"  {k:<15} {v}")

    kv("path", o["path"])
    kv("size", f"{o['size']} bytes ({_human(o['size'])}), allocated {o['allocated']} bytes")
    kv("mode / uid", f"{o['mode']} / {o['uid']}")
    kv("used by", _users_text(o["users"]))
    if o["kind"] == "segment":
        kv("owner", o["creator"]["text"])
        return "\n".join(lines)
    if o["kind"] == "semaphore":
        kv("ring", f"{o['ring']} ({'gone: orphan' if o['orphan'] else 'exists'})")
        if "value" in o:
            kv("value", o["value"])
        if "error" in o:
            kv("error", o["error"])
        return "\n".join(lines)
    kv("state", o["state"] + (f" ({o['state_reason']})" if o["state_reason"] else ""))
    kv("write_idx", o["write_idx"])
    kv("read_idx", o["read_idx"])
    kv("reserved_idx", o["reserved_idx"])
    kv("capacity", o["capacity"])
    kv("slot_size", f"{o['slot_size']} ({_human(o['slot_size'])})")
    kv("finished", f"{o['finished']} ({_STATES_FIN.get(o['finished'], '?')})")
    c = o["crash"]
    kv("crash", f"signal {c['signal']}, addr {c['addr']:#x}, operation {c['operation']} "
                f"({c.get('operation_text', '')})")
    if c.get("message"):
        kv("crash message", repr(c["message"]))
    kv("creator", _ptext(o["creator"]))
    kv("producer", _ptext(o["producer"]))
    kv("consumer", _ptext(o["consumer"]))
    if o["dead_pid"]:
        kv("dead producer", o["dead_pid"])
    ext = o.get("extension")
    if ext is not None:
        if o["ctshm"]:
            kv("extension", f"magic {ext['magic_text']!r} version {ext['version']} state "
                            f"{ext['state']} nonce {ext['nonce']} len_records "
                            f"{ext['len_records']}")
        elif o["state"] == NOT_A_RING:
            kv("extension", f"magic {ext['magic']} (not ctshm's)")
        else:
            kv("extension", f"magic {ext['magic']} (not ctshm: Rust-created, owner unknown)")
    for s in o["semaphores"]:
        if not s["exists"]:
            v = "missing"
        elif "value" in s:
            v = f"value {s['value']}"
        else:
            v = s.get("error", "exists")
        users = s.get("users")
        kv("semaphore", f"{s['name']}: {v}" + (f", used by {_users_text(users)}"
                                               if s["exists"] else ""))
    if o.get("slots"):
        lines.append("  slots:")
        table = _table(["SLOT", "STATE", "MESSAGE", "LENGTH"], _compress_slots(o["slots"]))
        lines.extend("    " + line for line in table.splitlines())
    return "\n".join(lines)


def format_gc(result: dict[str, Any]) -> str:
    rows = []
    verb = "would remove" if result["dry_run"] else "removed"
    for e in result["removed"]:
        rows.append([verb, e["kind"], e["name"], e["reason"] + (
            f" [{', '.join(e['objects'])}]" if e.get("objects") else "")])
    for e in result["errors"]:
        rows.append(["error", e["kind"], e["name"], f"{e['reason']}: {e['error']}"])
    for e in result["kept"]:
        rows.append(["kept", e["kind"], e["name"], e["reason"]])
    if not rows:
        return f"nothing to collect in {SHM_DIR}"
    return _table(["ACTION", "KIND", "NAME", "REASON"], rows)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


_HELP: Final = {
    "ls": "list rings, segments and orphan semaphores in /dev/shm",
    "stat": "full header, semaphores and slots of one object",
    "rm": "remove a ring (with its semaphores), a segment or orphan semaphores",
    "gc": "remove objects whose owners are dead",
}


def add_arguments(cmd: str, p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``cmd`` (one of :data:`COMMANDS`) on ``p``."""
    if cmd in ("ls", "gc"):
        p.add_argument("--prefix", default="", help="only names starting with PREFIX")
    if cmd == "stat":
        p.add_argument("name", help="id, /id, id_t, /id_t, id_m, /id_t_filled, ...")
    if cmd == "rm":
        p.add_argument("name", help="id (ring and segment), /id_t, /id_m, /id_t_filled, ...")
        p.add_argument("--force", action="store_true",
                       help="remove even what a live process uses (its creator, producer or "
                            "consumer is alive, or a process has it mapped or open)")
    if cmd == "gc":
        p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
        p.add_argument("--include-unknown", action="store_true",
                       help="also remove Rust-created rings and segments (no owner record) "
                            "that no process has mapped")
    p.add_argument("--json", action="store_true", help={
        "ls": "print the listing as JSON",
        "stat": "print every detail as JSON",
        "rm": "print the removed names as JSON",
        "gc": "print what was removed and kept as JSON",
    }[cmd] + " (errors too: {\"error\": ..., \"name\": ...}, exit code 1)")


def add_subcommands(sub: Any) -> None:
    """Register ``ls``, ``stat``, ``rm`` and ``gc`` on an argparse subparsers object."""
    for cmd in COMMANDS:
        add_arguments(cmd, sub.add_parser(cmd, help=_HELP[cmd]))


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(text())


def cmd_ls(args: argparse.Namespace) -> int:
    mappers = _scan_mappers()
    objs = collect(args.prefix, mappers)
    data = {"shm_dir": SHM_DIR, "users_scan": _scan_quality(mappers), "objects": objs}
    empty = f"no ctshm objects in {SHM_DIR}" + (
        f" whose name starts with {args.prefix!r}" if args.prefix else "")
    _emit(args, data, lambda: format_ls(objs) if objs else empty)
    return 0


def _scan_quality(m: _Mappers) -> str:
    if not m.available:
        return "unavailable"
    if not m.unreadable:
        return "complete"
    return (f"partial: the maps of {len(m.unreadable)} process(es) are not readable (pid "
            f"{', '.join(map(str, m.unreadable[:5]))}{', ...' if len(m.unreadable) > 5 else ''})")


def cmd_stat(args: argparse.Namespace) -> int:
    targets = resolve(args.name)
    if not targets:
        raise OpsError(f"no ring, segment or ring semaphore named {args.name!r} in {SHM_DIR}")
    mappers = _scan_mappers()
    objs: list[dict[str, Any]] = []
    for kind, name in targets:
        if kind == "segment":
            o = inspect_segment(name, mappers)
            if o is not None:
                objs.append(o)
            continue
        r = inspect_ring(name, mappers, detail=True)
        if r is not None:
            objs.append(r)
            continue
        for sfx in SEM_SUFFIXES:  # orphan semaphores
            s = inspect_semaphore(name + sfx, mappers, detail=True)
            if s is not None:
                objs.append(s)
    if not objs:
        raise OpsError(f"{args.name!r} disappeared while it was inspected")
    _emit(args, {"objects": objs}, lambda: "\n\n".join(format_stat(o) for o in objs))
    return 0


def _alive_parties(o: dict[str, Any]) -> list[str]:
    out = []
    for who in ("creator", "producer", "consumer"):
        p = o.get(who)
        if p and p.get("alive"):
            out.append(f"its {who} pid {p['pid']} is alive")
    return out


def _in_use(kind: str, name: str, mappers: _Mappers) -> tuple[list[str], Optional[dict[str, Any]]]:
    """Why removing ``(kind, name)`` would pull it from under a live process (empty: no
    one uses it), and what was inspected."""
    objs: list[dict[str, Any]] = []
    if kind == "segment":
        seg = inspect_segment(name, mappers)
        objs = [seg] if seg is not None else []
    else:
        ring = inspect_ring(name, mappers)
        if ring is not None:
            objs = [ring]
            objs += [s for s in ring["semaphores"] if s["exists"]]
        else:
            objs = [o for o in (inspect_semaphore(name + s, mappers) for s in SEM_SUFFIXES)
                    if o is not None]
    why: list[str] = []
    if objs and objs[0]["kind"] == "ring" and objs[0].get("state") != "not a ring":
        why += _alive_parties(objs[0])
    for o in objs:
        users = o.get("users")
        if users:
            why.append(f"{o['name']} is mapped or open by pid {', '.join(map(str, users))}")
    return why, (objs[0] if objs else None)


def cmd_rm(args: argparse.Namespace) -> int:
    targets = resolve(args.name)
    if not targets:
        raise OpsError(f"no ring, segment or ring semaphore named {args.name!r} in {SHM_DIR}: "
                       "nothing removed")
    mappers = _scan_mappers()
    checks = [(kind, name, *_in_use(kind, name, mappers)) for kind, name in targets]
    busy = {name: why for _, name, why, _ in checks if why}
    if busy and not args.force:
        text = "; ".join(f"{n}: {', '.join(w)}" for n, w in busy.items())
        raise OpsError(f"refusing to remove {args.name!r}, a live process uses it ({text}); "
                       "nothing removed (--force removes it anyway: the users' handles keep "
                       "working, but nobody can open the names any more)",
                       in_use=busy)
    removed: list[str] = []
    notes: list[str] = []
    for kind, name, why, _info in checks:
        if why:
            notes.append(f"note: removed {name} although {', '.join(why)} (--force); its "
                         "handles keep working, but nobody can open the names any more")
        removed += remove(kind, name)
    if not removed:
        raise OpsError(f"{args.name!r} disappeared before it could be removed")
    for n in notes:
        print(n, file=sys.stderr)
    _emit(args, {"removed": removed}, lambda: "\n".join(f"removed {n}" for n in removed))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    result = gc(args.prefix, args.include_unknown, args.dry_run)
    _emit(args, result, lambda: format_gc(result))
    return 1 if result["errors"] else 0


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; errors go to stderr with exit code 1."""
    handler = {"ls": cmd_ls, "stat": cmd_stat, "rm": cmd_rm, "gc": cmd_gc}[args.cmd]
    try:
        return handler(args)
    except BrokenPipeError:  # `... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except OpsError as e:
        return _error(args, str(e), e.details)
    except OSError as e:
        return _error(args, str(e), {"errno": e.errno})


def _error(args: argparse.Namespace, message: str, details: dict[str, Any]) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "command": args.cmd,
                          "name": getattr(args, "name", None), **details}, indent=2))
    else:
        print(f"ctshm {args.cmd}: {message}", file=sys.stderr)
    return 1
