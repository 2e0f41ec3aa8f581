"""``ctshm.crashhook.reporting``: crash reports from places ``install()`` cannot reach, above
all ``multiprocessing`` children (their target's exception never reaches ``sys.excepthook``).
The crash hook's other paths (excepthook, threads, SIGTERM) are in test_hardening.py."""

from __future__ import annotations

import os
import signal

import pytest

from ctshm import CrashDetails, Crashed, ShmTraceRing, crashhook

from .helpers import SPAWN, child_raise_in_reporting, join_all


@pytest.mark.parametrize("form", ["with", "decorator"])
def test_reporting_in_spawned_multiprocessing_child(shm_id: str, form: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        p = SPAWN.Process(target=child_raise_in_reporting, args=(shm_id, form))
        p.start()
        try:
            assert ring.get(30) == b"before"
            r = ring.access(30)
        finally:
            codes = join_all([p], 60)
        assert codes == [1], "the exception was re-raised: multiprocessing's exit code 1"
        assert isinstance(r, Crashed), r
        assert r.pid is None, "reported by the producer, not detected as a silent death"
        assert r.details == CrashDetails(0, 0, 0)
        lines = r.message.splitlines()
        assert lines[0] == "unhandled ValueError: bad trace at step 42", r.message
        assert lines[1] == "traceback (innermost last):"
        assert lines[-1].startswith("  helpers.py:") and lines[-1].endswith(" in _fail_at_step")
        assert any(" in child_raise_in_reporting" in ln or " in work" in ln
                   for ln in lines[2:-1]), r.message


def test_install_alone_is_bypassed_by_multiprocessing(shm_id: str) -> None:
    """Why ``reporting`` exists: with only ``install()``, the consumer sees the death (pid)
    but never the producer's account of it."""
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        p = SPAWN.Process(target=child_raise_in_reporting, args=(shm_id, "install"))
        p.start()
        try:
            assert ring.get(30) == b"before"
            r = ring.access(30)
        finally:
            codes = join_all([p], 60)
        assert codes == [1]
        assert isinstance(r, Crashed), r
        assert r.pid == p.pid and r.message == (  # the exit status only: no hook ran
            f"producer pid {p.pid} exited with status 1 without mark_finished()")


def test_reporting_reraises_and_reports_in_process(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with pytest.raises(KeyError, match="missing"), crashhook.reporting(ring) as r:
            assert r is ring
            raise KeyError("missing")
        res = ring.access(5)
        assert isinstance(res, Crashed) and res.pid is None
        assert res.message.startswith("unhandled KeyError: 'missing'\n"), res.message
        assert res.message.splitlines()[-1].endswith(
            " in test_reporting_reraises_and_reports_in_process")


def test_reporting_normal_exits_report_nothing(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with crashhook.reporting(ring):
            ring.put(b"ok")
        for code in (None, 0):
            with pytest.raises(SystemExit), crashhook.reporting(ring):
                raise SystemExit(code)
        assert ring.get(5) == b"ok"
        ring.mark_finished()
        assert ring.header()["finished"] == 1  # finished, not crashed


def test_reporting_keyboard_interrupt_and_exit_code(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with pytest.raises(KeyboardInterrupt), crashhook.reporting(ring):
            raise KeyboardInterrupt
        res = ring.access(5)
        assert isinstance(res, Crashed) and res.details.signal == signal.SIGINT
        assert res.message.startswith("unhandled KeyboardInterrupt")
    with ShmTraceRing.create(shm_id + "b", 2, 4096) as ring:
        with pytest.raises(SystemExit), crashhook.reporting(ring):
            raise SystemExit(3)
        res = ring.access(5)
        assert isinstance(res, Crashed) and res.message.startswith("unhandled SystemExit: 3")


def test_reporting_never_masks_the_original(shm_id: str) -> None:
    ring = ShmTraceRing.create(shm_id, 2, 4096)
    ring.close()
    with pytest.raises(ValueError, match="original"), crashhook.reporting(ring):
        raise ValueError("original")
    long = "x" * 5000
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        with pytest.raises(RuntimeError), crashhook.reporting(ring):
            raise RuntimeError(long)
        res = ring.access(5)
        assert isinstance(res, Crashed)
        first = res.message.splitlines()[0]
        assert first == "unhandled RuntimeError: " + "x" * 300 + "..."
        assert len(res.message.encode()) <= 1020
    with pytest.raises(TypeError, match=r"crashhook.reporting\(ring\): ring must be a "
                                        r"ShmTraceRing, not str"):
        crashhook.reporting("ring")  # type: ignore[arg-type]


def test_reporting_forked_child_does_not_report(shm_id: str) -> None:
    """A child forked inside the block is not the producer: its exception leaves the block
    unreported."""
    parent = os.getpid()
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:

        def body() -> int:
            with crashhook.reporting(ring):
                pid = os.fork()
                if pid == 0:
                    raise ValueError("in the forked child")
                return pid

        try:
            pid = body()
        except BaseException:
            if os.getpid() != parent:  # pragma: no cover - the child
                os._exit(7)
            raise
        if os.getpid() != parent:  # pragma: no cover - never: the child raised
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 7
        assert ring.header()["finished"] == 0
        ring.put(b"still running")
        assert ring.get(5) == b"still running"
