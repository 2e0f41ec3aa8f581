"""Command line: ``python -m ctshm [info | bench | ls | stat | rm | gc | top]``.

Only the chosen subcommand's module is imported (``info`` imports neither ``ctshm.ops`` nor
``ctshm.bench``); help texts are plain text, not reST.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from typing import Any, NoReturn, Optional

from . import __version__, _shmdir, atomics, libc, semaphore
from ._ops_help import OPS_HELP
from ._shm import SHM_DIR

DESCRIPTION = "Shared-memory IPC for Python processes: environment report, benchmark, and " \
    f"inspection / cleanup of what ctshm (or the Rust original) leaves in {SHM_DIR}."

#: Subcommand -> one-line help (the modules behind them are imported only when chosen).
COMMANDS: dict[str, str] = {
    "info": "environment report (default): libraries, wait mode, atomics backend, page size",
    "bench": "benchmark against other IPC mechanisms (python -m ctshm bench --help)",
    **OPS_HELP,  # the ops package's own texts
}
OPS_COMMANDS = tuple(OPS_HELP)


def plain(text: str) -> str:
    """reST markup out of a docstring for ``--help``: ``x`` -> x, :role:`~a.b.C` -> C,
    :role:`x` -> x, a trailing ``::`` -> ``:``."""
    text = re.sub(r":[a-z]+:`(~?)([^`]*)`",
                  lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    # A table cell ``name``  text: keep the columns aligned.
    text = re.sub(r"^``([^`]+)``(?= {2})", r"\1    ", text, flags=re.M)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.M)


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
        "shm_dir": _shmdir.describe(),
        "shm_dir_status": _shmdir.status(),
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


def _chosen(argv: list[str]) -> Optional[str]:
    """The subcommand argv names (its first non-option word), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def _wants_json(argv: list[str]) -> bool:
    """``--json`` (or an abbreviation argparse accepts, ``--js``...) before any ``--``."""
    for a in argv:
        if a == "--":
            return False
        if len(a) >= 4 and "--json".startswith(a):
            return True
    return False


class _JsonErrorParser(argparse.ArgumentParser):
    """Usage errors as the JSON error object the subcommands print with ``--json``
    (``{"error", "command", "name", ...}`` on stdout), exit code 2 as usual."""

    command: Optional[str] = None

    def error(self, message: str) -> NoReturn:
        print(json.dumps({"error": message, "command": self.command, "name": None,
                          "usage": self.format_usage().strip()}, indent=2))
        self.exit(2)


def build_parser(cmd: Optional[str], json_errors: bool = False) -> argparse.ArgumentParser:
    """The parser, with the arguments of subcommand ``cmd`` only (the others get their
    one-line help, enough for ``python -m ctshm --help``).  ``json_errors``: usage errors
    are printed as a JSON error object (``--json`` was given)."""
    cls: type[argparse.ArgumentParser] = argparse.ArgumentParser
    if json_errors:
        class _Parser(_JsonErrorParser):
            command = cmd if cmd in COMMANDS else None

        cls = _Parser
    p = cls(prog="python -m ctshm", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", metavar="{" + ",".join(COMMANDS) + "}",
                           parser_class=cls)
    for name, help in COMMANDS.items():
        if name == "bench" and cmd == "bench":
            from . import bench  # throughput/latency against other IPC mechanisms
            sp = sub.add_parser(name, help=help, description=plain(bench.__doc__ or ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
            bench.add_arguments(sp)
            continue
        sp = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        if name == cmd and name in OPS_COMMANDS:
            from . import ops  # ls / stat / rm / gc / top
            ops.add_arguments(name, sp)
        elif name == "info":
            sp.add_argument("--json", action="store_true",
                            help="print the report as one JSON object")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = _chosen(argv)
    p = build_parser(cmd, json_errors=_wants_json(argv))
    args = p.parse_args(argv)
    if args.cmd in (None, "info"):
        if args.cmd is None:
            args.json = False
        return cmd_info(args)
    if args.cmd in OPS_COMMANDS:
        from . import ops
        return ops.run(args)
    if args.cmd == "bench":
        from . import bench
        return bench.run_from_args(args)
    p.error(f"unknown command {args.cmd}")
    return 2
