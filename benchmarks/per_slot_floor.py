"""The floor of a one-message-per-slot API in pure Python, measured (not a test).

Issue 18 asked the per-slot fast ring (``ring.put(msg)`` / ``ring.access()`` +
``guard.release()``) for >= 1.0x the bench's hand-written ``posix_ipc+shm`` ring.  This
script measures, in one process and per message, what each side costs:

``posix_ipc+shm``  the hand ring's loop body: a posix_ipc semaphore call (C), a struct pack
                   or unpack (C), a slice copy, the other semaphore (C): no Python call.
``skeleton``       the least a per-slot API of this shape can run, with *no protocol at all*:
                   ``put(msg)`` is one Python call that copies into a slot view and stores two
                   header words; ``access()`` one Python call returning a new result object
                   holding a new guard with a view of the slot; ``guard.release()`` one Python
                   call releasing that view and storing one header word.  No lock, no check.
``ctshm fast``     ``ShmTraceRing(fast=True)``: ``put`` / ``access`` + ``release``.

Each side of the skeleton already costs more than the hand ring's side: Python-level calls
and object creation are the floor, and the hand ring has none.  Compiled code is what the
design card forbids, so the per-slot API cannot reach the hand ring on CPython; the batch
API (``put_many`` / ``get_many``: one call per batch) is the one that does.

    python benchmarks/per_slot_floor.py [--count N]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctshm import ShmTraceRing

SEQ = struct.Struct("<Q")
SLOTS = 32
SIZE = 64


def best(fn: Callable[[], float], repeat: int = 7) -> float:
    return min(fn() for _ in range(repeat))


def per_side(produce: Callable[[int], None], consume: Callable[[int], None], n: int
             ) -> tuple[float, float]:
    """ns per message of each side: SLOTS messages produced, then SLOTS consumed, n times."""
    def side(which: int) -> float:
        t_p = t_c = 0.0
        for _ in range(n // SLOTS):
            t0 = time.perf_counter()
            produce(SLOTS)
            t1 = time.perf_counter()
            consume(SLOTS)
            t2 = time.perf_counter()
            t_p += t1 - t0
            t_c += t2 - t1
        return (t_p, t_c)[which] / n * 1e9
    return best(lambda: side(0)), best(lambda: side(1))


def posix_ring(n: int) -> tuple[float, float]:
    import mmap

    import posix_ipc  # type: ignore[import-not-found,unused-ignore]

    base = f"/floor{os.getpid()}"
    shm = posix_ipc.SharedMemory(base + "_m", posix_ipc.O_CREX, size=SLOTS * 128)
    mm = mmap.mmap(shm.fd, shm.size)
    shm.close_fd()
    filled = posix_ipc.Semaphore(base + "_f", posix_ipc.O_CREX, initial_value=0)
    empty = posix_ipc.Semaphore(base + "_e", posix_ipc.O_CREX, initial_value=SLOTS)
    msg = bytearray(SIZE)
    pack, unpack = SEQ.pack_into, SEQ.unpack_from
    acq_e, rel_f, acq_f, rel_e = empty.acquire, filled.release, filled.acquire, empty.release

    def produce(k: int) -> None:  # the bench peer's loop body, minus its own sequence pack
        for i in range(k):
            off = i * 128
            acq_e()
            pack(mm, off, SIZE)
            mm[off + 8:off + 8 + SIZE] = msg
            rel_f()

    def consume(k: int) -> None:
        for i in range(k):
            off = i * 128
            acq_f()
            if unpack(mm, off)[0] != SIZE:
                raise AssertionError
            rel_e()
    try:
        return per_side(produce, consume, n)
    finally:
        mm.close()
        for s in (filled, empty):
            s.unlink()
            s.close()
        posix_ipc.unlink_shared_memory(base + "_m")


class _SkelGuard:
    __slots__ = ("_hdr", "buf", "index")

    def release(self) -> None:
        self.buf.release()
        self._hdr[1] = self.index + 1


class _SkelData:
    __slots__ = ("guard",)


class _Skeleton:
    """No protocol: the Python calls and objects of the API's shape, nothing else."""

    def __init__(self) -> None:
        self.mem = memoryview(bytearray(SLOTS * 128))
        self.hdr = memoryview(bytearray(64)).cast("Q")
        self.views = [self.mem[i * 128:(i + 1) * 128] for i in range(SLOTS)]

    def put(self, data: Any) -> None:
        hdr = self.hdr
        w = hdr[0]
        n = len(data)
        self.views[w % SLOTS][:n] = data
        hdr[2] = n
        hdr[0] = w + 1

    def access(self) -> _SkelData:
        hdr = self.hdr
        r = hdr[3]
        hdr[3] = r + 1
        g = _SkelGuard()
        g._hdr, g.index, g.buf = hdr, r, self.views[r % SLOTS][:hdr[2]]
        d = _SkelData()
        d.guard = g
        return d


def api_sides(put: Callable[[Any], None], access: Callable[[], Any]
              ) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """The two sides of the per-slot API's loop: ``put(msg)``; ``access().guard``, its
    ``buf`` checked, ``release()``."""
    msg = bytes(SIZE)

    def produce(k: int) -> None:
        for _ in range(k):
            put(msg)

    def consume(k: int) -> None:
        for _ in range(k):
            g = access().guard
            if len(g.buf) != SIZE:
                raise AssertionError
            g.release()
    return produce, consume


def skeleton(n: int) -> tuple[float, float]:
    s = _Skeleton()
    return per_side(*api_sides(s.put, s.access), n)


def ctshm_fast(n: int) -> tuple[float, float]:
    ring = ShmTraceRing.create(f"floor{os.getpid()}", SLOTS, 4096, fast=True)
    try:
        return per_side(*api_sides(ring.put, ring.access), n)
    finally:
        ring.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=64_000)
    n = ap.parse_args().count
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load "
          f"{os.getloadavg()[0]:.2f}; ns per message, best of 7, {n} messages")
    print(f"{'':16}{'producer':>10}{'consumer':>10}")
    for label, fn in (("posix_ipc+shm", posix_ring), ("skeleton", skeleton),
                      ("ctshm fast", ctshm_fast)):
        try:
            p, c = fn(n)
        except ImportError as e:
            print(f"{label:16}not measured: {e}")
            continue
        print(f"{label:16}{p:10.0f}{c:10.0f}")


if __name__ == "__main__":
    main()
