"""ShmQueue's behaviour: put/get, blocking and timeouts, many processes and threads,
pickling, objects, asyncio, end of stream, dead producers and consumers, idle CPU, misuse."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import queue
import resource
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from ctshm import QueueFinished, ShmQueue, queue_layout as QL

from . import queue_children as qc
from .helpers import CHILD_TIMEOUT, SPAWN, shm_exists

FORK = multiprocessing.get_context("fork")
# This thread's CPU time; PyPy has no RUSAGE_THREAD (the process's: no other thread is busy).
_RUSAGE = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


@pytest.fixture
def q(shm_id: str) -> Iterator[ShmQueue]:
    q = ShmQueue.create(shm_id, capacity=8, slot_size=256)
    try:
        yield q
    finally:
        q.close()


def _join(procs: list[multiprocessing.process.BaseProcess]) -> list[int | None]:
    for p in procs:
        p.join(CHILD_TIMEOUT)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.exitcode is None:
            p.kill()
            p.join(5)
    return codes


# -- basics ----------------
def test_fifo_within_one_producer_and_len(q: ShmQueue) -> None:
    for i in range(5):
        q.put(b"m%d" % i)
    assert len(q) == 5
    assert [q.get() for _ in range(5)] == [b"m%d" % i for i in range(5)]
    assert len(q) == 0 and q.empty()


def test_full_and_empty_raise_standard_exceptions(q: ShmQueue) -> None:
    for _ in range(8):
        q.put_nowait(b"x")
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(b"y")
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(b"y", timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    for _ in range(8):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def test_bytes_like_inputs_and_empty_message(q: ShmQueue) -> None:
    import array
    q.put(bytearray(b"ba"))
    q.put(memoryview(b"mv"))
    q.put(array.array("I", [1, 2]))
    q.put(b"")
    assert q.get() == b"ba" and q.get() == b"mv"
    assert q.get() == array.array("I", [1, 2]).tobytes()
    assert q.get() == b""


def test_wraps_around_many_laps(q: ShmQueue) -> None:
    for i in range(200):
        q.put(struct.pack("<Q", i))
        assert struct.unpack("<Q", q.get())[0] == i
    assert all(s.endswith("EMPTY") for s in q.slot_states())


def test_open_sees_the_same_queue_and_owner_unlinks(shm_id: str) -> None:
    a = ShmQueue.create(shm_id, capacity=4, slot_size=32)
    b = ShmQueue.open(shm_id)
    a.put(b"hello")
    assert b.get() == b"hello"
    b.close()
    assert shm_exists(f"/{shm_id}_q")
    a.close()
    assert not shm_exists(f"/{shm_id}_q")
    a.close()  # idempotent


def test_get_with_is_zero_copy_and_gives_back_on_error(q: ShmQueue) -> None:
    q.put(b"abc")
    assert q.get_with(lambda v: bytes(v[::-1])) == b"cba"
    q.put(b"again")

    def boom(v: memoryview) -> None:
        raise RuntimeError("consumer bug")

    with pytest.raises(RuntimeError):
        q.get_with(boom)
    assert q.get(timeout=1) == b"again"  # given back, not lost


# -- misuse ----------------
def test_bad_input_names_the_queue(q: ShmQueue, shm_id: str) -> None:
    with pytest.raises(ValueError, match=f"{shm_id}_q.*does not fit a slot of 256"):
        q.put(b"x" * 257)
    with pytest.raises(TypeError, match=f"{shm_id}_q.*bytes-like.*put_object"):
        q.put("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="capacity"):
        ShmQueue.create(shm_id + "b", capacity=0)
    with pytest.raises(TypeError, match="slot_size"):
        ShmQueue.create(shm_id + "b", slot_size="big")  # type: ignore[arg-type]
    with pytest.raises(FileExistsError, match="queue exists"):
        ShmQueue.create(shm_id)
    with pytest.raises(FileNotFoundError, match="no such queue"):
        ShmQueue.open(shm_id + "none", timeout=0.05)
    with pytest.raises(TypeError, match="callable"):
        q.get_with(None)


def test_closed_handle_raises(shm_id: str) -> None:
    a = ShmQueue.create(shm_id, capacity=2, slot_size=8)
    a.close()
    with pytest.raises(ValueError, match="closed"):
        a.put(b"x")
    with pytest.raises(ValueError, match="closed"):
        a.get_nowait()


def test_enospc_not_sigbus(shm_id: str) -> None:
    # A queue larger than /dev/shm: posix_fallocate refuses it at create time.
    free = os.statvfs("/dev/shm")
    too_big = free.f_bavail * free.f_frsize + (1 << 30)
    with pytest.raises(OSError) as e:
        ShmQueue.create(shm_id, capacity=1, slot_size=too_big)
    assert e.value.errno in (28, 27)  # ENOSPC, EFBIG
    assert not shm_exists(f"/{shm_id}_q")


# -- end of stream ----------------
def test_finish_drains_then_ends(q: ShmQueue) -> None:
    q.put(b"a")
    q.put(b"b")
    q.finish()
    with pytest.raises(QueueFinished):
        q.put(b"late")
    assert list(q) == [b"a", b"b"]
    with pytest.raises(QueueFinished):
        q.get(timeout=1)


def test_finish_wakes_a_blocked_consumer(q: ShmQueue) -> None:
    got: list[object] = []

    def consume() -> None:
        try:
            q.get()
        except QueueFinished as e:
            got.append(e)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    q.finish()
    t.join(5)
    assert not t.is_alive() and len(got) == 1


# -- processes and threads ----------------
def test_many_producers_many_consumers_processes(shm_id: str) -> None:
    q = ShmQueue.create(shm_id, capacity=16, slot_size=16)
    out = SPAWN.Queue()
    per, np_, nc = 500, 3, 3
    prods = [SPAWN.Process(target=qc.put_range, args=(shm_id, k * per, per)) for k in range(np_)]
    cons = [SPAWN.Process(target=qc.get_count, args=(shm_id, per * np_ // nc, out))
            for _ in range(nc)]
    for p in prods + cons:
        p.start()
    got = []
    for _ in range(nc):
        got.extend(out.get(timeout=CHILD_TIMEOUT))
    assert _join(prods + cons) == [0] * (np_ + nc)
    assert sorted(got) == list(range(per * np_))
    q.close()


def test_threads_share_one_handle(q: ShmQueue) -> None:
    n, nthreads = 400, 4
    got: list[int] = []
    lock = threading.Lock()

    def prod(k: int) -> None:
        for i in range(n):
            q.put(struct.pack("<Q", k * n + i))

    def cons() -> None:
        for _ in range(n):
            v = struct.unpack("<Q", q.get(timeout=30))[0]
            with lock:
                got.append(v)

    ts = [threading.Thread(target=prod, args=(k,)) for k in range(nthreads)]
    ts += [threading.Thread(target=cons) for _ in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(got) == list(range(n * nthreads))


def test_pickled_handle_reopens_in_spawned_child_and_pool(q: ShmQueue) -> None:
    assert pickle.loads(pickle.dumps(q)).name == q.name
    p = SPAWN.Process(target=qc.use_pickled, args=(q, 2))
    p.start()
    assert _join([p]) == [0]
    assert {q.get(timeout=5), q.get(timeout=5)} == {b"child 0", b"child 1"}
    with SPAWN.Pool(2) as pool:
        pids = pool.starmap(qc.use_pickled, [(q, 1), (q, 1)])
    assert len(pids) == 2
    assert sorted(q.get(timeout=5) for _ in range(2)) == [b"child 0", b"child 0"]


def test_forked_child_registers_its_own_peer_entry(q: ShmQueue) -> None:
    parent = {e[2] for e in q._peers.live()}
    p = FORK.Process(target=qc.use_pickled, args=(q, 1))
    # the fork target uses the inherited handle object itself (pickling does not happen)
    p.start()
    assert _join([p]) == [0]
    assert q.get(timeout=5) == b"child 0"
    assert os.getpid() in parent
    # the child's entry was freed by its finalizer or is reaped: the parent's stays
    q.housekeeping()
    assert {e[2] for e in q._peers.live()} == parent


# -- objects, asyncio ----------------
def test_put_object_get_object_out_of_band_numpy(shm_id: str) -> None:
    np = pytest.importorskip("numpy")
    q = ShmQueue.create(shm_id, capacity=2, slot_size=(1 << 20) + 4096)
    a = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    q.put_object({"arr": a, "tag": "x"})
    r = q.get_object(timeout=5)
    assert r["tag"] == "x" and (r["arr"] == a).all() and r["arr"].flags.writeable
    q.put(b"raw")
    with pytest.raises(ValueError, match="not a put_object"):
        q.get_object()
    q.close()


def test_put_many_get_many(q: ShmQueue) -> None:
    q.put_many([b"1", b"2", b"3"])
    assert q.get_many(10) == [b"1", b"2", b"3"]


def test_aput_aget(q: ShmQueue) -> None:
    async def main() -> list[bytes]:
        async def later() -> None:
            await asyncio.sleep(0.2)
            await q.aput(b"async")
        task = asyncio.ensure_future(later())
        r = await q.aget(timeout=5)
        await task
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.1)
        return [r]

    assert asyncio.run(main()) == [b"async"]


# -- dead peers ----------------
@pytest.mark.parametrize("kind", ["put", "get"])
def test_a_peer_dead_inside_its_claim_costs_at_most_its_message(q: ShmQueue, kind: str) -> None:
    if kind == "get":
        q.put(b"keep me")
    p = SPAWN.Process(target=qc.die_holding_claim, args=(q.id, kind))
    p.start()
    assert _join([p]) == [9]
    states = q.slot_states()
    assert any(("WRITING" if kind == "put" else "READING") in s for s in states), states
    q.put(b"after")
    got = [q.get(timeout=5)]  # queue.Empty here: the dead peer's slot was never reaped
    if kind == "get":
        got.append(q.get(timeout=5))
    assert sorted(got) == sorted([b"after"] + ([b"keep me"] if kind == "get" else []))
    st = q.stats()
    assert (st["skipped"], st["redelivered"]) == ((1, 0) if kind == "put" else (0, 1))


def test_sigstop_is_not_death(q: ShmQueue) -> None:
    import signal
    out = SPAWN.Queue()
    c = SPAWN.Process(target=qc.get_count, args=(q.id, 1, out))
    c.start()
    deadline = time.monotonic() + CHILD_TIMEOUT
    while c.pid not in {e[2] for e in q._peers.live()} and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the child is blocked in get()
    os.kill(c.pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:
        q.housekeeping()
        assert c.pid in {e[2] for e in q._peers.live()}
    finally:
        os.kill(c.pid, signal.SIGCONT)  # type: ignore[arg-type]
    q.put(struct.pack("<Q", 7))
    assert out.get(timeout=CHILD_TIMEOUT) == [7]
    assert _join([c]) == [0]


def test_blocked_get_and_put_burn_no_cpu(shm_id: str) -> None:
    q = ShmQueue.create(shm_id, capacity=1, slot_size=8)
    q.put(b"once")
    q.get()
    q.put(b"full")  # position 1: the hints are at 2 now

    def blocked(what: str) -> float:
        # A lagging hint (a racing consumer's / producer's late store) must not make the
        # wait spin: point it at an old, already taken position first.
        q._v[QL.W_HEAD if what == "get" else QL.W_TAIL] = 0
        r0 = resource.getrusage(_RUSAGE)
        try:
            if what == "put":
                q.put(b"x", timeout=1.0)
            else:
                q.get(timeout=1.0)
        except (queue.Full, queue.Empty):
            pass
        r1 = resource.getrusage(_RUSAGE)
        return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    cpu_put = blocked("put")
    q.get()
    cpu_get = blocked("get")
    # ORPHANS over-counted (a consumer killed between taking an orphan and lowering the
    # count) must not make an idle get spin either
    q._v[QL.W_ORPHANS] = 1
    cpu_get += blocked("get")
    # 1 s blocked: spin 50 us + 5 liveness slices; well under 5% of a core
    assert cpu_put < 0.05 and cpu_get < 0.05, (cpu_put, cpu_get)
    q.close()


def test_layout_word_encoding() -> None:
    tag = QL.owner_tag(5, 3000)
    w = (7 << QL.LAP_SHIFT) | tag | QL.READING
    assert QL.owner_of(w) == (5, 3000 & 0x7FF)
    assert QL.describe(w) == f"lap 7 READING peer 5/{3000 & 0x7FF}"
    assert QL.owner_of(7 << QL.LAP_SHIFT) == (-1, 0)
