"""Python objects through a :class:`~ctshm.ring.ShmTraceRing`: pickle protocol 5, with every
large buffer copied once, straight from the object's memory into the slot.

::

    ring.put_object({"frame": np.zeros((1024, 1024)), "seq": 7})     # producer
    obj = ring.get_object()                 # consumer: owns its memory (buffers copied out)
    with ring.get_object_view() as obj:     # zero-copy: obj's arrays point into the slot,
        total = obj["frame"].sum()          # valid only inside the block

``await ring.aput_object(obj)`` / ``await ring.aget_object()`` / ``await
aget_object_view(ring)`` are the asyncio forms (see :mod:`ctshm.aio`).

**Security: unpickling runs code chosen by whoever wrote the slot.**  ``get_object`` is as
unsafe as :func:`pickle.loads`: use it only between processes that trust each other.

What is copied.  The object is pickled with protocol 5 and a ``buffer_callback``: objects that
support out-of-band pickling (NumPy arrays, :class:`pickle.PickleBuffer`, ...) hand over their
memory instead of being copied into the pickle stream, and ``bytes`` / ``bytearray`` values of
at least :data:`OUT_OF_BAND_MIN` bytes are taken out of band too (as persistent ids).  The
pickle stream (the object's structure and small values) is built in memory; the slot is
acquired with ``size=`` the frame's exact total, then the header, the stream, and each
buffer are written with memoryview slice assignment: one copy per buffer, no intermediate
``bytes``.  A frame larger than the slot raises ``ValueError`` naming both sizes.

Reading: :func:`get_object` copies each buffer out of the slot (NumPy arrays come back
writable, in memory they own) and releases the slot before returning.
:func:`get_object_view` keeps the slot: objects built from out-of-band buffers (NumPy
arrays, PickleBuffers, which come back as read-only memoryviews) alias the slot and are
read-only; ``bytes`` and ``bytearray`` values are copies (those types own their memory).
Leaving the block releases the slot and the views it handed out; an array still alive then
keeps pointing at the slot, which the producer will overwrite.

Frame (all integers little-endian; offsets from the start of the slot; every buffer starts
8-aligned)::

    offset  0  4s   magic        b"CTOB"
    offset  4  u16  version      1
    offset  6  u16  reserved     0
    offset  8  u32  n_oob        out-of-band pickle buffers (protocol 5 NEXT_BUFFER order)
    offset 12  u32  n_pid        bytes/bytearray payloads referenced by persistent id
    offset 16  u64  pickle_len   length of the pickle stream
    offset 24  table             (n_oob + n_pid) entries of {u64 offset, u64 length}:
                                 first the n_oob pickle buffers, then the n_pid payloads
               pickle stream     pickle_len bytes at offset 24 + 16 * (n_oob + n_pid)
               buffers           each at its table offset (8-aligned, zero padding between)

A persistent id in the stream is an int ``k``: table entry ``n_oob + (k >> 1)``, rebuilt
as ``bytes`` (``k & 1 == 0``) or ``bytearray`` (``k & 1 == 1``).  The producer commits
exactly the frame's length: the end of the last buffer (or of the stream).  A consumer
checks the magic, the version and that every table entry lies inside the committed bytes
(:class:`~ctshm.ring.CorruptRingError` otherwise, naming the message).
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any, Final, Optional

from .ring import (
    ConsumerGuard,
    CorruptRingError,
    Crashed,
    Data,
    Finished,
    ProducerCrashed,
    ProducerGuard,
    RingFinished,
    ShmTraceRing,
)

__all__ = ["HEADER", "MAGIC", "OUT_OF_BAND_MIN", "VERSION", "ObjectView", "aget_object",
           "aget_object_view", "aput_object", "decode", "get_object", "get_object_view",
           "put_object"]

MAGIC: Final = b"CTOB"
VERSION: Final = 1
#: The fixed part of a frame (magic .. pickle_len).
HEADER: Final = 24
#: ``bytes`` / ``bytearray`` values this long or longer go out of band (copied once).
OUT_OF_BAND_MIN: Final = 1024

_HEAD: Final = struct.Struct("<4sHHIIQ")
_ENTRY: Final = struct.Struct("<QQ")


#: A plain ``pickle.dumps`` stream longer than this is redone with large bytes out of band.
_IN_BAND_MAX: Final = 64 * 1024


def _has_large_bytes(obj: Any) -> bool:
    """A large bytes/bytearray within two levels of dict/list/tuple nesting (or a container
    too large to walk: the Pickler subclass then decides per object)?  One loop, no call
    per level: it runs for every object put."""
    t = type(obj)
    if t in _BYTES:
        return len(obj) >= OUT_OF_BAND_MIN
    if t not in _CONTAINERS:
        return False
    if len(obj) > 64:
        return True
    for v in (obj.values() if t is dict else obj):
        tv = type(v)
        if tv in _BYTES:
            if len(v) >= OUT_OF_BAND_MIN:
                return True
        elif tv in _CONTAINERS:
            if len(v) > 64:
                return True
            for x in (v.values() if tv is dict else v):
                if type(x) in _BYTES and len(x) >= OUT_OF_BAND_MIN:
                    return True
    return False


_BYTES: Final = (bytes, bytearray)
_CONTAINERS: Final = (dict, list, tuple)


def _align8(n: int) -> int:
    return (n + 7) & ~7


class _Pickler(pickle.Pickler):
    """Protocol 5; large bytes/bytearray become persistent ids (C picklers never offer exact
    ``bytes`` to ``reducer_override``, but they do ask ``persistent_id`` about every object)."""

    def __init__(self, file: Any, raws: list[memoryview], pids: list[memoryview]) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._oob)
        self._raws = raws
        self._pids = pids

    def _oob(self, pb: pickle.PickleBuffer) -> bool:
        self._raws.append(pb.raw())
        return False  # out of band

    def persistent_id(self, obj: Any) -> Optional[int]:
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= OUT_OF_BAND_MIN:
            k = len(self._pids)
            self._pids.append(memoryview(obj))
            return (k << 1) | (t is bytearray)
        return None


class _Encoded:
    """An object pickled, with its frame's geometry; ``write`` fills a slot."""

    __slots__ = ("_n", "offsets", "raws", "stream", "total")

    def __init__(self, obj: Any, stream: Any = None, pbs: Optional[list[Any]] = None
                 ) -> None:
        """``stream``/``pbs``: a plain ``pickle.dumps`` of ``obj`` already made (and the
        PickleBuffers it gave out of band), when it needs no second look."""
        raws: list[memoryview] = []
        pids: list[memoryview] = []
        if stream is not None:
            raws = [pb.raw() for pb in pbs or ()]
        elif not _has_large_bytes(obj):
            # Plain dumps (a third of a Pickler subclass's cost for small objects); bytes
            # found in band are small unless hidden deeper than the walk looked.
            stream = pickle.dumps(obj, 5, buffer_callback=lambda pb: raws.append(pb.raw()))
            if len(stream) > _IN_BAND_MAX:
                stream = None
                for r in raws:
                    r.release()
                raws = []
        if stream is None:
            f = io.BytesIO()
            _Pickler(f, raws, pids).dump(obj)
            stream = f.getbuffer()
        self.stream: memoryview = memoryview(stream)
        self.raws = raws + pids
        self._n = (len(raws), len(pids))
        end = HEADER + _ENTRY.size * len(self.raws) + len(self.stream)
        off = _align8(end)
        offsets = []
        for r in self.raws:
            offsets.append(off)
            end = off + r.nbytes
            off = _align8(end)
        self.offsets = offsets
        self.total = end

    def small_frame(self) -> Optional[bytes]:
        """The whole frame as bytes when it has no out-of-band buffer (for ``ring.put``)."""
        if self.raws:
            return None
        return _HEAD.pack(MAGIC, VERSION, 0, 0, 0, len(self.stream)) + self.stream

    def write(self, buf: memoryview) -> None:
        n_oob, n_pid = self._n
        _HEAD.pack_into(buf, 0, MAGIC, VERSION, 0, n_oob, n_pid, len(self.stream))
        pos = HEADER
        for off, r in zip(self.offsets, self.raws):
            _ENTRY.pack_into(buf, pos, off, r.nbytes)
            pos += _ENTRY.size
        buf[pos:pos + len(self.stream)] = self.stream
        pos += len(self.stream)
        for off, r in zip(self.offsets, self.raws):
            if off > pos:
                buf[pos:off] = bytes(off - pos)  # zero padding (< 8 bytes)
            buf[off:off + r.nbytes] = r  # the one copy: object memory -> shared memory
            pos = off + r.nbytes

    def release(self) -> None:
        for r in self.raws:
            r.release()
        self.stream.release()


