"""Who maps or opens what: one scan of ``/proc/*/maps`` and ``/proc/*/fd``.

Objects are matched by (device, inode), so a name re-created since a process mapped it does
not count.  Best effort: without root, other users' processes are not readable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ._common import SHM_DIR

__all__ = ["Mappers", "scan_mappers", "scan_quality"]


@dataclass
class Mappers:
    """(st_dev, st_ino) -> pids that have the object mapped or open, from one scan of
    /proc/*/maps and /proc/*/fd (an fd alone: e.g. a creator between shm_open and mmap).

    An empty ``Mappers()`` (``available`` False) answers None ("not known") for every object.
    """

    by_inode: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    available: bool = False  # /proc readable at all
    unreadable: list[int] = field(default_factory=list)  # pids we may not inspect

    def pids(self, st: os.stat_result) -> Optional[list[int]]:
        if not self.available:
            return None
        return sorted(self.by_inode.get((st.st_dev, st.st_ino), ()))

    def add(self, dev: int, ino: int, pid: int) -> None:
        self.by_inode.setdefault((dev, ino), set()).add(pid)


def _scan_maps(res: Mappers, pid: int, dev: int, dev_text: str) -> None:
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if dev_text not in line:
                continue
            parts = line.split(None, 5)
            if len(parts) < 5 or parts[3] != dev_text:
                continue
            res.add(dev, int(parts[4]), pid)


def _scan_fds(res: Mappers, pid: int, dev: int) -> None:
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if not os.readlink(f"{fd_dir}/{fd}").startswith(SHM_DIR + "/"):
                continue
            st = os.stat(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if st.st_dev == dev:
            res.add(dev, st.st_ino, pid)


def scan_mappers() -> Mappers:
    """Scan every process but this one (``available`` False where there is no /proc)."""
    res = Mappers()
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
            _scan_maps(res, pid, dev, dev_text)
            _scan_fds(res, pid, dev)
        except PermissionError:
            res.unreadable.append(pid)
        except (OSError, ValueError):
            continue  # the process exited meanwhile
    return res


def scan_quality(m: Mappers) -> str:
    """``complete``, ``unavailable`` or ``partial: ...`` (``ls --json``'s ``users_scan``)."""
    if not m.available:
        return "unavailable"
    if not m.unreadable:
        return "complete"
    more = ", ..." if len(m.unreadable) > 5 else ""
    return (f"partial: the maps of {len(m.unreadable)} process(es) are not readable (pid "
            f"{', '.join(map(str, m.unreadable[:5]))}{more})")
