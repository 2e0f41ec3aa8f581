"""The bad-input table: every misuse gets a clear Python exception, never a crash.

Plus a randomized header-corruption loop (fixed seed, thousands of cases) run in a
subprocess, so an interpreter crash would show as a signal exit code.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import textwrap
from typing import Any, Callable

import pytest

from ctshm import (
    CorruptRingError,
    Data,
    Finished,
    ShmMemory,
    ShmTraceRing,
    layout as L,
)
from ctshm.layout import HEADER_SIZE, HUGE_PAGE_SIZE, MAX_LEN_RECORDS

from .helpers import REPO_ROOT

# ---------------------------------------------------------------------------------------------
# Construction arguments: (callable(id) -> raises, exception type, message fragment)
# ---------------------------------------------------------------------------------------------

BadCase = tuple[Callable[[str], Any], type, str]

CREATE_CASES: dict[str, BadCase] = {
    "ring id empty": (lambda i: ShmTraceRing.create("", 1, 1), ValueError, "empty"),
    "ring id only slash": (lambda i: ShmTraceRing.create("/", 1, 1), ValueError, "empty"),
    "ring id NUL": (lambda i: ShmTraceRing.create(i + "\0x", 1, 1), ValueError, "NUL"),
    "ring id slash inside": (lambda i: ShmTraceRing.create(i + "/x", 1, 1), ValueError, "'/'"),
    "ring id too long": (lambda i: ShmTraceRing.create("x" * 300, 1, 1), ValueError,
                         "too long"),
    "ring id too long for its semaphores": (
        lambda i: ShmTraceRing.create("x" * 246, 1, 1), ValueError, "_filled"),
    "ring id bytes": (lambda i: ShmTraceRing.create(b"abc", 1, 1), TypeError, "str"),  # type: ignore[arg-type]
    "ring id None": (lambda i: ShmTraceRing.create(None, 1, 1), TypeError, "str"),  # type: ignore[arg-type]
    "capacity 0": (lambda i: ShmTraceRing.create(i, 0, 1), ValueError, "capacity"),
    "capacity negative": (lambda i: ShmTraceRing.create(i, -3, 1), ValueError, "capacity"),
    "capacity absurd": (lambda i: ShmTraceRing.create(i, 10**9, 1), ValueError, "too large"),
    "capacity float": (lambda i: ShmTraceRing.create(i, 2.0, 1), TypeError, "capacity"),  # type: ignore[arg-type]
    "capacity bool": (lambda i: ShmTraceRing.create(i, True, 1), TypeError, "capacity"),
    "slot_size 0": (lambda i: ShmTraceRing.create(i, 1, 0), ValueError, "slot_size"),
    "slot_size negative": (lambda i: ShmTraceRing.create(i, 1, -1), ValueError, "slot_size"),
    "slot_size str": (lambda i: ShmTraceRing.create(i, 1, "4096"), TypeError, "slot_size"),  # type: ignore[arg-type]
    "slot_size beyond off_t": (lambda i: ShmTraceRing.create(i, 1, 2**63), ValueError,
                               "largest"),
    "total size overflows off_t": (
        lambda i: ShmTraceRing.create(i, MAX_LEN_RECORDS, 2**50), ValueError, "address space"),
    "open: ring does not exist": (lambda i: ShmTraceRing.open(i, timeout=0.05),
                                  FileNotFoundError, "no such ring"),
    "open: timeout negative": (lambda i: ShmTraceRing.open(i, timeout=-1), ValueError,
                               "timeout"),
    "open: capacity 0": (lambda i: ShmTraceRing.open(i, 0, timeout=0), ValueError, "capacity"),
    "ring wait_mode 0": (lambda i: ShmTraceRing.create(i, 1, 1, wait_mode=0),  # type: ignore[arg-type]
                         TypeError, "_t': wait_mode must be one of"),
    "ring wait_mode []": (lambda i: ShmTraceRing.create(i, 1, 1, wait_mode=[]),  # type: ignore[arg-type]
                          TypeError, "_t': wait_mode must be one of"),
    "ring wait_mode unknown": (lambda i: ShmTraceRing.create(i, 1, 1, wait_mode="fast"),
                               ValueError, "_t': unknown wait mode 'fast'"),
    "open: wait_mode 0": (lambda i: ShmTraceRing.open(i, timeout=0, wait_mode=0),  # type: ignore[arg-type]
                          TypeError, "_t': wait_mode must be one of"),
    "spin 2**1024": (lambda i: ShmTraceRing.create(i, 1, 1, spin=2**1024), ValueError,
                     "_t': spin must be below 1e+09 seconds"),  # was OverflowError
    "spin inf": (lambda i: ShmTraceRing.create(i, 1, 1, spin=float("inf")), ValueError,
                 "_t': spin must be below"),  # a wait would never sleep (nor time out)
    "open: spin 2**1024": (lambda i: ShmTraceRing.open(i, timeout=0, spin=2**1024),
                           ValueError, "_t': spin must be below"),
    "memory id empty": (lambda i: ShmMemory.create_readonly("", 10), ValueError, "empty"),
    "memory id NUL": (lambda i: ShmMemory.create_readonly("a\0", 10), ValueError, "NUL"),
    "memory id too long": (lambda i: ShmMemory.create_readonly("m" * 256, 10), ValueError,
                           "too long"),
    "memory size 0": (lambda i: ShmMemory.create_readonly(i, 0), ValueError, "size"),
    "memory size float": (lambda i: ShmMemory.create_readonly(i, 1.5), TypeError, "size"),  # type: ignore[arg-type]
    "memory open missing": (lambda i: ShmMemory.open_readwrite(i), FileNotFoundError,
                            "No such file"),
}


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_bad_construction(case: str, shm_id: str) -> None:
    fn, exc, fragment = CREATE_CASES[case]
    with pytest.raises(exc) as ei:
        fn(shm_id)
    assert fragment in str(ei.value)
    assert not [e for e in os.listdir("/dev/shm") if shm_id in e], "nothing left behind"


def test_absurd_but_representable_size_fails_cleanly(shm_id: str) -> None:
    # ~2**49 bytes passes ftruncate on tmpfs (sparse) but exceeds the 47-bit user address
    # space of x86_64/aarch64: mmap fails with an OSError and the half-made ring is cleaned up.
    with pytest.raises(OSError):
        ShmTraceRing.create(shm_id, MAX_LEN_RECORDS, 1 << 32)
    assert not [e for e in os.listdir("/dev/shm") if shm_id in e]


# ---------------------------------------------------------------------------------------------
# Things that are not rings, and corrupt or hostile headers
# ---------------------------------------------------------------------------------------------


def _write_file(name: str, data: bytes, size: int | None = None) -> None:
    path = "/dev/shm/" + name
    with open(path, "wb") as f:
        f.write(data)
        if size is not None:
            f.truncate(size)


def test_small_random_file_is_not_a_ring(shm_id: str) -> None:
    _write_file(f"{shm_id}_t", os.urandom(100))
    try:
        with pytest.raises(TimeoutError, match="smaller than a ring header"):
            ShmTraceRing.open(shm_id, timeout=0.1)
    finally:
        os.unlink(f"/dev/shm/{shm_id}_t")


def test_memory_segment_is_not_a_ring(shm_id: str) -> None:
    # A ShmMemory whose *name* collides with a ring name: '/X_t' made through id 'X_t'[:-2]...
    with ShmMemory.create_readonly(shm_id + "_t", 4096) as m:  # object /ID_t_m
        assert m.name == f"/{shm_id}_t_m"
        with pytest.raises(FileNotFoundError):
            ShmTraceRing.open(shm_id, timeout=0.05)  # /ID_t does not exist
    _write_file(f"{shm_id}_t", b"", HEADER_SIZE + HUGE_PAGE_SIZE)  # right size, zero header
    try:
        with pytest.raises(TimeoutError, match="not initialized"):
            ShmTraceRing.open(shm_id, timeout=0.1)
    finally:
        os.unlink(f"/dev/shm/{shm_id}_t")


def _corrupt(shm_id: str, word: int, value: int) -> None:
    with open(f"/dev/shm/{shm_id}_t", "r+b") as f:
        f.seek(8 * word)
        f.write(struct.pack("<Q", value))


@pytest.mark.parametrize("word,value,fragment", [
    (L.CAPACITY, 0, "capacity=0"),
    (L.CAPACITY, 5, "bytes, but the object is"),
    (L.SLOT_SIZE, 4096, "not a multiple of 2 MiB"),
    (L.SLOT_SIZE, 4 * HUGE_PAGE_SIZE, "bytes, but the object is"),
    (L.WRITE_IDX, 7, "need read <= reserved <= write"),
    (L.READ_IDX, 1, "need read <= reserved <= write"),
    (L.FINISHED, 9, "finished=9"),
])
def test_corrupt_header_refused_at_open(shm_id: str, word: int, value: int,
                                        fragment: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096):
        _corrupt(shm_id, word, value)
        with pytest.raises(CorruptRingError, match=fragment):
            ShmTraceRing.open(shm_id, timeout=0.5)


def test_corruption_after_open_is_reported(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"a")
        _corrupt(shm_id, L.WRITE_IDX, 1000)  # hostile peer: write_idx jumps
        with pytest.raises(CorruptRingError, match="more than capacity"):
            ring.access(0)


def test_bad_length_record_skips_the_message(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"a")
        ring.put(b"b")
        _corrupt(shm_id, L.LEN_WORD + 1, 2**40)  # slot 0's length: beyond the slot
        with pytest.raises(CorruptRingError, match="length record"):
            ring.access(1)
        assert ring.get(1) == b"b"  # the ring keeps going


# ---------------------------------------------------------------------------------------------
# Misuse of live objects
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ring(shm_id: str) -> Any:
    r = ShmTraceRing.create(shm_id, 2, 4096)
    yield r
    r.close()


def test_commit_more_than_slot(ring: ShmTraceRing) -> None:
    g = ring.acquire()
    with pytest.raises(ValueError, match="slot holds"):
        g.commit(ring.slot_size + 1)
    g.abort()


def test_acquire_size_beyond_slot(ring: ShmTraceRing) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ring.acquire(size=ring.slot_size + 1)
    with pytest.raises(TypeError):
        ring.acquire(size="1")  # type: ignore[arg-type]


def test_guards_refuse_pickling_with_what_to_send(ring: ShmTraceRing) -> None:
    # Was: a bare "cannot pickle 'memoryview' object".
    g = ring.acquire()
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError) as info:
            pickle.dumps(g, protocol=proto)
        assert str(info.value).startswith(f"ProducerGuard for message 0 of {ring.name!r} cannot "
                                          "be pickled"), info.value
        assert "send bytes(guard.buf) instead" in str(info.value)
    g.commit(1)
    r = ring.access(1)
    assert isinstance(r, Data)
    with r.guard as c, pytest.raises(TypeError, match=r"ConsumerGuard for message 0 of "
                                     r"'/.*_t' cannot be pickled: .* bytes\(guard.buf\)"):
        pickle.dumps(c)


def test_memory_reserve_offset_none_names_the_segment(shm_id: str) -> None:
    with ShmMemory.create_readwrite(shm_id, 8192) as m:
        with pytest.raises(TypeError, match=rf"ShmMemory '/{shm_id}_m': reserve\(offset=\) "
                           r"must be an int \(0: from the start\), not NoneType"):
            m.reserve(None)  # type: ignore[arg-type]
        assert m.reserve(0, None) is True  # length=None: to the end


def test_commit_after_abort(ring: ShmTraceRing) -> None:
    g = ring.acquire()
    g.abort()
    with pytest.raises(ValueError, match="already committed or aborted"):
        g.commit()


def test_write_to_consumer_view(ring: ShmTraceRing) -> None:
    ring.put(b"abc")
    r = ring.access(1)
    assert isinstance(r, Data)
    with pytest.raises(TypeError, match="read-only"):
        r.guard.buf[0] = 0
    r.guard.release()


def test_write_to_read_only_memory(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 100) as m, \
            pytest.raises(TypeError, match="read-only"):
        m.buf[:3] = b"abc"


def test_use_after_close_memory(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 100)
    m.close()
    for call in (lambda: m.buf, lambda: len(m), lambda: m.fileno()):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_wrong_types(ring: ShmTraceRing) -> None:
    with pytest.raises(TypeError):
        ring.put(12345)
    with pytest.raises(TypeError, match="timeout"):
        ring.access("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        ring.access(float("nan"))
    with pytest.raises(TypeError, match="timeout"):
        ring.acquire(timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="notify_crash"):
        ring.notify_crash(2**40, 0, 0)
    with pytest.raises(ValueError, match="notify_crash"):
        ring.notify_crash(1, -1, 0)


def test_second_mark_finished_and_after_finished(ring: ShmTraceRing) -> None:
    ring.mark_finished()
    with pytest.raises(RuntimeError, match="already finished"):
        ring.mark_finished()
    with pytest.raises(RuntimeError, match="finished"):
        ring.acquire()
    # access after Finished keeps answering Finished (every consumer thread must see it)
    assert isinstance(ring.access(0), Finished)
    assert isinstance(ring.access(0), Finished)


def test_second_consumer_process_refused(ring: ShmTraceRing, shm_id: str) -> None:
    ring.access(0)  # this process registers as the consumer
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {REPO_ROOT!r})
        from ctshm import ShmTraceRing
        r = ShmTraceRing.open({shm_id!r}, timeout=5)
        try:
            r.access(0)
        except RuntimeError as e:
            print("refused:", e)
        r.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "already has a live consumer" in out.stdout


def test_create_existing_live_ring(ring: ShmTraceRing, shm_id: str) -> None:
    with pytest.raises(FileExistsError, match="ring exists"):
        ShmTraceRing.create(shm_id, 2, 4096)


# ---------------------------------------------------------------------------------------------
# Randomized header corruption (in a subprocess: a crash would be a signal exit)
# ---------------------------------------------------------------------------------------------

_FUZZ = textwrap.dedent("""
    import random, struct, sys, collections
    sys.path.insert(0, {root!r})
    from ctshm import ShmTraceRing, layout as L
    rnd = random.Random({seed})
    words = [L.WRITE_IDX, L.READ_IDX, L.RESERVED_IDX, L.CAPACITY, L.SLOT_SIZE, L.FINISHED,
             6, 7, 8, L.EXT_MAGIC, L.EXT_STATE, L.PRODUCER_PID, L.PRODUCER_START,
             L.CONSUMER_PID, L.CONSUMER_START, L.DEAD_PID, L.MSG_OFF // 8, L.LEN_WORD,
             L.LEN_WORD + 1, L.LEN_WORD + 2, L.LEN_WORD + 3]
    outcomes = collections.Counter()
    expected = (ValueError, RuntimeError, OSError, TimeoutError, TypeError)

    def values(cap):
        return [0, 1, 2, cap, cap + 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1,
                rnd.getrandbits(64), rnd.getrandbits(8)]

    for case in range({cases}):
        name = f"{{sys.argv[1]}}f"
        cap = rnd.choice([1, 2, 3])
        owner = ShmTraceRing.create(name, cap, 4096, replace=True)
        for i in range(rnd.randint(0, cap)):
            owner.put(bytes([i]) * rnd.randint(0, 64))
        before_open = rnd.random() < 0.5
        ring = None
        def corrupt():
            for _ in range(rnd.randint(1, 3)):
                w = rnd.choice(words)
                struct.pack_into("<Q", owner._hv, 8 * w, rnd.choice(values(cap)))
        try:
            if before_open:
                corrupt()
            ring = ShmTraceRing.open(name, timeout=0)
            if not before_open:
                corrupt()
            for op in rnd.sample(["access", "access", "put", "acquire", "header", "finish",
                                  "crash", "get"], 5):
                try:
                    if op == "access":
                        r = ring.access(0)
                        g = getattr(r, "guard", None)
                        if g is not None:
                            bytes(g.buf); g.release()
                    elif op == "put":
                        ring.put(b"x" * rnd.randint(0, 100), timeout=0)
                    elif op == "acquire":
                        g = ring.acquire(timeout=0, size=rnd.randint(0, 4096)); g.abort()
                    elif op == "header":
                        ring.header(); repr(ring)
                    elif op == "finish":
                        ring.mark_finished()
                    elif op == "crash":
                        ring.notify_crash(rnd.randint(0, 64), rnd.getrandbits(64), 1)
                    else:
                        ring.get(0)
                    outcomes[op + ":ok"] += 1
                except expected as e:
                    outcomes[op + ":" + type(e).__name__] += 1
                except EOFError as e:
                    outcomes[op + ":" + type(e).__name__] += 1
        except expected as e:
            outcomes["open:" + type(e).__name__] += 1
        finally:
            if ring is not None:
                ring.close()
            owner.close()
    print(sum(outcomes.values()), dict(sorted(outcomes.items())))
""")


@pytest.mark.timeout_s(600)
def test_randomized_header_corruption_never_crashes(shm_id: str) -> None:
    cases = int(os.environ.get("CTSHM_FUZZ_CASES", "3000"))
    code = _FUZZ.format(root=REPO_ROOT, seed=20261127, cases=cases)
    out = subprocess.run([sys.executable, "-c", code, shm_id], capture_output=True, text=True,
                         timeout=540)
    assert out.returncode == 0, f"exit {out.returncode} (negative = killed by a signal):\n" \
                                f"{out.stderr[-3000:]}"
    total = int(out.stdout.split()[0])
    assert total >= cases, out.stdout
    print(f"\nheader corruption: {cases} rings, outcomes {out.stdout.strip()}")
