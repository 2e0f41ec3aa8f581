"""Import cost of ``ctshm`` against ``multiprocessing.shared_memory``, and the /dev/shm
pages a ring really uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import warnings
from typing import Any, Final

from .. import layout, libc
from ..errors import UnreadMessagesWarning
from ..ring import ShmTraceRing
from .harness import RING_CAPACITY, RING_SLOT

_IMPORTTIME: Final = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def _package_parent() -> str:
    """The directory the measured interpreters import ``ctshm`` from: the one this bench
    process imported (a checkout or site-packages)."""
    import ctshm

    return os.path.dirname(os.path.dirname(os.path.abspath(ctshm.__file__)))


def _top_level_imports(stderr: str) -> list[tuple[str, int]]:
    """(module, cumulative µs) of every top-level line of ``-X importtime`` output."""
    out = []
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m and len(m.group(3)) == 1:  # one space after the bar: not nested
            out.append((m.group(4), int(m.group(2))))
    return out


def _importtime(code: str, env: dict[str, str], flags: list[str]) -> list[tuple[str, int]]:
    p = subprocess.run([sys.executable, *flags, "-X", "importtime", "-c", code], env=env,
                       capture_output=True, text=True, check=True, cwd=_package_parent())
    return _top_level_imports(p.stderr)


def _statement_import_us(module: str, env: dict[str, str], flags: list[str],
                         startup: set[str]) -> int:
    """µs that ``import module`` adds: the top-level imports that start-up did not make
    (``import a.b`` imports ``a`` and then ``a.b``, both top-level)."""
    return sum(us for name, us in _importtime(f"import {module}", env, flags)
               if name not in startup)


def _wall(code: str, env: dict[str, str], flags: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *flags, "-c", code], env=env, check=True,
                   cwd=_package_parent())
    return time.perf_counter() - t0


def import_cost(n: int = 10) -> dict[str, Any]:
    """``import ctshm`` vs ``import multiprocessing.shared_memory`` in fresh interpreters.

    Best of ``n`` (interleaved) for: ``-X importtime`` cumulative time of the top-level
    module, and wall time of the whole ``python -c "import X"`` process minus that of
    ``python -c pass``.  A warm-up run with bytecode writing enabled first, so ctshm is
    imported from ``.pyc`` files like the standard library is.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = _package_parent() + os.pathsep + env.get("PYTHONPATH", "")
    mods = ("ctshm", "multiprocessing.shared_memory")
    out: dict[str, Any] = {"n": n, "python": sys.executable}
    for label, flags in (("default", []), ("isolated_-S", ["-S"])):
        for m in mods:
            _wall(f"import {m}", env, flags)  # warm-up: writes .pyc where missing
        startup = {name for name, _ in _importtime("pass", env, flags)}
        best_it = {m: float("inf") for m in mods}
        best_wall = {m: float("inf") for m in ("pass", *mods)}
        for _ in range(n):
            best_wall["pass"] = min(best_wall["pass"], _wall("pass", env, flags))
            for m in mods:
                it = _statement_import_us(m, env, flags, startup)
                best_it[m] = min(best_it[m], it / 1e6)
                best_wall[m] = min(best_wall[m], _wall(f"import {m}", env, flags))
        base = best_wall["pass"]
        out[label] = {
            "importtime_ms": {m: best_it[m] * 1e3 for m in mods},
            "wall_ms": {m: v * 1e3 for m, v in best_wall.items()},
            "wall_minus_pass_ms": {m: (best_wall[m] - base) * 1e3 for m in mods},
            "ratio_importtime": best_it["ctshm"] / best_it["multiprocessing.shared_memory"],
            "ratio_wall_minus_pass": (best_wall["ctshm"] - base)
            / max(1e-9, best_wall["multiprocessing.shared_memory"] - base),
            "ratio_wall": best_wall["ctshm"] / best_wall["multiprocessing.shared_memory"],
        }
    return out


def memory_check(prefix: str) -> dict[str, Any]:
    """Allocated /dev/shm bytes (``st_blocks``) of a ring whose slots are written only in
    their first page: expect about one page per touched slot plus the header's pages."""
    cap = RING_CAPACITY
    page = libc.page_size()
    ring = ShmTraceRing.create(f"{prefix}_mem", cap, RING_SLOT)
    try:
        path = "/dev/shm/" + ring.name.lstrip("/")
        st0 = os.stat(path)
        for _ in range(cap):
            ring.put(b"x" * 64)
        st1 = os.stat(path)
    finally:
        with warnings.catch_warnings():  # the messages were never meant to be read
            warnings.simplefilter("ignore", UnreadMessagesWarning)
            ring.close()
    header_pages = -(-layout.HEADER_TOUCHED // page)  # the header pages create() reserves
    used = st1.st_blocks * 512
    per_slot = (used - header_pages * page) / cap / page
    return {"capacity": cap, "slot_size": RING_SLOT, "object_size": st1.st_size,
            "allocated_before": st0.st_blocks * 512, "allocated_after": used,
            "page_size": page, "header_pages": header_pages,
            "pages_per_touched_slot": per_slot,
            "shmem_thp": read_first("/sys/kernel/mm/transparent_hugepage/shmem_enabled")}


def read_first(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "n/a"
