"""ctshm.objects: Python objects through the ring (pickle 5, out-of-band buffers)."""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

import pytest

from ctshm import (
    CorruptRingError,
    Data,
    ProducerCrashed,
    RingFinished,
    ShmTraceRing,
    objects as co,
)

from . import aio_children as ac
from .helpers import SPAWN, join_all

try:
    import numpy as np
except ImportError:  # optional
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="numpy is optional (not installed)")


def pair(shm_id: str, capacity: int = 2, slot: int = 1 << 16) -> tuple[ShmTraceRing,
                                                                         ShmTraceRing]:
    ring = ShmTraceRing.create(shm_id, capacity, slot)
    return ring, ShmTraceRing.open(shm_id)


def test_round_trips_keep_types_and_values(shm_id: str) -> None:
    ring, prod = pair(shm_id, capacity=1, slot=4 << 20)
    with ring, prod:
        for want in ac.sample_objects(np is not None):
            prod.put_object(want, timeout=5)
            ac.assert_same(ring.get_object(5), want)


def test_owned_object_survives_the_slot_being_reused(shm_id: str) -> None:
    ring, prod = pair(shm_id, capacity=1)
    with ring, prod:
        blob = bytes(range(256)) * 20
        prod.put_object({"b": blob, "ba": bytearray(blob), "pb": pickle.PickleBuffer(
            bytearray(blob))})
        got = ring.get_object(5)
        prod.put_object({"b": bytes(len(blob)), "ba": bytearray(len(blob)),
                         "pb": pickle.PickleBuffer(bytearray(len(blob)))})  # same slot
        assert got["b"] == blob and got["ba"] == blob and bytes(got["pb"]) == blob
        assert type(got["ba"]) is bytearray
        assert ring.get_object(5)["b"] == bytes(len(blob))


@needs_numpy
def test_numpy_arrays_owned_by_default_and_aliasing_the_slot_in_view_form(shm_id: str
                                                                          ) -> None:
    assert np is not None
    ring, prod = pair(shm_id, capacity=2, slot=4 << 20)
    arr = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    with ring, prod:
        prod.put_object({"arr": arr, "k": 3})
        prod.put_object({"arr": arr, "k": 4})
        owned = ring.get_object(5)["arr"]
        assert owned.flags.writeable and owned.flags.owndata is False  # a bytearray's memory
        owned[0] = -1.0  # writable, ours
        view = ring.get_object_view(5)
        slot = np.frombuffer(view.buf, np.uint8)
        with view as obj:
            a = obj["arr"]
            assert obj["k"] == 4
            assert np.shares_memory(a, slot), "the view form copied the array"
            assert not np.shares_memory(owned, slot)
            assert not a.flags.writeable
            assert (a == arr).all()
        assert owned[0] == -1.0 and (owned[1:] == arr[1:]).all()
        with pytest.raises(ValueError, match="released"):
            view.object  # noqa: B018


def test_view_form_buffers_alias_the_slot_and_are_released_after_the_block(shm_id: str
                                                                          ) -> None:
    ring, prod = pair(shm_id)
    with ring, prod:
        payload = bytearray(b"z" * 3000)
        prod.put_object({"pb": pickle.PickleBuffer(payload), "b": bytes(payload)})
        view = ring.get_object_view(5)
        with view as obj:
            m = obj["pb"]
            assert isinstance(m, memoryview) and m.readonly and m == payload
            assert m.obj is view.buf.obj  # a view of the ring's mapping, not a copy
            assert type(obj["b"]) is bytes  # bytes own their memory: copied
            keep = obj["b"]
        with pytest.raises(ValueError, match="released"):
            bytes(m)
        assert keep == bytes(payload)
        assert "released" in repr(view)
        view.release()  # idempotent
        # The slot was released: both slots usable again.
        prod.put_object(1, timeout=5)
        prod.put_object(2, timeout=5)
        assert [ring.get_object(5), ring.get_object(5)] == [1, 2]


