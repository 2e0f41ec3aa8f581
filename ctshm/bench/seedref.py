"""The Rust seed peer (``seedref``, the original ring as a command-line program).

Where the binary comes from, first match wins (the package's own location is never used:
an installed ctshm lives in site-packages, far from any checkout)::

    SEEDREF_BIN=/path/to/seedref          the binary itself
    CTSHM_SEEDREF=/path/to/seedref-dir    a seedref source directory: its build.sh is run
    ./shared/seedref/build.sh             in the current directory or any of its parents
                                          (so running from a checkout beside ../shared works)

``build.sh`` prints the binary's path on its last line (about 3 s when already built).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Mapping, Optional

from .. import libc
from ..semaphore import NamedSemaphore
from .harness import (
    RING_CAPACITY,
    RING_SLOT,
    SP1_CAPACITY,
    BenchError,
    Peer,
    RunContext,
    Settings,
    Workload,
    drive,
    ignore,
    pair_result,
    start_child,
)
from .sp1 import sp1_consumer


def seedref_dirs(cwd: Optional[str] = None) -> list[str]:
    """Candidate ``shared/seedref`` directories: ``cwd`` and each of its parents."""
    here = os.path.abspath(cwd if cwd is not None else os.getcwd())
    out = []
    while True:
        out.append(os.path.join(here, "shared", "seedref"))
        up = os.path.dirname(here)
        if up == here:
            return out
        here = up


def find_seedref(build: bool = True, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None) -> tuple[Optional[str], Optional[str]]:
    """(path, None) of the seedref binary, or (None, why not)."""
    env = os.environ if env is None else env
    binary = env.get("SEEDREF_BIN")
    if binary:
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary, None
        return None, f"SEEDREF_BIN={binary!r} is not an executable file"
    src = env.get("CTSHM_SEEDREF")
    if src:
        script = os.path.join(src, "build.sh")
        if not os.path.isfile(script):
            return None, f"CTSHM_SEEDREF={src!r} has no build.sh"
    else:
        found = [d for d in seedref_dirs(cwd) if os.path.isfile(os.path.join(d, "build.sh"))]
        if not found:
            return None, ("no SEEDREF_BIN, no CTSHM_SEEDREF, and no shared/seedref/build.sh "
                          "in the current directory or its parents")
        script = os.path.join(found[0], "build.sh")
    if not build:
        return None, f"not built (set SEEDREF_BIN or run {script})"
    try:
        p = subprocess.run(["bash", script], capture_output=True, text=True, timeout=600,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{script} failed: {e}"
    path = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not os.access(path, os.X_OK):
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"{script} failed (exit {p.returncode}): {tail}"
    return path, None


def _unlink_ring(rid: str) -> None:
    """Remove a Rust-owned ring's names (its owner unlinks on a clean exit)."""
    name = "/" + rid + "_t"
    ignore(OSError, libc.shm_unlink, name)
    for s in (name + "_filled", name + "_empty"):
        ignore(OSError, NamedSemaphore.unlink_name, s)


def _last_json(out: str, what: str, p: Any, err: str) -> dict[str, Any]:
    try:
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"seedref {what} gave no result (exit {p.returncode}): "
                         f"{err.strip()[-300:]}") from None
    return res


def _finish(procs: list[Any], timeout: float) -> list[tuple[str, str]]:
    """communicate() with every process (killing those past the deadline)."""
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        _reap(procs)
    return outs


