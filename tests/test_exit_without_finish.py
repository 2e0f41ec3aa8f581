"""A producer that ends without ``mark_finished()`` is reported for what it did, not as a
crash with zero details.

* A consumer that is the producer's parent reads the exit status without reaping the child
  (``waitid(WNOWAIT)``): "pid N exited with status 0 without mark_finished()", or "was
  killed by signal 9 (SIGKILL)".
* A producer leaves a note in the crash-message area when its ``with`` block ends with an
  exception (the exception's text), or when its interpreter exits with a handle still open
  (an uncaught exception's text if there was one); a consumer that finds it dead reports
  the note.
* ``Crashed.reason`` and ``ProducerCrashed`` leave the all-zero ``CrashDetails`` out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ctshm import CrashDetails, Crashed, ProducerCrashed, ShmTraceRing

from .helpers import REPO_ROOT, run_python


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _crash_after_data(ring: ShmTraceRing, n: int) -> Crashed:
    for _ in range(n):
        assert ring.get(timeout=20)
    r = ring.access(timeout=20)
    assert isinstance(r, Crashed), r
    return r


@pytest.mark.parametrize(("tail", "status"), [("sys.exit(0)", 0), ("os._exit(0)", 0),
                                              ("os._exit(3)", 3)])
def test_child_exit_status_is_reported(shm_id: str, tail: str, status: int) -> None:
    code = (f"import os, sys\nfrom ctshm import ShmTraceRing\n"
            f"ring = ShmTraceRing.open({shm_id!r}, timeout=10)\nring.put(b'x')\n{tail}\n")
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        child = subprocess.Popen([sys.executable, "-c", code], env=_env())
        try:
            r = _crash_after_data(ring, 1)
            assert child.wait(30) == status  # not reaped by ctshm: the parent still can
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert r.pid == child.pid
    assert f"exited with status {status} without mark_finished()" in r.reason
    assert "CrashDetails" not in str(ProducerCrashed(r))


def test_killed_child_names_the_signal(shm_id: str) -> None:
    code = (f"import os, signal\nfrom ctshm import ShmTraceRing\n"
            f"ring = ShmTraceRing.open({shm_id!r}, timeout=10)\nring.put(b'x')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        child = subprocess.Popen([sys.executable, "-c", code], env=_env())
        try:
            r = _crash_after_data(ring, 1)
        finally:
            child.wait(30)
    assert "killed by signal 9 (SIGKILL)" in r.reason


def test_exception_text_survives_a_non_child_producer(shm_id: str) -> None:
    """The consumer is not the parent: the producer's own note carries the exception."""
    code = f"""
import subprocess, sys
from ctshm import ShmTraceRing
inner = '''
from ctshm import ShmTraceRing
with ShmTraceRing.open({shm_id!r}, timeout=10) as ring, ring.sender(linger=0) as tx:
    tx.send(b"one")
    raise ValueError("the input file is corrupt")
'''
sys.exit(subprocess.run([sys.executable, "-c", inner]).returncode)
"""
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        out = run_python(code)
        assert out.returncode == 1, out.stderr
        rx = ring.receiver()
        assert rx.recv(timeout=10) == b"one"
        with pytest.raises(ProducerCrashed) as e:
            rx.recv(timeout=10)
    text = str(e.value)
    assert "ValueError: the input file is corrupt" in text
    assert "mark_finished()" in text and "CrashDetails" not in text


def test_uncaught_exception_with_an_open_handle_leaves_a_note(shm_id: str) -> None:
    code = f"""
import subprocess, sys
inner = '''
from ctshm import ShmTraceRing
ring = ShmTraceRing.open({shm_id!r}, timeout=10)
ring.put(b"x")
raise KeyError("missing column")
'''
sys.exit(subprocess.run([sys.executable, "-c", inner]).returncode)
"""
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        out = run_python(code)
        assert out.returncode == 1, out.stderr
        r = _crash_after_data(ring, 1)
    assert "KeyError: 'missing column'" in r.reason
    assert "without mark_finished()" in r.reason


def test_notify_crash_texts_keep_their_details() -> None:
    c = Crashed(CrashDetails(11, 0x1000, 1), None, "segfault in worker")
    assert str(ProducerCrashed(c)) == (
        "producer crashed: segfault in worker: CrashDetails(signal=11, addr=4096, "
        "operation=1)")
    quiet = Crashed(CrashDetails(), 1234)
    assert quiet.reason == ("producer pid 1234 ended without mark_finished() or "
                            "notify_crash()")
    assert str(ProducerCrashed(quiet)) == quiet.reason


def test_a_finished_producer_leaves_no_note(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        out = run_python(f"""
from ctshm import ShmTraceRing
ring = ShmTraceRing.open({shm_id!r}, timeout=10)
ring.put(b"x")
ring.mark_finished()
""")
        assert out.returncode == 0, out.stderr
        assert ring.get(timeout=10) == b"x"
        time.sleep(0.05)
        assert ring.header()["finished"] == 1
        assert list(ring) == []
