"""Child processes of the queue tests (module-level so ``spawn`` can import them).

The kill battery's bookkeeping lives in a ShmMemory segment (``Ledger``): each producer
``uid`` publishes ``acked[uid]`` = how many of its puts returned; each consumer ``cid`` keeps
``claimed[cid]`` = the id of the message it is inside get() for (set while its slot is
claimed, before the slot is released; cleared after the message is in its ledger) and an
append-only ledger of the ids it got (the id first, then the count).  A consumer killed with
``claimed[cid] != 0`` may have lost exactly that message (released but not recorded) or not
(redelivered): the battery's accounting allows exactly that and nothing else.
"""

from __future__ import annotations

import os
import queue as _queue
import random
import struct
import time
from typing import Any

from ctshm import QueueFinished, ShmMemory, ShmQueue

MAX_PRODUCERS = 128
MAX_CONSUMERS = 128
LEDGER_ENTRIES = 1 << 17
_ACKED = 0
_CLAIMED = _ACKED + 8 * MAX_PRODUCERS
_STOP = _CLAIMED + 8 * MAX_CONSUMERS
_LEDGERS = _STOP + 64
LEDGER_BYTES = 8 * (1 + LEDGER_ENTRIES)
LEDGER_SIZE = _LEDGERS + MAX_CONSUMERS * LEDGER_BYTES
MSG_WORDS = 128  # a 1 KiB message: its id 128 times (a partial read shows)


def message(uid: int, seq: int) -> bytes:
    return struct.pack("<Q", (uid << 32) | seq) * MSG_WORDS


class Ledger:
    def __init__(self, mem: ShmMemory) -> None:
        self.mem = mem
        self.v = mem.buf.cast("Q")

    def acked(self, uid: int) -> int:
        return int(self.v[(_ACKED // 8) + uid])

    def set_acked(self, uid: int, n: int) -> None:
        self.v[(_ACKED // 8) + uid] = n

    def claimed(self, cid: int) -> int:
        return int(self.v[(_CLAIMED // 8) + cid])

    def set_claimed(self, cid: int, mid: int) -> None:
        self.v[(_CLAIMED // 8) + cid] = mid

    def stop(self) -> bool:
        return bool(self.v[_STOP // 8])

    def set_stop(self) -> None:
        self.v[_STOP // 8] = 1

    def record(self, cid: int, mid: int) -> None:
        base = (_LEDGERS + cid * LEDGER_BYTES) // 8
        n = self.v[base]
        self.v[base + 1 + n] = mid
        self.v[base] = n + 1

    def entries(self, cid: int) -> list[int]:
        base = (_LEDGERS + cid * LEDGER_BYTES) // 8
        n = self.v[base]
        return list(self.v[base + 1:base + 1 + n])


def battery_producer(qid: str, lid: str, uid: int) -> None:
    q = ShmQueue.open(qid)
    led = Ledger(ShmMemory.open_readwrite(lid))
    seq = 0
    while not led.stop():
        q.put(message(uid, seq))
        seq += 1
        led.set_acked(uid, seq)
    os._exit(0)


def battery_consumer(qid: str, lid: str, cid: int) -> None:
    q = ShmQueue.open(qid)
    led = Ledger(ShmMemory.open_readwrite(lid))
    bad = 0

    rng = random.Random(cid)

    def into(view: memoryview) -> bytes:
        data = view.tobytes()
        led.set_claimed(cid, struct.unpack_from("<Q", data)[0] or 1)
        if rng.random() < 0.05:
            time.sleep(0.002)  # widen the claimed window: more kills land inside get()
        return data

    while True:
        try:
            data = q.get_with(into, 5.0)
        except QueueFinished:
            break
        except _queue.Empty:
            continue
        words = struct.unpack(f"<{MSG_WORDS}Q", data) if len(data) == 8 * MSG_WORDS else ()
        if len(set(words)) != 1:
            bad += 1  # a partial or torn message
            led.set_claimed(cid, 0)
            continue
        led.record(cid, words[0])
        led.set_claimed(cid, 0)
    os._exit(3 if bad else 0)


# -- small children of the behaviour tests ---------------------------------------------------
def put_range(qid: str, start: int, count: int) -> None:
    q = ShmQueue.open(qid)
    for i in range(start, start + count):
        q.put(struct.pack("<Q", i))
    q.close()


def get_count(qid: str, count: int, out: Any) -> None:
    q = ShmQueue.open(qid)
    got = [struct.unpack("<Q", q.get(timeout=30))[0] for _ in range(count)]
    out.put(got)
    q.close()


def use_pickled(q: ShmQueue, n: int) -> int:
    """Pool/Process target: the handle arrived pickled (re-opened by id)."""
    for i in range(n):
        q.put(b"child %d" % i)
    return os.getpid()


def die_holding_claim(qid: str, kind: str) -> None:
    """Claim a slot (put: WRITING, get: READING) and die there (SIGKILL equivalent)."""
    q = ShmQueue.open(qid)
    if kind == "put":
        class DieOnLengthStore:
            """The queue's word view, except that storing a slot's length (after the claim
            and the copy, before the publish) kills the process."""

            def __init__(self, v: Any) -> None:
                self.v = v

            def __getitem__(self, i: int) -> int:
                return int(self.v[i])

            def __setitem__(self, i: int, x: int) -> None:
                if i >= q._w0 and (i - q._w0) % q._sw == 1:
                    os._exit(9)
                self.v[i] = x

        q._v = DieOnLengthStore(q._v)
        q.put(b"never published")
    else:
        def die(view: memoryview) -> bytes:
            os._exit(9)
        q.get_with(die, 10.0)
    os._exit(1)
