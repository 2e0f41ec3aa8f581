"""The guards the ring hands out: :class:`ProducerGuard` (a slot being written) and
:class:`ConsumerGuard` (a slot being read).

A guard holds its ring, the message index and a view of the slot; it finishes through the
ring (``commit``/``abort``/``release`` call the ring's protocol) and its finalizer finishes a
dropped guard.  A guard made before a fork is the parent's: in the child it is inert
(finalizers do nothing; commit/abort/release refuse), since the slot belongs to the parent's
registration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Optional, TypeVar

from . import _fork, _userwarn, _viewcheck

if TYPE_CHECKING:
    from .ring import ShmTraceRing

__all__ = ["STALE", "ConsumerGuard", "ProducerGuard"]

_EMPTY: Final = memoryview(b"")
#: A guard's ``_done`` when it ended with a view of its ``buf`` still exported (warned).
STALE: Final = "ended, with a view of its buf still exported"

_G = TypeVar("_G", bound="_Guard")


class _Guard:
    """What both guards share: the ring, the message index, the view, done-ness, and the
    pid that made them (in a forked child they are inert: finalizers do nothing, and
    commit/abort/release refuse, since the slot belongs to the parent's registration)."""

    __slots__ = ("__weakref__", "_buf", "_done", "_pid", "_ring", "index")
    _DONE_TEXT = "was already committed or aborted"

    def __init__(self, ring: ShmTraceRing, index: int, buf: memoryview) -> None:
        self._ring = ring
        self.index = index
        self._buf = buf
        self._done: object = False  # True, or STALE: ended with its view exported (warned)
        self._pid = _fork.PID

    def _view(self) -> memoryview:
        if self._done:
            raise ValueError(f"{type(self).__name__} for message {self.index} of "
                             f"{self._ring.name!r} {self._DONE_TEXT}")
        return _viewcheck.own_view(self) if _viewcheck.ENABLED else self._buf

    def __enter__(self: _G) -> _G:
        return self

    def _finish(self) -> None:
        """Done: drop and release the view (under the ring lock); STALE if it is exported.
        (``ShmTraceRing._complete`` does the same inline: the consumer's hot path.)"""
        self._done = True
        buf, self._buf = self._buf, _EMPTY
        try:
            buf.release()
        except BufferError:
            self._done = STALE
        if _viewcheck.ENABLED and _viewcheck.leftover(self):  # python -X dev
            self._done = STALE

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} for message {self.index} of "
                        f"{self._ring.name!r} cannot be pickled: it holds a slot of shared "
                        "memory mapped in this process; send bytes(guard.buf) instead (the "
                        "other process can also open the ring by its id)")

    def _check_here(self, what: str) -> None:
        if self._pid != _fork.PID:
            raise RuntimeError(
                f"{type(self).__name__} for message {self.index} of {self._ring.name!r} was "
                f"taken by pid {self._pid}; this forked child (pid {_fork.PID}) cannot {what} it "
                "(nothing shared was changed): only the process that took a slot finishes it")


class ProducerGuard(_Guard):
    """A slot being written.  ``commit(nbytes)`` publishes it, ``abort()`` gives it back.

    As a context manager it commits the whole slot on normal exit (unless already committed
    or aborted) and aborts on an exception.  Dropping an unfinished guard aborts it.
    ``len(guard)`` is the ``size`` given to ``acquire`` (default: the whole slot).
    """

    __slots__ = ("size",)

    def __init__(self, ring: ShmTraceRing, index: int, buf: memoryview) -> None:
        super().__init__(ring, index, buf)
        self.size = len(buf)

    @property
    def buf(self) -> memoryview:
        """Writable view of the slot (``size`` bytes as given to acquire; default the whole
        slot)."""
        if self._ring._closed and not self._done:
            raise ValueError(self._closed_text("buf"))
        return self._view()

    def __len__(self) -> int:
        return self.size

    def _closed_text(self, what: str) -> str:
        then = ("the guard is aborted" if what == "commit()" else
                "abort() the guard, or drop it, to free the producer turn")
        return (f"ring {self._ring.name!r} was closed: {what} of {self!r} is refused and "
                f"nothing was published ({then})")

    def commit(self, nbytes: Optional[int] = None) -> None:
        """Publish the first ``nbytes`` bytes of the view (default: all of it)."""
        self._check_here("commit")
        self._view()  # raises if already committed or aborted
        self._ring._commit(self, nbytes)
        if self._done is STALE:
            _userwarn.stale(self)

    def abort(self) -> None:
        """Give the slot back unpublished.  Idempotent after commit/abort."""
        self._check_here("abort")
        if not self._done:
            self._ring._abort(self)
            if self._done is STALE:
                _userwarn.stale(self)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._done:
            (self.commit if exc_type is None else self.abort)()

    def __del__(self) -> None:
        try:
            if not self._done and self._pid == _fork.PID:
                self._ring._abort(self)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return (f"<ProducerGuard {self._ring.name!r} message={self.index} size={self.size} "
                f"{state}>")


class ConsumerGuard(_Guard):
    """A slot handed to the consumer.  ``buf`` is read-only; ``release()`` hands it back.

    Guards may be released in any order and from any thread; the ring advances ``read_idx``
    in order.  Releasing twice is a no-op; a guard dropped unreleased is released, and its
    ``buf`` stops working then: keep the guard while you read (``with ring.access() ...``),
    or take a copy with ``ring.get()``.
    """

    __slots__ = ()
    _DONE_TEXT = "was released"

    @property
    def buf(self) -> memoryview:
        """Read-only view of the committed bytes (the whole slot for a Rust producer)."""
        if self._done or _viewcheck.ENABLED:  # (the hot path makes no further call)
            return self._view()
        return self._buf

    def __len__(self) -> int:
        return len(self._buf)

    def release(self) -> None:
        """Hand the slot back.  Idempotent, also when two threads race to release."""
        if not self._done:
            if self._pid != _fork.PID:
                self._check_here("release")
            self._ring._complete(self.index, self)
            if self._done is STALE:
                _userwarn.stale(self)

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        # No StaleViewWarning: locals may free the guard before a view (test_guard_views).
        try:
            if not self._done and self._pid == _fork.PID:
                self._ring._complete(self.index, self)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "released" if self._done else f"{len(self._buf)} bytes"
        return f"<ConsumerGuard {self._ring.name!r} message={self.index} {state}>"
