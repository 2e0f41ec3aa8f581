"""ctshm.semaphore.NamedSemaphore in every wait mode, across threads and processes."""

from __future__ import annotations

import math
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from ctshm import libc
from ctshm.semaphore import WAIT_MODES, NamedSemaphore, _validate_mode, default_wait_mode

from .helpers import (
    SPAWN,
    child_sem_acquire,
    child_sem_eintr,
    child_sem_post,
    join_all,
    run_children,
    run_python,
    sem_exists,
)


def _available_modes() -> list[str]:
    out = []
    for m in WAIT_MODES:
        try:
            _validate_mode(m)
        except ValueError:
            continue
        out.append(m)
    return out


MODES = _available_modes()
EPS = 0.005  # clock granularity allowance when checking that a wait lasted its full timeout
HANG_GUARD = 5.0  # generous upper bound: only there to catch a wait that never ends


def test_every_wait_mode_exists_on_glibc() -> None:
    # Guards the parametrization below against silently losing a mode.
    if not libc.IS_LINUX:
        assert MODES == ["polling"]
        return
    assert MODES == ["clockwait", "timedwait", "polling"]


@pytest.fixture
def sem_name(shm_id: str) -> Iterator[str]:
    """A semaphore name for this test; whatever is left under it is unlinked afterwards."""
    name = f"/{shm_id}_s"
    yield name
    NamedSemaphore.unlink_name(name)


SemFactory = Callable[..., NamedSemaphore]


@pytest.fixture
def make_sem(sem_name: str) -> Iterator[SemFactory]:
    """Open/create NamedSemaphores on ``sem_name``; all are closed after the test."""
    made: list[NamedSemaphore] = []

    def make(*, create: bool = False, value: int = 0, wait_mode: str | None = None,
             ) -> NamedSemaphore:
        s = NamedSemaphore(sem_name, create=create, value=value, wait_mode=wait_mode)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------------------------------------
# Creation, opening, names
# ---------------------------------------------------------------------------------------------


def test_create_makes_the_semaphore_and_unlink_removes_it(sem_name: str) -> None:
    s = NamedSemaphore(sem_name, create=True)
    try:
        assert sem_exists(sem_name)
        assert s.name == sem_name and not s.closed
        st = os.stat("/dev/shm/sem." + sem_name[1:])
        assert s.identity() == (st.st_dev, st.st_ino)
    finally:
        s.close()
    assert sem_exists(sem_name)  # close() does not unlink
    NamedSemaphore.unlink_name(sem_name, missing_ok=False)
    assert not sem_exists(sem_name)


