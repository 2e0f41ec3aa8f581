"""Costs of two ring design choices, measured (not a test):

1. ENOSPC protection: ``posix_fallocate`` of a slot prefix the first time this process uses
   the slot (then never again).  Printed: the first acquire of a slot (whole 2 MiB slot, and
   a 4 KiB prefix) and the steady-state acquire+commit, with and without reservation.
2. The producer's bounded spin: CPU time burnt by an ``acquire(timeout=...)`` on a full
   ring (ctshm spins at most ``spin`` seconds, then sleeps on the semaphore), against the
   Rust original's 10,000 ``sem_trywait`` calls before it sleeps.

    python benchmarks/bench_ring_costs.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctshm import ShmTraceRing, libc
from ctshm.semaphore import NamedSemaphore


def best(fn, n: int = 5) -> float:  # type: ignore[no-untyped-def]
    return min(fn() for _ in range(n))


def first_acquire(size: int) -> float:
    ring = ShmTraceRing.create(f"bcost{os.getpid()}", 8, 4096)
    try:
        t = time.perf_counter()
        g = ring.acquire(size=size)
        dt = time.perf_counter() - t
        g.abort()
        return dt
    finally:
        ring.close()


def steady(n: int = 20000) -> float:
    ring = ShmTraceRing.create(f"bcost{os.getpid()}", 8, 4096)
    try:
        for _ in range(16):
            ring.acquire(size=64).commit(64)
            ring.access(0).guard.release()  # type: ignore[union-attr]
        t = time.perf_counter()
        for _ in range(n):
            ring.acquire(size=64).commit(64)
            ring.access(0).guard.release()  # type: ignore[union-attr]
        return (time.perf_counter() - t) / n
    finally:
        ring.close()


def spin_cpu(spin: float, timeout: float = 0.2) -> float:
    ring = ShmTraceRing.create(f"bspin{os.getpid()}", 1, 4096, spin=spin)
    try:
        ring.put(b"x")  # full
        c = time.process_time()
        try:
            ring.acquire(timeout=timeout)
        except TimeoutError:
            pass
        return time.process_time() - c
    finally:
        ring.close()


def seed_spin_cpu() -> float:
    """CPU time of 10,000 failing sem_trywait calls (the Rust original's producer spin)."""
    name = f"/bseed{os.getpid()}"
    s = NamedSemaphore(name, create=True, value=0)
    try:
        trywait, h = libc.fn.sem_trywait, s._handle
        c = time.perf_counter()
        for _ in range(10_000):
            trywait(h)
        return time.perf_counter() - c
    finally:
        s.close()
        NamedSemaphore.unlink_name(name)


def main() -> None:
    for size, label in ((2 << 20, "2 MiB"), (4096, "4 KiB")):
        t = best(lambda size=size: first_acquire(size))
        print(f"first acquire of a slot, {label} reserved : {t * 1e6:9.1f} µs")
    print(f"steady acquire+commit+access+release    : {best(steady) * 1e6:9.2f} µs per message "
          "(0 fallocate calls)")
    for spin in (0.0, 50e-6, 1e-3):
        print(f"CPU burnt by acquire(timeout=0.2) on a full ring, spin={spin * 1e6:6.0f} µs: "
              f"{best(lambda spin=spin: spin_cpu(spin), 3) * 1e3:7.3f} ms")
    print(f"Rust original's spin: 10,000 sem_trywait through ctypes here: "
          f"{best(seed_spin_cpu, 3) * 1e3:7.3f} ms per blocked acquire (natively ~0.2-0.5 ms)")


if __name__ == "__main__":
    main()
