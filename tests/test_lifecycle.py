"""Object lifecycle: interpreter exit, close() under a waiter, dropped handles and guards,
fork, pickling, producer threads (issue 10).  Cases that could kill the interpreter run in a
subprocess, so a signal death fails the test instead of pytest."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import textwrap
import threading
import time
from typing import Any

import pytest

import ctshm
from ctshm import (
    ConsumerGone,
    CorruptRingError,
    CrashDetails,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    RingFinished,
    ShmMemory,
    ShmTraceRing,
    Timeout,
)
from ctshm.semaphore import NamedSemaphore

from .helpers import SHM_DIR, run_python, start_thread


def _no_signal_death(out: Any) -> None:
    assert out.returncode >= 0, (f"killed by signal {-out.returncode} "
                                 f"({signal.Signals(-out.returncode).name}):\n{out.stderr}")


# ---------------------------------------------------------------------------------------------
# 1. Views and guards alive at interpreter exit
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("held", ["consumer_guard", "producer_guard", "view", "memory_del"])
def test_alive_at_interpreter_exit(shm_id: str, held: str) -> None:
    code = textwrap.dedent(f"""
        import ctshm
        r = ctshm.ShmTraceRing.create({shm_id!r}, 2, 4096)
        r.put(b"hello")
        if {held!r} == "consumer_guard":
            G = r.access(1).guard          # still held when the interpreter exits
        elif {held!r} == "producer_guard":
            r.get(1); P = r.acquire(); P.buf[:3] = b"abc"
        elif {held!r} == "view":
            d = r.access(1); V = d.guard.buf; D = d
        else:
            m = ctshm.ShmMemory.create_readwrite({shm_id!r}, 8192)
            m.buf[0] = 7
            class Reader:
                def __init__(self, buf): self.buf = buf
                def __del__(self): print("read", self.buf[0], flush=True)
            R = Reader(m.buf)
        print("ok", flush=True)
    """)
    out = run_python(code)
    _no_signal_death(out)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout
    if held == "memory_del":
        assert "read 7" in out.stdout
    # the owner's names went with the interpreter
    assert not [e for e in os.listdir(SHM_DIR) if shm_id in e]


# ---------------------------------------------------------------------------------------------
# 2. close() while another thread waits
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["access3", "accessNone", "acquire3", "sem_acquire",
                                  "sem_acquireNone", "turn"])
def test_close_while_another_thread_waits(shm_id: str, call: str) -> None:
    code = textwrap.dedent(f"""
        import threading, time, ctshm
        from ctshm.semaphore import NamedSemaphore
        call = {call!r}
        r = ctshm.ShmTraceRing.create({shm_id!r}, 1, 4096)
        if call.startswith("acquire") or call == "turn":
            r.put(b"full")                 # capacity 1: acquire() must wait
        if call == "turn":
            r.get(1); held = r.acquire()   # this thread holds the producer slot
        sem = NamedSemaphore("/{shm_id}_x", create=True, value=0) if call.startswith("sem") \\
            else None
        result = []
        def waiter():
            try:
                if call == "access3": r.access(3)
                elif call == "accessNone": r.access(None)
                elif call in ("acquire3", "turn"): r.acquire(3)
                elif call == "sem_acquire": sem.acquire(3)
                else: sem.acquire(None)
                result.append("returned")
            except ValueError as e:
                result.append(str(e))
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        if sem is not None:
            sem.close()
        else:
            r.close()
        t.join(5)
        took = time.monotonic() - t0
        assert not t.is_alive(), "the waiter is still waiting"
        print(result[0])
        print("took", round(took, 3))
        if sem is not None:
            NamedSemaphore.unlink_name("/{shm_id}_x")
            r.close()
    """)
    out = run_python(code, timeout=60)
    _no_signal_death(out)
    assert out.returncode == 0, out.stderr
    msg, took = out.stdout.strip().splitlines()
    assert "was closed" in msg and "waited" in msg, msg
    assert float(took.split()[1]) < 1.0  # within a few wait slices (0.2 s each)


def test_close_waits_for_in_flight_then_releases(shm_id: str) -> None:
    # The semaphores and the descriptor survive until the waiter has left, then go.
    ring = ShmTraceRing.create(shm_id, 1, 4096)
    objs = ring._objs
    assert objs is not None
    sems = list(objs.sems)
    t, errors = start_thread(lambda: ring.access(5))
    time.sleep(0.2)
    ring.close()
    assert ring.closed
    t.join(5)
    assert not t.is_alive()
    assert all(s.closed for s in sems) and objs.fd == -1
    assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
    assert "while access() waited" in str(errors[0])
    assert not [e for e in os.listdir(SHM_DIR) if shm_id in e]


# ---------------------------------------------------------------------------------------------
# 3. Dropped rings and segments release everything
# ---------------------------------------------------------------------------------------------

def _counts(prefix: str) -> tuple[int, int, int]:
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    ours = [e for e in os.listdir(SHM_DIR) if prefix in e]  # other processes' come and go
    return len(os.listdir("/proc/self/fd")), maps, len(ours)


def test_dropped_rings_and_segments_release_everything(shm_id: str) -> None:
    gc.collect()
    gc.disable()  # refcounting alone must free them: no reference cycle may hold a ring
    try:
        for i in range(300):
            ShmTraceRing.create(f"{shm_id}r{i}", 1, 4096)
            r = ShmTraceRing.create(f"{shm_id}q{i}", 2, 4096)
            o = ShmTraceRing.open(f"{shm_id}q{i}")
            r.put(b"x")
            o.get(1)
            del r, o
            m = ShmMemory.create_readwrite(f"{shm_id}m{i}", 4096)
            w = ShmMemory.open_readwrite(f"{shm_id}m{i}")
            w.buf[0] = 1
            del m, w
            if i == 20:
                base = _counts(shm_id)
        end = _counts(shm_id)
    finally:
        gc.enable()
    assert end == base, f"fds, maps, /dev/shm entries: {base} -> {end}"
    assert not [e for e in os.listdir(SHM_DIR) if shm_id in e]


def test_dropped_ring_with_live_guard_keeps_mapping(shm_id: str) -> None:
    ring = ShmTraceRing.create(shm_id, 2, 4096)
    ring.put(b"kept")
    d = ring.access(1)
    assert isinstance(d, Data)
    del ring
    assert bytes(d.guard.buf) == b"kept"  # the guard holds the ring, the view the mapping
    d.guard.release()
    del d
    gc.collect()
    assert not [e for e in os.listdir(SHM_DIR) if shm_id in e]


# ---------------------------------------------------------------------------------------------
# 4. A dropped, uncommitted ProducerGuard aborts
# ---------------------------------------------------------------------------------------------

def test_dropped_uncommitted_producer_guard_aborts(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        g = ring.acquire()
        g.buf[:1] = b"x"
        del g  # dropped uncommitted (the ring holds it weakly: its __del__ aborts it)
        gc.collect()  # PyPy frees at the next collection; CPython already did (refcount)
        g = ring.acquire(1)  # capacity 1: only possible if the dropped slot came back
        g.buf[:2] = b"ok"
        g.commit(2)
        assert ring.get(1) == b"ok"
        assert isinstance(ring.access(0.05), Timeout)


# ---------------------------------------------------------------------------------------------
# 5. A forked child is not the parent's registered consumer/producer
# ---------------------------------------------------------------------------------------------

def test_forked_child_must_register_anew(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        for i in range(3):
            ring.put(bytes([i]))
        g0 = ring.access(1)
        assert isinstance(g0, Data)
        r_pipe, w_pipe = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            out = []
            try:
                ring.access(0.1)
                out.append("access: no error")
            except RuntimeError as e:
                out.append("access: " + ("live consumer" if "live consumer" in str(e)
                                         else str(e)))
            try:
                g0.guard.release()
                out.append("release: no error")
            except RuntimeError as e:
                out.append("release: " + ("inert" if "forked child" in str(e) else str(e)))
            os.write(w_pipe, "|".join(out).encode())
            os._exit(0)
        os.close(w_pipe)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(r_pipe) as f:
            said = f.read()
        assert os.waitstatus_to_exitcode(status) == 0
        assert said == "access: live consumer|release: inert"
        # Nothing shared changed: the parent still owns message 0 and gets 1 and 2.
        assert ring.header()["reserved_idx"] == 1 and ring.header()["read_idx"] == 0
        g0.guard.release()
        assert [ring.get(1), ring.get(1)] == [b"\x01", b"\x02"]
        assert ring.header()["read_idx"] == 3


# ---------------------------------------------------------------------------------------------
# 10. Results and exceptions pickle
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    Finished(), Timeout(), Crashed(CrashDetails(11, 0xdead, 2), 1234, "boom"),
    Crashed(CrashDetails()), CrashDetails(6, 1, 3),
])
def test_results_pickle(value: Any) -> None:
    back = pickle.loads(pickle.dumps(value))
    assert back == value and type(back) is type(value)


def test_exceptions_pickle() -> None:
    c = Crashed(CrashDetails(9, 0, 0), 77, "killed")
    e = pickle.loads(pickle.dumps(ProducerCrashed(c)))
    assert isinstance(e, ProducerCrashed)
    assert (e.result, e.details, e.pid, e.message) == (c, c.details, 77, "killed")
    assert str(e) == str(ProducerCrashed(c))
    for exc in (ConsumerGone(32, "gone", "/x_t"), CorruptRingError("bad"),
                RingFinished("done"), ctshm.atomics.AtomicsUnavailable("no atomics")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and back.args == exc.args


def test_exceptions_keep_their_old_import_paths() -> None:
    from ctshm import errors, results, ring
    from ctshm._space import ShmDirError  # the module is _shmdir now

    assert ShmDirError is errors.ShmDirError
    for name in ("ConsumerGone", "CorruptRingError", "ProducerCrashed", "RingFinished"):
        assert getattr(results, name) is getattr(ring, name) is getattr(errors, name), name


def test_data_refuses_pickle_clearly(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        ring.put(b"x")
        d = ring.access(1)
        with pytest.raises(TypeError, match=r"bytes\(data.guard.buf\)"):
            pickle.dumps(d)
        assert isinstance(d, Data)
        d.guard.release()


def _raise_crashed(id: str) -> bytes:
    with ShmTraceRing.open(id) as ring:
        return ring.get(5)


def test_pool_worker_raising_producer_crashed(shm_id: str) -> None:
    import multiprocessing
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        ring.notify_crash(11, 0, 1, message="segfault in the executor")
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            res = pool.apply_async(_raise_crashed, (shm_id,))
            with pytest.raises(ProducerCrashed) as ei:
                res.get(60)  # before the fix: the result handler died and this hung
        assert ei.value.details.signal == 11 and ei.value.message == "segfault in the executor"


# ---------------------------------------------------------------------------------------------
# 11. Producer threads of one process take turns
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("handles", [1, 2])
def test_producer_threads_serialize(shm_id: str, handles: int) -> None:
    n_threads, per = 4, 200
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        prods = [ring] + [ShmTraceRing.open(shm_id) for _ in range(handles - 1)]
        errors: list[BaseException] = []

        def produce(k: int) -> None:
            p = prods[k % handles]
            try:
                for i in range(per):
                    if i % 2:
                        p.put(f"{k}:{i}".encode(), timeout=30)
                    else:
                        with p.acquire(30) as g:
                            data = f"{k}:{i}".encode()
                            g.buf[:len(data)] = data
                            g.commit(len(data))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        got = [ring.get(30) for _ in range(n_threads * per)]
        for t in threads:
            t.join(30)
        for p in prods[1:]:
            p.close()
        assert not errors, errors
        for k in range(n_threads):  # each thread's messages arrive, once, in its order
            mine = [int(m.split(b":")[1]) for m in got if m.split(b":")[0] == str(k).encode()]
            assert mine == list(range(per))


def test_same_thread_second_acquire_still_refused(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        g = ring.acquire()
        with pytest.raises(RuntimeError, match="outstanding"):
            ring.acquire(0.1)
        g.abort()


def test_producer_turn_wait_is_bounded(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        g = ring.acquire()
        t, err = start_thread(lambda: ring.put(b"x", timeout=0.3))
        t.join(10)
        assert not t.is_alive() and len(err) == 1 and isinstance(err[0], TimeoutError), err
        assert "another producer thread" in str(err[0])
        g.abort()


# ---------------------------------------------------------------------------------------------
# Clear errors: each names the argument and the object
# ---------------------------------------------------------------------------------------------

def test_clear_errors(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        for bad in (b"..", 123):
            with pytest.raises(TypeError, match=r"notify_crash\(message=\) must be a str"):
                ring.notify_crash(6, message=bad)  # type: ignore[arg-type]
        for pid in (-1, 2**64, 0, "1"):
            with pytest.raises(ValueError, match=r"expect_producer\(pid\)"):
                ring.expect_producer(pid)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"\.encode\(\)") as ei:
            ring.put("text")  # type: ignore[arg-type]
        assert ring.name in str(ei.value)
        assert len(ring.acquire(size=100)) == 100
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(ring)
    with pytest.raises(FileNotFoundError):
        ShmTraceRing.open(shm_id, timeout=0)
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:  # a huge timeout means "forever"
        ring.put(b"x", timeout=2**1024)
        with ShmTraceRing.open(shm_id, timeout=2**1024) as o:
            d = o.access(2**1024)
            assert isinstance(d, Data)
            d.guard.release()


def test_lone_surrogate_id_names_the_id() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        ShmTraceRing.create("bad\udcff", 1, 4096)
    with pytest.raises(ValueError, match="UTF-8"):
        ShmMemory.create_readonly("bad\udcff", 4096)


def test_name_instead_of_id_gets_a_hint(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096) as m, \
            pytest.raises(FileNotFoundError, match="without '_m'"):
        ShmMemory.open_readwrite(m.name)
    with ShmTraceRing.create(shm_id, 1, 4096) as r, \
            pytest.raises(FileNotFoundError, match="without '_t'"):
        ShmTraceRing.open(r.name, timeout=0)


def test_direct_construction_refused() -> None:
    with pytest.raises(TypeError, match=r"ShmTraceRing.create"):
        ShmTraceRing()
    with pytest.raises(TypeError, match=r"ShmMemory.create_readonly"):
        ShmMemory()


def test_dropped_guard_releases_its_slot_and_view(shm_id: str) -> None:
    # No RuntimeWarning any more: __del__ cannot tell this misuse from correct code that
    # drops a guard before its view (see test_close_with_guards_out).
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        ring.put(b"abc")
        view = ring.access(1).guard.buf  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="released"):
            bytes(view)
        ring.put(b"next")  # the slot came back
        assert ring.get(1) == b"next"


def test_semaphore_close_idempotent_and_refuses_use(shm_id: str) -> None:
    s = NamedSemaphore(f"/{shm_id}_s", create=True, value=1)
    try:
        s.close()
        s.close()
        with pytest.raises(ValueError, match="closed"):
            s.post()
        with pytest.raises(ValueError, match="closed"):
            s.acquire(0)
    finally:
        NamedSemaphore.unlink_name(f"/{shm_id}_s")


def test_semaphore_and_record_writer_name_bad_arguments(shm_id: str) -> None:
    from ctshm.records import RecordWriter
    with pytest.raises(TypeError, match="NamedSemaphore name must be a str"):
        NamedSemaphore(0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="NamedSemaphore name must be a str"):
        NamedSemaphore.unlink_name(0)  # type: ignore[arg-type]
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        for linger in (None, 100e-6):
            w = RecordWriter(ring, linger=linger)
            with pytest.raises(TypeError, match=r"RecordWriter.append\(\) needs a bytes-like"):
                w.append(0)
            w.abort()
