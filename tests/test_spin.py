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


def test_a_spin_that_got_less_than_a_third_of_a_core_halves_its_budget_and_yields() -> None:
    """More runnable threads than cores (pytest-xdist, --oversubscribe): a spin that ran for
    less than a third of its wall time was descheduled, and spinning keeps the CPU from the
    peer.  (A noisy machine's steal time takes less: no change then.)"""
    s = _Spin(None)
    s.record(SPIN_CEILING / 4, SPIN_CEILING / 4, SPIN_CEILING / 4)  # a whole core: usual
    s.record(SPIN_CEILING / 4, SPIN_CEILING / 4, SPIN_CEILING / 4)
    assert s.budget == SPIN_CEILING / 2 and not s.yielding
    s.record(SPIN_CEILING / 4, SPIN_CEILING / 10, SPIN_CEILING / 4)  # 2/5 of a core: usual
    assert s.budget == SPIN_CEILING / 2 and not s.yielding
    s.record(SPIN_CEILING / 4, SPIN_CEILING / 20, SPIN_CEILING / 4)  # a fifth: crowded
    assert s.budget == SPIN_CEILING / 4 and s.yielding
    s.record(SPIN_CEILING / 8)  # a short spin reports no CPU time: the usual rule again
    assert s.budget == SPIN_CEILING / 4
    assert all([s.crowded(1.0, 0.1) for _ in range(5)])
    assert s.budget == SPIN_FLOOR  # halved down to the floor, never below
    assert not s.crowded(0.001, 0.0009)
    fixed = _Spin(0.001)
    assert fixed.crowded(0.001, 0.0) and fixed.budget == 0.001 and fixed.yielding


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
