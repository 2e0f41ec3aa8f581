"""``python -m ctshm stat`` live statistics and ``python -m ctshm top`` (ctshm/ops/top.py).

The ring does not count yet (the words exist in the layout): tests write the statistics
words into the header through a mapping of their own to simulate a counting peer.  ``top``
runs in a pseudo-terminal while another real process streams messages.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from typing import Any, Optional

import pytest

from ctshm import ShmTraceRing, layout as L
from ctshm.ops import top as T

from .helpers import REPO_ROOT, SHM_DIR, drain
from .test_layout import mapped, put_word
from .test_ops import cli_json, run_cli

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm (Linux)")

#: Bound on waiting for an eventual condition (a rate shows up); never asserted as a time.
PATIENCE = 60.0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def write_stats_v1(name: str, producer: tuple[int, ...], consumer: tuple[int, ...]) -> None:
    """Make the ring's extension version 1 (an older ctshm's) with these stored counters."""
    with mapped(name, writable=True) as w:
        put_word(w, L.EXT_VERSION, 1)
        for k, (p, c) in enumerate(zip(producer, consumer)):
            put_word(w, L.PRODUCER_STATS_V1 + k, p)
            put_word(w, L.CONSUMER_STATS_V1 + k, c)


def test_stat_shows_version_2_stats_derived_from_the_indices(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096, fast=False) as ring:
        ring.put(b"a" * 10)
        ring.put(b"b" * 20)
        assert ring.get(5) == b"a" * 10
        (o,) = cli_json("stat", shm_id)["objects"]
        # compat: one filled post per message, one empty post per released slot (derived)
        assert o["stats"] == {
            "producer": {"messages": 2, "bytes": 30, "waits": 0, "wakeups": 2, "spins": 0},
            "consumer": {"messages": 1, "bytes": 10, "waits": 0, "wakeups": 1, "spins": 0}}
        assert o["stats"] == {"producer": ring.stats()["producer"],
                              "consumer": ring.stats()["consumer"]}
        assert drain(ring) == 1


def test_stat_shows_stats_and_backlog(shm_id: str) -> None:
    """A version-1 ring (an older ctshm's): its stored counters are shown as they are."""
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        ring.put(b"a" * 10)
        ring.put(b"b" * 20)
        write_stats_v1(ring.name, (7, 1536, 1, 2, 3), (5, 500, 4, 5, 6))
        (o,) = cli_json("stat", shm_id)["objects"]
        assert o["backlog"] == 2
        assert o["stats"] == {
            "producer": {"messages": 7, "bytes": 1536, "waits": 1, "wakeups": 2, "spins": 3},
            "consumer": {"messages": 5, "bytes": 500, "waits": 4, "wakeups": 5, "spins": 6}}
        (listed,) = cli_json("ls", "--prefix", shm_id)["objects"]
        assert listed["stats"] == o["stats"] and listed["backlog"] == 2
        r = run_cli("stat", shm_id)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert "  backlog         2 (write_idx - read_idx: committed, not yet released)" in lines
        assert ("  producer stats  messages 7, bytes 1536 (1.5K), waits 1, wakeups 2, spins 3"
                in lines), r.stdout
        assert ("  consumer stats  messages 5, bytes 500 (500), waits 4, wakeups 5, spins 6"
                in lines), r.stdout
        assert ring.get(5) == b"a" * 10  # still a working ring
        assert drain(ring) == 1


# ---------------------------------------------------------------------------------------------
# Rates (pure)
# ---------------------------------------------------------------------------------------------


def _info(w: int, messages: int = 0, nbytes: int = 0, identity: tuple[int, int] = (1, 2)
          ) -> dict[str, Any]:
    side = {"messages": messages, "bytes": nbytes, "waits": 0, "wakeups": 0, "spins": 0}
    return {"identity": list(identity), "write_idx": w,
            "stats": {"producer": side, "consumer": dict(side)}}


def test_rates_from_counters_write_idx_or_none() -> None:
    rates = T.rates
    # Counters in use: messages and bytes per second from their deltas.
    assert rates((10.0, _info(5, 100, 10_000)), (12.0, _info(9, 300, 2_010_000))) == (  # type: ignore[arg-type]
        100.0, 1.0, "counters")
    # Counters zero (a producer that does not count): messages from write_idx, no bytes.
    assert rates((10.0, _info(5)), (10.5, _info(55))) == (100.0, None, "write_idx")  # type: ignore[arg-type]
    assert rates(None, (1.0, _info(5))) == (None, None, None)  # type: ignore[arg-type]
    # Re-created (another inode) or counters gone backwards: no rate this time.
    assert rates((1.0, _info(5)), (2.0, _info(9, identity=(1, 3)))) == (None, None, None)  # type: ignore[arg-type]
    assert rates((1.0, _info(5, 50, 50)), (2.0, _info(9, 10, 60))) == (None, None, None)  # type: ignore[arg-type]
    assert rates((1.0, _info(9)), (2.0, _info(5))) == (None, None, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# top --once --json
# ---------------------------------------------------------------------------------------------

_COUNTER = """
import mmap, os, select, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096)
os.close(fd)
q = memoryview(m).cast("Q")
word = int(sys.argv[2])
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.001)[0]:
    q[word] += 1            # messages
    q[word + 1] += 100      # bytes
q.release()
m.close()
"""

_STREAM = """
import select, sys
from ctshm import ShmTraceRing
ring = ShmTraceRing.open(sys.argv[1], timeout=30)
print("ready", flush=True)
i = 0
while True:
    ring.put(b"m" * 64)
    assert ring.get(30) == b"m" * 64
    i += 1
    if i % 64 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
ring.close()
print(i, flush=True)
"""


def start(code: str, *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO_ROOT)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line == "ready\n", (line, p.poll())
    return p


def stop(p: subprocess.Popen[str]) -> str:
    """Ask a child started by :func:`start` to finish; its exit code must be 0."""
    assert p.stdin is not None and p.stdout is not None
    try:
        p.stdin.write("stop\n")
        p.stdin.close()
        out = p.stdout.read()
        assert p.wait(60) == 0
        return out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)


def top_once(prefix: str) -> list[dict[str, Any]]:
    r = run_cli("top", "--once", "--json", "--interval", "0.2", "--prefix", prefix)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, list)
    return data


