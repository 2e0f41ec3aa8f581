"""The bench harness: workloads, the :class:`Peer` interface, and running forked pairs.

A *run* is one peer on one workload with ``Settings.pairs`` producer/consumer (or
client/server) pairs at once.  :meth:`Peer.run_pairs` returns one result per pair; the
default implementation forks two children per pair from the bench process, holds every
child at a start barrier until all of them are ready, then releases them together.
"""

from __future__ import annotations

import os
import struct
import time
import traceback
from typing import Any, Callable, Final, NamedTuple, Optional

from ..ring import ShmTraceRing

_SEQ: Final = struct.Struct("<Q")
MiB: Final = 1 << 20
#: Slot size for every W ring (rounded up to 2 MiB by the ring, as in the Rust original).
RING_SLOT: Final = 2 * MiB
#: Slots per W ring.
RING_CAPACITY: Final = 32
#: RecordWriter batch: a slot is published once it holds this many bytes.
RECORD_BATCH: Final = 64 * 1024
QUICK_SCALE: Final = 0.1
#: SP1 geometry: slots per ring, default slot size, guards the consumer holds at once.
SP1_CAPACITY: Final = 5
SP1_SLOT_MIB: Final = 64
SP1_HELD: Final = 3


class Workload(NamedTuple):
    name: str
    kind: str  # "stream" | "pingpong" | "sp1"
    size: int  # bytes per message
    full_count: int  # messages (stream, sp1) or round trips (ping-pong) in a full run
    depth: int  # messages in flight for queue-like peers (sp1: ring capacity)
    title: str


def sp1_workload(slot_bytes: int) -> Workload:
    """The SP1 workload for slots of ``slot_bytes`` (already a multiple of 2 MiB)."""
    return Workload("SP1", "sp1", slot_bytes, 40, SP1_CAPACITY,
                    f"40 x {slot_bytes // MiB} MiB slots filled whole, capacity "
                    f"{SP1_CAPACITY}, consumer holds {SP1_HELD} guards, reads every byte")


WORKLOADS: Final = {
    "W1": Workload("W1", "stream", 64, 200_000, 1024, "200,000 x 64 B stream"),
    "W2": Workload("W2", "stream", 4096, 100_000, 1024, "100,000 x 4 KiB stream"),
    "W3": Workload("W3", "stream", MiB, 2_000, 32, "2,000 x 1 MiB stream, 32 in flight"),
    "W4": Workload("W4", "pingpong", 64, 20_000, 1, "20,000 x 64 B ping-pong"),
    "SP1": sp1_workload(SP1_SLOT_MIB * MiB),
}
#: Workloads of a plain ``python -m ctshm bench`` (SP1 runs only when named).
DEFAULT_WORKLOADS: Final = ("W1", "W2", "W3", "W4")
REFERENCE: Final = {"W1": "ctshm-records", "W2": "ctshm-records", "W3": "ctshm-slot",
                    "W4": "ctshm-slot", "SP1": "ctshm-slot"}
#: The two roles of a pair, per workload kind: (receiving side, sending side).
ROLES: Final = {"stream": ("consumer", "producer"), "pingpong": ("server", "client"),
                "sp1": ("sp1_consumer", "sp1_producer")}


class Settings(NamedTuple):
    """Everything a run needs besides the workload (passed explicitly, never global)."""

    timeout: float = 120.0  # seconds per run
    spin: Optional[float] = None  # busy-wait of the ctshm rings (None: the ring's default)
    pairs: int = 1  # pairs running at once (--oversubscribe)
    sp1_reader: str = "auto"  # how the SP1 consumer reads every byte: auto|numpy|memoryview
    #: the class whose ``open()`` the ctshm peers' children use (a subclass to measure a
    #: variant of the ring's code path, as benchmarks/ring_fastpath_proposal.py does)
    ring_class: type[ShmTraceRing] = ShmTraceRing


class BenchError(RuntimeError):
    pass


def scaled(wl: Workload, scale: float) -> int:
    return max(10, round(wl.full_count * scale))