def test_opener_never_creates(sem_name: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        NamedSemaphore(sem_name)
    assert info.value.filename == sem_name
    assert not sem_exists(sem_name)


def test_create_is_exclusive(make_sem: SemFactory, sem_name: str) -> None:
    first = make_sem(create=True, value=3)
    with pytest.raises(FileExistsError) as info:
        make_sem(create=True)
    assert info.value.filename == sem_name
    assert first.value() == 3  # the existing semaphore was not touched


def test_unlink_name_missing(sem_name: str) -> None:
    NamedSemaphore.unlink_name(sem_name)  # missing_ok by default
    with pytest.raises(FileNotFoundError) as info:
        NamedSemaphore.unlink_name(sem_name, missing_ok=False)
    assert info.value.filename == sem_name


def test_bad_wait_mode_raises_before_creating(sem_name: str) -> None:
    with pytest.raises(ValueError, match="unknown wait mode 'spin'"):
        NamedSemaphore(sem_name, create=True, wait_mode="spin")
    assert not sem_exists(sem_name)


def test_close_is_idempotent_and_use_after_close_raises(make_sem: SemFactory) -> None:
    s = make_sem(create=True, value=1)
    assert "wait=" in repr(s) and s.name in repr(s)
    s.close()
    s.close()
    assert s.closed
    assert "closed" in repr(s)
    for op in (s.post, s.try_acquire, lambda: s.acquire(0.1), lambda: s.acquire(None),
               s.value):
        with pytest.raises(ValueError, match="closed"):
            op()


# ---------------------------------------------------------------------------------------------
# Tokens and waits, in every mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_post_try_acquire_and_value(make_sem: SemFactory, mode: str) -> None:
    s = make_sem(create=True, wait_mode=mode)
    assert s.wait_mode == mode
    assert s.try_acquire() is False
    s.post()
    s.post()
    assert s.value() == 2
    assert s.try_acquire() is True
    assert s.acquire(0) is True
    assert s.try_acquire() is False
    assert s.acquire(0) is False
    assert s.value() == 0


@pytest.mark.parametrize("mode", MODES)
def test_initial_value_and_shared_count(make_sem: SemFactory, mode: str) -> None:
    creator = make_sem(create=True, value=2, wait_mode=mode)
    opener = make_sem(wait_mode=mode)
    assert opener.acquire(1.0) is True
    assert creator.acquire(1.0) is True
    assert opener.try_acquire() is False
    opener.post()
    assert creator.acquire(1.0) is True


@pytest.mark.parametrize("mode", MODES)
def test_acquire_times_out_after_the_full_timeout(make_sem: SemFactory, mode: str) -> None:
    s = make_sem(create=True, wait_mode=mode)
    timeout = 0.3
    t0 = time.monotonic()
    assert s.acquire(timeout) is False
    elapsed = time.monotonic() - t0
    assert elapsed >= timeout - EPS
    assert elapsed < timeout + HANG_GUARD
    assert s.value() == 0


@pytest.mark.parametrize("mode", MODES)
def test_acquire_returns_when_a_post_arrives(make_sem: SemFactory, mode: str) -> None:
    s = make_sem(create=True, wait_mode=mode)
    delay = 0.2
    poster = threading.Timer(delay, s.post)
    t0 = time.monotonic()
    poster.start()
    try:
        assert s.acquire(30.0) is True
    finally:
        poster.join()
    elapsed = time.monotonic() - t0
    assert elapsed >= delay - EPS
    assert elapsed < delay + HANG_GUARD


@pytest.mark.parametrize("mode", MODES)
def test_acquire_without_timeout_waits_for_a_post(make_sem: SemFactory, mode: str) -> None:
    s = make_sem(create=True, wait_mode=mode)
    s.post()
    assert s.acquire(None) is True  # a token is there: returns at once
    poster = threading.Timer(0.1, s.post)
    poster.start()
    try:
        assert s.acquire(None) is True
    finally:
        poster.join()
    assert s.try_acquire() is False


@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.nan, float("-inf")])
def test_bad_timeouts_raise(make_sem: SemFactory, bad: float) -> None:
    s = make_sem(create=True, value=1)
    with pytest.raises(ValueError, match="timeout"):
        s.acquire(bad)
    assert s.value() == 1  # nothing was taken


# ---------------------------------------------------------------------------------------------
# Signals during a wait: EINTR is retried with the remaining time
# ---------------------------------------------------------------------------------------------


def _signal_main_thread_every(period: float, stop: threading.Event) -> threading.Thread:
    """Send SIGALRM to the main thread every ``period`` s until ``stop`` is set.  Directed at
    the thread that waits, so the wait (not some other thread) is what gets interrupted."""
    target = threading.main_thread().ident
    assert target is not None

    def run() -> None:
        while not stop.wait(period):
            signal.pthread_kill(target, signal.SIGALRM)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("post_after", [None, 0.3], ids=["timeout", "post"])
