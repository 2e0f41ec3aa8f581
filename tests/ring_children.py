"""Frame helpers and the functions spawned ring test processes run.

Frames are the seedref peer's format (``../shared/seedref/README.md``), little-endian:
``[0..8)`` u64 payload_len, ``[8..16)`` u64 sequence number i, then ``payload_len - 8``
pattern bytes where byte j (counted from offset 16) is ``(i + j) & 0xff``.  With
payload_len < 8 only the 16-byte head is written.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
from typing import Optional

_HEAD = struct.Struct("<QQ")
_TABLE = bytes(range(256)) * ((4 << 20) // 256 + 2)


def frame_size(payload_len: int) -> int:
    return 16 + max(0, payload_len - 8)


def write_frame(buf: memoryview, seq: int, payload_len: int) -> int:
    """Write frame ``seq`` into ``buf``; return its size."""
    _HEAD.pack_into(buf, 0, payload_len, seq)
    n = max(0, payload_len - 8)
    if n:
        s = seq & 0xFF
        buf[16:16 + n] = _TABLE[s:s + n]
    return 16 + n


def check_frame(buf: memoryview, seq: int, payload_len: Optional[int] = None) -> int:
    """Raise AssertionError unless ``buf`` holds frame ``seq``; return its payload_len."""
    assert len(buf) >= 16, f"message {seq}: only {len(buf)} bytes"
    plen, got = _HEAD.unpack_from(buf, 0)
    assert got == seq, f"message {seq}: sequence number {got}"
    if payload_len is not None:
        assert plen == payload_len, f"message {seq}: payload_len {plen} != {payload_len}"
    n = max(0, plen - 8)
    assert 16 + n <= len(buf), f"message {seq}: payload_len {plen} exceeds {len(buf)} bytes"
    s = seq & 0xFF
    assert buf[16:16 + n] == _TABLE[s:s + n], f"message {seq}: pattern mismatch"
    return int(plen)


# ---------------------------------------------------------------------------------------------
# Spawned children (exit code 0 = success)
# ---------------------------------------------------------------------------------------------


def produce(id: str, count: int, payload_len: int, end: str = "finish",
            crash: tuple[int, int, int] = (0, 0, 0), create: bool = False,
            capacity: int = 2, slot_size: int = 4096, exact: bool = True,
            sleep_every: int = 0) -> None:
    from ctshm import ShmTraceRing

    ring = (ShmTraceRing.create(id, capacity, slot_size) if create
            else ShmTraceRing.open(id, timeout=20))
    try:
        for i in range(count):
            with ring.acquire(timeout=30) as g:
                n = write_frame(g.buf, i, payload_len)
                g.commit(n if exact else None)
            if sleep_every and i % sleep_every == 0:
                time.sleep(0.001)
        if end == "finish":
            ring.mark_finished()
        elif end == "crash":
            ring.notify_crash(*crash)
        elif end == "hang":
            time.sleep(3600)
        if create:  # the owner keeps the names until the consumer drained the ring
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                h = ring.header()
                if h["read_idx"] == h["write_idx"]:
                    break
                time.sleep(0.002)
    finally:
        ring.close()


def consume(id: str, count: int, payload_len: Optional[int], expect: str = "finish") -> None:
    """Open, verify ``count`` frames then the end ``expect`` (finish|crash)."""
    from ctshm import Crashed, Data, Finished, ShmTraceRing

    ring = ShmTraceRing.open(id, timeout=20)
    try:
        for i in range(count):
            r = ring.access(30)
            assert isinstance(r, Data), f"message {i}: {r!r}"
            with r.guard as g:
                check_frame(g.buf, i, payload_len)
        r = ring.access(30)
        want = Finished if expect == "finish" else Crashed
        assert isinstance(r, want), f"after {count} messages: {r!r}"
    finally:
        ring.close()


def produce_then_die(id: str, count: int, sig: int) -> None:
    """Produce ``count`` frames, start writing one more, then kill ourselves."""
    from ctshm import ShmTraceRing

    ring = ShmTraceRing.open(id, timeout=20)
    for i in range(count):
        with ring.acquire(timeout=30) as g:
            g.commit(write_frame(g.buf, i, 64))
    g = ring.acquire(timeout=30)
    g.buf[:16] = b"\xee" * 16  # half-written, never committed
    sys.stdout.flush()
    os.kill(os.getpid(), sig)
    time.sleep(60)


def consume_hold_and_die(id: str, hold: int, ready_path: str) -> None:
    """Take ``hold`` messages without releasing them, signal readiness, then wait to die."""
    from ctshm import Data, ShmTraceRing

    ring = ShmTraceRing.open(id, timeout=20)
    guards = []
    for i in range(hold):
        r = ring.access(30)
        assert isinstance(r, Data), r
        check_frame(r.guard.buf, i)
        guards.append(r.guard)
    with open(ready_path, "w") as f:
        f.write("ready")
    time.sleep(60)
    os.kill(os.getpid(), signal.SIGKILL)
