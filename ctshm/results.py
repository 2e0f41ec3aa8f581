"""What the ring hands out: ``Data``/``Finished``/``Crashed``/``Timeout`` (the results of
``access()``) and ``CrashDetails``.  The exceptions are :mod:`ctshm.errors`' (importable from
here too, as before).

Every result except ``Data`` pickles with its fields (a ``multiprocessing`` worker may return
them); ``Data`` holds a slot of shared memory mapped in this process and refuses with a clear
``TypeError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple, Optional, Union

if TYPE_CHECKING:
    from .guards import ConsumerGuard

__all__ = ["AccessResult", "CrashDetails", "Crashed", "Data", "Finished", "Timeout"]


class CrashDetails(NamedTuple):
    """What the producer reported (``notify_crash``); all zero when it died silently."""

    signal: int = 0
    addr: int = 0
    operation: int = 0  # 0 unknown, 1 read, 2 write, 3 exec


class _Result:
    """Base of the access() results: small immutable value objects (cheap to build: one is
    made per message), comparable, printable, and usable with ``match``."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, k) == getattr(other, k) for k in self.__match_args__)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, k) for k in self.__match_args__)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__match_args__)
        return f"{type(self).__name__}({args})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> Any:
        # Immutable slots: rebuild through __init__ (the fields in __match_args__ order).
        return (type(self), tuple(getattr(self, k) for k in self.__match_args__))


class Data(_Result):
    """A slot for the consumer: use ``.guard.buf`` and release the guard."""

    __slots__ = ("guard",)
    __match_args__ = ("guard",)
    guard: ConsumerGuard

    def __init__(self, guard: ConsumerGuard) -> None:
        object.__setattr__(self, "guard", guard)

    def __reduce__(self) -> Any:
        raise TypeError("Data cannot be pickled: its guard holds a slot of shared memory mapped "
                        "in this process; send bytes(data.guard.buf) (or use ring.get()) instead")


class Finished(_Result):
    """The producer called ``mark_finished()`` and every committed slot was handed out."""

    __slots__ = ()


class Crashed(_Result):
    """The producer crashed (``notify_crash``) or died; every committed slot was handed out.

    ``pid`` is the dead producer's pid when ctshm detected the death itself (``details`` is
    then all zero), else None.  ``message`` is the producer's own account (ctshm producers:
    ``notify_crash(..., message=)`` or the crash hook).
    """

    __slots__ = ("details", "message", "pid")
    __match_args__ = ("details", "pid", "message")
    details: CrashDetails
    pid: Optional[int]
    message: str

    def __init__(self, details: CrashDetails, pid: Optional[int] = None,
                 message: str = "") -> None:
        object.__setattr__(self, "details", details)
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "message", message)

    @property
    def reason(self) -> str:
        if self.pid is not None:  # ctshm found it dead: the message is what is known why
            return self.message or (f"producer pid {self.pid} died without mark_finished() "
                                    "or notify_crash()")
        if self.message:
            return f"producer crashed: {self.message}"
        return "producer called notify_crash"


class Timeout(_Result):
    """Nothing arrived within the timeout."""

    __slots__ = ()


FINISHED_RESULT: Final = Finished()


AccessResult = Union[Data, Finished, Crashed, Timeout]


def __getattr__(name: str) -> Any:
    # The exceptions moved to ctshm.errors; importing them from here keeps working.
    if name in _MOVED:
        from . import errors
        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MOVED: Final = frozenset({"ConsumerGone", "CorruptRingError", "ProducerCrashed",
                           "RingFinished", "StaleViewWarning", "UnreadMessagesWarning"})
