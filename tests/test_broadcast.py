"""ShmBroadcast's behaviour: every reader gets every message put after it joined, in order;
the writer waits for the slowest live reader; joining, leaving, eviction, the end of the
stream, the zero-copy guard, objects, asyncio, pickling to spawned children, bad input."""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import signal
import time

import pytest

from ctshm import (
    ProducerCrashed,
    ReaderEvicted,
    RingFinished,
    ShmBroadcast,
    TooManyReaders,
)

from . import broadcast_children as bc
from .helpers import SPAWN, join_all, shm_exists


@pytest.fixture
def bcast(shm_id: str):  # type: ignore[no-untyped-def]
    b = ShmBroadcast.create(shm_id, capacity=4, slot_size=256, max_readers=4)
    yield b
    b.close()


def test_every_reader_gets_every_message_in_order(bcast: ShmBroadcast) -> None:
    r1, r2 = ShmBroadcast.open(bcast.id), ShmBroadcast.open(bcast.id)
    got1, got2 = [], []
    for i in range(10):
        bcast.put(b"m%d" % i)
        got1.append(r1.get(timeout=1))
        if i % 2:  # r2 lags by up to 2 messages
            got2 += [r2.get(timeout=1), r2.get(timeout=1)]
    assert got1 == got2 == [b"m%d" % i for i in range(10)]
    r1.close()
    r2.close()


def test_a_reader_gets_only_messages_put_after_it_joined(bcast: ShmBroadcast) -> None:
    r1 = ShmBroadcast.open(bcast.id)
    bcast.put(b"before")
    r2 = ShmBroadcast.open(bcast.id)
    bcast.put(b"after")
    assert r1.get(0) == b"before" and r1.get(0) == b"after"
    assert r2.get(0) == b"after"
    with pytest.raises(queue.Empty):
        r2.get(timeout=0.05)
    r1.close()
    r2.close()


def test_writer_waits_for_the_slowest_reader_then_goes_on(bcast: ShmBroadcast) -> None:
    r = ShmBroadcast.open(bcast.id)
    for i in range(4):
        bcast.put(bytes([i]))
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        bcast.put(b"x", timeout=0.2)
    assert time.monotonic() - t0 >= 0.19
    assert r.get() == b"\0"
    bcast.put(b"x", timeout=0)  # one slot free now
    assert len(r) == 4 and len(bcast) == 4
    r.close()
    # The only reader left: nobody holds the writer back any more.
    for _ in range(10):
        bcast.put(b"y", timeout=0)


def test_a_closed_reader_frees_its_place_and_unblocks_the_writer(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=2, slot_size=16, max_readers=2)
    r1, r2 = ShmBroadcast.open(shm_id), ShmBroadcast.open(shm_id)
    with pytest.raises(TooManyReaders, match="max_readers"):
        ShmBroadcast.open(shm_id)
    b.put(b"1")
    b.put(b"2")
    with pytest.raises(queue.Full):
        b.put(b"3", timeout=0.05)
    r1.close()
    r1.close()  # idempotent
    assert r2.get(0) == b"1"
    b.put(b"3", timeout=1)
    r3 = ShmBroadcast.open(shm_id)  # the freed place
    assert [s["state"] for s in b.stats()["readers"]] == ["active", "active"]
    r2.close()
    r3.close()
    b.close()
    assert not shm_exists(shm_id + "_b")


def test_finished_after_the_last_message(bcast: ShmBroadcast) -> None:
    r = ShmBroadcast.open(bcast.id)
    bcast.put(b"last")
    bcast.mark_finished()
    with pytest.raises(ValueError, match="mark_finished"):
        bcast.put(b"more")
    assert r.get() == b"last"
    with pytest.raises(RingFinished):
        r.get(timeout=5)
    with pytest.raises(RingFinished):
        r.get(timeout=0)
    r.close()


def test_notify_crash_reaches_readers_after_the_published_messages(bcast: ShmBroadcast
                                                                   ) -> None:
    r = ShmBroadcast.open(bcast.id)
    bcast.put(b"a")
    bcast.notify_crash(11, 0xDEAD, 2, message="segfault in step 7")
    assert r.get() == b"a"
    with pytest.raises(ProducerCrashed) as ei:
        r.get(timeout=1)
    assert ei.value.details.signal == 11 and ei.value.details.addr == 0xDEAD
    assert ei.value.message == "segfault in step 7" and ei.value.pid is None
    bcast.notify_crash(6, message="a second report")   # the first end wins
    with pytest.raises(ProducerCrashed, match="segfault"):
        r.get(timeout=0)
    with pytest.raises(ValueError, match="32-bit"):
        bcast.notify_crash(1 << 40)
    with pytest.raises(TypeError, match="message"):
        bcast.notify_crash(11, message=b"bytes")  # type: ignore[arg-type]
    r.close()


