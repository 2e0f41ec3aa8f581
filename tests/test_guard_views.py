"""A view made from a guard's ``buf`` that outlives the guard is reported when the guard
ends (``release()``, ``commit()``, ``abort()``, the end of its ``with`` block):
``StaleViewWarning`` names the message and the fix; ``warnings.simplefilter("error",
StaleViewWarning)`` makes it an error, raised once the slot was handed back (the ring stays
consistent).

By default only a direct export of ``buf`` (one that makes its ``release()`` fail, e.g. a
``pickle.PickleBuffer`` or ``ctypes`` ``from_buffer``) is seen, at no cost; in checking mode
(``python -X dev`` or ``CTSHM_CHECK_VIEWS=1``) every view made from it is: slices,
``memoryview(g.buf)``, NumPy arrays.  The rule (README, "The three rules"): keep the guard -
and anything made from ``g.buf`` - only inside the ``with`` block; copy what must outlive it.
"""

from __future__ import annotations

import gc
import pickle
import sys
import warnings
from collections.abc import Iterator

import pytest

from ctshm import Data, ShmTraceRing, StaleViewWarning, _viewcheck

from .helpers import run_python

needs_refcounts = pytest.mark.skipif(not hasattr(sys, "getrefcount"),
                                     reason="checking mode needs reference counts (CPython)")


@pytest.fixture
def checking(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(sys, "getrefcount"):
        pytest.skip("checking mode needs reference counts (CPython)")
    monkeypatch.setattr(_viewcheck, "ENABLED", True)
    yield


def test_direct_export_kept_past_release_warns_by_default(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"abcd")
        r = ring.access(timeout=1)
        assert isinstance(r, Data)
        with pytest.warns(StaleViewWarning, match=r"message 0 of .*copy") as rec, \
                r.guard as g:
            kept = pickle.PickleBuffer(g.buf)  # holds an export of the guard's view
        assert rec[0].filename == __file__  # points at the user's code
        kept.release()
        ring.put(b"next")  # the slot went back all the same
        assert ring.get(timeout=1) == b"next"


@pytest.mark.parametrize("make", [
    lambda b: memoryview(b), lambda b: b[0:2], lambda b: b.cast("B")],
    ids=["memoryview", "slice", "cast"])
def test_consumer_view_kept_past_release_warns(shm_id: str, checking: None, make: object
                                               ) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"abcd")
        r = ring.access(timeout=1)
        assert isinstance(r, Data)
        with pytest.warns(StaleViewWarning, match=r"message 0 of .*copy"), r.guard as g:
            kept = make(g.buf)  # type: ignore[operator]
            assert bytes(kept[:2]) == b"ab"
        del kept
        ring.put(b"next")
        assert ring.get(timeout=1) == b"next"


def test_producer_view_kept_past_commit_warns(shm_id: str, checking: None) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with pytest.warns(StaleViewWarning, match=r"message 0 of .*published"), \
                ring.acquire(timeout=1, size=4) as g:
            kept = g.buf[0:4]
            kept[:4] = b"wxyz"
        del kept
        assert ring.get(timeout=1) == b"wxyz"


def test_no_warning_when_views_stay_inside(shm_id: str, checking: None) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring, warnings.catch_warnings():
        warnings.simplefilter("error", StaleViewWarning)
        with ring.acquire(timeout=1, size=3) as g:
            m = g.buf[0:3]
            m[:3] = b"abc"
            del m
        r = ring.access(timeout=1)
        assert isinstance(r, Data)
        held = None
        with r.guard as cg:
            held = cg.buf  # the guard's own view: released with it, never stale
            assert bytes(cg.buf[:3]) == b"abc"
        with pytest.raises(ValueError):
            bytes(held)
        assert len(ring) == 0


def test_strict_mode_raises_after_the_slot_went_back(shm_id: str, checking: None) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring, warnings.catch_warnings():
        warnings.simplefilter("error", StaleViewWarning)
        ring.put(b"one")
        r = ring.access(timeout=1)
        assert isinstance(r, Data)
        kept = memoryview(r.guard.buf)
        with pytest.raises(StaleViewWarning):
            r.guard.release()
        del kept
        assert len(ring) == 0  # released despite the error
        ring.put(b"two")  # capacity 1: the slot is free again
        assert ring.get(timeout=1) == b"two"


def test_dropped_guard_does_not_warn(shm_id: str, checking: None) -> None:
    """A guard freed by the collector may go before a view that dies right after it (a
    function's locals): no warning there (release() and ``with`` do warn)."""
    with ShmTraceRing.create(shm_id, 2, 4096) as ring, warnings.catch_warnings():
        warnings.simplefilter("error", StaleViewWarning)
        ring.put(b"abcd")

        def first_bytes() -> bytes:
            r = ring.access(timeout=1)
            m = memoryview(r.guard.buf)  # type: ignore[union-attr]
            return bytes(m[:2])

        assert first_bytes() == b"ab"
        gc.collect()
        assert len(ring) == 0


def test_numpy_arrays_kept_from_a_stream(shm_id: str, checking: None) -> None:
    """The report's case: arrays kept from eight messages through a two-slot ring."""
    np = pytest.importorskip("numpy")
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        kept = []
        with pytest.warns(StaleViewWarning, match="copy") as rec:
            for i in range(8):
                ring.put(np.full(4, i, dtype=np.int64))
                r = ring.access(timeout=1)
                assert isinstance(r, Data)
                with r.guard as g:
                    kept.append(np.frombuffer(g.buf, dtype=np.int64))
        assert len([w for w in rec if w.category is StaleViewWarning]) == 8
        del kept


@needs_refcounts
def test_dev_mode_turns_checking_on(shm_id: str) -> None:
    code = f"""
from ctshm import ShmTraceRing
with ShmTraceRing.create({shm_id!r}, 2, 4096) as ring:
    ring.put(b"abcd")
    with ring.access(timeout=1).guard as g:
        kept = g.buf[0:2]
    del kept
"""
    dev = run_python(f"import sys; sys.argv = ['x']\n{code}", env={"PYTHONDEVMODE": "1"})
    assert dev.returncode == 0, dev.stderr
    assert "StaleViewWarning" in dev.stderr
    plain = run_python(code, unset=["PYTHONDEVMODE", "CTSHM_CHECK_VIEWS"])
    assert plain.returncode == 0 and "StaleViewWarning" not in plain.stderr
