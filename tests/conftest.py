"""Test infrastructure (pytest and pytest-xdist only).

* A per-test hang bound: ``faulthandler.dump_traceback_later(T, exit=True)`` is armed around
  every test (setup, call and teardown).  A test still running after T seconds dumps every
  thread's traceback to stderr and ends the test process with exit code 1: the run fails
  instead of blocking CI (under xdist the worker is reported as crashed on that test and
  replaced).  T is 120 s, ``CTSHM_TEST_TIMEOUT`` changes the default, and
  ``@pytest.mark.timeout_s(N)`` sets it for one test.
* ``shm_id``: a short id unique per test and per xdist worker.
* ``seedref``: the Rust peer's binary (session-scoped; skips where it cannot be built).
* ``CTSHM_TEST_FAST=1``: ``ShmTraceRing.create`` defaults to ``fast=True`` in the test
  process (the fast-mode pass of CI runs the ring's own suites this way); tests that need
  the seed's protocol (a Rust peer, semaphore counts) pass ``fast=False`` explicitly.
* An autouse leak check: a test that leaves an object or semaphore whose name starts with
  this worker's prefix in /dev/shm fails; the leftovers are then removed so one failure
  does not cascade into the next tests.
"""

from __future__ import annotations

import faulthandler
import itertools
import os
import sys
from collections.abc import Generator, Iterator

import pytest

from .helpers import SHM_DIR, WORKER_PREFIX, locate_seedref, our_shm_entries

DEFAULT_TIMEOUT_S = float(os.environ.get("CTSHM_TEST_TIMEOUT", "120"))

_dump_fd = -1
_counter = itertools.count(1)


def _default_fast() -> None:
    """``CTSHM_TEST_FAST=1``: rings created by the tests default to fast mode."""
    import functools

    from ctshm import ShmTraceRing

    create = ShmTraceRing.create.__func__  # type: ignore[attr-defined]

    @functools.wraps(create)
    def create_fast(cls: type, *args: object, fast: bool = True, **kw: object) -> object:
        return create(cls, *args, fast=fast, **kw)

    ShmTraceRing.create = classmethod(create_fast)  # type: ignore[assignment, method-assign]


def pytest_configure(config: pytest.Config) -> None:
    global _dump_fd
    if os.environ.get("CTSHM_TEST_FAST") == "1":
        _default_fast()
    config.addinivalue_line(
        "markers",
        "timeout_s(seconds): hang bound for this test (default "
        f"{DEFAULT_TIMEOUT_S:g} s; the process exits with a traceback dump when exceeded)",
    )
    # Output capture is suspended while plugins are configured, so fd 2 is the real stderr
    # here; keep a copy: during a test fd 2 is redirected into pytest's capture file.
    try:
        _dump_fd = os.dup(sys.__stderr__.fileno() if sys.__stderr__ is not None else 2)
    except (OSError, ValueError, AttributeError):
        _dump_fd = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _dump_fd
    if _dump_fd >= 0:
        os.close(_dump_fd)
        _dump_fd = -1


def _timeout_for(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout_s")
    if marker is None:
        return DEFAULT_TIMEOUT_S
    if len(marker.args) != 1 or isinstance(marker.args[0], bool) \
            or not isinstance(marker.args[0], (int, float)) or marker.args[0] <= 0:
        raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.timeout_s(SECONDS), SECONDS > 0")
    return float(marker.args[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, None, None]:
    timeout = _timeout_for(item)
    faulthandler.dump_traceback_later(timeout, exit=True, file=_dump_fd if _dump_fd >= 0 else 2)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def seedref() -> str:
    """Path of the Rust peer (``../shared/seedref``), built once per session; skips only
    where its sources or cargo are truly absent (see ``helpers.locate_seedref``)."""
    path, why = locate_seedref()
    if path is None:
        pytest.skip(f"Rust peer unavailable: {why}")
    return path


@pytest.fixture
def shm_id() -> str:
    """A short id unique to this test and worker, e.g. ``ct0a1b2c_17``."""
    return f"{WORKER_PREFIX}_{next(_counter)}"


def _remove(entry: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, entry))
    except FileNotFoundError:
        pass


@pytest.fixture(autouse=True)
def _no_shm_leak() -> Iterator[None]:
    """Fail the test if it left anything of this worker's in /dev/shm (then clean it up)."""
    before = our_shm_entries()
    for entry in before:  # a previous test's leftovers were reported by that test
        _remove(entry)
    yield
    leaked = sorted(our_shm_entries())
    for entry in leaked:
        _remove(entry)
    if leaked:
        pytest.fail(f"the test left {len(leaked)} entr{'y' if len(leaked) == 1 else 'ies'} "
                    f"in {SHM_DIR}: {', '.join(leaked)}", pytrace=False)
