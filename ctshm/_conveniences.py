"""The convenience layer of ``ShmTraceRing``: copying helpers, iteration, and the doors to
asyncio (``ctshm.aio``) and Python objects (``ctshm.objects``).

Everything here is built on the ring's public protocol (``access``, ``acquire``, ``put``)
and nothing else: the protocol itself (both paths, the guards, the reorder buffer, the wait
loop) lives in ``ctshm.ring``.  ``ShmTraceRing`` inherits this mixin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Literal, Optional, Union, cast, overload

from .results import AccessResult, Crashed, Data, Finished, ProducerCrashed, RingFinished

if TYPE_CHECKING:
    from .channel import Receiver, Sender
    from .ring import ProducerGuard, ShmTraceRing

__all__ = ["Buffer", "RingConveniences", "take_pending"]

#: What ``put()`` copies from: any object with the buffer protocol (bytes, bytearray,
#: memoryview, array.array, NumPy arrays, ...); typed by the common ones.
Buffer = Union[bytes, bytearray, memoryview]


def take_pending(ring: ShmTraceRing) -> Optional[AccessResult]:
    """A message an async call of ``ring`` kept (see ``ctshm.aio.take_pending``)."""
    from .aio import take_pending
    return take_pending(ring)


class RingConveniences:
    """Copying and iterating helpers, async and object doors (see the module docstring)."""

    name: str

    if TYPE_CHECKING:
        def access(self, timeout: Optional[float] = None) -> AccessResult: ...

    # -- copying helpers and iteration ------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> bytes:
        """The next message as bytes.  ``RingFinished`` at the end, ``ProducerCrashed`` on a
        crash, ``TimeoutError`` on timeout."""
        r = self.access(timeout)
        if isinstance(r, Data):
            with r.guard as g:
                return bytes(g.buf)
        if isinstance(r, Finished):
            raise RingFinished(f"ring {self.name!r} is finished")
        if isinstance(r, Crashed):
            raise ProducerCrashed(r)
        raise TimeoutError(f"ring {self.name!r}: no message within {timeout} s")

    @overload
    def chunks(self, timeout: Optional[float] = None, copy: Literal[True] = True
               ) -> Iterator[bytes]: ...

    @overload
    def chunks(self, timeout: Optional[float], copy: Literal[False]) -> Iterator[memoryview]: ...

    @overload
    def chunks(self, *, copy: Literal[False]) -> Iterator[memoryview]: ...

    @overload
    def chunks(self, timeout: Optional[float] = None, copy: bool = True
               ) -> Iterator[Union[bytes, memoryview]]: ...

    def chunks(self, timeout: Optional[float] = None, copy: bool = True
               ) -> Iterator[Union[bytes, memoryview]]:
        """Iterate messages until Finished; raise ``ProducerCrashed`` on a crash and
        ``TimeoutError`` if one wait exceeds ``timeout``.  With ``copy=False`` each item is a
        read-only memoryview valid until the next item is requested."""
        while True:
            r = self.access(timeout)
            if isinstance(r, Data):
                g = r.guard
                try:
                    yield bytes(g.buf) if copy else g.buf
                finally:
                    g.release()
            elif isinstance(r, Finished):
                return
            elif isinstance(r, Crashed):
                raise ProducerCrashed(r)
            else:
                raise TimeoutError(f"ring {self.name!r}: no message within {timeout} s")

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()


    def wait_drained(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: without bound) until the consumer has
        released every committed message (``len(ring) == 0``): True, or False on timeout.
        An owner calls it before closing: its ``close()`` removes the ring, and messages no
        consumer took are then lost (``UnreadMessagesWarning``).  ``ConsumerGone`` if the
        registered consumer died."""
        from ._unread import wait_drained
        return wait_drained(self._as_ring(), timeout)

    def _as_ring(self) -> ShmTraceRing:
        return cast("ShmTraceRing", self)

    # -- asyncio and Python objects (ctshm.aio, ctshm.objects) --
    async def aaccess(self, timeout: Optional[float] = None) -> AccessResult:
        from .aio import aaccess
        return await aaccess(self._as_ring(), timeout)

    async def aget(self, timeout: Optional[float] = None) -> bytes:
        from .aio import aget
        return await aget(self._as_ring(), timeout)

    def aiter(self, timeout: Optional[float] = None, copy: bool = True) -> Any:
        from .aio import aiter
        return aiter(self._as_ring(), timeout, copy)

    async def aacquire(self, timeout: Optional[float] = None, *, size: Optional[int] = None
                       ) -> ProducerGuard:
        from .aio import aacquire
        return await aacquire(self._as_ring(), timeout, size=size)

    async def aput(self, data: Buffer, timeout: Optional[float] = None) -> None:
        from .aio import aput
        await aput(self._as_ring(), data, timeout)

    def put_object(self, obj: Any, timeout: Optional[float] = None) -> None:
        from .objects import put_object
        put_object(self._as_ring(), obj, timeout)

    def get_object(self, timeout: Optional[float] = None) -> Any:
        from .objects import get_object
        return get_object(self._as_ring(), timeout)

    def get_object_view(self, timeout: Optional[float] = None) -> Any:
        from .objects import get_object_view
        return get_object_view(self._as_ring(), timeout)

    async def aput_object(self, obj: Any, timeout: Optional[float] = None) -> None:
        from .objects import aput_object
        await aput_object(self._as_ring(), obj, timeout)

    async def aget_object(self, timeout: Optional[float] = None) -> Any:
        from .objects import aget_object
        return await aget_object(self._as_ring(), timeout)

    # -- message channel over records (ctshm.records) --
    def sender(self, linger: Optional[float] = 100e-6, *, max_bytes: Optional[int] = None,
               timeout: Optional[float] = None) -> Sender:
        from .channel import Sender
        return Sender(self._as_ring(), linger=linger, max_bytes=max_bytes, timeout=timeout)

    def receiver(self) -> Receiver:
        from .channel import Receiver
        return Receiver(self._as_ring())
