"""ctshm.atomics: every backend, in one process and under multi-process contention."""

from __future__ import annotations

import ctypes
import errno
import os
import textwrap
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from ctshm import ShmMemory, atomics, libc
from ctshm.atomics import AtomicsUnavailable, available_backends, get_backend

from .helpers import COUNTER_OFF, READY_OFF, child_hammer, run_children, run_python

BACKENDS = available_backends()
MASK = (1 << 64) - 1


def test_both_backends_are_available_here() -> None:
    # Guards the parametrization below: on x86_64/aarch64 Linux the machine-code backend
    # always works (unless the kernel forbids executable memory) and libatomic ships with
    # GCC's runtime (Debian: libatomic1).  If this fails, the other tests cover less.
    assert atomics.BACKENDS == ("libatomic", "machine-code")
    if libc.IS_LINUX and atomics.machine() in ("x86_64", "aarch64"):
        assert BACKENDS == ["libatomic", "machine-code"], (
            "expected both atomics backends; install libatomic1 if libatomic is missing")
    else:
        assert BACKENDS, "no atomics backend at all"


class Word(NamedTuple):
    addr: int  # address of an 8-byte aligned word in a shared mapping
    q: memoryview  # the same memory as unsigned 64-bit words


@pytest.fixture
def word(shm_id: str) -> Iterator[Word]:
    owner = ShmMemory.create_readonly(shm_id, 4096)
    rw = ShmMemory.open_readwrite(shm_id)
    q = rw.buf.cast("Q")
    try:
        yield Word(rw.address, q)
    finally:
        q.release()
        rw.close()
        owner.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> atomics.Atomics:
    return get_backend(request.param)


# ---------------------------------------------------------------------------------------------
# Single-process semantics, every backend
# ---------------------------------------------------------------------------------------------


def test_backend_identity(backend: atomics.Atomics) -> None:
    assert backend.name in atomics.BACKENDS
    assert get_backend(backend.name) is backend  # cached
    assert backend.name in repr(backend)
    assert set(backend.ctypes_calls) == {"load", "store", "fetch_add", "compare_exchange",
                                         "fence"}


def test_load_store(backend: atomics.Atomics, word: Word) -> None:
    assert backend.load(word.addr) == 0
    for v in (1, 0xDEADBEEF, 1 << 63, MASK, 0):
        backend.store(word.addr, v)
        assert backend.load(word.addr) == v
    backend.store(word.addr + 8, 42)  # neighbours are independent words
    assert backend.load(word.addr) == 0 and backend.load(word.addr + 8) == 42


def test_fetch_add_returns_the_old_value(backend: atomics.Atomics, word: Word) -> None:
    backend.store(word.addr, 100)
    assert backend.fetch_add(word.addr, 5) == 100
    assert backend.fetch_add(word.addr, 0) == 105
    assert backend.fetch_add(word.addr, 1 << 40) == 105
    assert backend.load(word.addr) == 105 + (1 << 40)


def test_fetch_add_wraps_at_2_64(backend: atomics.Atomics, word: Word) -> None:
    backend.store(word.addr, MASK)
    assert backend.fetch_add(word.addr, 1) == MASK
    assert backend.load(word.addr) == 0
    assert backend.fetch_add(word.addr, MASK) == 0  # adding 2**64-1 is subtracting 1
    assert backend.load(word.addr) == MASK
    backend.store(word.addr, 5)
    assert backend.fetch_add(word.addr, -1) == 5  # negative deltas wrap the same way
    assert backend.load(word.addr) == 4
    backend.store(word.addr, MASK - 2)
    assert backend.fetch_add(word.addr, 10) == MASK - 2
    assert backend.load(word.addr) == 7


