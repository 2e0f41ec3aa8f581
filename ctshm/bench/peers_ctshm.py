"""ctshm's own peers: one message per slot, small records packed into slots (no linger
bound: the batching reference), and the message channel (``ring.sender()`` /
``ring.receiver()``: records with the default 100 µs linger bound)."""

from __future__ import annotations

import time
from typing import Any, Callable

from ..records import RecordReader, RecordWriter
from ..ring import Data, Finished, RingFinished
from . import sp1
from .harness import (
    _SEQ,
    RECORD_BATCH,
    RING_CAPACITY,
    RING_SLOT,
    SP1_CAPACITY,
    BenchError,
    Check,
    Peer,
    RunContext,
    Settings,
    Sync,
    Workload,
    message,
    pingpong_summary,
    timed_sends,
    warmup,
)


class CtshmSlot(Peer):
    """``ring.put(msg)`` / ``ring.access()`` + ``release()``: one message per slot."""

    name = "ctshm-slot"
    kinds = ("stream", "pingpong", "sp1")
    fast = False  # the seed's protocol (a Rust peer could take either end)

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        fast = self.fast
        if wl.kind == "stream":
            return ctx.ring(RING_CAPACITY, RING_SLOT, settings, fast)
        if wl.kind == "sp1":
            return (ctx.ring(SP1_CAPACITY, wl.size, settings, fast), settings.sp1_reader)
        return (ctx.ring(4, RING_SLOT, settings, fast), ctx.ring(4, RING_SLOT, settings, fast))

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        out = timed_sends(wl, count, sync, ring.put, ring.mark_finished)
        ring.close()
        return out

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        chk = Check(wl.size)
        unpack, access, size = _SEQ.unpack_from, ring.access, wl.size
        sync.go()
        while True:
            r = access()
            if type(r) is Data:
                g = r.guard
                b = g.buf
                if len(b) != size or unpack(b, 0)[0] != chk.n:
                    chk.bad_message(chk.n, b)
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
    def server(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = (x.open() for x in spec)
        reply = message(wl.size)
        pack, unpack, access, put = _SEQ.pack_into, _SEQ.unpack_from, a.access, b.put
        total = count + warmup(count)
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
    def client(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = (x.open() for x in spec)
        msg = message(wl.size)
        pack, unpack, access, put = _SEQ.pack_into, _SEQ.unpack_from, b.access, a.put
        clock = time.perf_counter_ns
        warm = warmup(count)
        rtts = []
        chk = Check(wl.size)
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
        out = chk.result(t_start=t0, **pingpong_summary(rtts))
        a.close()
        b.close()
        return out

    sp1_producer = staticmethod(sp1.sp1_producer)
    sp1_consumer = staticmethod(sp1.sp1_consumer)


class CtshmFast(CtshmSlot):
    """``ctshm-slot`` on a ring created with ``fast=True``: no foreign call per message while
    neither side sleeps (ctshm peers only)."""

    name = "ctshm-fast"
    fast = True


class CtshmBatch(Peer):
    """One message per slot in batches on a fast ring: ``ring.put_many(batch)`` of
    ``BATCH`` messages / ``ring.get_many()`` (bytes copies)."""

    name = "ctshm-batch"
    kinds = ("stream",)
    BATCH = 32

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        return ctx.ring(RING_CAPACITY, RING_SLOT, settings, True)

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        put_many, pack = ring.put_many, _SEQ.pack_into
        batch = [message(wl.size) for _ in range(CtshmBatch.BATCH)]
        sync.go()
        t0 = time.perf_counter()
        for start in range(0, count, len(batch)):
            part = batch[:min(len(batch), count - start)]
            for j, m in enumerate(part):
                pack(m, 0, start + j)
            put_many(part)
        ring.mark_finished()
        t1 = time.perf_counter()
        ring.close()
        return {"t_start": t0, "t_sent": t1}

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        chk = Check(wl.size)
        unpack, size, get_many = _SEQ.unpack_from, wl.size, ring.get_many
        sync.go()
        n = 0
        try:
            while True:
                for m in get_many(256):
                    if len(m) != size or unpack(m, 0)[0] != n:
                        chk.bad_message(n, m)
                    n += 1
        except RingFinished:
            pass
        chk.n = n
        out = chk.result()
        ring.close()
        return out


class _StreamRing(Peer):
    """A stream over one W ring, written through a RecordWriter (:meth:`_writer`)."""

    kinds = ("stream",)

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        return ctx.ring(RING_CAPACITY, RING_SLOT, settings)

    @classmethod
    def producer(cls, spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        send, finish, writer = cls._writer(ring, wl)
        out = timed_sends(wl, count, sync, send, finish)  # finish: flush + mark_finished
        ring.close()
        out["slots"] = writer.slots_written
        return out

    @staticmethod
    def _writer(ring: Any, wl: Workload) -> tuple[Callable[[Any], Any], Callable[[], Any],
                                                  RecordWriter]:
        """The peer's send and finish calls on ``ring``, and the writer behind them."""
        raise NotImplementedError


class CtshmRecords(_StreamRing):
    """:class:`~ctshm.records.RecordWriter` / :class:`~ctshm.records.RecordReader`."""

    name = "ctshm-records"

    @staticmethod
    def _writer(ring: Any, wl: Workload) -> tuple[Callable[[Any], Any], Callable[[], Any],
                                                  RecordWriter]:
        # linger=None: slots are published only when full (the batching reference);
        # ctshm-channel measures the same stream with the linger bound on.
        w = RecordWriter(ring, max_bytes=max(RECORD_BATCH, 2 * wl.size), linger=None)
        return w.append, w.close, w

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        chk = Check(wl.size)
        unpack, size = _SEQ.unpack_from, wl.size
        reader = RecordReader(ring)
        sync.go()
        n = 0
        for rec in reader:
            if len(rec) != size or unpack(rec, 0)[0] != n:
                chk.bad_message(n, rec)
            n += 1
        chk.n = n
        out = chk.result(slots=reader.slots_read)
        ring.close()
        return out


class CtshmChannel(_StreamRing):
    """``ring.sender()`` / ``ring.receiver()``: one record per message with the default linger
    bound (100 µs; a slot is also published at once when the ring is empty, unless the sender
    streams: ``ctshm.records``, "Linger")."""

    name = "ctshm-channel"

    @staticmethod
    def _writer(ring: Any, wl: Workload) -> tuple[Callable[[Any], Any], Callable[[], Any],
                                                  RecordWriter]:
        tx = ring.sender(max_bytes=max(RECORD_BATCH, 2 * wl.size))
        return tx.send, tx.close, tx.writer

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = spec.open()
        chk = Check(wl.size)
        unpack, size = _SEQ.unpack_from, wl.size
        rx = ring.receiver()
        recv_view = rx.recv_view
        sync.go()
        n = 0
        while True:
            try:
                rec = recv_view()
            except RingFinished:
                break
            if len(rec) != size or unpack(rec, 0)[0] != n:
                chk.bad_message(n, rec)
            n += 1
        chk.n = n
        rx.close()
        out = chk.result(slots=rx.slots_received)
        ring.close()
        return out
