"""The one door module: the ring's copying helpers (``get``, ``chunks``, iteration) and its
doors to the extensions (``aget``/``aput``/... from :mod:`ctshm.aio`, ``put_object``/... from
:mod:`ctshm.objects`, ``sender``/``receiver`` from :mod:`ctshm.channel`).

Each is a function of a ring built on the ring's public API (``get`` and copying iteration
first try a quiet batch of one, :func:`ctshm._batch.take`); ``ShmTraceRing`` binds them as
its methods.  The extensions are imported lazily, here and nowhere else below them
(the layering test, ``tests/test_layering.py``, holds every module to ``docs/modules.md``):
importing ``ctshm`` loads no extension, and no extension is named by the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional

from . import _batch
from .layout import Buffer
from .results import AccessResult, Data, Finished

if TYPE_CHECKING:
    from .channel import Receiver, Sender
    from .guards import ProducerGuard
    from .ring import ShmTraceRing

__all__ = ["chunks", "get", "iter_chunks"]


# -- copying helpers and iteration ------------------------------------------------------------
def get(ring: ShmTraceRing, timeout: Optional[float] = None) -> bytes:
    """The next message as bytes.  ``RingFinished`` at the end, ``ProducerCrashed`` on a
    crash, ``TimeoutError`` on timeout."""
    if ring._c_quiet:  # the quiet path: a batch of one (no guard, no result object)
        got = _batch.take(ring, 1)
        if got:
            return got[0]
    r = ring.access(timeout)
    if isinstance(r, Data):
        with r.guard as g:
            return bytes(g.buf)
    raise _batch.end_error(ring, r, timeout)


def chunks(ring: ShmTraceRing, timeout: Optional[float] = None, copy: bool = True
           ) -> Iterator[Any]:
    """Iterate messages until Finished; raise ``ProducerCrashed`` on a crash and
    ``TimeoutError`` if one wait exceeds ``timeout``.  Items are ``bytes``; with
    ``copy=False`` each is a read-only memoryview valid until the next item is requested."""
    while True:
        if copy and ring._c_quiet:
            got = _batch.take(ring, 1)
            if got:
                yield got[0]
                continue
        r = ring.access(timeout)
        if isinstance(r, Data):
            g = r.guard
            try:
                yield bytes(g.buf) if copy else g.buf
            finally:
                g.release()
        elif isinstance(r, Finished):
            return
        else:
            raise _batch.end_error(ring, r, timeout)


def iter_chunks(ring: ShmTraceRing) -> Iterator[bytes]:
    """``iter(ring)``: the messages as bytes until Finished (see :func:`chunks`)."""
    return chunks(ring)


# -- asyncio (ctshm.aio) ------------------------------------------------------------------------
async def aaccess(ring: ShmTraceRing, timeout: Optional[float] = None) -> AccessResult:
    """``access()`` for asyncio (see :func:`ctshm.aio.aaccess`)."""
    from .aio import aaccess
    return await aaccess(ring, timeout)


async def aget(ring: ShmTraceRing, timeout: Optional[float] = None) -> bytes:
    """``get()`` for asyncio (see :func:`ctshm.aio.aget`)."""
    from .aio import aget
    return await aget(ring, timeout)


def aiter(ring: ShmTraceRing, timeout: Optional[float] = None, copy: bool = True) -> Any:
    """``chunks()`` for asyncio (see :func:`ctshm.aio.aiter`)."""
    from .aio import aiter
    return aiter(ring, timeout, copy)


async def aacquire(ring: ShmTraceRing, timeout: Optional[float] = None, *,
                   size: Optional[int] = None) -> ProducerGuard:
    """``acquire()`` for asyncio (see :func:`ctshm.aio.aacquire`)."""
    from .aio import aacquire
    return await aacquire(ring, timeout, size=size)


async def aput(ring: ShmTraceRing, data: Buffer, timeout: Optional[float] = None) -> None:
    """``put()`` for asyncio (see :func:`ctshm.aio.aput`)."""
    from .aio import aput
    await aput(ring, data, timeout)


# -- Python objects (ctshm.objects) -------------------------------------------------------------
def put_object(ring: ShmTraceRing, obj: Any, timeout: Optional[float] = None) -> None:
    """Send one Python object (see :func:`ctshm.objects.put_object`)."""
    try:
        f = _OBJECTS["put_object"]
    except KeyError:
        f = _load_objects("put_object")
    f(ring, obj, timeout)


def get_object(ring: ShmTraceRing, timeout: Optional[float] = None) -> Any:
    """Receive one Python object (see :func:`ctshm.objects.get_object`)."""
    try:
        f = _OBJECTS["get_object"]
    except KeyError:
        f = _load_objects("get_object")
    return f(ring, timeout)


#: ctshm.objects' per-message functions once loaded (an import statement per call costs
#: about a microsecond: the door imports once).
_OBJECTS: dict[str, Any] = {}


def _load_objects(name: str) -> Any:
    from . import objects
    _OBJECTS["put_object"] = objects.put_object
    _OBJECTS["get_object"] = objects.get_object
    return _OBJECTS[name]


def get_object_view(ring: ShmTraceRing, timeout: Optional[float] = None) -> Any:
    """Receive one object without copying its buffers (see
    :func:`ctshm.objects.get_object_view`)."""
    from .objects import get_object_view
    return get_object_view(ring, timeout)


async def aput_object(ring: ShmTraceRing, obj: Any, timeout: Optional[float] = None) -> None:
    """``put_object()`` for asyncio (see :func:`ctshm.objects.aput_object`)."""
    from .objects import aput_object
    await aput_object(ring, obj, timeout)


async def aget_object(ring: ShmTraceRing, timeout: Optional[float] = None) -> Any:
    """``get_object()`` for asyncio (see :func:`ctshm.objects.aget_object`)."""
    from .objects import aget_object
    return await aget_object(ring, timeout)


# -- a message channel over records (ctshm.channel) ---------------------------------------------
def sender(ring: ShmTraceRing, linger: Optional[float] = 100e-6, *,
           max_bytes: Optional[int] = None, timeout: Optional[float] = None) -> Sender:
    """A :class:`ctshm.channel.Sender` of many small messages per slot on this ring."""
    from .channel import Sender
    return Sender(ring, linger=linger, max_bytes=max_bytes, timeout=timeout)


def receiver(ring: ShmTraceRing) -> Receiver:
    """A :class:`ctshm.channel.Receiver` of a :meth:`sender`'s messages on this ring."""
    from .channel import Receiver
    return Receiver(ring)
