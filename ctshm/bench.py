"""``python -m ctshm bench``: ctshm against other IPC mechanisms, two real processes per run.

Workloads (full counts; ``--quick`` runs a tenth of each)::

    W1  200,000 x 64 B     stream
    W2  100,000 x 4 KiB    stream
    W3    2,000 x 1 MiB    stream, 32 messages in flight
    W4   20,000 x 64 B     ping-pong round trips (median and p99 µs), one channel per direction

Every run forks two fresh processes from the bench process (producer + consumer, or client +
echo server); both set up, report ready, and start together.  A stream's time runs from the
producer's first send to the consumer's receipt of the last message (CLOCK_MONOTONIC, the
same clock in both processes).  Each message carries its sequence number in its first 8 bytes
(little-endian u64); the consumer reads it and the length of every message and counts
mismatches, so a run is *verified* only if every message arrived, in order, intact.

Peers (each used the way its documentation suggests):

``ctshm-records``  :class:`~ctshm.records.RecordWriter` (``append``, 64 KiB batches) and
                   :class:`~ctshm.records.RecordReader` (zero-copy record views).
``ctshm-slot``     one message per slot: ``ring.put(msg)`` / ``ring.access()`` + ``release()``.
``mp.Queue``       ``multiprocessing.Queue(maxsize)``: ``put(bytes)`` / ``get()``.
``mp.Pipe``        ``multiprocessing.Pipe()``: ``send_bytes`` / ``recv_bytes``.
``os.pipe``        raw ``os.write`` / ``os.readv`` of each message (no user-space buffering).
``posix_ipc+shm``  a hand-written ring: ``posix_ipc`` semaphores (filled/empty) + one mmap'd
                   ``posix_ipc.SharedMemory`` of 32 slots.                       [bench extra]
``faster-fifo``    ``faster_fifo.Queue``: ``put`` / ``get_many`` (``get`` for ping-pong).  [extra]
``iceoryx2``       publish-subscribe of ``Slice[c_uint8]``, publisher backpressure
                   ``RetryUntilDelivered``, busy-polling subscriber.                [extra]
``rust-seed``      the original Rust ring (``seedref produce`` -> ``seedref consume``, both
                   Rust, 2 MiB slots, same frame sizes); streams only.  Found via
                   ``SEEDREF_BIN`` or built with ``../shared/seedref/build.sh``.

Ratios are ``ctshm / peer`` in performance terms (> 1: ctshm is faster): throughput
``ctshm_rate / peer_rate``, latency ``peer_median / ctshm_median``.  The ctshm reference is
``ctshm-records`` for W1/W2 and ``ctshm-slot`` for W3/W4.

Every shared-memory object and semaphore a run creates is removed in a ``finally`` (also when
a child fails or hangs: children are killed after ``--timeout`` seconds).  Numbers depend on
what else the machine runs: each run is repeated (``--repeat``, best kept) and peers are
interleaved; never assert on them in tests.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import struct
import sys
import time
import traceback
from typing import Any, Callable, Final, NamedTuple, Optional

# multiprocessing, subprocess, mmap and platform are imported where used: the CLI imports
# this module to declare the subcommand, and `python -m ctshm info` should not pay for them.
from . import __version__, atomics, libc
from .records import RecordReader, RecordWriter
from .ring import Data, Finished, ShmTraceRing
from .semaphore import NamedSemaphore

__all__ = ["PEERS", "WORKLOADS", "import_cost", "main", "memory_check", "run"]



def _ctx() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork")

_SEQ: Final = struct.Struct("<Q")
_MiB: Final = 1 << 20
#: Slot size for every ring (rounded up to 2 MiB by the ring itself, as in the Rust original).
RING_SLOT: Final = 2 * _MiB
#: Slots per ring.
RING_CAPACITY: Final = 32
#: RecordWriter batch: a slot is published once it holds this many bytes.
RECORD_BATCH: Final = 64 * 1024
QUICK_SCALE: Final = 0.1


class Workload(NamedTuple):
    name: str
    kind: str  # "stream" | "pingpong"
    size: int  # bytes per message
    full_count: int  # messages (stream) or round trips (ping-pong) in a full run
    depth: int  # messages in flight for queue-like peers
    title: str


WORKLOADS: Final = {
    "W1": Workload("W1", "stream", 64, 200_000, 1024, "200,000 x 64 B stream"),
    "W2": Workload("W2", "stream", 4096, 100_000, 1024, "100,000 x 4 KiB stream"),
    "W3": Workload("W3", "stream", _MiB, 2_000, 32, "2,000 x 1 MiB stream, 32 in flight"),
    "W4": Workload("W4", "pingpong", 64, 20_000, 1, "20,000 x 64 B ping-pong"),
}
REFERENCE: Final = {"W1": "ctshm-records", "W2": "ctshm-records", "W3": "ctshm-slot",
                    "W4": "ctshm-slot"}


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Child side: start barrier, verification helpers
# ---------------------------------------------------------------------------------------------


class _Sync:
    """A child's end of the control pipe: ``go()`` reports ready and waits for the start."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def go(self) -> None:
        self.conn.send("ready")
        if self.conn.recv() != "go":
            raise BenchError("bench parent cancelled the run")

    def report_then_linger(self, result: dict[str, Any], timeout: float = 300.0) -> None:
        """Send the result now, then wait until the bench process says every role is done
        (for peers whose in-flight messages die with the sender's port: iceoryx2)."""
        self.conn.send(("ok", result))
        if self.conn.poll(timeout):
            self.conn.recv()


