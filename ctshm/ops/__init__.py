"""Operations on the objects ctshm (or the Rust original) leaves in the shm directory.

``python -m ctshm ls | stat NAME | rm NAME | gc | top`` (each with ``--json``) dispatch here.

What is recognised (Linux keeps POSIX shm objects as ``SHM_DIR/NAME`` and named semaphores
as ``SHM_DIR/sem.NAME``; ``SHM_DIR`` is ``ctshm._shm.SHM_DIR``)::

    /X_t                        ring        (ShmTraceRing, created by ctshm or by Rust)
    sem.X_t_filled, sem.X_t_empty  its semaphores; without /X_t: orphan semaphores
    /X_m                        segment     (ShmMemory; its creator in /X_m_owner: ops.segments)
    /X_m_owner                  its owner record; listed alone when it describes no segment
    /X_b                        broadcast   (ShmBroadcast: creator, writer, readers; ops.bcast)

Inspection never modifies anything: a ring's header words (always written by its creator)
are mapped **read-only** and read with :func:`ctshm.layout.read_header`; its length records
are read with ``pread`` (a read fault through a mapping would allocate tmpfs pages of a
sparse object, ``pread`` of a hole does not); nothing registers as producer or consumer;
semaphores are opened existing-only (``sem_open`` without ``O_CREAT``) for ``sem_getvalue``.

Liveness: a ctshm ring records its creator's (and registered producer's / consumer's) pid and
start time, so a recycled pid is not taken for the creator; a ctshm segment's creator is in
its owner record (``ctshm._owner_record``).  A Rust-created ring (extension magic 0) carries
no owner: ``ls`` says "unknown (Rust peer)"; a segment without an owner record (Rust's, or
kept with ``keep_on_drop()``) "unknown (no owner record)".  For every object,
``users`` lists the processes that have it mapped or open (``/proc/PID/maps`` and
``/proc/PID/fd``, matched by device and inode; best effort: without root, other users'
processes are not visible).

``gc`` removes ctshm rings whose creator is dead (ring + both semaphores), ctshm segments
whose creator is dead (segment + owner record), orphan ring semaphores nobody has mapped or
open and owner records whose segment is gone.  Rings and segments without owner information
are removed only with ``--include-unknown``, and even then only when no process uses them.
Every removal re-checks that the name still refers to the object that was inspected (a
successor that re-created the name is left alone).

``rm`` refuses an object a live process uses (a ring's creator, producer or consumer is
alive, or ``/proc`` shows a process with it mapped or open) unless ``--force`` is given.
A ``/X_t`` without ctshm's magic whose header geometry does not match its size is reported
as "not a ring" (``gc`` never removes one).

``stat`` also shows each side's live statistics (``layout.PRODUCER_STATS`` /
``CONSUMER_STATS``) and the backlog ``write_idx - read_idx``; ``top`` refreshes rates, fill
levels and peers of every ring in place (``--once`` / ``--json`` for scripts).

Exit codes: 0 ok, 1 not found, refused or error, 2 usage (argparse).  With ``--json``, an
error is printed as JSON on stdout: ``{"error": ..., "command": ..., "name": ...}``.

Modules: ``_scan`` (who maps or opens what, from /proc), ``inspect`` (one object),
``names`` (listing and name resolution), ``cleanup`` (``rm`` / ``gc``), ``format`` (text),
``top`` (the live view), ``cli`` (argparse wiring), ``schema`` (the typed records).
"""

from __future__ import annotations

from ..layout import RING_SUFFIX, SEGMENT_SUFFIX, SEM_SUFFIXES
from ._common import COMMANDS, NOT_A_RING, SHM_DIR, OpsError
from ._scan import Mappers, scan_mappers
from .cleanup import gc, gc_decision, in_use, remove
from .cli import add_arguments, add_subcommands, cmd_gc, cmd_ls, cmd_rm, cmd_stat, cmd_top, run
from .format import format_gc, format_ls, format_stat, format_top
from .inspect import inspect_ring, inspect_semaphore
from .names import collect, resolve
from .segments import inspect_owner_record, inspect_segment
from .top import run_top, top_records

__all__ = [
    "COMMANDS",
    "NOT_A_RING",
    "RING_SUFFIX",
    "SEGMENT_SUFFIX",
    "SEM_SUFFIXES",
    "SHM_DIR",
    "Mappers",
    "OpsError",
    "add_arguments",
    "add_subcommands",
    "cmd_gc",
    "cmd_ls",
    "cmd_rm",
    "cmd_stat",
    "cmd_top",
    "collect",
    "format_gc",
    "format_ls",
    "format_stat",
    "format_top",
    "gc",
    "gc_decision",
    "in_use",
    "inspect_owner_record",
    "inspect_ring",
    "inspect_segment",
    "inspect_semaphore",
    "remove",
    "resolve",
    "run",
    "run_top",
    "scan_mappers",
    "top_records",
]
