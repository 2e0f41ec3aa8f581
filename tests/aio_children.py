"""Functions spawned children run for test_aio.py and test_objects.py (exit code 0 = success).

Messages of the numbered streams are ``u64 sequence number`` + ``seq % 251`` filler bytes
(``message(i)``), so a consumer checks both order and content.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from typing import Any, Optional

_SEQ = struct.Struct("<Q")


def message(i: int) -> bytes:
    return _SEQ.pack(i) + bytes([i & 0xFF]) * (i % 251)


def seq_of(buf: Any) -> int:
    """The sequence number of ``message(i)`` after checking its length and filler."""
    b = bytes(buf)
    i: int = _SEQ.unpack_from(b)[0]
    assert b == message(i), f"message {i}: {len(b)} bytes, content mismatch"
    return i


def produce_numbered(id: str, count: int, seed: int, pause_every: int = 7,
                     end: str = "finish") -> None:
    """Put ``count`` numbered messages with short random pauses (the consumer must wait
    sometimes), then mark_finished (``end="crash"``: notify_crash)."""
    from ctshm import ShmTraceRing

    rng = random.Random(seed)
    ring = ShmTraceRing.open(id, timeout=20)
    try:
        for i in range(count):
            ring.put(message(i), timeout=30)
            if pause_every and rng.randrange(pause_every) == 0:
                time.sleep(rng.choice((0.0, 0.0002, 0.001, 0.003)))
        if end == "finish":
            ring.mark_finished()
        else:
            ring.notify_crash(11, 0xDEAD, 1, "child crashed on purpose")
    finally:
        ring.close()


def produce_numbered_async(id: str, count: int, seed: int) -> None:
    """Like produce_numbered, but with ``await ring.aput`` (and random cancelled aputs, which
    must publish nothing) from an asyncio loop."""
    from ctshm import ShmTraceRing

    async def main(ring: ShmTraceRing) -> None:
        rng = random.Random(seed)
        for i in range(count):
            if rng.randrange(10) == 0:  # a doomed aput of a bogus message
                t = asyncio.ensure_future(ring.aput(b"\xff" * 9))
                t.cancel()
                try:
                    await t
                except asyncio.CancelledError:
                    pass
                else:
                    raise AssertionError("a cancelled aput completed")
            await ring.aput(message(i), timeout=30)
        ring.mark_finished()

    ring = ShmTraceRing.open(id, timeout=20)
    try:
        asyncio.run(main(ring))
    finally:
        ring.close()


def consume_numbered(id: str, count: int, seed: int) -> None:
    """Read ``count`` numbered messages slowly (the producer's ring fills up), then Finished."""
    from ctshm import Finished, ShmTraceRing

    rng = random.Random(seed)
    ring = ShmTraceRing.open(id, timeout=20)
    try:
        for i in range(count):
            got = seq_of(ring.get(30))
            assert got == i, f"expected message {i}, got {got}"
            if rng.randrange(5) == 0:
                time.sleep(0.002)
        r = ring.access(30)
        assert isinstance(r, Finished), f"after {count} messages: {r!r}"
    finally:
        ring.close()


def sample_objects(with_numpy: bool) -> list[Any]:
    """The objects put_object tests send (deterministic)."""
    objs: list[Any] = [
        {"small": 1, "text": "héllo", "list": [1, 2.5, None, (3, "x")]},
        {"blob": bytes(range(256)) * 40, "ba": bytearray(b"\x01\x02" * 3000), "tiny": b"ab"},
        [b"", bytearray(), {"nested": {"deep": bytes(5000)}}],
        "just a string",
        12345,
    ]
    if with_numpy:
        import numpy as np

        objs.append({"arr": np.arange(100_000, dtype=np.float64).reshape(1000, 100),
                     "u8": np.frombuffer(bytes(range(256)) * 16, dtype=np.uint8),
                     "strided": np.arange(1000, dtype=np.int32)[::3],  # non-contiguous
                     "fortran": np.asfortranarray(np.arange(60.0).reshape(6, 10)),
                     "meta": {"shape": (1000, 100), "name": "frame"}})
    return objs


def assert_same(got: Any, want: Any, path: str = "obj") -> None:
    """Deep equality with exact types (NumPy arrays: dtype, shape and values)."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if type(want).__module__ == "numpy" and hasattr(want, "dtype"):
        assert got.dtype == want.dtype and got.shape == want.shape, path
        assert (got == want).all(), f"{path}: values differ"
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            assert_same(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def produce_objects(id: str, with_numpy: bool, use_async: bool = False) -> None:
    """put_object (or aput_object) every sample object, then mark_finished."""
    from ctshm import ShmTraceRing

    ring = ShmTraceRing.open(id, timeout=20)
    try:
        if use_async:
            async def main() -> None:
                for obj in sample_objects(with_numpy):
                    await ring.aput_object(obj, timeout=30)
            asyncio.run(main())
        else:
            for obj in sample_objects(with_numpy):
                ring.put_object(obj, timeout=30)
        ring.mark_finished()
    finally:
        ring.close()


def consume_objects(id: str, with_numpy: bool, ack: Optional[str] = None) -> None:
    """get_object every sample object, compare, then expect Finished."""
    from ctshm import RingFinished, ShmTraceRing

    ring = ShmTraceRing.open(id, timeout=20)
    try:
        for want in sample_objects(with_numpy):
            assert_same(ring.get_object(30), want)
        try:
            ring.get_object(30)
        except RingFinished:
            pass
        else:
            raise AssertionError("expected RingFinished after the sample objects")
    finally:
        ring.close()


def write_records(id: str, count: int) -> None:
    """A sync RecordWriter producer of ``count`` numbered records (small batches)."""
    from ctshm import ShmTraceRing
    from ctshm.records import RecordWriter

    ring = ShmTraceRing.open(id, timeout=20)
    try:
        with RecordWriter(ring, max_bytes=4096, timeout=30) as w:
            for i in range(count):
                w.append(message(i))
    finally:
        ring.close()


def read_records(id: str, count: int) -> None:
    """A sync RecordReader consumer expecting ``count`` numbered records then Finished."""
    from ctshm import ShmTraceRing
    from ctshm.records import RecordReader

    ring = ShmTraceRing.open(id, timeout=20)
    try:
        n = 0
        for rec in RecordReader(ring, timeout=30):
            assert seq_of(rec) == n, f"record {n}: got {seq_of(rec)}"
            n += 1
        assert n == count, f"{n} records, expected {count}"
    finally:
        ring.close()
