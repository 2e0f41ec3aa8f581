"""Every exception (and warning) ctshm raises of its own (the rest are Python's: ``TypeError``,
``ValueError``, ``TimeoutError``, ``OSError`` with the object's name, ...).

Each pickles with its fields (a ``multiprocessing`` worker may raise it).  Older import
paths (``ctshm.results``, ``ctshm.ring``, ``ctshm._space``) keep working.
"""

from __future__ import annotations

from typing import Any

from .results import CrashDetails, Crashed

__all__ = ["ConsumerGone", "CorruptRingError", "PeersFull", "ProducerCrashed", "QueueFinished",
           "ReaderEvicted", "RingFinished", "ShmDirError", "StaleViewWarning",
           "TooManyReaders", "UnreadMessagesWarning"]


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


class RingFinished(EOFError):
    """Raised by ``get()`` once the producer finished and everything was delivered."""


class ShmDirError(OSError):
    """``shm_open`` / ``sem_open`` failed because of the shared memory directory itself
    (absent, read-only, not writable), not because of the object named.  ``errno`` is the
    system's (ENOENT, EROFS, EACCES); ``filename`` is the object name."""


class UnreadMessagesWarning(RuntimeWarning):
    """A ring's owner removed it while it held committed messages no live consumer had
    taken (shown by default; see ``ShmTraceRing.wait_drained``)."""


class StaleViewWarning(RuntimeWarning):
    """A view exported from a guard's ``buf`` (a NumPy array, ``memoryview(g.buf)``)
    outlived the guard: it still maps the slot, which will hold another message.  Shown by
    default; ``warnings.simplefilter("error", StaleViewWarning)`` makes it an error (raised
    once the slot was handed back)."""


class QueueFinished(Exception):
    """The queue's stream ended (:meth:`ctshm.queue.ShmQueue.finish`): no message will come
    any more (``get``), or none is accepted (``put``).  (Also ``ctshm.queue.QueueFinished``.)"""


class ReaderEvicted(RuntimeError):
    """This ShmBroadcast reader was evicted by the writer (``evict()`` or ``evict_after``)
    while it lagged: the messages it missed are gone.  ``close()`` it and open a new reader
    to go on."""


class TooManyReaders(RuntimeError):
    """Every reader slot of a ShmBroadcast is taken by a live reader."""


class PeersFull(RuntimeError):
    """Every entry of a ShmQueue's peer table belongs to a live process (create the queue
    with a larger ``max_peers``); also raised by a forked child that found no entry."""
