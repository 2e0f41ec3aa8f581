"""64-bit atomics on addresses in shared memory, through one of two backends.

Interface (every backend): ``load(addr)`` (acquire), ``store(addr, value)`` (release),
``fetch_add(addr, delta) -> old`` and ``compare_exchange(addr, expected, desired) -> old``
(sequentially consistent read-modify-writes; the exchange succeeded iff ``old == expected``),
and ``fence()`` (sequentially consistent).  Values are unsigned 64-bit; ``fetch_add`` wraps.

Backends, in the order ``auto`` tries them:

1. ``libatomic`` - GCC's ``libatomic.so.1``: ``__atomic_load_8``, ``__atomic_store_8``,
   ``__atomic_fetch_add_8``, ``__atomic_compare_exchange_8`` and ``atomic_thread_fence``.
   Maintained by the toolchain, so preferred whenever it is installed.
2. ``machine-code`` - a few instructions per operation written at run time into an anonymous
   page, which is then switched from read+write to read+execute with ``mprotect`` (never
   writable and executable at once: W^X), and called through ctypes function pointers.
   x86_64 (``mov``/``lock xadd``/``lock cmpxchg``/``mfence``) and aarch64 ARMv8.0
   (``ldar``/``stlr``/``ldaxr``+``stlxr`` loops/``dmb ish``; no LSE assumed).
   Hardened kernels (SELinux ``execmem`` denied, PaX MPROTECT) refuse the executable page:
   the backend then raises :class:`AtomicsUnavailable` and ``auto`` reports both failures.

``CTSHM_ATOMICS=libatomic|machine-code|auto`` forces the choice (tests run every backend).

Every operation costs exactly one ctypes foreign call (~0.5 µs here); the libatomic load,
store and compare-exchange add a thin Python wrapper because the memory order (and the
``expected`` pointer) are extra arguments.

Plain access (``PLAIN_ORDERED_ACCESS``): on x86_64 the hardware memory model is TSO - an aligned
8-byte ``mov`` load is never reordered with later loads or stores (so it *is* an acquire load),
and an aligned 8-byte ``mov`` store is never reordered with earlier loads or stores (so it *is*
a release store); both are single-copy atomic.  CPython reads and writes a ``memoryview`` cast
to ``'Q'`` with one aligned 8-byte ``memcpy`` that the compiler emits as one ``mov``, and every
such access happens inside a separate opaque C call, so the compiler cannot reorder it with
our other shared-memory accesses either.  The ring therefore uses plain ``memoryview`` access
for acquire loads and release stores on x86_64 (~30 ns instead of ~0.5 µs) and the backend
elsewhere.  ``CTSHM_PLAIN_ACCESS=0`` disables it (tests run both ways).  Read-modify-writes
always go through the backend.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import CFUNCTYPE, byref, c_int, c_uint64, c_void_p
from typing import Callable, Final, Optional

from . import libc

__all__ = [
    "BACKENDS",
    "PLAIN_ORDERED_ACCESS",
    "Atomics",
    "AtomicsUnavailable",
    "get_backend",
    "machine",
]

BACKENDS: Final = ("libatomic", "machine-code")

# GCC's __ATOMIC_* memory-order constants.
_ACQUIRE: Final = 2
_RELEASE: Final = 3
_SEQ_CST: Final = 5

_MASK64: Final = (1 << 64) - 1


class AtomicsUnavailable(RuntimeError):
    """A backend cannot run here (library missing, executable memory refused, unknown CPU)."""


def machine() -> str:
    # os.uname() rather than platform.machine(): importing platform costs ~1.6 ms.
    m = os.uname().machine.lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _plain_ordered_access() -> bool:
    if os.environ.get("CTSHM_PLAIN_ACCESS", "1").strip() in ("0", "no", "false", "off"):
        return False
    return machine() == "x86_64"


#: True where plain aligned 8-byte memoryview access is a correct acquire load / release store.
PLAIN_ORDERED_ACCESS: Final = _plain_ordered_access()


class Atomics:
    """One backend's operations as plain attributes (bound once, called directly)."""

    name: str
    load: Callable[[int], int]
    store: Callable[[int, int], None]
    fetch_add: Callable[[int, int], int]
    compare_exchange: Callable[[int, int, int], int]
    fence: Callable[[], None]
    #: foreign (ctypes) calls per operation
    ctypes_calls: dict[str, int]

    def __repr__(self) -> str:
        return f"<ctshm.atomics backend {self.name!r}>"


# ---------------------------------------------------------------------------------------------
# Backend 1: libatomic
# ---------------------------------------------------------------------------------------------