def first_moving(prefix: str) -> dict[str, Any]:
    """The first ``top --once --json`` record with a non-zero message rate."""
    deadline = time.monotonic() + PATIENCE
    while True:
        recs = top_once(prefix)
        if recs and recs[0]["msg_s"]:
            return recs[0]
        assert time.monotonic() < deadline, f"no rate seen; last: {recs}"


def test_top_once_json_rates_from_counters(shm_id: str) -> None:
    """A version-1 ring (stored message counters): counters moving, write_idx not: the rates
    are the counters' (bytes too)."""
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        write_stats_v1(ring.name, (0,) * 5, (0,) * 5)
        p = start(_COUNTER, SHM_DIR + ring.name, str(L.PRODUCER_STATS_V1))
        try:
            rec = first_moving(shm_id)
        finally:
            stop(p)
        assert rec["name"] == ring.name and rec["id"] == shm_id
        assert rec["rate_source"] == "counters" and rec["write_idx"] == 0
        assert rec["msg_s"] > 0 and rec["mb_s"] > 0
        # 100 bytes per message, up to the one increment read between the two words.
        per_msg = rec["mb_s"] * 1e6 / rec["msg_s"]
        assert 90 < per_msg < 110, per_msg
        assert rec["interval_s"] > 0 and rec["capacity"] == 4
        assert rec["state"] == "running" and not rec["crashed"] and not rec["finished"]
        assert rec["producer"] is None and rec["consumer"] is None
        assert set(rec) >= {"fill", "fill_pct", "stats", "read_idx"}