def _encode(ring: ShmTraceRing, obj: Any, what: str, stream: Any = None,
            pbs: Optional[list[Any]] = None) -> _Encoded:
    try:
        enc = _Encoded(obj, stream, pbs)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise _pickle_error(ring, obj, what, e) from e
    if enc.total > ring.slot_size:
        enc.release()
        raise ValueError(f"ring {ring.name!r}: {what}(): the {type(obj).__name__} takes "
                         f"{enc.total} bytes pickled (frame included), more than a slot of "
                         f"{ring.slot_size} bytes; create the ring with a larger slot_size")
    return enc


def _fill(enc: _Encoded, g: ProducerGuard) -> None:
    try:
        enc.write(g.buf)
    except BaseException:
        g.abort()
        raise
    finally:
        enc.release()
    g.commit(enc.total)


def _pickle_error(ring: ShmTraceRing, obj: Any, what: str, e: Exception) -> Exception:
    return type(e)(f"ring {ring.name!r}: {what}(): cannot pickle {type(obj).__name__}: {e}")


_dumps: Final = pickle.dumps


def put_object(ring: ShmTraceRing, obj: Any, timeout: Optional[float] = None) -> None:
    """Pickle ``obj`` (protocol 5, large buffers out of band) into one slot and commit it.
    ``TimeoutError`` when no slot is free within ``timeout`` seconds (None: no bound);
    ``ValueError`` when the pickled object does not fit a slot."""
    stream: Any = None
    pbs: Optional[list[Any]] = None
    if not _has_large_bytes(obj):  # the common case: one plain pickling, in band
        pbs = []
        try:
            stream = _dumps(obj, 5, buffer_callback=pbs.append)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise _pickle_error(ring, obj, "put_object", e) from e
        if not pbs and len(stream) + HEADER <= ring.slot_size:
            ring.put(_HEAD.pack(MAGIC, VERSION, 0, 0, 0, len(stream)) + stream, timeout)
            return
        if len(stream) > _IN_BAND_MAX:  # large bytes deeper than the walk: out of band
            stream = pbs = None
    enc = _encode(ring, obj, "put_object", stream, pbs)
    small = enc.small_frame()
    if small is not None:
        enc.release()
        ring.put(small, timeout)
        return
    try:
        g = ring.acquire(timeout, size=enc.total)
    except BaseException:
        enc.release()
        raise
    _fill(enc, g)


