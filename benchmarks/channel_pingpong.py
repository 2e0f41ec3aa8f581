"""Round trips of 64-byte messages through two message channels (``ring.sender()`` /
``ring.receiver()``), one per direction: the latency the linger rule must not add to
request/reply traffic (not a test; ``ctshm bench`` has no channel ping-pong).

    python benchmarks/channel_pingpong.py [--count N]

Prints the median and 90th percentile round trip in µs (the first 500 are warm-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctshm import ShmTraceRing

WARMUP = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5000)
    n = ap.parse_args().count
    a, b = f"chpp{os.getpid()}a", f"chpp{os.getpid()}b"
    with ShmTraceRing.create(a, 8, 1 << 16) as ra, ShmTraceRing.create(b, 8, 1 << 16) as rb:
        pid = os.fork()
        if pid == 0:  # the echo server
            code = 1
            try:
                with ShmTraceRing.open(a) as x, ShmTraceRing.open(b) as y:
                    rx, tx = x.receiver(), y.sender()
                    for _ in range(n + WARMUP):
                        tx.send(rx.recv(timeout=30))
                    tx.close()
                    rx.close()
                code = 0
            finally:
                os._exit(code)
        tx, rx = ra.sender(), rb.receiver()
        msg, rtts = bytes(64), []
        clock = time.perf_counter_ns
        for _ in range(n + WARMUP):
            t = clock()
            tx.send(msg)
            rx.recv(timeout=30)
            rtts.append(clock() - t)
        tx.close()
        _, status = os.waitpid(pid, 0)
        rx.close()
        rtts = sorted(rtts[WARMUP:])
        print(f"median {statistics.median(rtts) / 1000:.1f} us  "
              f"p90 {rtts[int(0.9 * len(rtts))] / 1000:.1f}  (server exit status {status})")


if __name__ == "__main__":
    main()
