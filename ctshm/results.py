"""What the ring hands out and raises: ``Data``/``Finished``/``Crashed``/``Timeout`` (the
results of ``access()``), ``CrashDetails``, and the ring's exceptions.

Every result except ``Data`` and every exception pickles with its fields (a
``multiprocessing`` worker may return or raise them); ``Data`` holds a slot of shared memory
mapped in this process and refuses with a clear ``TypeError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple, Optional, Union

if TYPE_CHECKING:
    from .ring import ConsumerGuard

__all__ = [
    "AccessResult",
    "ConsumerGone",
    "CorruptRingError",
    "CrashDetails",
    "Crashed",
    "Data",
    "Finished",
    "ProducerCrashed",
    "RingFinished",
    "StaleViewWarning",
    "Timeout",
    "UnreadMessagesWarning",
]




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
            return self.message or (f"producer pid {self.pid} ended without mark_finished() "
                                    "or notify_crash()")
        if self.message:
            return f"producer crashed: {self.message}"
        return "producer called notify_crash"


class Timeout(_Result):
    """Nothing arrived within the timeout."""

    __slots__ = ()


FINISHED_RESULT: Final = Finished()


AccessResult = Union[Data, Finished, Crashed, Timeout]


class CorruptRingError(ValueError):
    """The ring's header is inconsistent (corrupt or hostile peer, or not a ring at all)."""


class ConsumerGone(BrokenPipeError):
    """The ring's registered consumer process died while the producer waited for space."""


class ProducerCrashed(RuntimeError):
    """Raised by the copying helpers (``get``, iteration) when the producer crashed.

    ``result`` is the :class:`Crashed` value; ``details``, ``pid`` and ``message`` are its
    fields.  Pickles with all of them (a ``multiprocessing`` worker may raise it)."""

    def __init__(self, result: Crashed) -> None:
        if not isinstance(result, Crashed):
            raise TypeError(f"ProducerCrashed(result): result must be a Crashed, not "
                            f"{type(result).__name__}")
        self.result = result
        self.details = result.details
        self.pid = result.pid
        self.message = result.message
        zero = result.details == CrashDetails()
        super().__init__(result.reason if zero else f"{result.reason}: {result.details}")

    def __reduce__(self) -> Any:
        return (type(self), (self.result,))


class UnreadMessagesWarning(RuntimeWarning):
    """A ring's owner removed it while it held committed messages no live consumer had
    taken (shown by default; see ``ShmTraceRing.wait_drained``)."""


class StaleViewWarning(RuntimeWarning):
    """A view exported from a guard's ``buf`` (a NumPy array, ``memoryview(g.buf)``)
    outlived the guard: it still maps the slot, which will hold another message.  Shown by
    default; ``warnings.simplefilter("error", StaleViewWarning)`` makes it an error (raised
    once the slot was handed back)."""


STALE: Final = "ended, with a view of its buf still exported"  # a guard's ``_done`` then


def stale_view_text(kind: str, index: int, ring: str, producer: bool) -> str:
    """The :class:`StaleViewWarning` text for a guard that ended with an exported view."""
    if producer:
        risk = ("a write through it changes the published message (or a later one in the "
                "same slot); write through g.buf and drop such views before the with block "
                "ends, or use put()")
    else:
        risk = ("it will show a later message's bytes once the producer reuses the slot; "
                "use such views only inside the with block, and copy what must outlive it "
                "(bytes(g.buf), arr.copy())")
    return (f"{kind} for message {index} of {ring!r} ended while a view made from its buf "
            f"(a NumPy array, memoryview(g.buf), ...) still exists: {risk}")


class RingFinished(EOFError):
    """Raised by ``get()`` once the producer finished and everything was delivered."""
