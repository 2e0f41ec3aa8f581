"""Standard-library peers: ``multiprocessing.Queue``, ``multiprocessing.Pipe``, ``os.pipe``."""

from __future__ import annotations

import os
import time
from typing import Any

from .harness import (
    _SEQ,
    BenchError,
    Check,
    Peer,
    RunContext,
    Settings,
    Sync,
    Workload,
    checked_receives,
    client_loop,
    close_quietly,
    message,
    mp_context,
    queues,
    timed_sends,
    warmup,
)


class MpQueue(Peer):
    name = "mp.Queue"

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        return queues(ctx, wl, lambda: mp_context().Queue(wl.depth))

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        q = spec[0]
        put = q.put
        # the feeder thread pickles later: hand it an immutable copy
        out = timed_sends(wl, count, sync, lambda m: put(bytes(m)))
        q.close()
        q.join_thread()
        return out

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        return checked_receives(wl, count, sync, spec[0].get)

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ping, pong = spec
        total = count + warmup(count)
        sync.go()
        for _ in range(total):
            pong.put(ping.get())
        pong.close()
        pong.join_thread()
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ping, pong = spec
        return client_loop(wl, count, sync, lambda m: ping.put(bytes(m)), pong.get)


class MpPipe(Peer):
    name = "mp.Pipe"

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        a, b = mp_context().Pipe()  # duplex (a socketpair): multiprocessing.Pipe()'s default
        for c in (a, b):  # Connection.close() is idempotent
            ctx.on_cleanup(c.close)
            ctx.after_start.append(c.close)
        return (a, b)

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = spec
        b.close()
        return timed_sends(wl, count, sync, a.send_bytes)

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = spec
        a.close()
        return checked_receives(wl, count, sync, b.recv_bytes)

    @staticmethod
    def server(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = spec
        a.close()
        total = count + warmup(count)
        sync.go()
        for _ in range(total):
            b.send_bytes(b.recv_bytes())
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = spec
        b.close()
        return client_loop(wl, count, sync, a.send_bytes, a.recv_bytes)



def _readv_copy(fd: int, bufs: list[memoryview]) -> int:
    """``os.readv`` for one buffer where the os module lacks it (PyPy 3.9): read + copy."""
    data = os.read(fd, len(bufs[0]))
    bufs[0][:len(data)] = data
    return len(data)


_readv: Any = getattr(os, "readv", _readv_copy)

def _write_all(fd: int, data: Any) -> None:
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


def _read_exact(fd: int, buf: bytearray, mv: memoryview) -> bytearray:
    got = _readv(fd, [mv])
    if got != len(buf):
        _read_rest(fd, mv, got)
    return buf


def _pingpong_ends(spec: Any, size: int, server: bool
                   ) -> tuple[int, int, bytearray, memoryview]:
    """One ping-pong side's read and write ends (the other two closed, server: ping's
    read end and pong's write end) and its receive buffer."""
    r1, w1, r2, w2 = spec
    if server:
        os.close(w1)
        os.close(r2)
        r, w = r1, w2
    else:
        os.close(r1)
        os.close(w2)
        r, w = r2, w1
    buf = bytearray(size)
    return r, w, buf, memoryview(buf)


class OsPipe(Peer):
    name = "os.pipe"

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        fds = list(os.pipe())
        if wl.kind == "pingpong":
            fds += os.pipe()
        spec = tuple(fds)

        def close_once() -> None:  # never twice: a number may be reused by a later open
            while fds:
                close_quietly(fds.pop())

        ctx.on_cleanup(close_once)
        ctx.after_start.append(close_once)
        return spec

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        r, w = spec
        os.close(r)
        msg = message(wl.size)
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
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        r, w = spec
        os.close(w)
        chk = Check(wl.size)
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
    def server(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        r, w, buf, mv = _pingpong_ends(spec, wl.size, server=True)
        total = count + warmup(count)
        sync.go()
        for _ in range(total):
            _read_exact(r, buf, mv)
            _write_all(w, buf)
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        r, w, buf, mv = _pingpong_ends(spec, wl.size, server=False)
        return client_loop(wl, count, sync, lambda m: _write_all(w, m),
                            lambda: _read_exact(r, buf, mv))

def _read_rest(fd: int, mv: memoryview, got: int) -> None:
    size = len(mv)
    while got < size:
        k = _readv(fd, [mv[got:]])
        if k == 0:
            raise BenchError("pipe closed early")
        got += k
