"""Many-producer many-consumer queue workloads (``python -m ctshm bench --queues``): ShmQueue
against ``multiprocessing.Queue`` and faster-fifo in faster-fifo's README shapes.

Each run: P producer processes put ``count / P`` messages each, C consumer processes take
them until they have all been taken (each consumer stops at an empty message, one per
consumer, put by the parent once every producer is done).  The clock runs from the moment
every child is ready (a barrier) to the last consumer's exit; the rate is messages / that
time.  Consumers check every message's length and count them; a run whose total differs is
reported as not verified.  Processes are forked (all peers alike).  Standalone:
``python -m ctshm.bench.queues [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Final, NamedTuple, Optional

MiB: Final = 1 << 20


class QWorkload(NamedTuple):
    name: str
    producers: int
    consumers: int
    size: int
    messages: int
    objects: bool = False
    batch: bool = False  # consumers take batches where the peer can (get_many)


QUEUE_WORKLOADS: Final = (
    QWorkload("Q1", 1, 1, 64, 200_000),
    QWorkload("Q2", 1, 1, 4096, 100_000),
    QWorkload("Q3", 4, 4, 64, 200_000),
    QWorkload("Q4", 4, 4, 4096, 100_000),
    QWorkload("Q5", 10, 1, 64, 200_000),
    QWorkload("Q6", 10, 1, 4096, 100_000),
    QWorkload("Q7", 1, 1, MiB, 400, objects=True),
    QWorkload("Q3m", 4, 4, 64, 200_000, batch=True),
    QWorkload("Q5m", 10, 1, 64, 200_000, batch=True),
)
#: Messages per batch of a ``batch`` workload's consumers.
BATCH: Final = 100
QUEUE_PEERS: Final = ("ctshm-queue", "mp.Queue", "faster-fifo")


def _title(w: QWorkload) -> str:
    what = "1 MiB NumPy array (put_object)" if w.objects else f"{w.size} B"
    return f"{w.producers}x{w.consumers} {w.messages:,} x {what}" + (
        ", get_many" if w.batch else "")


def _payload(w: QWorkload) -> Any:
    if w.objects:
        import numpy as np
        return np.ones(w.size // 8, dtype=np.float64)
    return b"x" * w.size


def _capacity(w: QWorkload) -> int:
    return 32 if w.objects else 1024


# -- the three peers: (make the queue in the parent, put, get, close) -------------------------
class _Ops(NamedTuple):
    put: Callable[[Any], None]
    get: Callable[[], Any]
    done: Callable[[Any], bool]  # is this the stop message?
    flush: Callable[[], None] = lambda: None  # before a producer's _exit
    get_many: Optional[Callable[[], list[Any]]] = None  # a batch (where the peer has one)


def _ctshm_make(w: QWorkload, qid: str) -> Any:
    from ..queue import ShmQueue
    slot = w.size + 4096 if w.objects else w.size
    return ShmQueue.create(qid, capacity=_capacity(w), slot_size=slot)


def _ctshm_ops(q: Any, w: QWorkload) -> _Ops:
    from ..queue import ShmQueue
    h = ShmQueue.open(q.id)
    if w.objects:
        return _Ops(h.put_object, h.get_object, lambda m: m is None)
    return _Ops(h.put, h.get, lambda m: not m, get_many=lambda: h.get_many(BATCH))


def _mpq_make(w: QWorkload, qid: str) -> Any:
    return multiprocessing.get_context("fork").Queue(_capacity(w))


def _mpq_ops(q: Any, w: QWorkload) -> _Ops:
    def flush() -> None:  # mp.Queue's feeder thread must send everything before _exit
        q.close()
        q.join_thread()

    if w.objects:
        return _Ops(q.put, q.get, lambda m: m is None, flush)
    return _Ops(q.put, q.get, lambda m: not m, flush)


def _ff_make(w: QWorkload, qid: str) -> Any:
    from faster_fifo import Queue  # type: ignore[import-not-found,import-untyped,unused-ignore]
    return Queue(max_size_bytes=max(_capacity(w) * (w.size + 64), 100 * MiB))


def _ff_ops(q: Any, w: QWorkload) -> _Ops:
    if w.objects:
        return _Ops(q.put, q.get, lambda m: m is None)
    return _Ops(q.put, q.get, lambda m: not m,
                get_many=lambda: q.get_many(max_messages_to_get=BATCH))


_PEER_FNS: Final = {"ctshm-queue": (_ctshm_make, _ctshm_ops),
                    "mp.Queue": (_mpq_make, _mpq_ops),
                    "faster-fifo": (_ff_make, _ff_ops)}


def available(peer: str) -> Optional[str]:
    mod = {"faster-fifo": "faster_fifo"}.get(peer)
    if mod is None:
        return None
    try:
        __import__(mod)
    except ImportError as e:
        return f"{mod} not installed ({e})"
    return None


# -- children ---------------------------------------------------------------------------------
def _producer(peer: str, q: Any, w: QWorkload, n: int, barrier: Any) -> None:
    ops = _PEER_FNS[peer][1](q, w)
    msg = _payload(w)
    put = ops.put
    barrier.wait()
    for _ in range(n):
        put(msg)
    ops.flush()
    os._exit(0)


def _consumer(peer: str, q: Any, w: QWorkload, barrier: Any, out: Any) -> None:
    ops = _PEER_FNS[peer][1](q, w)
    get, done = ops.get, ops.done
    size = w.size
    n = bad = 0
    barrier.wait()
    if w.batch and ops.get_many is not None:
        n, bad = _consume_batches(ops, size)
    else:
        while True:
            m = get()
            if done(m):
                break
            n += 1
            if (m.nbytes if w.objects else len(m)) != size:
                bad += 1
    out.put((n, bad))
    out.close()
    out.join_thread()  # the feeder thread must flush before _exit
    os._exit(0)


def _consume_batches(ops: _Ops, size: int) -> tuple[int, int]:
    """The consumer loop of a batch workload: (messages, wrong lengths).  The stop messages
    come last (one per consumer): extra ones taken in a batch go back for the others."""
    assert ops.get_many is not None
    get_many = ops.get_many
    n = bad = 0
    while True:
        ms = get_many()
        stops = sum(1 for m in ms if not m)
        n += len(ms) - stops
        bad += sum(1 for m in ms if m and len(m) != size)
        if stops:
            for _ in range(stops - 1):
                ops.put(b"")
            return n, bad


def run_one(peer: str, w: QWorkload, qid: str, timeout: float = 300.0) -> dict[str, Any]:
    """One run of ``w`` on ``peer``: {"msgs_per_s", "seconds", "verified", ...}."""
    ctx = multiprocessing.get_context("fork")
    make, ops_of = _PEER_FNS[peer]
    q = make(w, qid)
    try:
        barrier = ctx.Barrier(w.producers + w.consumers + 1)
        out = ctx.Queue()
        share = [w.messages // w.producers + (1 if i < w.messages % w.producers else 0)
                 for i in range(w.producers)]
        prods = [ctx.Process(target=_producer, args=(peer, q, w, share[i], barrier))
                 for i in range(w.producers)]
        cons = [ctx.Process(target=_consumer, args=(peer, q, w, barrier, out))
                for _ in range(w.consumers)]
        for p in prods + cons:
            p.start()
        barrier.wait(timeout)
        t0 = time.perf_counter()
        for p in prods:
            p.join(timeout)
        stop = ops_of(q, w)
        for _ in cons:
            stop.put(None if w.objects else b"")
        results = [out.get(timeout=timeout) for _ in cons]
        for p in cons:
            p.join(timeout)
        return _summary(peer, w, prods + cons, results, time.perf_counter() - t0)
    finally:
        for p in locals().get("prods", []) + locals().get("cons", []):
            if p.is_alive():
                p.kill()
                p.join(5)
        if hasattr(q, "close"):
            q.close()


def _summary(peer: str, w: QWorkload, procs: list[Any], results: list[Any], dt: float
             ) -> dict[str, Any]:
    """A run's figures: verified only if every process exited 0 and every message came."""
    codes = [p.exitcode for p in procs]
    got = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    ok = codes == [0] * len(codes)
    return {"peer": peer, "ok": ok, "verified": ok and got == w.messages and not bad,
            "messages": got, "seconds": dt, "msgs_per_s": got / dt if dt > 0 else 0.0,
            "MB_per_s": got * w.size / dt / 1e6 if dt > 0 else 0.0}


