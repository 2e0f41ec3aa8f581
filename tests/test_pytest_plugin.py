"""The pytest plugin (ctshm/pytest_plugin.py): ``ctshm_id`` and the opt-in leak check.

Each case runs an inner pytest session in a subprocess (``pytester``) with
``-p ctshm.pytest_plugin``, so nothing depends on ctshm being installed.  Entry-point
autoloading is switched off in the inner session: if ctshm *is* installed, its ``pytest11``
entry point would otherwise register the same module a second time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ctshm import pytest_plugin
from ctshm.semaphore import NamedSemaphore

from .helpers import REPO_ROOT, SHM_DIR

pytest_plugins = ["pytester"]

INNER_TIMEOUT = 120
ID_RE = r"ct(?P<worker>[A-Za-z0-9]{0,6})_(?P<token>[0-9a-f]{6})_(?P<n>[0-9a-z]{4})"

LEAKY = """
import pytest
from ctshm import ShmMemory
from ctshm.semaphore import NamedSemaphore

def _leak(ctshm_id):
    with open("ids.txt", "a") as f:
        f.write(ctshm_id + "\\n")
    m = ShmMemory.create_readonly(ctshm_id, 4096)
    m.keep_on_drop()
    m.close()
    NamedSemaphore("/" + ctshm_id + "_t_filled", create=True).close()

def test_leaks(ctshm_id):
    _leak(ctshm_id)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # set when we run under xdist
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    return pytester