def test_frame_layout_is_the_documented_one(shm_id: str) -> None:
    ring, prod = pair(shm_id, slot=4 << 20)
    with ring, prod:
        big = bytes(range(251)) * 4000  # ~1 MB, out of band
        ba = bytearray(b"\x07" * 5000)
        pb = bytearray(b"\x09" * 777)
        prod.put_object({"big": big, "ba": ba, "pb": pickle.PickleBuffer(pb), "small": b"x"})
        r = ring.access(5)
        assert isinstance(r, Data)
        with r.guard as g:
            buf = bytes(g.buf)
    magic, version, reserved, n_oob, n_pid, plen = struct.unpack_from("<4sHHIIQ", buf)
    assert (magic, version, reserved, n_oob, n_pid) == (b"CTOB", 1, 0, 1, 2)
    assert plen < 500, "the large values were copied into the pickle stream"
    table = [struct.unpack_from("<QQ", buf, 24 + 16 * i) for i in range(3)]
    start = 24 + 16 * 3
    assert table[0][0] >= start + plen
    for off, _ in table:
        assert off % 8 == 0
    (o0, l0), (o1, l1), (o2, l2) = table
    assert buf[o0:o0 + l0] == pb  # pickle buffers first, then persistent-id payloads
    assert buf[o1:o1 + l1] == big and buf[o2:o2 + l2] == ba
    assert len(buf) == o2 + l2  # committed exactly the frame
    obj = co.decode(memoryview(buf))
    assert obj["big"] == big and obj["ba"] == ba and obj["small"] == b"x"


