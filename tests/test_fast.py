"""Fast mode (issue 12 §1): no foreign call per message between ctshm peers; the semaphores
carry wake-ups only, posted when the other side announced that it sleeps.

The no-lost-wake-up tests make the liveness slice 30 s in every process: a lost wake-up then
stalls a side for 30 s, and the test's join bound (well below the sum of such stalls) fails
it, instead of the 0.2 s slice quietly hiding it.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import pytest

import ctshm._waiting as ring_mod
from ctshm import Crashed, Data, Finished, ShmTraceRing, Timeout, atomics, layout as L, libc

from .helpers import SPAWN, drain, join_all, run_children, start_thread

SLOT = 4096
LONG_SLICE = 30.0


def _no_slices() -> None:
    ring_mod.LIVENESS_SLICE = LONG_SLICE  # type: ignore[misc]


@pytest.fixture
def long_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring_mod, "LIVENESS_SLICE", LONG_SLICE)


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count every libc foreign call and atomics operation a ring opened afterwards makes."""
    counts: dict[str, int] = {}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            counts[name] = counts.get(name, 0) + 1
            return fn(*args)
        return counted

    for name in libc.PROTOTYPES:
        f = getattr(libc.fn, name, None)
        if f is not None:
            monkeypatch.setattr(libc.fn, name, wrap("libc." + name, f))
    b = atomics.get_backend()
    for name in ("load", "store", "compare_exchange", "fence", "fetch_add"):
        f = getattr(b, name, None)
        if f is not None:
            monkeypatch.setattr(b, name, wrap("atomics." + name, f))
    return counts


def _sem_values(ring: ShmTraceRing) -> tuple[int, int]:
    return ring._filled.value(), ring._empty.value()


@pytest.mark.parametrize("fast", [False, True], ids=["compat", "fast"])
def test_steady_state_foreign_calls(shm_id: str, monkeypatch: pytest.MonkeyPatch,
                                    fast: bool) -> None:
    counts = _counting(monkeypatch)
    with ShmTraceRing.create(shm_id, 16, SLOT, fast=fast) as ring:
        assert ring.fast is fast
        for _ in range(2):  # the first round backs each slot (posix_fallocate) once
            counts.clear()
            for i in range(16):
                ring.put(i.to_bytes(8, "little"))
            for i in range(16):
                d = ring.access(0)
                assert isinstance(d, Data) and int.from_bytes(d.guard.buf, "little") == i
                d.guard.release()
        libc_calls = {k: v for k, v in counts.items() if k.startswith("libc.")}
        atomic_ops = {k: v for k, v in counts.items() if k.startswith("atomics.")}
        # The seed's protocol: sem_trywait + sem_post on each side; fast mode: none.
        assert sum(libc_calls.values()) == (0 if fast else 4 * 16), libc_calls
        if atomics.PLAIN_ORDERED_ACCESS:  # x86_64: header words are plain memoryview access
            assert atomic_ops == {}, atomic_ops  # (the consumer's claim needs no CAS)
        else:  # elsewhere each header load/store is an atomics call, and the publish fences
            assert set(atomic_ops) <= {"atomics.load", "atomics.store", "atomics.fence"}, \
                atomic_ops


def _produce(id: str, n: int, spin: float, finish: bool) -> None:
    _no_slices()
    with ShmTraceRing.open(id, spin=spin) as ring:
        assert ring.fast
        for i in range(n):
            ring.put(i.to_bytes(8, "little") * 4, timeout=20)
        if finish:
            ring.mark_finished()


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("spin", [0.0, None], ids=["sleep-always", "adaptive"])
def test_stream_across_processes_no_lost_wakeup_no_stray_token(
        shm_id: str, long_slices: None, spin: float) -> None:
    n = 3000
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True, spin=spin) as ring:
        p = SPAWN.Process(target=_produce, args=(shm_id, n, 0.0, True), daemon=True)
        p.start()
        got = []
        while True:
            r = ring.access(45)
            if not isinstance(r, Data):
                break
            got.append(int.from_bytes(r.guard.buf[:8], "little"))
            r.guard.release()
        assert join_all([p]) == [0]
        assert isinstance(r, Finished), r
        assert got == list(range(n))
        h = ring.header()
        st = ring.stats()
        # The sleep path ran (else this test proves nothing about wake-ups) ...
        assert st["consumer"]["waits"] + st["producer"]["waits"] > 0, st
        # ... and every wake-up went to a sleeper: no stray token, no announced sleeper left.
        assert (h["c_sleep"], h["p_sleep"]) == (0, 0)
        assert _sem_values(ring) == (0, 0)


