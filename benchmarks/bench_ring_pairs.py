"""Messages/s through one ShmTraceRing for each producer/consumer pairing of ctshm and the Rust
seed (``../shared/seedref``), one message per slot, seedref's frame format, every frame's
sequence number checked by the consumer.  Also: ctypes calls per message on each side, and
the producer's bounded spin.

    python benchmarks/bench_ring_pairs.py [--quick]

A benchmark, not a test: numbers vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import struct
import subprocess
import sys
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctshm import Data, Finished, ShmTraceRing, libc

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDREF_BUILD = os.path.join(HERE, "..", "..", "shared", "seedref", "build.sh")
_HEAD = struct.Struct("<QQ")


def seedref_bin() -> Optional[str]:
    b = os.environ.get("SEEDREF_BIN")
    if b and os.access(b, os.X_OK):
        return b
    if not os.path.exists(SEEDREF_BUILD):
        return None
    out = subprocess.run(["bash", SEEDREF_BUILD], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else None


def py_produce(id: str, count: int, plen: int, create: bool, cap: int) -> None:
    ring = ShmTraceRing.create(id, cap, 4096) if create else ShmTraceRing.open(id, timeout=20)
    body = bytes(range(256)) * (plen // 256 + 2)
    n = max(0, plen - 8)
    pack = _HEAD.pack_into
    for i in range(count):
        g = ring.acquire()
        buf = g.buf
        pack(buf, 0, plen, i)
        if n:
            s = i & 0xFF
            buf[16:16 + n] = body[s:s + n]
        g.commit(16 + n)
    ring.mark_finished()
    if create:
        while ring.header()["read_idx"] != count:
            time.sleep(0.001)
    ring.close()


def py_consume(ring: ShmTraceRing, count: int) -> float:
    unpack = _HEAD.unpack_from
    t0 = 0.0
    for i in range(count):
        r = ring.access(30)
        if i == 0:
            t0 = time.perf_counter()
        assert isinstance(r, Data), r
        g = r.guard
        assert unpack(g.buf, 0)[1] == i
        g.release()
    assert isinstance(ring.access(30), Finished)
    return time.perf_counter() - t0


def run_pair(kind: str, seed: Optional[str], count: int, plen: int, cap: int) -> dict[str, Any]:
    id = f"bp{os.getpid() % 100000}{kind.replace('->', '')[:4]}"
    ctx = multiprocessing.get_context("spawn")
    if kind == "py->py":
        ring = ShmTraceRing.create(id, cap, 4096)
        p = ctx.Process(target=py_produce, args=(id, count, plen, False, cap))
        p.start()
        secs = py_consume(ring, count)
        p.join(60)
        ring.close()
    elif kind == "rust->py":
        assert seed
        proc = subprocess.Popen([seed, "produce", id, str(cap), "4096", str(count), str(plen),
                                 "--create"], stdout=subprocess.PIPE, text=True)
        ring = ShmTraceRing.open(id, cap, 4096, timeout=20)
        secs = py_consume(ring, count)
        ring.close()
        proc.communicate(timeout=60)
    elif kind == "py->rust":
        assert seed
        p = ctx.Process(target=py_produce, args=(id, count, plen, True, cap))
        p.start()
        out = subprocess.run([seed, "consume", id, str(cap), "4096", "--expect-count",
                              str(count)], capture_output=True, text=True, timeout=300)
        p.join(60)
        secs = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    else:  # rust->rust
        assert seed
        proc = subprocess.Popen([seed, "produce", id, str(cap), "4096", str(count), str(plen),
                                 "--create"], stdout=subprocess.PIPE, text=True)
        out = subprocess.run([seed, "consume", id, str(cap), "4096", "--expect-count",
                              str(count)], capture_output=True, text=True, timeout=300)
        proc.communicate(timeout=60)
        secs = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    return {"pair": kind, "payload": plen, "count": count, "capacity": cap,
            "seconds": secs, "msg_per_s": count / secs if secs else float("inf")}


def count_calls() -> dict[str, float]:
    """ctypes foreign calls per message on each side, single process, steady state."""
    from ctshm import atomics
    counts = {"n": 0}
    wrapped: dict[str, Any] = {}

    def wrap(obj: Any, name: str) -> None:
        f = getattr(obj, name)
        wrapped[name] = (obj, f)

        def w(*a: Any) -> Any:
            counts["n"] += 1
            return f(*a)
        setattr(obj, name, w)

    for name in ("sem_post", "sem_trywait", "sem_wait", "sem_timedwait", "sem_clockwait",
                 "posix_fallocate", "madvise"):
        if getattr(libc.fn, name) is not None:
            wrap(libc.fn, name)
    b = atomics.get_backend()
    for name in ("load", "store", "fetch_add", "compare_exchange", "fence"):
        wrap(b, name)
    ring = ShmTraceRing.create(f"bc{os.getpid() % 100000}", 4, 4096)
    try:
        n = 1000
        for _ in range(8):  # warm up: reservations, registration
            ring.put(b"x" * 64)
            ring.get(1)
        prod = cons = 0
        for _ in range(n):
            counts["n"] = 0
            ring.put(b"x" * 64)
            prod += counts["n"]
            counts["n"] = 0
            r = ring.access(1)
            assert isinstance(r, Data)
            r.guard.release()
            cons += counts["n"]
        prod /= n
        cons /= n
    finally:
        ring.close()
        for name, (obj, f) in wrapped.items():
            setattr(obj, name, f)
    return {"producer": float(prod), "consumer": float(cons)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seed = seedref_bin()
    small = 20_000 if args.quick else 100_000
    big = 300 if args.quick else 2000
    pairs = ["py->py"] + (["rust->py", "py->rust", "rust->rust"] if seed else [])
    if not seed:
        print("seedref not available: only py->py")
    rows = []
    for plen, count, cap in ((64, small, 4), (1 << 20, big, 32)):
        for kind in pairs:
            rows.append(run_pair(kind, seed, count, plen, cap))
            r = rows[-1]
            print(f"{r['pair']:<11} payload {plen:>8} B  cap {cap:>2}  {r['count']:>7} msgs  "
                  f"{r['msg_per_s']:>12,.0f} msg/s  {r['msg_per_s'] * plen / 1e9:7.2f} GB/s",
                  flush=True)
    calls = count_calls()
    print(f"ctypes calls per message (steady state, atomics backend + libc): producer "
          f"{calls['producer']:.2f}, consumer {calls['consumer']:.2f}")
    print(json.dumps({"rows": rows, "ctypes_calls": calls}))


if __name__ == "__main__":
    main()
