"""``ctshm.layout.read_header`` / ``read_len_record``: the one reader of a live ring header
(used by ``ctshm.ops``), against rings made by ShmTraceRing, words written by hand, and a
writer process that keeps changing indices and a peer's (pid, start) pair."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ctshm import ShmTraceRing, _liveness, layout as L

from .helpers import REPO_ROOT, SHM_DIR, drain

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm (Linux)")


@contextmanager
def mapped(name: str, writable: bool = False, size: int = L.HEADER_WORDS_SIZE
           ) -> Iterator[memoryview]:
    """The first ``size`` bytes of the shm object ``name``, mapped (another mapping than the
    ring's own)."""
    fd = os.open(SHM_DIR + "/" + name.lstrip("/"), os.O_RDWR if writable else os.O_RDONLY)
    try:
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
    finally:
        os.close(fd)
    v = memoryview(m)
    try:
        yield v
    finally:
        v.release()
        m.close()


def put_word(v: memoryview, word: int, value: int) -> None:
    struct.pack_into("<Q", v, 8 * word, value)


def test_read_header_of_a_live_ring(shm_id: str) -> None:
    me = L.PeerId(*_liveness.me())
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        for n in (5, 100, 7):
            ring.put(b"x" * n)
        data = ring.access(5)  # message 0 reserved by this consumer
        try:
            with mapped(ring.name) as v:
                h = L.read_header(v)
                assert (h.write_idx, h.read_idx, h.reserved_idx) == (3, 0, 1)
                assert (h.capacity, h.slot_size, h.finished) == (4, L.HUGE_PAGE_SIZE, 0)
                assert h.is_ctshm and h.magic == L.MAGIC and h.version == L.VERSION
                assert h.ext_state == L.STATE_READY and h.nonce != 0
                assert h.creator == me and h.producer == me and h.consumer == me
                assert h.len_records == 4 and h.dead_pid == 0 and h.backlog == 3
                assert h.indices_consistent and h.peers_consistent and h.crash_message == b""
                assert h.words().keys() == L.WORDS.keys()
                assert h.words()["creator_pid"] == me.pid
                hdr = ring.header()
                for k in ("write_idx", "read_idx", "reserved_idx", "capacity", "slot_size",
                          "finished", "creator_pid", "producer_pid", "consumer_pid"):
                    assert h.words()[k] == hdr[k], k
            with mapped(ring.name, size=L.len_record_offset(4)) as v:
                assert [L.read_len_record(v, k) for k in range(4)] == [
                    (1, 5), (2, 100), (3, 7), (0, 0)]
            # A buffer read with pread decodes the same (what ops does).
            raw = _pread(ring.name, L.len_record_offset(4))
            assert L.read_len_record(raw, 1) == (2, 100)
        finally:
            data.guard.release()  # type: ignore[union-attr]
        assert drain(ring) == 2


def _pread(name: str, n: int) -> bytes:
    fd = os.open(SHM_DIR + name, os.O_RDONLY)
    try:
        return os.pread(fd, n, 0)
    finally:
        os.close(fd)


def test_crash_details_and_message(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"abc")
        ring.notify_crash(11, 0xDEAD0000, 2, message="segfault in tracer")
        with mapped(ring.name) as v:
            h = L.read_header(v)
        assert h.finished == L.FIN_CRASHED
        assert (h.crash_signal, h.crash_addr, h.crash_operation) == (11, 0xDEAD0000, 2)
        assert h.crash_message == b"segfault in tracer"
        assert h.crash_w == 2  # write_idx + 1 when recorded
        with mapped(ring.name, writable=True) as w:  # a length beyond MSG_MAX is clamped
            L.MSG_LEN.pack_into(w, L.MSG_OFF, 5000)
            h = L.read_header(w)
        assert len(h.crash_message) == L.MSG_MAX
        assert drain(ring) == 1  # committed before the crash: still delivered


def test_stats_words(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096, fast=True) as ring, \
            mapped(ring.name, writable=True) as w:
        for k in range(len(L.STAT_FIELDS)):
            put_word(w, L.PRODUCER_STATS + k, 10 + k)
            put_word(w, L.CONSUMER_STATS + k, 20 + k)
        put_word(w, L.WRITE_IDX, 2)
        put_word(w, L.RESERVED_IDX, 1)
        h = L.read_header(w)
        # version 2: the message counts are write_idx and reserved_idx (the words unused)
        assert h.version == 2
        assert h.producer_stats == L.SideStats(2, 11, 12, 13, 14)
        assert h.consumer_stats == L.SideStats(1, 21, 22, 23, 24)
        assert h.consumer_stats.as_dict() == dict(zip(L.STAT_FIELDS, (1, 21, 22, 23, 24)))
        put_word(w, L.EXT_VERSION, 1)  # an older ctshm's ring: every counter stored
        for k in range(len(L.STAT_FIELDS)):
            put_word(w, L.PRODUCER_STATS_V1 + k, 30 + k)
            put_word(w, L.CONSUMER_STATS_V1 + k, 40 + k)
        h = L.read_header(w)
        assert h.producer_stats == L.SideStats(30, 31, 32, 33, 34)
        assert h.consumer_stats == L.SideStats(40, 41, 42, 43, 44)
        for word in (L.WRITE_IDX, L.RESERVED_IDX):
            put_word(w, word, 0)
        put_word(w, L.EXT_VERSION, L.VERSION)


def test_the_two_sides_statistics_never_share_a_cache_line() -> None:
    p = {(8 * (L.PRODUCER_STATS + k)) // 64 for k in range(len(L.STAT_FIELDS))}
    c = {(8 * (L.CONSUMER_STATS + k)) // 64 for k in range(len(L.STAT_FIELDS))}
    others = {8 * w // 64 for w in (L.WRITE_IDX, L.READ_IDX, L.RESERVED_IDX, L.C_SLEEP,
                                    L.P_SLEEP)}
    assert len(p) == 1 and len(c) == 1 and not p & c and not (p | c) & others
    assert 8 * (L.CONSUMER_STATS + len(L.STAT_FIELDS)) <= L.MSG_OFF


def test_inconsistent_indices_and_stale_pid_pair(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring, mapped(ring.name, writable=True) as w:
        put_word(w, L.WRITE_IDX, 9)  # write - read = 9 > capacity 4: never consistent
        h = L.read_header(w)
        assert not h.indices_consistent and (h.write_idx, h.read_idx) == (9, 0)
        put_word(w, L.WRITE_IDX, 0)
        # A writer stopped between "pid 0" and the new pid: no peer, whatever start says.
        put_word(w, L.PRODUCER_PID, 0)
        put_word(w, L.PRODUCER_START, 12345)
        assert L.read_header(w).producer.pid == 0
        assert L.read_header(w).indices_consistent


def test_zero_snapshot_and_bad_arguments() -> None:
    z = L.HeaderSnapshot()
    assert z.words() == dict.fromkeys(L.WORDS, 0) and not z.is_ctshm and z.backlog == 0
    with pytest.raises(ValueError, match=r"read_header: view has 100 bytes, the ring header "
                                         r"needs at least 4096"):
        L.read_header(bytes(100))
    with pytest.raises(ValueError, match=r"read_len_record\(slot=2\): view has 4096 bytes"):
        L.read_len_record(bytes(4096), 2)
    with pytest.raises(ValueError, match="slot -1 is outside the length records"):
        L.read_len_record(bytes(8192), -1)
    with pytest.raises(TypeError, match="slot must be an int, not str"):
        L.read_len_record(bytes(8192), "1")  # type: ignore[arg-type]
    words = memoryview(bytearray(L.HEADER_WORDS_SIZE)).cast("Q")  # a 'Q' view works too
    words[L.CAPACITY] = 3
    assert L.read_header(words).capacity == 3


_WRITER = """
import mmap, os, select, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096)
os.close(fd)
q = memoryview(m).cast("Q")
W, R, RES, PID = (int(a) for a in sys.argv[2:6])
print("ready", flush=True)
k = 0
while True:
    k += 1
    q[PID] = 0                      # the peer protocol: pid 0, start, pid
    q[PID + 1] = k * 1000 + 7
    q[PID] = k
    q[W] = k                        # producer commits, consumer reserves, then releases
    q[RES] = k
    q[R] = k
    if k % 256 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
q.release()
m.close()
print(k, flush=True)
"""


def test_snapshot_while_a_writer_process_runs(shm_id: str) -> None:
    """A process keeps publishing (pid k, start k*1000+7) pairs (k never repeats) and
    advancing write, reserved, read in that order: every snapshot has read <= reserved <=
    write, and a start that belongs to its pid unless it says ``peers_consistent=False``
    (this writer re-registers every microsecond; a real peer registers once)."""
    path = f"{SHM_DIR}/{shm_id}_t"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, L.HEADER_WORDS_SIZE)
        os.pwrite(fd, (1 << 40).to_bytes(8, "little"), 8 * L.CAPACITY)  # never "inconsistent"
    finally:
        os.close(fd)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", _WRITER, path, str(L.WRITE_IDX),
                          str(L.READ_IDX), str(L.RESERVED_IDX), str(L.PRODUCER_PID)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline() == "ready\n"
        torn, disorder, pids = [], [], set()
        with mapped(f"/{shm_id}_t") as v:
            # Until the reader has seen the writer move many times (or a bound on reads).
            for _ in range(200_000):
                if len(pids) >= 2000:
                    break
                h = L.read_header(v)
                pid, start = h.producer
                if pid and start != pid * 1000 + 7 and h.peers_consistent:
                    torn.append((pid, start))  # a torn pair the snapshot calls consistent
                if not h.read_idx <= h.reserved_idx <= h.write_idx:
                    disorder.append((h.read_idx, h.reserved_idx, h.write_idx))
                pids.add(pid)
        p.stdin.write("stop\n")
        p.stdin.close()
        out = p.stdout.read()
        assert p.wait(60) == 0
        assert int(out) > 0
        assert torn == [], f"{len(torn)} torn (pid, start) pairs, e.g. {torn[:3]}"
        assert disorder == [], f"{len(disorder)} snapshots out of order, e.g. {disorder[:3]}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
        os.unlink(path)