def _ping(a: str, b: str, n: int) -> None:
    _no_slices()
    with ShmTraceRing.open(a, spin=0) as out, ShmTraceRing.open(b, spin=0) as back:
        for i in range(n):
            out.put(i.to_bytes(8, "little"), timeout=20)
            assert int.from_bytes(back.get(20), "little") == i


@pytest.mark.timeout_s(90)
def test_pingpong_sleeping_every_time_never_stalls(shm_id: str, long_slices: None) -> None:
    n = 1000
    a, b = shm_id + "a", shm_id + "b"
    with ShmTraceRing.create(a, 1, SLOT, fast=True, spin=0) as inbox, \
            ShmTraceRing.create(b, 1, SLOT, fast=True, spin=0) as outbox:
        p = SPAWN.Process(target=_ping, args=(a, b, n), daemon=True)
        p.start()
        for _ in range(n):
            outbox.put(inbox.get(20), timeout=20)
        assert join_all([p]) == [0]
        assert _sem_values(inbox)[0] == 0 and _sem_values(outbox)[1] == 0


@pytest.mark.timeout_s(90)
def test_consumer_threads_each_message_once_and_every_thread_sees_the_end(
        shm_id: str, long_slices: None) -> None:
    n, threads = 2000, 4
    with ShmTraceRing.create(shm_id, 4, SLOT, fast=True, spin=0) as ring:
        seen: list[list[int]] = [[] for _ in range(threads)]
        ends: list[Any] = [None] * threads

        def consume(k: int) -> None:
            while True:
                r = ring.access(45)
                if not isinstance(r, Data):
                    ends[k] = r
                    return
                seen[k].append(int.from_bytes(r.guard.buf[:8], "little"))
                r.guard.release()

        ts = [threading.Thread(target=consume, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        p = SPAWN.Process(target=_produce, args=(shm_id, n, 0.0, True), daemon=True)
        p.start()
        assert join_all([p]) == [0]
        for t in ts:
            t.join(60)
        assert not any(t.is_alive() for t in ts)
        assert all(isinstance(e, Finished) for e in ends), ends
        assert sorted(x for s in seen for x in s) == list(range(n))
        assert ring.header()["c_sleep"] == 0


def _take_two_and_die(id: str) -> None:
    ring = ShmTraceRing.open(id)
    g1, g2 = ring.access(20), ring.access(20)
    assert isinstance(g1, Data) and isinstance(g2, Data)
    # Announce a sleep, then die in it: the header keeps c_sleep = 1.
    threading.Thread(target=ring.access, args=(30,), daemon=True).start()
    while ring.header()["c_sleep"] == 0:
        os.sched_yield()
    os._exit(0)


def test_consumer_restart_redelivers_and_forgets_dead_sleepers(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, SLOT, fast=True) as ring:
        ring.put(b"one")
        ring.put(b"two")
        assert run_children(_take_two_and_die, [(shm_id,)]) == [0]
        h = ring.header()
        assert (h["reserved_idx"], h["read_idx"], h["c_sleep"]) == (2, 0, 1)
        assert ring.get(5) == b"one" and ring.get(5) == b"two"  # delivered again
        assert ring.header()["c_sleep"] == 0
        ring.put(b"three")
        assert ring.get(5) == b"three"


def _put_one_and_die(id: str) -> None:
    with ShmTraceRing.open(id) as ring:
        ring.put(b"last words")
    os._exit(0)


def test_dead_producer_is_reported_after_its_messages(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True) as ring:
        p = SPAWN.Process(target=_put_one_and_die, args=(shm_id,), daemon=True)
        p.start()
        assert ring.get(20) == b"last words"
        r = ring.access(20)
        assert join_all([p]) == [0]
        assert isinstance(r, Crashed) and r.details.signal == 0 and r.pid == p.pid, r


def test_notify_crash_wakes_a_sleeping_consumer(shm_id: str, long_slices: None) -> None:
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True, spin=0) as ring:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(ring.access(45)))
        t.start()
        while ring.header()["c_sleep"] == 0:
            os.sched_yield()
        with ShmTraceRing.open(shm_id) as producer:
            producer.notify_crash(11, 0x10, 1, "boom")
        t.join(20)  # far below the 30 s slice: only the wake-up can end the sleep this soon
        assert not t.is_alive()
        assert isinstance(out[0], Crashed) and out[0].details.signal == 11
        assert ring.header()["c_sleep"] == 0