@pytest.mark.parametrize("mode", MODES)
def test_signals_neither_abort_nor_shorten_a_wait(make_sem: SemFactory, mode: str,
                                                   post_after: float | None) -> None:
    assert threading.current_thread() is threading.main_thread()
    s = make_sem(create=True, wait_mode=mode)
    hits = [0]

    def on_alarm(signum: int, frame: object) -> None:
        hits[0] += 1

    old = signal.signal(signal.SIGALRM, on_alarm)
    stop = threading.Event()
    poster = threading.Timer(post_after, s.post) if post_after is not None else None
    sender = _signal_main_thread_every(0.02, stop)
    try:
        timeout = 0.6 if post_after is None else 30.0
        # t0 before the poster starts: the post comes >= post_after after t0 however late
        # this thread is scheduled (t0 taken after start() made elapsed < post_after under load).
        t0 = time.monotonic()
        if poster is not None:
            poster.start()
        got = s.acquire(timeout)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        sender.join()
        if poster is not None:
            poster.join()
        signal.signal(signal.SIGALRM, old)
    assert hits[0] >= 5, f"only {hits[0]} signals were handled during the wait"
    if post_after is None:
        assert got is False
        assert elapsed >= timeout - EPS
        assert elapsed < timeout + HANG_GUARD
    else:
        assert got is True
        assert post_after - EPS <= elapsed < post_after + HANG_GUARD


@pytest.mark.parametrize("post", [False, True], ids=["timeout", "post"])
@pytest.mark.parametrize("mode", MODES)
def test_setitimer_signals_in_a_spawned_waiter(make_sem: SemFactory, sem_name: str, mode: str,
                                               post: bool) -> None:
    # A fresh single-threaded process: the process-directed SIGALRM of setitimer can only
    # land on the waiting thread.
    s = make_sem(create=True, wait_mode=mode)
    timeout = 0.6 if not post else 30.0
    parent_end, child_end = SPAWN.Pipe()
    p = SPAWN.Process(target=child_sem_eintr, args=(sem_name, mode, timeout, child_end),
                      daemon=True)
    p.start()
    child_end.close()
    try:
        assert parent_end.poll(60), "child never became ready"
        assert parent_end.recv() == "ready"
        if post:
            time.sleep(0.3)
            s.post()
        assert parent_end.poll(60), "child never reported"
        got, elapsed, hits = parent_end.recv()
    finally:
        codes = join_all([p], 30)
    assert codes == [0]
    assert hits >= 5, f"only {hits} signals were handled during the wait"
    if post:
        assert got is True
        assert elapsed < 0.3 + HANG_GUARD
    else:
        assert got is False
        assert timeout - EPS <= elapsed < timeout + HANG_GUARD


# ---------------------------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cross_process_post(make_sem: SemFactory, sem_name: str, mode: str) -> None:
    s = make_sem(create=True, wait_mode=mode)
    p = SPAWN.Process(target=child_sem_post, args=(sem_name, 5, 0.1), daemon=True)
    p.start()
    try:
        got = [s.acquire(30.0) for _ in range(5)]
    finally:
        codes = join_all([p], 30)
    assert codes == [0]
    assert got == [True] * 5
    assert s.try_acquire() is False


@pytest.mark.parametrize("mode", MODES)
def test_cross_process_acquire(make_sem: SemFactory, sem_name: str, mode: str) -> None:
    s = make_sem(create=True, wait_mode=mode)
    def post3() -> None:
        for _ in range(3):
            s.post()

    poster = threading.Timer(0.2, post3)
    poster.start()
    try:
        codes = run_children(child_sem_acquire, [(sem_name, 3, 30.0, mode)], timeout=60)
    finally:
        poster.join()
    assert codes == [0]
    assert s.try_acquire() is False


def test_child_that_gets_no_token_reports_it(make_sem: SemFactory, sem_name: str) -> None:
    # Control for the test above: the child does fail when no token comes.
    make_sem(create=True)
    codes = run_children(child_sem_acquire, [(sem_name, 1, 0.2, "polling")], timeout=60)
    assert codes == [3]


# ---------------------------------------------------------------------------------------------
# CTSHM_WAIT
# ---------------------------------------------------------------------------------------------

_REPORT_MODE = textwrap.dedent("""
    import sys
    from ctshm.semaphore import NamedSemaphore, default_wait_mode
    print("DEFAULT", default_wait_mode())
    s = NamedSemaphore(sys.argv[1] if len(sys.argv) > 1 else {name!r}, create=True)
    try:
        print("SEM", s.wait_mode)
    finally:
        s.close()
        NamedSemaphore.unlink_name(s.name)
""")


