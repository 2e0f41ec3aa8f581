"""What the child processes of the ShmBroadcast tests run (imported by spawned children: no
pytest here).  Failures are exit codes (an exception gives 1)."""

from __future__ import annotations

import os
import queue
import sys
import time
from typing import Any

from ctshm import ProducerCrashed, RingFinished, ShmBroadcast


def payload(seq: int, size: int) -> bytes:
    """Message ``seq`` of a checked stream: its number, then a pattern derived from it."""
    head = seq.to_bytes(8, "little")
    return (head * (size // 8 + 1))[:size] if size >= 8 else head


def child_read_n(r: ShmBroadcast, n: int, ready: Any) -> None:
    ready.set()  # the pickled reader joined when it was unpickled
    got = [r.get(timeout=60) for _ in range(n)]
    assert got == [b"%d" % i for i in range(n)], got
    r.close()


def child_put_n(b: ShmBroadcast, n: int) -> None:
    for i in range(n):
        b.put(b"%d" % i, timeout=60)
    b.close()


def child_put_after(id: str, delay: float) -> None:
    w = ShmBroadcast.open(id, role="writer")
    time.sleep(delay)
    w.put(b"late")
    sys.stdout.flush()
    os._exit(0)  # without close(): the seat stays taken by a dead process


def child_put_forever(b: ShmBroadcast) -> None:
    n = 0
    while True:
        b.put(b"n%d" % n, timeout=60)
        n += 1


def child_stream_writer(id: str, n: int, size: int, go: Any, progress: Any) -> None:
    """The battery's writer: wait for ``go``, put messages 0..n-1, mark_finished."""
    w = ShmBroadcast.open(id, role="writer")
    if not go.wait(120):
        raise SystemExit("never started")
    for seq in range(n):
        w.put(payload(seq, size), timeout=60)
        progress.value = seq + 1
    w.mark_finished()
    w.close()


def child_join_and_sleep(id: str, ready: Any) -> None:
    """Joins and never reads (the test kills it)."""
    r = ShmBroadcast.open(id)
    ready.set()
    time.sleep(600)
    r.close()


def child_stream_reader(id: str, n: int, size: int, joined: Any, got: Any) -> None:
    """The battery's reader: join, report the join point, check every message (number,
    content, order) and report progress; exit 0 only after RingFinished with nothing
    missing.  ``joined``/``got``: shared int values."""
    r = ShmBroadcast.open(id)
    expected = r._next
    joined.value = expected
    got.value = expected
    while True:
        try:
            m = r.get(timeout=60)
        except RingFinished:
            break
        seq = int.from_bytes(m[:8], "little")
        if seq != expected or m != payload(seq, size):
            raise SystemExit(f"reader {os.getpid()}: message {seq} (len {len(m)}), "
                             f"expected {expected}")
        expected += 1
        got.value = expected
    if expected != n:
        raise SystemExit(f"reader {os.getpid()}: RingFinished after {expected} of {n}")
    r.close()


def child_big_writer(id: str, size: int) -> None:
    """Puts size-byte checked messages until killed (the kill lands mid-put at random)."""
    w = ShmBroadcast.open(id, role="writer")
    seq = 0
    while True:
        w.put(payload(seq, size), timeout=60)
        seq += 1


def child_checking_reader(id: str, size: int, report: Any) -> None:
    """Reads checked messages until ProducerCrashed; report = (messages, 1 if crashed)."""
    r = ShmBroadcast.open(id)
    expected = r._next
    report[0] = expected
    while True:
        try:
            m = r.get(timeout=60)
        except ProducerCrashed:
            report[2] = 1
            break
        seq = int.from_bytes(m[:8], "little")
        if seq != expected or m != payload(seq, size):
            raise SystemExit(f"torn or out-of-order message {seq}, expected {expected}")
        expected += 1
        report[1] = expected
    r.close()


def child_reader_blocking(id: str, ready: Any) -> None:
    """Joins, then waits in get() (the test measures its CPU and then stops it)."""
    r = ShmBroadcast.open(id)
    ready.set()
    try:
        while True:
            r.get(timeout=None)
    except RingFinished:
        pass
    r.close()


def child_reader_slow(id: str, ready: Any, out: Any) -> None:
    """Joins, reads one message, then sleeps (SIGSTOP lands here), then reads again."""
    r = ShmBroadcast.open(id)
    ready.set()
    out[0] = len(r.get(timeout=60))
    time.sleep(0.5)
    try:
        r.get(timeout=10)
        out[1] = 1
    except (queue.Empty, RingFinished):
        out[1] = 2
    except Exception as e:
        out[1] = 3 if type(e).__name__ == "ReaderEvicted" else 4
    r.close()