def test_close_while_a_thread_sleeps_withdraws_it(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True, spin=0) as owner:
        ring = ShmTraceRing.open(shm_id, spin=0)
        t, errors = start_thread(lambda: ring.access(None))
        while owner.header()["c_sleep"] == 0:
            os.sched_yield()
        ring.close()
        t.join(20)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
        assert "closed" in str(errors[0])
        assert owner.header()["c_sleep"] == 0
        assert isinstance(owner.access(0), Timeout)


def test_producer_sleeps_on_a_full_ring_and_is_woken(shm_id: str, long_slices: None) -> None:
    with ShmTraceRing.create(shm_id, 1, SLOT, fast=True, spin=0) as ring:
        ring.put(b"a")
        done = threading.Event()

        def second() -> None:
            ring.put(b"b", timeout=45)
            done.set()

        t = threading.Thread(target=second)
        t.start()
        while ring.header()["p_sleep"] == 0:
            os.sched_yield()
        assert ring.get(1) == b"a"  # the release wakes the sleeping producer
        t.join(20)
        assert done.is_set()
        assert ring.get(1) == b"b"
        assert ring.header()["p_sleep"] == 0 and _sem_values(ring) == (0, 0)


def test_create_fast_must_be_a_bool(shm_id: str) -> None:
    with pytest.raises(TypeError, match=r"create\('.*'\): fast must be True .* not 1"):
        ShmTraceRing.create(shm_id, 1, SLOT, fast=1)  # type: ignore[arg-type]


def test_mode_is_the_creators_and_read_by_openers(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, SLOT, fast=True) as ring:
        assert ring.header()["mode"] == L.MODE_FAST
        with ShmTraceRing.open(shm_id) as other:
            assert other.fast
    with ShmTraceRing.create(shm_id, 1, SLOT) as ring:
        assert not ring.fast and ring.header()["mode"] == L.MODE_COMPAT


def test_withdraw_after_the_waker_took_the_unit_consumes_its_token(shm_id: str) -> None:
    """The interleaving "announce; the producer publishes and wakes; re-check finds the
    message": the sleeper's withdraw must take the token posted for it (else a stray token
    stays in ``filled`` for good)."""
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True) as ring:
        assert isinstance(ring.access(0), Timeout)  # registers the consumer
        ring._waiter.add_sleeper(L.C_SLEEP, ring._hdr.a_csleep)  # announced, about to re-check
        ring.put(b"x")  # sees the sleeper: takes its unit and posts
        assert ring.header()["c_sleep"] == 0 and _sem_values(ring) == (1, 0)
        assert ring._waiter.withdraw(ring._filled, L.C_SLEEP, ring._hdr.a_csleep) is True
        assert _sem_values(ring) == (0, 0)
        assert ring.get(0) == b"x"