def test_compare_exchange_success(backend: atomics.Atomics, word: Word) -> None:
    backend.store(word.addr, 10)
    assert backend.compare_exchange(word.addr, 10, 20) == 10
    assert backend.load(word.addr) == 20
    backend.store(word.addr, MASK)
    assert backend.compare_exchange(word.addr, MASK, 1 << 63) == MASK
    assert backend.load(word.addr) == 1 << 63


def test_compare_exchange_failure(backend: atomics.Atomics, word: Word) -> None:
    backend.store(word.addr, 20)
    assert backend.compare_exchange(word.addr, 10, 30) == 20  # returns what it saw
    assert backend.load(word.addr) == 20  # unchanged
    backend.store(word.addr, MASK)
    assert backend.compare_exchange(word.addr, MASK - 1, 0) == MASK
    assert backend.load(word.addr) == MASK


def test_fence_is_callable(backend: atomics.Atomics, word: Word) -> None:
    assert callable(backend.fence)
    backend.store(word.addr, 3)
    backend.fence()
    backend.fence()
    assert backend.load(word.addr) == 3


def test_memoryview_words_agree_with_the_backend(backend: atomics.Atomics, word: Word) -> None:
    # What PLAIN_ORDERED_ACCESS relies on: a cast('Q') memoryview reads and writes the same
    # 8 bytes as the backend's load/store.
    for i, v in enumerate((1, 0x0123456789ABCDEF, MASK, 1 << 63, 0)):
        backend.store(word.addr + 8 * i, v)
        assert word.q[i] == v
        word.q[i + 8] = v
        assert backend.load(word.addr + 8 * (i + 8)) == v
    word.q[0] = 7
    assert backend.fetch_add(word.addr, 1) == 7
    assert word.q[0] == 8


# ---------------------------------------------------------------------------------------------
# Many processes on one word
# ---------------------------------------------------------------------------------------------

N_PROCS = 4
ITERATIONS = 20_000


def _hammer(shm_id: str, backend: str, atomic: bool, iterations: int) -> int:
    """Run N_PROCS spawned children on one counter; return its final value."""
    owner = ShmMemory.create_readonly(shm_id, 4096)
    try:
        codes = run_children(child_hammer, [(shm_id, backend, N_PROCS, iterations, atomic)]
                             * N_PROCS, timeout=120)
        assert codes == [0] * N_PROCS
        q = owner.buf.cast("Q")
        ready, total = q[READY_OFF // 8], q[COUNTER_OFF // 8]
        q.release()
        assert ready == N_PROCS
        assert get_backend(backend).load(owner.address + COUNTER_OFF) == total
        return int(total)
    finally:
        owner.close()


@pytest.mark.parametrize("name", BACKENDS)
def test_fetch_add_loses_no_update_under_contention(shm_id: str, name: str) -> None:
    assert _hammer(shm_id, name, True, ITERATIONS) == N_PROCS * ITERATIONS


@pytest.mark.parametrize("name", BACKENDS)
def test_non_atomic_increment_loses_updates(shm_id: str, name: str) -> None:
    # The control: the same children with load-then-store lose updates, which shows that
    # the contention test above really runs the processes concurrently and can fail.
    totals = []
    for attempt in range(5):
        total = _hammer(f"{shm_id}r{attempt}", name, False, ITERATIONS)
        totals.append(total)
        assert total <= N_PROCS * ITERATIONS
        if total < N_PROCS * ITERATIONS:
            return
    pytest.fail(f"non-atomic increments lost no update in 5 runs ({totals}): the processes "
                "never overlapped, so the contention test proves nothing")


# ---------------------------------------------------------------------------------------------
# Selection: get_backend, CTSHM_ATOMICS, failures
# ---------------------------------------------------------------------------------------------


def test_unknown_backend_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown atomics backend 'gcc-builtins'"):
        get_backend("gcc-builtins")


def test_auto_is_the_first_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTSHM_ATOMICS", raising=False)
    assert get_backend("auto").name == BACKENDS[0]
    assert get_backend().name == BACKENDS[0]


_REPORT_BACKEND = textwrap.dedent("""
    from ctshm import atomics
    print("BACKEND", atomics.get_backend().name)
""")


@pytest.mark.parametrize("name", [*BACKENDS, "auto", " Auto "])
def test_ctshm_atomics_env_forces_the_backend(name: str) -> None:
    r = run_python(_REPORT_BACKEND, env={"CTSHM_ATOMICS": name})
    assert r.returncode == 0, r.stderr
    expected = BACKENDS[0] if name.strip().lower() == "auto" else name
    assert r.stdout == f"BACKEND {expected}\n"


def test_ctshm_atomics_env_unknown() -> None:
    r = run_python(_REPORT_BACKEND, env={"CTSHM_ATOMICS": "spinlock"})
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "unknown atomics backend 'spinlock'" in r.stderr


def test_machine_code_refused_executable_page(monkeypatch: pytest.MonkeyPatch) -> None:
    unmapped: list[tuple[int, int]] = []
    real_munmap = libc.munmap

    def refuse(addr: int, length: int, prot: int) -> None:
        raise PermissionError(errno.EACCES, "Permission denied (mprotect)")

    def record_munmap(addr: int, length: int) -> None:
        unmapped.append((addr, length))
        real_munmap(addr, length)

    monkeypatch.setattr(libc, "mprotect", refuse)
    monkeypatch.setattr(libc, "munmap", record_munmap)
    with pytest.raises(AtomicsUnavailable, match="refused an executable page"):
        atomics._machine_code()
    assert len(unmapped) == 1, "the code page was not unmapped after the failure"


def test_machine_code_unknown_cpu() -> None:
    with pytest.raises(AtomicsUnavailable, match="sparc64"):
        atomics._machine_code("sparc64")


def test_libatomic_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)  # the module atomics.py uses
    with pytest.raises(AtomicsUnavailable, match="libatomic not found"):
        atomics._libatomic()


