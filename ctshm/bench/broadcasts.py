"""Broadcast workloads (``python -m ctshm bench --broadcast``): one writer process sends the
same messages to 4 reader processes.

Workloads: ``B4K`` 20,000 x 4 KiB and ``B1M`` 400 x 1 MiB (``--quick``: a tenth).  Peers:

``ctshm-bcast``       :class:`ctshm.ShmBroadcast` (capacity 64 / 8), ``put`` / ``get`` (bytes)
``ctshm-bcast-view``  the same, readers use ``access()`` (in place) + ``release()``
``os.pipe x4``        one pipe per reader: ``os.write`` the message to each, readers
                      ``os.readv`` it into a buffer
``mp.Queue x4``       one ``multiprocessing.Queue`` per reader: ``put(bytes)`` x 4 / ``get()``
``iceoryx2``          publish-subscribe of ``Slice[c_uint8]``, 4 subscribers, publisher
                      backpressure ``RetryUntilDelivered``, busy-polling subscribers reading
                      in place (where the ``iceoryx2`` module is installed)

All five processes are forked fresh per run, set up, and start together; a run's time goes from
the writer's first send to the last reader's receipt of the last message (CLOCK_MONOTONIC).
Every message carries its number in its first 8 bytes; readers check number and length of
each, so a run is *verified* only if every reader got every message in order.  The figure is
aggregate bytes delivered (readers x messages x size / time).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import struct
import time
from typing import Any, Callable, Final, Optional

READERS: Final = 4
WORKLOADS: Final = {"B4K": (20_000, 4096, 64), "B1M": (400, 1 << 20, 8)}
_SEQ = struct.Struct("<Q")
_FORK = multiprocessing.get_context("fork")
MiB: Final = 1 << 20


def _msg(size: int) -> bytearray:
    return bytearray(b"\xa5" * size)


class _Sync:
    """Readers report ready, everybody starts at once; results through a queue."""

    def __init__(self) -> None:
        self.ready = _FORK.Barrier(READERS + 1)
        self.results: Any = _FORK.SimpleQueue()

    def go(self) -> None:
        self.ready.wait(60)


def _report(sync: _Sync, role: str, **kw: Any) -> None:
    sync.results.put({"role": role, **kw})


# -- the peers: writer(spec, n, size, sync) and reader(spec, k, n, size, sync) -------------------

def _bcast_setup(tag: str, n: int, size: int, depth: int) -> Any:
    from ctshm import ShmBroadcast
    return ShmBroadcast.create(tag, capacity=depth, slot_size=size, max_readers=READERS)


def _bcast_writer(spec: Any, n: int, size: int, sync: _Sync) -> None:
    from ctshm import ShmBroadcast
    w = ShmBroadcast.open(spec.id, role="writer")
    msg = _msg(size)
    pack, put = _SEQ.pack_into, w.put
    sync.go()
    t0 = time.perf_counter()
    for i in range(n):
        pack(msg, 0, i)
        put(msg)
    _report(sync, "writer", t0=t0)
    w.close()


def _bcast_reader(view: bool) -> Callable[..., None]:
    def reader(spec: Any, k: int, n: int, size: int, sync: _Sync) -> None:
        from ctshm import ShmBroadcast
        r = ShmBroadcast.open(spec.id)
        unpack, bad = _SEQ.unpack_from, 0
        sync.go()
        if view:
            access = r.access
            for i in range(n):
                g = access()
                b = g.buf
                if len(b) != size or unpack(b, 0)[0] != i:
                    bad += 1
                g.release()
        else:
            get = r.get
            for i in range(n):
                m = get()
                if len(m) != size or unpack(m, 0)[0] != i:
                    bad += 1
        _report(sync, "reader", t1=time.perf_counter(), bad=bad)
        r.close()
    return reader


def _pipes_setup(tag: str, n: int, size: int, depth: int) -> Any:
    return [os.pipe() for _ in range(READERS)]


def _pipes_writer(spec: Any, n: int, size: int, sync: _Sync) -> None:
    fds = [w for _, w in spec]
    for r, _ in spec:
        os.close(r)
    msg = _msg(size)
    mv, pack, write = memoryview(msg), _SEQ.pack_into, os.write
    sync.go()
    t0 = time.perf_counter()
    for i in range(n):
        pack(msg, 0, i)
        for fd in fds:
            done = write(fd, mv)
            while done < size:
                done += write(fd, mv[done:])
    _report(sync, "writer", t0=t0)


def _pipes_reader(spec: Any, k: int, n: int, size: int, sync: _Sync) -> None:
    fd = spec[k][0]
    for j, (r, w) in enumerate(spec):
        os.close(w)
        if j != k:
            os.close(r)
    buf = bytearray(size)
    mv, readv, unpack, bad = memoryview(buf), os.readv, _SEQ.unpack_from, 0
    sync.go()
    for i in range(n):
        got = 0
        while got < size:
            got += readv(fd, [mv[got:]])
        if unpack(buf, 0)[0] != i:
            bad += 1
    _report(sync, "reader", t1=time.perf_counter(), bad=bad)


def _queues_setup(tag: str, n: int, size: int, depth: int) -> Any:
    return [_FORK.Queue(depth) for _ in range(READERS)]


def _queues_writer(spec: Any, n: int, size: int, sync: _Sync) -> None:
    msg, pack = _msg(size), _SEQ.pack_into
    sync.go()
    t0 = time.perf_counter()
    for i in range(n):
        pack(msg, 0, i)
        b = bytes(msg)
        for q in spec:
            q.put(b)
    _report(sync, "writer", t0=t0)
    for q in spec:
        q.close()
        q.join_thread()


def _queues_reader(spec: Any, k: int, n: int, size: int, sync: _Sync) -> None:
    get, unpack, bad = spec[k].get, _SEQ.unpack_from, 0
    sync.go()
    for i in range(n):
        m = get()
        if len(m) != size or unpack(m, 0)[0] != i:
            bad += 1
    _report(sync, "reader", t1=time.perf_counter(), bad=bad)


def _iox_open(service: str, depth: int, size: int, publisher: bool) -> tuple[Any, Any, Any]:
    from .peers_extra import Iceoryx2  # the same service settings as the stream workloads

    return Iceoryx2._open(service, depth, size, publisher)


def _iox_setup(tag: str, n: int, size: int, depth: int) -> Any:
    return (f"ctshm-bench/{tag}", depth)


def _iox_writer(spec: Any, n: int, size: int, sync: _Sync) -> None:
    node, svc, pub = _iox_open(spec[0], spec[1], size, True)
    msg = _msg(size)
    src = (ctypes.c_char * size).from_buffer(msg)
    pack, memmove, loan = _SEQ.pack_into, ctypes.memmove, pub.loan_slice_uninit
    sync.go()
    pub.update_connections()
    t0 = time.perf_counter()
    for i in range(n):
        pack(msg, 0, i)
        s = loan(size)
        memmove(s.payload_ptr, src, size)
        s.assume_init().send()
    _report(sync, "writer", t0=t0)
    time.sleep(0.5)   # queued samples go away with the publisher: let the readers finish
    del src, s
    pub.delete()
    del svc, node


def _iox_reader(spec: Any, k: int, n: int, size: int, sync: _Sync) -> None:
    node, svc, sub = _iox_open(spec[0], spec[1], size, False)
    receive, u64, bad = sub.receive, ctypes.c_uint64.from_address, 0
    sync.go()
    i = 0
    while i < n:
        s = receive()
        if s is None:
            continue
        if s.payload().len() != size or u64(s.payload_ptr).value != i:
            bad += 1
        s.delete()
        i += 1
    _report(sync, "reader", t1=time.perf_counter(), bad=bad)
    sub.delete()
    del svc, node


PEERS: Final[dict[str, tuple[Callable[..., Any], Callable[..., None], Callable[..., None],
                             Optional[str]]]] = {
    "ctshm-bcast": (_bcast_setup, _bcast_writer, _bcast_reader(False), None),
    "ctshm-bcast-view": (_bcast_setup, _bcast_writer, _bcast_reader(True), None),
    "os.pipe x4": (_pipes_setup, _pipes_writer, _pipes_reader, None),
    "mp.Queue x4": (_queues_setup, _queues_writer, _queues_reader, None),
    "iceoryx2": (_iox_setup, _iox_writer, _iox_reader, "iceoryx2"),
}


def _child(fn: Callable[..., None], *args: Any) -> Any:
    p = _FORK.Process(target=fn, args=args, daemon=True)
    p.start()
    return p


def run_one(peer: str, wl: str, scale: float, tag: str, timeout: float) -> dict[str, Any]:
    setup, writer, reader, module = PEERS[peer]
    if module is not None:
        try:
            __import__(module)
        except ImportError as e:
            return {"ok": False, "why": f"not measured: {e}"}
    n, size, depth = WORKLOADS[wl]
    n = max(10, int(n * scale))
    spec = setup(tag, n, size, depth)
    sync = _Sync()
    try:
        procs = [_child(reader, spec, k, n, size, sync) for k in range(READERS)]
        procs.append(_child(writer, spec, n, size, sync))
        res = [sync.results.get() for _ in range(READERS + 1)] if _alive_within(
            procs, timeout) else []
        for p in procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join(5)
    finally:
        _teardown(peer, spec)
    if len(res) != READERS + 1 or any(p.exitcode != 0 for p in procs):
        return {"ok": False, "why": f"exit codes {[p.exitcode for p in procs]}"}
    return _summary(res, n, size)


def _teardown(peer: str, spec: Any) -> None:
    if hasattr(spec, "close"):
        spec.close()
    elif peer.startswith("os.pipe"):
        for r, w in spec:
            os.close(r)
            os.close(w)


def _summary(res: list[dict[str, Any]], n: int, size: int) -> dict[str, Any]:
    """A run's figures from its processes' reports (every one exited 0)."""
    t0 = next(r["t0"] for r in res if r["role"] == "writer")
    t1 = max(r["t1"] for r in res if r["role"] == "reader")
    bad = sum(r["bad"] for r in res if r["role"] == "reader")
    secs = t1 - t0
    return {"ok": True, "verified": bad == 0, "n": n, "size": size, "seconds": secs,
            "mib_per_s": READERS * n * size / secs / MiB, "msgs_per_s": n / secs}


def _alive_within(procs: list[Any], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(p.exitcode is not None for p in procs):
            return True
        if any(p.exitcode not in (None, 0) for p in procs):
            return False
        time.sleep(0.01)
    return False


def run(scale: float, repeat: int, timeout: float, prefix: str,
        log: Callable[[str], None]) -> dict[str, Any]:
    """Every peer on every broadcast workload, ``repeat`` times interleaved; the best kept."""
    load = [os.getloadavg()[0]]
    out: dict[str, Any] = {}
    for wl in WORKLOADS:
        best: dict[str, dict[str, Any]] = {}
        for rep in range(repeat):
            for peer in PEERS:
                r = run_one(peer, wl, scale, f"{prefix}{wl}{rep}{len(best)}", timeout)
                log(f"  {wl} {peer}: " + (f"{r['mib_per_s']:.0f} MiB/s" if r.get("ok")
                                          else r["why"]))
                old = best.get(peer)
                if old is None or (r.get("ok") and r.get("verified") and
                                   r["mib_per_s"] > old.get("mib_per_s", 0)):
                    best[peer] = r
        out[wl] = best
    load.append(os.getloadavg()[0])
    return {"workloads": out, "load": load, "nproc": os.cpu_count()}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"Broadcast: 1 writer -> {READERS} readers, aggregate bytes delivered "
             f"(nproc {report['nproc']}, load {report['load'][0]:.1f} -> "
             f"{report['load'][1]:.1f})"]
    for wl, res in report["workloads"].items():
        _n, size, depth = WORKLOADS[wl]
        lines.append(f"\n{wl}: {size // 1024} KiB messages, depth {depth}")
        ref = res.get("ctshm-bcast", {})
        lines.append(f"  {'peer':<18} {'MiB/s':>9} {'msg/s':>9} {'ctshm-bcast / peer':>20}")
        for peer, r in res.items():
            if not r.get("ok"):
                lines.append(f"  {peer:<18} {r.get('why', '')}")
                continue
            ratio = (f"{ref['mib_per_s'] / r['mib_per_s']:.2f}x" if ref.get("ok") else "-")
            mark = "" if r.get("verified") else "  NOT VERIFIED"
            lines.append(f"  {peer:<18} {r['mib_per_s']:>9.0f} {r['msgs_per_s']:>9.0f} "
                         f"{ratio:>20}{mark}")
    return "\n".join(lines)


def main(quick: bool, repeat: Optional[int], timeout: float, prefix: str) -> int:
    scale = 0.1 if quick else 1.0
    rep = repeat if repeat is not None else (1 if quick else 3)
    report = run(scale, rep, timeout, prefix, lambda s: print(s, flush=True))
    print(format_table(report))
    return 0