@pytest.mark.parametrize("mode", MODES)
def test_ctshm_wait_env_selects_the_mode(sem_name: str, mode: str) -> None:
    r = run_python(_REPORT_MODE.format(name=sem_name), env={"CTSHM_WAIT": mode.upper()})
    assert r.returncode == 0, r.stderr
    assert f"DEFAULT {mode}\n" in r.stdout and f"SEM {mode}\n" in r.stdout, r.stdout


@pytest.mark.parametrize("value", [None, "auto", ""], ids=["unset", "auto", "empty"])
def test_ctshm_wait_default(sem_name: str, value: str | None) -> None:
    env = {} if value is None else {"CTSHM_WAIT": value}
    r = run_python(_REPORT_MODE.format(name=sem_name), env=env, unset=["CTSHM_WAIT"])
    assert r.returncode == 0, r.stderr
    expected = MODES[0]  # the best available: clockwait on glibc
    assert f"DEFAULT {expected}\n" in r.stdout and f"SEM {expected}\n" in r.stdout, r.stdout


def test_ctshm_wait_unknown_is_an_error(sem_name: str) -> None:
    r = run_python(_REPORT_MODE.format(name=sem_name), env={"CTSHM_WAIT": "busyloop"})
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "unknown wait mode 'busyloop'" in r.stderr
    assert not sem_exists(sem_name)


def test_explicit_wait_mode_overrides_env(monkeypatch: pytest.MonkeyPatch,
                                          make_sem: SemFactory) -> None:
    monkeypatch.setenv("CTSHM_WAIT", "polling")
    assert default_wait_mode() == "polling"
    s = make_sem(create=True, wait_mode=MODES[0])
    assert s.wait_mode == MODES[0]
    monkeypatch.setenv("CTSHM_WAIT", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        default_wait_mode()


# ---------------------------------------------------------------------------------------------
# create=True arguments: c_uint would truncate them silently (outside review)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,exc,fragment", [
    ({"value": -1}, ValueError, "value (the initial count) must be from 0 to"),
    ({"value": 2**31}, ValueError, "not 2147483648"),
    ({"value": 2**32 + 1}, ValueError, "not 4294967297"),  # c_uint made it 1
    ({"value": 1.5}, TypeError, "value (the initial count) must be an int"),
    ({"value": True}, TypeError, "not bool"),
    ({"mode": -1}, ValueError, "mode must be permission bits from 0 to 0o777"),  # was 0o7755
    ({"mode": 0o4600}, ValueError, "setuid, setgid and sticky bits mean nothing"),
    ({"mode": 2**32 + 0o600}, ValueError, "mode must be permission bits"),  # c_uint: 0o600
    ({"mode": "0o600"}, TypeError, "mode must be an int of permission bits"),
    ({"wait_mode": 0}, TypeError, "wait_mode must be one of"),  # was: the default mode
    ({"wait_mode": []}, TypeError, "wait_mode must be one of"),
    ({"wait_mode": ""}, ValueError, "unknown wait mode ''"),
])
def test_create_refuses_bad_value_mode_and_wait_mode(sem_name: str, kwargs: dict[str, object],
                                                     exc: type, fragment: str) -> None:
    with pytest.raises(exc) as info:
        NamedSemaphore(sem_name, create=True, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value), info.value
    assert repr(sem_name) in str(info.value), "names the semaphore"
    assert not sem_exists(sem_name), "nothing created"


def test_create_accepts_the_bounds(sem_name: str) -> None:
    from ctshm.semaphore import sem_value_max
    top = sem_value_max()
    if libc.IS_LINUX:
        assert top == os.sysconf("SC_SEM_VALUE_MAX") == 2**31 - 1
    s = NamedSemaphore(sem_name, create=True, value=top, mode=0o777)
    try:
        assert s.value() in (top, -1)
        if libc.IS_LINUX:  # the umask may clear bits, never add any
            assert os.stat("/dev/shm/sem." + sem_name[1:]).st_mode & 0o7777 & ~0o777 == 0
    finally:
        s.close()
    NamedSemaphore.unlink_name(sem_name)
    NamedSemaphore(sem_name, create=True, value=0, mode=0).close()
