"""The SP1-geometry workload: a few huge slots, filled whole, read whole.

Capacity 5, slots of ``--sp1-slot-mib`` MiB (default 64).  Every message is the Rust seed's
frame filling the slot exactly (little-endian)::

    [0..8)   u64 slot_size - 8          (the seed's PAYLOAD_LEN)
    [8..16)  u64 sequence number i
    [16..)   byte j (counted from 16) = (i + j) & 0xff

so ``seedref produce ID 5 SLOT COUNT SLOT-8`` writes exactly what the ctshm producer writes.
The consumer holds up to 3 guards at once, releases them out of order (the oldest of each
three last), and reads every byte
of every slot into a checksum that it compares with the checksum the frame must have
(computed in closed form from ``i``, without a second pass over the bytes):

``numpy``       the sum of the slot's u64 words mod 2**64 (``np.frombuffer`` on the guard's
                view, zero-copy), when NumPy is installed;
``memoryview``  ``zlib.adler32`` of the guard's view (zero-copy), otherwise.

The upper limit is one process doing the same work without IPC: ``memcpy`` (fill the frame
into one slot-sized buffer, ``count`` times) and ``fill+verify`` (fill, then checksum).
"""

from __future__ import annotations

import importlib
import struct
import time
import zlib
from typing import Any, Callable, Final, Optional

from ..ring import Data, Finished
from .harness import SP1_HELD, RingSpec, Sync, Workload

_HDR: Final = struct.Struct("<QQ")
_ADLER_MOD: Final = 65521
_U64: Final = (1 << 64) - 1
READERS: Final = ("auto", "numpy", "memoryview")


