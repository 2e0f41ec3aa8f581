"""ctshm.libc: constants, the prototype table, loading, error mapping, EINTR retries."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import textwrap
import time

import pytest

from ctshm import libc

from .helpers import run_python, shm_exists

# ---------------------------------------------------------------------------------------------
# Constants agree with the os / mmap / time modules' own copies
# ---------------------------------------------------------------------------------------------

CONSTANTS = [
    ("O_RDONLY", os.O_RDONLY),
    ("O_RDWR", os.O_RDWR),
    ("O_CREAT", os.O_CREAT),
    ("O_EXCL", os.O_EXCL),
    ("PROT_READ", mmap.PROT_READ),
    ("PROT_WRITE", mmap.PROT_WRITE),
    ("PROT_EXEC", mmap.PROT_EXEC),
    ("MAP_SHARED", mmap.MAP_SHARED),
    ("MAP_PRIVATE", mmap.MAP_PRIVATE),
    ("MAP_ANONYMOUS", mmap.MAP_ANONYMOUS),
    ("MADV_DONTNEED", mmap.MADV_DONTNEED),
    ("CLOCK_MONOTONIC", time.CLOCK_MONOTONIC),
]
if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux only (libc.py never passes it on macOS)
    CONSTANTS.append(("MADV_HUGEPAGE", mmap.MADV_HUGEPAGE))


@pytest.mark.parametrize(("name", "expected"), CONSTANTS, ids=[c[0] for c in CONSTANTS])
def test_constant_matches_stdlib(name: str, expected: int) -> None:
    assert getattr(libc, name) == expected


def test_madv_hugepage_is_checked_on_linux() -> None:
    # The parametrization above must not silently lose MADV_HUGEPAGE where it matters.
    if libc.IS_LINUX:
        assert hasattr(mmap, "MADV_HUGEPAGE")
        assert libc.MADV_HUGEPAGE == mmap.MADV_HUGEPAGE == 14
    else:
        assert libc.MADV_HUGEPAGE == -1


def test_name_max_matches_the_filesystem() -> None:
    if libc.IS_LINUX:
        assert os.pathconf("/dev/shm", "PC_NAME_MAX") == libc.NAME_MAX
        assert libc.NAME_MAX_INCLUDES_SLASH is False
    else:
        assert libc.NAME_MAX == 31
        assert libc.NAME_MAX_INCLUDES_SLASH is True


def test_failure_sentinels() -> None:
    assert (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1 == libc.MAP_FAILED
    assert libc.sem_failed(None)
    assert libc.sem_failed(0)
    assert libc.sem_failed(libc.MAP_FAILED)
    assert not libc.sem_failed(0x7F0000001000)


def test_page_size() -> None:
    assert libc.page_size() == mmap.PAGESIZE


def test_timespec_layout() -> None:
    assert ctypes.sizeof(libc.timespec) == 2 * ctypes.sizeof(ctypes.c_long)
    ts = libc.timespec(5, 7)
    assert (ts.tv_sec, ts.tv_nsec) == (5, 7)


# ---------------------------------------------------------------------------------------------
# The prototype table and the loader
# ---------------------------------------------------------------------------------------------


def test_every_prototype_is_bound_with_its_declared_types() -> None:
    assert libc.PROTOTYPES, "empty prototype table"
    for name, proto in libc.PROTOTYPES.items():
        assert proto.fails in ("neg1", "ptr", "rc"), name
        assert isinstance(proto.argtypes, tuple) and proto.argtypes, name
        assert proto.restype is not None, name
        f = getattr(libc.fn, name)
        if f is None:
            assert not proto.required, f"required {name} not bound"
            continue
        assert tuple(f.argtypes) == proto.argtypes, name
        assert f.restype is proto.restype, name


def test_function_namespace_matches_the_table() -> None:
    declared = set(libc._Functions.__annotations__)
    assert declared == set(libc.PROTOTYPES)


def test_glibc_binds_the_optional_functions() -> None:
    # glibc >= 2.30 has all of them; musl lacks sem_clockwait (then this would fail loudly,
    # which is what we want on a new platform rather than silently skipping wait modes).
    if not libc.IS_LINUX:
        pytest.fail("this assertion is written for Linux only; extend it for this platform")
    for name in ("sem_clockwait", "sem_timedwait", "posix_fallocate", "sem_getvalue"):
        assert getattr(libc.fn, name) is not None, name
    assert libc.libraries, "no library recorded as searched"


def test_load_reports_a_missing_required_symbol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(libc.PROTOTYPES, "ctshm_no_such_function",
                        libc.Proto(ctypes.c_int, (ctypes.c_int,), "neg1", True, "test"))
    with pytest.raises(ImportError) as info:
        libc._load()
    msg = str(info.value)
    assert "ctshm_no_such_function" in msg
    assert "libc.so.6" in msg or "libSystem" in msg  # names the libraries it searched


def test_load_tolerates_a_missing_optional_symbol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(libc.PROTOTYPES, "ctshm_no_such_function",
                        libc.Proto(ctypes.c_int, (ctypes.c_int,), "neg1", False, "test"))
    fns, searched = libc._load()
    assert fns.ctshm_no_such_function is None  # type: ignore[attr-defined]
    assert fns.shm_open is not None
    assert searched


def test_load_with_no_usable_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc, "_candidate_libraries", lambda: ["libctshm-nonexistent.so.9"])
    with pytest.raises(ImportError) as info:
        libc._load()
    msg = str(info.value)
    assert "shm_open" in msg and "sem_open" in msg
    assert "any library" in msg


def test_load_searches_later_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    # A library that lacks everything (the dynamic loader: dlsym on any other library also
    # searches its dependencies, libc among them), then the real one.
    loader = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}.get(
        os.uname().machine)
    if not libc.IS_LINUX or loader is None:
        pytest.fail("written for Linux x86_64/aarch64 only: extend it for this platform")
    monkeypatch.setattr(libc, "_candidate_libraries",
                        lambda: ["libctshm-nonexistent.so.9", loader, "libc.so.6"])
    fns, searched = libc._load()
    assert searched == [loader, "libc.so.6"]
    assert fns.shm_open is not None and fns.sem_open is not None


def test_import_spawns_no_process_and_avoids_find_library() -> None:
    code = textwrap.dedent("""
        import sys
        events = []
        def hook(event, args):
            if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork",
                         "os.forkpty", "os.system", "os.spawn", "os.startfile"):
                events.append(event)
        sys.addaudithook(hook)
        import ctypes.util
        def no_find_library(name):
            events.append("find_library:" + name)
            return None
        ctypes.util.find_library = no_find_library
        import ctshm, ctshm.libc, ctshm.semaphore, ctshm.atomics, ctshm.memory, ctshm.cli
        ctshm.atomics.get_backend()
        ctshm.cli.environment()
        print("EVENTS", events)
    """)
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert "EVENTS []" in r.stdout, r.stdout + r.stderr


def test_audit_hook_would_see_a_subprocess() -> None:
    # Control for the test above: the same hook does record a subprocess.
    code = textwrap.dedent("""
        import sys, subprocess
        events = []
        sys.addaudithook(lambda e, a: events.append(e) if e == "subprocess.Popen" else None)
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        print("EVENTS", events)
    """)
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert "EVENTS ['subprocess.Popen']" in r.stdout


# ---------------------------------------------------------------------------------------------
# Errors carry the name; EINTR is retried
# ---------------------------------------------------------------------------------------------


def test_oserror_picks_the_subclass_and_carries_the_name() -> None:
    e = libc.oserror(errno.ENOENT, "/x_m", "shm_open")
    assert isinstance(e, FileNotFoundError)
    assert e.errno == errno.ENOENT and e.filename == "/x_m"
    assert "shm_open" in str(e.strerror)
    assert isinstance(libc.oserror(errno.EEXIST, "/y"), FileExistsError)
    assert isinstance(libc.oserror(errno.EACCES, "/y"), PermissionError)
    plain = libc.oserror(errno.ENOMEM)
    assert type(plain) is OSError and plain.filename is None


def test_shm_open_missing_raises_file_not_found_with_name(shm_id: str) -> None:
    name = f"/{shm_id}_m"
    with pytest.raises(FileNotFoundError) as info:
        libc.shm_open(name, libc.O_RDWR)
    assert info.value.filename == name
    assert isinstance(info.value, OSError)
    with pytest.raises(FileNotFoundError) as info2:
        libc.shm_unlink(name)
    assert info2.value.filename == name


def test_shm_wrappers_round_trip(shm_id: str) -> None:
    name = f"/{shm_id}_m"
    fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
    try:
        assert shm_exists(name)
        with pytest.raises(FileExistsError) as info:
            libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR)
        assert info.value.filename == name
        size = 3 * libc.page_size()
        libc.ftruncate(fd, size, name)
        assert os.fstat(fd).st_size == size
        assert libc.posix_fallocate(fd, 0, size, name) is (libc.fn.posix_fallocate is not None)
        addr = libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0, name)
        try:
            ctypes.memmove(addr, b"hello", 5)
            assert os.pread(fd, 5, 0) == b"hello"
            assert libc.madvise(addr, size, libc.MADV_DONTNEED) is True
            libc.mprotect(addr, size, libc.PROT_READ)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
        libc.shm_unlink(name)
    assert not shm_exists(name)


def test_mmap_failure_raises_oserror() -> None:
    with pytest.raises(OSError) as info:
        libc.mmap(1 << 62, libc.PROT_READ, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0,
                  name="huge")
    assert info.value.errno == errno.ENOMEM
    assert info.value.filename == "huge"


def test_madvise_declined_returns_false() -> None:
    assert libc.madvise(0x1000, 4096, 0x7FFF) is False  # bogus advice: EINVAL, no exception


class _Flaky:
    """Fails with EINTR ``n`` times (errno set through ctypes' private copy), then returns."""

    def __init__(self, n: int, result: object, fail_value: object = -1,
                 final_errno: int = errno.EINTR) -> None:
        self.n, self.result, self.fail_value, self.final_errno = n, result, fail_value, final_errno
        self.calls = 0

    def __call__(self, *args: object) -> object:
        self.calls += 1
        if self.calls <= self.n:
            ctypes.set_errno(self.final_errno)
            return self.fail_value
        return self.result


def test_retry_eintr_retries_neg1_calls() -> None:
    f = _Flaky(3, 7)
    assert libc.retry_eintr("shm_unlink", f, b"/x") == 7
    assert f.calls == 4


def test_retry_eintr_retries_ptr_calls() -> None:
    f = _Flaky(2, 0x10000, fail_value=libc.MAP_FAILED)
    assert libc.retry_eintr("mmap", f) == 0x10000
    assert f.calls == 3


def test_retry_eintr_retries_rc_calls() -> None:
    calls = []

    def fake(*args: object) -> int:
        calls.append(args)
        return errno.EINTR if len(calls) < 3 else 0

    assert libc.retry_eintr("posix_fallocate", fake, 3, 0, 10) == 0
    assert len(calls) == 3

    def nospace(*args: object) -> int:
        return errno.ENOSPC

    with pytest.raises(OSError) as info:
        libc.retry_eintr("posix_fallocate", nospace, 3, 0, 10, name="/n")
    assert info.value.errno == errno.ENOSPC and info.value.filename == "/n"


def test_retry_eintr_raises_other_errors_with_the_name() -> None:
    f = _Flaky(1, 0, final_errno=errno.EACCES)
    with pytest.raises(PermissionError) as info:
        libc.retry_eintr("shm_open", f, b"/x", 0, 0, name="/x")
    assert info.value.filename == "/x"
    assert f.calls == 1
    g = _Flaky(1, 0x1000, fail_value=None, final_errno=errno.ENOMEM)
    with pytest.raises(OSError) as info2:
        libc.retry_eintr("sem_open", g, b"/x", 0, name="/x")
    assert info2.value.errno == errno.ENOMEM
