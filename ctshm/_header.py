"""One handle's view of a ring's shared header: the mapped views, the word access with the
ordering the protocol needs, the geometry read once, and the readings a handle reports
(indices check, crash record, snapshot, statistics).

The bytes themselves are :mod:`ctshm.layout`'s; the protocol that moves the words is
:mod:`ctshm.ring`'s.  A ring handle *has* one :class:`Header` (from its mapping, once open).
"""

from __future__ import annotations

from typing import Any, Callable

from . import _shm, atomics, layout as L
from .errors import CorruptRingError
from .results import CrashDetails, Crashed

__all__ = ["Header"]


class Header:
    """The mapped header of one ring handle (see the module docstring)."""

    __slots__ = ("a_csleep", "a_fin", "a_psleep", "a_res", "base", "capacity", "cas",
                 "fast", "fence", "has_len", "hq", "hv", "is_ctshm", "load", "plain",
                 "slot_size", "store")

    load: Callable[[int], int]
    store: Callable[[int, int], None]

    def __init__(self, mapping: _shm.Mapping) -> None:
        self.hv = mapping.view(0, L.HEADER_SIZE)
        self.hq = hq = self.hv.cast("Q")
        self.base = base = mapping.addr
        self.capacity = int(hq[L.CAPACITY])
        self.slot_size = int(hq[L.SLOT_SIZE])
        self.is_ctshm = hq[L.EXT_MAGIC] == L.MAGIC
        # Fast mode is the creator's choice, read once: it never changes for a ring.
        self.fast = self.is_ctshm and hq[L.MODE] == L.MODE_FAST
        self.has_len = self.capacity <= L.MAX_LEN_RECORDS
        b = atomics.get_backend()
        self.cas = b.compare_exchange
        self.fence = b.fence
        self.a_res = base + 8 * L.RESERVED_IDX
        self.a_fin = base + 8 * L.FINISHED
        self.a_csleep = base + 8 * L.C_SLEEP
        self.a_psleep = base + 8 * L.P_SLEEP
        # ``load(word)`` / ``store(word, value)``: on x86_64 (TSO) plain memoryview loads and
        # stores already have acquire/release order (see ctshm.atomics), so they are the
        # memoryview's own bound methods - no foreign call, no branch; elsewhere the atomics
        # backend's.
        self.plain = atomics.PLAIN_ORDERED_ACCESS
        if self.plain:
            self.load = hq.__getitem__
            self.store = hq.__setitem__
        else:
            load, store = b.load, b.store
            self.load = lambda word: load(base + 8 * word)
            self.store = lambda word, value: store(base + 8 * word, value)

    def release(self) -> None:
        """Release the views (the mapping goes when its last view does)."""
        for v in (self.hq, self.hv):
            try:
                v.release()
            except BufferError:
                pass

    def check_indices(self, name: str) -> None:
        """A ring just opened: ``read <= reserved <= write <= read + capacity`` and a known
        ``finished``, else :class:`CorruptRingError`."""
        cap, ld = self.capacity, self.load
        # Live peers move the indices while we read them.  Each only grows and the order
        # holds at every instant, so reading read, reserved, write, read again gives
        # r1 <= res <= w <= r2 + capacity.
        r = int(ld(L.READ_IDX))
        res = int(ld(L.RESERVED_IDX))
        w = int(ld(L.WRITE_IDX))
        r2 = int(ld(L.READ_IDX))
        fin = int(ld(L.FINISHED))
        if not r <= res <= w <= r2 + cap:
            raise CorruptRingError(
                f"ring {name!r} header is corrupt: write_idx={w} read_idx={r} "
                f"reserved_idx={res} capacity={cap} (need read <= reserved <= write <= "
                "read + capacity)")
        if fin not in (0, L.FIN_FINISHED, L.FIN_CRASHED):
            raise CorruptRingError(f"ring {name!r} header is corrupt: finished={fin} "
                                   "(0 running, 1 finished, 2 crashed)")

    def indices_corrupt(self) -> bool:
        """After a claim saw write_idx more than capacity ahead of reserved_idx: is that
        real?  Another consumer thread may have advanced reserved in between; read write
        first, then reserved: write <= read + capacity <= reserved + capacity must then
        hold unless the header is really corrupt."""
        w = self.load(L.WRITE_IDX)
        res = self.load(L.RESERVED_IDX)
        return bool(w - res > self.capacity)

    def crash_limit(self, w: int) -> int:
        """After a crash, messages from the recorded write_idx on do not exist."""
        cw = self.load(L.CRASH_W)
        return min(w, cw - 1) if cw else w

    def crashed(self) -> Crashed:
        """The recorded crash as the consumer reports it."""
        hv = self.hv
        signal, addr, operation = L.CRASH.unpack_from(hv, L.CRASH_OFF)
        dead = self.load(L.DEAD_PID)
        n = min(L.MSG_LEN.unpack_from(hv, L.MSG_OFF)[0], L.MSG_MAX)
        msg = bytes(hv[L.MSG_OFF + 4:L.MSG_OFF + 4 + n]).decode("utf-8", "replace")
        return Crashed(CrashDetails(signal, addr, operation), dead or None, msg)

    def record_crash(self, signal: int, addr: int, operation: int, message: bytes,
                     dead_pid: int) -> bool:
        """Write a crash record at the current write_idx: details and message first, a
        fence, then the flag by compare-exchange.  True if this record won (the first end
        wins); the caller then wakes the consumer."""
        self.store(L.CRASH_W, self.load(L.WRITE_IDX) + 1)
        if dead_pid:
            self.store(L.DEAD_PID, dead_pid)
        hv = self.hv
        if message or not dead_pid:  # a dead producer's own note stays (ctshm._exitnote)
            hv[L.MSG_OFF + 4:L.MSG_OFF + 4 + len(message)] = message
            L.MSG_LEN.pack_into(hv, L.MSG_OFF, len(message))
        L.CRASH.pack_into(hv, L.CRASH_OFF, signal, addr & 0xFFFFFFFFFFFFFFFF, operation)
        self.fence()  # details before the flag
        return self.cas(self.a_fin, 0, L.FIN_CRASHED) == 0

    def backlog(self) -> int:
        """Messages committed and not yet released (``write_idx - read_idx``)."""
        return int(self.load(L.WRITE_IDX) - self.load(L.READ_IDX))

    def stats(self) -> dict[str, Any]:
        """Both sides' live statistics (see :func:`ctshm.layout.side_stats`) and the
        backlog."""
        out: dict[str, Any] = {
            side: L.side_stats(self.hq, producer).as_dict()
            for side, producer in (("producer", True), ("consumer", False))}
        out["backlog"] = self.backlog()
        return out

    def snapshot(self) -> dict[str, Any]:
        """The shared header's words (diagnostics: ``ShmTraceRing.header()``)."""
        hq = self.hq
        sig, addr, op = L.CRASH.unpack_from(self.hv, L.CRASH_OFF)
        return {
            "write_idx": int(hq[L.WRITE_IDX]), "read_idx": int(hq[L.READ_IDX]),
            "reserved_idx": int(hq[L.RESERVED_IDX]), "capacity": int(hq[L.CAPACITY]),
            "slot_size": int(hq[L.SLOT_SIZE]), "finished": int(hq[L.FINISHED]),
            "crash_details": CrashDetails(sig, addr, op),
            "ctshm": hq[L.EXT_MAGIC] == L.MAGIC, "creator_pid": int(hq[L.CREATOR_PID]),
            "producer_pid": int(hq[L.PRODUCER_PID]),
            "consumer_pid": int(hq[L.CONSUMER_PID]), "dead_pid": int(hq[L.DEAD_PID]),
            "mode": int(hq[L.MODE]), "c_sleep": int(hq[L.C_SLEEP]),
            "p_sleep": int(hq[L.P_SLEEP]),
        }

    def describe(self) -> str:
        """The indices, for ``repr``."""
        h = self.hq
        return (f"write={h[L.WRITE_IDX]} read={h[L.READ_IDX]} "
                f"reserved={h[L.RESERVED_IDX]} finished={h[L.FINISHED]}")