def test_top_once_text_and_empty(shm_id: str) -> None:
    r = run_cli("top", "--once", "--interval", "0.05", "--prefix", shm_id)
    assert r.returncode == 0, r.stderr
    assert "no rings in" in r.stdout and "rates over 0.05 s" in r.stdout
    assert "\x1b[" not in r.stdout  # no terminal control without a terminal
    assert top_once(shm_id) == []
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        ring.put(b"x")
        ring.notify_crash(11, 0, 0)
        (rec,) = top_once(shm_id)
        assert rec["crashed"] and rec["state"] == "crashed"
        assert (rec["fill"], rec["fill_pct"], rec["msg_s"]) == (1, 25.0, 0.0)
        assert rec["producer"]["alive"] is True and rec["producer"]["pid"] == os.getpid()
        r = run_cli("top", "--once", "--interval", "0.05", "--prefix", shm_id)
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(ring.name))
        assert row.split()[1:4] == ["crashed", "1/4", "25%"], row
        assert drain(ring) == 1  # committed before the crash: still delivered


def test_top_not_a_ring(shm_id: str) -> None:
    """A /X_t of garbage is listed as "not a ring", with no fill level and no rate."""
    path = f"{SHM_DIR}/{shm_id}_t"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, L.HEADER_SIZE + L.HUGE_PAGE_SIZE)
        os.pwrite(fd, bytes((i * 37 + 11) % 251 + 3 for i in range(4096)), 0)
        (rec,) = top_once(shm_id)
        assert rec["state"] == "not a ring" and rec["stats"] is None
        assert (rec["fill"], rec["msg_s"], rec["mb_s"], rec["rate_source"]) == (0, None, None,
                                                                                None)
        r = run_cli("top", "--once", "--interval", "0.05", "--prefix", shm_id)
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"/{shm_id}_t"))
        assert row.split()[1:] == ["not", "a", "ring"] + ["-"] * 6, row
    finally:
        os.close(fd)
        os.unlink(path)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "99999"])
def test_top_bad_interval_is_a_usage_error(bad: str) -> None:
    r = run_cli("top", "--once", "--interval", bad)
    assert r.returncode == 2 and "--interval must be" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# Live top in a pseudo-terminal
# ---------------------------------------------------------------------------------------------


def _rate_in(screen: str, ring: str) -> Optional[float]:
    """MSG/S of ``ring`` in the last full screen of ``screen`` (None if not shown)."""
    last = screen.rsplit(T.CLEAR, 1)[-1]
    for line in last.splitlines():
        f = line.split()
        if f and f[0] == ring and len(f) >= 5:
            text = f[4].rstrip("*").replace(",", "")
            return None if text == "-" else float(text)
    return None


def _drain(fd: int) -> str:
    """What is left to read on a pty master whose other side has exited."""
    out = b""
    while select.select([fd], [], [], 5.0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every slave descriptor is closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode("utf-8", "replace")


@pytest.mark.parametrize("how", ["q", "sigint"])
def test_top_live_in_a_terminal(shm_id: str, how: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        stream = start(_STREAM, shm_id)
        master, slave = pty.openpty()
        top = subprocess.Popen([sys.executable, "-m", "ctshm", "top", "--interval", "0.2",
                                "--prefix", shm_id], stdin=slave, stdout=slave, stderr=slave,
                               env=_env(), cwd=REPO_ROOT, close_fds=True)
        os.close(slave)
        screen = ""
        try:
            deadline = time.monotonic() + PATIENCE
            rate: Optional[float] = None
            while not rate:
                assert time.monotonic() < deadline, f"no rate on screen:\n{screen[-2000:]}"
                assert top.poll() is None, f"top exited {top.returncode}:\n{screen}"
                if select.select([master], [], [], 1.0)[0]:
                    screen += os.read(master, 65536).decode("utf-8", "replace")
                    rate = _rate_in(screen, ring.name)
            assert T.CLEAR in screen  # refreshed in place
            assert "q or Ctrl-C quits" in screen
            if how == "q":
                os.write(master, b"q")
            else:
                top.send_signal(signal.SIGINT)
            assert top.wait(30) == 0
            screen += _drain(master)
        finally:
            if top.poll() is None:
                top.kill()
                top.wait(30)
            os.close(master)
            count = stop(stream)
        assert int(count) > 0
        assert "Traceback" not in screen, screen[-2000:]
