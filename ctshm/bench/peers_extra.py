"""Optional peers (the ``bench`` extra): ``posix_ipc``, ``faster-fifo``, ``iceoryx2``.

Each is imported only inside the functions that use it; a peer whose module is missing is
reported as "not measured" with the reason.
"""

from __future__ import annotations

import ctypes
import mmap
import time
from typing import Any, Callable, Optional

from .harness import (
    _SEQ,
    RING_CAPACITY,
    Check,
    Peer,
    RunContext,
    Settings,
    Sync,
    Workload,
    client_loop,
    ignore,
    message,
    queues,
    timed_sends,
    warmup,
)


class _PosixRing:
    """Slots of ``[u64 length][payload]`` in one posix_ipc shared memory object, handed over
    with two posix_ipc semaphores (filled, empty): the ring one writes by hand with posix_ipc."""

    def __init__(self, names: tuple[str, str, str], capacity: int, size: int) -> None:
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
        ctx.on_cleanup(lambda: ignore(posix_ipc.ExistentialError,
                                       posix_ipc.unlink_shared_memory, names[0]))
        posix_ipc.Semaphore(names[1], posix_ipc.O_CREX, initial_value=0).close()
        ctx.on_cleanup(lambda: ignore(posix_ipc.ExistentialError,
                                       posix_ipc.unlink_semaphore, names[1]))
        posix_ipc.Semaphore(names[2], posix_ipc.O_CREX, initial_value=capacity).close()
        ctx.on_cleanup(lambda: ignore(posix_ipc.ExistentialError,
                                       posix_ipc.unlink_semaphore, names[2]))
        return names

    def side(self, producer: bool) -> tuple[mmap.mmap, int, int, Callable[[], Any],
                                            Callable[[], Any]]:
        """What one side's loop binds: the mapping, the capacity, the slot size, then the
        semaphore operations that wait for a slot and hand it over (``empty`` / ``filled``
        for the producer, ``filled`` / ``empty`` for the consumer)."""
        if producer:
            return self.mm, self.capacity, self.slot, self.empty.acquire, self.filled.release
        return self.mm, self.capacity, self.slot, self.filled.acquire, self.empty.release

    def close(self) -> None:
        self.mm.close()
        self.filled.close()
        self.empty.close()

class PosixIpc(Peer):
    name = "posix_ipc+shm"
    extra = True
    module = "posix_ipc"

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        if wl.kind == "stream":
            return (_PosixRing.create(ctx, RING_CAPACITY, wl.size),)
        return (_PosixRing.create(ctx, 4, wl.size), _PosixRing.create(ctx, 4, wl.size))

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = _PosixRing(spec[0], RING_CAPACITY, wl.size)
        msg = message(wl.size)
        pack, n = _SEQ.pack_into, wl.size
        mm, cap, slot, acquire, release = ring.side(producer=True)
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
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ring = _PosixRing(spec[0], RING_CAPACITY, wl.size)
        chk = Check(wl.size)
        unpack, size = _SEQ.unpack_from, wl.size
        mm, cap, slot, acquire, release = ring.side(producer=False)
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
        pack = _SEQ.pack_into
        mm, cap, slot, acquire, release = ring.side(producer=True)

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
        unpack = _SEQ.unpack_from
        mm, cap, slot, acquire, release = ring.side(producer=False)

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
    def server(cls, spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = cls._pair(spec, wl)
        recv, send = cls._receiver(a), cls._sender(b, wl.size)
        total = count + warmup(count)
        sync.go()
        for _ in range(total):
            send(recv())
        a.close()
        b.close()
        return {"count": total}

    @classmethod
    def client(cls, spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        a, b = cls._pair(spec, wl)
        out = client_loop(wl, count, sync, cls._sender(a, wl.size), cls._receiver(b))
        a.close()
        b.close()
        return out


# -- faster-fifo -------------------------------------------------------------------------------


class FasterFifo(Peer):
    name = "faster-fifo"
    extra = True
    module = "faster_fifo"

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        from faster_fifo import Queue  # type: ignore[import-not-found,unused-ignore]

        nbytes = max(1 << 20, wl.depth * (wl.size + 256))
        return queues(ctx, wl, lambda: Queue(max_size_bytes=nbytes))

    @staticmethod
    def producer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        put = spec[0].put
        # serialized inside put(): msg may change afterwards
        return timed_sends(wl, count, sync, lambda m: put(m, True, 60.0))

    @staticmethod
    def consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        q = spec[0]
        chk = Check(wl.size)
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
    def server(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ping, pong = spec
        total = count + warmup(count)
        sync.go()
        for _ in range(total):
            pong.put(ping.get(True, 60.0), True, 60.0)
        return {"count": total}

    @staticmethod
    def client(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        ping, pong = spec
        return client_loop(wl, count, sync, lambda m: ping.put(m, True, 60.0),
                            lambda: pong.get(True, 60.0))


# -- iceoryx2 ----------------------------------------------------------------------------------


class Iceoryx2(Peer):
    name = "iceoryx2"
    extra = True
    module = "iceoryx2"

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
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
    def producer(cls, spec: Any, wl: Workload, count: int, sync: Sync
                 ) -> Optional[dict[str, Any]]:
        node, svc, pub = cls._open(spec[0], wl.depth, wl.size, True)
        msg = message(wl.size)
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
    def consumer(cls, spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        node, svc, sub = cls._open(spec[0], wl.depth, wl.size, False)
        chk = Check(wl.size)
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
    def server(cls, spec: Any, wl: Workload, count: int, sync: Sync
               ) -> Optional[dict[str, Any]]:
        _node_a, _svc_a, sub = cls._open(spec[0], 4, wl.size, False)
        _node_b, _svc_b, pub = cls._open(spec[1], 4, wl.size, True)
        receive, loan, memmove, size = sub.receive, pub.loan_slice_uninit, ctypes.memmove, wl.size
        total = count + warmup(count)
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
    def client(cls, spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
        _node_a, _svc_a, pub = cls._open(spec[0], 4, wl.size, True)
        _node_b, _svc_b, sub = cls._open(spec[1], 4, wl.size, False)
        msg = message(wl.size)
        out = client_loop(wl, count, sync, cls._sender(pub, msg), cls._receiver(sub), msg=msg,
                           on_go=pub.update_connections)
        sub.delete()
        pub.delete()
        return out
