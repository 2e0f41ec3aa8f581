"""Backlog (``len(ring)``) and live statistics (``ring.stats()``), issue 13 §3."""

from __future__ import annotations

from ctshm import Data, ShmTraceRing, Timeout

from .helpers import SPAWN, join_all


def _produce(id: str, sizes: list[int]) -> None:
    with ShmTraceRing.open(id) as ring:
        for n in sizes:
            ring.put(b"x" * n, timeout=30)


def test_len_is_the_backlog_and_bool_stays_true(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        assert len(ring) == 0 and bool(ring)
        for i in range(3):
            ring.put(bytes([i]))
        assert len(ring) == 3
        d = ring.access(1)
        assert isinstance(d, Data)
        assert len(ring) == 3  # handed out but not released: still in the ring
        d.guard.release()
        assert len(ring) == 2
        ring.get(1)
        ring.get(1)
        assert len(ring) == 0


def test_stats_count_both_sides_across_processes(shm_id: str) -> None:
    sizes = [10, 200, 3000, 4096, 1]
    # compat: one wake-up per message (fast mode posts only to a sleeper: test_fast.py)
    with ShmTraceRing.create(shm_id, 2, 4096, fast=False) as ring:
        p = SPAWN.Process(target=_produce, args=(shm_id, sizes), daemon=True)
        p.start()
        got = [ring.get(30) for _ in sizes]
        assert join_all([p]) == [0]
        assert [len(m) for m in got] == sizes
        st = ring.stats()
        assert st["producer"]["messages"] == 5 and st["producer"]["bytes"] == sum(sizes)
        assert st["consumer"]["messages"] == 5 and st["consumer"]["bytes"] == sum(sizes)
        assert st["consumer"]["wakeups"] == 5  # one empty post per released slot
        assert st["backlog"] == 0


def test_stats_count_blocking_waits(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        assert ring.stats()["consumer"]["waits"] == 0
        assert isinstance(ring.access(0.3), Timeout)  # sleeps at least one slice
        assert ring.stats()["consumer"]["waits"] >= 1
        assert ring.stats()["producer"]["waits"] == 0
