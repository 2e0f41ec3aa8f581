"""Helpers shared by the tests, including the functions spawned child processes run.

This module is imported by every ``spawn`` child, so it imports nothing heavy (no pytest).
Child functions report failure through their exit code (an exception gives exit code 1 and
a traceback on stderr, which pytest captures); the parent asserts the exit codes.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Where Linux keeps POSIX shm objects and (as ``sem.NAME``) named semaphores.
SHM_DIR = "/dev/shm"

#: One prefix per test process (per xdist worker): every ``shm_id`` starts with
#: ``WORKER_PREFIX + "_"``, so the leak check only ever looks at this worker's objects.
#: "ct" + 6 hex digits: short enough for macOS's 31-byte names ("/ct0a1b2c_123_t_filled").
WORKER_PREFIX = "ct" + secrets.token_hex(3)

SPAWN = multiprocessing.get_context("spawn")

#: Default bound on how long a test waits for a child process.
CHILD_TIMEOUT = 60.0

#: PyPy has no reference counting: what CPython frees when the last reference goes (a
#: mapping after close(), a generator left by ``break``) goes at the next garbage collection.
IS_PYPY = sys.implementation.name == "pypy"


def collect_garbage() -> None:
    """Run the collector until chains of finalizers have run (PyPy needs several passes:
    a view's buffer, then its pointer's destructor, then the mapping's finalizer)."""
    import gc

    for _ in range(4):
        gc.collect()


# ---------------------------------------------------------------------------------------------
# Parent-side utilities
# ---------------------------------------------------------------------------------------------


def our_shm_entries(prefix: str = WORKER_PREFIX) -> set[str]:
    """Entries of /dev/shm that belong to this worker (objects and ``sem.`` semaphores)."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:  # macOS: no /dev/shm (names cannot be listed there)
        return set()
    mine = (prefix + "_", "sem." + prefix + "_")
    return {e for e in entries if e.startswith(mine)}


def shm_exists(name: str) -> bool:
    """True if the POSIX shm object ``/NAME`` exists (``name`` with its leading slash)."""
    return os.path.exists(SHM_DIR + "/" + name.lstrip("/"))


def sem_exists(name: str) -> bool:
    """True if the named semaphore ``/NAME`` exists (glibc: ``/dev/shm/sem.NAME``)."""
    return os.path.exists(SHM_DIR + "/sem." + name.lstrip("/"))


def drain(ring: Any, timeout: float = 10.0) -> int:
    """Take and release every message still committed in ``ring`` (what a test left unread),
    so that closing its owner loses none (no ``UnreadMessagesWarning``); how many.  Stops at
    the first non-``Data`` result (finished, crashed, timeout): what is left then is for the
    test to judge.  A closed handle drains nothing."""
    from ctshm import Data

    n = 0
    while not ring.closed and len(ring):
        r = ring.access(timeout)
        if not isinstance(r, Data):
            break
        r.guard.release()
        n += 1
    return n


def run_children(target: Callable[..., Any], args_list: Sequence[tuple[Any, ...]],
                 timeout: float = CHILD_TIMEOUT) -> list[Optional[int]]:
    """Start one spawned process per argument tuple, join them all within ``timeout`` seconds
    (in total), kill any still running, and return their exit codes (None: had to be killed).
    """
    procs = [SPAWN.Process(target=target, args=args, daemon=True) for args in args_list]
    for p in procs:
        p.start()
    return join_all(procs, timeout)


def join_all(procs: Sequence[Any], timeout: float = CHILD_TIMEOUT) -> list[Optional[int]]:
    deadline = time.monotonic() + timeout
    codes: list[Optional[int]] = []
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


def start_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """``fn()`` in a thread, started; the list receives what it raises (the test asserts it
    after joining the thread)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def fork_call(fn: Callable[[], Any]) -> int:
    """``os.fork()`` a child that runs ``fn`` and ``os._exit``s: 0 if it returned, 1 if it
    raised (the traceback goes to stderr).  Reap it with :func:`reap`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 30) -> int:
    """The forked child's exit code, waiting at most ``timeout`` s (then SIGKILL and fail)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not exit within {timeout} s")


def run_python(code: str, env: Optional[dict[str, str]] = None, timeout: float = 60.0,
               unset: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` in a fresh interpreter that imports ctshm from this checkout.

    ``env`` entries are added to the current environment; names in ``unset`` are removed.
    """
    full = dict(os.environ)
    for k in unset:
        full.pop(k, None)
    full.update(env or {})
    full["PYTHONPATH"] = REPO_ROOT + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env=full, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


# ---------------------------------------------------------------------------------------------
# The Rust peer (../shared/seedref)
# ---------------------------------------------------------------------------------------------

#: The Rust original's command-line peer, beside the checkout (absent in a fresh clone).
SEEDREF_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "seedref")


def find_cargo() -> Optional[str]:
    """cargo on PATH or in the rustup locations build.sh also adds (None if absent)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/root/.cargo/bin",
                            os.path.expanduser("~/.cargo/bin")])
    return shutil.which("cargo", path=path)


def locate_seedref(seedref_dir: str = SEEDREF_DIR, timeout: float = 600
                   ) -> tuple[Optional[str], Optional[str]]:
    """``(binary, None)``, or ``(None, why)`` where the peer truly cannot exist here.

    ``SEEDREF_BIN`` (an executable) wins.  Otherwise ``seedref_dir/build.sh`` builds it; the
    reason to skip is only that build.sh is missing or cargo is absent.  A build that fails
    with both present raises ``RuntimeError``: a broken build is a failure, never a skip.
    """
    env_bin = os.environ.get("SEEDREF_BIN")
    if env_bin and os.access(env_bin, os.X_OK):
        return env_bin, None
    script = os.path.join(seedref_dir, "build.sh")
    if not os.path.isfile(script):
        return None, (f"the Rust peer's sources are missing: no {script} (a clone without "
                      "../shared; set SEEDREF_BIN to a built seedref binary)")
    if find_cargo() is None:
        return None, f"cargo is not installed: cannot build the Rust peer {seedref_dir}"
    target = os.environ.get("CARGO_TARGET_DIR", "/tmp/seedref-target")
    out = subprocess.run(["bash", script], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "CARGO_TARGET_DIR": target}, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        raise RuntimeError(f"{script} failed (exit {out.returncode}):\n{out.stdout}"
                           f"{out.stderr}")
    return lines[-1], None


def pattern(length: int, seed: int) -> bytes:
    """Deterministic test bytes: byte i is (i * 7 + seed) mod 251 (never a period of 256)."""
    return bytes((i * 7 + seed) % 251 for i in range(length))


# ---------------------------------------------------------------------------------------------
# ShmMemory children
# ---------------------------------------------------------------------------------------------


def child_write_pattern(id: str, offset: int, length: int, seed: int) -> None:
    """Open ``/{id}_m`` read-write, write ``pattern(length, seed)`` at ``offset``, close."""
    from ctshm import ShmMemory

    m = ShmMemory.open_readwrite(id)
    assert not m.readonly
    m.buf[offset:offset + length] = pattern(length, seed)
    m.close()


def child_write_pattern_pickled(mem: Any, offset: int, length: int, seed: int) -> None:
    """Like child_write_pattern, given a ShmMemory that was pickled by the parent."""
    from ctshm import ShmMemory

    assert isinstance(mem, ShmMemory), type(mem)
    assert not mem.readonly, repr(mem)
    assert "opener" in repr(mem), repr(mem)
    mem.buf[offset:offset + length] = pattern(length, seed)
    mem.close()


# ---------------------------------------------------------------------------------------------
# Semaphore children
# ---------------------------------------------------------------------------------------------


def child_sem_post(name: str, count: int, delay: float) -> None:
    """Open the semaphore ``name`` (never creates), sleep ``delay``, post ``count`` times."""
    from ctshm.semaphore import NamedSemaphore

    s = NamedSemaphore(name)
    time.sleep(delay)
    for _ in range(count):
        s.post()
    s.close()


def child_sem_acquire(name: str, count: int, timeout: float, wait_mode: str) -> None:
    """Take ``count`` tokens, each within ``timeout``; exit code 3 if one did not arrive."""
    from ctshm.semaphore import NamedSemaphore

    s = NamedSemaphore(name, wait_mode=wait_mode)
    for _ in range(count):
        if not s.acquire(timeout):
            sys.exit(3)
    s.close()


def child_sem_eintr(name: str, wait_mode: str, timeout: float, conn: Connection) -> None:
    """In a fresh (single-threaded) process, wait on ``name`` while an interval timer
    delivers SIGALRM every 20 ms to a Python handler.  Sends "ready" just before the wait,
    then (result, elapsed, signals)."""
    from ctshm.semaphore import NamedSemaphore

    s = NamedSemaphore(name, wait_mode=wait_mode)
    hits = [0]

    def on_alarm(signum: int, frame: Any) -> None:
        hits[0] += 1

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
    try:
        conn.send("ready")
        t0 = time.monotonic()
        got = s.acquire(timeout)
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
    conn.send((got, elapsed, hits[0]))
    conn.close()
    s.close()


# ---------------------------------------------------------------------------------------------
# Atomics children
# ---------------------------------------------------------------------------------------------

#: Layout of the word block the contention children share (byte offsets).
READY_OFF = 0
COUNTER_OFF = 64  # its own cache line


def child_hammer(id: str, backend: str, n_procs: int, iterations: int, atomic: bool) -> None:
    """Open ``/{id}_m``; announce readiness and wait until all ``n_procs`` children are ready
    (so they really run at the same time); then add 1 to the counter ``iterations`` times,
    with ``fetch_add`` (``atomic``) or with a non-atomic load-then-store (the control)."""
    from ctshm import ShmMemory
    from ctshm.atomics import get_backend

    a = get_backend(backend)
    m = ShmMemory.open_readwrite(id)
    base = m.address
    ready, counter = base + READY_OFF, base + COUNTER_OFF
    a.fetch_add(ready, 1)
    deadline = time.monotonic() + 30
    while a.load(ready) < n_procs:
        if time.monotonic() > deadline:
            sys.exit(4)
    if atomic:
        add = a.fetch_add
        for _ in range(iterations):
            add(counter, 1)
    else:
        load, store = a.load, a.store
        for _ in range(iterations):
            store(counter, load(counter) + 1)
    m.close()


# ---------------------------------------------------------------------------------------------
# Crash reporting children (multiprocessing targets)
# ---------------------------------------------------------------------------------------------


def child_raise_in_reporting(id: str, form: str) -> None:
    """A multiprocessing producer whose target raises: ``form`` is "with" (the context
    manager), "decorator" (a decorated function), or "install" (``crashhook.install``, which
    multiprocessing bypasses)."""
    from ctshm import ShmTraceRing, crashhook

    ring = ShmTraceRing.open(id, timeout=20)
    ring.put(b"before")
    if form == "install":
        crashhook.install(ring)
        _fail_at_step(42)
    elif form == "with":
        with crashhook.reporting(ring):
            _fail_at_step(42)
    else:
        @crashhook.reporting(ring)
        def work() -> None:
            _fail_at_step(42)

        work()


def _fail_at_step(step: int) -> None:
    raise ValueError(f"bad trace at step {step}")
