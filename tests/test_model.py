"""The Promela model of the ring protocol (model/) and regression tests for what it found.

``test_model_check`` runs ``model/check.sh``: spin checks every configuration of
``model/ring.pml`` exhaustively (the model of ctshm/ring.py with the proposed fixes passes
every property; each known bug and each seeded mutant yields its counterexample), and the
fast mode (``-DFAST``: the ``fast-*`` runs pass, its mutants ``mutant-fast-*`` and the design
findings ``finding-fast-*`` fail with their property; check.sh's exit status says so).

The other tests replay, in Python and deterministically, the interleavings spin found in
ctshm/ring.py (model/README.md, "Findings").  Each forces its interleaving by shadowing one
step of a ring handle -- an instance attribute over ``_load``, ``_post`` or ``_cas``, so that
"another thread / process / signal handler" acts exactly between two of ring.py's
shared-memory accesses -- and otherwise runs the real code.  All eight are fixed (BUG-1 in
b213613, BUG-2..7 in d08ac82, BUG-8 in 8c3b673): the replays are regression tests, each of
which fails on the code before its fix.  (An open finding is marked
``xfail(strict=True, raises=AssertionError)`` until fixed; XPASS then fails the run so the
marker gets removed.)  Preconditions use ``pytest.fail`` (not assert), so a broken setup never
passes for the expected failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from ctshm import CrashDetails, Crashed, Data, Finished, ShmTraceRing
from ctshm.errors import UnreadMessagesWarning
from ctshm.layout import FINISHED as _FIN, RESERVED_IDX as _RES

from .helpers import REPO_ROOT, drain, run_python

MODEL_DIR = os.path.join(REPO_ROOT, "model")
CHECK_SH = os.path.join(MODEL_DIR, "check.sh")
CHECK_TIMEOUT = 1100.0  # check.sh takes ~4 min on 2 cores; generous for a loaded machine


def _require(cond: bool, msg: str) -> None:
    """A precondition of the replayed interleaving (a failure here is not the bug)."""
    if not cond:
        pytest.fail(f"precondition: {msg}", pytrace=False)


def _hook(ring: ShmTraceRing, word: int, action: Callable[[], None], *, before: bool = False
          ) -> None:
    """Shadow ``ring._load``: the first load of ``word`` runs ``action`` -- what another thread,
    process or signal handler does at that moment -- right after the load (``before``: right
    before it, i.e. after the previous shared access)."""
    real = ring._load
    armed = [True]

    def hooked(w: int) -> int:
        if w != word or not armed[0]:
            return real(w)
        armed[0] = False
        if before:
            action()
            return real(w)
        v = real(w)
        action()
        return v

    setattr(ring, "_load", hooked)  # noqa: B010 (shadow the bound method)


def _release(r: Any) -> None:
    if isinstance(r, Data):
        r.guard.release()


def _close_reporting_the_undelivered(prod: ShmTraceRing, cons: ShmTraceRing) -> None:
    """The message committed after notify_crash is never delivered (the point of the test):
    once the consumer has left, the owner's close reports it as unread."""
    cons.close()
    with pytest.warns(UnreadMessagesWarning, match="with 1 committed message"):
        prod.close()


@pytest.fixture
def pair(shm_id: str) -> Iterator[tuple[ShmTraceRing, ShmTraceRing]]:
    """A producer handle (the owner) and a consumer handle on a 2-slot ring, one process."""
    prod = ShmTraceRing.create(shm_id, 2, 4096)
    try:
        cons = ShmTraceRing.open(shm_id)
        try:
            yield prod, cons
            drain(cons)  # what a test left unread: closing the owner loses nothing
        finally:
            cons.close()
    finally:
        prod.close()


# ---------------------------------------------------------------------------------------------
# The model check
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout_s(1200)
def test_model_check(tmp_path: Any) -> None:
    """spin: the fixed model passes, every known bug and mutant gives its counterexample."""
    run_check_script(CHECK_SH, CHECK_TIMEOUT, tmp_path)