def warmup(count: int) -> int:
    return max(10, count // 20)


# ---------------------------------------------------------------------------------------------
# Child side: start barrier, messages, verification
# ---------------------------------------------------------------------------------------------


class Sync:
    """A child's end of the control pipe: ``go()`` reports ready and waits for the start."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def go(self) -> None:
        self.conn.send("ready")
        if self.conn.recv() != "go":
            raise BenchError("bench parent cancelled the run")

    def report_then_linger(self, result: dict[str, Any], timeout: float = 300.0) -> None:
        """Send the result now, then wait until the bench process says every role is done
        (for peers whose in-flight messages die with the sender's port: iceoryx2)."""
        self.conn.send(("ok", result))
        if self.conn.poll(timeout):
            self.conn.recv()


def message(size: int) -> bytearray:
    """A message of ``size`` bytes: sequence number (set per message) + a fixed pattern."""
    return bytearray(bytes(range(256)) * (size // 256) + bytes(range(size % 256)))


class Check:
    """Consumer-side verification: every message's length and sequence number."""

    __slots__ = ("errors", "first", "n", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.n = 0
        self.errors = 0
        self.first = ""

    def bad(self, got_len: int, got_seq: int) -> None:
        self.errors += 1
        if not self.first:
            self.first = (f"message {self.n}: {got_len} bytes (expected {self.size}), "
                          f"sequence {got_seq}")

    def bad_message(self, n: int, m: Any) -> None:
        """Message ``n`` arrived as ``m``: of the wrong length or sequence number."""
        self.n = n
        self.bad(len(m), _SEQ.unpack_from(m, 0)[0] if len(m) >= 8 else -1)

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"count": self.n, "errors": self.errors, "first_error": self.first,
                "t_end": time.perf_counter(), **extra}


def pingpong_summary(rtts: list[int]) -> dict[str, Any]:
    if not rtts:
        return {}
    s = sorted(rtts)
    k = len(s) // 2
    median = s[k] if len(s) % 2 else (s[k - 1] + s[k]) / 2
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return {"median_us": median / 1e3, "p99_us": p99 / 1e3,
            "mean_us": sum(s) / len(s) / 1e3, "min_us": s[0] / 1e3}


def client_loop(wl: Workload, count: int, sync: Sync, send: Callable[[Any], Any],
                recv: Callable[[], Any], msg: Optional[bytearray] = None,
                on_go: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """Ping-pong client for the copying peers: send, receive the echo, check it."""
    if msg is None:
        msg = message(wl.size)
    pack, unpack, clock, size = _SEQ.pack_into, _SEQ.unpack_from, time.perf_counter_ns, wl.size
    warm = warmup(count)
    rtts = []
    chk = Check(size)
    sync.go()
    if on_go is not None:
        on_go()
    t0 = time.perf_counter()
    for i in range(count + warm):
        pack(msg, 0, i)
        s = clock()
        send(msg)
        m = recv()
        e = clock()
        if len(m) != size or unpack(m, 0)[0] != i:
            chk.bad(len(m), unpack(m, 0)[0])
        if i >= warm:
            rtts.append(e - s)
            chk.n += 1
    return chk.result(t_start=t0, **pingpong_summary(rtts))


def timed_sends(wl: Workload, count: int, sync: Sync, send: Callable[[Any], Any],
                finish: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """Stream producer for the peers that send a message a call: ``send(msg)`` ``count``
    times with the sequence number set, then ``finish()`` (if any) inside the timed window."""
    msg = message(wl.size)
    pack = _SEQ.pack_into
    sync.go()
    t0 = time.perf_counter()
    for i in range(count):
        pack(msg, 0, i)
        send(msg)
    if finish is not None:
        finish()
    t1 = time.perf_counter()
    return {"t_start": t0, "t_sent": t1}


def checked_receives(wl: Workload, count: int, sync: Sync, recv: Callable[[], Any]
                     ) -> dict[str, Any]:
    """Stream consumer for the peers that return a message a call: ``count`` times
    ``recv()``, each message's length and sequence number checked."""
    chk = Check(wl.size)
    unpack, size = _SEQ.unpack_from, wl.size
    sync.go()
    for i in range(count):
        m = recv()
        if len(m) != size or unpack(m, 0)[0] != i:
            chk.n = i
            chk.bad(len(m), unpack(m, 0)[0])
    chk.n = count
    return chk.result()


def queues(ctx: RunContext, wl: Workload, make: Callable[[], Any]) -> list[Any]:
    """``make()`` one queue (stream) or two (ping-pong), each closed at cleanup."""
    qs = [make() for _ in range(1 if wl.kind == "stream" else 2)]
    for q in qs:
        ctx.on_cleanup(q.close)
    return qs


def ignore(exc: type[BaseException], fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except exc:
        pass


class RingSpec(NamedTuple):
    """A ctshm ring the bench process created, as the children open it."""

    id: str
    spin: Optional[float]
    ring_class: type[ShmTraceRing] = ShmTraceRing

    def open(self) -> ShmTraceRing:
        if self.spin is None:
            return self.ring_class.open(self.id)
        return self.ring_class.open(self.id, spin=self.spin)


# ---------------------------------------------------------------------------------------------
# Bench process side
# ---------------------------------------------------------------------------------------------


def mp_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork")


class RunContext:
    """Names, processes and cleanups of one run (undone in ``cleanup()``, in reverse order)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = 0
        self._undo: list[Callable[[], None]] = []
        #: run in the bench process right after the children are forked
        self.after_start: list[Callable[[], None]] = []
        #: forked children (killed if still alive at cleanup)
        self.procs: list[Any] = []

    def new_id(self) -> str:
        self._n += 1
        return f"{self.prefix}_{self._n}"

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def ring(self, capacity: int, slot_size: int, settings: Settings, fast: bool = False
             ) -> RingSpec:
        """Create a ctshm ring owned by the bench process (unlinked at cleanup); ``fast``:
        in fast mode (ctshm peers only)."""
        ring = ShmTraceRing.create(self.new_id(), capacity, slot_size, fast=fast)
        self.on_cleanup(ring.close)
        return RingSpec(ring.id, settings.spin, settings.ring_class)

    def cleanup(self) -> list[str]:
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join(5)
        problems = []
        while self._undo:
            fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # pragma: no cover - reported, never raised
                problems.append(f"{fn!r}: {e}")
        return problems


RoleFn = Callable[[Any, Workload, int, Sync], Optional[dict[str, Any]]]


def _child_main(fn: RoleFn, spec: Any, wl: Workload, count: int, conn: Any) -> None:
    try:
        res = fn(spec, wl, count, Sync(conn))
        if res is not None:  # None: already sent with report_then_linger()
            conn.send(("ok", res))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc(limit=6)))
        except Exception:
            pass
    finally:
        conn.close()


def start_child(ctx: RunContext, fn: RoleFn, spec: Any, wl: Workload, count: int,
                label: str) -> Any:
    """Fork a child running ``fn``; return the bench process's end of its control pipe."""
    parent_end, child_end = mp_context().Pipe()
    p = mp_context().Process(target=_child_main, args=(fn, spec, wl, count, child_end),
                             daemon=True, name=f"bench-{label}")
    p.start()
    child_end.close()
    ctx.procs.append(p)
    return parent_end


def _recv(conn: Any, deadline: float, what: str) -> Any:
    left = deadline - time.monotonic()
    if left <= 0 or not conn.poll(left):
        raise BenchError(f"timed out waiting for {what}")
    return conn.recv()


def _err(msg: Any) -> str:
    if isinstance(msg, tuple) and len(msg) == 2:
        return str(msg[1])
    return repr(msg)


def drive(conns: list[tuple[str, Any]], deadline: float,
          between: Optional[Callable[[], None]] = None) -> list[dict[str, Any]]:
    """Start barrier for every child, ``between()`` (if any) once all are ready, the "go",
    then every child's result (in order).  Closes the pipes."""
    try:
        for label, c in conns:
            msg = _recv(c, deadline, f"{label} to get ready")
            if msg != "ready":
                raise BenchError(f"{label} failed during setup: {_err(msg)}")
        if between is not None:
            between()
        for _, c in conns:
            c.send("go")
        results = []
        for label, c in conns:
            status, res = _recv(c, deadline, f"{label} to finish")
            if status != "ok":
                raise BenchError(f"{label} failed: {res}")
            results.append(res)
        for _, c in conns:  # releases the roles that linger until everything was received
            try:
                c.send("done")
            except OSError:
                pass
    finally:
        for _, c in conns:
            c.close()
    return results


class Peer:
    """One way of moving messages between processes.

    A peer declares the workload ``kinds`` it supports and, for the forked-children model,
    ``setup()`` (runs in the bench process once per pair, creates what must outlive the
    children and registers its cleanup) plus the role functions named in ``ROLES``
    (``producer``/``consumer``, ``client``/``server``, ``sp1_producer``/``sp1_consumer``),
    each ``fn(spec, wl, count, sync) -> result``.  A peer that is not a pair of forked Python
    children overrides :meth:`run_pairs`.
    """

    name = ""
    kinds: tuple[str, ...] = ("stream", "pingpong")
    extra = False  # needs the 'bench' extra
    module = ""

    def available(self) -> Optional[str]:
        """None if usable here, else why not."""
        if not self.module:
            return None
        try:
            __import__(self.module)
        except Exception as e:
            return f"not installed ({type(e).__name__}: {e}); pip install 'ctshm[bench]'"
        return None

    def describe(self) -> dict[str, Any]:
        """Extra facts for the report's ``peers`` entry (e.g. a binary's path)."""
        return {}

    def setup(self, ctx: RunContext, wl: Workload, count: int, settings: Settings) -> Any:
        return None

    def run_pairs(self, ctx: RunContext, wl: Workload, count: int, settings: Settings
                  ) -> list[dict[str, Any]]:
        """Run ``settings.pairs`` pairs at once; one result per pair."""
        recv_role, send_role = ROLES[wl.kind]
        conns: list[tuple[str, Any]] = []
        for k in range(settings.pairs):
            spec = self.setup(ctx, wl, count, settings)
            for role in (recv_role, send_role):
                label = f"{self.name} {role}" + (f" #{k}" if settings.pairs > 1 else "")
                conns.append((label, start_child(ctx, getattr(self, role), spec, wl, count,
                                                 label)))
        for fn in ctx.after_start:
            fn()
        deadline = time.monotonic() + settings.timeout
        results = drive(conns, deadline)
        for p in ctx.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        return [pair_result(wl, count, results[2 * k], results[2 * k + 1])
                for k in range(settings.pairs)]


def pair_result(wl: Workload, count: int, recv: dict[str, Any], send: dict[str, Any]
                ) -> dict[str, Any]:
    """One pair's verified figures from its two roles' results."""
    if wl.kind == "stream":
        out = {"count": recv["count"], "errors": recv["errors"],
               "elapsed_s": recv["t_end"] - send["t_start"], "first_error": recv["first_error"],
               "t_start": send["t_start"], "t_end": recv["t_end"]}
        out["verified"] = recv["errors"] == 0 and recv["count"] == count
        if "slots" in recv:
            out["slots"] = recv["slots"]
        return out
    if wl.kind == "sp1":  # timed on the consumer: after message 0 was handled, to Finished
        out = {k: recv[k] for k in ("count", "errors", "first_error", "bytes", "verifier",
                                    "max_held", "releases_out_of_order")}
        out.update(elapsed_s=recv["t_end"] - recv["t_first"], timed_count=recv["count"] - 1,
                   t_start=recv["t_first"], t_end=recv["t_end"],
                   timing="consumer's clock: message 0 handled -> Finished, messages 1..N-1")
        out["verified"] = (recv["errors"] == 0 and recv["count"] == count
                           and recv["bytes"] == count * wl.size)
        return out
    cl, sv = send, recv
    out = {k: cl[k] for k in ("count", "errors", "first_error", "median_us", "p99_us",
                              "mean_us", "min_us") if k in cl}
    out["elapsed_s"] = cl["t_end"] - cl["t_start"]
    out["t_start"], out["t_end"] = cl["t_start"], cl["t_end"]
    out["verified"] = (cl["errors"] == 0 and cl["count"] == count
                       and sv["count"] == count + warmup(count))
    return out


def _add_rates(out: dict[str, Any], wl: Workload) -> None:
    n = out.get("timed_count", out.get("count", 0))
    if out.get("elapsed_s"):
        out["msgs_per_s"] = n / out["elapsed_s"]
        out["mb_per_s"] = n * wl.size / out["elapsed_s"] / 1e6
        if wl.kind == "sp1":
            out["gb_per_s"] = out["mb_per_s"] / 1e3


def combine(wl: Workload, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """One pair: its result.  Several: aggregate (all messages over the window from the first
    start to the last end) plus the per-pair figures."""
    for r in pairs:
        _add_rates(r, wl)
    if len(pairs) == 1:
        out = dict(pairs[0])
        out.pop("t_start", None)
        out.pop("t_end", None)
        return out
    t0 = min(r["t_start"] for r in pairs)
    t1 = max(r["t_end"] for r in pairs)
    out = {"count": sum(r["count"] for r in pairs), "errors": sum(r["errors"] for r in pairs),
           "elapsed_s": t1 - t0, "verified": all(r["verified"] for r in pairs),
           "first_error": next((r["first_error"] for r in pairs if r["first_error"]), ""),
           "pairs": len(pairs)}
    if wl.kind == "pingpong":
        meds = sorted(r["median_us"] for r in pairs)
        out["median_us"] = meds[len(meds) // 2]
        out["p99_us"] = max(r["p99_us"] for r in pairs)
        out["mean_us"] = sum(r["mean_us"] for r in pairs) / len(pairs)
    if "timing" in pairs[0]:
        out["timing"] = pairs[0]["timing"]
    keep = ("count", "verified", "elapsed_s", "msgs_per_s", "mb_per_s", "median_us", "p99_us")
    out["per_pair"] = [{k: r[k] for k in keep if k in r} for r in pairs]
    _add_rates(out, wl)
    return out


def run_once(peer: Peer, wl: Workload, count: int, prefix: str, settings: Settings
             ) -> dict[str, Any]:
    """One verified run of ``peer`` on ``wl`` (every resource removed before returning).

    ``count`` is per pair; with several pairs the result is their aggregate."""
    ctx = RunContext(prefix)
    try:
        out = combine(wl, peer.run_pairs(ctx, wl, count, settings))
    except Exception as e:
        out = {"ok": False, "verified": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        problems = ctx.cleanup()
    if problems:
        out["cleanup_problems"] = problems
    out.setdefault("ok", True)
    return out


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