def test_access_guard_reads_in_place_and_holds_the_slot(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=1, slot_size=64, max_readers=2)
    r = ShmBroadcast.open(shm_id)
    b.put(b"zero-copy")
    g = r.access(timeout=1)
    assert bytes(g.buf) == b"zero-copy" and len(g) == 9
    with pytest.raises(TypeError):
        g.buf[0] = 1  # read-only
    with pytest.raises(RuntimeError, match="release the guard"):
        r.get(0)
    with pytest.raises(queue.Full):
        b.put(b"next", timeout=0.05)  # the guard holds the only slot
    g.release()
    g.release()  # idempotent
    with pytest.raises(ValueError, match="released"):
        _ = g.buf
    b.put(b"next", timeout=1)
    with r.access(1) as g2:
        assert bytes(g2.buf) == b"next"
        with pytest.raises(TypeError, match="pickled"):
            pickle.dumps(g2)
    r.close()
    b.close()


def test_objects_and_bytes_like_payloads(bcast: ShmBroadcast) -> None:
    r = ShmBroadcast.open(bcast.id)
    bcast.put_object({"step": 1, "ids": [1, 2]})
    bcast.put(bytearray(b"ba"))
    bcast.put(memoryview(b"\x01\x00\x02\x00").cast("H"))
    bcast.put(memoryview(b"abcdef")[::2])   # not contiguous: copied in C order
    assert r.get_object() == {"step": 1, "ids": [1, 2]}
    assert r.get() == b"ba" and r.get() == b"\x01\x00\x02\x00"
    assert r.get() == b"ace"
    r.close()


def test_asyncio_put_and_get(bcast: ShmBroadcast) -> None:
    r = ShmBroadcast.open(bcast.id)

    async def main() -> list[bytes]:
        async def produce() -> None:
            for i in range(20):
                await bcast.aput(b"%d" % i, timeout=5)
        task = asyncio.ensure_future(produce())
        got = [await r.aget(timeout=5) for _ in range(20)]
        await task
        with pytest.raises(queue.Empty):
            await r.aget(timeout=0.05)
        return got

    assert asyncio.run(main()) == [b"%d" % i for i in range(20)]
    r.close()


def test_stats_and_len(bcast: ShmBroadcast) -> None:
    r = ShmBroadcast.open(bcast.id)
    bcast.put(b"12345")
    st = bcast.stats()
    assert st["published"] == 1 and st["writer_pid"] == os.getpid()
    assert st["readers"][0]["lag"] == 1 and st["readers"][0]["pid"] == os.getpid()
    assert len(r) == 1
    r.get()
    assert len(r) == 0 and len(bcast) == 0
    assert "reader slot 0" in repr(r)
    r.close()
    assert "closed" in repr(r)
    with pytest.raises(ValueError, match="closed"):
        r.get()


def test_explicit_eviction_of_a_lagging_reader(bcast: ShmBroadcast) -> None:
    r, fast = ShmBroadcast.open(bcast.id), ShmBroadcast.open(bcast.id)
    for i in range(4):
        bcast.put(b"%d" % i)
    assert bcast.evict() == 2  # both are 4 behind
    fast.close()
    fast = ShmBroadcast.open(bcast.id)
    bcast.put(b"4", timeout=0)  # nobody holds the writer back now
    with pytest.raises(ReaderEvicted, match="evicted"):
        r.get()
    r.close()
    assert fast.get(0) == b"4"
    assert bcast.evict(pid=12345678) == 0
    fast.close()


def test_evict_after_drops_a_live_laggard(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=2, slot_size=16, max_readers=2, evict_after=0.3)
    r = ShmBroadcast.open(shm_id)
    b.put(b"1")
    b.put(b"2")
    t0 = time.monotonic()
    b.put(b"3", timeout=5)
    assert 0.25 <= time.monotonic() - t0 < 3
    assert b.stats()["evicted_live"] == 1
    with pytest.raises(ReaderEvicted):
        r.get()
    r.close()
    b.close()


