"""Count ctypes foreign calls per message on each side of a ShmTraceRing.

Every foreign function ctshm calls goes through ``ctshm.libc.fn`` (libc) or the atomics
backend (``ctshm.atomics.get_backend()``).  In each process, before any ring is opened, both
are replaced by counting wrappers, so every call is counted where it happens (the ring binds
``backend.compare_exchange`` when it opens).  ``ctypes.get_errno`` (not a foreign call: it
reads ctypes' private copy) is counted separately.

Scenarios:

``slot-sequential``  one process: put 16 messages, then access + release 16, repeated.  No
                     waiting at all: the minimum the protocol costs per message.  Also the
                     Python calls per message of each operation (``sys.setprofile`` ``call``
                     events of ctshm's code: ``put``, ``access``, ``release`` with the
                     guard's finalizer) and microseconds per message of each side.
``slot-stream``      W1 one message per slot (``put`` / ``access`` + ``release``), producer and
                     consumer in two forked processes.  Includes what waiting costs (failed
                     ``sem_trywait`` while spinning, ``sem_clockwait`` sleeps).
``records-stream``   W1 through RecordWriter / RecordReader (64 KiB batches).
``pingpong``         W4: per round trip on each side (two rings, one per direction).

Run: ``python benchmarks/count_calls.py [--count N] [--json]``.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _shared import SEQ, cli, w1_consume, w1_produce, w4_client, w4_serve

import ctshm
from ctshm import ShmTraceRing, atomics, libc, semaphore
from ctshm.records import RecordReader, RecordWriter

COUNTS: collections.Counter[str] = collections.Counter()
SLOT = 2 << 20
#: ``--fast``: the rings are created in fast mode (ctshm peers only).
MODE: dict[str, bool] = {"fast": False}


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any) -> Any:
        COUNTS[name] += 1
        return fn(*args)
    counted.__name__ = name
    return counted


def instrument() -> None:
    """Replace libc.fn.* and the atomics backend's operations by counting wrappers."""
    for name in libc.PROTOTYPES:
        f = getattr(libc.fn, name, None)
        if f is not None and not hasattr(f, "__wrapped_count__"):
            w = _wrap("libc." + name, f)
            w.__wrapped_count__ = True  # type: ignore[attr-defined]
            setattr(libc.fn, name, w)
    b = atomics.get_backend()
    for op in ("load", "store", "fetch_add", "compare_exchange", "fence"):
        f = getattr(b, op)
        if not hasattr(f, "__wrapped_count__"):
            w = _wrap(f"atomics.{op}", f)
            w.__wrapped_count__ = True  # type: ignore[attr-defined]
            setattr(b, op, w)
    ge = ctypes.get_errno
    semaphore.get_errno = _wrap("(ctypes.get_errno)", ge)  # type: ignore[attr-defined]


def snapshot() -> dict[str, int]:
    return dict(COUNTS)


def per(counts: dict[str, int], n: int) -> dict[str, float]:
    out = {k: round(v / n, 3) for k, v in sorted(counts.items())}
    out["TOTAL foreign calls"] = round(
        sum(v for k, v in counts.items() if not k.startswith("(")) / n, 3)
    return out


def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) - a.get(k, 0)}


# ---------------------------------------------------------------------------------------------


_CTSHM_DIR = os.path.dirname(os.path.abspath(ctshm.__file__))


def python_calls(fn: Callable[[], Any], n: int) -> float:
    """Python ``call`` events of ctshm's own code per call of ``fn``."""
    seen = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(_CTSHM_DIR):
            seen[0] += 1

    sys.setprofile(profile)
    try:
        for _ in range(n):
            fn()
    finally:
        sys.setprofile(None)
    return seen[0] / n