def _libatomic() -> Atomics:
    names = ["libatomic.dylib"] if libc.IS_MACOS else ["libatomic.so.1", "libatomic.so"]
    lib = None
    errors = []
    for n in names:
        try:
            lib = ctypes.CDLL(n)
            break
        except OSError as e:
            errors.append(str(e))
    if lib is None:
        raise AtomicsUnavailable("libatomic not found (" + "; ".join(errors) + ")")
    try:
        load8 = lib.__atomic_load_8
        store8 = lib.__atomic_store_8
        add8 = lib.__atomic_fetch_add_8
        cas8 = lib.__atomic_compare_exchange_8
    except AttributeError as e:
        raise AtomicsUnavailable(f"libatomic lacks a 64-bit entry point: {e}") from None
    load8.argtypes, load8.restype = (c_void_p, c_int), c_uint64
    store8.argtypes, store8.restype = (c_void_p, c_uint64, c_int), None
    add8.argtypes, add8.restype = (c_void_p, c_uint64, c_int), c_uint64
    cas8.argtypes, cas8.restype = (c_void_p, c_void_p, c_uint64, c_int, c_int), ctypes.c_bool
    thread_fence = getattr(lib, "atomic_thread_fence", None)

    a = Atomics()
    a.name = "libatomic"

    def load(addr: int) -> int:
        return int(load8(addr, _ACQUIRE))

    def store(addr: int, value: int) -> None:
        store8(addr, value & _MASK64, _RELEASE)

    def fetch_add(addr: int, delta: int) -> int:
        return int(add8(addr, delta & _MASK64, _SEQ_CST))

    def compare_exchange(addr: int, expected: int, desired: int) -> int:
        e = c_uint64(expected)
        # On failure libatomic writes the observed value into *expected; on success it is
        # unchanged (and equal to the old value): either way e holds the old value.
        cas8(addr, byref(e), desired & _MASK64, _SEQ_CST, _SEQ_CST)
        return e.value

    if thread_fence is not None:
        thread_fence.argtypes, thread_fence.restype = (c_int,), None

        def fence() -> None:
            thread_fence(_SEQ_CST)
    else:  # libatomic < 1.2: a seq_cst RMW on a private word is a full fence
        scratch = c_uint64(0)
        scratch_addr = ctypes.addressof(scratch)

        def fence() -> None:
            add8(scratch_addr, 0, _SEQ_CST)

        a._scratch = scratch  # type: ignore[attr-defined]

    a.load, a.store, a.fetch_add, a.compare_exchange, a.fence = (
        load, store, fetch_add, compare_exchange, fence)
    a.ctypes_calls = {"load": 1, "store": 1, "fetch_add": 1, "compare_exchange": 1, "fence": 1}
    a._lib = lib  # type: ignore[attr-defined]
    return a


# ---------------------------------------------------------------------------------------------
# Backend 2: machine code built at run time
# ---------------------------------------------------------------------------------------------

# Each routine starts on a 16-byte boundary of the code page, in this order:
#   load(p) -> *p (acquire); store(p, v) (release); fetch_add(p, d) -> old (seq_cst);
#   cas(p, expected, desired) -> old (seq_cst); fence() (seq_cst).
# Arguments arrive in rdi/rsi/rdx (System V) or x0/x1/x2 (AAPCS64); results in rax / x0.
_ROUTINES: Final = ("load", "store", "fetch_add", "compare_exchange", "fence")

_X86_64_CODE: Final[dict[str, bytes]] = {
    # mov rax, [rdi] ; ret                       (TSO: a plain load is an acquire load)
    "load": bytes.fromhex("488b07" "c3"),
    # mov [rdi], rsi ; ret                       (TSO: a plain store is a release store)
    "store": bytes.fromhex("488937" "c3"),
    # mov rax, rsi ; lock xadd [rdi], rax ; ret
    "fetch_add": bytes.fromhex("4889f0" "f0480fc107" "c3"),
    # mov rax, rsi ; lock cmpxchg [rdi], rdx ; ret   (rax = old value either way)
    "compare_exchange": bytes.fromhex("4889f0" "f0480fb117" "c3"),
    # mfence ; ret
    "fence": bytes.fromhex("0faef0" "c3"),
}


