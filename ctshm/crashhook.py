"""Make a Python producer report its own death to the consumer.

``install(ring)`` arranges that

* an unhandled exception (main thread: ``sys.excepthook``; other threads:
  ``threading.excepthook``) calls ``ring.notify_crash(0, 0, 0, message)`` with the exception's
  type and text (``signal`` 0: no signal was involved; ``KeyboardInterrupt`` reports SIGINT);
* SIGTERM calls ``ring.notify_crash(SIGTERM, 0, 0, "terminated by SIGTERM")`` and then lets
  the signal do what it did before (by default: end the process with that signal);
* SIGINT keeps Python's behaviour (``KeyboardInterrupt``), which, if nothing catches it,
  reaches the excepthook and is reported with signal SIGINT.

Limits: a fatal signal inside the interpreter or a C extension (SIGSEGV, SIGBUS, SIGABRT,
SIGKILL, the OOM killer) cannot run Python code.  Those deaths are still reported: a ctshm
consumer notices the registered producer died (pid + start time) within ~0.2 s and returns
``Crashed`` with ``pid`` set and signal 0.  ``os._exit()`` skips every hook the same way.
Only one ring per process can be hooked at a time; ``uninstall()`` restores everything.

``multiprocessing`` children: ``Process.run`` catches the target's exception itself (prints
it and exits with code 1), so no excepthook ever sees it.  Wrap the target's body instead::

    def producer(id):
        ring = ShmTraceRing.open(id, timeout=10)
        with crashhook.reporting(ring):       # or decorate a function: @crashhook.reporting(ring)
            ...

``reporting(ring)`` calls ``ring.notify_crash(0, 0, 0, message)`` when an exception leaves the
block (the message: exception type, text and the innermost frames of its traceback) and
re-raises it unchanged.  ``KeyboardInterrupt`` is reported with signal SIGINT; a
``SystemExit`` with code 0 or None is a normal exit and is not reported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from types import FrameType, TracebackType
from typing import Any, Callable, Literal, Optional, Union

from .broadcast import ShmBroadcast
from .ring import ShmTraceRing

__all__ = ["CrashHook", "install", "reporting"]

#: What reports a crash: a ring's producer or a broadcast's writer (both have notify_crash).
_Ring = Union[ShmTraceRing, ShmBroadcast]
_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


class CrashHook:
    def __init__(self, ring: _Ring, signals: tuple[int, ...]) -> None:
        self.ring = ring
        self._pid = os.getpid()
        self._prev_excepthook = sys.excepthook
        self._prev_thread_hook = threading.excepthook
        self._prev_signals: dict[int, _Handler] = {}
        sys.excepthook = self._excepthook
        threading.excepthook = self._thread_excepthook
        for sig in signals:
            self._prev_signals[sig] = signal.signal(sig, self._on_signal)

    def _report(self, sig: int, message: str) -> None:
        if os.getpid() != self._pid:  # a forked child is not the producer
            return
        try:
            self.ring.notify_crash(sig, 0, 0, message)
        except Exception:
            pass  # the ring may be closed already: never mask the original failure

    def _excepthook(self, tp: type[BaseException], value: BaseException,
                    tb: Optional[TracebackType]) -> None:
        sig = signal.SIGINT if issubclass(tp, KeyboardInterrupt) else 0
        self._report(int(sig), f"unhandled {tp.__name__}: {value}")
        self._prev_excepthook(tp, value, tb)

    def _thread_excepthook(self, args: Any) -> None:
        if args.exc_type is not SystemExit:
            name = getattr(args.thread, "name", "?")
            self._report(0, f"unhandled {args.exc_type.__name__} in thread {name}: "
                            f"{args.exc_value}")
        self._prev_thread_hook(args)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self._report(signum, f"terminated by {signal.Signals(signum).name}")
        prev = self._prev_signals.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
            return
        if prev == signal.SIG_IGN:
            return
        # Default disposition: die of the same signal, as the process would have.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def uninstall(self) -> None:
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_excepthook
        if threading.excepthook == self._thread_excepthook:
            threading.excepthook = self._prev_thread_hook
        for sig, prev in self._prev_signals.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev_signals.clear()


def install(ring: _Ring, signals: tuple[int, ...] = (signal.SIGTERM,)) -> CrashHook:
    """Report unhandled exceptions and the given signals of this producer to the consumer.

    Call from the main thread (Python installs signal handlers only there).
    """
    return CrashHook(ring, signals)


#: Frames of the traceback kept in a ``reporting`` message (innermost last).
_TB_FRAMES = 4
_VALUE_MAX = 300


def _summary(tp: type[BaseException], value: BaseException, tb: Optional[TracebackType]) -> str:
    """``unhandled T: text`` and the innermost frames, short enough for the 1020-byte crash
    message (the first line always fits)."""
    text = str(value)
    if len(text) > _VALUE_MAX:
        text = text[:_VALUE_MAX] + "..."
    lines = [f"unhandled {tp.__name__}: {text}"]
    frames = traceback.extract_tb(tb)[-_TB_FRAMES:]
    if frames:
        lines.append("traceback (innermost last):")
        lines += [f"  {os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames]
    return "\n".join(lines)


class reporting(contextlib.ContextDecorator):
    """Context manager and decorator: report an exception that leaves the block (or the
    decorated function) to the consumer with ``ring.notify_crash``, then re-raise it.

    Works where ``install()`` cannot: inside ``multiprocessing`` children, whose exceptions
    never reach ``sys.excepthook``.  Only the process that entered the block reports (a
    child forked inside it does not).  A failure of ``notify_crash`` itself (e.g. the ring
    was closed) never masks the original exception.
    """

    def __init__(self, ring: _Ring) -> None:
        if not isinstance(ring, (ShmTraceRing, ShmBroadcast)):
            raise TypeError(f"crashhook.reporting(ring): ring must be a ShmTraceRing, not "
                            f"{type(ring).__name__} (or a ShmBroadcast: its writer)")
        self.ring = ring
        self._pid: Optional[int] = None

    def __enter__(self) -> _Ring:
        self._pid = os.getpid()
        return self.ring

    def __exit__(self, tp: Optional[type[BaseException]], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        if tp is None or value is None or os.getpid() != self._pid:
            return False
        if isinstance(value, SystemExit) and value.code in (0, None):
            return False  # sys.exit() / sys.exit(0): a normal end
        sig = int(signal.SIGINT) if isinstance(value, KeyboardInterrupt) else 0
        try:
            self.ring.notify_crash(sig, 0, 0, _summary(tp, value, tb))
        except Exception:
            pass  # never mask the original failure
        return False  # re-raise
