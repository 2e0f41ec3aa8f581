"""PyPy-only: views over a mapping, through PyPy's built-in ``_cffi_backend``.

On PyPy a memoryview over a ctypes array works, but its *slices* do not:

* PyPy refuses them as writable buffers (``struct.pack_into(view[8:], ...)``,
  ``file.readinto(view[:n])`` raise "a read-write bytes-like object is required, not
  memoryview"), and the ring hands out slices (``acquire(size=n)``);
* a slice references PyPy's raw array, not the ctypes instance, so it does not keep the
  instance (and the Mapping it holds) alive: reading an old slice after ``close()`` and a
  garbage collection touched unmapped memory (SIGSEGV).

A ``_cffi_backend.buffer`` over the same address slices like a bytearray, and its slices
hold the buffer.  ``_cffi_backend`` is part of PyPy itself (ABI mode: nothing is compiled).
The buffer holds its pointer and the pointer's ``gcp`` destructor closure holds the owner
(the Mapping), so a view or any slice of it keeps the mapping mapped.

Read-only views are slices of a second, read-only ``mmap.mmap`` of the same object: on PyPy
a slice of a ``toreadonly()`` view copies the whole underlying buffer on every
``struct.unpack_from`` (~10 ms per call for 64 KiB), which made a RecordReader or a
consumer checking each message stall; slices of a natively read-only mmap cost ~0.4 µs.

Known PyPy limit: PyPy's ``ctypes.X.from_buffer`` does not check ``readonly`` (CPython
raises TypeError), so it accepts a read-only view; writing through what it returns faults.
"""

from __future__ import annotations

import importlib
import mmap
import os
from typing import Any

_cffi: Any = importlib.import_module("_cffi_backend")  # built into PyPy

_CHARP: Any = _cffi.new_pointer_type(_cffi.new_primitive_type("char"))


def _fds_on(ident: tuple[int, int]) -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            out.add(int(name))
    return out


def readonly_map(fd: int, size: int) -> mmap.mmap:
    """A read-only ``MAP_SHARED`` mapping of ``fd`` (Python's mmap: unmapped when the object
    and every view of it are gone).

    ``mmap.mmap`` keeps a private dup of ``fd`` until it is collected, which would hold the
    shm object open after ``close()``; that descriptor is pointed at /dev/null (``dup2``), so
    the mmap object still owns - and eventually closes - a descriptor of its own, but not one
    on the shm object.
    """
    st = os.fstat(fd)
    ident = (st.st_dev, st.st_ino)
    before = _fds_on(ident)
    mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    new = _fds_on(ident) - before
    if len(new) == 1:
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.dup2(null, new.pop(), inheritable=False)
        finally:
            os.close(null)
    return mm


def view(addr: int, length: int, owner: Any, readonly: bool, ro_map: mmap.mmap, offset: int
         ) -> memoryview:
    """A ``memoryview`` (format ``B``) of ``length`` bytes at ``addr`` that keeps ``owner``
    alive while it or any slice of it exists; read-only views are slices of ``ro_map`` at
    ``offset`` instead (they keep that mapping alive)."""
    if readonly:
        return memoryview(ro_map)[offset:offset + length]

    def _keep(_p: Any, _owner: Any = owner) -> None:
        pass

    ptr = _cffi.gcp(_cffi.cast(_CHARP, addr), _keep)
    mv = memoryview(_cffi.buffer(ptr, length))
    return mv if mv.format == "B" else mv.cast("B")
