"""What ``count_calls.py`` and ``profile_hot.py`` share: the hot loops one counts and the
other profiles, W1 one message per slot (producer, consumer) and W4 ping-pong (server,
client) with 64-byte messages that carry a sequence number, and the scripts' common start
(:func:`cli`).  Each loop takes rings already open, so the caller decides what is counted,
timed or profiled around it (opening and closing are not)."""

from __future__ import annotations

import argparse
import signal
import struct
from typing import Any

from ctshm import Data, ShmTraceRing

SEQ = struct.Struct("<Q")


def w1_produce(ring: ShmTraceRing, count: int) -> None:
    """``count`` messages, one ``put`` each, then ``mark_finished``."""
    msg = bytearray(64)
    for i in range(count):
        SEQ.pack_into(msg, 0, i)
        ring.put(msg)
    ring.mark_finished()


def w1_consume(ring: ShmTraceRing) -> int:
    """``access`` + ``release`` until the ring ends; the number of messages."""
    n = 0
    while True:
        d = ring.access()
        if type(d) is not Data:
            return n
        g = d.guard
        SEQ.unpack_from(g.buf, 0)
        g.release()
        n += 1


def w4_serve(a: ShmTraceRing, b: ShmTraceRing, count: int) -> None:
    """``count`` round trips: each message of ``a`` echoed on ``b``."""
    reply = bytearray(64)
    for _ in range(count):
        g = a.access().guard  # type: ignore[union-attr]
        SEQ.pack_into(reply, 0, SEQ.unpack_from(g.buf, 0)[0])
        b.put(reply)
        g.release()


def w4_client(a: ShmTraceRing, b: ShmTraceRing, count: int) -> None:
    """``count`` round trips: put on ``a``, wait for the echo on ``b``."""
    msg = bytearray(64)
    for i in range(count):
        SEQ.pack_into(msg, 0, i)
        a.put(msg)
        g = b.access().guard  # type: ignore[union-attr]
        SEQ.unpack_from(g.buf, 0)
        g.release()


def cli(doc: str) -> argparse.ArgumentParser:
    """A script's start: SIGTERM raises SystemExit (so the finally blocks unlink the rings);
    a parser with ``--count`` (default 50,000)."""
    signal.signal(signal.SIGTERM, _sigterm)
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=50_000)
    return p


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
