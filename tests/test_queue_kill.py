"""ShmQueue under random SIGKILLs: 4 producers x 3 consumers (kept at that strength by
replacements), >= 10**5 messages, producers and consumers killed at random moments, exact
accounting of every message (see tests/queue_children.py for the ledger).

What must hold:
* no message is returned twice (no id in two ledgers, or twice in one);
* no message is torn (each carries its id 128 times; consumers exit 3 on a torn one);
* every message whose put() returned (seq < acked[uid]) is in a ledger, except at most the
  one a killed consumer had claimed (``claimed[cid]``: released and lost with it, or not);
* a producer's messages beyond acked[uid] are at most its one in-flight message;
* the queue ends empty: every slot EMPTY, no orphan left.
Figures (kills, recovery times: how long a dead peer's claims survived it) are printed.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from typing import Any

import pytest

from ctshm import ShmMemory, ShmQueue, queue_layout as QL

from . import queue_children as qc

FORK = multiprocessing.get_context("fork")
N_PRODUCERS = 4
N_CONSUMERS = 3
TARGET = 100_000
KILL_EVERY = (0.01, 0.06)
MAX_SECONDS = 240.0
MAX_KILLS = 100  # the ledger has room for 128 producers and 128 consumers


def _start(target: Any, args: tuple[Any, ...]) -> Any:
    p = FORK.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def _tags_of(q: ShmQueue, pid: int) -> set[int]:
    return {QL.owner_tag(i, g) for i, g, p, _ in q._peers.live() if p == pid}


def _claims_of(q: ShmQueue, tags: set[int]) -> int:
    """Slots claimed (WRITING/READING) under any of ``tags``."""
    v, w0, sw = q._v, q._w0, q._sw
    return sum(1 for i in range(q.capacity)
               if v[w0 + i * sw] & QL.OWNER_MASK in tags and v[w0 + i * sw] & 7 in (1, 3))


@pytest.mark.timeout_s(MAX_SECONDS + 120)
def test_kill_battery(shm_id: str) -> None:
    rng = random.Random(int(os.environ.get("CTSHM_BATTERY_SEED", "20")))
    q = ShmQueue.create(shm_id, capacity=64, slot_size=8 * qc.MSG_WORDS)
    lid = shm_id + "L"
    mem = ShmMemory.create_readwrite(lid, qc.LEDGER_SIZE)
    led = qc.Ledger(mem)
    producers: dict[int, Any] = {}
    consumers: dict[int, Any] = {}
    killed_p: list[int] = []
    killed_c: list[int] = []
    recoveries: list[float] = []
    next_uid = next_cid = 0
    for _ in range(N_PRODUCERS):
        producers[next_uid] = _start(qc.battery_producer, (shm_id, lid, next_uid))
        next_uid += 1
    for _ in range(N_CONSUMERS):
        consumers[next_cid] = _start(qc.battery_consumer, (shm_id, lid, next_cid))
        next_cid += 1
    t0 = time.monotonic()
    pending: list[tuple[set[int], float]] = []  # (tags, kill time) of victims holding claims
    try:
        while sum(led.acked(u) for u in range(next_uid)) < TARGET:
            assert time.monotonic() - t0 < MAX_SECONDS, "battery too slow"
            time.sleep(rng.uniform(*KILL_EVERY))
            _check_recoveries(q, pending, recoveries)
            if len(killed_p) + len(killed_c) >= MAX_KILLS:
                continue
            producer = rng.random() < 0.5
            pool = producers if producer else consumers
            key = rng.choice(sorted(pool))
            victim = pool.pop(key)
            tags = _tags_of(q, victim.pid)
            os.kill(victim.pid, signal.SIGKILL)
            victim.join(30)
            if _claims_of(q, tags):
                pending.append((tags, time.monotonic()))
            if producer:
                killed_p.append(key)
                producers[next_uid] = _start(qc.battery_producer, (shm_id, lid, next_uid))
                next_uid += 1
            else:
                killed_c.append(key)
                consumers[next_cid] = _start(qc.battery_consumer, (shm_id, lid, next_cid))
                next_cid += 1
        led.set_stop()
        for p in producers.values():
            p.join(60)
            assert p.exitcode == 0
        q.finish()
        for c in consumers.values():
            c.join(60)
            assert c.exitcode == 0, f"consumer exit {c.exitcode} (3: a torn message)"
        while pending:
            _check_recoveries(q, pending, recoveries)
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        _account(led, next_uid, next_cid, killed_c)
        assert all(s.endswith("EMPTY") for s in q.slot_states()), q.slot_states()
        st = q.stats()
        print(f"\nkill battery: {sum(led.acked(u) for u in range(next_uid))} messages acked in "
              f"{elapsed:.1f} s; killed {len(killed_p)} producers, {len(killed_c)} consumers; "
              f"skipped {st['skipped']}, redelivered {st['redelivered']}, reaped "
              f"{st['reaped_total']}; recovery of held claims: n={len(recoveries)} max="
              f"{max(recoveries, default=0):.3f}s mean="
              f"{sum(recoveries) / max(1, len(recoveries)):.3f}s; load {os.getloadavg()[0]:.1f}")
        assert len(killed_p) >= 4 and len(killed_c) >= 4
    finally:
        led.set_stop()
        for p in list(producers.values()) + list(consumers.values()):
            if p.is_alive():
                p.kill()
            p.join(10)
        q.close()
        mem.close()  # the creator unlinks


def _check_recoveries(q: ShmQueue, pending: list[tuple[set[int], float]],
                      recoveries: list[float]) -> None:
    now = time.monotonic()
    for item in list(pending):
        tags, t = item
        if not _claims_of(q, tags):
            recoveries.append(now - t)
            pending.remove(item)
        else:
            assert now - t < 30, f"claims of a dead peer ({tags}) never reaped"


def _account(led: qc.Ledger, n_uid: int, n_cid: int, killed_c: list[int]) -> None:
    seen: dict[int, int] = {}
    for cid in range(n_cid):
        for mid in led.entries(cid):
            seen[mid] = seen.get(mid, 0) + 1
    dups = [m for m, n in seen.items() if n > 1]
    assert not dups, f"{len(dups)} messages returned twice, e.g. {dups[:5]}"
    may_lose = {led.claimed(cid) for cid in killed_c} - {0}
    by_uid: dict[int, set[int]] = {}
    for m in seen:
        by_uid.setdefault(m >> 32, set()).add(m & 0xFFFFFFFF)
    missing = []
    for uid in range(n_uid):
        acked, got = led.acked(uid), by_uid.get(uid, set())
        missing += [(uid << 32) | s for s in set(range(acked)) - got
                    if (uid << 32) | s not in may_lose]
        extra = sorted(s for s in got if s >= acked)
        assert extra in ([], [acked]), f"producer {uid}: delivered beyond its puts: {extra}"
    assert not missing, f"{len(missing)} committed messages lost, e.g. {missing[:5]}"
