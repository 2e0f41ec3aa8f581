"""ctshm.ShmMemory: lifecycle, cross-process sharing, fork safety and input validation."""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import textwrap
from typing import Callable

import pytest

from ctshm import ShmMemory, libc

from .helpers import (
    IS_PYPY,
    child_write_pattern,
    child_write_pattern_pickled,
    collect_garbage,
    our_shm_entries,
    pattern,
    run_children,
    run_python,
    shm_exists,
)


def _name(id: str) -> str:
    return f"/{id}_m"


def _mapped(name: str) -> bool:
    """True if this process has a mapping of the shm object ``name`` (/proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)  # address perms offset dev inode [path]
            path = fields[5].rstrip("\n") if len(fields) == 6 else ""
            if path == "/dev/shm" + name or path.startswith("/dev/shm" + name + " "):
                return True
    return False


def _count_fds(name: str) -> int:
    """How many descriptors this process has open on the shm object ``name``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == "/dev/shm" + name or target.startswith("/dev/shm" + name + " "):
            n += 1
    return n


def _fd_open_on(name: str) -> bool:
    return _count_fds(name) > 0


# ---------------------------------------------------------------------------------------------
# Sharing between processes
# ---------------------------------------------------------------------------------------------


def test_child_writes_parent_reads_through_the_readonly_creator(shm_id: str) -> None:
    size = 3 * libc.page_size() + 100
    m = ShmMemory.create_readonly(shm_id, size)
    try:
        assert m.readonly and m.size == size and len(m) == size
        assert bytes(m.buf[:16]) == bytes(16)  # new segments read as zeros
        codes = run_children(child_write_pattern, [(shm_id, 100, 9000, 3)])
        assert codes == [0]
        assert bytes(m.buf[100:9100]) == pattern(9000, 3)
        assert bytes(m.buf[:100]) == bytes(100)
        assert bytes(m.buf[9100:]) == bytes(size - 9100)
    finally:
        m.close()
    assert not shm_exists(_name(shm_id))


def test_pickled_memory_reopens_by_name_in_a_spawned_child(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 8192)
    try:
        codes = run_children(child_write_pattern_pickled, [(m, 10, 4000, 11)])
        assert codes == [0]
        assert bytes(m.buf[10:4010]) == pattern(4000, 11)
        assert shm_exists(_name(shm_id))  # the child's opener did not unlink
    finally:
        m.close()
    assert not shm_exists(_name(shm_id))


