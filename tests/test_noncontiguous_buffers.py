"""A non-C-contiguous buffer (a strided slice, a Fortran-order or transposed NumPy array, a
strided memoryview) given to ``put()``, ``aput()``, ``RecordWriter.append()`` or
``sender().send()`` is copied in C (row-major) order - the bytes of
``np.ascontiguousarray(a)`` - like ``put_object`` does, instead of being refused with a text
that called it "not bytes-like".  A non-buffer still gets the "needs a bytes-like object"
error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ctshm import ShmTraceRing
from ctshm.records import RecordWriter

_STRIDED = memoryview(bytes(range(16)))[::2]  # no NumPy needed: a strided memoryview


def _cases() -> list[Any]:
    out: list[Any] = [pytest.param(_STRIDED, id="strided-memoryview")]
    try:
        import numpy as np
    except ImportError:
        return out
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    out += [pytest.param(a[:, ::2], id="numpy-strided"),
            pytest.param(np.asfortranarray(a), id="numpy-fortran"),
            pytest.param(a.T, id="numpy-transposed")]
    return out


def _c_bytes(data: Any) -> bytes:
    return memoryview(data).tobytes()  # C order, like np.ascontiguousarray(data).tobytes()


@pytest.mark.parametrize("data", _cases())
def test_put_copies_in_c_order(shm_id: str, data: Any) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(data)
        assert ring.get(timeout=1) == _c_bytes(data)


@pytest.mark.parametrize("data", _cases())
def test_aput_copies_in_c_order(shm_id: str, data: Any) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        asyncio.run(ring.aput(data, timeout=1))
        assert ring.get(timeout=1) == _c_bytes(data)


@pytest.mark.parametrize("data", _cases())
def test_record_writer_and_sender_copy_in_c_order(shm_id: str, data: Any) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        w = RecordWriter(ring, timeout=5, linger=None)
        w.append(data)
        w.close(finish=False)
        with ring.sender(linger=0) as tx:
            tx.send(data)
        rx = ring.receiver()
        assert list(rx) == [_c_bytes(data), _c_bytes(data)]


@pytest.mark.parametrize("call", ["put", "append"])
def test_non_buffers_are_still_refused_by_name(shm_id: str, call: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        fn = ring.put if call == "put" else RecordWriter(ring, linger=None).append
        with pytest.raises(TypeError, match=r"needs a bytes-like object .* not list"):
            fn([1, 2, 3])
        with pytest.raises(TypeError, match=r"encode text first"):
            fn("text")