async def aput_object(ring: ShmTraceRing, obj: Any, timeout: Optional[float] = None) -> None:
    """:func:`put_object` for asyncio (pickling runs on the loop; the wait does not).
    A cancelled call publishes nothing."""
    from .aio import aacquire

    enc = _encode(ring, obj, "aput_object")
    small = enc.small_frame()
    if small is not None:
        enc.release()
        from .aio import aput

        await aput(ring, small, timeout)
        return
    try:
        g = await aacquire(ring, timeout, size=enc.total)
    except BaseException:
        enc.release()
        raise
    _fill(enc, g)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _frame(buf: memoryview, name: str, index: int
           ) -> tuple[memoryview, list[memoryview], list[memoryview]]:
    """(stream, oob buffers, pid payloads) as views of ``buf``, after checking bounds."""
    size = len(buf)

    def bad(why: str) -> CorruptRingError:
        return CorruptRingError(f"ring {name!r}: message {index} is not a ctshm object frame "
                                f"({why}; {size} bytes committed)")

    if size < HEADER:
        raise bad(f"shorter than the {HEADER}-byte header")
    magic, version, _, n_oob, n_pid, plen = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise bad(f"magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise bad(f"version {version}, this ctshm reads version {VERSION}")
    n = n_oob + n_pid
    start = HEADER + _ENTRY.size * n
    if start + plen > size:
        raise bad(f"the table and a {plen}-byte pickle stream end beyond the message")
    views = []
    for i in range(n):
        off, length = _ENTRY.unpack_from(buf, HEADER + _ENTRY.size * i)
        if off + length > size:
            raise bad(f"buffer {i} ({length} bytes at offset {off}) ends beyond the message")
        views.append(buf[off:off + length])
    return buf[start:start + plen], views[:n_oob], views[n_oob:]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, buffers: list[Any], pids: list[memoryview]) -> None:
        super().__init__(file, buffers=buffers)
        self._pids = pids

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is not int or not 0 <= (pid >> 1) < len(self._pids):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r} in a ctshm object "
                                         "frame")
        v = self._pids[pid >> 1]
        return bytearray(v) if pid & 1 else bytes(v)


def decode(buf: memoryview, copy: bool = True, *, name: str = "?", index: int = -1) -> Any:
    """Unpickle one frame held in ``buf`` (a slot's committed bytes).  ``copy=True``: every
    buffer is copied out (the result does not refer to ``buf``); ``copy=False``: out-of-band
    buffers are passed as read-only views of ``buf`` (the result aliases it)."""
    stream, oob, pids = _frame(buf, name, index)
    buffers: list[Any] = [bytearray(v) for v in oob] if copy else oob
    try:
        if pids:
            return _Unpickler(io.BytesIO(stream), buffers, pids).load()
        return pickle.loads(stream, buffers=buffers)
    finally:
        stream.release()
        for v in pids:
            v.release()
        if copy:
            for v in oob:
                v.release()