def frame_table(size: int) -> memoryview:
    """256-periodic pattern long enough for any frame's pattern of a ``size``-byte slot."""
    return memoryview(bytes(range(256)) * ((size + 511) // 256))


def fill(buf: memoryview, seq: int, table: memoryview) -> None:
    """Write message ``seq``'s frame over the whole of ``buf``."""
    size = len(buf)
    _HDR.pack_into(buf, 0, size - 8, seq)
    s = seq & 0xFF
    buf[16:] = table[s:s + size - 16]


def _pattern_word_sum(s: int, nwords: int) -> int:
    """Sum mod 2**64 of the pattern's u64 words (pattern byte j = (s + j) & 0xff)."""
    words = [int.from_bytes(bytes((s + 8 * r + b) & 0xFF for b in range(8)), "little")
             for r in range(32)]  # the pattern repeats every 256 bytes = 32 words
    full, rem = divmod(nwords, 32)
    return sum(w * (full + (r < rem)) for r, w in enumerate(words)) & _U64


def _adler_periodic(a: int, b: int, s: int, n: int) -> tuple[int, int]:
    """Adler-32 (a, b) after feeding ``n`` pattern bytes (byte j = (s + j) & 0xff)."""
    # a' = a + sum d_j ; b' = b + n * a + sum (n - j) d_j
    sum_d = 0
    sum_w = 0
    for r in range(min(256, n)):
        q = (n - r + 255) // 256  # j = r, r + 256, ... below n
        d = (s + r) & 0xFF
        sum_d += q * d
        sum_w += d * (q * (n - r) - 256 * q * (q - 1) // 2)
    return (a + sum_d) % _ADLER_MOD, (b + n * a + sum_w) % _ADLER_MOD


class Verifier:
    """Checksum of a whole slot (reads every byte) and the checksum frame ``i`` must have."""

    def __init__(self, size: int, reader: str = "auto") -> None:
        if reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, not {reader!r}")
        self.size = size
        self._np: Any = None
        if reader in ("auto", "numpy"):
            try:
                self._np = importlib.import_module("numpy")  # optional: the bench extra
            except ImportError:
                if reader == "numpy":
                    raise
        self.name = "numpy" if self._np is not None else "memoryview"
        self._sums: dict[int, int] = {}  # numpy: pattern word sum per seq & 0xff
        self._adler: dict[int, tuple[int, int]] = {}  # memoryview: pattern (a, b) sums

    def digest(self, view: Any) -> int:
        if self._np is not None:
            np = self._np
            words = np.frombuffer(view, dtype=np.uint64)
            total = int(np.add.reduce(words, dtype=np.uint64))
            del words  # no export of the guard's view outlives this call
            return total
        return zlib.adler32(view)

    def expected(self, seq: int) -> int:
        s = seq & 0xFF
        plen = self.size - 8
        if self._np is not None:
            if s not in self._sums:
                self._sums[s] = _pattern_word_sum(s, (self.size - 16) // 8)
            return (plen + seq + self._sums[s]) & _U64
        header = _HDR.pack(plen, seq)
        a = 1 + sum(header)
        b = sum(1 + sum(header[:k + 1]) for k in range(16))
        a, b = a % _ADLER_MOD, b % _ADLER_MOD
        if s not in self._adler:  # the pattern's own sums, from (0, 0)
            self._adler[s] = _adler_periodic(0, 0, s, self.size - 16)
        pa, pb = self._adler[s]
        n = self.size - 16
        return (((b + n * a + pb) % _ADLER_MOD) << 16) | ((a + pa) % _ADLER_MOD)


def check_frame(view: Any, seq: int, verifier: Verifier) -> Optional[str]:
    """None if ``view`` is message ``seq``'s frame, byte for byte; else what is wrong."""
    if len(view) != verifier.size:
        return f"message {seq}: {len(view)} bytes (expected {verifier.size})"
    plen, got = _HDR.unpack_from(view, 0)
    if plen != verifier.size - 8 or got != seq:
        return f"message {seq}: header (len {plen}, seq {got})"
    if verifier.digest(view) != verifier.expected(seq):
        return f"message {seq}: {verifier.name} checksum mismatch"
    return None


def sp1_producer(spec: tuple[RingSpec, str], wl: Workload, count: int, sync: Sync
                 ) -> dict[str, Any]:
    """ctshm producer: acquire the whole slot, write the frame over all of it, commit."""
    ring = spec[0].open()
    table = frame_table(wl.size)
    sync.go()
    t0 = time.perf_counter()
    for i in range(count):
        g = ring.acquire()
        fill(g.buf, i, table)
        g.commit()
    ring.mark_finished()
    t1 = time.perf_counter()
    ring.close()
    return {"t_start": t0, "t_sent": t1}


def consume(spec: tuple[RingSpec, str], wl: Workload, count: int, sync: Sync
            ) -> dict[str, Any]:
    """ctshm consumer: verify every byte of each message on arrival, hold up to ``SP1_HELD``
    guards, then release them out of order (the oldest last)."""
    ring_spec, reader = spec
    ring = ring_spec.open()
    ver = Verifier(wl.size, reader)
    held: list[Any] = []
    n = errors = max_held = out_of_order = 0
    nbytes = 0
    first = ""
    t_first = 0.0
    sync.go()
    while True:
        r = ring.access()
        if type(r) is Data:
            g = r.guard
            why = check_frame(g.buf, n, ver)
            nbytes += len(g.buf)
            if why is not None:
                errors += 1
                first = first or why
            n += 1
            held.append(g)
            max_held = max(max_held, len(held))
            if len(held) == SP1_HELD:
                # Release all of them, the oldest last (1, 2, ..., 0).  Never wait for a new
                # message while holding the oldest of a full window: the producer may need
                # exactly that slot (read_idx advances only in order).
                for k in (*range(1, SP1_HELD), 0):
                    held[k].release()
                out_of_order += SP1_HELD - 1
                held.clear()
            if n == 1:
                t_first = time.perf_counter()
        elif type(r) is Finished:
            break
        else:
            raise RuntimeError(f"ring ended with {r!r}")
    t_end = time.perf_counter()
    while held:  # newest first
        held.pop().release()
    ring.close()
    return {"count": n, "errors": errors, "first_error": first, "bytes": nbytes,
            "t_first": t_first, "t_end": t_end, "verifier": ver.name, "max_held": max_held,
            "releases_out_of_order": out_of_order}


def sp1_consumer(spec: Any, wl: Workload, count: int, sync: Sync) -> dict[str, Any]:
    return consume(spec, wl, count, sync)


def single_process(wl: Workload, count: int, reader: str) -> dict[str, dict[str, Any]]:
    """The upper limit: the same fills (and checksums) in one process, no IPC."""
    table = frame_table(wl.size)
    buf = memoryview(bytearray(wl.size))
    ver = Verifier(wl.size, reader)
    out: dict[str, dict[str, Any]] = {}

    def copy_only(i: int) -> Optional[str]:
        fill(buf, i, table)
        return None

    def copy_and_check(i: int) -> Optional[str]:
        fill(buf, i, table)
        return check_frame(buf, i, ver)

    fns: dict[str, Callable[[int], Optional[str]]] = {
        "memcpy (1 process)": copy_only, "fill+verify (1 process)": copy_and_check}
    for name, fn in fns.items():
        fn(0)  # touch the buffer's pages first
        errors = 0
        t0 = time.perf_counter()
        for i in range(count):
            errors += fn(i) is not None
        dt = time.perf_counter() - t0
        out[name] = {"ok": True, "verified": errors == 0, "count": count, "errors": errors,
                     "bytes": count * wl.size, "elapsed_s": dt, "msgs_per_s": count / dt,
                     "mb_per_s": count * wl.size / dt / 1e6,
                     "gb_per_s": count * wl.size / dt / 1e9, "verifier": ver.name}
    return out