def _reap(procs: list[Any]) -> None:
    """Kill and wait for the processes still running (the others were waited for)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


class RustSeed(Peer):
    """``seedref produce`` -> ``seedref consume`` (both Rust) for streams; for SP1,
    ``seedref produce`` -> a ctshm consumer (the seed writes whole-slot frames)."""

    name = "rust-seed"
    kinds = ("stream", "sp1")

    def __init__(self) -> None:
        self.binary: Optional[str] = None
        self.why_not: Optional[str] = None

    def available(self) -> Optional[str]:
        if self.binary is None and self.why_not is None:
            self.binary, self.why_not = find_seedref()
        return self.why_not

    def describe(self) -> dict[str, Any]:
        return {"binary": self.binary}

    def _popen(self, *args: str) -> Any:
        assert self.binary is not None
        return subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run_pairs(self, ctx: RunContext, wl: Workload, count: int, settings: Settings
                  ) -> list[dict[str, Any]]:
        if wl.kind == "sp1":
            return [self._sp1(ctx, wl, count, settings)]
        payload = wl.size - 8  # seedref frame = u64 PAYLOAD_LEN + PAYLOAD_LEN (seq, pattern)
        geometry = (str(RING_CAPACITY), str(RING_SLOT))
        ids = [ctx.new_id() for _ in range(settings.pairs)]
        for rid in ids:
            ctx.on_cleanup(lambda rid=rid: _unlink_ring(rid))  # type: ignore[misc]
        consumers = [self._popen("consume", rid, *geometry, "--create", "--expect-count",
                                 str(count), "--expect-len", str(payload), "--idle-limit-s",
                                 str(int(settings.timeout))) for rid in ids]
        producers: list[Any] = []
        try:
            producers = [self._popen("produce", rid, *geometry, str(count), str(payload),
                                     "--open", "--linger-ms", "1000") for rid in ids]
            pouts = _finish(producers, settings.timeout)
            couts = _finish(consumers, settings.timeout)
        finally:
            _reap(producers + consumers)
        out = []
        for prod, cons, (_, perr), (cout, cerr) in zip(producers, consumers, pouts, couts):
            c = _last_json(cout, "consume", cons, cerr)
            ok = cons.returncode == 0 and prod.returncode == 0
            out.append({
                "count": int(c["count"]), "errors": int(c["errors"]),
                "elapsed_s": float(c.get("seconds") or 0.0),
                "verified": ok and c["errors"] == 0 and c["count"] == count and c["finished"],
                "first_error": "" if ok else f"exit codes consume={cons.returncode} "
                f"produce={prod.returncode}: {(cerr + perr).strip()[-300:]}",
                # The Rust clocks are not readable here: as the pairs start together, the
                # aggregate's window is the longest pair's time (from 0 to its elapsed).
                "t_start": 0.0, "t_end": float(c.get("seconds") or 0.0),
                "timing": "Rust consumer's clock: first message to Finished"
                + ("; aggregate: all messages / the longest pair's time" if len(ids) > 1
                   else "")})
        return out

    def _sp1(self, ctx: RunContext, wl: Workload, count: int, settings: Settings
             ) -> dict[str, Any]:
        """The seed produces whole-slot frames into a ctshm ring; a ctshm child consumes."""
        ring = ctx.ring(SP1_CAPACITY, wl.size, settings)
        conn = start_child(ctx, sp1_consumer, (ring, settings.sp1_reader), wl, count,
                           "rust-seed sp1 consumer")
        producer: list[Any] = []

        def start_producer() -> None:
            producer.append(self._popen("produce", ring.id, str(SP1_CAPACITY), str(wl.size),
                                        str(count), str(wl.size - 8), "--open"))

        deadline = time.monotonic() + settings.timeout
        try:
            (res,) = drive([("ctshm sp1 consumer", conn)], deadline, between=start_producer)
            ((pout, perr),) = _finish(producer, max(0.1, deadline - time.monotonic()))
        finally:
            _reap(producer)
        out = pair_result(wl, count, res, {})
        if producer[0].returncode != 0:
            out["verified"] = False
            out["first_error"] = (f"seedref produce exit {producer[0].returncode}: "
                                  f"{perr.strip()[-300:]}")
        out["producer"] = _last_json(pout, "produce", producer[0], perr) if pout.strip() else {}
        return out
