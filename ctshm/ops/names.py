"""Listing ``SHM_DIR`` and resolving the names an operator types.

Linux keeps POSIX shm objects as ``SHM_DIR/NAME`` and named semaphores as
``SHM_DIR/sem.NAME``; ``/X_t`` is a ring, ``/X_t_filled`` and ``/X_t_empty`` its semaphores,
``/X_m`` a segment.
"""

from __future__ import annotations

import os
import stat as stat_mod
from typing import Optional

from .. import _owner_record, _shm, layout as L, queue_layout as QL
from .._bcast_layout import SUFFIX as BCAST_SUFFIX
from ._common import SEM_PREFIX, SHM_DIR, OpsError, sem_path, shm_path
from ._scan import Mappers, scan_mappers
from .bcast import inspect_broadcast
from .inspect import inspect_ring, inspect_semaphore, sem_suffix
from .queues import inspect_queue
from .schema import ObjectInfo
from .segments import RECORD_KIND, inspect_owner_record, inspect_segment

__all__ = ["collect", "entries", "resolve", "ring_names"]


def entries() -> list[str]:
    """The regular files in ``SHM_DIR``, sorted."""
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


def ring_names(prefix: str = "") -> list[str]:
    """Every ``/X_t`` in ``SHM_DIR`` whose name (without the slash) starts with ``prefix``."""
    return ["/" + e for e in entries()
            if e.endswith(L.RING_SUFFIX) and e.startswith(prefix)
            and not e.startswith(SEM_PREFIX)]


def collect(prefix: str = "", mappers: Optional[Mappers] = None, detail: bool = False
            ) -> list[ObjectInfo]:
    """Every ring, segment, queue, broadcast, orphan ring semaphore and lone segment owner
    record in SHM_DIR whose name (without the leading slash) starts with ``prefix``."""
    names = entries()
    present = set(names)
    mappers = mappers if mappers is not None else scan_mappers()
    out: list[ObjectInfo] = []
    for e in names:
        if e.startswith(SEM_PREFIX) or not e.startswith(prefix):
            continue
        info: Optional[ObjectInfo] = None
        if e.endswith(L.SEGMENT_SUFFIX + _owner_record.SUFFIX):  # listed with its segment
            info = inspect_owner_record("/" + e, mappers)       # unless it describes none
        elif e.endswith(L.RING_SUFFIX):
            info = inspect_ring("/" + e, mappers, detail)
        elif e.endswith(L.SEGMENT_SUFFIX):
            info = inspect_segment("/" + e, mappers)
        elif e.endswith(QL.SUFFIX):
            info = inspect_queue("/" + e, mappers, detail)
        elif e.endswith(BCAST_SUFFIX):
            info = inspect_broadcast("/" + e, mappers)
        if info is not None:
            out.append(info)
    for e in names:
        if not e.startswith(SEM_PREFIX + prefix):
            continue
        sem = "/" + e[len(SEM_PREFIX):]
        suffix = sem_suffix(sem)
        if not suffix or sem[1:-len(suffix)] in present:
            continue  # not a ring semaphore, or it belongs to a ring listed above
        s = inspect_semaphore(sem, mappers, detail)
        if s is not None:
            out.append(s)
    return out


def _body(arg: str) -> str:
    body = arg
    if body.startswith(SHM_DIR + "/"):
        body = body[len(SHM_DIR) + 1:]
    elif body.startswith("/"):
        body = body[1:]
    if body.startswith(SEM_PREFIX):
        body = body[len(SEM_PREFIX):]
    if not body or "/" in body or "\0" in body:
        raise OpsError(f"{arg!r} is not a ctshm name: give an id ('trace1'), an object name "
                       "('/trace1_t', '/trace1_m') or a semaphore name ('/trace1_t_filled')")
    return body


def _exists(kind: str, name: str) -> bool:
    if os.path.exists(shm_path(name)):
        return True
    return kind == "ring" and any(os.path.exists(sem_path(name + s)) for s in L.SEM_SUFFIXES)


def _record_target(name: str) -> tuple[str, str]:
    """An owner record's name names its segment while it describes it (as a semaphore's
    names its ring), else the record alone."""
    seg = name[:-len(_owner_record.SUFFIX)]
    if _owner_record.describes(_owner_record.read(name), _shm.name_identity(seg)):
        return ("segment", seg)
    return (RECORD_KIND, name)


def resolve(arg: str) -> list[tuple[str, str]]:
    """What ``arg`` names: ``[(kind, name)]`` with kind ``ring`` (``/X_t``, including its
    semaphores, or only orphan semaphores), ``segment`` (``/X_m``, including its owner
    record), ``owner-record`` (``/X_m_owner`` alone), ``queue`` or ``broadcast``.

    An object or semaphore name (``X_t``, ``/X_m``, ``/X_t_filled``, ``sem.X_t_empty``, a
    path under SHM_DIR) names that object if it exists; otherwise ``arg`` is taken as an id:
    everything ctshm has under it (its ring and its segment).
    """
    body = _body(arg)
    exact: list[tuple[str, str]] = []
    sfx = sem_suffix("/" + body)
    if sfx:
        exact.append(("ring", "/" + body[:-len(sfx)]))
    elif body.endswith(L.RING_SUFFIX):
        exact.append(("ring", "/" + body))
    elif body.endswith(L.SEGMENT_SUFFIX + _owner_record.SUFFIX):
        exact.append(_record_target("/" + body))
    elif body.endswith(L.SEGMENT_SUFFIX):
        exact.append(("segment", "/" + body))
    elif body.endswith(QL.SUFFIX):
        exact.append(("queue", "/" + body))
    elif body.endswith(BCAST_SUFFIX):
        exact.append(("broadcast", "/" + body))
    found = [t for t in exact if _exists(*t)]
    if found:
        return found
    seg = "/" + body + L.SEGMENT_SUFFIX
    as_id = [("ring", "/" + body + L.RING_SUFFIX), ("segment", seg),
             ("queue", "/" + body + QL.SUFFIX), ("broadcast", "/" + body + BCAST_SUFFIX)]
    found = [t for t in as_id if _exists(*t)]
    if ("segment", seg) not in found and _exists(RECORD_KIND, seg + _owner_record.SUFFIX):
        found.append((RECORD_KIND, seg + _owner_record.SUFFIX))  # a record alone
    return found