def python_calls_and_us(ring: ShmTraceRing, rounds: int) -> dict[str, float]:
    """Python calls per message of put / access / release, and µs per message per side
    (best of 5 batches of 16 messages)."""
    msg = bytearray(64)
    guards: collections.deque[Any] = collections.deque()

    def access() -> None:
        guards.append(ring.access().guard)  # type: ignore[union-attr]

    def release() -> None:
        g = guards.popleft()
        g.release()
        del g  # the finalizer runs here

    out = {"put calls": python_calls(lambda: ring.put(msg), 16),
           "access calls": python_calls(access, 16),
           "release calls": python_calls(release, 16)}
    put_best = cons_best = float("inf")
    put, acc = ring.put, ring.access
    for _ in range(5):
        tp = tc = 0.0
        for _ in range(max(1, rounds)):
            t0 = time.perf_counter()
            for _ in range(16):
                put(msg)
            t1 = time.perf_counter()
            for _ in range(16):
                acc().guard.release()  # type: ignore[union-attr]
            t2 = time.perf_counter()
            tp, tc = tp + t1 - t0, tc + t2 - t1
        n = 16 * max(1, rounds)
        put_best, cons_best = min(put_best, tp / n), min(cons_best, tc / n)
    out["producer us/msg"] = round(put_best * 1e6, 3)
    out["consumer us/msg"] = round(cons_best * 1e6, 3)
    return out


def slot_sequential(count: int) -> dict[str, Any]:
    rid = f"cc{os.getpid():x}_seq"
    ring = ShmTraceRing.create(rid, 16, SLOT, fast=MODE["fast"])
    msg = bytearray(64)
    try:
        for _ in range(16):  # warm: per-slot one-time work (backing store) is not counted
            ring.put(msg)
            ring.access().guard.release()  # type: ignore[union-attr]
        rounds = max(1, count // 16)
        prod: collections.Counter[str] = collections.Counter()
        cons: collections.Counter[str] = collections.Counter()
        for _ in range(rounds):
            a = snapshot()
            for _ in range(16):
                ring.put(msg)
            b = snapshot()
            for _ in range(16):
                d = ring.access()
                d.guard.release()  # type: ignore[union-attr]
            c = snapshot()
            prod.update(diff(a, b))
            cons.update(diff(b, c))
        python = python_calls_and_us(ring, rounds)
    finally:
        ring.close()
    n = rounds * 16
    return {"messages": n, "producer": per(dict(prod), n), "consumer": per(dict(cons), n),
            "python": python}


def _fork(fn: Callable[[], dict[str, Any]]) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            res = fn()
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def _collect(pid: int, r: int) -> dict[str, Any]:
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))  # type: ignore[no-any-return]


def _counted(ids: tuple[str, ...],
             body: Callable[..., tuple[int, dict[str, Any]]]) -> Callable[[], dict[str, Any]]:
    """One side, for a forked child: open the rings ``ids``, run ``body(*rings)`` (which
    returns its message count and extra report fields) with the foreign calls counted and
    the time taken; calls per message, seconds and the extra fields."""
    def side() -> dict[str, Any]:
        COUNTS.clear()
        rings = [ShmTraceRing.open(i) for i in ids]
        a = snapshot()
        t0 = time.perf_counter()
        n, extra = body(*rings)
        dt = time.perf_counter() - t0
        out = per(diff(a, snapshot()), n)
        for r in rings:
            r.close()
        return {"calls": out, "seconds": dt, **extra}
    return side


