"""ShmQueue's conveniences over put/get: objects (pickle 5, out-of-band buffers), put_many,
asyncio.  Everything here goes through the queue's own claim/publish (``_try_put``) and
claim/copy/release (``_try_get``); nothing here touches shared memory by itself.

An object message is ``[u32 count][u64 length] * count`` then the pickle stream, then each
out-of-band buffer, all in one slot: one claim, no intermediate copy on the producer side,
one copy out of the slot on the consumer side (into a bytearray the buffers then live in, so
a NumPy array comes back writable).
"""

from __future__ import annotations

import asyncio
import pickle
import queue as _queue
import struct
from typing import Any, Callable, Optional

from ._checks import check_timeout
from .errors import QueueFinished

__all__ = ["_NOTHING", "ObjectsMixin"]

_COUNT = struct.Struct("<I")
_LEN = struct.Struct("<Q")
#: What a non-blocking attempt returns when there is nothing to do (shared with queue.py).
_NOTHING: Any = object()


class ObjectsMixin:
    """put_object/get_object, put_many, aput/aget for ShmQueue (get_many, a batched claim,
    is in queue.py)."""

    name: str
    slot_size: int
    _try_put: Callable[..., bool]
    _try_get: Callable[..., Any]
    _try_put_again: Callable[..., Any]
    _block: Callable[..., Any]
    _ready_get: Callable[[], bool]
    _ready_put: Callable[[], bool]
    _items: Any
    _space: Any
    _check_open: Callable[[str], None]
    _closed: bool
    _closed_while_waiting: Callable[[str], ValueError]
    housekeeping: Callable[[], int]
    put: Callable[..., None]
    get: Callable[..., bytes]

    # -- objects ----------------------------------------------------------------------------
    def put_object(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Pickle ``obj`` (protocol 5; large buffers such as NumPy arrays out of band) into
        one message."""
        timeout = check_timeout(timeout, f"ShmQueue {self.name!r}: put_object")
        bufs: list[pickle.PickleBuffer] = []
        body = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
        raws = [b.raw() for b in bufs]
        head = _COUNT.pack(len(raws) + 1) + b"".join(
            _LEN.pack(len(p)) for p in (body, *raws))
        parts = (head, body, *raws)
        n = sum(len(p) for p in parts)
        if not self._try_put(None, parts, n):
            self._block(self._try_put_again, (None, parts, n), timeout, True)

    def get_object(self, timeout: Optional[float] = None) -> Any:
        """Take one message written by put_object and unpickle it."""
        timeout = check_timeout(timeout, f"ShmQueue {self.name!r}: get_object")
        r = self._try_get(bytearray)
        if r is _NOTHING:
            r = self._block(self._try_get, (bytearray,), timeout, False)
        return _unpack_object(self.name, r)

    # -- batches ----------------------------------------------------------------------------
    def put_many(self, messages: Any, timeout: Optional[float] = None) -> None:
        """Put each message in order (blocking while full; ``timeout`` is each put's).  If
        one fails, the ones before it are committed (they will be delivered) and it and the
        rest are not: the exception (of the same type) says how many were committed."""
        timeout = check_timeout(timeout, f"ShmQueue {self.name!r}: put_many")
        done = 0
        try:
            for m in messages:
                self.put(m, timeout)
                done += 1
        except (_queue.Full, ValueError, TypeError, QueueFinished) as e:
            raise type(e)(f"ShmQueue {self.name!r}: put_many(): the first {done} message(s) "
                          f"were committed; message {done} and the rest were not "
                          f"({type(e).__name__}: {e})") from e

    # -- asyncio ----------------------------------------------------------------------------
    async def aput(self, data: Any, timeout: Optional[float] = None) -> None:
        """``put`` for asyncio: waits in a worker thread (in slices, so cancelling never
        leaves a claim behind), claims on the event loop."""
        timeout = check_timeout(timeout, f"ShmQueue {self.name!r}: aput")
        await self._await(lambda: self.put(data, 0), self._space, self._ready_put, timeout,
                          _queue.Full)

    async def aget(self, timeout: Optional[float] = None) -> bytes:
        """``get`` for asyncio (see aput)."""
        timeout = check_timeout(timeout, f"ShmQueue {self.name!r}: aget")
        r: bytes = await self._await(lambda: self.get(0), self._items, self._ready_get,
                                     timeout, _queue.Empty)
        return r

    async def _await(self, attempt: Callable[[], Any], side: Any, ready: Callable[[], bool],
                     timeout: Optional[float], exc: type[Exception]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                return attempt()
            except exc:
                pass
            chunk = 0.2
            if deadline is not None:
                chunk = min(chunk, deadline - loop.time())
                if chunk <= 0:
                    raise exc()
            self._check_open("wait")
            try:
                woke = await loop.run_in_executor(None, side.sleep, ready, chunk)
            except (ValueError, TypeError):  # closed while the worker thread slept
                if self._closed:
                    raise self._closed_while_waiting(
                        "aput" if exc is _queue.Full else "aget") from None
                raise
            if not woke:
                self.housekeeping()


def _unpack_object(name: str, data: bytearray) -> Any:
    mv = memoryview(data)
    try:
        (count,) = _COUNT.unpack_from(mv, 0)
        pos = _COUNT.size
        lens = []
        for _ in range(count):
            lens.append(_LEN.unpack_from(mv, pos)[0])
            pos += _LEN.size
        pieces = []
        for n in lens:
            pieces.append(mv[pos:pos + n])
            pos += n
        if count < 1 or pos > len(mv):
            raise ValueError("lengths run past the message")
    except (struct.error, ValueError) as e:
        raise ValueError(f"ShmQueue {name!r}: the message is not a put_object() message "
                         f"({e}); use get() for raw bytes") from None
    return pickle.loads(pieces[0], buffers=pieces[1:])
