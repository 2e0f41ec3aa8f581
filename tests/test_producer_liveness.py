"""A process that opens a ring counts as its producer-to-be until it shows otherwise.

The rule (README, "The three rules"): a process that opens a ring it did not create writes a
*tentative* producer record (only while no producer is registered).  Its first ``acquire``
/ ``put`` makes the record firm; a consumer ignores its own record; a handle closed normally
(``close()``, or a ``with`` block left without an exception) withdraws it.  So a producer
that opens the ring and dies before its first ``put`` - an exception, ``sys.exit``, a kill -
is reported to the consumer like any other producer death, while a ring opened only to look
at it is not taken for a producer, and a real producer (or a Rust one, which registers
nothing) replaces a tentative record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ctshm import Crashed, Data, Finished, ShmTraceRing, Timeout

from .helpers import REPO_ROOT, run_python

_OPEN_AND_RAISE = """
from ctshm import ShmTraceRing
with ShmTraceRing.open({id!r}, timeout=10) as ring:
    raise RuntimeError("the producer failed before its first put")
"""

_OPEN_AND_RAISE_NO_WITH = """
from ctshm import ShmTraceRing
ring = ShmTraceRing.open({id!r}, timeout=10)
raise RuntimeError("the producer failed before its first put")
"""

_OPEN_AND_KILL = """
import os, signal
from ctshm import ShmTraceRing
ring = ShmTraceRing.open({id!r}, timeout=10)
os.kill(os.getpid(), signal.SIGKILL)
"""

_OPEN_AND_CLOSE = """
from ctshm import ShmTraceRing
with ShmTraceRing.open({id!r}, timeout=10) as ring:
    print(len(ring))
"""

_PRODUCE = """
from ctshm import ShmTraceRing
with ShmTraceRing.open({id!r}, timeout=10) as ring:
    ring.put(b"hello")
    ring.mark_finished()
"""


def _first_end(ring: ShmTraceRing, within: float) -> object:
    """access() until something other than Timeout arrives or ``within`` seconds pass."""
    end = time.monotonic() + within
    while True:
        r = ring.access(timeout=0.5)
        if not isinstance(r, Timeout) or time.monotonic() >= end:
            return r


@pytest.mark.parametrize("script", [_OPEN_AND_RAISE, _OPEN_AND_RAISE_NO_WITH, _OPEN_AND_KILL],
                         ids=["with-block", "no-with", "sigkill"])
def test_opener_that_dies_before_its_first_put_is_reported(shm_id: str, script: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        child = run_python(script.format(id=shm_id))
        assert child.returncode != 0
        t0 = time.monotonic()
        r = ring.access(timeout=5)
        assert isinstance(r, Crashed), r
        assert time.monotonic() - t0 < 2.0  # one liveness slice, not the timeout
        assert r.pid is not None and r.pid > 0
        assert "before its first put" in r.message


def test_an_inspecting_opener_is_not_taken_for_a_producer(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        looked = run_python(_OPEN_AND_CLOSE.format(id=shm_id))
        assert looked.returncode == 0, looked.stderr
        assert ring.header()["producer_pid"] == 0  # withdrawn at close
        assert isinstance(ring.access(timeout=0.6), Timeout)
        produced = run_python(_PRODUCE.format(id=shm_id))
        assert produced.returncode == 0, produced.stderr
        r = ring.access(timeout=5)
        assert isinstance(r, Data) and bytes(r.guard.buf) == b"hello"
        r.guard.release()
        assert isinstance(ring.access(timeout=5), Finished)


def test_a_second_consumer_handle_is_not_a_producer(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring, ShmTraceRing.open(shm_id) as second:
        assert isinstance(second.access(timeout=0.6), Timeout)  # its own record: alive
        produced = run_python(_PRODUCE.format(id=shm_id))
        assert produced.returncode == 0, produced.stderr  # replaced the tentative record
        assert second.get(timeout=5) == b"hello"
        assert isinstance(ring.access(timeout=5), Finished)


def test_a_live_opener_does_not_block_the_real_producer(shm_id: str) -> None:
    """Another process opened the ring and is still alive (its tentative record stands):
    the creator's first put() makes itself the producer, and the consumer is told of
    its death, not of the opener's."""
    code = f"""
import sys
from ctshm import ShmTraceRing
ring = ShmTraceRing.open({shm_id!r}, timeout=10)
print(ring.header()["producer_pid"], flush=True)
sys.stdin.readline()
ring.close()
"""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        opener = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert opener.stdout is not None and opener.stdin is not None
            assert int(opener.stdout.readline()) != 0  # its tentative record
            ring.put(b"x")  # the creator's first put: firm, replacing the opener's record
            assert ring.header()["producer_pid"] == os.getpid()
            assert ring.get(timeout=1) == b"x"
            opener.stdin.write("\n")
            opener.stdin.flush()
            assert opener.wait(30) == 0
            assert ring.header()["producer_pid"] == os.getpid()  # not withdrawn by it
        finally:
            if opener.poll() is None:
                opener.kill()
                opener.wait()