def test_auto_reports_every_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(which: str) -> Any:
        def factory() -> atomics.Atomics:
            raise AtomicsUnavailable(f"{which} is broken")
        return factory

    monkeypatch.setattr(atomics, "_cache", {})
    monkeypatch.setitem(atomics._FACTORIES, "libatomic", broken("libatomic"))
    monkeypatch.setitem(atomics._FACTORIES, "machine-code", broken("machine-code"))
    with pytest.raises(AtomicsUnavailable) as info:
        get_backend("auto")
    assert "libatomic is broken" in str(info.value)
    assert "machine-code is broken" in str(info.value)
    assert available_backends() == []


# ---------------------------------------------------------------------------------------------
# Plain ordered access
# ---------------------------------------------------------------------------------------------

_REPORT_PLAIN = "from ctshm import atomics; print('PLAIN', atomics.PLAIN_ORDERED_ACCESS)"


@pytest.mark.parametrize(("value", "expected"), [
    (None, atomics.machine() == "x86_64"),
    ("1", atomics.machine() == "x86_64"),
    ("0", False), ("off", False), ("false", False), ("no", False),
])
def test_plain_access_setting(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"CTSHM_PLAIN_ACCESS": value}
    r = run_python(_REPORT_PLAIN, env=env, unset=["CTSHM_PLAIN_ACCESS"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"PLAIN {expected}\n"


def test_plain_access_on_x86_64() -> None:
    if atomics.machine() != "x86_64":
        assert atomics.PLAIN_ORDERED_ACCESS is False
        return
    disabled = os.environ.get("CTSHM_PLAIN_ACCESS", "1").strip() in ("0", "no", "false", "off")
    assert atomics.PLAIN_ORDERED_ACCESS is (not disabled)


def test_ctypes_word_is_aligned(word: Word) -> None:
    # The mapping (and so every word the tests use) is page aligned.
    assert word.addr % libc.page_size() == 0
    assert ctypes.sizeof(ctypes.c_uint64) == 8
