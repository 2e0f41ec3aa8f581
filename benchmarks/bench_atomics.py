"""Cost of one atomic operation from Python, per backend (not a test: nothing is asserted).

    python benchmarks/bench_atomics.py [--number N] [--repeat R]

Prints nanoseconds per call (best of R timeit runs of N calls each, Python call overhead
included) for load / store / fetch_add / compare_exchange / fence on every available backend,
and the plain memoryview ``cast('Q')`` load/store the ring uses on x86_64 for comparison.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctshm import atomics


def best_ns(stmt: str, env: dict[str, object], number: int, repeat: int) -> float:
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat)) / number * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=200_000, help="calls per timing run")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs (the best is kept)")
    args = ap.parse_args()

    words = (ctypes.c_uint64 * 8)()
    addr = ctypes.addressof(words)
    q = memoryview(words).cast("B").cast("Q")

    print(f"python {platform.python_version()} on {platform.system()} {platform.machine()}; "
          f"best of {args.repeat} x {args.number} calls; ns per call")
    print(f"PLAIN_ORDERED_ACCESS={atomics.PLAIN_ORDERED_ACCESS}  "
          f"default backend={atomics.get_backend().name}")
    ops = ["load", "store", "fetch_add", "compare_exchange", "fence"]
    header = f"{'backend':<14}" + "".join(f"{op:>18}" for op in ops)
    print(header)
    print("-" * len(header))
    for name in atomics.available_backends():
        b = atomics.get_backend(name)
        env: dict[str, object] = {"load": b.load, "store": b.store, "add": b.fetch_add,
                                  "cas": b.compare_exchange, "fence": b.fence, "a": addr}
        stmts = {"load": "load(a)", "store": "store(a, 1)", "fetch_add": "add(a, 1)",
                 "compare_exchange": "cas(a, 0, 0)", "fence": "fence()"}
        row = f"{name:<14}" + "".join(
            f"{best_ns(stmts[op], env, args.number, args.repeat):>18.1f}" for op in ops)
        print(row)
    env = {"q": q}
    plain_load = best_ns("q[0]", env, args.number, args.repeat)
    plain_store = best_ns("q[0] = 1", env, args.number, args.repeat)
    print(f"{'memoryview':<14}{plain_load:>18.1f}{plain_store:>18.1f}"
          f"{'-':>18}{'-':>18}{'-':>18}")
    empty = best_ns("pass", {}, args.number, args.repeat)
    print(f"(empty timeit loop: {empty:.1f} ns per iteration, included above)")
    q.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