def run(scale: float = 1.0, repeat: int = 1, peers: tuple[str, ...] = QUEUE_PEERS,
        prefix: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every queue workload on every available peer; the best of ``repeat`` runs kept."""
    prefix = prefix or f"cq{os.getpid():x}"
    report: dict[str, Any] = {"loadavg_before": list(os.getloadavg()), "workloads": {}}
    n = 0
    for w0 in QUEUE_WORKLOADS:
        w = w0._replace(messages=max(w0.producers * 10, int(w0.messages * scale)))
        res: dict[str, Any] = {}
        for peer in peers:
            why = available(peer)
            if why:
                res[peer] = {"peer": peer, "ok": False, "verified": False, "reason": why}
                continue
            best: Optional[dict[str, Any]] = None
            for _ in range(repeat):
                n += 1
                r = run_one(peer, w, f"{prefix}_{n}")
                if best is None or r["msgs_per_s"] > best["msgs_per_s"]:
                    best = r
            assert best is not None
            res[peer] = best
            log(f"  {w.name} {_title(w):40s} {peer:12s} {best['msgs_per_s']:12,.0f} msg/s"
                + ("" if best["verified"] else "  NOT VERIFIED"))
        report["workloads"][w.name] = {"title": _title(w), "results": res}
    report["loadavg_after"] = list(os.getloadavg())
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = ["ShmQueue workloads (msg/s, higher is better; x: ctshm-queue's speed-up)",
             f"{'':4s}{'workload':42s}" + "".join(f"{p:>14s}" for p in QUEUE_PEERS)
             + f"{'x mp.Queue':>12s}{'x faster-fifo':>15s}"]
    for name, d in report["workloads"].items():
        res = d["results"]
        rates = {p: res.get(p, {}).get("msgs_per_s") if res.get(p, {}).get("verified") else None
                 for p in QUEUE_PEERS}
        cells = "".join(f"{r:14,.0f}" if r else f"{'-':>14s}" for r in rates.values())
        ours = rates["ctshm-queue"]
        ratios = "".join(f"{ours / rates[p]:{wd}.2f}" if ours and rates[p] else f"{'-':>{wd}s}"
                         for p, wd in (("mp.Queue", 12), ("faster-fifo", 15)))
        lines.append(f"{name:4s}{d['title']:42s}{cells}{ratios}")
    lines.append(f"load average before {report['loadavg_before']}, after "
                 f"{report['loadavg_after']} ({os.cpu_count()} CPUs)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctshm.bench.queues", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="counts x0.05, one repeat")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--scale", type=float, default=None, help="message counts x SCALE")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    scale = a.scale if a.scale is not None else (0.05 if a.quick else 1.0)
    repeat = a.repeat or (1 if a.quick else 3)
    report = run(scale, repeat, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=1) if a.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