def test_signal_fences_when_the_lock_release_did_not_unlock(
        shm_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store->load order of a publish and the sleep-counter load comes from the lock's
    release on x86_64; a re-entrant publish (its release does not unlock) fences itself."""
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True) as ring:
        fences: list[int] = []
        fence = ring._hdr.fence
        monkeypatch.setattr(ring._hdr, "fence", lambda: fences.append(1) or fence())
        ring._waiter.signal(ring._hq, L.C_SLEEP, L.PRODUCER_STATS)
        assert fences == ([] if atomics.PLAIN_ORDERED_ACCESS else [1])
        with ring._lock:
            ring._waiter.signal(ring._hq, L.C_SLEEP, L.PRODUCER_STATS)
        assert fences == ([1] if atomics.PLAIN_ORDERED_ACCESS else [1, 1])


def test_withdraw_outwaits_a_slow_live_waker(shm_id: str) -> None:
    """Finding F-1 of the model: a waker that took the sleeper's unit may post its token
    late (descheduled between its compare-exchange and its post).  While the waker lives,
    withdraw waits for that token instead of giving up after one slice and leaving it
    stray."""
    from ctshm._waiting import OWED_TOKEN_WAIT

    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True) as ring:
        ring.put(b"x")
        assert ring.get(0) == b"x"  # this (live) process is producer and consumer
        ring._waiter.add_sleeper(L.C_SLEEP, ring._hdr.a_csleep)
        assert ring._hdr.cas(ring._hdr.a_csleep, 1, 0) == 1  # a waker takes the unit ...
        late = threading.Timer(3 * OWED_TOKEN_WAIT, ring._filled.post)  # ... posts late
        late.start()
        assert ring._waiter.withdraw(ring._filled, L.C_SLEEP, ring._hdr.a_csleep) is True
        late.join()
        assert _sem_values(ring) == (0, 0)


def test_withdraw_gives_up_when_the_waker_is_dead(shm_id: str) -> None:
    import subprocess

    from ctshm import _peers

    dead = subprocess.Popen(["true"])
    dead.wait()
    with ShmTraceRing.create(shm_id, 2, SLOT, fast=True) as ring:
        assert isinstance(ring.access(0), Timeout)
        _peers.set_pair(ring._store, L.PRODUCER_PID, dead.pid, 1)  # a dead producer ...
        ring._waiter.add_sleeper(L.C_SLEEP, ring._hdr.a_csleep)
        assert ring._hdr.cas(ring._hdr.a_csleep, 1, 0) == 1  # ... took the unit and never posted
        assert ring._waiter.withdraw(ring._filled, L.C_SLEEP, ring._hdr.a_csleep) is True
        assert _sem_values(ring) == (0, 0)


def test_withdraw_gives_up_when_the_waker_of_its_announce_died_though_a_successor_lives(
        shm_id: str) -> None:
    """Review finding: the producer announced while consumer X was registered; X took the
    unit and was killed before its post; consumer Y registered since and lives.  The owed
    token can never come: withdraw must give up once X is gone, not wait while Y lives."""
    import subprocess

    from ctshm import _peers

    x = subprocess.Popen(["sleep", "30"])
    try:
        with ShmTraceRing.create(shm_id, 1, SLOT, fast=True) as ring:
            _peers.set_pair(ring._store, L.CONSUMER_PID, x.pid, 0)  # X, alive
            waker = ring._waiter.waker_id(L.P_SLEEP)
            ring._waiter.add_sleeper(L.P_SLEEP, ring._hdr.a_psleep)
            assert ring._hdr.cas(ring._hdr.a_psleep, 1, 0) == 1  # X takes the unit ...
            x.kill()  # ... and dies before its post
            x.wait()
            me = os.getpid()
            _peers.set_pair(ring._store, L.CONSUMER_PID, me, 0)  # Y (this process) lives
            out: list[bool] = []
            t = threading.Thread(target=lambda: out.append(ring._waiter.withdraw(
                ring._empty, L.P_SLEEP, ring._hdr.a_psleep, waker)), daemon=True)
            t.start()
            t.join(20)  # the bug: waits for as long as Y lives
            assert not t.is_alive() and out == [True]
            assert _sem_values(ring) == (0, 0)
    finally:
        x.kill()
        x.wait()


def test_producer_timeout_on_a_fast_ring_without_consumer_says_why(shm_id: str) -> None:
    """A Rust consumer never registers and cannot use a fast ring: the producer's timeout
    says so (review finding: it blamed a consumer "not releasing slots")."""
    with ShmTraceRing.create(shm_id, 1, SLOT, fast=True) as ring:
        ring.put(b"a")
        with pytest.raises(TimeoutError, match=r"fast ring and no ctshm consumer .* Rust"):
            ring.put(b"b", timeout=0.05)
        assert drain(ring) == 1
    with ShmTraceRing.create(shm_id, 1, SLOT) as ring:
        ring.put(b"a")
        with pytest.raises(TimeoutError) as e:
            ring.put(b"b", timeout=0.05)
        assert "fast ring" not in str(e.value)
        assert drain(ring) == 1
