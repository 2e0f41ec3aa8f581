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

Known PyPy limit: PyPy's ``ctypes.X.from_buffer`` does not check ``readonly`` (CPython
raises TypeError), so it accepts a read-only view; writing through what it returns faults.
"""

from __future__ import annotations

import importlib
from typing import Any

_cffi: Any = importlib.import_module("_cffi_backend")  # built into PyPy

_CHARP: Any = _cffi.new_pointer_type(_cffi.new_primitive_type("char"))


def view(addr: int, length: int, owner: Any, readonly: bool) -> memoryview:
    """A ``memoryview`` (format ``B``) of ``length`` bytes at ``addr`` that keeps ``owner``
    alive while it or any slice of it exists."""

    def _keep(_p: Any, _owner: Any = owner) -> None:
        pass

    ptr = _cffi.gcp(_cffi.cast(_CHARP, addr), _keep)
    mv = memoryview(_cffi.buffer(ptr, length))
    if mv.format != "B":
        mv = mv.cast("B")
    return mv.toreadonly() if readonly else mv
