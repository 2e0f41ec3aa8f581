"""``python -m ctshm.bench.objects``: Python objects between two processes.

Workloads (full counts; ``--quick`` runs a tenth)::

    OBJ-L    500 x {"frame": 1 MiB NumPy float64 array, "seq", "ts", "tag"}
                   (a 1 MiB bytearray instead when NumPy is not installed: labelled)
    OBJ-S 20,000 x {"seq", "ts", "kind", "vals": [3 ints], "ok"}  (~100 B pickled)

Peers (same run, interleaved, best of ``--repeat``):

``ctshm``        ``ring.put_object(obj)`` / ``ring.get_object()`` (pickle 5, out-of-band buffers
                 copied once into the slot, copied out once: the result owns its memory).
``ctshm-view``   ``ring.put_object(obj)`` / ``with ring.get_object_view() as obj`` (zero-copy:
                 the array points into the slot while the consumer looks at it).
``mp.Queue``     ``multiprocessing.Queue(maxsize=8)``: ``put(obj)`` / ``get()``.
``faster-fifo``  ``faster_fifo.Queue(64 MiB)``: ``put(obj)`` / ``get()``   [bench extra].

Both processes are forked from the bench process; the producer starts when the consumer is
ready; the time runs from the producer's first ``put`` to the consumer's receipt of the last
object (CLOCK_MONOTONIC).  The consumer checks every object's ``seq`` and (OBJ-L) reads the
first and last element of the array, so nothing is skipped lazily.  Numbers depend on what
else the machine runs; never assert on them in tests.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import secrets
import time
from typing import Any, Callable, NamedTuple, Optional

__all__ = ["PEERS", "WORKLOADS", "main", "run"]

_MiB = 1 << 20


class ObjWorkload(NamedTuple):
    name: str
    full: int
    make: Callable[[int], Any]
    describe: str


def _numpy() -> Any:
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


def _large_maker() -> tuple[Callable[[int], Any], str]:
    np = _numpy()
    if np is not None:
        frame = np.arange(_MiB // 8, dtype=np.float64)

        def make(i: int) -> Any:
            return {"frame": frame, "seq": i, "ts": time.time(), "tag": "camera-0"}
        return make, "dict: 1 MiB NumPy float64 array + 3 small fields"
    blob = bytearray(_MiB)

    def make_b(i: int) -> Any:
        return {"frame": blob, "seq": i, "ts": time.time(), "tag": "camera-0"}
    return make_b, "dict: 1 MiB bytearray (NumPy not installed) + 3 small fields"


def _small(i: int) -> Any:
    return {"seq": i, "ts": time.time(), "kind": "tick", "vals": [i, i + 1, i + 2], "ok": True}


def workloads() -> dict[str, ObjWorkload]:
    make, what = _large_maker()
    return {"OBJ-L": ObjWorkload("OBJ-L", 500, make, what),
            "OBJ-S": ObjWorkload("OBJ-S", 20_000, _small, "dict of 5 small fields (~100 B)")}


WORKLOADS = ("OBJ-L", "OBJ-S")


def _check(obj: Any, i: int) -> None:
    if obj["seq"] != i:
        raise RuntimeError(f"object {i}: got seq {obj['seq']}")
    f = obj.get("frame")
    if f is not None:
        _ = f[0], f[len(f) - 1]


# -- peers: (setup in parent) -> channel; producer(channel, ...); consumer(channel, ...) -----


class _Ctshm:
    name = "ctshm"
    view = False

    def available(self) -> Optional[str]:
        return None

    def setup(self, wl: ObjWorkload) -> Any:
        from ..ring import ShmTraceRing

        rid = f"cto{os.getpid() % 10000}_{secrets.token_hex(2)}"
        cap, slot = (8, 2 * _MiB) if wl.name == "OBJ-L" else (64, 2 * _MiB)
        return ShmTraceRing.create(rid, cap, slot)

    def producer(self, ring: Any, wl: ObjWorkload, n: int) -> None:
        from ..ring import ShmTraceRing

        r = ShmTraceRing.open(ring.id, timeout=10)
        put = r.put_object
        for i in range(n):
            put(wl.make(i), 60)
        r.close()

    def consumer(self, ring: Any, wl: ObjWorkload, n: int) -> None:
        from ..ring import ShmTraceRing

        r = ShmTraceRing.open(ring.id, timeout=10)
        if self.view:
            for i in range(n):
                with r.get_object_view(60) as obj:
                    _check(obj, i)
        else:
            get = r.get_object
            for i in range(n):
                _check(get(60), i)
        r.close()

    def teardown(self, ring: Any) -> None:
        ring.close()


class _CtshmView(_Ctshm):
    name = "ctshm-view"
    view = True


class _MpQueue:
    name = "mp.Queue"

    def available(self) -> Optional[str]:
        return None

    def setup(self, wl: ObjWorkload) -> Any:
        return multiprocessing.get_context("fork").Queue(8)

    def producer(self, q: Any, wl: ObjWorkload, n: int) -> None:
        for i in range(n):
            q.put(wl.make(i))
        q.close()
        q.join_thread()

    def consumer(self, q: Any, wl: ObjWorkload, n: int) -> None:
        for i in range(n):
            _check(q.get(timeout=60), i)

    def teardown(self, q: Any) -> None:
        q.close()


class _FasterFifo(_MpQueue):
    name = "faster-fifo"

    def available(self) -> Optional[str]:
        try:
            importlib.import_module("faster_fifo")
        except ImportError:
            return "faster-fifo not installed (pip install 'ctshm[bench]')"
        return None

    def setup(self, wl: ObjWorkload) -> Any:
        return importlib.import_module("faster_fifo").Queue(max_size_bytes=64 * _MiB)

    def producer(self, q: Any, wl: ObjWorkload, n: int) -> None:
        for i in range(n):
            q.put(wl.make(i), timeout=60)

    def teardown(self, q: Any) -> None:
        q.close()


PEERS: dict[str, Any] = {p.name: p for p in (_Ctshm(), _CtshmView(), _MpQueue(), _FasterFifo())}


def _role(fn: Callable[[Any, ObjWorkload, int], None], chan: Any, wl_name: str, n: int,
          ready: Any, go: Any, conn: Any, first: bool) -> None:
    try:
        wl = workloads()[wl_name]
        if first:  # the producer
            ready.wait(30)
            go.set()
            t0 = time.monotonic()
            fn(chan, wl, n)
            conn.send(("ok", t0))
        else:
            ready.set()
            go.wait(30)
            fn(chan, wl, n)
            conn.send(("ok", time.monotonic()))
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()
        os._exit(0)


def run_once(peer: Any, wl: ObjWorkload, n: int, timeout: float = 120) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    chan = peer.setup(wl)
    ready, go = ctx.Event(), ctx.Event()
    try:
        pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
        procs = [ctx.Process(target=_role, args=(peer.producer, chan, wl.name, n, ready, go,
                                                 pipes[0][1], True)),
                 ctx.Process(target=_role, args=(peer.consumer, chan, wl.name, n, ready, go,
                                                 pipes[1][1], False))]
        for p in procs:
            p.start()
        out = []
        for rd, _ in pipes:
            if not rd.poll(timeout):
                raise RuntimeError(f"{peer.name} {wl.name}: no result within {timeout} s")
            out.append(rd.recv())
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        for status, val in out:
            if status != "ok":
                raise RuntimeError(f"{peer.name} {wl.name}: {val}")
        secs = out[1][1] - out[0][1]
        return {"peer": peer.name, "workload": wl.name, "count": n, "seconds": secs,
                "rate": n / secs}
    finally:
        peer.teardown(chan)


def run(names: list[str], peers: list[str], scale: float, repeat: int,
        log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    wls = workloads()
    load0 = os.getloadavg()[0]
    rows = []
    for name in names:
        wl = wls[name]
        n = max(10, int(wl.full * scale))
        best: dict[str, dict[str, Any]] = {}
        for _ in range(repeat):
            for pname in peers:  # interleaved
                peer = PEERS[pname]
                why = peer.available()
                if why:
                    best.setdefault(pname, {"peer": pname, "workload": name, "skipped": why})
                    continue
                r = run_once(peer, wl, n)
                if "rate" not in best.get(pname, {}) or r["rate"] > best[pname]["rate"]:
                    best[pname] = r
        ref = best.get("ctshm", {}).get("rate")
        log(f"\n{name}: {n} x {wl.describe}")
        log(f"{'peer':<12} {'objects/s':>12} {'MiB/s':>9} {'µs/object':>10} {'ctshm/peer':>11}")
        for pname in peers:
            r = best[pname]
            if "skipped" in r:
                log(f"{pname:<12} skipped: {r['skipped']}")
                continue
            mib = r["rate"] * (1.0 if name == "OBJ-L" else 100 / _MiB)
            ratio = f"{ref / r['rate']:.2f}" if ref else "-"
            log(f"{pname:<12} {r['rate']:>12,.0f} {mib:>9,.1f} {1e6 / r['rate']:>10.1f} "
                f"{ratio:>11}")
            rows.append(r)
    log(f"\nmachine: nproc={os.cpu_count()}, 1-min load average {load0:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (a loaded machine: compare peers within this run "
        "only)")
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctshm.bench.objects", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tenth of each count")
    p.add_argument("--repeat", type=int, default=3, help="runs per peer, best kept (3)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--peers", default=",".join(PEERS))
    a = p.parse_args(argv)
    names = [w for w in a.workloads.split(",") if w]
    peers = [x for x in a.peers.split(",") if x]
    for w in names:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOADS)})")
    for x in peers:
        if x not in PEERS:
            p.error(f"unknown peer {x!r} (choose from {', '.join(PEERS)})")
    run(names, peers, 0.1 if a.quick else 1.0, max(1, a.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
