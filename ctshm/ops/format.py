"""Text output of ``ls``, ``stat``, ``gc`` and ``top`` (``--json`` prints the records
themselves)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from ._common import NOT_A_RING, SHM_DIR, STATES_FIN
from .bcast import broadcast_row, broadcast_stat
from .queues import format_queue_row, format_queue_stat
from .schema import (
    GcResult,
    ObjectInfo,
    Party,
    RingInfo,
    SemaphoreInfo,
    SemState,
    SideStatsInfo,
    SlotInfo,
    TopRecord,
)

__all__ = ["format_gc", "format_ls", "format_stat", "format_top", "human", "table"]


def human(n: Optional[int]) -> str:
    """1536 -> ``1.5K``; None -> ``-``."""
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


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _ptext(p: Optional[Party]) -> str:
    return "-" if p is None else str(p["text"])


def _users_text(users: Optional[list[int]]) -> str:
    if users is None:
        return "?"
    return ",".join(map(str, users)) or "-"


def _sems_text(o: RingInfo) -> str:
    have = [s["name"][len(o["name"]) + 1:] for s in o["semaphores"] if s["exists"]]
    return "ok" if len(have) == 2 else ("+".join(have) or "none")


def _ls_row(o: ObjectInfo) -> list[str]:
    size, alloc, users = human(o["size"]), human(o["allocated"]), _users_text(o["users"])
    if o["kind"] == "broadcast":
        return broadcast_row(o, human, users)
    if o["kind"] == "segment":
        return ["segment", o["name"], size, alloc, o["state"] or "-", "-", "-", "-", "-",
                o["creator"]["text"], "-", "-", users]
    if o["kind"] == "owner-record":  # one that describes no existing segment
        return ["owner-record", o["name"], size, alloc, o["state"], "-", "-", "-", "-",
                o["creator"]["text"], "-", "-", users]
    if o["kind"] == "semaphore":
        return ["semaphore", o["name"], size, alloc, o["state"] or "-", "-", "-", "-", "-",
                "-", "-", "-", users]
    if o["kind"] == "queue":
        return format_queue_row(o, size, alloc, users)
    if o["state"] == NOT_A_RING:  # its "indices" and "geometry" are garbage
        return ["ring?", o["name"], size, alloc, o["state"], "-", "-", "-", _sems_text(o),
                o["creator"]["text"], "-", "-", users]
    return ["ring", o["name"], size, alloc, o["state"],
            f"{o['write_idx']}/{o['read_idx']}/{o['reserved_idx']}",
            str(o["capacity"]), human(o["slot_size"]), _sems_text(o),
            _ptext(o["creator"]), _ptext(o["producer"]), _ptext(o["consumer"]), users]


def format_ls(objs: list[ObjectInfo]) -> str:
    header = ["KIND", "NAME", "SIZE", "ALLOC", "STATE", "W/R/RES", "CAP", "SLOT", "SEMS",
              "CREATOR", "PRODUCER", "CONSUMER", "USED BY"]
    if not objs:
        return f"no ctshm objects in {SHM_DIR}"
    return table(header, [_ls_row(o) for o in objs])


def _compress_slots(slots: list[SlotInfo]) -> list[list[str]]:
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


KV = Callable[[str, Any], None]


def _stat_semaphore(o: SemaphoreInfo, kv: KV) -> None:
    kv("ring", f"{o['ring']} ({'gone: orphan' if o['orphan'] else 'exists'})")
    if "value" in o:
        kv("value", o["value"])
    if "error" in o:
        kv("error", o["error"])


def stats_text(s: SideStatsInfo) -> str:
    """``messages 7, bytes 700 (700), waits 1, wakeups 2, spins 3``."""
    return (f"messages {s['messages']}, bytes {s['bytes']} ({human(s['bytes'])}), "
            f"waits {s['waits']}, wakeups {s['wakeups']}, spins {s['spins']}")


def _stat_extension(o: RingInfo, kv: KV) -> None:
    ext = o.get("extension")
    if ext is None:
        return
    if o["ctshm"]:
        kv("extension", f"magic {ext['magic_text']!r} version {ext['version']} state "
                        f"{ext['state']} nonce {ext['nonce']} len_records "
                        f"{ext['len_records']}")
        kv("mode", f"{ext['mode']} (sleeping: consumer {ext['c_sleep']}, producer "
                   f"{ext['p_sleep']})" if ext["mode"] == "fast" else ext["mode"])
    elif o["state"] == NOT_A_RING:
        kv("extension", f"magic {ext['magic']} (not ctshm's)")
    else:
        kv("extension", f"magic {ext['magic']} (not ctshm: Rust-created, owner unknown)")


def _sem_text(s: SemState) -> str:
    if not s["exists"]:
        return f"{s['name']}: missing"
    v = f"value {s['value']}" if "value" in s else s.get("error", "exists")
    return f"{s['name']}: {v}, used by {_users_text(s.get('users'))}"


def _stat_ring(o: RingInfo, kv: KV, lines: list[str]) -> None:
    kv("state", o["state"] + (f" ({o['state_reason']})" if o["state_reason"] else ""))
    kv("write_idx", o["write_idx"])
    kv("read_idx", o["read_idx"])
    kv("reserved_idx", o["reserved_idx"])
    kv("capacity", o["capacity"])
    if o["backlog"] is not None:
        kv("backlog", f"{o['backlog']} (write_idx - read_idx: committed, not yet released)")
    kv("slot_size", f"{o['slot_size']} ({human(o['slot_size'])})")
    kv("finished", f"{o['finished']} ({STATES_FIN.get(o['finished'], '?')})")
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
    if o["stats"] is not None:
        kv("producer stats", stats_text(o["stats"]["producer"]))
        kv("consumer stats", stats_text(o["stats"]["consumer"]))
    _stat_extension(o, kv)
    for s in o["semaphores"]:
        kv("semaphore", _sem_text(s))
    if o.get("slots"):
        lines.append("  slots:")
        rows = _compress_slots(o["slots"])
        lines.extend("    " + line
                     for line in table(["SLOT", "STATE", "MESSAGE", "LENGTH"], rows).splitlines())


def format_stat(o: ObjectInfo) -> str:
    lines = [f"{o['kind']} {o['name']}"]

    def kv(k: str, v: Any) -> None:
        lines.append(f"  {k:<15} {v}")

    kv("path", o["path"])
    kv("size", f"{o['size']} bytes ({human(o['size'])}), allocated {o['allocated']} bytes")
    kv("mode / uid", f"{o['mode']} / {o['uid']}")
    kv("used by", _users_text(o["users"]))
    if o["kind"] == "broadcast":
        broadcast_stat(o, kv)
    elif o["kind"] == "segment":
        kv("owner", o["creator"]["text"])
        kv("owner record", o["owner_record"] or "none")
        if o["state"]:
            kv("state", f"{o['state']} (its creator is dead: `python -m ctshm gc` removes it)")
    elif o["kind"] == "owner-record":
        kv("segment", o["segment"])
        kv("state", f"{o['state']} ({o['state_reason']})")
        kv("owner", o["creator"]["text"])
    elif o["kind"] == "semaphore":
        _stat_semaphore(o, kv)
    elif o["kind"] == "queue":
        format_queue_stat(o, kv)
    else:
        _stat_ring(o, kv, lines)
    return "\n".join(lines)


def format_gc(result: GcResult) -> str:
    rows = []
    verb = "would remove" if result["dry_run"] else "removed"
    for e in result["removed"]:
        objs = e.get("objects")
        rows.append([verb, e["kind"], e["name"],
                     e["reason"] + (f" [{', '.join(objs)}]" if objs else "")])
    for e in result["errors"]:
        rows.append(["error", e["kind"], e["name"], f"{e['reason']}: {e.get('error', '')}"])
    for e in result["kept"]:
        rows.append(["kept", e["kind"], e["name"], e["reason"]])
    if not rows:
        return f"nothing to collect in {SHM_DIR}"
    return table(["ACTION", "KIND", "NAME", "REASON"], rows)


# ---------------------------------------------------------------------------------------------
# top
# ---------------------------------------------------------------------------------------------


def _rate(v: Optional[float], digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _alive_text(p: Optional[Party]) -> str:
    if p is None:
        return "-"
    if p["pid"] is None:
        return str(p["text"])
    return f"{p['pid']} {'alive' if p['alive'] else 'dead'}"


def _top_row(r: TopRecord) -> list[str]:
    src = {"counters": "", "write_idx": "*", None: ""}.get(r["rate_source"], "")
    if r["stats"] is None:  # not a ring: its "indices" are garbage
        return [r["name"], r["state"], "-", "-", "-", "-", "-", "-"]
    return [r["name"], r["state"], f"{r['fill']}/{r['capacity']}", f"{r['fill_pct']:.0f}%",
            _rate(r["msg_s"], 1) + src, _rate(r["mb_s"], 2), _alive_text(r["producer"]),
            _alive_text(r["consumer"])]


def format_top(records: list[TopRecord], interval: float, live: bool = True) -> str:
    """One ``top`` screen: a title line, then one row per ring."""
    rings = f"{len(records)} ring{'s' if len(records) != 1 else ''} in {SHM_DIR}"
    head = (f"ctshm top: {rings}, every {interval:g} s (q or Ctrl-C quits)" if live
            else f"ctshm top: {rings}, rates over {interval:g} s")
    if not records:
        return f"{head}\n\nno rings in {SHM_DIR}"
    rows = [_top_row(r) for r in records]
    body = table(["NAME", "STATE", "FILL", "FILL%", "MSG/S", "MB/S", "PRODUCER", "CONSUMER"],
                 rows)
    foot = ""
    if any(r["rate_source"] == "write_idx" for r in records):
        foot = "\n* from write_idx (the ring's counters are zero): no byte rate"
    return f"{head}\n\n{body}{foot}"
