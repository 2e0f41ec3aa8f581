"""An owner that removes a ring holding messages no consumer took is told how many; it can
wait for the consumer to drain first; an opener that finds nothing says what that means.

The rule (README, "The three rules"): the owner's ``close()`` removes the ring's names at
once; a consumer that has it open keeps reading, one that opens later finds nothing.  So an
owner that closes with committed messages and no live consumer registered gets an
``UnreadMessagesWarning`` naming the count (shown by default), and ``wait_drained()`` waits
until every committed message was released.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import pytest

from ctshm import ShmTraceRing, UnreadMessagesWarning

from .helpers import REPO_ROOT, run_python

_CONSUME_ALL = """
from ctshm import ShmTraceRing
with ShmTraceRing.open({id!r}, timeout=20) as ring:
    print(len(list(ring)))
"""


def _consumer(shm_id: str) -> subprocess.Popen[str]:
    import os

    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", _CONSUME_ALL.format(id=shm_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_owner_closing_with_unread_messages_warns_with_the_count(shm_id: str) -> None:
    with pytest.warns(UnreadMessagesWarning, match=r"3 committed messages") as rec, \
            ShmTraceRing.create(shm_id, 4, 4096) as ring:
        for i in range(3):
            ring.put(b"m%d" % i)
        ring.mark_finished()
    assert "wait_drained" in str(rec[0].message)
    assert rec[0].filename == __file__  # points at the user's with block


def test_warning_is_shown_by_default(shm_id: str) -> None:
    out = run_python(f"""
from ctshm import ShmTraceRing
with ShmTraceRing.create({shm_id!r}, 2, 4096) as r:
    r.put(b"x")
""")
    assert out.returncode == 0, out.stderr
    assert "UnreadMessagesWarning" in out.stderr and "1 committed message" in out.stderr


def test_no_warning_when_drained_or_nothing_was_put(shm_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadMessagesWarning)
        with ShmTraceRing.create(shm_id, 4, 4096):
            pass
        with ShmTraceRing.create(shm_id, 4, 4096) as ring:
            ring.put(b"a")
            assert ring.get(timeout=1) == b"a"


def test_wait_drained_waits_for_the_consumer(shm_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadMessagesWarning)
        with ShmTraceRing.create(shm_id, 4, 4096) as ring:
            for i in range(3):
                ring.put(b"m%d" % i)
            ring.mark_finished()
            assert ring.wait_drained(timeout=0.1) is False  # nobody reads yet
            child = _consumer(shm_id)
            try:
                assert ring.wait_drained(timeout=30) is True
                out, err = child.communicate(timeout=30)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            assert child.returncode == 0, err
            assert out.strip() == "3"
            assert len(ring) == 0


def test_wait_drained_checks_its_arguments(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with pytest.raises(ValueError, match="wait_drained"):
            ring.wait_drained(timeout=-1)
        assert ring.wait_drained(timeout=0) is True  # empty


def test_a_consumer_with_the_ring_open_keeps_reading_after_the_unlink(shm_id: str) -> None:
    """No warning when a live consumer is registered: unlinking removes names only."""
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        child = _consumer(shm_id)
        try:
            ring.put(b"first")  # the child registers when it takes this one
            deadline = time.monotonic() + 30
            while not ring.header()["consumer_pid"]:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            ring.put(b"second")
            ring.put(b"third")
            ring.mark_finished()
            with warnings.catch_warnings():
                warnings.simplefilter("error", UnreadMessagesWarning)
                ring.close()
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 0, err
    assert out.strip() == "3"


def test_opener_is_told_the_ring_was_removed_by_this_process(shm_id: str) -> None:
    with pytest.warns(UnreadMessagesWarning), ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"x")
    with pytest.raises(FileNotFoundError, match=r"removed .* by this process.*1 unread"):
        ShmTraceRing.open(shm_id, timeout=0.05)


def test_opener_of_an_unknown_id_is_told_both_possibilities(shm_id: str) -> None:
    with pytest.raises(FileNotFoundError) as e:
        ShmTraceRing.open(shm_id, timeout=0.05)
    text = str(e.value)
    assert "never created" in text and "closed" in text and "wait_drained" in text