def _a64(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


_AARCH64_CODE: Final[dict[str, bytes]] = {
    # ldar x0, [x0] ; ret
    "load": _a64(0xC8DFFC00, 0xD65F03C0),
    # stlr x1, [x0] ; ret
    "store": _a64(0xC89FFC01, 0xD65F03C0),
    # 1: ldaxr x2, [x0] ; add x3, x2, x1 ; stlxr w4, x3, [x0] ; cbnz w4, 1b ; mov x0, x2 ; ret
    "fetch_add": _a64(0xC85FFC02, 0x8B010043, 0xC804FC03, 0x35FFFFA4, 0xAA0203E0, 0xD65F03C0),
    # 1: ldaxr x3, [x0] ; cmp x3, x1 ; b.ne 2f ; stlxr w4, x2, [x0] ; cbnz w4, 1b ;
    #    mov x0, x3 ; ret ; 2: clrex ; mov x0, x3 ; ret
    "compare_exchange": _a64(0xC85FFC03, 0xEB01007F, 0x540000A1, 0xC804FC02, 0x35FFFF84,
                             0xAA0303E0, 0xD65F03C0, 0xD5033F5F, 0xAA0303E0, 0xD65F03C0),
    # dmb ish ; ret
    "fence": _a64(0xD5033BBF, 0xD65F03C0),
}

_CODE_BY_MACHINE: Final = {"x86_64": _X86_64_CODE, "aarch64": _AARCH64_CODE}

_LOAD_T = CFUNCTYPE(c_uint64, c_void_p)
_STORE_T = CFUNCTYPE(None, c_void_p, c_uint64)
_ADD_T = CFUNCTYPE(c_uint64, c_void_p, c_uint64)
_CAS_T = CFUNCTYPE(c_uint64, c_void_p, c_uint64, c_uint64)
_FENCE_T = CFUNCTYPE(None)


class _CodePage:
    """An executable page holding the routines; unmapped when the backend is collected."""

    addr: int = 0
    size: int = 0

    def __init__(self, code: dict[str, bytes]) -> None:
        self.size = libc.page_size()
        addr = libc.mmap(self.size, libc.PROT_READ | libc.PROT_WRITE,
                         libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0, name="atomics code page")
        self.addr = addr
        self.offsets: dict[str, int] = {}
        off = 0
        for name in _ROUTINES:
            blob = code[name]
            ctypes.memmove(addr + off, blob, len(blob))
            self.offsets[name] = off
            off += (len(blob) + 15) // 16 * 16
        _flush_icache(addr, off)
        try:
            # W^X: the page was never executable while writable.
            libc.mprotect(addr, self.size, libc.PROT_READ | libc.PROT_EXEC)
        except OSError as e:
            self.close()
            raise AtomicsUnavailable(
                f"the kernel refused an executable page for the machine-code atomics ({e}); "
                "install libatomic (e.g. apt-get install libatomic1) or allow execmem"
            ) from None

    def close(self) -> None:
        addr, self.addr = self.addr, 0
        if addr:
            libc.munmap(addr, self.size)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _flush_icache(addr: int, length: int) -> None:
    """Make freshly written instructions visible to instruction fetch.

    x86 keeps the caches coherent.  On aarch64 the data and instruction caches are not
    coherent; Linux cleans them itself when a user page becomes executable (set_pte_at ->
    __sync_icache_dcache on mprotect), and we additionally call libgcc's ``__clear_cache``
    when it is present (it is exported by libgcc_s.so.1), so we never depend on one alone.
    """
    if machine() != "aarch64":
        return
    try:
        clear = ctypes.CDLL("libgcc_s.so.1").__clear_cache
    except (OSError, AttributeError):
        return
    clear.argtypes, clear.restype = (c_void_p, c_void_p), None
    clear(addr, addr + length)


def _machine_code(arch: Optional[str] = None) -> Atomics:
    arch = arch or machine()
    code = _CODE_BY_MACHINE.get(arch)
    if code is None:
        raise AtomicsUnavailable(f"no machine-code atomics for CPU {arch!r} (have: "
                                 f"{', '.join(_CODE_BY_MACHINE)})")
    page = _CodePage(code)
    base = page.addr
    a = Atomics()
    a.name = "machine-code"
    a.load = _LOAD_T(base + page.offsets["load"])
    a.store = _STORE_T(base + page.offsets["store"])
    a.fetch_add = _ADD_T(base + page.offsets["fetch_add"])
    a.compare_exchange = _CAS_T(base + page.offsets["compare_exchange"])
    a.fence = _FENCE_T(base + page.offsets["fence"])
    a.ctypes_calls = {"load": 1, "store": 1, "fetch_add": 1, "compare_exchange": 1, "fence": 1}
    a._page = page  # type: ignore[attr-defined]  # keeps the code mapped while a is alive
    return a


_FACTORIES: Final[dict[str, Callable[[], Atomics]]] = {
    "libatomic": _libatomic,
    "machine-code": _machine_code,
}
_cache: dict[str, Atomics] = {}


def get_backend(name: Optional[str] = None) -> Atomics:
    """The named backend, or the one ``CTSHM_ATOMICS`` forces, or the first that works."""
    if name is None:
        name = os.environ.get("CTSHM_ATOMICS", "auto").strip().lower() or "auto"
    if name in _cache:
        return _cache[name]
    if name == "auto":
        problems = []
        for candidate in BACKENDS:
            try:
                b = get_backend(candidate)
            except AtomicsUnavailable as e:
                problems.append(f"{candidate}: {e}")
                continue
            _cache["auto"] = b
            return b
        raise AtomicsUnavailable("no atomics backend works here: " + " | ".join(problems))
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown atomics backend {name!r}: use one of "
                         f"{', '.join(BACKENDS)} or 'auto'")
    b = factory()
    _cache[name] = b
    return b


def unavailable_backends() -> dict[str, str]:
    """Each backend that does not work here, with why (``python -m ctshm info``)."""
    out = {}
    for n in BACKENDS:
        try:
            get_backend(n)
        except AtomicsUnavailable as e:
            out[n] = str(e)
    return out


def available_backends() -> list[str]:
    out = []
    for n in BACKENDS:
        try:
            get_backend(n)
        except AtomicsUnavailable:
            continue
        out.append(n)
    return out
