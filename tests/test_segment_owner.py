"""A segment's owner record (``/X_m_owner``): who created ``ShmMemory`` segments, so that
``ctshm ls`` names the creator, ``gc`` removes a dead creator's segment, ``create`` replaces
it as a ring is replaced, and a segment nobody recorded (the Rust original's, one kept with
``keep_on_drop()``) stays unknown: never replaced, never collected without
``--include-unknown``.

Creators that die are real processes killed with SIGKILL, at every point of a create.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Optional

import pytest

from ctshm import ShmMemory, _owner_record, libc, ops, pytest_plugin

from .helpers import REPO_ROOT, SHM_DIR, collect_garbage, shm_exists
from .test_interop import start_peer
from .test_ops import cli_json, listing, run_cli, shm_entries

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm (Linux)")


def _seg(id: str) -> str:
    return f"/{id}_m"


def _rec(id: str) -> str:
    return f"/{id}_m{_owner_record.SUFFIX}"


# A creator that is killed while it holds the segment, or at a chosen point of create:
# "held" (created, filled with 7s), "before-segment" (the record exists, the segment not yet),
# "before-bind" (both exist, the record does not name the segment yet).
_CREATOR = """
import os, signal, sys
from ctshm import ShmMemory, _owner_record, _shm
id, where = sys.argv[1], sys.argv[2]
def die(*a, **k):
    print(os.getpid(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if where == "before-segment":
    real = _shm.create_exclusive
    def create_exclusive(name, mode, what):
        if name.endswith("_m"):
            die()
        return real(name, mode, what)
    _shm.create_exclusive = create_exclusive
elif where == "before-bind":
    _owner_record.bind = die
m = ShmMemory.create_readwrite(id, 8192)
m.buf[:4] = b"\\x07" * 4
print(os.getpid(), flush=True)
sys.stdin.readline()
"""


def _start_creator(id: str, where: str = "held") -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.Popen([sys.executable, "-c", _CREATOR, id, where], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=REPO_ROOT)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip().isdigit(), f"creator said {line!r}: {p.stderr.read() if p.stderr else ''}"
    return p, int(line)


def _killed_creator(id: str, where: str = "held") -> int:
    """The pid of a creator of ``id`` killed by SIGKILL at ``where``."""
    p, pid = _start_creator(id, where)
    if where == "held":
        p.kill()
    try:
        assert p.wait(60) == -signal.SIGKILL
    finally:
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()
    return pid


def _finish(p: subprocess.Popen[str]) -> None:
    """Let a held creator close its segment and exit."""
    _out, err = p.communicate("\n", timeout=60)
    assert p.returncode == 0, err


# ---------------------------------------------------------------------------------------------
# The record follows the segment
# ---------------------------------------------------------------------------------------------


def test_the_creator_is_recorded_and_both_names_go_on_close(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096) as m:
        assert shm_exists(_rec(shm_id))
        rec = _owner_record.read(_rec(shm_id))
        assert rec is not None and rec.pid == os.getpid() and rec.start > 0
        st = os.stat(SHM_DIR + m.name)
        assert rec.segment == (st.st_dev, st.st_ino)  # it names this very segment
        o = listing(shm_id)
        assert list(o) == [m.name]  # the record is listed with its segment, not alone
        seg = o[m.name]
        assert seg["creator"]["pid"] == os.getpid() and seg["creator"]["alive"] is True
        assert seg["owner_record"] == _rec(shm_id) and seg["state"] is None
        text = run_cli("stat", shm_id).stdout
        assert f"{os.getpid()} (alive)" in text and _rec(shm_id) in text
        # The record's name names its segment (as a semaphore's names its ring).
        assert ops.resolve(_rec(shm_id)) == [("segment", m.name)]
        assert run_cli("stat", _rec(shm_id)).stdout == text
    assert shm_entries(shm_id) == []


def test_garbage_collection_unlink_and_unlink_id_remove_the_record(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    del m  # collected: its finalizer removes both
    collect_garbage()
    assert shm_entries(shm_id) == []
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.unlink()
    assert shm_entries(shm_id) == []
    m.close()
    o = ShmMemory.create_readonly(shm_id + "u", 4096)
    o.keep_on_drop()
    o.close()
    assert shm_entries(shm_id) == [f"{shm_id}u_m"]  # kept: the record went at keep_on_drop
    ShmMemory.create_readonly(shm_id + "v", 4096).keep_on_drop()
    collect_garbage()
    ShmMemory.unlink_id(shm_id + "u")
    ShmMemory.unlink_id(shm_id + "v")
    assert shm_entries(shm_id) == []


def test_a_replaced_creator_leaves_its_successors_record_alone(shm_id: str) -> None:
    old = ShmMemory.create_readonly(shm_id, 4096)
    new = ShmMemory.create_readonly(shm_id, 4096, replace=True)  # live creator: replaced
    try:
        old.close()  # its names are the successor's now: neither is removed
        rec = _owner_record.read(_rec(shm_id))
        st = os.stat(SHM_DIR + new.name)
        assert rec is not None and rec.segment == (st.st_dev, st.st_ino)
    finally:
        new.close()
    assert shm_entries(shm_id) == []


def test_an_opener_never_touches_the_record(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 4096):
        o = ShmMemory.open_readwrite(shm_id)
        o.close()
        del o
        assert shm_exists(_rec(shm_id))


def test_the_longest_creatable_id_leaves_room_for_the_record(shm_id: str) -> None:
    longest = shm_id + "x" * (libc.NAME_MAX - 2 - len(_owner_record.SUFFIX) - len(shm_id))
    with ShmMemory.create_readonly(longest, 4096) as m:
        assert len(_rec(longest)) == libc.NAME_MAX + 1 and shm_exists(_rec(longest))
        o = ShmMemory.open_readwrite(longest)
        assert o.name == m.name
        o.close()
    with pytest.raises(ValueError, match=r"too long.*_m_owner.*shorter id"):
        ShmMemory.create_readonly(longest + "x", 4096)
    assert shm_entries(shm_id) == []


# ---------------------------------------------------------------------------------------------
# A creator killed with SIGKILL
# ---------------------------------------------------------------------------------------------


def test_a_killed_creators_segment_is_abandoned_and_gc_removes_it(shm_id: str) -> None:
    pid = _killed_creator(shm_id)
    seg = listing(shm_id)[_seg(shm_id)]
    assert seg["creator"]["pid"] == pid and seg["creator"]["alive"] is False
    assert seg["state"] == "abandoned"
    assert f"{pid} (dead)" in run_cli("ls", "--prefix", shm_id).stdout
    res = cli_json("gc", "--prefix", shm_id)  # no --include-unknown needed
    assert [(e["kind"], e["name"], e["objects"]) for e in res["removed"]] == [
        ("segment", _seg(shm_id), [_seg(shm_id), _rec(shm_id)])]
    assert res["removed"][0]["reason"] == f"creator pid {pid} is dead"
    assert shm_entries(shm_id) == []


def test_create_replaces_a_killed_creators_segment(shm_id: str) -> None:
    _killed_creator(shm_id)
    with ShmMemory.create_readwrite(shm_id, 4096) as m:  # FileExistsError before
        assert m.size == 4096 and bytes(m.buf[:4]) == bytes(4)  # a new segment
        assert _owner_record.read(_rec(shm_id)).pid == os.getpid()  # type: ignore[union-attr]
    assert shm_entries(shm_id) == []


def test_create_over_a_live_creators_segment_says_whose_it_is(shm_id: str) -> None:
    p, pid = _start_creator(shm_id)
    try:
        for replace in (None, False):
            with pytest.raises(FileExistsError) as info:
                ShmMemory.create_readonly(shm_id, 4096, replace=replace)
            msg = str(info.value)
            assert info.value.filename == _seg(shm_id) and _seg(shm_id) in msg
            assert "ctshm rm" in msg and "replace=True" in msg, msg
            if replace is None:
                assert f"creator (pid {pid}) is alive" in msg, msg
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == [] and res["kept"][0]["reason"] == f"creator pid {pid} is alive"
        r = run_cli("rm", shm_id)
        assert r.returncode == 1 and f"its creator pid {pid} is alive" in r.stderr, r.stderr
        assert shm_exists(_seg(shm_id)) and shm_exists(_rec(shm_id))
    finally:
        _finish(p)
    assert shm_entries(shm_id) == []


def test_replace_false_keeps_a_dead_creators_segment(shm_id: str) -> None:
    _killed_creator(shm_id)
    with pytest.raises(FileExistsError, match=r"exists \(replace=False\)"):
        ShmMemory.create_readonly(shm_id, 4096, replace=False)
    r = run_cli("rm", shm_id)  # nobody uses it: no --force needed
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == [f"removed {_seg(shm_id)}", f"removed {_rec(shm_id)}"]
    assert shm_entries(shm_id) == []


@pytest.mark.parametrize("where", ["before-segment", "before-bind"])
def test_a_creator_killed_inside_create_leaves_what_gc_and_create_clean(shm_id: str,
                                                                        where: str) -> None:
    pid = _killed_creator(shm_id, where)
    objs = listing(shm_id)
    if where == "before-segment":  # the record alone
        assert list(objs) == [_rec(shm_id)]
        o = objs[_rec(shm_id)]
        assert (o["kind"], o["state"]) == ("owner-record", "orphan")
        assert o["state_reason"] == f"creator pid {pid} died before making its segment"
    else:  # the segment, and a record that does not name it yet: its creator died there
        assert list(objs) == [_seg(shm_id)]
        assert objs[_seg(shm_id)]["creator"]["pid"] == pid
    res = cli_json("gc", "--prefix", shm_id, "--dry-run")
    assert [e["name"] for e in res["removed"]] == list(objs)
    with ShmMemory.create_readonly(shm_id, 4096):  # and create goes over it
        pass
    assert shm_entries(shm_id) == []
    _killed_creator(shm_id, where)
    res = cli_json("gc", "--prefix", shm_id)
    assert res["kept"] == [] and len(res["removed"]) == 1
    assert shm_entries(shm_id) == []


# ---------------------------------------------------------------------------------------------
# Segments nobody recorded, records that describe nothing
# ---------------------------------------------------------------------------------------------


def _unrecorded_segment(name: str) -> None:
    """A segment as the Rust original makes one: shm_open, ftruncate, nothing else."""
    fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
    try:
        libc.ftruncate(fd, 4096, name)
    finally:
        os.close(fd)


def test_a_stale_record_is_never_taken_for_a_new_segments_owner(shm_id: str) -> None:
    pid = _killed_creator(shm_id)
    libc.shm_unlink(_seg(shm_id))  # its segment goes (the Rust original's create does this)
    _unrecorded_segment(_seg(shm_id))  # and an unrecorded one takes the name
    objs = listing(shm_id)
    assert objs[_seg(shm_id)]["creator"]["text"] == "unknown (no owner record)"
    assert objs[_seg(shm_id)]["owner_record"] is None
    rec = objs[_rec(shm_id)]
    assert (rec["kind"], rec["state"]) == ("owner-record", "stale")
    with pytest.raises(FileExistsError, match="has no owner record"):
        ShmMemory.create_readonly(shm_id, 4096)
    res = cli_json("gc", "--prefix", shm_id)
    assert [e["name"] for e in res["removed"]] == [_rec(shm_id)]
    assert f"creator pid {pid}" in res["removed"][0]["reason"]
    assert [e["name"] for e in res["kept"]] == [_seg(shm_id)]
    assert "--include-unknown" in res["kept"][0]["reason"]
    libc.shm_unlink(_seg(shm_id))


def test_an_unrecorded_segment_is_unknown_never_replaced_nor_collected(shm_id: str) -> None:
    _unrecorded_segment(_seg(shm_id))
    try:
        assert listing(shm_id)[_seg(shm_id)]["creator"]["text"] == "unknown (no owner record)"
        with pytest.raises(FileExistsError) as info:
            ShmMemory.create_readonly(shm_id, 4096)
        msg = str(info.value)
        assert _seg(shm_id) in msg and "no owner record" in msg, msg
        assert f"python -m ctshm rm {_seg(shm_id)}" in msg and "--include-unknown" in msg
        res = cli_json("gc", "--prefix", shm_id)
        assert res["removed"] == [] and "--include-unknown" in res["kept"][0]["reason"]
        assert shm_entries(shm_id) == [f"{shm_id}_m"]  # nothing was made beside it
        with ShmMemory.create_readonly(shm_id, 4096, replace=True):
            assert shm_exists(_rec(shm_id))
    finally:
        if shm_exists(_seg(shm_id)):
            libc.shm_unlink(_seg(shm_id))
    assert shm_entries(shm_id) == []


def test_a_record_naming_no_creator_blocks_create_with_what_to_do(shm_id: str) -> None:
    fd = libc.shm_open(_rec(shm_id), libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
    os.close(fd)  # empty: as a creator killed between shm_open and writing its pid leaves it
    with pytest.raises(FileExistsError) as info:
        ShmMemory.create_readonly(shm_id, 4096)
    msg = str(info.value)
    assert f"owner record {_rec(shm_id)!r} exists and names no live creator" in msg, msg
    assert f"python -m ctshm rm {_rec(shm_id)}" in msg and info.value.filename == _seg(shm_id)
    o = listing(shm_id)[_rec(shm_id)]
    assert (o["kind"], o["state"], o["creator"]["pid"]) == ("owner-record", "unknown", None)
    res = cli_json("gc", "--prefix", shm_id)
    assert res["removed"] == [] and "--include-unknown" in res["kept"][0]["reason"]
    res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
    assert [e["name"] for e in res["removed"]] == [_rec(shm_id)]
    assert shm_entries(shm_id) == []


def test_a_creation_in_progress_is_neither_replaced_nor_collected(shm_id: str) -> None:
    rec, mapping = _owner_record.create(_rec(shm_id), 0o600)  # this process, creating
    try:
        with pytest.raises(FileExistsError, match=rf"is being created \(pid {os.getpid()}\)"):
            ShmMemory.create_readonly(shm_id, 4096)
        o = listing(shm_id)[_rec(shm_id)]
        assert (o["kind"], o["state"]) == ("owner-record", "creating")
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == [] and "creating its segment" in res["kept"][0]["reason"]
        assert ops.resolve(shm_id) == [("owner-record", _rec(shm_id))]
        r = run_cli("rm", shm_id)
        assert r.returncode == 1 and "creating" in r.stderr, r.stderr
    finally:
        _owner_record.remove(rec)
        del mapping
    assert shm_entries(shm_id) == []


def test_rust_made_segment_is_unknown(seedref: str, shm_id: str) -> None:
    p = start_peer(seedref, "memory-create", shm_id, 4096)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == _seg(shm_id)
        assert listing(shm_id)[_seg(shm_id)]["creator"]["text"] == "unknown (no owner record)"
        with pytest.raises(FileExistsError, match="no owner record"):
            ShmMemory.create_readonly(shm_id, 4096)
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == [] and "in use by" in res["kept"][0]["reason"]
        assert shm_entries(shm_id) == [f"{shm_id}_m"]
    finally:
        _finish(p)
    assert shm_entries(shm_id) == []


# ---------------------------------------------------------------------------------------------
# The leak check knows the record
# ---------------------------------------------------------------------------------------------


def test_leak_check_helpers_find_and_remove_the_record(shm_id: str) -> None:
    m: Optional[ShmMemory] = ShmMemory.create_readonly(shm_id, 4096)
    assert m is not None
    m.keep_on_drop()  # then a record with no segment, as a killed create leaves
    m.close()
    _owner_record.create(_rec(shm_id), 0o600)
    names = [_seg(shm_id), _rec(shm_id)]
    assert pytest_plugin.leftovers(shm_id) == names
    assert pytest_plugin._exact_leftovers(shm_id) == names  # the macOS probe too
    pytest_plugin.remove(names)
    assert shm_entries(shm_id) == []