def _run_pair(rings: list[ShmTraceRing], first: Callable[[], dict[str, Any]],
              second: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fork ``first`` then ``second``; their reports once both are done; then the creator's
    ``rings`` are closed (unlinked)."""
    try:
        p1, r1 = _fork(first)
        p2, r2 = _fork(second)
        return _collect(p1, r1), _collect(p2, r2)
    finally:
        for ring in rings:
            ring.close()


def slot_stream(count: int) -> dict[str, Any]:
    rid = f"cc{os.getpid():x}_st"
    ring = ShmTraceRing.create(rid, 32, SLOT, fast=MODE["fast"])

    def producer(rg: ShmTraceRing) -> tuple[int, dict[str, Any]]:
        w1_produce(rg, count)
        return count, {}

    def consumer(rg: ShmTraceRing) -> tuple[int, dict[str, Any]]:
        n = w1_consume(rg)
        return n, {"messages": n}

    cons, prod = _run_pair([ring], _counted((rid,), consumer), _counted((rid,), producer))
    return {"messages": cons["messages"], "msgs_per_s": count / prod["seconds"],
            "producer": prod["calls"], "consumer": cons["calls"]}


def records_stream(count: int) -> dict[str, Any]:
    rid = f"cc{os.getpid():x}_rs"
    ring = ShmTraceRing.create(rid, 32, SLOT, fast=MODE["fast"])

    def producer(rg: ShmTraceRing) -> tuple[int, dict[str, Any]]:
        msg = bytearray(64)
        w = RecordWriter(rg, max_bytes=64 * 1024)
        for i in range(count):
            SEQ.pack_into(msg, 0, i)
            w.append(msg)
        w.close()
        return count, {"slots": w.slots_written}

    def consumer(rg: ShmTraceRing) -> tuple[int, dict[str, Any]]:
        n = 0
        for rec in RecordReader(rg):
            SEQ.unpack_from(rec, 0)
            n += 1
        return n, {"messages": n}

    cons, prod = _run_pair([ring], _counted((rid,), consumer), _counted((rid,), producer))
    return {"messages": cons["messages"], "slots": prod["slots"], "producer": prod["calls"],
            "consumer": cons["calls"]}


def pingpong(count: int) -> dict[str, Any]:
    ida, idb = f"cc{os.getpid():x}_pa", f"cc{os.getpid():x}_pb"
    rings = [ShmTraceRing.create(ida, 4, SLOT, fast=MODE["fast"]),
             ShmTraceRing.create(idb, 4, SLOT, fast=MODE["fast"])]

    def server(a: ShmTraceRing, b: ShmTraceRing) -> tuple[int, dict[str, Any]]:
        w4_serve(a, b, count)
        return count, {}

    def client(a: ShmTraceRing, b: ShmTraceRing) -> tuple[int, dict[str, Any]]:
        w4_client(a, b, count)
        return count, {}

    sv, cl = _run_pair(rings, _counted((ida, idb), server), _counted((ida, idb), client))
    return {"round_trips": count, "mean_rtt_us": cl["seconds"] / count * 1e6,
            "client (per round trip)": cl["calls"], "server (per round trip)": sv["calls"]}


def main() -> None:
    p = cli(__doc__)
    p.add_argument("--json", action="store_true")
    p.add_argument("--fast", action="store_true", help="create the rings in fast mode")
    args = p.parse_args()
    MODE["fast"] = args.fast
    instrument()
    report = {
        "fast": args.fast,
        "atomics_backend": atomics.get_backend().name,
        "plain_ordered_access": atomics.PLAIN_ORDERED_ACCESS,
        "wait_mode": semaphore.default_wait_mode(),
        "slot-sequential": slot_sequential(args.count),
        "slot-stream": slot_stream(args.count),
        "records-stream": records_stream(args.count * 4),
        "pingpong": pingpong(max(1000, args.count // 10)),
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"atomics backend {report['atomics_backend']}, plain ordered access "
          f"{report['plain_ordered_access']}, wait mode {report['wait_mode']}")
    for name in ("slot-sequential", "slot-stream", "records-stream", "pingpong"):
        r = report[name]
        head = {k: v for k, v in r.items() if not isinstance(v, dict)}
        print(f"\n{name}: {head}")
        for side, calls in r.items():
            if isinstance(calls, dict):
                print(f"  {side}:")
                for k, v in calls.items():
                    print(f"    {k:28s} {v:8.3f} per message")


if __name__ == "__main__":
    main()
