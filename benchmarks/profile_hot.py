"""Where the time goes on ShmTraceRing's hot path (W1 one message per slot, and W4).

1. ``micro``: ns per operation in one process, best of 5 (no peer, no waiting): the raw
   foreign calls, the two compare-exchange backends, and the ring's put / access+release.
2. ``what-if``: the same access+release with the consumer's compare-exchange on
   ``reserved_idx`` swapped for cheaper equivalents (see the report in the issue): the
   machine-code backend's CAS (same semantics, no Python wrapper), or a plain
   load/compare/store (what a single consumer process serialized by the handle's lock needs).
3. ``cprofile``: each side of a two-process W1 one-per-slot stream and of W4 ping-pong
   under cProfile, top functions by own time.  cProfile inflates call-heavy code, so read it
   for the split, not the absolute times; ``--pyinstrument`` adds a sampling profile of each
   side when pyinstrument is installed.

Run: ``python benchmarks/profile_hot.py [--count N] [--pyinstrument]``.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import time
import timeit
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _shared import cli, w1_consume, w1_produce, w4_client, w4_serve

from ctshm import ShmTraceRing, atomics
from ctshm.libc import fn

SLOT = 2 << 20


def best_ns(stmt: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e9


def micro(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    ring = ShmTraceRing.create(f"ph{os.getpid():x}_m", 8, SLOT)
    try:
        h = ring._h_filled
        out["raw sem_post (ctypes)"] = best_ns(lambda: fn.sem_post(h), n)
        out["raw sem_trywait, token (ctypes)"] = best_ns(lambda: fn.sem_trywait(h), n)
        addr = ring._hdr.a_res
        lib = atomics.get_backend("libatomic") if "libatomic" in atomics.available_backends() \
            else None
        mc = atomics.get_backend("machine-code") \
            if "machine-code" in atomics.available_backends() else None
        if lib:
            out["CAS libatomic (wrapper + c_uint64 + byref)"] = best_ns(
                lambda: lib.compare_exchange(addr, 0, 0), n)
        if mc:
            out["CAS machine-code (one CFUNCTYPE call)"] = best_ns(
                lambda: mc.compare_exchange(addr, 0, 0), n)
        hq = ring._hq
        out["plain header load hq[i]"] = best_ns(lambda: hq[2], n)
        msg = bytearray(64)
        put, access = ring.put, ring.access

        def one() -> None:
            put(msg)
            access().guard.release()  # type: ignore[union-attr]

        for _ in range(16):
            one()  # per-slot one-time work out of the way
        out["put(64 B) + access() + release(), same process"] = best_ns(one, n // 4)

        def put_only() -> None:
            for _ in range(8):
                put(msg)
            for _ in range(8):
                access().guard.release()  # type: ignore[union-attr]

        t_both = best_ns(put_only, n // 32) / 8

        def access_only_setup() -> None:
            for _ in range(8):
                put(msg)

        # Split: time 8 puts alone (then drain untimed) to get put's share.
        total = 0.0
        reps = max(10, n // 64)
        best = float("inf")
        for _ in range(5):
            total = 0.0
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                for _ in range(8):
                    put(msg)
                total += time.perf_counter_ns() - t0
                for _ in range(8):
                    access().guard.release()  # type: ignore[union-attr]
            best = min(best, total / reps / 8)
        out["put(64 B) alone"] = best
        out["access() + release() alone (difference)"] = t_both - best
    finally:
        ring.close()
    return out


def what_if(n: int) -> dict[str, float]:
    """access+release per message with the reserved_idx compare-exchange swapped."""
    out: dict[str, float] = {}
    ring = ShmTraceRing.create(f"ph{os.getpid():x}_w", 8, SLOT)
    msg = bytearray(64)
    hq = ring._hq

    def plain_cas(addr: int, expected: int, desired: int) -> int:
        old = hq[2]  # reserved_idx, under the handle's lock in a real implementation
        if old == expected:
            hq[2] = desired
        return int(old)

    variants: dict[str, Any] = {"as is (" + atomics.get_backend().name + ")": ring._cas}
    if "machine-code" in atomics.available_backends():
        variants["machine-code CAS"] = atomics.get_backend("machine-code").compare_exchange
    variants["plain load/compare/store"] = plain_cas
    try:
        for label, cas in variants.items():
            ring._cas = cas

            def batch() -> None:
                for _ in range(8):
                    ring.put(msg)
                t0 = time.perf_counter_ns()
                for _ in range(8):
                    ring.access().guard.release()  # type: ignore[union-attr]
                batch.t += time.perf_counter_ns() - t0  # type: ignore[attr-defined]

            best = float("inf")
            for _ in range(5):
                batch.t = 0  # type: ignore[attr-defined]
                reps = max(10, n // 64)
                for _ in range(reps):
                    batch()
                best = min(best, batch.t / reps / 8)  # type: ignore[attr-defined]
            out[f"access()+release() with {label}"] = best
    finally:
        ring.close()
    return out


# ---------------------------------------------------------------------------------------------


def _profile_child(target: Callable[[], None], label: str, instrument: bool) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        if instrument:
            try:
                from pyinstrument import Profiler  # type: ignore[import-not-found]
            except ImportError:
                Profiler = None
            if Profiler is not None:
                pr = Profiler(interval=0.0002)
                pr.start()
                target()
                pr.stop()
                print(f"\n===== pyinstrument: {label} =====")
                print(pr.output_text(unicode=False, color=False, show_all=False)[:6000])
                sys.stdout.flush()
                os._exit(0)
        prof = cProfile.Profile()
        prof.enable()
        target()
        prof.disable()
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        print(f"\n===== cProfile: {label}: {st.total_calls} calls "  # type: ignore[attr-defined]
              f"in {st.total_tt:.3f} s =====")  # type: ignore[attr-defined]
        st.sort_stats("tottime").print_stats(14)
        text = s.getvalue()
        start = text.find("   ncalls")
        print(text[start:].rstrip())
        sys.stdout.flush()
    finally:
        os._exit(0)


def profile_stream(count: int, instrument: bool) -> None:
    rid = f"ph{os.getpid():x}_s"
    ring = ShmTraceRing.create(rid, 32, SLOT)

    def producer() -> None:
        with ShmTraceRing.open(rid) as r:
            w1_produce(r, count)

    def consumer() -> None:
        with ShmTraceRing.open(rid) as r:
            w1_consume(r)

    try:
        pc = _profile_child(consumer, f"W1 one-per-slot consumer, {count} messages", instrument)
        os.waitpid(_profile_child(producer, f"W1 one-per-slot producer, {count} messages",
                                  instrument), 0)
        os.waitpid(pc, 0)
    finally:
        ring.close()


def profile_pingpong(count: int, instrument: bool) -> None:
    ida, idb = f"ph{os.getpid():x}_a", f"ph{os.getpid():x}_b"
    A, B = ShmTraceRing.create(ida, 4, SLOT), ShmTraceRing.create(idb, 4, SLOT)

    def server() -> None:
        with ShmTraceRing.open(ida) as a, ShmTraceRing.open(idb) as b:
            w4_serve(a, b, count)

    def client() -> None:
        with ShmTraceRing.open(ida) as a, ShmTraceRing.open(idb) as b:
            w4_client(a, b, count)

    try:
        ps = _profile_child(server, f"W4 server, {count} round trips", instrument)
        os.waitpid(_profile_child(client, f"W4 client, {count} round trips", instrument), 0)
        os.waitpid(ps, 0)
    finally:
        A.close()
        B.close()


def main() -> None:
    p = cli(__doc__)
    p.add_argument("--pyinstrument", action="store_true",
                   help="sampling profiles (pyinstrument) instead of cProfile")
    args = p.parse_args()
    print(f"atomics backend {atomics.get_backend().name}; load {os.getloadavg()}")
    print("\n== micro (ns per operation, one process, best of 5)")
    for k, v in micro(args.count * 4).items():
        print(f"  {k:52s} {v:8.0f}")
    print("\n== what-if: consumer's reserved_idx compare-exchange")
    for k, v in what_if(args.count * 4).items():
        print(f"  {k:52s} {v:8.0f} ns")
    sys.stdout.flush()
    profile_stream(args.count, args.pyinstrument)
    profile_pingpong(max(2000, args.count // 10), args.pyinstrument)


if __name__ == "__main__":
    main()
