"""ShmTraceRing: protocol, API, seed-bug fixes, threads and real processes."""

from __future__ import annotations

import gc
import os
import pickle
import random
import signal
import struct
import threading
import time

import pytest

import ctshm
from ctshm import (
    ConsumerGone,
    CrashDetails,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    RingFinished,
    ShmTraceRing,
    Timeout,
    atomics,
)
from ctshm.layout import HEADER_SIZE, HUGE_PAGE_SIZE

from . import ring_children as rc
from .helpers import SPAWN, drain, join_all, sem_exists, shm_exists

MiB = 1 << 20

# Every protocol test runs under each configuration the library can be in on this machine:
# the default (plain x86 loads/stores + first backend + best wait), the polling wait (the
# macOS path), and each atomics backend with plain access disabled.
CONFIGS = {
    "default": {},
    "polling": {"CTSHM_WAIT": "polling"},
    "libatomic": {"CTSHM_ATOMICS": "libatomic", "CTSHM_PLAIN_ACCESS": "0"},
    "machine-code": {"CTSHM_ATOMICS": "machine-code", "CTSHM_PLAIN_ACCESS": "0"},
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    env = CONFIGS[request.param]
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # inherited by spawned children too
    if env.get("CTSHM_PLAIN_ACCESS") == "0":
        monkeypatch.setattr(atomics, "PLAIN_ORDERED_ACCESS", False)
    return str(request.param)


def names(shm_id: str) -> list[str]:
    return [f"/{shm_id}_t", f"/{shm_id}_t_filled", f"/{shm_id}_t_empty"]


def exists_all(shm_id: str) -> list[bool]:
    n = names(shm_id)
    return [shm_exists(n[0]), sem_exists(n[1]), sem_exists(n[2])]


# ---------------------------------------------------------------------------------------------
# Basics
# ---------------------------------------------------------------------------------------------


def test_names_layout_and_owner_cleanup(shm_id: str, config: str) -> None:
    ring = ShmTraceRing.create(shm_id, 3, 4096)
    assert exists_all(shm_id) == [True, True, True]
    assert os.stat(f"/dev/shm/{shm_id}_t").st_size == HEADER_SIZE + 3 * HUGE_PAGE_SIZE
    assert ring.slot_size == HUGE_PAGE_SIZE and ring.capacity == 3
    opener = ShmTraceRing.open(shm_id, 3, 4096)
    opener.close()
    assert exists_all(shm_id) == [True, True, True], "an opener must never unlink"
    ring.close()
    ring.close()  # idempotent
    assert exists_all(shm_id) == [False, False, False]
    assert "closed" in repr(ring)


def test_leading_slash_not_doubled(shm_id: str) -> None:
    with ShmTraceRing.create("/" + shm_id, 1, 1) as ring:
        assert ring.name == f"/{shm_id}_t"
        assert exists_all(shm_id) == [True, True, True]


@pytest.mark.parametrize("length", [0, 5, 8, 9, 4096, MiB, HUGE_PAGE_SIZE])
def test_exact_lengths(shm_id: str, length: int) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        data = bytes(random.Random(length).getrandbits(8) for _ in range(min(length, 5000)))
        data = (data * (length // max(1, len(data)) + 1))[:length]
        ring.put(data)
        r = ring.access(5)
        assert isinstance(r, Data)
        with r.guard as g:
            assert g.buf.readonly
            assert len(g.buf) == length
            assert g.buf == data


def test_commit_none_publishes_whole_slot(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 10) as ring:
        with ring.acquire() as g:
            g.buf[:3] = b"abc"
        r = ring.access(5)
        assert isinstance(r, Data)
        assert len(r.guard.buf) == HUGE_PAGE_SIZE and r.guard.buf[:3] == b"abc"
        r.guard.release()


def test_consumer_view_is_read_only(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 10) as ring:
        ring.put(b"hello")
        r = ring.access(5)
        assert isinstance(r, Data)
        with pytest.raises(TypeError):
            r.guard.buf[0] = 1
        r.guard.release()
        with pytest.raises(ValueError, match="released"):
            r.guard.buf  # noqa: B018


def test_abort_on_exception_never_publishes(shm_id: str, config: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with pytest.raises(KeyError), ring.acquire() as g:
            g.buf[:4] = b"half"
            raise KeyError("producer failed mid-write")
        assert isinstance(ring.access(0.05), Timeout)
        # the slot token came back: the full capacity can still be used
        for i in range(2):
            ring.put(bytes([i]))
        assert [ring.get(1) for _ in range(2)] == [b"\x00", b"\x01"]
        g2 = ring.acquire()
        g2.abort()
        g2.abort()  # idempotent
        with pytest.raises(ValueError):
            g2.commit()
        assert isinstance(ring.access(0.05), Timeout)


def test_dropped_producer_guard_aborts(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        g = ring.acquire()
        g.buf[:1] = b"x"
        del g
        gc.collect()  # PyPy frees at the next collection; CPython already did (refcount)
        assert isinstance(ring.access(0.05), Timeout)
        ring.put(b"ok")  # capacity 1: only possible if the dropped slot came back
        assert ring.get(1) == b"ok"


def test_second_producer_guard_refused(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 3, 4096) as ring:
        g = ring.acquire()
        with pytest.raises(RuntimeError, match="outstanding"):
            ring.acquire()
        g.commit(1)
        with pytest.raises(ValueError, match="already committed"):
            g.commit(1)
        with pytest.raises(ValueError):
            g.buf  # noqa: B018
        ring.acquire().commit(2)
        assert [len(ring.get(1)) for _ in range(2)] == [1, 2]


def test_commit_bounds(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        g = ring.acquire()
        with pytest.raises(ValueError, match="slot holds"):
            g.commit(HUGE_PAGE_SIZE + 1)
        with pytest.raises(ValueError):
            g.commit(-1)
        with pytest.raises(TypeError):
            g.commit(1.5)  # type: ignore[arg-type]
        g.commit(0)
        with pytest.raises(ValueError, match="do not fit"):
            ring.put(b"x" * (HUGE_PAGE_SIZE + 1))
        assert drain(ring) == 1  # the empty message committed above


def test_timeouts(shm_id: str, config: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        t0 = time.monotonic()
        assert isinstance(ring.access(0.2), Timeout)
        assert time.monotonic() - t0 >= 0.19
        assert isinstance(ring.access(0), Timeout)
        ring.put(b"a")
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no free slot"):
            ring.acquire(timeout=0.2)
        assert time.monotonic() - t0 >= 0.19
        with pytest.raises(ValueError):
            ring.access(-1)
        assert drain(ring) == 1


def test_finished_after_all_data(shm_id: str, config: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        for i in range(4):
            ring.put(struct.pack("<Q", i))
        ring.mark_finished()
        with pytest.raises(RuntimeError, match="already finished"):
            ring.mark_finished()
        with pytest.raises(RuntimeError, match="finished"):
            ring.acquire()
        got = [struct.unpack("<Q", ring.get(1))[0] for _ in range(4)]
        assert got == [0, 1, 2, 3]
        for _ in range(3):  # every later access (any thread) sees Finished again
            assert isinstance(ring.access(1), Finished)
        with pytest.raises(RingFinished):
            ring.get(1)


def test_crash_details_exact_after_data(shm_id: str, config: str) -> None:
    with ShmTraceRing.create(shm_id, 3, 4096) as ring:
        ring.put(b"one")
        ring.put(b"two")
        ring.notify_crash(7, 2**64 - 1, 3)
        assert ring.get(1) == b"one" and ring.get(1) == b"two"
        r = ring.access(1)
        assert isinstance(r, Crashed)
        assert r.details == CrashDetails(7, 2**64 - 1, 3) and r.pid is None
        assert isinstance(ring.access(1), Crashed)
        with pytest.raises(ProducerCrashed) as ei:
            ring.get(1)
        assert ei.value.details.signal == 7


def test_crash_while_guard_outstanding_is_not_published(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        g = ring.acquire()
        g.buf[:4] = b"half"
        ring.notify_crash(11, 0, 2)
        with pytest.raises(RuntimeError, match="not published"):
            g.commit(4)
        r = ring.access(1)
        assert isinstance(r, Crashed) and r.details == CrashDetails(11, 0, 2)


def test_match_statement_works() -> None:
    src = (
        "def kind(r):\n"
        "    match r:\n"
        "        case Data(guard=g): return 'data'\n"
        "        case Finished(): return 'finished'\n"
        "        case Crashed(details=CrashDetails(signal=s)): return f'crashed {s}'\n"
        "        case Timeout(): return 'timeout'\n"
    )
    import sys
    if sys.version_info < (3, 10):
        pytest.skip("match needs Python 3.10")
    ns: dict[str, object] = dict(Data=Data, Finished=Finished, Crashed=Crashed, Timeout=Timeout,
                                 CrashDetails=CrashDetails)
    exec(src, ns)
    kind = ns["kind"]
    assert kind(Finished()) == "finished"  # type: ignore[operator]
    assert kind(Crashed(CrashDetails(9, 0, 0))) == "crashed 9"  # type: ignore[operator]
    assert kind(Timeout()) == "timeout"  # type: ignore[operator]


def test_iteration_and_helpers(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 8, 4096) as ring:
        for i in range(5):
            ring.put(bytes([i]) * i)
        ring.mark_finished()
        assert list(ring) == [bytes([i]) * i for i in range(5)]
    with ShmTraceRing.create(shm_id, 8, 4096) as ring:
        ring.put(b"z")
        ring.notify_crash(6, 1, 0)
        it = ring.chunks(copy=False)
        first = next(it)
        assert isinstance(first, memoryview) and first == b"z"
        with pytest.raises(ProducerCrashed):
            next(it)


def test_use_after_close(shm_id: str) -> None:
    ring = ShmTraceRing.create(shm_id, 2, 4096)
    ring.put(b"abc")
    r = ring.access(1)
    assert isinstance(r, Data)
    ring.close()
    assert r.guard.buf == b"abc"  # the view stays valid: mapping alive while views exist
    r.guard.release()  # no-op after close
    for call in (lambda: ring.acquire(), lambda: ring.access(0), lambda: ring.put(b"x"),
                 lambda: ring.mark_finished(), lambda: ring.header()):
        with pytest.raises(ValueError, match="closed"):
            call()
    ring.notify_crash(1, 2, 3)  # signal-handler safe: silently nothing after close


# ---------------------------------------------------------------------------------------------
# Out-of-order release, threads
# ---------------------------------------------------------------------------------------------


def test_out_of_order_release_advances_read_idx_in_order(shm_id: str, config: str) -> None:
    cap = 6
    with ShmTraceRing.create(shm_id, cap, 4096) as ring:
        for round_ in range(3):
            for i in range(cap):
                ring.put(struct.pack("<Q", round_ * cap + i))
            guards = []
            for _ in range(cap):
                r = ring.access(1)
                assert isinstance(r, Data)
                guards.append(r.guard)
            base = round_ * cap
            assert [g.index for g in guards] == list(range(base, base + cap))
            order = list(range(cap))
            random.Random(round_).shuffle(order)
            released: set[int] = set()
            for k in order:
                guards[k].release()
                released.add(k)
                prefix = 0
                while prefix in released:
                    prefix += 1
                assert ring.header()["read_idx"] == base + prefix
            assert ring.header()["read_idx"] == base + cap


def test_guards_released_from_threads(shm_id: str, config: str) -> None:
    cap, total = 4, 400
    with ShmTraceRing.create(shm_id, cap, 4096) as ring:
        seen: list[int] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def consumer() -> None:
            try:
                while True:
                    r = ring.access(10)
                    if isinstance(r, Finished):
                        return
                    assert isinstance(r, Data), r
                    v = struct.unpack("<Q", r.guard.buf[:8])[0]
                    time.sleep(random.random() * 0.001)
                    with lock:
                        seen.append(v)
                    r.guard.release()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=consumer) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(total):
            ring.put(struct.pack("<Q", i), timeout=10)
        ring.mark_finished()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        assert not errors, errors
        assert sorted(seen) == list(range(total)), "every message exactly once"
        h = ring.header()
        assert h["read_idx"] == h["write_idx"] == h["reserved_idx"] == total


# ---------------------------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------------------------


def test_opener_waits_for_creator_and_never_creates(shm_id: str) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        ShmTraceRing.open(shm_id, timeout=0.2)
    assert ei.value.filename == f"/{shm_id}_t"
    assert exists_all(shm_id) == [False, False, False], "the opener must not create anything"

    result: list[object] = []

    def opener() -> None:
        try:
            result.append(ShmTraceRing.open(shm_id, 2, 4096, timeout=10))
        except BaseException as e:  # pragma: no cover
            result.append(e)

    t = threading.Thread(target=opener)
    t.start()
    time.sleep(0.3)
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        t.join(10)
        opened = result[0]
        assert isinstance(opened, ShmTraceRing), opened
        ring.put(b"hello")
        assert opened.get(2) == b"hello"
        opened.close()


def test_open_validates_sizes(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096):
        with pytest.raises(ValueError, match="capacity 2"):
            ShmTraceRing.open(shm_id, 3, timeout=1)
        with pytest.raises(ValueError, match="slot_size"):
            ShmTraceRing.open(shm_id, 2, 3 * MiB, timeout=1)
        ShmTraceRing.open(shm_id, 2, HUGE_PAGE_SIZE, timeout=1).close()


def test_stale_owner_never_unlinks_successor(shm_id: str) -> None:
    old = ShmTraceRing.create(shm_id, 2, 4096)
    with pytest.raises(FileExistsError):
        ShmTraceRing.create(shm_id, 2, 4096)  # live creator: not replaced by default
    new = ShmTraceRing.create(shm_id, 2, 4096, replace=True)
    old.close()  # stale owner
    assert exists_all(shm_id) == [True, True, True]
    other = ShmTraceRing.open(shm_id, timeout=1)
    new.put(b"successor")
    assert other.get(1) == b"successor"
    other.close()
    new.close()
    assert exists_all(shm_id) == [False, False, False]


def test_create_replaces_dead_creators_ring(shm_id: str) -> None:
    def child() -> None:
        ring = ShmTraceRing.create(shm_id, 1, 1)  # held: the process dies, not the ring
        assert ring.owner
        os._exit(0)  # dies without cleanup

    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            child()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert exists_all(shm_id) == [True, True, True]
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:  # dead creator: replaced
        assert ring.capacity == 2
    assert exists_all(shm_id) == [False, False, False]


# ---------------------------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout_s(300)
def test_multiprocess_stress_every_byte(shm_id: str, config: str) -> None:
    count = 3000 if config == "default" else 1000
    with ShmTraceRing.create(shm_id, 3, 4096) as ring:
        p = SPAWN.Process(target=rc.produce, args=(shm_id, count, 300))
        p.start()
        for i in range(count):
            r = ring.access(30)
            assert isinstance(r, Data), (i, r)
            with r.guard as g:
                assert len(g.buf) == rc.frame_size(300)
                rc.check_frame(g.buf, i, 300)
        assert isinstance(ring.access(30), Finished)
        assert join_all([p], 60) == [0]
        assert ring.header()["write_idx"] == count  # wrapped count / 3 times


def test_spawned_child_gets_ring_by_pickle(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        clone = pickle.loads(pickle.dumps(ring))
        assert not clone.owner
        clone.close()
        p = SPAWN.Process(target=rc.consume, args=(shm_id, 3, 64))
        p.start()
        for i in range(3):
            with ring.acquire(10) as g:
                g.commit(rc.write_frame(g.buf, i, 64))
        ring.mark_finished()
        assert join_all([p], 60) == [0]
        assert exists_all(shm_id) == [True, True, True]


def test_forked_child_exit_leaves_ring(shm_id: str) -> None:
    ring = ShmTraceRing.create(shm_id, 2, 4096)
    ctx = __import__("multiprocessing").get_context("fork")
    p = ctx.Process(target=lambda: (ring.put(b"from child"), None)[1])
    p.start()
    assert join_all([p], 30) == [0]
    assert exists_all(shm_id) == [True, True, True], "a child's finalizer must not unlink"
    assert ring.get(5) == b"from child"
    ring.close()
    assert exists_all(shm_id) == [False, False, False]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_dead_producer_reported_after_committed_data(shm_id: str, sig: int) -> None:
    with ShmTraceRing.create(shm_id, 8, 4096) as ring:
        p = SPAWN.Process(target=rc.produce_then_die, args=(shm_id, 3, sig))
        p.start()
        for i in range(3):
            r = ring.access(30)
            assert isinstance(r, Data), r
            with r.guard as g:
                rc.check_frame(g.buf, i, 64)
        # The half-written 4th slot must never appear; the death must be reported.
        t0 = time.monotonic()
        r = ring.access(None)
        elapsed = time.monotonic() - t0
        assert isinstance(r, Crashed), r
        assert r.pid == p.pid and r.details == CrashDetails(0, 0, 0)
        assert "died" in r.reason
        join_all([p], 10)
        assert p.exitcode == -sig
        assert elapsed < 30


def test_dead_consumer_detected_and_new_consumer_resumes(shm_id: str, tmp_path: object) -> None:
    ready = os.path.join(str(tmp_path), "ready")
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        for i in range(2):
            with ring.acquire(5) as g:
                g.commit(rc.write_frame(g.buf, i, 64))
        p = SPAWN.Process(target=rc.consume_hold_and_die, args=(shm_id, 2, ready))
        p.start()
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        join_all([p], 10)
        t0 = time.monotonic()
        with pytest.raises(ConsumerGone, match="died"):
            ring.acquire(timeout=30)  # full ring, consumer dead
        assert time.monotonic() - t0 < 5
        # A new consumer (this process) resumes: both held messages come again.
        for i in range(2):
            r = ring.access(5)
            assert isinstance(r, Data), r
            with r.guard as g:
                rc.check_frame(g.buf, i, 64)
        ring.put(b"next")
        assert ring.get(5) == b"next"


def test_version_exports() -> None:
    assert ctshm.ShmTraceRing is ShmTraceRing
    assert isinstance(ctshm.__version__, str)


def test_concurrent_double_release_counts_once(shm_id: str) -> None:
    # Two threads releasing the same guard must advance read_idx once, not corrupt the
    # reorder buffer (a duplicate index would stall read_idx forever).
    import sys
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen any race
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        for round_ in range(200):
            ring.put(b"a")
            ring.put(b"b")
            r1, r2 = ring.access(1), ring.access(1)
            assert isinstance(r1, Data) and isinstance(r2, Data)
            barrier = threading.Barrier(4)

            def rel(g: ctshm.ConsumerGuard, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                g.release()

            ts = [threading.Thread(target=rel, args=(g,)) for g in
                  (r2.guard, r2.guard, r1.guard, r1.guard)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(10)
            h = ring.header()
            assert h["read_idx"] == 2 * (round_ + 1) == h["write_idx"], (round_, h)
            assert ring._pending == []
    sys.setswitchinterval(old_interval)


def test_two_handles_in_one_process_share_bookkeeping(shm_id: str) -> None:
    # Found by the model review: separate handles of one ring in one process used to keep
    # separate reorder buffers (read_idx stalled) and separate producer-guard slots (two
    # guards on the same slot).
    with ShmTraceRing.create(shm_id, 3, 4096) as a, ShmTraceRing.open(shm_id) as b:
        g = a.acquire()
        with pytest.raises(RuntimeError, match="outstanding"):
            b.acquire()
        g.commit(1)
        b.put(b"x")
        r1, r2 = a.access(1), b.access(1)
        assert isinstance(r1, Data) and isinstance(r2, Data)
        r2.guard.release()  # out of order, through the other handle
        r1.guard.release()
        h = a.header()
        assert h["read_idx"] == h["write_idx"] == 2
