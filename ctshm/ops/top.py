"""``top``: a live view of every ring in SHM_DIR.

Each refresh inspects every ring (read-only, as ``ls`` does, without the ``/proc`` scan) and
derives rates from the difference to the previous refresh: messages and bytes per second
from the producer's live counters (``layout.PRODUCER_STATS``), or, while those are zero (a
producer that does not count, e.g. the Rust original), messages per second from
``write_idx`` (no byte rate then).  A ring re-created under the same name (another inode) or
whose counters went backwards gets no rate for that refresh.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from typing import Any, Optional, TextIO

from ._scan import Mappers
from .format import format_top
from .inspect import inspect_ring
from .names import ring_names
from .schema import RingInfo, TopRecord

__all__ = ["CLEAR", "Keys", "Rates", "rates", "run_top", "sample", "top_records"]

#: Home the cursor, clear the screen (each live refresh starts with it on a terminal).
CLEAR = "\x1b[H\x1b[2J"

#: name -> (monotonic time of the reading, the ring as inspected).
Sample = dict[str, tuple[float, RingInfo]]
#: (msg/s, MB/s, source) with source "counters" or "write_idx"; all None: no rate.
Rates = tuple[Optional[float], Optional[float], Optional[str]]
_NO_RATE: Rates = (None, None, None)


def sample(prefix: str = "") -> Sample:
    """Every ring whose name (without the slash) starts with ``prefix``, inspected now."""
    out: Sample = {}
    nobody = Mappers()  # no /proc scan: top does not show users
    for name in ring_names(prefix):
        info = inspect_ring(name, nobody)
        if info is not None:
            out[name] = (time.monotonic(), info)
    return out


def rates(prev: Optional[tuple[float, RingInfo]], cur: tuple[float, RingInfo]) -> Rates:
    """The rates between two readings of one ring (see the module docstring)."""
    if prev is None:
        return _NO_RATE
    (t0, a), (t1, b) = prev, cur
    dt = t1 - t0
    if dt <= 0 or a["identity"] != b["identity"] or a["stats"] is None or b["stats"] is None:
        return _NO_RATE
    p0, p1 = a["stats"]["producer"], b["stats"]["producer"]
    if p1["messages"] or p1["bytes"]:
        dm, db = p1["messages"] - p0["messages"], p1["bytes"] - p0["bytes"]
        if dm < 0 or db < 0:
            return _NO_RATE
        return dm / dt, db / dt / 1e6, "counters"
    dw = b["write_idx"] - a["write_idx"]
    if dw < 0:
        return _NO_RATE
    return dw / dt, None, "write_idx"


def _record(prev: Optional[tuple[float, RingInfo]], cur: tuple[float, RingInfo]) -> TopRecord:
    t1, o = cur
    msg_s, mb_s, source = rates(prev, cur)
    fill = o["backlog"] if o["backlog"] is not None else 0
    cap = o["capacity"]
    return {
        "name": o["name"], "id": o["id"], "state": o["state"], "capacity": cap,
        "write_idx": o["write_idx"], "read_idx": o["read_idx"], "fill": fill,
        "fill_pct": 100.0 * fill / cap if cap > 0 and o["stats"] is not None else 0.0,
        "msg_s": msg_s, "mb_s": mb_s, "rate_source": source,
        "interval_s": t1 - prev[0] if prev is not None else None,
        "producer": o["producer"], "consumer": o["consumer"],
        "crashed": o["state"] == "crashed", "finished": o["state"] == "finished",
        "stats": o["stats"],
    }


def top_records(prev: Sample, cur: Sample) -> list[TopRecord]:
    """One record per ring of ``cur`` (sorted by name), with rates against ``prev``."""
    return [_record(prev.get(name), cur[name]) for name in sorted(cur)]


class Keys:
    """Key presses on a terminal ``stdin`` (cbreak mode while active); elsewhere only waits.
    """

    def __init__(self, stream: TextIO) -> None:
        self._fd = -1
        self._saved: Any = None
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        if not os.isatty(fd):
            return
        import termios
        import tty
        self._fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if ``q`` was pressed (or the terminal went
        away).  Another key ends the wait early (an immediate refresh)."""
        if self._fd < 0:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self._fd, 64)
        except OSError:
            return True
        return not data or b"q" in data.lower()

    def close(self) -> None:
        if self._fd >= 0 and self._saved is not None:
            import termios
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = -1


def _show(records: list[TopRecord], interval: float, as_json: bool, live_tty: bool,
          out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(records) + "\n")
    elif live_tty:
        out.write(CLEAR + format_top(records, interval) + "\n")
    else:
        out.write(format_top(records, interval) + "\n\n")
    out.flush()


def run_top(prefix: str, interval: float, once: bool, as_json: bool,
            out: Optional[TextIO] = None, stdin: Optional[TextIO] = None) -> int:
    """``--once``: two readings ``interval`` apart, one screen (or JSON list) of rates.
    Otherwise refresh every ``interval`` seconds until ``q`` or SIGINT (exit code 0)."""
    out = out if out is not None else sys.stdout
    if once:
        first = sample(prefix)
        time.sleep(interval)
        records = top_records(first, sample(prefix))
        if as_json:
            out.write(json.dumps(records, indent=2) + "\n")
        else:
            out.write(format_top(records, interval, live=False) + "\n")
        out.flush()
        return 0
    live_tty = not as_json and out.isatty()
    keys = Keys(stdin if stdin is not None else sys.stdin)
    # Ctrl-C / SIGINT quits (exit code 0), even where SIGINT was inherited as ignored.
    on_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.default_int_handler) if on_main else None
    try:
        prev: Sample = {}
        while True:
            cur = sample(prefix)
            _show(top_records(prev, cur), interval, as_json, live_tty, out)
            prev = cur
            if keys.wait(interval):
                break
    except KeyboardInterrupt:
        pass
    finally:
        keys.close()
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return 0
