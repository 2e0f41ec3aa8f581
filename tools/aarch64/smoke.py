#!/usr/bin/env python3
"""Stand-alone check of ctshm's atomics, semaphores and segments (no pytest needed).

Written to run inside the emulated arm64 userland (tools/aarch64/run-tests.sh), but it runs
on any Linux host (x86_64 too):

    python3 tools/aarch64/smoke.py [--backend NAME] [--procs 4] [--iters 20000] [--require-all]

Checks, for every backend (or the one ``--backend`` / ``CTSHM_ATOMICS`` names):

* every operation (load, store, fetch_add, compare_exchange, fence) on 64-bit values whose
  upper half matters (a 32-bit ``w``-register slip in the machine code would show), with
  wrap-around, and against plain memory reads/writes of the same word;
* contention: ``--procs`` forked processes x ``--iters`` ``fetch_add(1)`` on one word of a
  MAP_SHARED anonymous page, and the same with compare-exchange increment loops; the totals
  must be exact and each process's fetch_add results strictly increasing;
* on aarch64 with the machine-code backend: that the bytes in ``_AARCH64_CODE`` are what runs
  (a copy with ``add`` turned into ``sub`` must subtract), and that ``PLAIN_ORDERED_ACCESS``
  is off.

Then, once: a NamedSemaphore post/acquire round trip with timeouts (and a post from another
process) in each wait mode this libc offers, and a ShmMemory create/open round trip (atomics
across two mappings of the object and across processes).

Prints one line per check and ends with ``smoke: N passed, M failed``; exit status 1 on any
failure.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import platform
import sys
import time
import traceback
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path and os.path.isdir(os.path.join(REPO, "ctshm")):
    sys.path.insert(0, REPO)

from ctshm import atomics  # noqa: E402
from ctshm.memory import ShmMemory  # noqa: E402
from ctshm.semaphore import WAIT_MODES, NamedSemaphore  # noqa: E402

MASK = (1 << 64) - 1
results: list[tuple[str, bool, str]] = []


def check(name: str, fn: Callable[[], object]) -> None:
    t0 = time.monotonic()
    try:
        detail = fn()
        ok, msg = True, "" if detail is None else str(detail)
    except Exception as e:  # report and go on: one run shows every failure
        ok, msg = False, f"{type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stdout)
    dt = time.monotonic() - t0
    results.append((name, ok, msg))
    print(f"{'ok  ' if ok else 'FAIL'} {name} ({dt:.2f} s){' - ' + msg if msg else ''}",
          flush=True)


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


class SharedPage:
    """An anonymous MAP_SHARED mapping (shared with forked children) and its address."""

    def __init__(self, size: int = mmap.PAGESIZE) -> None:
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.addr = ctypes.addressof(self._anchor)
        self.words = memoryview(self.map).cast("Q")

    def close(self) -> None:
        self.words.release()
        del self._anchor
        self.map.close()


# ---------------------------------------------------------------------------------------------
# Atomics: single process
# ---------------------------------------------------------------------------------------------


def check_ops(b: atomics.Atomics) -> None:
    page = SharedPage()
    w = page.words
    try:
        p = page.addr + 8  # word 1; words 0 and 2 are guards
        w[0] = w[2] = 0xA5A5A5A5A5A5A5A5
        for v in (0, 1, 0x0123456789ABCDEF, 1 << 63, MASK, 0xFFFFFFFF, 1 << 32):
            b.store(p, v)
            expect(w[1] == v, f"store({v:#x}) left {w[1]:#x} in memory")
            expect(b.load(p) == v, f"load after store({v:#x}) gave {b.load(p):#x}")
            w[1] = v ^ MASK
            expect(b.load(p) == v ^ MASK, "load did not see a plain write")
        expect(w[0] == w[2] == 0xA5A5A5A5A5A5A5A5, "a neighbouring word changed")

        # fetch_add: returns the old value, adds in 64 bits, wraps.
        b.store(p, 41)
        expect(b.fetch_add(p, 1) == 41 and w[1] == 42, "fetch_add(41, 1)")
        b.store(p, 0xFFFFFFFF)
        expect(b.fetch_add(p, 1) == 0xFFFFFFFF and w[1] == 1 << 32,
               f"fetch_add carry into the upper half: got {w[1]:#x}")
        b.store(p, 0x1_0000_0000)
        expect(b.fetch_add(p, 0x7_0000_0005) == 0x1_0000_0000 and w[1] == 0x8_0000_0005,
               f"fetch_add with a 64-bit delta: got {w[1]:#x}")
        b.store(p, MASK)
        expect(b.fetch_add(p, 1) == MASK and w[1] == 0, "fetch_add wrap at 2**64")
        b.store(p, 10)
        expect(b.fetch_add(p, MASK) == 10 and w[1] == 9, "fetch_add(2**64-1) subtracts one")
        expect(b.fetch_add(p, 0) == 9 and w[1] == 9, "fetch_add(0)")

        # compare_exchange: returns the old value either way; stores only on a match.
        b.store(p, 7)
        expect(b.compare_exchange(p, 7, 8) == 7 and w[1] == 8, "cas success")
        expect(b.compare_exchange(p, 7, 9) == 8 and w[1] == 8, "cas failure must not store")
        b.store(p, 0x1_0000_0005)
        expect(b.compare_exchange(p, 5, 6) == 0x1_0000_0005 and w[1] == 0x1_0000_0005,
               "cas compared only the low 32 bits")
        expect(b.compare_exchange(p, 0x1_0000_0005, MASK) == 0x1_0000_0005 and w[1] == MASK,
               "cas with 64-bit values")
        expect(b.compare_exchange(p, MASK, 0) == MASK and w[1] == 0, "cas to zero")
        # a failed cas followed by a successful one (clrex path, then the store path)
        for i in range(100):
            expect(b.compare_exchange(p, i + 1000, 0) == i, "cas failure in a loop")
            expect(b.compare_exchange(p, i, i + 1) == i, "cas success in a loop")
        expect(w[1] == 100, "cas loop result")
        expect(w[0] == w[2] == 0xA5A5A5A5A5A5A5A5, "a neighbouring word changed")

        b.fence()
        expect(b.ctypes_calls["fetch_add"] == 1, "ctypes_calls table")
    finally:
        page.close()


def check_code_runs(b: atomics.Atomics) -> str:
    """The aarch64 bytes are what executes: mutate one instruction, observe the change."""
    expect(atomics.machine() == "aarch64", "not on aarch64")
    code = dict(atomics._AARCH64_CODE)
    fa = bytearray(code["fetch_add"])
    add = int.from_bytes(fa[4:8], "little")
    expect(add == 0x8B010043, f"fetch_add[1] is {add:#010x}, expected add x3, x2, x1")
    fa[4:8] = (0xCB010043).to_bytes(4, "little")  # sub x3, x2, x1
    code["fetch_add"] = bytes(fa)
    page = atomics._CodePage(code)
    try:
        sub = atomics._ADD_T(page.addr + page.offsets["fetch_add"])
        word = ctypes.c_uint64(100)
        old = sub(ctypes.addressof(word), 30)
        expect(old == 100 and word.value == 70,
               f"mutated fetch_add gave old={old} new={word.value} (expected 100, 70)")
        # and the genuine page really holds the table's bytes
        real = b._page  # type: ignore[attr-defined]
        for name in atomics._ROUTINES:
            blob = atomics._AARCH64_CODE[name]
            got = ctypes.string_at(real.addr + real.offsets[name], len(blob))
            expect(got == blob, f"code page bytes for {name} differ from the table")
    finally:
        page.close()
    clear = getattr(ctypes.CDLL("libgcc_s.so.1"), "__clear_cache", None)
    return ("add->sub mutation subtracts; page bytes match the table; "
            f"libgcc __clear_cache {'present' if clear is not None else 'ABSENT'}")


# ---------------------------------------------------------------------------------------------
# Atomics: contention between processes
# ---------------------------------------------------------------------------------------------


def run_children(n: int, body: Callable[[int], None]) -> None:
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # child: never returns into the caller
            code = 1
            try:
                body(i)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    bad = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            bad.append((pid, os.waitstatus_to_exitcode(status)))
    expect(not bad, f"children failed: {bad}")


def check_contention(b: atomics.Atomics, procs: int, iters: int) -> str:
    page = SharedPage()
    go, counter, cas_counter, ready = page.addr, page.addr + 64, page.addr + 128, page.addr + 192
    cas_iters = max(1, iters // 4)
    retries = page.addr + 256  # total compare-exchange retries (contention actually happened)
    try:
        def child(i: int) -> None:
            b.fetch_add(ready, 1)
            while b.load(go) == 0:  # start together
                pass
            fetch_add = b.fetch_add
            last = -1
            for _ in range(iters):
                old = fetch_add(counter, 1)
                if old <= last:
                    raise AssertionError(f"fetch_add went backwards: {old} after {last}")
                last = old
            cas = b.compare_exchange
            load = b.load
            mine = 0
            for _ in range(cas_iters):
                cur = load(cas_counter)
                while True:
                    seen = cas(cas_counter, cur, cur + 1)
                    if seen == cur:
                        break
                    mine += 1
                    cur = seen
            fetch_add(retries, mine)

        t0 = time.monotonic()

        def release_when_ready() -> None:
            end = time.monotonic() + 120  # a child that died early must not hang the rest
            while b.load(ready) != procs and time.monotonic() < end:
                time.sleep(0.001)
            b.store(go, 1)

        pid = os.fork()
        if pid == 0:
            try:
                release_when_ready()
            finally:
                os._exit(0)
        run_children(procs, child)
        os.waitpid(pid, 0)
        dt = time.monotonic() - t0
        total, cas_total = b.load(counter), b.load(cas_counter)
        expect(total == procs * iters, f"fetch_add total {total} != {procs * iters}")
        expect(cas_total == procs * cas_iters,
               f"compare_exchange total {cas_total} != {procs * cas_iters}")
        return (f"{procs} procs: {total} fetch_add + {cas_total} cas increments exact, "
                f"{b.load(retries)} cas retries, {dt:.1f} s")
    finally:
        page.close()


# ---------------------------------------------------------------------------------------------
# Semaphores and segments
# ---------------------------------------------------------------------------------------------


def available_wait_modes() -> list[str]:
    modes = []
    for m in WAIT_MODES:
        try:
            from ctshm.semaphore import _validate_mode
            _validate_mode(m)
        except ValueError:
            continue
        modes.append(m)
    return modes


def check_semaphore(mode: str) -> str:
    name = f"/ctshm-smoke-{os.getpid()}-{mode}"
    NamedSemaphore.unlink_name(name)
    sem = NamedSemaphore(name, create=True, value=0, wait_mode=mode)
    try:
        expect(sem.wait_mode == mode, f"wait_mode {sem.wait_mode}")
        expect(not sem.try_acquire(), "try_acquire on an empty semaphore")
        expect(sem.acquire(0) is False, "acquire(0) on an empty semaphore")
        t0 = time.monotonic()
        got = sem.acquire(0.2)
        waited = time.monotonic() - t0
        expect(got is False, "acquire(0.2) on an empty semaphore returned True")
        expect(0.19 <= waited < 5.0, f"timed out after {waited:.3f} s, expected ~0.2 s")
        sem.post()
        expect(sem.value() in (1, -1), f"value after post {sem.value()}")
        expect(sem.acquire(1.0) is True, "acquire after post")
        sem.post()
        expect(sem.acquire(None) is True, "acquire(None) after post")
        # a post from another process wakes a timed wait
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                time.sleep(0.3)
                other = NamedSemaphore(name, wait_mode=mode)
                other.post()
                other.close()
                code = 0
            finally:
                os._exit(code)
        t0 = time.monotonic()
        got = sem.acquire(20.0)
        woke = time.monotonic() - t0
        _, status = os.waitpid(pid, 0)
        expect(os.waitstatus_to_exitcode(status) == 0, "the posting child failed")
        expect(got is True, "a post from another process did not wake acquire(20)")
        expect(woke < 15.0, f"woke after {woke:.2f} s")
        expect(not sem.try_acquire(), "a token too many")
        return f"timeout {waited:.3f} s, cross-process wake after {woke:.3f} s"
    finally:
        sem.close()
        NamedSemaphore.unlink_name(name)


def check_memory(b: atomics.Atomics) -> str:
    sid = f"ctshm-smoke-{os.getpid()}"
    path = f"/dev/shm/{sid}_m"
    creator = ShmMemory.create_readonly(sid, 1 << 16)
    opener = None
    try:
        expect(os.path.exists(path), f"{path} missing after create")
        expect(creator.readonly and creator.size == 1 << 16, repr(creator))
        opener = ShmMemory.open_readwrite(sid)
        expect(not opener.readonly and opener.size == 1 << 16, repr(opener))
        expect(opener.address != creator.address, "both handles share one mapping")
        opener.buf[:5] = b"hello"
        opener.buf[-5:] = b"world"
        expect(bytes(creator.buf[:5]) == b"hello" and bytes(creator.buf[-5:]) == b"world",
               "creator does not see the opener's writes")
        # atomics across two mappings of one object, and from another process
        b.store(opener.address + 64, 0x1122334455667788)
        expect(b.load(creator.address + 64) == 0x1122334455667788, "atomic store/load across maps")

        def child(_: int) -> None:
            m = ShmMemory.open_readwrite(sid)
            for _ in range(1000):
                b.fetch_add(m.address + 128, 1)
            m.close()

        run_children(2, child)
        expect(b.load(creator.address + 128) == 2000, "fetch_add from two openers")
        opener.close()
        opener = None
        creator.close()
        expect(not os.path.exists(path), f"{path} still there after the creator closed")
        return "create/open/write/read/close, atomics across maps and processes"
    finally:
        if opener is not None:
            opener.close()
        creator.close()


# ---------------------------------------------------------------------------------------------


def cpu_features() -> str:
    """On aarch64: whether the CPU (or qemu's CPU model) has the LSE atomics, which decides
    the path libatomic's ifuncs take (ldaddal/casal, or ldaxr/stlxr loops)."""
    if atomics.machine() != "aarch64":
        return ""
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except AttributeError:
        return ""
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, (ctypes.c_ulong,)
    hwcap = getauxval(16)  # AT_HWCAP
    lse = "LSE" if hwcap & (1 << 8) else "no LSE (ARMv8.0)"  # HWCAP_ATOMICS
    return f" AT_HWCAP={hwcap:#x} {lse} QEMU_CPU={os.environ.get('QEMU_CPU', '-')}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", help="only this backend (default: CTSHM_ATOMICS, else all)")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--require-all", action="store_true",
                    help="fail if any backend is unavailable (the arm64 userland has both)")
    ap.add_argument("--skip-shared", action="store_true",
                    help="only the atomics checks (no semaphores, no ShmMemory)")
    args = ap.parse_args()

    forced = os.environ.get("CTSHM_ATOMICS", "auto").strip().lower() or "auto"
    wanted = [args.backend] if args.backend else (
        list(atomics.BACKENDS) if forced == "auto" else [forced])
    print(f"machine={platform.machine()} (ctshm: {atomics.machine()}) "
          f"python={sys.version.split()[0]} "
          f"pid={os.getpid()} CTSHM_ATOMICS={forced} backends={wanted} "
          f"PLAIN_ORDERED_ACCESS={atomics.PLAIN_ORDERED_ACCESS}{cpu_features()}", flush=True)

    if atomics.machine() != "x86_64":
        check("PLAIN_ORDERED_ACCESS is off (not x86_64)",
              lambda: expect(atomics.PLAIN_ORDERED_ACCESS is False,
                             "plain memoryview access is not an acquire/release here"))

    for name in wanted:
        try:
            b = atomics.get_backend(name)
        except atomics.AtomicsUnavailable as e:
            print(f"skip backend {name}: {e}", flush=True)
            if args.require_all:
                check(f"[{name}] available", lambda e=e: expect(False, str(e)))
            continue
        print(f"backend {name}: {b!r}", flush=True)
        if name == "machine-code" and atomics.machine() == "aarch64":
            check(f"[{name}] aarch64 bytes execute", lambda b=b: check_code_runs(b))
        check(f"[{name}] every op, 64-bit values", lambda b=b: check_ops(b))
        check(f"[{name}] contention {args.procs}x{args.iters} fetch_add + cas on MAP_SHARED",
              lambda b=b: check_contention(b, args.procs, args.iters))

    if not args.skip_shared:
        for mode in available_wait_modes():
            check(f"NamedSemaphore round trip, wait_mode={mode}", lambda m=mode: check_semaphore(m))
        check("ShmMemory create/open round trip", lambda: check_memory(atomics.get_backend()))

    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"smoke: {len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
