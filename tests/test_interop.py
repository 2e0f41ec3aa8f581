"""Byte-level interoperability with the Rust original (``../shared/seedref``).

Both directions, the creator on either side, finish and crash paths, payload lengths
0, 5, 8, 9, 4096 and 1 MiB, hundreds of messages through a small ring, and ShmMemory.
The peer is built once per session with ``../shared/seedref/build.sh`` (or taken from
``SEEDREF_BIN``); these tests skip only where cargo is truly absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from ctshm import CrashDetails, Crashed, Data, Finished, ShmMemory, ShmTraceRing
from ctshm.layout import CRASH_OFF as _CRASH_OFF
from ctshm.layout import EXT_OFF, HEADER_SIZE, HEADER_STRUCT_SIZE, HUGE_PAGE_SIZE

from . import ring_children as rc
from .helpers import REPO_ROOT

pytestmark = pytest.mark.seedref

SEEDREF_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "seedref")
MiB = 1 << 20
LENGTHS = [0, 5, 8, 9, 4096, MiB]


def _cargo() -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/root/.cargo/bin" + os.pathsep + \
        os.path.expanduser("~/.cargo/bin")
    return shutil.which("cargo", path=path)


@pytest.fixture(scope="session")
def seedref() -> str:
    env_bin = os.environ.get("SEEDREF_BIN")
    if env_bin and os.access(env_bin, os.X_OK):
        return env_bin
    if _cargo() is None:
        pytest.skip("cargo is not installed: cannot build the Rust peer ../shared/seedref")
    if not os.path.exists(os.path.join(SEEDREF_DIR, "build.sh")):
        pytest.skip(f"the Rust peer's sources are missing ({SEEDREF_DIR})")
    target = os.environ.get("CARGO_TARGET_DIR", "/tmp/seedref-target")
    out = subprocess.run(["bash", os.path.join(SEEDREF_DIR, "build.sh")], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "CARGO_TARGET_DIR": target})
    assert out.returncode == 0, f"seedref build failed:\n{out.stderr}"
    path = out.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


def run_peer(seedref: str, *args: Any, timeout: float = 60) -> dict[str, Any]:
    out = subprocess.run([seedref, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"seedref {args} exited {out.returncode}:\n{out.stderr}"
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def start_peer(seedref: str, *args: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([seedref, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def finish_peer(p: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"seedref hung:\n{err}") from None
    assert p.returncode == 0, f"seedref exited {p.returncode}:\n{err}"
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_layout_matches(seedref: str) -> None:
    out = subprocess.run([seedref, "layout"], capture_output=True, text=True, timeout=30)
    layout = json.loads(out.stdout)
    f = layout["fields"]
    assert layout["size_of_RingHeader"] == HEADER_STRUCT_SIZE == 72
    assert layout["HEADER_SIZE"] == HEADER_SIZE and layout["HUGE_PAGE_SIZE"] == HUGE_PAGE_SIZE
    assert [f[k]["offset"] for k in ("write_idx", "read_idx", "reserved_idx", "capacity",
                                     "slot_size", "finished")] == [0, 8, 16, 24, 32, 40]
    assert f["crash_details.signal"]["offset"] == _CRASH_OFF == 48
    assert f["crash_details.addr"]["offset"] == 56
    assert f["crash_details.operation"]["offset"] == 64
    assert EXT_OFF >= HEADER_STRUCT_SIZE  # ctshm's extension is outside the Rust struct


# ---------------------------------------------------------------------------------------------
# Rust produces -> ctshm consumes
# ---------------------------------------------------------------------------------------------


def _consume_all(ring: ShmTraceRing, count: int, plen: int) -> Any:
    for i in range(count):
        r = ring.access(30)
        assert isinstance(r, Data), (i, r)
        with r.guard as g:
            assert len(g.buf) == ring.slot_size, "a Rust slot has no length record: whole slot"
            rc.check_frame(g.buf, i, plen)
    return ring.access(30)


@pytest.mark.parametrize("plen", LENGTHS)
def test_rust_produces_python_consumes_rust_creates(seedref: str, shm_id: str, plen: int) -> None:
    count = 300 if plen <= 4096 else 20
    p = start_peer(seedref, "produce", shm_id, 3, 4096, count, plen, "--create")
    with ShmTraceRing.open(shm_id, 3, 4096, timeout=20) as ring:
        end = _consume_all(ring, count, plen)
        assert isinstance(end, Finished), end
    out = finish_peer(p)
    assert out["count"] == count and out["drained"] is True


@pytest.mark.parametrize("plen", [9, MiB])
def test_rust_produces_python_consumes_python_creates(seedref: str, shm_id: str,
                                                     plen: int) -> None:
    count = 400 if plen < MiB else 20
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        p = start_peer(seedref, "produce", shm_id, 2, 4096, count, plen, "--open")
        end = _consume_all(ring, count, plen)
        assert isinstance(end, Finished), end
        out = finish_peer(p)
        assert out["count"] == count


def test_rust_crash_details_arrive_exactly(seedref: str, shm_id: str) -> None:
    p = start_peer(seedref, "produce", shm_id, 4, 4096, 10, 16, "--crash", 7,
                   "0xffffffffffffffff", 3, "--create")
    with ShmTraceRing.open(shm_id, 4, 4096, timeout=20) as ring:
        end = _consume_all(ring, 10, 16)
        assert isinstance(end, Crashed), end
        assert end.details == CrashDetails(7, 2**64 - 1, 3) and end.pid is None
    finish_peer(p)


# ---------------------------------------------------------------------------------------------
# ctshm produces -> Rust consumes
# ---------------------------------------------------------------------------------------------


def _produce(ring: ShmTraceRing, count: int, plen: int) -> None:
    for i in range(count):
        with ring.acquire(timeout=30) as g:
            g.commit(rc.write_frame(g.buf, i, plen))


@pytest.mark.parametrize("plen", LENGTHS)
def test_python_produces_rust_consumes_python_creates(seedref: str, shm_id: str,
                                                     plen: int) -> None:
    count = 300 if plen <= 4096 else 20
    with ShmTraceRing.create(shm_id, 3, 4096) as ring:
        p = start_peer(seedref, "consume", shm_id, 3, 4096, "--expect-count", count,
                       "--expect-len", plen)
        _produce(ring, count, plen)
        ring.mark_finished()
        out = finish_peer(p)
        assert out["count"] == count and out["finished"] is True and out["errors"] == 0
        assert out["bytes"] == count * plen  # the peer sums the length fields it read


def test_python_produces_rust_consumes_rust_creates(seedref: str, shm_id: str) -> None:
    count = 500
    p = start_peer(seedref, "consume", shm_id, 2, 4096, "--create", "--expect-count", count,
                   "--expect-len", 9)
    with ShmTraceRing.open(shm_id, 2, 4096, timeout=20) as ring:
        _produce(ring, count, 9)
        ring.mark_finished()
        out = finish_peer(p)
    assert out["count"] == count and out["finished"] is True and out["errors"] == 0


def test_python_crash_reaches_rust_exactly(seedref: str, shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        p = start_peer(seedref, "consume", shm_id, 4, 4096, "--expect-count", 3)
        _produce(ring, 3, 64)
        # the Rust consumer reports a crash before data still in flight: let it drain first
        deadline = time.monotonic() + 30
        while ring.header()["read_idx"] < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        ring.notify_crash(7, 2**64 - 1, 3)
        out = finish_peer(p)
    assert out["crashed"] == {"signal": 7, "addr": 2**64 - 1, "operation": 3}
    assert out["count"] == 3 and out["errors"] == 0


def test_python_producer_in_spawned_process_rust_consumer(seedref: str, shm_id: str) -> None:
    # creator = spawned ctshm producer process; the Rust consumer opens
    from .helpers import SPAWN, join_all
    prod = SPAWN.Process(target=rc.produce, args=(shm_id, 600, 40),
                         kwargs={"create": True, "capacity": 3})
    prod.start()
    p = start_peer(seedref, "consume", shm_id, 3, 4096, "--expect-count", 600,
                   "--expect-len", 40)
    out = finish_peer(p)
    assert join_all([prod], 60) == [0]
    assert out["count"] == 600 and out["errors"] == 0 and out["finished"] is True


# ---------------------------------------------------------------------------------------------
# ShmMemory
# ---------------------------------------------------------------------------------------------


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_rust_memory_create_python_writes(seedref: str, shm_id: str) -> None:
    size = 4096
    p = start_peer(seedref, "memory-create", shm_id, size)
    assert p.stdout is not None and p.stdin is not None
    name = p.stdout.readline().strip()
    assert name == f"/{shm_id}_m"
    payload = bytes(range(256)) * 3
    with ShmMemory.open_readwrite(shm_id) as m:
        assert len(m) == size
        m.buf[100:100 + len(payload)] = payload
    p.stdin.write("go\n")
    p.stdin.flush()
    digest = p.stdout.readline().strip()
    p.wait(30)
    assert p.returncode == 0
    expect = bytearray(size)
    expect[100:100 + len(payload)] = payload
    assert int(digest, 16) == _fnv1a64(bytes(expect))
    assert not os.path.exists(f"/dev/shm/{shm_id}_m")  # the Rust creator unlinked it


def test_python_memory_create_rust_writes(seedref: str, shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 8192) as m:
        out = subprocess.run([seedref, "memory-write", shm_id, "4000", "deadbeef00ff"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert bytes(m.buf[4000:4006]) == bytes.fromhex("deadbeef00ff")
        assert bytes(m.buf[:4000]) == bytes(4000)
