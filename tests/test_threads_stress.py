"""Threads on one ring: 4 producer threads on one producer handle, 8 threads releasing
consumer guards in any order.  Meant for free-threaded CPython (run with PYTHON_GIL=0 by
tools/cpython/run-freethreaded.sh), where the threads really run at once; it runs on every
interpreter.

The 4 producers take turns under a lock of this test's own: two producers racing on one
handle currently raise "still outstanding" (one producer guard per handle); when concurrent
producers on a handle serialize inside ctshm, the lock can go.
"""

from __future__ import annotations

import os
import queue
import struct
import sys
import sysconfig
import threading
import time
from typing import Any

import pytest

from ctshm import Data, Finished, ShmTraceRing

PRODUCERS = 4
RELEASERS = 8
PER_PRODUCER = 1500
_MSG = struct.Struct("<IIQ")  # producer, sequence number, check word


def _check_word(p: int, seq: int) -> int:
    return (p * 1_000_003 + seq * 7919) & 0xFFFFFFFFFFFFFFFF


@pytest.mark.timeout_s(180)
def test_four_producers_one_handle_eight_releasers(shm_id: str) -> None:
    if sysconfig.get_config_var("Py_GIL_DISABLED") and os.environ.get("PYTHON_GIL") == "0":
        # tools/cpython/run-freethreaded.sh: the threads below must really run at once.
        assert not sys._is_gil_enabled(), "the GIL is on (something re-enabled it)"
    ring = ShmTraceRing.create(shm_id, 8, 4096)
    prod = ShmTraceRing.open(shm_id, timeout=10)
    turn = threading.Lock()  # see the module docstring
    errors: list[str] = []
    received: list[tuple[int, int, int]] = []
    received_lock = threading.Lock()
    handoff: queue.Queue[Any] = queue.Queue()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # with the GIL: switch threads often

    def producer(p: int) -> None:
        try:
            for seq in range(PER_PRODUCER):
                data = _MSG.pack(p, seq, _check_word(p, seq)) + bytes([seq & 0xFF]) * (seq % 64)
                with turn:
                    prod.put(data, timeout=30)
        except BaseException as e:
            errors.append(f"producer {p}: {e!r}")

    def releaser() -> None:
        while True:
            g = handoff.get()
            if g is None:
                return
            try:
                buf = bytes(g.buf)
                p, seq, check = _MSG.unpack_from(buf)
                tail = buf[_MSG.size:]
                if check != _check_word(p, seq) or tail != bytes([seq & 0xFF]) * (seq % 64):
                    errors.append(f"message {g.index}: corrupt ({p}, {seq})")
                with received_lock:
                    received.append((g.index, p, seq))
            except BaseException as e:
                errors.append(f"releaser: {e!r}")
            finally:
                g.release()

    def accessor() -> None:
        try:
            while True:
                r = ring.access(timeout=30)
                if type(r) is Data:
                    handoff.put(r.guard)
                elif type(r) is Finished:
                    return
                else:
                    errors.append(f"accessor: {r!r}")
                    return
        except BaseException as e:
            errors.append(f"accessor: {e!r}")

    rel = [threading.Thread(target=releaser, name=f"rel{i}") for i in range(RELEASERS)]
    prods = [threading.Thread(target=producer, args=(p,), name=f"prod{p}")
             for p in range(PRODUCERS)]
    acc = threading.Thread(target=accessor, name="accessor")
    try:
        for t in (*rel, acc, *prods):
            t.start()
        deadline = time.monotonic() + 150
        for t in prods:
            t.join(max(0.1, deadline - time.monotonic()))
            assert not t.is_alive(), f"{t.name} still running: {errors}"
        prod.mark_finished()
        acc.join(max(0.1, deadline - time.monotonic()))
        assert not acc.is_alive(), f"accessor still running: {errors}"
    finally:
        for _ in rel:
            handoff.put(None)
        for t in rel:
            t.join(30)
        sys.setswitchinterval(old_interval)
    assert not any(t.is_alive() for t in rel)
    assert errors == []
    total = PRODUCERS * PER_PRODUCER
    assert len(received) == total
    # Every message exactly once, message indices 0..total-1, each producer's in order.
    assert sorted(i for i, _, _ in received) == list(range(total))
    by_index = sorted(received)
    for p in range(PRODUCERS):
        seqs = [seq for _, q, seq in by_index if q == p]
        assert seqs == list(range(PER_PRODUCER)), f"producer {p} out of order or lost"
    h = ring.header()
    assert h["read_idx"] == h["write_idx"] == total
    prod.close()
    ring.close()