def test_pickle_round_trip_opens_the_same_object(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    try:
        other = pickle.loads(pickle.dumps(m))
        assert isinstance(other, ShmMemory)
        assert other.name == m.name == _name(shm_id)
        assert not other.readonly and other.size == 4096
        other.buf[:5] = b"hello"
        assert bytes(m.buf[:5]) == b"hello"
        other.close()
        assert shm_exists(m.name)
    finally:
        m.close()


def test_pickling_a_closed_memory_is_an_error(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(m)


def test_opener_shares_the_creators_memory(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096) as m:
        o = ShmMemory.open_readwrite(shm_id)
        try:
            assert not o.readonly and o.size == 4096
            o.buf[4000:4096] = pattern(96, 5)
            assert bytes(m.buf[4000:]) == pattern(96, 5)
            assert o.address != m.address  # two mappings of one object
        finally:
            o.close()


_WRITE_READONLY = textwrap.dedent("""
    import ctypes, sys
    from ctshm import ShmMemory
    m = ShmMemory.create_readonly(sys.argv[1], 4096)
    results = []
    attempts = [
        lambda: m.buf.__setitem__(0, 1),
        lambda: m.buf.__setitem__(slice(0, 2), b"ab"),
        lambda: m.buf[100:200].__setitem__(0, 1),
        lambda: m.buf.cast("Q").__setitem__(0, 1),
        lambda: ctypes.c_char.from_buffer(m.buf),
        lambda: (ctypes.c_char * 16).from_buffer(m.buf[16:32]),
    ]
    for attempt in attempts:
        try:
            attempt()
            results.append("wrote")
        except TypeError:
            results.append("TypeError")
    assert m.buf.readonly
    print("RESULTS", results, bytes(m.buf[:4]))
    m.close()
""")


def test_writing_to_the_readonly_buf_raises_type_error(shm_id: str) -> None:
    # In a subprocess: if a write reached the read-only mapping it would die of SIGSEGV.
    r = run_python(_WRITE_READONLY.replace("sys.argv[1]", repr(shm_id)))
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stderr}"
    # PyPy's ctypes from_buffer() never checks readonly (a PyPy limit, README "Platforms"):
    # it returns an object for the last two attempts; nothing is written (the bytes check).
    expected = ["TypeError"] * 4 + (["wrote"] * 2 if IS_PYPY else ["TypeError"] * 2)
    assert r.stdout == "RESULTS " + str(expected) + " b'\\x00\\x00\\x00\\x00'\n"


# ---------------------------------------------------------------------------------------------
# close / unlink / keep_on_drop
# ---------------------------------------------------------------------------------------------


def test_creator_close_unlinks_and_is_idempotent(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    assert shm_exists(m.name) and not m.closed
    assert _count_fds(m.name) == 1 and _mapped(m.name)
    m.close()
    assert m.closed and not shm_exists(m.name)
    m.close()
    m.close()
    assert not _fd_open_on(m.name)
    if IS_PYPY:  # no reference counting: the Mapping goes at the next collection
        collect_garbage()
    assert not _mapped(m.name)


def test_use_after_close_raises_value_error(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.buf  # noqa: B018
    with pytest.raises(ValueError, match="closed"):
        len(m)
    with pytest.raises(ValueError, match="closed"):
        m.address  # noqa: B018
    with pytest.raises(ValueError, match="closed"):
        m.fileno()
    with pytest.raises(ValueError, match="closed"), m:
        pass


def test_views_taken_before_close_stay_readable(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 8192)
    o = ShmMemory.open_readwrite(shm_id)
    o.buf[:8192] = pattern(8192, 1)
    whole, part = m.buf, m.buf[1000:3000]
    rw_whole, rw_part = o.buf, o.buf[4096:]
    m.close()
    o.close()
    assert not shm_exists(_name(shm_id))
    assert bytes(part) == pattern(8192, 1)[1000:3000]
    assert bytes(whole) == pattern(8192, 1)
    rw_part[:3] = b"xyz"  # the opener's views stay writable too
    assert bytes(rw_whole[4096:4099]) == b"xyz"
    assert bytes(whole[4096:4099]) == b"xyz"  # still the same shared pages
    assert _mapped(_name(shm_id))
    del whole, part, rw_whole, rw_part
    collect_garbage()
    assert not _mapped(_name(shm_id)), "the mapping outlived its last view"


def test_creator_unlinks_on_garbage_collection(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    name = m.name
    assert shm_exists(name)
    del m
    gc.collect()
    assert not shm_exists(name)
    assert not _fd_open_on(name)


def test_keep_on_drop(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.keep_on_drop()
    assert "keeps name" in repr(m)
    m.close()
    assert shm_exists(_name(shm_id))
    m2 = ShmMemory.create_readonly(shm_id, 4096, replace=True)
    m2.keep_on_drop()
    del m2
    gc.collect()
    assert shm_exists(_name(shm_id))
    o = ShmMemory.open_readwrite(shm_id)  # still usable by name
    o.close()
    ShmMemory.unlink_id(shm_id)
    assert not shm_exists(_name(shm_id))


def test_opener_never_unlinks(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096):
        o = ShmMemory.open_readwrite(shm_id)
        assert "opener" in repr(o) and "keeps name" in repr(o)
        o.close()
        assert shm_exists(_name(shm_id))
        o2 = ShmMemory.open_readwrite(shm_id)
        del o2
        gc.collect()
        assert shm_exists(_name(shm_id))
    assert not shm_exists(_name(shm_id))


def test_explicit_unlink(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.unlink()
    assert not shm_exists(m.name)
    assert len(m.buf) == 4096  # still mapped and usable
    with pytest.raises(FileNotFoundError):
        m.unlink()
    m.close()
    with pytest.raises(FileNotFoundError) as info:
        ShmMemory.unlink_id(shm_id)
    assert info.value.filename == _name(shm_id)


def test_a_stale_creator_leaves_its_successor_alone(shm_id: str) -> None:
    old = ShmMemory.create_readonly(shm_id, 4096)
    old_view = old.buf[:4]
    new = ShmMemory.create_readonly(shm_id, 8192, replace=True)
    try:
        old.close()  # same name, different object: must not unlink the successor
        assert shm_exists(new.name)
        old2 = ShmMemory.create_readonly(f"{shm_id}g", 4096)
        successor2 = ShmMemory.create_readonly(f"{shm_id}g", 4096, replace=True)
        del old2  # the garbage-collection path, same rule
        gc.collect()
        assert shm_exists(successor2.name)
        successor2.close()
        o = ShmMemory.open_readwrite(shm_id)
        assert o.size == 8192  # the opener found the successor
        o.buf[:4] = b"new!"
        o.close()
        assert bytes(new.buf[:4]) == b"new!"
        assert bytes(old_view) == bytes(4)  # the old object is a different one
    finally:
        new.close()
    assert not shm_exists(_name(shm_id))


_FORK_CHILD = textwrap.dedent("""
    import gc, multiprocessing, os, sys
    from ctshm import ShmMemory
    how = {how!r}
    m = ShmMemory.create_readonly({id!r}, 4096)

    def child():
        if how == "close":
            m.close()
        elif how == "gc":
            globals().pop("m")
            gc.collect()

    if how == "mp-fork":
        p = multiprocessing.get_context("fork").Process(target=child)
        p.start()
        p.join(30)
        code = p.exitcode
    else:
        pid = os.fork()
        if pid == 0:
            child()
            if how == "os._exit":
                os._exit(0)
            sys.exit(0)  # interpreter shutdown: atexit, finalizers, module teardown
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    exists = os.path.exists("/dev/shm" + m.name)
    m.close()
    print("CHILD", code, "EXISTS", exists, "AFTER", os.path.exists("/dev/shm" + m.name))
""")


@pytest.mark.parametrize("how", ["os._exit", "sys.exit", "close", "gc", "mp-fork"])
def test_forked_child_exit_leaves_the_object(shm_id: str, how: str) -> None:
    r = run_python(_FORK_CHILD.format(how=how, id=shm_id))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "CHILD 0 EXISTS True AFTER False\n", r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# Names and sizes
# ---------------------------------------------------------------------------------------------


def test_create_existing_name_is_file_exists(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096) as m:
        with pytest.raises(FileExistsError) as info:
            ShmMemory.create_readonly(shm_id, 4096)
        assert info.value.filename == _name(shm_id)
        assert "replace=True" in str(info.value)
        assert shm_exists(m.name)  # the failed attempt did not unlink the original
    assert not shm_exists(_name(shm_id))


def test_replace_when_nothing_exists(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096, replace=True)
    assert shm_exists(m.name)
    m.close()
    assert not shm_exists(m.name)


def test_open_missing_is_file_not_found_with_the_name(shm_id: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        ShmMemory.open_readwrite(shm_id)
    assert info.value.filename == _name(shm_id)


def test_leading_slash_is_not_doubled(shm_id: str) -> None:
    m = ShmMemory.create_readonly("/" + shm_id, 4096)
    try:
        assert m.name == _name(shm_id)
        o = ShmMemory.open_readwrite(shm_id)
        o.close()
    finally:
        m.close()


def test_odd_sizes(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 100) as m:
        assert len(m) == 100 and len(m.buf) == 100 and m.size == 100
        o = ShmMemory.open_readwrite(shm_id)
        assert o.size == 100 and len(o.buf) == 100
        o.close()


def test_opening_an_unsized_object(shm_id: str) -> None:
    name = _name(shm_id)
    fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
    try:
        with pytest.raises(ValueError, match="size 0"):
            ShmMemory.open_readwrite(shm_id)
        assert _count_fds(name) == 1  # only our own: the failed open closed its descriptor
    finally:
        os.close(fd)
        libc.shm_unlink(name)


def test_longest_id_that_fits(shm_id: str) -> None:
    # The longest a creator may use leaves room for its owner record (test_segment_owner);
    # open_readwrite takes the longest name there is (a segment the Rust original made).
    assert libc.IS_LINUX, "written for Linux's NAME_MAX (255, slash not counted)"
    id = shm_id + "x" * (libc.NAME_MAX - 2 - len(shm_id))  # "/" + id + "_m": 255 + slash
    fd = libc.shm_open(_name(id), libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
    try:
        libc.ftruncate(fd, 4096, _name(id))
        m = ShmMemory.open_readwrite(id)
        assert len(m.name) == libc.NAME_MAX + 1
        assert m.size == 4096
        m.close()
    finally:
        os.close(fd)
        libc.shm_unlink(_name(id))


def test_too_long_id(shm_id: str) -> None:
    id = shm_id + "x" * (libc.NAME_MAX - 1 - len(shm_id))  # one byte too many
    makers: list[Callable[[], ShmMemory]] = [lambda: ShmMemory.create_readonly(id, 4096),
                                             lambda: ShmMemory.open_readwrite(id)]
    for make in makers:
        with pytest.raises(ValueError) as info:
            make()
        msg = str(info.value)
        assert "too long" in msg and str(libc.NAME_MAX) in msg and "shorter" in msg, msg
    assert not our_shm_entries() & {id + "_m"}


@pytest.mark.parametrize(("suffix", "match"), [
    ("\0x", "NUL"),
    ("/x", "contains '/'"),
])
def test_bad_id_characters(shm_id: str, suffix: str, match: str) -> None:
    makers: list[Callable[[], ShmMemory]] = [
        lambda: ShmMemory.create_readonly(shm_id + suffix, 4096),
        lambda: ShmMemory.open_readwrite(shm_id + suffix)]
    for make in makers:
        with pytest.raises(ValueError, match=match):
            make()


@pytest.mark.parametrize("bad", ["", "/"])
def test_empty_id(bad: str) -> None:
    before = set(os.listdir("/dev/shm"))
    makers: list[Callable[[], ShmMemory]] = [lambda: ShmMemory.create_readonly(bad, 4096),
                                             lambda: ShmMemory.open_readwrite(bad)]
    for make in makers:
        with pytest.raises(ValueError, match="empty"):
            make()
    assert "_m" not in set(os.listdir("/dev/shm")) - before


@pytest.mark.parametrize("bad", [b"abc", 5, None, ["a"]], ids=["bytes", "int", "None", "list"])
def test_non_str_id_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        ShmMemory.create_readonly(bad, 4096)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        ShmMemory.open_readwrite(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "error", "match"), [
    (0, ValueError, "> 0"),
    (-1, ValueError, "> 0"),
    (-(2**70), ValueError, "> 0"),
    (True, TypeError, "must be an int"),
    (4096.0, TypeError, "must be an int"),
    ("4096", TypeError, "must be an int"),
    (None, TypeError, "must be an int"),
    (2**63, ValueError, "2\\*\\*63-1"),
    (2**200, ValueError, "2\\*\\*63-1"),
])
def test_bad_sizes(shm_id: str, size: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ShmMemory.create_readonly(shm_id, size)  # type: ignore[arg-type]
    assert not shm_exists(_name(shm_id))


@pytest.mark.parametrize("size", [2**63 - 1, 2**62, 2**47 * 1000])
def test_valid_size_that_cannot_be_mapped(shm_id: str, size: int) -> None:
    with pytest.raises((OSError, ValueError)):
        ShmMemory.create_readonly(shm_id, size)
    assert not shm_exists(_name(shm_id))
    assert not _fd_open_on(_name(shm_id))


def test_repr(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    r = repr(m)
    for part in (_name(shm_id), "size=4096", "read-only", "creator", "unlinks on close"):
        assert part in r, r
    o = ShmMemory.open_readwrite(shm_id)
    for part in (_name(shm_id), "read-write", "opener", "keeps name"):
        assert part in repr(o), repr(o)
    o.close()
    m.close()
    assert repr(m) == f"<ShmMemory {_name(shm_id)!r} closed>"


def test_fileno_and_address(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096) as m:
        st = os.fstat(m.fileno())
        assert st.st_size == 4096
        assert m.address % libc.page_size() == 0
        assert ctypes.string_at(m.address, 4) == bytes(m.buf[:4])


def test_reading_slices_of_read_only_views_is_cheap(shm_id: str) -> None:
    # PyPy copied the whole buffer on every struct.unpack_from from a slice of a
    # toreadonly() view (~10 ms for 64 KiB): 2,000 reads took ~20 s instead of ~1 ms.
    import struct
    import time

    from ctshm import ShmTraceRing

    u32 = struct.Struct("<I").unpack_from
    with ShmMemory.create_readonly(shm_id, 1 << 16) as m, \
            ShmTraceRing.create(shm_id + "r", 2, 1 << 16) as ring:
        ring.put(bytes(1 << 16))
        g = ring.access(timeout=5).guard  # type: ignore[union-attr]
        for view in (m.buf[8:], g.buf[8:]):
            assert view.readonly
            t = time.perf_counter()
            for i in range(2000):
                u32(view, (i * 8) % 60000)
            assert time.perf_counter() - t < 1.0, "slices of read-only views are slow"
        g.release()
