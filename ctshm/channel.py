"""A message channel between two ctshm processes, over records (``ctshm.records``).

``ring.sender()`` returns a :class:`Sender` (``send(data)`` / ``flush()`` / ``close()``) and
``ring.receiver()`` a :class:`Receiver` (``recv()`` / ``recv_view()`` / iteration).  Each
message is one record of a :class:`~ctshm.records.RecordWriter`, so many small messages
share a slot (the per-slot protocol is paid once per batch) while the writer's linger bound
(default 100 µs, see ``ctshm.records``) keeps a lone message from waiting for a full slot.

**ctshm to ctshm only.**  The slots carry the record framing of ``ctshm.records``: a Rust
``shm.rs`` peer (or ``ring.get()``) sees one message per *slot*, i.e. a record-framed batch,
not the individual messages.  Use ``ring.put()`` / ``ring.access()`` to talk to it.

Example::

    with ring.sender() as tx:              # producer process
        tx.send(b"hello")                  # published within 100 µs (linger), no flush
        tx.send(b"world")                  # close() flushes and finishes the stream

    rx = ring.receiver()                   # consumer process
    for msg in rx:                         # bytes, in order; ends at Finished
        print(msg)
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ._checks import check_linger, check_timeout as _check_timeout
from ._record_framing import split
from .records import DEFAULT_LINGER, RecordWriter
from .ring import (
    ConsumerGuard,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    RingFinished,
    ShmTraceRing,
)

__all__ = ["Receiver", "Sender"]


class Sender:
    """Producer side of a message channel: one record per message (see the module docstring).

    ``linger`` (seconds; default 100 µs; ``0``: publish every message at once; ``None``: only
    on a full slot, ``flush()`` or ``close()``), ``max_bytes`` and ``timeout`` (each wait for a
    free slot) are those of :class:`~ctshm.records.RecordWriter`.  As a context manager it
    calls ``close()`` on success; on an exception it publishes what was sent and does *not*
    finish the stream (``close(finish=False)``).
    """

    __slots__ = ("_ring", "_writer", "send")

    def __init__(self, ring: ShmTraceRing, *, linger: Optional[float] = DEFAULT_LINGER,
                 max_bytes: Optional[int] = None, timeout: Optional[float] = None) -> None:
        self._ring = ring
        linger = check_linger(linger, f"ring {ring.name!r}: sender()")
        self._writer = RecordWriter(ring, max_bytes=max_bytes, timeout=timeout, linger=linger,
                                    what="sender().send")
        #: ``send(data)``: queue one message (any bytes-like object, copied); ``ValueError``
        #: when it does not fit a slot or the sender is closed.
        self.send = self._writer.append

    def flush(self) -> None:
        """Publish the messages sent so far now."""
        self._writer.flush()

    def close(self, finish: bool = True) -> None:
        """Publish what was sent, stop the linger thread, and (``finish=True``) end the stream:
        the receiver raises ``RingFinished`` after the last message.  Idempotent."""
        self._writer.close(finish)

    @property
    def messages_sent(self) -> int:
        """Messages published so far (not counting those still lingering)."""
        return self._writer.records_written

    @property
    def pending(self) -> int:
        """Messages sent but not yet published."""
        return self._writer.pending

    @property
    def writer(self) -> RecordWriter:
        """The underlying :class:`~ctshm.records.RecordWriter`."""
        return self._writer

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(finish=exc_type is None)

    def __repr__(self) -> str:
        return f"<Sender {self._ring.name!r} {self._writer!r}>"


class Receiver:
    """Consumer side of a message channel.

    ``recv(timeout)`` returns the next message as ``bytes``; it raises ``RingFinished`` after
    the last message of a finished stream, ``ProducerCrashed`` after the last message
    committed before a crash, and ``TimeoutError`` when nothing arrives within ``timeout``
    seconds (``None``: wait without bound), exactly as ``ring.get()`` does.  Iterating yields
    ``bytes`` until the end of the stream (``ProducerCrashed`` on a crash).

    ``recv_view(timeout)`` is the zero-copy form: a read-only memoryview of the message in the
    slot.  **It is valid until the next call on this receiver** (``recv``, ``recv_view``, the
    next iteration step or ``close()``): that call releases it (``ValueError`` on use
    afterwards), since the slot may be handed back to the producer.  Copy with ``bytes(view)``
    to keep it.  A receiver holds at most one slot; ``close()`` releases it.
    """

    __slots__ = ("_batch", "_guard", "_i", "_kept", "_last", "_ring", "messages_received",
                 "slots_received")

    def __init__(self, ring: ShmTraceRing) -> None:
        self._ring = ring
        self._guard: Optional[ConsumerGuard] = None
        self._batch: list[memoryview] = []
        self._i = 0
        self._last: Optional[memoryview] = None
        self._kept: list[memoryview] = []  # views the caller exported further: retried later
        self.messages_received = 0
        self.slots_received = 0  # record slots taken from the ring

    def recv_view(self, timeout: Optional[float] = None) -> memoryview:
        """The next message as a read-only view, valid until the next call (see the class)."""
        last = self._last
        if last is not None:  # (inline: no call per message)
            self._last = None
            try:
                last.release()
            except BufferError:  # exported further by the caller: retried with the slot
                self._kept.append(last)
        i = self._i
        if i >= len(self._batch):
            self._next_slot(timeout)
            i = 0
        self._i = i + 1
        self.messages_received += 1
        v = self._last = self._batch[i]
        return v

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next message as bytes (see the class for the end of the stream)."""
        v = self.recv_view(timeout)
        data = bytes(v)
        self._last = None
        _release(v)
        return data

    def _next_slot(self, timeout: Optional[float]) -> None:
        self._drop_slot()
        ring = self._ring
        timeout = _check_timeout(timeout, f"Receiver for {ring.name!r}: recv")
        while True:
            r = ring.access(timeout)
            if type(r) is Data:
                g = r.guard
                try:
                    batch = split(g.buf, g.index, ring.name)
                except BaseException:
                    g.release()
                    raise
                if not batch:  # a slot without records (not written by RecordWriter)
                    g.release()
                    continue
                self._guard, self._batch, self._i = g, batch, 0
                self.slots_received += 1
                return
            if type(r) is Finished:
                raise RingFinished(f"ring {ring.name!r} is finished")
            if type(r) is Crashed:
                raise ProducerCrashed(r)
            raise TimeoutError(f"Receiver for {ring.name!r}: no message within {timeout} s")

    def _drop_slot(self) -> None:
        """Release the views not handed out, those kept, then the slot."""
        batch, i, self._batch, self._i = self._batch, self._i, [], 0
        kept, self._kept = self._kept, []
        for v in batch[i:] + kept:
            _release(v)
        g, self._guard = self._guard, None
        if g is not None:
            g.release()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                msg = self.recv()
            except RingFinished:
                return
            yield msg

    def close(self) -> None:
        """Release the slot this receiver holds (the ring handle stays open).  Idempotent."""
        last, self._last = self._last, None
        if last is not None:
            _release(last)
        self._drop_slot()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Receiver {self._ring.name!r} received={self.messages_received} "
                f"buffered={len(self._batch) - self._i}>")


def _release(v: memoryview) -> None:
    try:
        v.release()
    except BufferError:  # exported further by the caller
        pass
