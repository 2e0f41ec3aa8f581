"""The adaptive spin: its budget, and yielding the CPU while spinning does not pay."""

from __future__ import annotations

import os

import pytest

from ctshm import ShmTraceRing, Timeout
from ctshm._waiting import SPIN_CEILING, SPIN_FLOOR, Spin as _Spin


def test_budget_follows_the_waits_and_yield_when_spinning_does_not_pay() -> None:
    s = _Spin(None)
    assert not s.yielding
    s.record(1e-6)  # ended while spinning: keep polling without yielding
    assert s.budget == SPIN_FLOOR and not s.yielding
    s.record(0.5)  # outlasted the spin: it did not pay
    assert s.yielding and s.budget == SPIN_FLOOR
    s.record(SPIN_CEILING / 4)
    assert s.budget == SPIN_CEILING / 2 and s.yielding  # budget was the floor: still slept
    s.record(SPIN_CEILING / 8)
    assert not s.yielding


def test_fixed_spin_still_tracks_yielding() -> None:
    s = _Spin(0.001)
    s.record(0.01)
    assert s.yielding and s.budget == 0.001 and not s.adaptive
    with pytest.raises(ValueError, match="spin"):
        _Spin(-1)


def test_spin_loop_yields_while_not_paying(shm_id: str, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    calls = []
    real = os.sched_yield
    monkeypatch.setattr(os, "sched_yield", lambda: calls.append(1) or real())
    with ShmTraceRing.create(shm_id, 1, 4096, spin=0.02) as ring:
        assert isinstance(ring.access(0.05), Timeout)  # spun 20 ms for nothing: not paying
        assert calls == []  # the first spin polls without yielding
        assert isinstance(ring.access(0.05), Timeout)
        assert calls, "the second spin should yield between polls"


def test_a_fixed_spin_longer_than_the_timeout_stops_at_the_timeout(shm_id: str) -> None:
    """spin=30 with access(timeout=0.05): the call returns Timeout after about 0.05 s, not
    after the 30 s spin (bounded by the subprocess-free join below, not timed)."""
    import threading

    from ctshm import ShmTraceRing, Timeout

    with ShmTraceRing.create(shm_id, 1, 4096, spin=30) as ring:
        out: list[object] = []
        t = threading.Thread(target=lambda: out.append(ring.access(0.05)))
        t.start()
        t.join(15)  # a spin past the timeout would still be running here
        assert not t.is_alive()
        assert isinstance(out[0], Timeout)