def _message(size: int) -> bytearray:
    """A message of ``size`` bytes: sequence number (set per message) + a fixed pattern."""
    return bytearray(bytes(range(256)) * (size // 256) + bytes(range(size % 256)))


class _Check:
    """Consumer-side verification: every message's length and sequence number."""

    __slots__ = ("errors", "first", "n", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.n = 0
        self.errors = 0
        self.first = ""

    def bad(self, got_len: int, got_seq: int) -> None:
        self.errors += 1
        if not self.first:
            self.first = (f"message {self.n}: {got_len} bytes (expected {self.size}), "
                          f"sequence {got_seq}")

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"count": self.n, "errors": self.errors, "first_error": self.first,
                "t_end": time.perf_counter(), **extra}


def _pingpong_summary(rtts: list[int]) -> dict[str, Any]:
    if not rtts:
        return {}
    s = sorted(rtts)
    k = len(s) // 2
    median = s[k] if len(s) % 2 else (s[k - 1] + s[k]) / 2
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return {"median_us": median / 1e3, "p99_us": p99 / 1e3,
            "mean_us": sum(s) / len(s) / 1e3, "min_us": s[0] / 1e3}


def _warmup(count: int) -> int:
    return max(10, count // 20)


# ---------------------------------------------------------------------------------------------
# Peers.  A peer's setup() runs in the bench process and creates what must outlive the
# children (and registers its cleanup); the role functions run in the forked children.
# ---------------------------------------------------------------------------------------------


class RunContext:
    """Names and cleanups of one run (all undone in ``cleanup()``, in reverse order)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = 0
        self._undo: list[Callable[[], None]] = []
        #: run in the bench process right after the children are forked
        self.after_start: list[Callable[[], None]] = []

    def new_id(self) -> str:
        self._n += 1
        return f"{self.prefix}_{self._n}"

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def cleanup(self) -> list[str]:
        problems = []
        while self._undo:
            fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # pragma: no cover - reported, never raised
                problems.append(f"{fn!r}: {e}")
        return problems


class Peer:
    name = ""
    kinds: tuple[str, ...] = ("stream", "pingpong")
    extra = False  # needs the 'bench' extra
    module = ""

    def available(self) -> Optional[str]:
        """None if usable here, else why not."""
        if not self.module:
            return None
        try:
            __import__(self.module)
        except Exception as e:
            return f"not installed ({type(e).__name__}: {e}); pip install 'ctshm[bench]'"
        return None

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        return None


# -- ctshm -------------------------------------------------------------------------------------


#: Busy-wait of the ctshm rings the children open (None: the ring's default); a hidden
#: ``--spin`` option sets it to measure the effect of the ring's spin policy.
RING_SPIN: Optional[float] = None


def _open_ring(rid: str) -> ShmTraceRing:
    if RING_SPIN is None:
        return ShmTraceRing.open(rid)
    return ShmTraceRing.open(rid, spin=RING_SPIN)


def _ring(ctx: RunContext, capacity: int = RING_CAPACITY) -> str:
    ring = ShmTraceRing.create(ctx.new_id(), capacity, RING_SLOT)
    ctx.on_cleanup(ring.close)  # owner: unlinks the object and both semaphores
    return ring.id


class CtshmSlot(Peer):
    name = "ctshm-slot"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        if wl.kind == "stream":
            return _ring(ctx)
        return (_ring(ctx, 4), _ring(ctx, 4))

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ring = _open_ring(spec)
        msg = _message(wl.size)
        pack, put = _SEQ.pack_into, ring.put
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            put(msg)
        ring.mark_finished()
        t1 = time.perf_counter()
        ring.close()
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ring = _open_ring(spec)
        chk = _Check(wl.size)
        unpack, access, size = _SEQ.unpack_from, ring.access, wl.size
        sync.go()
        while True:
            r = access()
            if type(r) is Data:
                g = r.guard
                b = g.buf
                if len(b) != size or unpack(b, 0)[0] != chk.n:
                    chk.bad(len(b), unpack(b, 0)[0] if len(b) >= 8 else -1)
                chk.n += 1
                g.release()
            elif type(r) is Finished:
                break
            else:
                raise BenchError(f"ring ended with {r!r}")
        out = chk.result()
        ring.close()
        return out

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = (_open_ring(x) for x in spec)
        reply = _message(wl.size)
        pack, unpack, access, put = _SEQ.pack_into, _SEQ.unpack_from, a.access, b.put
        total = count + _warmup(count)
        sync.go()
        for _ in range(total):
            r = access()
            if type(r) is not Data:
                raise BenchError(f"ping ring ended with {r!r}")
            g = r.guard
            pack(reply, 0, unpack(g.buf, 0)[0])
            put(reply)
            g.release()
        a.close()
        b.close()
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = (_open_ring(x) for x in spec)
        msg = _message(wl.size)
        pack, unpack, access, put = _SEQ.pack_into, _SEQ.unpack_from, b.access, a.put
        clock = time.perf_counter_ns
        warm = _warmup(count)
        rtts = []
        chk = _Check(wl.size)
        sync.go()
        t0 = time.perf_counter()
        for i in range(count + warm):
            pack(msg, 0, i)
            s = clock()
            put(msg)
            r = access()
            e = clock()
            if type(r) is not Data:
                raise BenchError(f"pong ring ended with {r!r}")
            g = r.guard
            buf = g.buf
            if len(buf) != wl.size or unpack(buf, 0)[0] != i:
                chk.bad(len(buf), unpack(buf, 0)[0])
            g.release()
            if i >= warm:
                rtts.append(e - s)
                chk.n += 1
        out = chk.result(t_start=t0, **_pingpong_summary(rtts))
        a.close()
        b.close()
        return out


class CtshmRecords(Peer):
    name = "ctshm-records"
    kinds = ("stream",)

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        return _ring(ctx)

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ring = _open_ring(spec)
        msg = _message(wl.size)
        w = RecordWriter(ring, max_bytes=max(RECORD_BATCH, 2 * wl.size))
        pack, append = _SEQ.pack_into, w.append
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            append(msg)
        w.close()  # flush + mark_finished
        t1 = time.perf_counter()
        ring.close()
        return {"t_start": t0, "t_sent": t1, "slots": w.slots_written}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ring = _open_ring(spec)
        chk = _Check(wl.size)
        unpack, size = _SEQ.unpack_from, wl.size
        reader = RecordReader(ring)
        sync.go()
        n = 0
        for rec in reader:
            if len(rec) != size or unpack(rec, 0)[0] != n:
                chk.n = n
                chk.bad(len(rec), unpack(rec, 0)[0] if len(rec) >= 8 else -1)
            n += 1
        chk.n = n
        out = chk.result(slots=reader.slots_read)
        ring.close()
        return out


# -- standard library --------------------------------------------------------------------------


class MpQueue(Peer):
    name = "mp.Queue"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        qs = [_ctx().Queue(wl.depth) for _ in range(1 if wl.kind == "stream" else 2)]
        for q in qs:
            ctx.on_cleanup(q.close)
        return qs

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        q = spec[0]
        msg = _message(wl.size)
        pack, put = _SEQ.pack_into, q.put
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            put(bytes(msg))  # the feeder thread pickles later: hand it an immutable copy
        t1 = time.perf_counter()
        q.close()
        q.join_thread()
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        q = spec[0]
        chk = _Check(wl.size)
        unpack, get, size = _SEQ.unpack_from, q.get, wl.size
        sync.go()
        for i in range(count):
            m = get()
            if len(m) != size or unpack(m, 0)[0] != i:
                chk.n = i
                chk.bad(len(m), unpack(m, 0)[0])
        chk.n = count
        return chk.result()

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ping, pong = spec
        total = count + _warmup(count)
        sync.go()
        for _ in range(total):
            pong.put(ping.get())
        pong.close()
        pong.join_thread()
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ping, pong = spec
        return _client_loop(wl, count, sync, lambda m: ping.put(bytes(m)), pong.get)


class MpPipe(Peer):
    name = "mp.Pipe"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        a, b = _ctx().Pipe()  # duplex (a socketpair), as multiprocessing.Pipe() gives by default
        for c in (a, b):  # Connection.close() is idempotent
            ctx.on_cleanup(c.close)
            ctx.after_start.append(c.close)
        return (a, b)

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = spec
        b.close()
        msg = _message(wl.size)
        pack, send = _SEQ.pack_into, a.send_bytes
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            send(msg)
        t1 = time.perf_counter()
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = spec
        a.close()
        chk = _Check(wl.size)
        unpack, recv, size = _SEQ.unpack_from, b.recv_bytes, wl.size
        sync.go()
        for i in range(count):
            m = recv()
            if len(m) != size or unpack(m, 0)[0] != i:
                chk.n = i
                chk.bad(len(m), unpack(m, 0)[0])
        chk.n = count
        return chk.result()

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = spec
        a.close()
        total = count + _warmup(count)
        sync.go()
        for _ in range(total):
            b.send_bytes(b.recv_bytes())
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = spec
        b.close()
        return _client_loop(wl, count, sync, a.send_bytes, a.recv_bytes)


def _write_all(fd: int, data: Any) -> None:
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


def _readv_copy(fd: int, bufs: list[memoryview]) -> int:
    """``os.readv`` for one buffer where the os module lacks it (PyPy 3.9): read + copy."""
    data = os.read(fd, len(bufs[0]))
    bufs[0][:len(data)] = data
    return len(data)


_readv: Any = getattr(os, "readv", _readv_copy)


def _read_exact(fd: int, buf: bytearray, mv: memoryview) -> bytearray:
    got = _readv(fd, [mv])
    if got != len(buf):
        _read_rest(fd, mv, got)
    return buf


class OsPipe(Peer):
    name = "os.pipe"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        fds = list(os.pipe())
        if wl.kind == "pingpong":
            fds += os.pipe()
        spec = tuple(fds)

        def close_once() -> None:  # never twice: a number may be reused by a later open
            while fds:
                _close_quietly(fds.pop())

        ctx.on_cleanup(close_once)
        ctx.after_start.append(close_once)
        return spec

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        r, w = spec
        os.close(r)
        msg = _message(wl.size)
        pack, write, size = _SEQ.pack_into, os.write, wl.size
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            if write(w, msg) != size:  # a blocking pipe writes everything unless interrupted
                _write_all(w, memoryview(msg)[size:])
        t1 = time.perf_counter()
        os.close(w)
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        r, w = spec
        os.close(w)
        chk = _Check(wl.size)
        buf = bytearray(wl.size)
        mv = memoryview(buf)
        unpack, readv, size = _SEQ.unpack_from, _readv, wl.size
        bufs = [mv]
        sync.go()
        for i in range(count):
            got = readv(r, bufs)
            if got != size:
                _read_rest(r, mv, got)
            if unpack(buf, 0)[0] != i:
                chk.n = i
                chk.bad(size, unpack(buf, 0)[0])
        chk.n = count
        os.close(r)
        return chk.result()

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        r1, w1, r2, w2 = spec
        os.close(w1)
        os.close(r2)
        buf = bytearray(wl.size)
        mv = memoryview(buf)
        total = count + _warmup(count)
        sync.go()
        for _ in range(total):
            _read_exact(r1, buf, mv)
            _write_all(w2, buf)
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        r1, w1, r2, w2 = spec
        os.close(r1)
        os.close(w2)
        buf = bytearray(wl.size)
        mv = memoryview(buf)
        return _client_loop(wl, count, sync, lambda m: _write_all(w1, m),
                            lambda: _read_exact(r2, buf, mv))


def _read_rest(fd: int, mv: memoryview, got: int) -> None:
    size = len(mv)
    while got < size:
        k = _readv(fd, [mv[got:]])
        if k == 0:
            raise BenchError("pipe closed early")
        got += k


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _client_loop(wl: Workload, count: int, sync: _Sync, send: Callable[[Any], Any],
                 recv: Callable[[], Any], msg: Optional[bytearray] = None,
                 on_go: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """Ping-pong client for the copying peers: send, receive the echo, check it."""
    if msg is None:
        msg = _message(wl.size)
    pack, unpack, clock, size = _SEQ.pack_into, _SEQ.unpack_from, time.perf_counter_ns, wl.size
    warm = _warmup(count)
    rtts = []
    chk = _Check(size)
    sync.go()
    if on_go is not None:
        on_go()
    t0 = time.perf_counter()
    for i in range(count + warm):
        pack(msg, 0, i)
        s = clock()
        send(msg)
        m = recv()
        e = clock()
        if len(m) != size or unpack(m, 0)[0] != i:
            chk.bad(len(m), unpack(m, 0)[0])
        if i >= warm:
            rtts.append(e - s)
            chk.n += 1
    return chk.result(t_start=t0, **_pingpong_summary(rtts))


# -- posix_ipc ---------------------------------------------------------------------------------


class _PosixRing:
    """Slots of ``[u64 length][payload]`` in one posix_ipc shared memory object, handed over
    with two posix_ipc semaphores (filled, empty): the ring one writes by hand with posix_ipc."""

    def __init__(self, names: tuple[str, str, str], capacity: int, size: int) -> None:
        import mmap

        import posix_ipc  # type: ignore[import-not-found,unused-ignore]

        self.capacity = capacity
        self.slot = (8 + size + 63) & ~63
        shm = posix_ipc.SharedMemory(names[0])
        self.mm = mmap.mmap(shm.fd, shm.size)
        shm.close_fd()
        self.filled = posix_ipc.Semaphore(names[1])
        self.empty = posix_ipc.Semaphore(names[2])

    @staticmethod
    def create(ctx: RunContext, capacity: int, size: int) -> tuple[str, str, str]:
        import posix_ipc  # type: ignore[import-not-found,unused-ignore]

        base = "/" + ctx.new_id()
        names = (base + "_m", base + "_f", base + "_e")
        slot = (8 + size + 63) & ~63
        shm = posix_ipc.SharedMemory(names[0], posix_ipc.O_CREX, size=capacity * slot)
        shm.close_fd()
        ctx.on_cleanup(lambda: _ignore(posix_ipc.ExistentialError,
                                       posix_ipc.unlink_shared_memory, names[0]))
        posix_ipc.Semaphore(names[1], posix_ipc.O_CREX, initial_value=0).close()
        ctx.on_cleanup(lambda: _ignore(posix_ipc.ExistentialError,
                                       posix_ipc.unlink_semaphore, names[1]))
        posix_ipc.Semaphore(names[2], posix_ipc.O_CREX, initial_value=capacity).close()
        ctx.on_cleanup(lambda: _ignore(posix_ipc.ExistentialError,
                                       posix_ipc.unlink_semaphore, names[2]))
        return names

    def close(self) -> None:
        self.mm.close()
        self.filled.close()
        self.empty.close()


def _ignore(exc: type[BaseException], fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except exc:
        pass


class PosixIpc(Peer):
    name = "posix_ipc+shm"
    extra = True
    module = "posix_ipc"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        if wl.kind == "stream":
            return (_PosixRing.create(ctx, RING_CAPACITY, wl.size),)
        return (_PosixRing.create(ctx, 4, wl.size), _PosixRing.create(ctx, 4, wl.size))

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ring = _PosixRing(spec[0], RING_CAPACITY, wl.size)
        msg = _message(wl.size)
        pack, mm, n = _SEQ.pack_into, ring.mm, wl.size
        cap, slot = ring.capacity, ring.slot
        acquire, release = ring.empty.acquire, ring.filled.release
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            off = (i % cap) * slot
            acquire()
            pack(mm, off, n)
            mm[off + 8:off + 8 + n] = msg
            release()
        t1 = time.perf_counter()
        ring.close()
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ring = _PosixRing(spec[0], RING_CAPACITY, wl.size)
        chk = _Check(wl.size)
        unpack, mm, size = _SEQ.unpack_from, ring.mm, wl.size
        cap, slot = ring.capacity, ring.slot
        acquire, release = ring.filled.acquire, ring.empty.release
        sync.go()
        for i in range(count):
            off = (i % cap) * slot
            acquire()
            n = unpack(mm, off)[0]
            if n != size or unpack(mm, off + 8)[0] != i:
                chk.n = i
                chk.bad(n, unpack(mm, off + 8)[0])
            release()
        chk.n = count
        ring.close()
        return chk.result()

    @staticmethod
    def _pair(spec: Any, wl: Workload) -> tuple[_PosixRing, _PosixRing]:
        return _PosixRing(spec[0], 4, wl.size), _PosixRing(spec[1], 4, wl.size)

    @staticmethod
    def _sender(ring: _PosixRing, size: int) -> Callable[[Any], None]:
        state = [0]
        mm, cap, slot, pack = ring.mm, ring.capacity, ring.slot, _SEQ.pack_into
        acquire, release = ring.empty.acquire, ring.filled.release

        def send(m: Any) -> None:
            off = (state[0] % cap) * slot
            state[0] += 1
            acquire()
            pack(mm, off, size)
            mm[off + 8:off + 8 + size] = m
            release()
        return send

    @staticmethod
    def _receiver(ring: _PosixRing) -> Callable[[], bytes]:
        state = [0]
        mm, cap, slot, unpack = ring.mm, ring.capacity, ring.slot, _SEQ.unpack_from
        acquire, release = ring.filled.acquire, ring.empty.release

        def recv() -> bytes:
            off = (state[0] % cap) * slot
            state[0] += 1
            acquire()
            n = unpack(mm, off)[0]
            m = mm[off + 8:off + 8 + n]  # a copy (mmap slices are bytes): released at once
            release()
            return m
        return recv

    @classmethod
    def server(cls, spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = cls._pair(spec, wl)
        recv, send = cls._receiver(a), cls._sender(b, wl.size)
        total = count + _warmup(count)
        sync.go()
        for _ in range(total):
            send(recv())
        a.close()
        b.close()
        return {"count": total}

    @classmethod
    def client(cls, spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        a, b = cls._pair(spec, wl)
        out = _client_loop(wl, count, sync, cls._sender(a, wl.size), cls._receiver(b))
        a.close()
        b.close()
        return out


# -- faster-fifo -------------------------------------------------------------------------------


class FasterFifo(Peer):
    name = "faster-fifo"
    extra = True
    module = "faster_fifo"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        from faster_fifo import Queue  # type: ignore[import-not-found,unused-ignore]

        nbytes = max(1 << 20, wl.depth * (wl.size + 256))
        qs = [Queue(max_size_bytes=nbytes) for _ in range(1 if wl.kind == "stream" else 2)]
        for q in qs:
            ctx.on_cleanup(q.close)
        return qs

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        q = spec[0]
        msg = _message(wl.size)
        pack, put = _SEQ.pack_into, q.put
        sync.go()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            put(msg, True, 60.0)  # serialized inside put(): msg may change afterwards
        t1 = time.perf_counter()
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        q = spec[0]
        chk = _Check(wl.size)
        unpack, get_many, size = _SEQ.unpack_from, q.get_many, wl.size
        sync.go()
        i = 0
        while i < count:
            for m in get_many(True, 60.0):
                if len(m) != size or unpack(m, 0)[0] != i:
                    chk.n = i
                    chk.bad(len(m), unpack(m, 0)[0])
                i += 1
        chk.n = i
        return chk.result()

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ping, pong = spec
        total = count + _warmup(count)
        sync.go()
        for _ in range(total):
            pong.put(ping.get(True, 60.0), True, 60.0)
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        ping, pong = spec
        return _client_loop(wl, count, sync, lambda m: ping.put(m, True, 60.0),
                            lambda: pong.get(True, 60.0))


# -- iceoryx2 ----------------------------------------------------------------------------------


class Iceoryx2(Peer):
    name = "iceoryx2"
    extra = True
    module = "iceoryx2"

    def setup(self, ctx: RunContext, wl: Workload, count: int) -> Any:
        base = f"ctshm-bench/{ctx.new_id()}"
        return (base + "/a", base + "/b")

    @staticmethod
    def _open(service: str, depth: int, size: int, publisher: bool) -> tuple[Any, Any, Any]:
        import iceoryx2 as iox2  # type: ignore[import-untyped,import-not-found,unused-ignore]

        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        svc = (node.service_builder(iox2.ServiceName.new(service))
               .publish_subscribe(iox2.Slice[ctypes.c_uint8])
               .subscriber_max_buffer_size(depth)
               .history_size(0)
               .enable_safe_overflow(False)
               .open_or_create())
        if publisher:
            port = (svc.publisher_builder().initial_max_slice_len(size)
                    .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                    .create())
        else:
            port = svc.subscriber_builder().buffer_size(depth).create()
        return node, svc, port

    @staticmethod
    def _sender(pub: Any, msg: bytearray) -> Callable[[Any], None]:
        """Sends ``msg`` (always that buffer) by copying it into a loaned sample."""
        memmove, loan, size = ctypes.memmove, pub.loan_slice_uninit, len(msg)
        src = (ctypes.c_char * size).from_buffer(msg)

        def send(m: Any) -> None:
            s = loan(size)
            memmove(s.payload_ptr, src, size)
            s.assume_init().send()
        return send

    @staticmethod
    def _receiver(sub: Any) -> Callable[[], bytes]:
        receive, string_at = sub.receive, ctypes.string_at

        def recv() -> bytes:
            while True:
                s = receive()
                if s is not None:
                    m = string_at(s.payload_ptr, s.payload().len())
                    s.delete()
                    return m
        return recv

    @classmethod
    def producer(cls, spec: Any, wl: Workload, count: int, sync: _Sync
                 ) -> Optional[dict[str, Any]]:
        node, svc, pub = cls._open(spec[0], wl.depth, wl.size, True)
        msg = _message(wl.size)
        src = (ctypes.c_char * wl.size).from_buffer(msg)
        pack, memmove, loan, size = _SEQ.pack_into, ctypes.memmove, pub.loan_slice_uninit, wl.size
        sync.go()
        pub.update_connections()
        t0 = time.perf_counter()
        for i in range(count):
            pack(msg, 0, i)
            s = loan(size)
            memmove(s.payload_ptr, src, size)
            s.assume_init().send()
        t1 = time.perf_counter()
        # Samples still queued for the subscriber go away with the publisher: keep it until
        # the consumer has received everything.
        sync.report_then_linger({"t_start": t0, "t_sent": t1})
        del src, s
        pub.delete()
        del svc, node
        return None

    @classmethod
    def consumer(cls, spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        node, svc, sub = cls._open(spec[0], wl.depth, wl.size, False)
        chk = _Check(wl.size)
        receive, u64, size = sub.receive, ctypes.c_uint64.from_address, wl.size
        sync.go()
        i = 0
        while i < count:
            s = receive()
            if s is None:
                continue
            n = s.payload().len()
            if n != size or u64(s.payload_ptr).value != i:
                chk.n = i
                chk.bad(n, u64(s.payload_ptr).value)
            s.delete()
            i += 1
        chk.n = i
        out = chk.result()
        sub.delete()
        del svc, node
        return out

    @classmethod
    def server(cls, spec: Any, wl: Workload, count: int, sync: _Sync
               ) -> Optional[dict[str, Any]]:
        _node_a, _svc_a, sub = cls._open(spec[0], 4, wl.size, False)
        _node_b, _svc_b, pub = cls._open(spec[1], 4, wl.size, True)
        receive, loan, memmove, size = sub.receive, pub.loan_slice_uninit, ctypes.memmove, wl.size
        total = count + _warmup(count)
        sync.go()
        pub.update_connections()
        n = 0
        while n < total:
            s = receive()
            if s is None:
                continue
            out = loan(size)
            memmove(out.payload_ptr, s.payload_ptr, size)  # echo: sample to sample
            s.delete()
            out.assume_init().send()
            n += 1
        sync.report_then_linger({"count": total})  # the last echo dies with the publisher
        sub.delete()
        pub.delete()
        return None

    @classmethod
    def client(cls, spec: Any, wl: Workload, count: int, sync: _Sync) -> dict[str, Any]:
        _node_a, _svc_a, pub = cls._open(spec[0], 4, wl.size, True)
        _node_b, _svc_b, sub = cls._open(spec[1], 4, wl.size, False)
        msg = _message(wl.size)
        out = _client_loop(wl, count, sync, cls._sender(pub, msg), cls._receiver(sub), msg=msg,
                           on_go=pub.update_connections)
        sub.delete()
        pub.delete()
        return out


# -- the Rust seed -----------------------------------------------------------------------------


class RustSeed(Peer):
    name = "rust-seed"
    kinds = ("stream",)
    binary: Optional[str] = None
    why_not: Optional[str] = None

    def available(self) -> Optional[str]:
        if self.binary is None and self.why_not is None:
            self.binary, self.why_not = find_seedref()
        return self.why_not


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_seedref(build: bool = True) -> tuple[Optional[str], Optional[str]]:
    """(path, None) of the seedref binary, or (None, why not)."""
    env = os.environ.get("SEEDREF_BIN")
    if env:
        if os.access(env, os.X_OK):
            return env, None
        return None, f"SEEDREF_BIN={env!r} is not an executable file"
    script = os.path.join(_repo_root(), "..", "shared", "seedref", "build.sh")
    if not os.path.exists(script):
        return None, "no SEEDREF_BIN and no ../shared/seedref/build.sh beside the checkout"
    if not build:
        return None, "not built (set SEEDREF_BIN or run ../shared/seedref/build.sh)"
    import subprocess
    try:
        p = subprocess.run(["bash", script], capture_output=True, text=True, timeout=600,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"build.sh failed: {e}"
    path = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not os.access(path, os.X_OK):
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"build.sh failed (exit {p.returncode}): {tail}"
    return path, None


def _run_seedref(binary: str, ctx: RunContext, wl: Workload, count: int,
                 timeout: float) -> dict[str, Any]:
    import subprocess

    rid = ctx.new_id()
    name = "/" + rid + "_t"

    def unlink_all() -> None:  # the Rust owner unlinks on a clean exit; this covers the rest
        for n in (name,):
            _ignore(OSError, libc.shm_unlink, n)
        for s in (name + "_filled", name + "_empty"):
            _ignore(OSError, NamedSemaphore.unlink_name, s)

    ctx.on_cleanup(unlink_all)
    payload = wl.size - 8  # seedref frame = u64 PAYLOAD_LEN + PAYLOAD_LEN bytes (seq, pattern)
    cons = subprocess.Popen([binary, "consume", rid, str(RING_CAPACITY), str(RING_SLOT),
                             "--create", "--expect-count", str(count), "--expect-len",
                             str(payload), "--idle-limit-s", str(int(timeout))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prod = None
    try:
        prod = subprocess.Popen([binary, "produce", rid, str(RING_CAPACITY), str(RING_SLOT),
                                 str(count), str(payload), "--open", "--linger-ms", "1000"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, perr = prod.communicate(timeout=timeout)
        cout, cerr = cons.communicate(timeout=timeout)
    finally:
        for p in (prod, cons):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    try:
        c = json.loads(cout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"seedref consume gave no result (exit {cons.returncode}): "
                         f"{cerr.strip()[-300:]}") from None
    elapsed = float(c.get("seconds") or 0.0)
    ok = cons.returncode == 0 and prod.returncode == 0
    return {"count": int(c["count"]), "errors": int(c["errors"]), "elapsed_s": elapsed,
            "verified": ok and c["errors"] == 0 and c["count"] == count and c["finished"],
            "first_error": "" if ok else f"exit codes consume={cons.returncode} "
            f"produce={prod.returncode}: {(cerr + perr).strip()[-300:]}",
            "timing": "Rust consumer's clock: first message to Finished"}


PEERS: Final[dict[str, Peer]] = {p.name: p for p in (
    CtshmRecords(), CtshmSlot(), MpQueue(), MpPipe(), OsPipe(), PosixIpc(), FasterFifo(),
    Iceoryx2(), RustSeed())}


# ---------------------------------------------------------------------------------------------
# Bench process: one run = two children
# ---------------------------------------------------------------------------------------------


def _child_main(peer_name: str, role: str, spec: Any, wl: Workload, count: int,
                conn: Any) -> None:
    try:
        fn = getattr(PEERS[peer_name], role)
        res = fn(spec, wl, count, _Sync(conn))
        if res is not None:  # None: already sent with report_then_linger()
            conn.send(("ok", res))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc(limit=6)))
        except Exception:
            pass
    finally:
        conn.close()


def _recv(conn: Any, deadline: float, what: str) -> Any:
    left = deadline - time.monotonic()
    if left <= 0 or not conn.poll(left):
        raise BenchError(f"timed out waiting for {what}")
    return conn.recv()


def run_once(peer: Peer, wl: Workload, count: int, prefix: str, timeout: float
             ) -> dict[str, Any]:
    """One verified run of ``peer`` on ``wl`` (every resource removed before returning)."""
    ctx = RunContext(prefix)
    procs: list[Any] = []
    try:
        if isinstance(peer, RustSeed):
            assert peer.binary is not None
            out = _run_seedref(peer.binary, ctx, wl, count, timeout)
        else:
            out = _run_children(peer, ctx, wl, count, timeout, procs)
    except Exception as e:
        out = {"ok": False, "verified": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        problems = ctx.cleanup()
    if problems:
        out["cleanup_problems"] = problems
    out.setdefault("ok", True)
    if out.get("elapsed_s"):
        out["msgs_per_s"] = out["count"] / out["elapsed_s"]
        out["mb_per_s"] = out["count"] * wl.size / out["elapsed_s"] / 1e6
    return out


def _run_children(peer: Peer, ctx: RunContext, wl: Workload, count: int, timeout: float,
                  procs: list[Any]) -> dict[str, Any]:
    spec = peer.setup(ctx, wl, count)
    roles = ("consumer", "producer") if wl.kind == "stream" else ("server", "client")
    conns = []
    for role in roles:
        parent_end, child_end = _ctx().Pipe()
        p = _ctx().Process(target=_child_main, args=(peer.name, role, spec, wl, count, child_end),
                         daemon=True, name=f"bench-{peer.name}-{role}")
        p.start()
        child_end.close()
        procs.append(p)
        conns.append(parent_end)
    for fn in ctx.after_start:
        fn()
    deadline = time.monotonic() + timeout
    try:
        for role, c in zip(roles, conns):
            msg = _recv(c, deadline, f"{peer.name} {role} to get ready")
            if msg != "ready":
                raise BenchError(f"{role} failed during setup: {_err(msg)}")
        for c in conns:
            c.send("go")
        results = {}
        for role, c in zip(roles, conns):
            status, res = _recv(c, deadline, f"{peer.name} {role} to finish")
            if status != "ok":
                raise BenchError(f"{role} failed: {res}")
            results[role] = res
        for c in conns:  # releases the roles that linger until everything was received
            try:
                c.send("done")
            except OSError:
                pass
    finally:
        for c in conns:
            c.close()
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    if wl.kind == "stream":
        cons, prod = results["consumer"], results["producer"]
        elapsed = cons["t_end"] - prod["t_start"]
        out = {"count": cons["count"], "errors": cons["errors"], "elapsed_s": elapsed,
               "first_error": cons["first_error"]}
        out["verified"] = cons["errors"] == 0 and cons["count"] == count
        for k in ("slots",):
            if k in cons:
                out[k] = cons[k]
        return out
    cl, sv = results["client"], results["server"]
    out = {k: cl[k] for k in ("count", "errors", "first_error", "median_us", "p99_us",
                              "mean_us", "min_us") if k in cl}
    out["elapsed_s"] = cl["t_end"] - cl["t_start"]
    out["verified"] = (cl["errors"] == 0 and cl["count"] == count
                       and sv["count"] == count + _warmup(count))
    return out


def _err(msg: Any) -> str:
    if isinstance(msg, tuple) and len(msg) == 2:
        return str(msg[1])
    return repr(msg)


# ---------------------------------------------------------------------------------------------
# Import cost and memory footprint
# ---------------------------------------------------------------------------------------------


_IMPORTTIME: Final = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def _top_level_imports(stderr: str) -> list[tuple[str, int]]:
    """(module, cumulative µs) of every top-level line of ``-X importtime`` output."""
    out = []
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m and len(m.group(3)) == 1:  # one space after the bar: not nested
            out.append((m.group(4), int(m.group(2))))
    return out


def _importtime(code: str, env: dict[str, str], flags: list[str]) -> list[tuple[str, int]]:
    import subprocess

    p = subprocess.run([sys.executable, *flags, "-X", "importtime", "-c", code], env=env,
                       capture_output=True, text=True, check=True, cwd=_repo_root())
    return _top_level_imports(p.stderr)


def _statement_import_us(module: str, env: dict[str, str], flags: list[str],
                         startup: set[str]) -> int:
    """µs that ``import module`` adds: the top-level imports that start-up did not make
    (``import a.b`` imports ``a`` and then ``a.b``, both top-level)."""
    return sum(us for name, us in _importtime(f"import {module}", env, flags)
               if name not in startup)


def _wall(code: str, env: dict[str, str], flags: list[str]) -> float:
    import subprocess

    t0 = time.perf_counter()
    subprocess.run([sys.executable, *flags, "-c", code], env=env, check=True, cwd=_repo_root())
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
    env["PYTHONPATH"] = _repo_root() + os.pathsep + env.get("PYTHONPATH", "")
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
        ring.close()
    header_pages = 2  # page 0: header + ctshm extension; page 1: the length records
    used = st1.st_blocks * 512
    per_slot = (used - header_pages * page) / cap / page
    return {"capacity": cap, "slot_size": RING_SLOT, "object_size": st1.st_size,
            "allocated_before": st0.st_blocks * 512, "allocated_after": used,
            "page_size": page, "pages_per_touched_slot": per_slot,
            "shmem_thp": _read_first("/sys/kernel/mm/transparent_hugepage/shmem_enabled")}


def _read_first(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _scaled(wl: Workload, scale: float) -> int:
    return max(10, round(wl.full_count * scale))


def _best(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    good = [r for r in runs if r.get("ok") and r.get("verified")]
    if not good:
        return dict(runs[-1])
    if kind == "pingpong":
        best = min(good, key=lambda r: float(r.get("median_us", float("inf"))))
    else:
        best = max(good, key=lambda r: float(r.get("msgs_per_s", 0.0)))
    return dict(best)


def run(workloads: list[str], peers: list[str], scale: float, repeat: int, timeout: float,
        prefix: str, log: Callable[[str], None], with_import: bool = True,
        with_memory: bool = True, import_n: int = 10) -> dict[str, Any]:
    """Run the matrix; return the JSON-able report."""
    t_begin = time.monotonic()
    avail: dict[str, Optional[str]] = {}
    for name in peers:
        avail[name] = PEERS[name].available()
        if avail[name]:
            log(f"  {name}: unavailable: {avail[name]}")
    report: dict[str, Any] = {
        "ctshm": __version__, "scale": scale, "repeat": repeat,
        "environment": _environment(),
        "peers": {n: {"available": avail[n] is None, "reason": avail[n],
                      "extra": PEERS[n].extra} for n in peers},
        "workloads": {},
    }
    if isinstance(PEERS.get("rust-seed"), RustSeed) and "rust-seed" in peers:
        report["peers"]["rust-seed"]["binary"] = PEERS["rust-seed"].binary  # type: ignore
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in workloads}
    for rep in range(repeat):
        for w in workloads:
            wl = WORKLOADS[w]
            count = _scaled(wl, scale)
            for name in peers:
                peer = PEERS[name]
                if avail[name] or wl.kind not in peer.kinds:
                    continue
                r = run_once(peer, wl, count, prefix, timeout)
                runs[w].setdefault(name, []).append(r)
                log(f"  [{rep + 1}/{repeat}] {w} {name:14s} {_short(r, wl.kind)}")
    for w in workloads:
        wl = WORKLOADS[w]
        count = _scaled(wl, scale)
        res = {n: _best(rs, wl.kind) for n, rs in runs[w].items()}
        key = "median_us" if wl.kind == "pingpong" else "msgs_per_s"
        for n, rs in runs[w].items():
            res[n]["runs"] = [round(r.get(key, 0.0), 3) for r in rs]
        ref = REFERENCE[w]
        refr = res.get(ref)
        for r in res.values():
            r["ratio"] = _ratio(refr, r, wl.kind)
        report["workloads"][w] = {"title": wl.title, "kind": wl.kind, "size": wl.size,
                                  "count": count, "depth": wl.depth, "reference": ref,
                                  "results": res}
    if with_memory:
        report["memory"] = memory_check(prefix)
    if with_import:
        log("  import cost ...")
        report["import"] = import_cost(import_n)
    report["targets"] = targets(report)
    report["seconds"] = time.monotonic() - t_begin
    report["environment"]["loadavg_end"] = _loadavg()
    return report


def _ratio(ref: Optional[dict[str, Any]], r: dict[str, Any], kind: str) -> Optional[float]:
    if not ref or not ref.get("verified") or not r.get("verified"):
        return None
    if kind == "pingpong":
        return r["median_us"] / ref["median_us"] if ref.get("median_us") else None
    return ref["msgs_per_s"] / r["msgs_per_s"] if r.get("msgs_per_s") else None


def _short(r: dict[str, Any], kind: str) -> str:
    if not r.get("ok"):
        return "ERROR " + str(r.get("error", ""))[:200]
    v = "verified" if r.get("verified") else f"NOT VERIFIED ({r.get('first_error', '')})"
    if kind == "pingpong":
        return f"median {r.get('median_us', 0):8.1f} µs  p99 {r.get('p99_us', 0):8.1f} µs  {v}"
    return f"{r.get('msgs_per_s', 0):12,.0f} msg/s  {r.get('mb_per_s', 0):9,.1f} MB/s  {v}"


def _loadavg() -> Optional[list[float]]:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _environment() -> dict[str, Any]:
    import platform

    try:
        backend = atomics.get_backend().name
    except atomics.AtomicsUnavailable as e:  # pragma: no cover
        backend = f"none ({e})"
    return {"python": sys.version.split()[0], "platform": f"{platform.system()} "
            f"{platform.machine()}", "cpus": os.cpu_count(), "loadavg_start": _loadavg(),
            "atomics_backend": backend, "plain_ordered_access": atomics.PLAIN_ORDERED_ACCESS,
            "records_batch_bytes": RECORD_BATCH, "ring_spin_s": RING_SPIN}


def _rate(report: dict[str, Any], w: str, peer: str, key: str = "msgs_per_s"
          ) -> Optional[float]:
    r = report["workloads"].get(w, {}).get("results", {}).get(peer)
    if not r or not r.get("verified"):
        return None
    v = r.get(key)
    return float(v) if v else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured figures (informational, never asserted)."""
    out: list[dict[str, Any]] = []

    def add(name: str, measured: Optional[float], against: Optional[float], need: float,
            unit: str, higher_is_better: bool = True, note: str = "") -> None:
        ratio = None
        met = None
        if measured is not None and against is not None and against > 0:
            ratio = measured / against
            met = ratio >= need if higher_is_better else ratio <= need
        out.append({"target": name, "measured": measured, "against": against,
                    "ratio": ratio, "need": need, "cmp": ">=" if higher_is_better else "<=",
                    "met": met, "unit": unit, "note": note})

    rec = _rate(report, "W1", "ctshm-records")
    seed1 = _rate(report, "W1", "rust-seed")
    add("W1 batched >= 1,000,000 msg/s", rec, 1e6 if rec is not None else None, 1.0, "msg/s")
    add("W1 batched >= 2x Rust seed", rec, seed1, 2.0, "msg/s")
    add("W1 one-per-slot >= 0.6x Rust seed", _rate(report, "W1", "ctshm-slot"), seed1, 0.6,
        "msg/s")
    slot3 = _rate(report, "W3", "ctshm-slot")
    add("W3 >= 0.9x Rust seed", slot3, _rate(report, "W3", "rust-seed"), 0.9, "msg/s")
    add("W3 >= iceoryx2", slot3, _rate(report, "W3", "iceoryx2"), 1.0, "msg/s")
    add("W4 median <= 0.75x os.pipe", _rate(report, "W4", "ctshm-slot", "median_us"),
        _rate(report, "W4", "os.pipe", "median_us"), 0.75, "µs", higher_is_better=False)
    add("W2 >= 2x multiprocessing.Pipe (records)", _rate(report, "W2", "ctshm-records"),
        _rate(report, "W2", "mp.Pipe"), 2.0, "msg/s")
    add("W2 >= 2x multiprocessing.Pipe (one-per-slot)", _rate(report, "W2", "ctshm-slot"),
        _rate(report, "W2", "mp.Pipe"), 2.0, "msg/s", note="informational")
    imp = report.get("import")
    if imp:
        it = imp["default"]["importtime_ms"]
        add("import <= 1.3x multiprocessing.shared_memory (-X importtime)", it["ctshm"],
            it["multiprocessing.shared_memory"], 1.3, "ms", higher_is_better=False)
        wm = imp["default"]["wall_minus_pass_ms"]
        add("import <= 1.3x multiprocessing.shared_memory (wall - python -c pass)",
            wm["ctshm"], wm["multiprocessing.shared_memory"], 1.3, "ms",
            higher_is_better=False, note="noisy: difference of two process wall times")
    mem = report.get("memory")
    if mem:
        add("memory ~1 page per touched slot", mem["pages_per_touched_slot"], 1.0, 1.5,
            "pages", higher_is_better=False, note=f"shmem THP: {mem['shmem_thp']}")
    return out


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    lines = []
    env = report["environment"]
    lines.append(f"ctshm {report['ctshm']} bench  python {env['python']}  {env['platform']}  "
                 f"{env['cpus']} cpus  load {env.get('loadavg_start')} -> "
                 f"{env.get('loadavg_end')}  scale {report['scale']}  best of "
                 f"{report['repeat']}")
    for w, d in report["workloads"].items():
        lines.append("")
        lines.append(f"{w}  {d['title']}  (measured: {d['count']:,}; ratio = ctshm/peer, "
                     f"reference {d['reference']})")
        if d["kind"] == "pingpong":
            lines.append(f"  {'peer':15s} {'median µs':>10s} {'p99 µs':>10s} {'mean µs':>10s} "
                         f"{'ratio':>7s}  check")
        else:
            lines.append(f"  {'peer':15s} {'msg/s':>12s} {'MB/s':>10s} {'seconds':>8s} "
                         f"{'ratio':>7s}  check")
        for n, r in d["results"].items():
            ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
            if not r.get("ok"):
                check = "ERROR: " + r.get("error", "")[:90]
            elif r.get("verified"):
                check = f"verified {r['count']:,}"
            else:
                check = f"NOT VERIFIED: {r.get('first_error', '')[:80]}"
            if d["kind"] == "pingpong":
                lines.append(f"  {n:15s} {r.get('median_us', 0):10.1f} {r.get('p99_us', 0):10.1f}"
                             f" {r.get('mean_us', 0):10.1f} {ratio:>7s}  {check}")
            else:
                lines.append(f"  {n:15s} {r.get('msgs_per_s', 0):12,.0f} "
                             f"{r.get('mb_per_s', 0):10,.1f} {r.get('elapsed_s', 0):8.3f} "
                             f"{ratio:>7s}  {check}")
    unavailable = {n: p["reason"] for n, p in report["peers"].items() if not p["available"]}
    if unavailable:
        lines.append("")
        for n, why in unavailable.items():
            lines.append(f"not measured: {n}: {why}")
    mem = report.get("memory")
    if mem:
        lines.append("")
        lines.append(f"memory: ring of {mem['capacity']} x 2 MiB slots, first page of each "
                     f"written: {mem['allocated_after']:,} bytes allocated in /dev/shm "
                     f"({mem['pages_per_touched_slot']:.2f} pages per touched slot beyond the "
                     f"2 header pages; shmem THP {mem['shmem_thp']})")
    imp = report.get("import")
    if imp:
        d = imp["default"]
        it, wm = d["importtime_ms"], d["wall_minus_pass_ms"]
        lines.append(f"import (best of {imp['n']}): -X importtime ctshm "
                     f"{it['ctshm']:.1f} ms vs multiprocessing.shared_memory "
                     f"{it['multiprocessing.shared_memory']:.1f} ms "
                     f"(x{d['ratio_importtime']:.2f}); wall - 'python -c pass': "
                     f"{wm['ctshm']:.1f} vs {wm['multiprocessing.shared_memory']:.1f} ms "
                     f"(x{d['ratio_wall_minus_pass']:.2f}); -S: x"
                     f"{imp['isolated_-S']['ratio_importtime']:.2f}")
    if report.get("targets"):
        lines.append("")
        lines.append("targets (informational; measured in this run):")
        for t in report["targets"]:
            met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
            m = _fmt_num(t["measured"])
            a = _fmt_num(t["against"])
            ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "-"
            lines.append(f"  {t['target']:62s} {m:>12s} vs {a:>12s}  ratio {ratio:>6s} "
                         f"(need {t['cmp']} {t['need']})  "
                         f"{met}")
    lines.append("")
    lines.append(f"total {report['seconds']:.1f} s")
    return "\n".join(lines)


def _fmt_num(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def _leftovers(prefix: str) -> list[str]:
    try:
        entries = os.listdir("/dev/shm")
    except OSError:
        return []
    mine = (prefix + "_", "sem." + prefix + "_")
    return sorted(e for e in entries if e.startswith(mine))


def _iox2_entries() -> set[str]:
    try:
        return {e for e in os.listdir("/dev/shm") if e.startswith("iox2_")}
    except OSError:
        return set()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctshm bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help=f"scaled-down counts (x{QUICK_SCALE}), one repeat: well under 20 s")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per peer and workload, best kept (default 3; --quick: 1)")
    p.add_argument("--workloads", default="W1,W2,W3,W4", help="comma-separated subset")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="comma-separated subset of: " + ", ".join(PEERS))
    p.add_argument("--exclude", default="", help="comma-separated peers to skip")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    p.add_argument("--no-import", action="store_true", help="skip the import-cost check")
    p.add_argument("--no-memory", action="store_true", help="skip the /dev/shm footprint check")
    p.add_argument("--scale", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--id-prefix", default=None, help=argparse.SUPPRESS)
    p.add_argument("--import-n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--spin", type=float, default=None, help=argparse.SUPPRESS)


def run_from_args(args: argparse.Namespace) -> int:
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            print(f"unknown workload {w!r}: use {', '.join(WORKLOADS)}", file=sys.stderr)
            return 2
    excluded = {x.strip() for x in args.exclude.split(",") if x.strip()}
    peers = [x.strip() for x in args.peers.split(",") if x.strip() and x.strip() not in excluded]
    for n in peers:
        if n not in PEERS:
            print(f"unknown peer {n!r}: use {', '.join(PEERS)}", file=sys.stderr)
            return 2
    if not libc.IS_LINUX:
        print("python -m ctshm bench runs on Linux only", file=sys.stderr)
        return 2
    prefix = args.id_prefix or f"cb{os.getpid():x}"
    global RING_SPIN
    RING_SPIN = args.spin
    out = sys.stderr if args.json else sys.stdout

    def log(line: str) -> None:
        print(line, file=out, flush=True)

    iox_before = _iox2_entries()
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        log(f"ctshm bench: workloads {','.join(workloads)}; peers {','.join(peers)}; "
            f"scale {scale}; repeat {repeat}")
        report = run(workloads, peers, scale, repeat, args.timeout, prefix, log,
                     with_import=not args.no_import, with_memory=not args.no_memory,
                     import_n=args.import_n or (5 if args.quick else 10))
    finally:
        signal.signal(signal.SIGTERM, old_term)
        leaks = _leftovers(prefix)
        for e in leaks:  # never expected: every run cleans up; this is the last line
            _ignore(OSError, os.unlink, os.path.join("/dev/shm", e))
        _cleanup_iox2(iox_before)
    report["leaked_and_removed"] = leaks
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(format_table(report))
    return 0


def _cleanup_iox2(before: set[str]) -> None:
    """iceoryx2 removes its service files when the last port goes; stale ones of a killed
    child are removed with its dead-node cleanup.  Its shared ``global_mgmt`` file stays
    unless the bench created it (it did not exist before and no iceoryx2 node is left)."""
    new = _iox2_entries() - before
    if not new:
        return
    try:
        import iceoryx2 as iox2  # type: ignore[import-untyped,import-not-found,unused-ignore]

        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        node.try_cleanup_dead_nodes()
        del node
    except Exception:
        pass
    if not before:
        leftover = _iox2_entries()
        if all(e.endswith(".global_mgmt") for e in leftover):
            for e in leftover:
                _ignore(OSError, os.unlink, os.path.join("/dev/shm", e))


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