def run_check_script(script: str, timeout: float, tmp_path: Any) -> None:
    """Run a model/check*.sh script: pass on exit 0, skip on 77 (spin or a C compiler
    missing and not installable), fail otherwise or after ``timeout`` seconds (with its
    output: every run's verdict).  Also used by tests/test_queue_model.py."""
    name = os.path.relpath(script, REPO_ROOT)
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip(f"{name} needs bash, which is not installed")
    env = dict(os.environ, CHECK_OUT=str(tmp_path / "trails"))
    try:
        proc = subprocess.run([bash, script], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        partial = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                          for x in (e.stdout, e.stderr))
        pytest.fail(f"{name} did not finish within {timeout:g} s:\n{partial}")
    out = proc.stdout + proc.stderr
    print(out)
    if proc.returncode == 77:
        reason = next((ln for ln in out.splitlines() if "SKIP" in ln), out.strip()[-300:])
        pytest.skip(f"model check not run: {reason}")
    assert proc.returncode == 0, f"{name} exit {proc.returncode}:\n{out[-6000:]}"


# ---------------------------------------------------------------------------------------------
# BUG-1 (fixed in b213613): spurious CorruptRingError in _claim
# ---------------------------------------------------------------------------------------------


def test_claim_corrupt_check_is_not_fooled_by_a_moving_ring(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """_claim reads reserved_idx, then write_idx: not a snapshot.  Between the two loads another
    consumer thread reserves and releases a slot and the producer refills it, so write_idx is
    capacity + 1 ahead of the reserved_idx read: a healthy ring, not a corrupt one.
    (model: mutant-naive-corrupt-check; the check now re-reads both words in the safe order)"""
    prod, cons = pair
    prod.put(b"m0")
    prod.put(b"m1")
    cons._plain = False  # the path off x86_64 (and CTSHM_PLAIN_ACCESS=0): loads via _load

    def other_thread_and_producer() -> None:
        r = cons.access(timeout=2)  # "thread A" takes message 0 ...
        _require(isinstance(r, Data) and bytes(r.guard.buf) == b"m0", f"got {r!r}")
        assert isinstance(r, Data)
        r.guard.release()  # ... releases it: read_idx 1, slot 0 free
        prod.put(b"m2", timeout=2)  # the producer refills slot 0: write_idx 3

    _hook(cons, _RES, other_thread_and_producer)
    r = cons.access(timeout=2)  # "thread B": read reserved_idx 0 before all that
    try:
        assert isinstance(r, Data) and bytes(r.guard.buf) == b"m1", f"got {r!r}"
    finally:
        _release(r)


# ---------------------------------------------------------------------------------------------
# BUG-2 (fixed in d08ac82): Finished while a committed message was never handed out
# ---------------------------------------------------------------------------------------------


def _surplus_filled_token(prod: ShmTraceRing, cons: ShmTraceRing) -> None:
    """Leave a ``filled`` token with nothing behind it, the legitimate way: the producer stalls
    between publishing message 0 (``hq[_W] = idx + 1``) and its ``filled`` post; a wait slice of
    the consumer times out meanwhile and access()'s self-healing claim takes message 0 without
    a token; the producer's post then has nothing behind it."""
    real_post = prod._post
    early: list[Any] = []

    def stalled_post(h: Any) -> Any:
        if h == prod._h_filled and not early:
            early.append(cons.access(timeout=2))
        return real_post(h)

    prod._post = stalled_post
    prod.put(b"m0")
    prod._post = real_post
    _require(len(early) == 1 and isinstance(early[0], Data)
             and bytes(early[0].guard.buf) == b"m0",
             f"the self-healing claim did not take message 0: {early!r}")
    early[0].guard.release()


def test_finished_only_after_every_committed_message(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """The consumer takes the surplus token; before _claim loads `finished` (it used to load
    reserved_idx == write_idx == 1 first), the producer commits message 1 and finishes: the
    result must be message 1, not Finished (model: regress-claim-order, -loss)."""
    prod, cons = pair
    _surplus_filled_token(prod, cons)
    cons._plain = False  # _claim's loads go through _load (hookable; the path off x86_64)

    def produce_and_finish() -> None:
        prod.put(b"m1")
        prod.mark_finished()

    _hook(cons, _FIN, produce_and_finish, before=True)
    r = cons.access(timeout=2)
    try:
        assert isinstance(r, Data) and bytes(r.guard.buf) == b"m1", (
            f"access() returned {r!r} although message 1 was committed and never handed out")
    finally:
        _release(r)


# ---------------------------------------------------------------------------------------------
# BUG-3 (fixed in d08ac82): a consumer killed between `read_idx = cur + 1` and `empty.post()`
# loses a slot
# ---------------------------------------------------------------------------------------------


_KILLED_IN_COMPLETE = """
import os, signal
from ctshm import Data, ShmTraceRing
c = ShmTraceRing.open({id!r})
r = c.access(timeout=10)
assert isinstance(r, Data) and bytes(r.guard.buf) == b"m0", r
real = c._post
def post(h):
    if h == c._h_empty:  # _complete stored read_idx + 1 and is about to post `empty`
        os.kill(os.getpid(), signal.SIGKILL)
    return real(h)
c._post = post
r.guard.release()
raise SystemExit("not killed")
"""


def test_killed_consumer_loses_no_slot(shm_id: str) -> None:
    """_complete stores read_idx + 1, then posts `empty`: a consumer killed in between loses
    that token for good.  The producer must still use the slot (model: regress-token-only,
    regress-token-only-hang: a capacity-1 ring used to hang)."""
    prod = ShmTraceRing.create(shm_id, 2, 4096)
    try:
        prod.put(b"m0")
        prod.put(b"m1")
        child = run_python(_KILLED_IN_COMPLETE.format(id=shm_id), timeout=60)
        _require(child.returncode == -signal.SIGKILL,
                 f"consumer child: exit {child.returncode}\n{child.stdout}{child.stderr}")
        h = prod.header()
        _require(h["read_idx"] == 1 and h["write_idx"] == 2, f"header {h}")
        cons = ShmTraceRing.open(shm_id)  # the restarted consumer (this process)
        try:
            _require(cons.get(timeout=5) == b"m1", "message 1 not delivered")
            # The ring is empty now: both slots are free, nothing is held.
            prod.put(b"m2", timeout=2)
            try:
                prod.put(b"m3", timeout=2)
            except TimeoutError:
                raise AssertionError(
                    "the producer waited for a free slot of an empty ring: the killed "
                    "consumer's `empty` token is lost") from None
            assert drain(cons) == 2
        finally:
            cons.close()
    finally:
        prod.close()


# ---------------------------------------------------------------------------------------------
# BUG-4 (fixed in d08ac82): the liveness check overwrote a dead producer's notify_crash
# ---------------------------------------------------------------------------------------------


_CRASHING_PRODUCER = """
import os, sys
from ctshm import ShmTraceRing
r = ShmTraceRing.open({id!r})
r.put(b"x")  # registers the producer
print("ready", flush=True)
sys.stdin.readline()
r.notify_crash(11, 0xDEAD, 2, message="boom")  # a crash handler: report, then die
os._exit(3)
"""


def test_crash_details_survive_the_liveness_check(shm_id: str) -> None:
    """_check_producer_alive loads `finished` (0), then finds the producer dead; a producer
    that called notify_crash and died in between must keep its own report (model:
    regress-check-order)."""
    cons = ShmTraceRing.create(shm_id, 2, 4096)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_PRODUCER.format(id=shm_id)],
                             env=env, cwd=REPO_ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        _require(child.stdout.readline().strip() == "ready", "producer child did not start")
        _require(cons.get(timeout=5) == b"x", "message not delivered")

        def crash_and_die() -> None:  # right after _check_producer_alive loaded `finished`
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            child.wait(30)

        _hook(cons, _FIN, crash_and_die)
        r = cons.access(timeout=5)  # a slice times out -> _check_producer_alive()
        _require(isinstance(r, Crashed), f"got {r!r}")
        assert isinstance(r, Crashed)
        assert (r.details, r.pid, r.message) == (CrashDetails(11, 0xDEAD, 2), None, "boom"), (
            f"notify_crash's report was overwritten: {r!r}")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        cons.close()


# ---------------------------------------------------------------------------------------------
# BUG-5 (fixed in d08ac82): mark_finished erased a notify_crash made between its load and store
# ---------------------------------------------------------------------------------------------


def test_mark_finished_never_erases_a_crash(pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """A notify_crash (signal handler, other thread: no lock) inside mark_finished must not be
    erased (model: regress-finish-store)."""
    prod, cons = pair
    # The handler runs inside mark_finished, at its first access to `finished`: right after
    # a load of it (as ring.py does now), or right before a compare-exchange on it (a fix).
    armed = [True]

    def handler() -> None:
        if armed[0]:
            armed[0] = False
            prod.notify_crash(15, message="SIGTERM")

    real_cas = prod._cas

    def cas(addr: int, expected: int, desired: int) -> int:
        if addr == prod._a_fin:
            handler()
        return real_cas(addr, expected, desired)

    _hook(prod, _FIN, handler)
    prod._cas = cas
    try:
        prod.mark_finished()
    except RuntimeError:
        pass  # a fixed mark_finished may refuse: the ring crashed
    r = cons.access(timeout=2)
    assert isinstance(r, Crashed), f"the crash was erased: {r!r}"


# ---------------------------------------------------------------------------------------------
# BUG-6 (fixed in d08ac82): notify_crash after mark_finished changed the end later threads see
# ---------------------------------------------------------------------------------------------


def test_every_consumer_thread_gets_the_same_end(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """(model: regress-notify-store)"""
    prod, cons = pair
    prod.mark_finished()
    first = cons.access(timeout=2)  # one consumer thread
    _require(isinstance(first, Finished), f"got {first!r}")
    prod.notify_crash(11)  # e.g. the finished producer crashes while shutting down
    again = cons.access(timeout=2)  # another consumer thread (here: the same one, later)
    assert isinstance(again, Finished), f"one thread got Finished, another {again!r}"


# ---------------------------------------------------------------------------------------------
# BUG-7 (fixed in d08ac82): a commit racing notify_crash was delivered
# ---------------------------------------------------------------------------------------------


def test_commit_racing_notify_crash_is_not_delivered(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """_commit checks `finished != CRASHED`, then publishes; a notify_crash in between (signal
    handler, other thread) must keep the message from being delivered (crash_w; model:
    regress-no-crash-w)."""
    prod, cons = pair
    g = prod.acquire(size=3)
    g.buf[:] = b"abc"
    prod._plain = False  # _commit then reads `finished` through _load (the path off x86_64)
    _hook(prod, _FIN, lambda: prod.notify_crash(11))
    try:
        g.commit(3)
    except RuntimeError:
        pass  # refused: not published
    r = cons.access(timeout=2)
    try:
        assert isinstance(r, Crashed), f"delivered after notify_crash: {r!r}"
    finally:
        _release(r)
    _close_reporting_the_undelivered(prod, cons)


# ---------------------------------------------------------------------------------------------
# BUG-8 (fixed: _claim re-reads `finished`): a consumer that read `finished` before the crash
# ---------------------------------------------------------------------------------------------


def test_late_commit_not_delivered_to_a_consumer_that_read_finished_before_the_crash(
        pair: tuple[ShmTraceRing, ShmTraceRing]) -> None:
    """_claim loaded `finished` (0), then the indices; a commit that passed its `finished`
    check before a notify_crash and published after it must not reach this thread (model:
    regress-claim-recheck)."""
    prod, cons = pair
    _surplus_filled_token(prod, cons)  # so that _claim runs while nothing is committed
    cons._plain = False  # _claim's loads go through _load (hookable; the path off x86_64)

    def late_commit() -> None:  # right after the consumer's _claim loaded `finished` (0)
        g = prod.acquire(size=2)
        g.buf[:] = b"m1"
        prod._plain = False
        # the commit checks `finished` (0), then a signal handler calls notify_crash, then the
        # commit publishes message 1
        _hook(prod, _FIN, lambda: prod.notify_crash(11))
        g.commit(2)

    _hook(cons, _FIN, late_commit)
    r = cons.access(timeout=2)
    try:
        assert isinstance(r, Crashed), (
            f"message 1, published after notify_crash, was delivered: {r!r}")
    finally:
        _release(r)
    _close_reporting_the_undelivered(prod, cons)
