"""Lifecycle defects found by an outside review: a guard of a closed handle, a forked child
ending the parent's stream, false RuntimeWarnings, orphaned unpickling, an owner that closed
while a producer waits."""

from __future__ import annotations

import threading

import pytest

from ctshm import ShmTraceRing


def test_closed_handle_keeps_producer_turn_until_its_guard_ends(shm_id: str) -> None:
    # Another handle of the same process must not get the slot while the closed handle's
    # guard can still write it: the stale write would overwrite the published message.
    with ShmTraceRing.create(shm_id, 2, 4096) as r:
        p1, p2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            g = p1.acquire(5, size=8)
            stale = g.buf  # taken before the close
            errors: list[BaseException] = []

            def produce() -> None:
                try:
                    p2.put(b"good....", timeout=30)
                except BaseException as e:  # pragma: no cover - reported below
                    errors.append(e)

            t = threading.Thread(target=produce)
            t.start()
            p1.close()
            t.join(0.5)  # not an assertion: lets a put that wrongly got the slot finish
            with pytest.raises(ValueError, match=r"was closed: buf of .* nothing was published"):
                _ = g.buf
            stale[:8] = b"badbadba"  # the slot is still this guard's: harms no message
            g.abort()
            t.join(30)
            assert not t.is_alive() and not errors
            assert r.get(5) == b"good...."
        finally:
            p1.close()
            p2.close()


def test_commit_of_closed_handles_guard_is_refused_and_frees_the_turn(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as r:
        p1, p2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            g = p1.acquire(5, size=3)
            g.buf[:3] = b"bad"
            p1.close()
            with pytest.raises(ValueError, match=rf"{shm_id}_t' was closed: commit.*nothing "
                               "was published"):
                g.commit()
            g.abort()  # idempotent now
            # The turn is free and the empty token came back through p2 (timeout 0: no
            # self-healing wait slice could stand in for it).
            p2.put(b"ok", timeout=0)
            assert r.get(5) == b"ok"
            assert len(r) == 0
        finally:
            p1.close()
            p2.close()


def test_abort_of_closed_handles_guard_gives_the_token_back(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as r:
        p1, p2 = ShmTraceRing.open(shm_id), ShmTraceRing.open(shm_id)
        try:
            g = p1.acquire(5)
            p1.close()
            g.abort()
            p2.put(b"ok", timeout=0)
            assert r.get(5) == b"ok"
        finally:
            p1.close()
            p2.close()