def _data(ring: ShmTraceRing, r: Any, timeout: Optional[float]) -> ConsumerGuard:
    if type(r) is Data:
        g: ConsumerGuard = r.guard
        return g
    if type(r) is Finished:
        raise RingFinished(f"ring {ring.name!r} is finished")
    if isinstance(r, Crashed):
        raise ProducerCrashed(r)
    raise TimeoutError(f"ring {ring.name!r}: no message within {timeout} s")


def _owned(ring: ShmTraceRing, g: ConsumerGuard) -> Any:
    try:
        buf = g.buf
        if len(buf) >= HEADER:  # the common case first: no buffer out of band
            magic, version, _, n_oob, n_pid, plen = _HEAD.unpack_from(buf, 0)
            if (not n_oob and not n_pid and magic == MAGIC and version == VERSION
                    and HEADER + plen <= len(buf)):
                stream = buf[HEADER:HEADER + plen]
                try:
                    return pickle.loads(stream)
                finally:
                    stream.release()
        return decode(buf, True, name=ring.name, index=g.index)
    finally:
        g.release()


def get_object(ring: ShmTraceRing, timeout: Optional[float] = None) -> Any:
    """The next message unpickled, owning its memory (the slot is released on return).
    ``RingFinished`` at the end, ``ProducerCrashed`` on a crash, ``TimeoutError`` on
    timeout, ``CorruptRingError`` if the message is not an object frame.  Unpickling runs
    code chosen by the producer: trusted peers only."""
    r = ring.access(timeout)
    return _owned(ring, r.guard if type(r) is Data else _data(ring, r, timeout))


async def aget_object(ring: ShmTraceRing, timeout: Optional[float] = None) -> Any:
    """:func:`get_object` for asyncio."""
    from .aio import aaccess

    return _owned(ring, _data(ring, await aaccess(ring, timeout), timeout))


class ObjectView:
    """A message unpickled zero-copy, holding its slot: ``with view as obj:``.

    ``obj`` (also ``view.object``) is valid until :meth:`release` (the end of the ``with``
    block); its out-of-band buffers (NumPy arrays, PickleBuffers) are read-only views of the
    slot.  Dropping the view releases the slot too.
    """

    __slots__ = ("_guard", "_object", "_views")

    def __init__(self, ring: ShmTraceRing, guard: ConsumerGuard) -> None:
        self._guard: Optional[ConsumerGuard] = guard
        self._views: list[memoryview] = []
        try:
            self._object = self._load(ring, guard)
        except BaseException:
            self.release()
            raise

    def _load(self, ring: ShmTraceRing, g: ConsumerGuard) -> Any:
        stream, oob, pids = _frame(g.buf, ring.name, g.index)
        self._views = oob
        try:
            if pids:
                return _Unpickler(io.BytesIO(stream), list(oob), pids).load()
            return pickle.loads(stream, buffers=oob)
        finally:
            stream.release()
            for v in pids:
                v.release()

    @property
    def buf(self) -> memoryview:
        """The slot's committed bytes (the frame), read-only."""
        if self._guard is None:
            raise ValueError("ObjectView was released")
        return self._guard.buf

    @property
    def object(self) -> Any:
        if self._guard is None:
            raise ValueError("ObjectView was released: its object's buffers are gone")
        return self._object

    def release(self) -> None:
        """Release the views handed out and the slot.  Idempotent."""
        g, self._guard = self._guard, None
        self._object = None
        for v in self._views:
            try:
                v.release()
            except BufferError:  # exported further (e.g. a NumPy array still alive)
                pass
        self._views = []
        if g is not None:
            g.release()

    def __enter__(self) -> Any:
        return self.object

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass

    def __repr__(self) -> str:
        if self._guard is None:
            return "<ObjectView released>"
        return f"<ObjectView {type(self._object).__name__} message={self._guard.index}>"


def get_object_view(ring: ShmTraceRing, timeout: Optional[float] = None) -> ObjectView:
    """The next message unpickled zero-copy: ``with ring.get_object_view() as obj:``.
    Raises like :func:`get_object`."""
    return ObjectView(ring, _data(ring, ring.access(timeout), timeout))


async def aget_object_view(ring: ShmTraceRing, timeout: Optional[float] = None) -> ObjectView:
    """:func:`get_object_view` for asyncio."""
    from .aio import aaccess

    return ObjectView(ring, _data(ring, await aaccess(ring, timeout), timeout))

