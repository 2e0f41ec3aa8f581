"""The ``ls``, ``stat``, ``rm``, ``gc`` and ``top`` subcommands: arguments and handlers
(``ctshm/cli.py`` imports this only when one of them is chosen)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Final

from .. import layout as L
from .._ops_help import OPS_HELP
from ._common import COMMANDS, SHM_DIR, OpsError
from ._scan import scan_mappers, scan_quality
from .bcast import inspect_broadcast
from .cleanup import gc, in_use, remove
from .format import format_gc, format_ls, format_stat
from .inspect import inspect_ring, inspect_semaphore
from .names import collect, resolve
from .queues import inspect_queue
from .schema import ObjectInfo
from .segments import RECORD_KIND, inspect_owner_record, inspect_segment
from .top import run_top

__all__ = ["HELP", "add_arguments", "add_subcommands", "cmd_gc", "cmd_ls", "cmd_rm",
           "cmd_stat", "cmd_top", "run"]

#: Subcommand -> one-line help (``python -m ctshm --help`` shows the same texts).
HELP: Final = {cmd: OPS_HELP[cmd] for cmd in COMMANDS}

_JSON_HELP: Final = {
    "ls": "print the listing as JSON",
    "stat": "print every detail as JSON",
    "rm": "print the removed names as JSON",
    "gc": "print what was removed and kept as JSON",
    "top": "print a JSON list of per-ring records (one list per line when live)",
}


def _interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--interval must be a number of seconds, not "
                                         f"{text!r}") from None
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"--interval must be > 0 and <= 3600 seconds, not "
                                         f"{text}")
    return v


def _add_top_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=_interval, default=1.0, metavar="S",
                   help="seconds between refreshes (default 1; with --once, between the two "
                        "readings the rates come from)")
    p.add_argument("--once", action="store_true",
                   help="take two readings --interval apart, print one screen and exit")


def add_arguments(cmd: str, p: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``cmd`` (one of :data:`COMMANDS`) on ``p``."""
    if cmd in ("ls", "gc", "top"):
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
    if cmd == "top":
        _add_top_arguments(p)
    p.add_argument("--json", action="store_true", help=_JSON_HELP[cmd] + " (errors too: "
                   "{\"error\": ..., \"name\": ...}, exit code 1)")


def add_subcommands(sub: Any) -> None:
    """Register :data:`COMMANDS` on an argparse subparsers object."""
    for cmd in COMMANDS:
        add_arguments(cmd, sub.add_parser(cmd, help=HELP[cmd]))


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(text())


def cmd_ls(args: argparse.Namespace) -> int:
    mappers = scan_mappers()
    objs = collect(args.prefix, mappers)
    data = {"shm_dir": SHM_DIR, "users_scan": scan_quality(mappers), "objects": objs}
    empty = f"no ctshm objects in {SHM_DIR}" + (
        f" whose name starts with {args.prefix!r}" if args.prefix else "")
    _emit(args, data, lambda: format_ls(objs) if objs else empty)
    return 0


def _not_found(arg: str, tail: str = "") -> OpsError:
    return OpsError(f"no ring, segment or ring semaphore named {arg!r} in {SHM_DIR}{tail}")


def cmd_stat(args: argparse.Namespace) -> int:
    targets = resolve(args.name)
    if not targets:
        raise _not_found(args.name)
    mappers = scan_mappers()
    objs: list[ObjectInfo] = []
    for kind, name in targets:
        if kind == "broadcast":
            bo = inspect_broadcast(name, mappers)
            objs += [bo] if bo is not None else []
            continue
        if kind == "segment":
            seg = inspect_segment(name, mappers)
            objs += [seg] if seg is not None else []
            continue
        if kind == RECORD_KIND:
            rec = inspect_owner_record(name, mappers)
            objs += [rec] if rec is not None else []
            continue
        if kind == "queue":
            qi = inspect_queue(name, mappers, detail=True)
            objs += [qi] if qi is not None else []
            continue
        ring = inspect_ring(name, mappers, detail=True)
        if ring is not None:
            objs.append(ring)
            continue
        for sfx in L.SEM_SUFFIXES:  # orphan semaphores
            s = inspect_semaphore(name + sfx, mappers, detail=True)
            objs += [s] if s is not None else []
    if not objs:
        raise OpsError(f"{args.name!r} disappeared while it was inspected")
    _emit(args, {"objects": objs}, lambda: "\n\n".join(format_stat(o) for o in objs))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    targets = resolve(args.name)
    if not targets:
        raise _not_found(args.name, ": nothing removed")
    mappers = scan_mappers()
    checks = [(kind, name, in_use(kind, name, mappers)) for kind, name in targets]
    busy = {name: why for _, name, why in checks if why}
    if busy and not args.force:
        text = "; ".join(f"{n}: {', '.join(w)}" for n, w in busy.items())
        raise OpsError(f"refusing to remove {args.name!r}, a live process uses it ({text}); "
                       "nothing removed (--force removes it anyway: the users' handles keep "
                       "working, but nobody can open the names any more)",
                       in_use=busy)
    removed: list[str] = []
    notes: list[str] = []
    for kind, name, why in checks:
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


def cmd_top(args: argparse.Namespace) -> int:
    return run_top(args.prefix, args.interval, args.once, args.json)


_HANDLERS: Final = {"ls": cmd_ls, "stat": cmd_stat, "rm": cmd_rm, "gc": cmd_gc,
                    "top": cmd_top}


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; errors go to stderr with exit code 1."""
    try:
        return _HANDLERS[args.cmd](args)
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
