"""Command line: ``python -m ctshm [info | bench | ls | stat | rm | gc]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, Optional

from . import __version__, _space, atomics, libc, semaphore


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"unavailable ({e.strerror})"


def _implementation() -> str:
    """``cpython``, ``pypy 7.3.11``, ``cpython free-threaded (GIL disabled)``..."""
    impl = sys.implementation
    out = impl.name
    if impl.name == "pypy":
        v = impl.version
        out += f" {v.major}.{v.minor}.{v.micro}"
    import sysconfig

    gil = getattr(sys, "_is_gil_enabled", None)
    if sysconfig.get_config_var("Py_GIL_DISABLED") and gil is not None:
        out += " free-threaded build, GIL " + ("enabled" if gil() else "disabled")
    return out


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
        "implementation": _implementation(),
        # os.uname(), not platform.system(): PyPy 3.9's platform.uname() runs `uname -p`.
        "platform": f"{os.uname().sysname} {os.uname().machine}",
        "libc": platform.libc_ver()[0] + " " + platform.libc_ver()[1],
        "libraries": libc.libraries,
        "optional_functions": have,
        "atomics_backend": backend,
        "atomics_available": avail,
        "atomics_unavailable": atomics.unavailable_backends(),
        "plain_ordered_access": atomics.PLAIN_ORDERED_ACCESS,
        "wait_mode": semaphore.default_wait_mode(),
        "page_size": libc.page_size(),
        "shm_dir": _space.describe(),
        "shm_dir_status": _space.status(),
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
    from . import bench  # throughput/latency against other IPC mechanisms
    bench.add_arguments(sub.add_parser("bench", help="benchmark against other IPC "
                                       "mechanisms (python -m ctshm bench --help)",
                                       description=bench.__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    args = p.parse_args(argv)
    if args.cmd in (None, "info"):
        if args.cmd is None:
            args.json = False
        return cmd_info(args)
    if args.cmd in ops.COMMANDS:
        return ops.run(args)
    if args.cmd == "bench":
        return bench.run_from_args(args)
    p.error(f"unknown command {args.cmd}")
    return 2
