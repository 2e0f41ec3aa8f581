"""Command line: ``python -m ctshm [info | bench | ls | stat | rm | gc]``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any, Optional

from . import __version__, atomics, libc, semaphore


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"unavailable ({e.strerror})"


def environment() -> dict[str, Any]:
    """What ctshm found on this machine."""
    try:
        backend: Any = atomics.get_backend().name
    except atomics.AtomicsUnavailable as e:
        backend = f"none ({e})"
    avail = atomics.available_backends()
    have = {n: getattr(libc.fn, n) is not None
            for n in ("sem_clockwait", "sem_timedwait", "posix_fallocate")}
    return {
        "ctshm": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "libc": platform.libc_ver()[0] + " " + platform.libc_ver()[1],
        "libraries": libc.libraries,
        "optional_functions": have,
        "atomics_backend": backend,
        "atomics_available": avail,
        "plain_ordered_access": atomics.PLAIN_ORDERED_ACCESS,
        "wait_mode": semaphore.default_wait_mode(),
        "page_size": libc.page_size(),
        "shmem_thp": _read("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        if libc.IS_LINUX else "n/a",
    }


def cmd_info(args: argparse.Namespace) -> int:
    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    width = max(len(k) for k in env)
    for k, v in env.items():
        if isinstance(v, (list, dict)):
            v = json.dumps(v)
        print(f"{k:<{width}}  {v}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctshm", description=__doc__)
    sub = p.add_subparsers(dest="cmd")
    info = sub.add_parser("info", help="environment report (default)")
    info.add_argument("--json", action="store_true")
    from . import ops  # ls / stat / rm / gc
    ops.add_subcommands(sub)
    sub.add_parser("bench", help="benchmark against other IPC mechanisms "
                   "(python -m ctshm bench --help)")  # its flags: parsed by ctshm.bench
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # ctshm.bench is imported only to run it
        from . import bench
        return bench.main(argv[1:])
    args = p.parse_args(argv)
    if args.cmd in (None, "info"):
        if args.cmd is None:
            args.json = False
        return cmd_info(args)
    if args.cmd in ops.COMMANDS:
        return ops.run(args)
    p.error(f"unknown command {args.cmd}")
    return 2