def run_inner(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("-p", "ctshm.pytest_plugin", "-p", "no:cacheprovider",
                                  *args, timeout=INNER_TIMEOUT)


def leaked_ids(p: pytest.Pytester) -> list[str]:
    path = p.path / "ids.txt"
    return path.read_text().split() if path.exists() else []


def present(id: str) -> list[str]:
    return sorted(e for e in os.listdir(SHM_DIR) if e.startswith((id, "sem." + id)))


def cleanup(ids: list[str]) -> None:
    for id in ids:
        pytest_plugin.remove(pytest_plugin.leftovers(id))


# ---------------------------------------------------------------------------------------------
# ctshm_id
# ---------------------------------------------------------------------------------------------


def test_ids_unique_and_short(inner: pytest.Pytester) -> None:
    inner.makepyfile("""
        import pytest
        from ctshm import ShmTraceRing

        @pytest.mark.parametrize("i", range(40))
        def test_id(ctshm_id, i):
            with open("ids.txt", "a") as f:
                f.write(ctshm_id + "\\n")

        def test_usable_as_ring_id(ctshm_id):
            with ShmTraceRing.create(ctshm_id, 1, 4096) as r:
                r.put(b"x")
                assert r.get(5) == b"x"
    """)
    r = run_inner(inner)
    r.assert_outcomes(passed=41)
    ids = leaked_ids(inner)
    assert len(ids) == 40 and len(set(ids)) == 40
    for id in ids:
        m = re.fullmatch(ID_RE, id)
        assert m is not None and m["worker"] == "", id
        assert len("/" + id + "_t_filled") <= 31  # macOS's limit, slash included
    assert len({re.fullmatch(ID_RE, i)["token"] for i in ids}) == 1  # type: ignore[index]
    # No id is a prefix of another (the leak check matches by prefix).
    assert not any(a != b and b.startswith(a) for a in ids for b in ids)


def test_ids_carry_the_xdist_worker(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                                    ) -> None:
    inner.makepyfile("""
        def test_a(ctshm_id):
            with open("ids.txt", "a") as f:
                f.write(ctshm_id + "\\n")
    """)
    for worker in ("gw7", "gw12"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        run_inner(inner).assert_outcomes(passed=1)
    ids = leaked_ids(inner)
    assert [re.fullmatch(ID_RE, i)["worker"] for i in ids] == ["gw7", "gw12"]  # type: ignore[index]
    assert ids[0].startswith("ctgw7_") and ids[1].startswith("ctgw12_")


def test_ids_under_real_xdist(inner: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    inner.makepyfile("""
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_id(ctshm_id, i):
            with open("ids.txt", "a") as f:
                f.write(ctshm_id + "\\n")
    """)
    r = run_inner(inner, "-p", "xdist.plugin", "-n", "2")
    r.assert_outcomes(passed=8)
    ids = leaked_ids(inner)
    assert len(ids) == 8 and len(set(ids)) == 8
    workers = {re.fullmatch(ID_RE, i)["worker"] for i in ids}  # type: ignore[index]
    assert workers <= {"gw0", "gw1"} and workers, ids


# ---------------------------------------------------------------------------------------------
# Leak check
# ---------------------------------------------------------------------------------------------


def test_leak_check_on_fails_names_and_removes(inner: pytest.Pytester) -> None:
    inner.makepyfile(LEAKY)
    try:
        r = run_inner(inner, "--ctshm-leak-check")
        (id,) = leaked_ids(inner)
        r.assert_outcomes(passed=1, errors=1)  # the body passed; the teardown check failed
        r.stdout.fnmatch_lines([
            "*ERROR at teardown of test_leaks*",
            f"*ctshm leak check: *test_leaks left 2 objects in /dev/shm: /{id}_m, "
            f"/{id}_t_filled (semaphore) (removed)*",
        ])
        assert r.ret == 1
        assert present(id) == []
    finally:
        cleanup(leaked_ids(inner))


def test_leak_check_off_by_default(inner: pytest.Pytester) -> None:
    inner.makepyfile(LEAKY)
    try:
        r = run_inner(inner)
        r.assert_outcomes(passed=1)
        (id,) = leaked_ids(inner)
        assert present(id) == [f"{id}_m", f"sem.{id}_t_filled"]  # left alone
    finally:
        cleanup(leaked_ids(inner))
    assert present(id) == []


def test_leak_check_ini_option(inner: pytest.Pytester) -> None:
    inner.makepyfile(LEAKY)
    inner.makeini("[pytest]\nctshm_leak_check = true\n")
    try:
        r = run_inner(inner)
        r.assert_outcomes(passed=1, errors=1)
        r.stdout.fnmatch_lines(["*ctshm leak check*left 2 objects*"])
        (id,) = leaked_ids(inner)
        assert present(id) == []
    finally:
        cleanup(leaked_ids(inner))


def test_leak_check_marker(inner: pytest.Pytester) -> None:
    inner.makepyfile(LEAKY + """

@pytest.mark.ctshm_leak_check
def test_marked(ctshm_id):
    _leak(ctshm_id)

@pytest.mark.ctshm_leak_check(False)
def test_opted_out(ctshm_id):
    _leak(ctshm_id)
""")
    try:
        r = run_inner(inner, "-v")  # no option: only the marked test is checked
        r.assert_outcomes(passed=3, errors=1)
        r.stdout.fnmatch_lines(["*ERROR at teardown of test_marked*"])
        ids = leaked_ids(inner)
        assert [len(present(i)) for i in ids] == [2, 0, 2]
        r = run_inner(inner, "--ctshm-leak-check")  # on: all but the opted-out test
        r.assert_outcomes(passed=3, errors=2)
        ids2 = leaked_ids(inner)[3:]
        assert [len(present(i)) for i in ids2] == [0, 0, 2]
    finally:
        cleanup(leaked_ids(inner))


def test_leak_check_no_false_positive(inner: pytest.Pytester) -> None:
    """A fixture built on ctshm_id is torn down before the check runs."""
    inner.makepyfile("""
        import pytest
        from ctshm import ShmMemory, ShmTraceRing

        @pytest.fixture
        def ring(ctshm_id):
            with open("ids.txt", "a") as f:
                f.write(ctshm_id + "\\n")
            with ShmTraceRing.create(ctshm_id, 2, 4096) as r:
                yield r

        def test_ring(ring, ctshm_id):
            ring.put(b"abc")
            with ShmMemory.create_readonly(ctshm_id + "x", 4096):
                pass
            assert ring.get(5) == b"abc"
    """)
    try:
        r = run_inner(inner, "--ctshm-leak-check")
        r.assert_outcomes(passed=1)
    finally:
        cleanup(leaked_ids(inner))


FACTORY = """
import os
import pytest
from ctshm import ShmTraceRing

@pytest.fixture
def ring_factory():
    rings = []

    def make(id):
        with open("ids.txt", "a") as f:
            f.write(id + "\\n")
        r = ShmTraceRing.create(id, 2, 4096)
        rings.append(r)
        return r

    yield make
    for r in rings:
        # Still there: the leak check has not run (nor unlinked the live ring) yet.
        assert os.path.exists("/dev/shm/" + r.name[1:]), r.name
        assert os.path.exists("/dev/shm/sem." + r.name[1:] + "_filled"), r.name
        r.put(b"still usable")
        assert [r.get(5), r.get(5)][1] == b"still usable"
        r.close()

def test_factory_first(ring_factory, ctshm_id):
    ring_factory(ctshm_id).put(b"a")

def test_id_first(ctshm_id, ring_factory):
    ring_factory(ctshm_id).put(b"b")

def test_factory_leaks(ring_factory, ctshm_id):
    ring_factory(ctshm_id).put(b"c")
    leak = ShmTraceRing.create(ctshm_id + "x", 1, 4096)
    pytest.leaked = leak  # keep it alive past the test: a real leak
"""


@pytest.mark.parametrize("order", ["factory_first", "id_first"])
def test_leak_check_runs_after_all_fixtures(inner: pytest.Pytester, order: str) -> None:
    """Issue 10 item 12: a fixture that closes its rings at teardown is torn down *after*
    ``ctshm_id`` when the test lists it first; the check must still see a clean /dev/shm, and
    must not unlink the ring while the fixture still uses it."""
    inner.makepyfile(FACTORY)
    try:
        r = run_inner(inner, "--ctshm-leak-check", "-k", f"test_{order}")
        r.assert_outcomes(passed=1)
        (id,) = leaked_ids(inner)
        assert present(id) == []
    finally:
        cleanup(leaked_ids(inner))


def test_leak_check_after_all_fixtures_still_catches_leaks(inner: pytest.Pytester) -> None:
    inner.makepyfile(FACTORY)
    try:
        r = run_inner(inner, "--ctshm-leak-check", "-k", "test_factory_leaks")
        r.assert_outcomes(passed=1, errors=1)
        (id,) = leaked_ids(inner)
        r.stdout.fnmatch_lines([
            "*ERROR at teardown of test_factory_leaks*",
            f"*test_factory_leaks left 3 objects in /dev/shm: /{id}x_t, /{id}x_t_empty "
            f"(semaphore), /{id}x_t_filled (semaphore) (removed)*",
        ])
        assert present(id) == []
    finally:
        cleanup(leaked_ids(inner))


def test_coexists_with_project_conftest() -> None:
    """This project's tests/conftest.py (shm_id, its own leak check, timeout_s) and the plugin
    load together: distinct fixture, option and marker names."""
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    base = [sys.executable, "-m", "pytest", "-p", "ctshm.pytest_plugin", "-p",
            "no:cacheprovider"]
    r = subprocess.run([*base, "--fixtures", "tests/test_ops.py"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=INNER_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^ctshm_id\b", r.stdout, re.M) and re.search(r"^shm_id\b", r.stdout, re.M)
    r = subprocess.run([*base, "--ctshm-leak-check", "-q", "tests/test_ops.py::test_resolve_names",
                        "tests/test_ops.py::test_segment_ls_stat_rm"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=INNER_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


def test_leftovers_and_remove_helpers() -> None:
    id = "ct_ffffff_zzzz"  # the plugin's format; never handed out by this session
    NamedSemaphore(f"/{id}_t_empty", create=True).close()
    try:
        assert pytest_plugin.leftovers(id) == [f"/{id}_t_empty (semaphore)"]
        assert pytest_plugin._exact_leftovers(id) == [f"/{id}_t_empty (semaphore)"]
    finally:
        pytest_plugin.remove(pytest_plugin.leftovers(id))
    assert pytest_plugin.leftovers(id) == []
    assert pytest_plugin._base36(0, 4) == "0000" and pytest_plugin._base36(36**4, 4) == "10000"
