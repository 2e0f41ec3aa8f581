"""Many threads on each side of one ring, in two processes, with exact accounting: the test
that would catch a data race in the ring's hot path once threads really run at once.

A spawned producer process runs PRODUCERS threads that put on ONE handle with no lock of
their own (ctshm makes them take turns), one of them through acquire()/commit() and with
aborted slots in between (an aborted slot must never be delivered).  This process opens the
consumer side on ONE handle: ACCESSORS threads call access() at the same time and hand each
guard to one of RELEASERS threads, which release in whatever order they get to it.  Every
message carries (thread, sequence, check word) and a tail whose length and bytes depend on
them; the test asserts each committed message arrives exactly once, intact, each producer
thread's messages in order, and the header's indices and both sides' counters are exact.

It runs on every interpreter; on free-threaded CPython (3.13t/3.14t; tools/cpython) the
threads run in parallel, and both processes assert that the GIL is still off after
``import ctshm`` (unless PYTHON_GIL=1 asks for it).  With the GIL the switch interval is
made tiny so the threads interleave often (a plain thread stress test).
"""

from __future__ import annotations

import os
import queue
import random
import struct
import sys
import sysconfig
import threading
import time
from typing import Any

import pytest

from ctshm import Data, Finished, ShmTraceRing

from .helpers import SPAWN, join_all

PRODUCERS = 4
ACCESSORS = 3
RELEASERS = 4
PER_PRODUCER = 2500
CAPACITY = 8
SLOT = 512
ABORT_EVERY = 7  # the acquire()/commit() thread aborts one slot every ABORT_EVERY messages
_MSG = struct.Struct("<IIQ")  # producer thread, sequence number, check word
_POISON = 0xFFFFFFFF  # the producer field of a slot that is always aborted


def _check_word(p: int, seq: int) -> int:
    return (p * 1_000_003 + seq * 7919 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF


def _message(p: int, seq: int) -> bytes:
    tail = (seq * 13 + p) % (SLOT - _MSG.size)
    return _MSG.pack(p, seq, _check_word(p, seq)) + bytes([(p * 31 + seq) & 0xFF]) * tail


def _gil_must_be_off() -> bool:
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and os.environ.get("PYTHON_GIL") != "1"


def _assert_gil_off(where: str) -> None:
    if _gil_must_be_off():
        assert not sys._is_gil_enabled(), (  # type: ignore[attr-defined]
            f"{where}: free-threaded build, but the GIL is on after import ctshm")


def producer_process(name: str) -> None:
    """The spawned child: PRODUCERS threads on one handle, then mark_finished()."""
    _assert_gil_off("producer process")
    sys.setswitchinterval(1e-5)
    ring = ShmTraceRing.open(name, timeout=30)
    errors: list[str] = []
    start = threading.Barrier(PRODUCERS)

    def put_thread(p: int) -> None:
        try:
            start.wait(30)
            for seq in range(PER_PRODUCER):
                ring.put(_message(p, seq), timeout=60)
        except BaseException as e:
            errors.append(f"producer thread {p}: {e!r}")

    def guard_thread(p: int) -> None:
        try:
            start.wait(30)
            for seq in range(PER_PRODUCER):
                if seq % ABORT_EVERY == 3:
                    g = ring.acquire(timeout=60)
                    g.buf[:_MSG.size] = _MSG.pack(_POISON, seq, 0)
                    g.abort()
                data = _message(p, seq)
                with ring.acquire(timeout=60, size=len(data)) as g:
                    g.buf[:] = data
        except BaseException as e:
            errors.append(f"producer thread {p} (acquire/commit): {e!r}")

    threads = [threading.Thread(target=guard_thread if p == 0 else put_thread, args=(p,))
               for p in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), f"producer threads hang: {errors}"
    assert errors == [], errors
    _assert_gil_off("producer process, at the end")
    ring.mark_finished()
    ring.close()


@pytest.mark.timeout_s(300)
@pytest.mark.parametrize("fast", [False, True], ids=["compat", "fast"])
def test_threads_on_both_sides_two_processes_exact(shm_id: str, fast: bool) -> None:
    _assert_gil_off("consumer process")
    ring = ShmTraceRing.create(shm_id, CAPACITY, SLOT, fast=fast)
    errors: list[str] = []
    received: dict[int, tuple[int, int]] = {}  # message index -> (producer thread, seq)
    duplicates: list[int] = []
    lock = threading.Lock()
    finished = [0]
    queues: list[queue.Queue[Any]] = [queue.Queue() for _ in range(RELEASERS)]
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)

    def accessor(a: int) -> None:
        rnd = random.Random(a)
        try:
            while True:
                r = ring.access(timeout=60)
                if type(r) is Data:
                    queues[rnd.randrange(RELEASERS)].put(r.guard)
                elif type(r) is Finished:
                    with lock:
                        finished[0] += 1
                    return
                else:
                    errors.append(f"accessor {a}: {r!r}")
                    return
        except BaseException as e:
            errors.append(f"accessor {a}: {e!r}")

    def releaser(q: queue.Queue[Any]) -> None:
        while True:
            g = q.get()
            if g is None:
                return
            try:
                buf = bytes(g.buf)
                p, seq, check = _MSG.unpack_from(buf)
                if p >= PRODUCERS or seq >= PER_PRODUCER or buf != _message(p, seq):
                    errors.append(f"message {g.index}: wrong bytes (producer field {p:#x}, "
                                  f"seq {seq}, check {check:#x}, {len(buf)} bytes)")
                with lock:
                    if g.index in received:
                        duplicates.append(g.index)
                    received[g.index] = (p, seq)
            except BaseException as e:
                errors.append(f"releaser: {e!r}")
            finally:
                g.release()

    rel = [threading.Thread(target=releaser, args=(q,)) for q in queues]
    acc = [threading.Thread(target=accessor, args=(a,)) for a in range(ACCESSORS)]
    child = SPAWN.Process(target=producer_process, args=(shm_id,), daemon=True)
    try:
        for t in (*rel, *acc):
            t.start()
        child.start()
        [code] = join_all([child], 240)
        deadline = time.monotonic() + 60
        for t in acc:
            t.join(max(0.1, deadline - time.monotonic()))
    finally:
        for q in queues:
            q.put(None)
        for t in rel:
            t.join(30)
        sys.setswitchinterval(old_interval)
    assert code == 0, f"producer process exit code {code} (None: killed after 240 s): {errors}"
    assert not any(t.is_alive() for t in (*acc, *rel)), f"consumer threads hang: {errors}"
    assert errors == []
    assert duplicates == [], f"delivered twice: {duplicates[:10]}"
    total = PRODUCERS * PER_PRODUCER
    assert sorted(received) == list(range(total)), (
        f"{len(received)} of {total} messages arrived exactly once; missing: "
        f"{sorted(set(range(total)) - set(received))[:10]}")
    for p in range(PRODUCERS):
        seqs = [seq for _, (q, seq) in sorted(received.items()) if q == p]
        assert seqs == list(range(PER_PRODUCER)), f"producer thread {p}: lost or out of order"
    assert finished[0] == ACCESSORS, "every accessor thread sees Finished"
    h = ring.header()
    assert h["read_idx"] == h["reserved_idx"] == h["write_idx"] == total
    s = ring.stats()
    assert s["producer"]["messages"] == s["consumer"]["messages"] == total
    assert s["producer"]["bytes"] == s["consumer"]["bytes"] == sum(
        len(_message(p, seq)) for p in range(PRODUCERS) for seq in range(PER_PRODUCER))
    assert s["backlog"] == 0
    _assert_gil_off("consumer process, at the end")
    ring.close()
