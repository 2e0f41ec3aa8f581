"""pytest plugin for tests that use ctshm (registered as the ``pytest11`` entry point ``ctshm``).

Active automatically once ctshm is installed; without installing, load it with
``pytest -p ctshm.pytest_plugin``.  (Installed, do not pass ``-p ctshm.pytest_plugin`` as
well: pytest would register the module twice.  ``-p no:ctshm`` disables it.)

* Fixture ``ctshm_id``: a short id unique to the test, the pytest-xdist worker
  (``PYTEST_XDIST_WORKER``) and the session, e.g. ``ctgw3_5e1f0a_000b``.  At most 20
  characters, so even ``/ID_t_filled`` fits macOS's 31-byte limit for names.  Derive more
  names by appending to it (``ctshm_id + "a"``): they stay under the test's prefix.
* Leak check, opt-in: ``--ctshm-leak-check``, the ini option ``ctshm_leak_check = true``, or
  ``@pytest.mark.ctshm_leak_check`` on a test (``@pytest.mark.ctshm_leak_check(False)`` turns
  it off for one test).  After the test and its fixtures are torn down, anything whose name
  starts with the test's ``ctshm_id`` still in /dev/shm (rings, their semaphores, segments
  and their owner records, queues, broadcasts) is removed and reported as an error of that
  test (at teardown), naming every object.  Without /dev/shm (macOS) the check looks for
  the exact names ctshm derives from the id (``/ID_t``, ``/ID_t_filled``, ``/ID_t_empty``,
  ``/ID_m``, ``/ID_m_owner``, ``/ID_q``, ...).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Generator
from typing import Any, Optional

import pytest

from . import libc
from ._owner_record import SUFFIX as OWNER_SUFFIX
from ._shm import SHM_DIR as _SHM_DIR
from .layout import RING_SUFFIX, SEM_SUFFIXES
from .semaphore import NamedSemaphore

SHM_DIR = _SHM_DIR

_STATE = pytest.StashKey["_Session"]()
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class _Session:
    """Per-config state: the random part of the ids and the counter."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(3)
        self.counter = itertools.count(0)

    def new_id(self) -> str:
        worker = re.sub(r"[^A-Za-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", ""))[:6]
        return f"ct{worker}_{self.token}_{_base36(next(self.counter), 4)}"


def _base36(n: int, width: int) -> str:
    # Fixed width: no id is a prefix of another (test 3's id is not a prefix of test 31's).
    out = ""
    while n or len(out) < width:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ctshm", "ctshm shared memory")
    group.addoption("--ctshm-leak-check", action="store_true", default=False,
                    help="fail every test that leaves objects under its ctshm_id in /dev/shm "
                         "(and remove them)")
    parser.addini("ctshm_leak_check", type="bool", default=False,
                  help="like --ctshm-leak-check, for every test")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _Session()
    config.addinivalue_line(
        "markers",
        "ctshm_leak_check(enabled=True): check this test for ctshm objects it leaves in "
        "/dev/shm under its ctshm_id (see --ctshm-leak-check)")


def _check_enabled(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("ctshm_leak_check")
    if marker is not None:
        enabled = marker.args[0] if marker.args else marker.kwargs.get("enabled", True)
        return bool(enabled)
    config = item.config
    return bool(config.getoption("ctshm_leak_check") or config.getini("ctshm_leak_check"))


def leftovers(id: str) -> list[str]:
    """Names of objects in /dev/shm under ``id`` (``/NAME``; semaphores as ``/NAME`` too,
    marked ``(semaphore)``)."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return _exact_leftovers(id)
    out = []
    for e in sorted(entries):
        if e.startswith(id):
            out.append("/" + e)
        elif e.startswith("sem." + id):
            out.append("/" + e[4:] + " (semaphore)")
    return out


def _exact_leftovers(id: str) -> list[str]:
    # No /dev/shm to list (macOS): probe the names ctshm itself derives from the id.
    found = []
    for name in (f"/{id}_t", f"/{id}_m", f"/{id}_m{OWNER_SUFFIX}", f"/{id}_q", f"/{id}_b"):
        try:
            os.close(libc.shm_open(name, libc.O_RDONLY, 0))
            found.append(name)
        except OSError:
            pass
    for name in [f"/{id}{RING_SUFFIX}{s}" for s in SEM_SUFFIXES] + [
            f"/{id}_q_items", f"/{id}_q_space"]:
        try:
            NamedSemaphore(name, wait_mode="polling").close()
            found.append(name + " (semaphore)")
        except OSError:
            pass
    return found


def remove(names: list[str]) -> None:
    """Remove what :func:`leftovers` returned."""
    for n in names:
        try:
            if n.endswith(" (semaphore)"):
                NamedSemaphore.unlink_name(n[:-len(" (semaphore)")])
            else:
                libc.shm_unlink(n)
        except FileNotFoundError:
            pass


_IDS = pytest.StashKey["list[str]"]()
_LEAKED = pytest.StashKey[str]()


@pytest.fixture
def ctshm_id(request: pytest.FixtureRequest) -> str:
    """A short id unique to this test, xdist worker and session (see the module docstring)."""
    state = request.config.stash.get(_STATE, None)
    if state is None:  # configured before this plugin was (should not happen)
        state = request.config.stash[_STATE] = _Session()
    id = state.new_id()
    # The leak check runs in pytest_runtest_teardown, after *every* fixture of the test is
    # torn down (a fixture that closes its rings may be torn down after this one).
    request.node.stash.setdefault(_IDS, []).append(id)
    return id


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Optional[pytest.Item]
                            ) -> Generator[None, None, None]:
    yield  # every fixture of the test (and of scopes ending here) is torn down now
    ids = item.stash.get(_IDS, [])
    if not ids or not _check_enabled(item):
        return
    leaked = [n for id in ids for n in leftovers(id)]
    if leaked:
        remove(leaked)
        item.stash[_LEAKED] = (
            f"ctshm leak check: {item.nodeid} left {len(leaked)} object"
            f"{'' if len(leaked) == 1 else 's'} in {SHM_DIR}: {', '.join(leaked)} (removed)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    if call.when != "teardown":
        return
    message = item.stash.get(_LEAKED, None)
    if message is None:
        return
    report = outcome.get_result()
    if report.passed:  # a teardown that failed already keeps its own error
        report.outcome = "failed"
        report.longrepr = message
    else:
        report.sections.append(("ctshm leak check", message))