def test_too_large_object_names_both_sizes_and_publishes_nothing(shm_id: str) -> None:
    ring, prod = pair(shm_id)
    with ring, prod:
        n = ring.slot_size
        with pytest.raises(ValueError, match=rf"put_object\(\): the dict takes \d+ bytes "
                                             rf"pickled .*more than a slot of {n} bytes"):
            prod.put_object({"x": bytes(n)})
        with pytest.raises(ValueError, match=rf"slot of {n} bytes"):
            prod.put_object([bytearray(n // 2), bytearray(n // 2)])
        assert ring.header()["write_idx"] == 0
        prod.put_object("fits")
        assert ring.get_object(5) == "fits"


def test_unpicklable_object_and_non_frames_give_clear_errors(shm_id: str) -> None:
    ring, prod = pair(shm_id)
    with ring, prod:
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError),
                           match="put_object"):
            prod.put_object({"f": lambda: 1})
        prod.put(b"not a frame at all, just bytes")
        with pytest.raises(CorruptRingError, match=r"message 0 is not a ctshm object frame"):
            ring.get_object(5)
        prod.put(b"CTOB" + bytes(20))
        with pytest.raises(CorruptRingError, match="version 0"):
            ring.get_object(5)
        frame = struct.pack("<4sHHIIQQQ", b"CTOB", 1, 0, 1, 0, 0, 64, 1 << 20)
        prod.put(frame)
        with pytest.raises(CorruptRingError, match=r"buffer 0 .* ends beyond the message"):
            ring.get_object_view(5)
        prod.put_object("after")  # every bad slot was released
        assert ring.get_object(5) == "after"


def test_end_of_stream_crash_and_timeout(shm_id: str) -> None:
    ring, prod = pair(shm_id)
    with ring, prod:
        with pytest.raises(TimeoutError, match="no message within"):
            ring.get_object(0.01)
        prod.put_object(1)
        prod.mark_finished()
        assert ring.get_object(5) == 1
        with pytest.raises(RingFinished):
            ring.get_object(5)
        with pytest.raises(RingFinished):
            ring.get_object_view(5)
    ring, prod = pair(shm_id)
    with ring, prod:
        prod.notify_crash(11, 0, 0, "gone")
        with pytest.raises(ProducerCrashed):
            ring.get_object(5)


def test_async_forms(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> None:
        got: list[Any] = []

        async def consumer() -> None:
            for _ in range(30):
                got.append(await ring.aget_object(10))
            view = await co.aget_object_view(ring, 10)
            with view as obj:
                got.append(bytes(obj["pb"]))

        async def producer() -> None:
            for i in range(30):
                await prod.aput_object({"i": i, "blob": bytes([i]) * 2000}, timeout=10)
            await prod.aput_object({"pb": pickle.PickleBuffer(b"p" * 100)})

        await asyncio.gather(consumer(), producer())
        assert got[:30] == [{"i": i, "blob": bytes([i]) * 2000} for i in range(30)]
        assert got[30] == b"p" * 100

    ring, prod = pair(shm_id, capacity=2)
    with ring, prod:
        asyncio.run(main(ring, prod))


@pytest.mark.parametrize("use_async", [False, True])
def test_objects_from_a_producer_process(shm_id: str, use_async: bool) -> None:
    with ShmTraceRing.create(shm_id, 2, 4 << 20) as ring:
        p = SPAWN.Process(target=ac.produce_objects, args=(shm_id, np is not None, use_async),
                          daemon=True)
        p.start()
        ring.expect_producer(p.pid)
        for want in ac.sample_objects(np is not None):
            ac.assert_same(ring.get_object(30), want)
        with pytest.raises(RingFinished):
            ring.get_object(30)
        assert join_all([p], 60) == [0]


def test_objects_to_a_consumer_process(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4 << 20) as prod:
        p = SPAWN.Process(target=ac.consume_objects, args=(shm_id, np is not None), daemon=True)
        p.start()
        prod.expect_consumer(p.pid)
        for obj in ac.sample_objects(np is not None):
            prod.put_object(obj, timeout=30)
        prod.mark_finished()
        assert join_all([p], 60) == [0]


class Counted:
    """Counts how often it is pickled (``__reduce__`` with a side effect, as a sequence
    number or a lazily loaded proxy has)."""

    reductions = 0

    def __init__(self, payload: Any = None) -> None:
        self.payload = payload

    def __reduce__(self) -> Any:
        Counted.reductions += 1
        return (Counted, (self.payload,))


@pytest.mark.parametrize("case", [
    "small",
    "out-of-band buffer",
    "nested large bytes",
    "stream over 4 KiB",
    "unpicklable",
])
def test_put_object_pickles_an_object_once(shm_id: str, case: str) -> None:
    obj: Any = {
        "small": Counted(7),
        "out-of-band buffer": [Counted(1), pickle.PickleBuffer(b"x" * 100)],
        "nested large bytes": {"a": {"b": [Counted(2), b"z" * 5000]}},
        "stream over 4 KiB": [Counted(3)] + [f"{i:04d}" * 25 for i in range(60)],
        "unpicklable": [Counted(4), lambda: 1],
    }[case]
    ring, prod = pair(shm_id)
    with ring, prod:
        Counted.reductions = 0
        if case == "unpicklable":
            with pytest.raises((pickle.PicklingError, TypeError, AttributeError),
                               match="put_object"):
                prod.put_object(obj)
        else:
            prod.put_object(obj)
            got = ring.get_object(5)
            assert type(got) is type(obj)
        assert Counted.reductions == 1



@pytest.mark.parametrize("case", ["aput_object", "put_object with an out-of-band buffer"])
def test_a_large_nested_container_is_pickled_once(shm_id: str, case: str) -> None:
    rows: list[Any] = [Counted(5)] + [f"{i:06d}" * 20 for i in range(1000)]  # ~125 KB
    if case != "aput_object":
        rows.append(pickle.PickleBuffer(b"x" * 100))
    obj = {"rows": rows}
    ring, prod = pair(shm_id, slot=1 << 20)
    with ring, prod:
        Counted.reductions = 0
        if case == "aput_object":
            asyncio.run(prod.aput_object(obj, 5))
        else:
            prod.put_object(obj)
        got = ring.get_object(5)
        assert got["rows"][1:1001] == rows[1:1001]
        assert Counted.reductions == 1
