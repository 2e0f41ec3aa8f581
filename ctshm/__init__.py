"""ctshm: shared-memory IPC for Python processes, pure ctypes over libc.

A ring of large slots in POSIX shared memory handed from a producer process to a consumer
process with two named counting semaphores (:class:`ShmTraceRing`), and plain shared memory
segments (:class:`ShmMemory`); byte-compatible with the zkVM executor's Rust ``shm.rs``.
"""

from __future__ import annotations

from .broadcast import BroadcastGuard, ReaderEvicted, ShmBroadcast, TooManyReaders
from .errors import PeersFull, StaleViewWarning, UnreadMessagesWarning
from .memory import ShmMemory
from .queue import QueueFinished, ShmQueue
from .ring import (
    ConsumerGone,
    ConsumerGuard,
    CorruptRingError,
    CrashDetails,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    ProducerGuard,
    RingFinished,
    ShmTraceRing,
    Timeout,
)

__all__ = [
    "BroadcastGuard",
    "ConsumerGone",
    "ConsumerGuard",
    "CorruptRingError",
    "CrashDetails",
    "Crashed",
    "Data",
    "Finished",
    "PeersFull",
    "ProducerCrashed",
    "ProducerGuard",
    "QueueFinished",
    "ReaderEvicted",
    "RingFinished",
    "ShmBroadcast",
    "ShmMemory",
    "ShmQueue",
    "ShmTraceRing",
    "StaleViewWarning",
    "Timeout",
    "TooManyReaders",
    "UnreadMessagesWarning",
    "__version__",
]

__version__ = "0.1.0"
