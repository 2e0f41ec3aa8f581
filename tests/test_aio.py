"""ctshm.aio: asyncio consumer and producer, helper threads, cancellation that loses nothing."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import threading
from typing import Any, Awaitable, Callable, Optional

import pytest

from ctshm import Crashed, Data, Finished, ProducerCrashed, RingFinished, ShmTraceRing, Timeout, aio
from ctshm.records import RecordReader, RecordWriter

from . import aio_children as ac
from .helpers import SPAWN, join_all

RUNNERS = ["asyncio", "uvloop"]
WAIT_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)


def run(coro: Awaitable[Any], runner: str = "asyncio") -> Any:
    """Run ``coro`` on a fresh event loop of the given kind; then check no helper thread is
    left (each exits within LINGER of its last call)."""
    if runner == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is optional (not installed)")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
        assert_no_helpers()


def assert_no_helpers(ring: Optional[ShmTraceRing] = None) -> None:
    for t in aio.helper_threads(ring):
        t.join(10)
    left = [t.name for t in threading.enumerate() if t.name.startswith(aio.THREAD_PREFIX)]
    assert left == [], f"helper threads left: {left}"


async def until(cond: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Wait (on the loop) until ``cond()``; fail after ``limit`` seconds (a hang bound only)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        assert loop.time() < end, f"never happened: {what}"
        await asyncio.sleep(0.005)


def start(target: Callable[..., None], *args: Any) -> Any:
    p = SPAWN.Process(target=target, args=args, daemon=True)
    p.start()
    return p


# ---------------------------------------------------------------------------------------------
# Exactly once, in order, under cancellation
# ---------------------------------------------------------------------------------------------


async def storm(ring: ShmTraceRing, seed: int) -> dict[str, Any]:
    """Receive until RingFinished with random wait_for timeouts and cancellations."""
    rng = random.Random(seed)
    got: list[int] = []
    cancelled = timeouts = kept = 0
    while True:
        if aio.pending_count(ring):
            kept += 1
        mode = rng.randrange(4)
        try:
            if mode == 0:
                data = await asyncio.wait_for(
                    ring.aget(), rng.choice((0.0001, 0.0005, 0.002, 0.01)))
            elif mode == 1:
                t = asyncio.ensure_future(ring.aget())
                await asyncio.sleep(rng.choice((0, 0, 0.0003, 0.002)))
                t.cancel()
                try:
                    data = await t
                except asyncio.CancelledError:
                    cancelled += 1
                    continue
            elif mode == 2:
                data = await ring.aget(timeout=rng.choice((0, 0.001, 0.01)))
            else:
                r = await ring.aaccess(timeout=rng.choice((0.0005, 0.005)))
                if isinstance(r, Timeout):
                    raise TimeoutError
                if isinstance(r, Finished):
                    raise RingFinished
                assert isinstance(r, Data), r
                with r.guard as g:
                    data = bytes(g.buf)
        except WAIT_TIMEOUTS:
            timeouts += 1
            continue
        except RingFinished:
            break
        got.append(ac.seq_of(data))
    return {"got": got, "cancelled": cancelled, "timeouts": timeouts, "kept": kept}


@pytest.mark.parametrize("runner", RUNNERS)
def test_random_cancellations_deliver_every_message_once_in_order(shm_id: str, runner: str
                                                                  ) -> None:
    n = 2000
    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring:
        p = start(ac.produce_numbered, shm_id, n, 7)
        ring.expect_producer(p.pid)
        stats = run(storm(ring, 11), runner)
        assert join_all([p], 60) == [0]
    got = stats["got"]
    missing = sorted(set(range(n)) - set(got))
    assert got == list(range(n)), (f"{len(got)} delivered, missing {missing[:10]}, "
                                   f"first disorder at {_first_bad(got)}")
    assert stats["cancelled"] > 0 and stats["timeouts"] > 0, stats


def _first_bad(got: list[int]) -> Optional[int]:
    for i, v in enumerate(got):
        if v != i:
            return i
    return None


def test_message_claimed_after_cancel_is_kept_and_taken_in_order(shm_id: str) -> None:
    """A helper blocked in access() when its caller is cancelled claims the next message:
    it goes to the pending buffer, then to take_pending() / the next aget, before anything
    still in the ring."""

    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> int:
        kept_runs = 0
        seq = 0
        for _ in range(10):
            t = asyncio.ensure_future(ring.aget())
            await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
            await asyncio.sleep(0.01)  # the helper is inside access(SLICE) now, most likely
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            prod.put(ac.message(seq))
            prod.put(ac.message(seq + 1))
            assert_no_helpers(ring)  # it claimed (or not) and exited: nobody waits any more
            r = aio.take_pending(ring)
            if r is not None:
                kept_runs += 1
                assert isinstance(r, Data), r
                with r.guard as g:
                    assert ac.seq_of(g.buf) == seq
                assert aio.take_pending(ring) is None
                assert ac.seq_of(await ring.aget(5)) == seq + 1
            else:  # the slice had ended: both are still in the ring
                assert ac.seq_of(await ring.aget(5)) == seq
                assert ac.seq_of(await ring.aget(5)) == seq + 1
            seq += 2
        return kept_runs

    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        kept_runs = run(main(ring, prod))
    assert kept_runs > 0, "the helper never claimed after a cancellation: path not exercised"


def test_sync_access_after_cancelled_aget_takes_the_kept_message_first(shm_id: str) -> None:
    """ShmTraceRing.access() (and so get()) returns a message an async call kept before
    anything still in the ring: nothing skipped, nothing reordered."""

    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> list[int]:
        out: list[int] = []
        seq = 0
        for _ in range(10):
            t = asyncio.ensure_future(ring.aget())
            await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
            await asyncio.sleep(0.01)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            prod.put(ac.message(seq))
            prod.put(ac.message(seq + 1))
            assert_no_helpers(ring)
            out += [ac.seq_of(ring.get(5)), ac.seq_of(ring.get(5))]  # the sync path
            seq += 2
        return out

    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        assert run(main(ring, prod)) == list(range(20))


def test_pending_message_goes_to_next_aget_before_the_ring(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> list[int]:
        out: list[int] = []
        for _ in range(20):
            t = asyncio.ensure_future(ring.aget())
            await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            base = len(out)
            for i in range(3):
                prod.put(ac.message(base + i))
            for _ in range(3):
                out.append(ac.seq_of(await ring.aget(5)))
        return out

    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        assert run(main(ring, prod)) == list(range(60))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup needs Python 3.11+")
def test_taskgroup_workers_and_group_cancellation_lose_nothing(shm_id: str) -> None:
    n = 2000

    async def main(ring: ShmTraceRing) -> tuple[dict[int, list[int]], list[int]]:
        per: dict[int, list[int]] = {k: [] for k in range(4)}

        async def worker(k: int) -> None:
            rng = random.Random(k)
            while True:
                try:
                    data = await asyncio.wait_for(ring.aget(), rng.choice((0.001, 0.01)))
                except WAIT_TIMEOUTS:
                    continue
                except RingFinished:
                    return
                per[k].append(ac.seq_of(data))
                if k == 0 and len(per[0]) == 150:
                    raise KeyError("worker 0 gives up")  # the group cancels the others

        try:
            async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
                for k in range(4):
                    tg.create_task(worker(k))
        except BaseException as eg:  # ExceptionGroup (no except* before 3.11)
            assert type(eg).__name__ == "ExceptionGroup", eg
            assert [type(e) for e in eg.exceptions] == [KeyError]  # type: ignore[attr-defined]
        rest = [ac.seq_of(c) async for c in ring.aiter(timeout=30)]
        return per, rest

    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring:
        p = start(ac.produce_numbered, shm_id, n, 3)
        ring.expect_producer(p.pid)
        per, rest = run(main(ring))
        assert join_all([p], 60) == [0]
    for k, seqs in per.items():
        assert seqs == sorted(seqs), f"worker {k} saw messages out of order"
    everything = sorted(s for seqs in per.values() for s in seqs) + rest
    assert everything == list(range(n))
    assert len(per[0]) == 150


def test_wait_for_on_many_handles_of_one_ring_in_one_loop(shm_id: str) -> None:
    """Two tasks share one handle with wait_for; gather keeps every message once."""
    n = 500

    async def main(ring: ShmTraceRing) -> list[int]:
        out: list[int] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                try:
                    out.append(ac.seq_of(await asyncio.wait_for(ring.aget(), 0.003)))
                except WAIT_TIMEOUTS:
                    pass
                except RingFinished:
                    done.set()

        await asyncio.gather(reader(), reader())
        return out

    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring:
        p = start(ac.produce_numbered, shm_id, n, 5)
        ring.expect_producer(p.pid)
        out = run(main(ring))
        assert join_all([p], 60) == [0]
    assert sorted(out) == list(range(n)) and len(out) == n


# ---------------------------------------------------------------------------------------------
# Helper threads
# ---------------------------------------------------------------------------------------------


def test_at_most_one_helper_thread_per_handle_and_none_at_the_end(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> list[int]:
        tasks = [asyncio.ensure_future(ring.aget(timeout=30)) for _ in range(20)]
        await until(lambda: len(aio.helper_threads(ring)) >= 1, "helper started")
        await asyncio.sleep(0.05)
        assert len(aio.helper_threads(ring)) == 1
        assert len(aio.helper_threads()) == 1  # 20 waiting calls, one thread
        for i in range(20):
            await prod.aput(ac.message(i), timeout=30)  # capacity 4: waits for the readers
            assert len(aio.helper_threads(ring)) <= 1
        return [ac.seq_of(d) for d in await asyncio.gather(*tasks)]

    with ShmTraceRing.create(shm_id, 4, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        got = run(main(ring, prod))  # run() checks no helper thread is left
    assert sorted(got) == list(range(20))


def test_the_consumer_helper_is_known_to_take_pending(shm_id: str) -> None:
    # take_pending() returns None in the helper thread (its access() calls fill the buffer:
    # taking from it there would reorder messages), so the state must name the helper from
    # its first access() on.
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> bytes:
        task = asyncio.ensure_future(ring.aget(timeout=30))
        await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
        (helper,) = aio.helper_threads(ring)
        assert aio._state(ring, "consumer").helper_ident == helper.ident
        prod.put(b"m")
        return await task

    with ShmTraceRing.create(shm_id, 4, 4096) as ring, ShmTraceRing.open(shm_id) as prod:
        assert run(main(ring, prod)) == b"m"
    assert aio._state(ring, "consumer").helper_ident == 0  # reset when the helper exited


@pytest.mark.parametrize("side", ["consumer", "producer"])
def test_dropped_ring_is_freed_at_once_though_its_helper_lingers(
        shm_id: str, side: str, monkeypatch: Any) -> None:
    # Outside review: a helper thread held its ring strongly until it exited (LINGER after
    # the last call), so dropping the ring and creating the same id again raised
    # FileExistsError.  A long LINGER keeps the idle helper alive past the re-create.
    monkeypatch.setattr(aio, "LINGER", 2.0)
    peer = None

    async def use() -> list[threading.Thread]:
        nonlocal peer
        ring = ShmTraceRing.create(shm_id, 1, 4096)
        peer = ShmTraceRing.open(shm_id)  # the other side (an opener: it never unlinks)
        if side == "consumer":
            t = asyncio.ensure_future(ring.aget(timeout=30))
            await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
            peer.put(b"m")
            assert await t == b"m"  # served by the helper
        else:
            ring.put(b"full")
            t = asyncio.ensure_future(ring.aput(b"x", timeout=30))
            await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
            assert peer.get(5) == b"full"
            await t  # a slot found by the helper
        return aio.helper_threads(ring)

    loop = asyncio.new_event_loop()
    try:
        helpers = loop.run_until_complete(use())
    finally:
        loop.close()
    assert helpers, "a helper thread served the call"
    gc.collect()
    again = ShmTraceRing.create(shm_id, 1, 4096)  # the old ring's names are gone already
    again.close()
    assert peer is not None
    peer.close()
    for t in helpers:  # a helper whose ring is gone exits (within LINGER)
        t.join(30)
    assert_no_helpers()


def test_close_wakes_waiting_calls_and_ends_the_helper(shm_id: str) -> None:
    async def main(ring: ShmTraceRing) -> None:
        t = asyncio.ensure_future(ring.aget())
        await until(lambda: len(aio.helper_threads(ring)) == 1, "helper started")
        threading.Thread(target=ring.close).start()
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(t, 30)
        with pytest.raises(ValueError, match="closed"):
            await ring.aget()

    ring = ShmTraceRing.create(shm_id, 2, 1 << 16)
    try:
        run(main(ring))
    finally:
        ring.close()


def test_producer_close_wakes_waiting_aput(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> None:
        await prod.aput(b"fills the ring")
        t = asyncio.ensure_future(prod.aput(b"waits"))
        await until(lambda: len(aio.helper_threads(prod)) == 1, "producer helper started")
        prod.close()
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(t, 30)

    with ShmTraceRing.create(shm_id, 1, 1 << 16) as ring:
        prod = ShmTraceRing.open(shm_id)
        try:
            run(main(ring, prod))
        finally:
            prod.close()
        assert ring.get(5) == b"fills the ring"


# ---------------------------------------------------------------------------------------------
# Results, timeouts, errors
# ---------------------------------------------------------------------------------------------


def test_aaccess_results_and_aget_end_of_stream(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> None:
        assert isinstance(await ring.aaccess(0), Timeout)
        assert isinstance(await ring.aaccess(0.02), Timeout)
        with pytest.raises(TimeoutError, match=r"no message within 0\.02 s"):
            await ring.aget(0.02)
        await prod.aput(b"one")
        r = await ring.aaccess()
        assert isinstance(r, Data)
        with r.guard as g:
            assert bytes(g.buf) == b"one"
        later = asyncio.ensure_future(ring.aget(10))
        await asyncio.sleep(0.05)
        await prod.aput(bytearray(b"two"))
        assert await later == b"two"
        prod.mark_finished()
        assert isinstance(await ring.aaccess(5), Finished)
        assert isinstance(await ring.aaccess(0), Finished)
        with pytest.raises(RingFinished):
            await ring.aget(5)
        assert [c async for c in ring.aiter()] == []

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        run(main(ring, prod))


def test_timed_out_wait_keeps_a_late_message(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> None:
        for i in range(30):
            assert isinstance(await ring.aaccess(0.002), Timeout)
            prod.put(ac.message(i))
            assert ac.seq_of(await ring.aget(5)) == i

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        run(main(ring, prod))


def test_aiter_copy_false_and_crash_after_every_message(shm_id: str) -> None:
    async def main(ring: ShmTraceRing) -> list[int]:
        got: list[int] = []
        with pytest.raises(ProducerCrashed) as ei:
            async for view in ring.aiter(timeout=30, copy=False):
                assert isinstance(view, memoryview) and view.readonly
                got.append(ac.seq_of(view))
        r = ei.value.args[0] if ei.value.args else None
        assert isinstance(r, Crashed) or "child crashed on purpose" in str(ei.value)
        return got

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring:
        p = start(ac.produce_numbered, shm_id, 100, 2, 7, "crash")
        ring.expect_producer(p.pid)
        got = run(main(ring))
        assert join_all([p], 60) == [0]
    assert got == list(range(100))


def test_bad_arguments_name_the_ring_and_argument(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> None:
        with pytest.raises(ValueError, match=r"aaccess: timeout must be >= 0"):
            await ring.aaccess(-1)
        with pytest.raises(TypeError, match=r"aget.*timeout must be a number"):
            await ring.aget("1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"aput\(\) needs a bytes-like.*encode"):
            await prod.aput("text")  # type: ignore[arg-type]
        big = ring.slot_size + 1
        with pytest.raises(ValueError, match=rf"aput\(\): {big} bytes do not fit a slot of "
                                             rf"{ring.slot_size} bytes"):
            await prod.aput(bytes(big))
        with pytest.raises(ValueError, match="does not fit a slot"):
            await prod.aacquire(size=1 << 30)

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        run(main(ring, prod))


# ---------------------------------------------------------------------------------------------
# Producer
# ---------------------------------------------------------------------------------------------


def test_cancelled_or_timed_out_aput_publishes_nothing(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> None:
        await prod.aput(ac.message(0))  # capacity 1: the ring is full now
        t = asyncio.ensure_future(prod.aput(b"never"))
        await until(lambda: len(aio.helper_threads(prod)) == 1, "producer helper started")
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        with pytest.raises(TimeoutError, match=r"no free slot within 0\.05 s"):
            await prod.aput(b"never either", timeout=0.05)
        with pytest.raises(TimeoutError):
            await prod.aput(b"nor this", timeout=0)
        assert ring.header()["write_idx"] == 1
        assert ac.seq_of(await ring.aget(5)) == 0  # frees the slot: a late helper finds it
        assert_no_helpers(prod)
        assert ring.header()["write_idx"] == 1
        await prod.aput(ac.message(1))
        prod.mark_finished()
        assert [ac.seq_of(c) async for c in ring.aiter(5)] == [1]

    with ShmTraceRing.create(shm_id, 1, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        run(main(ring, prod))


def test_aput_waits_for_a_slow_consumer_process(shm_id: str) -> None:
    n = 300

    async def main(prod: ShmTraceRing) -> None:
        for i in range(n):
            await prod.aput(ac.message(i), timeout=30)
        g = await prod.aacquire(30, size=16)
        g.buf[:] = b"\0" * 16
        g.abort()
        prod.mark_finished()

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as prod:
        p = start(ac.consume_numbered, shm_id, n, 5)
        prod.expect_consumer(p.pid)
        run(main(prod))
        assert join_all([p], 60) == [0]


def test_async_producer_process_to_async_consumer(shm_id: str) -> None:
    n = 1000

    async def main(ring: ShmTraceRing) -> list[int]:
        return [ac.seq_of(c) async for c in ring.aiter(timeout=30)]

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring:
        p = start(ac.produce_numbered_async, shm_id, n, 9)
        ring.expect_producer(p.pid)
        got = run(main(ring))
        assert join_all([p], 60) == [0]
    assert got == list(range(n))


def test_concurrent_aputs_of_several_tasks_take_turns(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> list[bytes]:
        async def putter(k: int) -> None:
            for i in range(25):
                await prod.aput(b"%d:%d" % (k, i), timeout=30)

        async def reader() -> list[bytes]:
            return [await ring.aget(30) for _ in range(100)]

        out = await asyncio.gather(reader(), *(putter(k) for k in range(4)))
        return list(out[0])

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        got = run(main(ring, prod))
    for k in range(4):
        mine = [m for m in got if m.startswith(b"%d:" % k)]
        assert mine == [b"%d:%d" % (k, i) for i in range(25)]


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def test_async_record_writer_to_a_reader_process(shm_id: str) -> None:
    n = 3000

    async def main(ring: ShmTraceRing) -> RecordWriter:
        async with RecordWriter(ring, max_bytes=4096, timeout=30) as w:
            for i in range(n):
                if i % 3 == 0:
                    m = ac.message(i)
                    view = await w.areserve(len(m))
                    view[:] = m
                else:
                    await w.aappend(ac.message(i))
                if i % 500 == 0:
                    await w.aflush()
        return w

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring:
        p = start(ac.read_records, shm_id, n)
        ring.expect_consumer(p.pid)
        w = run(main(ring))
        assert join_all([p], 60) == [0]
    assert w.records_written == n and w.slots_written > 10


def test_async_record_reader_from_a_writer_process(shm_id: str) -> None:
    n = 3000

    async def main(ring: ShmTraceRing) -> tuple[list[int], int]:
        reader = RecordReader(ring, timeout=30)
        got = [ac.seq_of(rec) async for rec in reader.aiter()]
        return got, reader.slots_read

    with ShmTraceRing.create(shm_id, 2, 1 << 16) as ring:
        p = start(ac.write_records, shm_id, n)
        ring.expect_producer(p.pid)
        got, slots = run(main(ring))
        assert join_all([p], 60) == [0]
    assert got == list(range(n)) and slots > 10


def test_async_record_batches_and_crash(shm_id: str) -> None:
    async def main(ring: ShmTraceRing, prod: ShmTraceRing) -> list[list[bytes]]:
        w = RecordWriter(prod, max_bytes=64)
        for i in range(10):
            await w.aappend(b"r%d" % i)
        w.close(finish=False)
        prod.notify_crash(6, 0, 0, "boom")
        batches: list[list[bytes]] = []
        with pytest.raises(ProducerCrashed):
            async for batch in RecordReader(ring, timeout=5).abatches():
                batches.append([bytes(r) for r in batch])
        return batches

    with ShmTraceRing.create(shm_id, 8, 1 << 16) as ring, ShmTraceRing.open(shm_id) as prod:
        batches = run(main(ring, prod))
    assert [r for b in batches for r in b] == [b"r%d" % i for i in range(10)]
    assert len(batches) > 1
