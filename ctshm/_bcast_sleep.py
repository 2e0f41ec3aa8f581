"""The sleeping half of ShmBroadcast's waits: one sleep slice of a reader and of the writer
(announce, re-check, sleep on the semaphore, withdraw; then the liveness checks), and the crash
report.  The protocol is described in :mod:`ctshm.broadcast` and model-checked in
``model/broadcast.pml``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _bcast_layout as L
from ._bcast_peers import slot_alive
from ._checks import check_crash_args
from .results import CrashDetails, Crashed

if TYPE_CHECKING:
    from .broadcast import ShmBroadcast


def reader_doze(b: ShmBroadcast, ready: Any, chunk: float) -> bool:
    """One sleep slice of a reader (announce, re-check, sleep, withdraw, liveness)."""
    hq, bit = b._hq, b._bit
    hq[L.reader_word(b._slot, L.R_WAITS)] += 1
    b._set_bits(L.RMASK, bit)     # compare-exchange: a full fence before the re-check
    woken = False
    try:
        if not ready():
            woken = b._sem.acquire(b._rsem, chunk)
    finally:
        if not b._clear_bits(L.RMASK, bit):
            b._sem.try_acquire(b._rsem)   # the waker's token, if already posted
    if ready() or b._closed:
        return True
    if not woken:
        check_writer_alive(b)
    return bool(ready())


def check_writer_alive(b: ShmBroadcast) -> None:
    hq = b._hq
    pid, start = int(hq[L.WRITER_PID]), int(hq[L.WRITER_START])
    if (pid and not hq[L.FIN] and not hq[L.CRASH] and not slot_alive(pid, start)
            and int(hq[L.WRITER_PID]) == pid and b._cas_word(L.CRASH, 0, 2)):
        hq[L.CRASH_PID] = pid
        b._wake_readers()


def crashed(b: ShmBroadcast) -> Crashed:
    hq = b._hq
    if hq[L.CRASH] == 2:
        return Crashed(CrashDetails(), int(hq[L.CRASH_PID]))
    raw = b._mv[L.CRASH_MSG_OFF:L.CRASH_MSG_OFF + L.CRASH_MSG_LEN].tobytes()
    return Crashed(CrashDetails(_signed32(hq[L.CRASH_SIG]), int(hq[L.CRASH_ADDR]),
                                _signed32(hq[L.CRASH_OP])), None,
                   raw.split(b"\0", 1)[0].decode("utf-8", "replace"))


def writer_doze(b: ShmBroadcast, w: int, chunk: float, waited: list[float]) -> bool:
    hq = b._hq
    hq[L.S_W_WAITS] += 1
    sem = b._base + L.WRITER_SEM_OFF
    b._cas_word(L.WSLEEP, 0, 1)   # announce: a full fence before the re-check
    woken = False
    try:
        if not b._scan(w):
            woken = b._sem.acquire(sem, chunk)
    finally:
        if not b._cas_word(L.WSLEEP, 1, 0):
            b._sem.try_acquire(sem)
    if b._closed:
        raise ValueError(f"ShmBroadcast {b.id!r} was closed while put() waited")
    if not woken:
        waited[0] += chunk
        from ._bcast_setup import evict_laggards
        live = b.evict_after is not None and waited[0] >= b.evict_after
        evict_laggards(b, w, live)
    return b._scan(w)


def notify_crash(b: ShmBroadcast, signal: int, addr: int, operation: int, message: str
                 ) -> None:
    """ShmBroadcast.notify_crash: validate, then (unless the stream already ended) write the
    details and the message, set CRASH by compare-exchange and wake every reader."""
    check_crash_args(f"ShmBroadcast {b.id!r}", signal, addr, operation, message)
    hq = b._hq
    if b._closed or hq is None or hq[L.FIN] or hq[L.CRASH]:
        return
    raw = message.encode("utf-8", "replace")[:L.CRASH_MSG_LEN - 1]
    b._mv[L.CRASH_MSG_OFF:L.CRASH_MSG_OFF + L.CRASH_MSG_LEN] = raw.ljust(
        L.CRASH_MSG_LEN, b"\0")
    hq[L.CRASH_SIG], hq[L.CRASH_ADDR] = signal & 0xFFFFFFFF, addr
    hq[L.CRASH_OP] = operation & 0xFFFFFFFF
    b._cas_word(L.CRASH, 0, 1)
    b._wake_readers()


def _signed32(v: int) -> int:
    v = int(v) & 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v
