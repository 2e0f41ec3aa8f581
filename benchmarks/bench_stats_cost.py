"""What the live statistics counters cost on the one-message-per-slot path.

One process, ``put`` then ``access`` + ``release`` of 64-byte messages on a 16-slot ring, in
alternating rounds with the counters as shipped and with them patched out (the same code
minus the plain stores into the statistics words), so both run side by side on the same
machine state.  Prints the per-message time of each and the difference.

Run: ``python benchmarks/bench_stats_cost.py [--messages N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctshm import Data, ShmTraceRing, layout
from ctshm import ring as ringmod


def _publish_without_stats(self: ShmTraceRing, idx: int, nbytes: int) -> None:
    hq = self._hq
    if self._has_len:
        k = layout.LEN_WORD + 2 * (idx % self.capacity)
        hq[k + 1] = nbytes
        hq[k] = idx + 1
    self._store(layout.WRITE_IDX, idx + 1)


def _round(ring: ShmTraceRing, n: int) -> float:
    msg = b"x" * 64
    t0 = time.perf_counter()
    for _ in range(n // 16):
        for _ in range(16):
            ring.put(msg)
        for _ in range(16):
            r = ring.access(0)
            assert isinstance(r, Data)
            r.guard.release()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=32000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    shipped = (ringmod.ShmTraceRing._publish, ringmod.ShmTraceRing._count_consumed)
    with ShmTraceRing.create(f"statcost{os.getpid()}", 16, 4096) as ring:
        _round(ring, 1600)  # warm up: slots reserved, views cached
        on, off = [], []
        for _ in range(a.rounds):
            on.append(_round(ring, a.messages))
            ringmod.ShmTraceRing._publish = _publish_without_stats  # type: ignore[method-assign]
            ringmod.ShmTraceRing._count_consumed = lambda self, n: None  # type: ignore[method-assign]
            off.append(_round(ring, a.messages))
            ringmod.ShmTraceRing._publish, ringmod.ShmTraceRing._count_consumed = shipped  # type: ignore[method-assign]
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"load average {os.getloadavg()[0]:.2f}, {a.rounds} alternating rounds of "
          f"{a.messages} messages (median; range in brackets)")
    print(f"with counters    {m_on * 1e6:6.2f} µs/message  [{min(on) * 1e6:.2f}-{max(on) * 1e6:.2f}]")
    print(f"without counters {m_off * 1e6:6.2f} µs/message  [{min(off) * 1e6:.2f}-{max(off) * 1e6:.2f}]")
    print(f"cost of the counters: {(m_on - m_off) * 1e9:+.0f} ns/message "
          f"({(m_on / m_off - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