def test_bad_input_is_refused_clearly(shm_id: str) -> None:
    with pytest.raises(ValueError, match="max_readers"):
        ShmBroadcast.create(shm_id, max_readers=65)
    with pytest.raises(TypeError, match="capacity"):
        ShmBroadcast.create(shm_id, capacity=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        ShmBroadcast.create(shm_id, role="both")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ShmBroadcast.open(shm_id, timeout=0.05)
    b = ShmBroadcast.create(shm_id, capacity=2, slot_size=8, max_readers=2)
    with pytest.raises(FileExistsError, match="replace=True"):
        ShmBroadcast.create(shm_id)
    with pytest.raises(ValueError, match="slot of 8 bytes"):
        b.put(b"123456789")
    with pytest.raises(TypeError, match="bytes-like"):
        b.put("text")
    with pytest.raises(ValueError, match="timeout"):
        b.put(b"x", timeout=-1)
    with pytest.raises(ValueError, match="writer's"):
        b.get()
    r = ShmBroadcast.open(shm_id)
    with pytest.raises(ValueError, match="is a reader"):
        r.put(b"x")
    w2 = ShmBroadcast.open(shm_id, role="writer")
    b.put(b"x")
    with pytest.raises(RuntimeError, match="writer already"):
        w2.put(b"y")
    w2.close()
    r.close()
    b.close()


def test_corrupt_segment_is_refused(shm_id: str) -> None:
    from ctshm import ShmMemory
    fd = os.open(f"/dev/shm/{shm_id}_b", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 8192)
        os.pwrite(fd, b"CTSHMBC1" + b"\xff" * 56, 0)
        with pytest.raises(ValueError, match="corrupt"):
            ShmBroadcast.open(shm_id, timeout=0.1)
    finally:
        os.close(fd)
        os.unlink(f"/dev/shm/{shm_id}_b")
    assert ShmMemory  # imported for the name only


def test_handles_pickle_to_spawned_children(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=8, slot_size=64, max_readers=4)
    r_for_child = ShmBroadcast.open(shm_id)
    ready = SPAWN.Event()
    procs = [SPAWN.Process(target=bc.child_read_n, args=(r_for_child, 5, ready), daemon=True)]
    procs[0].start()
    assert ready.wait(60)
    r_for_child.close()
    w = SPAWN.Process(target=bc.child_put_n, args=(b, 5), daemon=True)
    b_writer_is_child = True
    w.start()
    assert join_all([w, *procs]) == [0, 0]
    assert b_writer_is_child and b.stats()["published"] == 5
    b.close()


def test_forked_child_cannot_use_the_parents_reader(bcast: ShmBroadcast) -> None:
    r = ShmBroadcast.open(bcast.id)
    bcast.put(b"x")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 3
        try:
            r.get(0)
        except ValueError:
            code = 0
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert r.get(0) == b"x"  # the parent's reader is intact
    r.close()


def test_reader_wakes_from_sleep_when_a_message_arrives(bcast: ShmBroadcast) -> None:
    """A reader asleep in get() (past its spin) is woken by the writer's post, well before
    its liveness slice would end; and a killed writer is reported."""
    p = SPAWN.Process(target=bc.child_put_after, args=(bcast.id, 0.5), daemon=True)
    r = ShmBroadcast.open(bcast.id)
    p.start()
    assert r.get(timeout=60) == b"late"
    st = bcast.stats()
    assert st["readers"][0]["waits"] >= 1, "the reader never slept"
    assert st["reader_wakeups"] >= 1, "the writer never woke the sleeping reader"
    assert join_all([p]) == [0]
    # The child was the writer and exited without close(): its seat looks dead.
    with pytest.raises(ProducerCrashed) as ei:
        r.get(timeout=5)
    assert ei.value.pid == p.pid
    r.close()


def test_sigkilled_writer_is_reported_within_a_second(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=4, slot_size=64, max_readers=2)
    r = ShmBroadcast.open(shm_id)
    p = SPAWN.Process(target=bc.child_put_forever, args=(b,), daemon=True)
    p.start()
    assert r.get(timeout=60).startswith(b"n0")
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    t0 = time.monotonic()
    n = 1
    with pytest.raises(ProducerCrashed):
        while True:
            assert r.get(timeout=10) == b"n%d" % n
            n += 1
    assert time.monotonic() - t0 < 1.5
    r.close()
    b.close()


def test_no_spinning_when_parties_outnumber_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spinning readers steal the core the writer needs (B4K was 3-5x slower): a wait
    spins only while the parties fit the CPUs and the load average is below their count."""
    from ctshm import _bcast_peers as P
    s = P.Spin()
    assert not s.allowed(P._NCPU + 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (float(P._NCPU), 0.0, 0.0))
    assert not P.Spin().allowed(1)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert P.Spin().allowed(1)


def test_close_from_another_thread_ends_a_blocked_get(bcast: ShmBroadcast) -> None:
    import threading
    r = ShmBroadcast.open(bcast.id)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            r.get(timeout=None)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.3)   # asleep by now
    r.close()
    t.join(5)
    assert not t.is_alive(), "get() went on waiting on a closed handle"
    assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
    assert "closed" in str(errors[0])
    bcast.put(b"nobody holds the writer back", timeout=0)


def test_crashhook_reporting_works_with_a_broadcast_writer(bcast: ShmBroadcast) -> None:
    """``ctshm.crashhook.reporting`` only needs ``notify_crash``: an exception leaving the
    writer's block reaches the readers as ProducerCrashed with its text."""
    from ctshm import crashhook
    r = ShmBroadcast.open(bcast.id)
    with pytest.raises(ZeroDivisionError), crashhook.reporting(bcast):
        bcast.put(b"before")
        1 / 0  # noqa: B018
    assert r.get(1) == b"before"
    with pytest.raises(ProducerCrashed, match="ZeroDivisionError"):
        r.get(1)
    r.close()
