"""The hot path pays only for what happens: Python calls per message, counted.

The steady state of a ring (registered, open, one thread at a time, no fork since
registration, nothing handed back by an extension, the slot already backed) runs as
straight-line code: per message, ``put`` makes at most 2 Python calls (itself included),
``access`` at most 3, and ``release`` at most 3 including the guard's finalizer.  Counted
with ``sys.setprofile`` ``call`` events (Python frames only: C functions such as the ring
lock or a ctypes call report ``c_call``), on fast and compat rings.  Speed itself is for the
benchmarks (``benchmarks/count_calls.py``, ``python -m ctshm bench``); this counts work.
"""

from __future__ import annotations

import collections
import os
import sys
from collections import deque
from typing import Any, Callable

import pytest

import ctshm
from ctshm import ConsumerGuard, ShmTraceRing, atomics

#: Python calls per message (the call itself included).
TARGETS = {"put": 2, "access": 3, "release": 3}
ROUNDS = 8

_CTSHM_DIR = os.path.dirname(os.path.abspath(ctshm.__file__))

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython" or not atomics.PLAIN_ORDERED_ACCESS,
    reason="the straight-line path needs plain ordered word access (x86_64) and CPython's "
    "profiler events")


def count_calls(fn: Callable[[], Any], rounds: int) -> tuple[float, collections.Counter[str]]:
    """Python ``call`` events of ctshm's own code per call of ``fn``."""
    seen: collections.Counter[str] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(_CTSHM_DIR):
            seen[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        for _ in range(rounds):
            fn()
    finally:
        sys.setprofile(None)
    return sum(seen.values()) / rounds, seen


def per_message(ring: ShmTraceRing) -> dict[str, tuple[float, collections.Counter[str]]]:
    msg = bytearray(64)
    for _ in range(2 * ring.capacity):  # register both sides, back and map every slot
        ring.put(msg)
        ring.access().guard.release()  # type: ignore[union-attr]
    guards: deque[ConsumerGuard] = deque()

    def access() -> None:
        r = ring.access()
        guards.append(r.guard)  # type: ignore[union-attr]

    def release() -> None:
        g = guards.popleft()
        g.release()
        del g  # the finalizer runs here, counted

    return {"put": count_calls(lambda: ring.put(msg), ROUNDS),
            "access": count_calls(access, ROUNDS),
            "release": count_calls(release, ROUNDS)}


@pytest.mark.parametrize("fast", [False, True], ids=["compat", "fast"])
def test_steady_state_python_calls_per_message(shm_id: str, fast: bool) -> None:
    with ShmTraceRing.create(shm_id, ROUNDS, 4096, fast=fast) as ring:
        counts = per_message(ring)
        assert ring.stats()["backlog"] == 0
    over = {op: (n, dict(seen)) for op, (n, seen) in counts.items() if n > TARGETS[op]}
    assert not over, f"Python calls per message above {TARGETS}: {over}"
    # Each side made its calls (the profiler saw ctshm): the count is not vacuous.
    assert all(n >= 1 for n, _ in counts.values()), counts


def test_a_rare_event_takes_the_general_path(shm_id: str) -> None:
    """The count above is the quiet path's: an extension handing results back (a rare
    event) turns it off for the handle, and access() then does its general work."""
    with ShmTraceRing.create(shm_id, ROUNDS, 4096) as ring:
        ring.set_undelivered_source(lambda: None)
        counts = per_message(ring)
        assert counts["access"][0] > TARGETS["access"]
        assert counts["put"][0] <= TARGETS["put"]  # the producer side stays quiet
        ring.set_undelivered_source(None)
        assert per_message(ring)["access"][0] <= TARGETS["access"]


#: Python calls per batch of BATCH messages: put_many, get_many (each itself included).
BATCH = 32
#: (put_many: itself, collecting, the round and its wake-up check or token posts; get_many:
#: itself, the round, its copy loop and its wake-up check or token posts)
BATCH_TARGETS = {"put_many": 5, "get_many": 4}


@pytest.mark.parametrize("fast", [False, True], ids=["compat", "fast"])
def test_a_batch_pays_its_calls_once(shm_id: str, fast: bool) -> None:
    """put_many / get_many in the steady state: a few Python calls per batch, none per
    message (the per-message work is straight-line code in one lock section)."""
    msgs = [bytes(64)] * BATCH
    with ShmTraceRing.create(shm_id, 2 * BATCH, 4096, fast=fast) as ring:  # half: BATCH
        for _ in range(4):  # register both sides, back and map every slot
            ring.put_many(msgs)
            assert len(ring.get_many(BATCH)) == BATCH
        counts = {"put_many": count_calls(lambda: ring.put_many(msgs), 1)}
        got: list[list[bytes]] = []
        counts["get_many"] = count_calls(lambda: got.append(ring.get_many(BATCH)), 1)
        assert [len(g) for g in got] == [BATCH]
        assert ring.stats()["backlog"] == 0
    over = {op: (n, dict(seen)) for op, (n, seen) in counts.items() if n > BATCH_TARGETS[op]}
    assert not over, f"Python calls per batch of {BATCH} above {BATCH_TARGETS}: {over}"
    assert all(n >= 1 for n, _ in counts.values()), counts


#: Python calls per small object (a dict of a few fields, pickled in band).
OBJECT_TARGETS = {"put_object": 5, "get_object": 10}


@pytest.mark.parametrize("fast", [False, True], ids=["compat", "fast"])
def test_a_small_object_takes_the_short_way(shm_id: str, fast: bool) -> None:
    """put_object / get_object of a small object: one pickling, one put; one access, one
    unpickling, one release (no frame object, no guard context, no import per call)."""
    obj = {"id": 12345, "name": "sensor-7", "values": [1.5, 2.5], "ok": True, "tags": ("a",)}
    with ShmTraceRing.create(shm_id, ROUNDS, 4096, fast=fast) as ring:
        for _ in range(2 * ROUNDS):  # register both sides, back and map every slot
            ring.put_object(obj)
            assert ring.get_object() == obj
        got: list[Any] = []
        counts = {"put_object": count_calls(lambda: ring.put_object(obj), ROUNDS),
                  "get_object": count_calls(lambda: got.append(ring.get_object()), ROUNDS)}
        assert got == [obj] * ROUNDS
    over = {op: (n, dict(seen)) for op, (n, seen) in counts.items() if n > OBJECT_TARGETS[op]}
    assert not over, f"Python calls per object above {OBJECT_TARGETS}: {over}"
    assert all(n >= 1 for n, _ in counts.values()), counts
