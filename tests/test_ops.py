"""``python -m ctshm ls / stat / rm / gc`` (ctshm/ops/) on live, dead, Rust-created and
corrupt rings, segments and orphan semaphores.

Most tests run the CLI in a subprocess (``sys.executable -m ctshm``), as an operator would,
with ``--prefix`` so that ``gc`` never touches another test's (or worker's) objects.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from ctshm import Data, ShmMemory, ShmTraceRing, cli, ops
from ctshm.layout import HEADER_SIZE, HUGE_PAGE_SIZE
from ctshm.semaphore import NamedSemaphore

from .helpers import REPO_ROOT, SHM_DIR, drain, run_python, sem_exists, shm_exists
from .test_interop import start_peer

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm (Linux)")

CLI_TIMEOUT = 60


def run_cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ctshm", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def cli_json(*args: str) -> Any:
    r = run_cli(*args, "--json")
    assert r.returncode == 0, f"ctshm {args} exited {r.returncode}:\n{r.stderr}"
    return json.loads(r.stdout)


def listing(prefix: str) -> dict[str, dict[str, Any]]:
    data = cli_json("ls", "--prefix", prefix)
    return {o["name"]: o for o in data["objects"]}


def ring_files(id: str) -> list[bool]:
    return [shm_exists(f"/{id}_t"), sem_exists(f"/{id}_t_filled"), sem_exists(f"/{id}_t_empty")]


def shm_entries(id: str) -> list[str]:
    return sorted(e for e in os.listdir(SHM_DIR) if e.startswith((id, "sem." + id)))


def blocks(name: str) -> int:
    return os.stat(SHM_DIR + "/" + name.lstrip("/")).st_blocks


# ---------------------------------------------------------------------------------------------
# Live ring (this process is creator, producer and consumer)
# ---------------------------------------------------------------------------------------------


def test_stat_fast_ring_shows_its_mode_and_no_guessed_slot(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 3, 4096, fast=True) as ring:
        ring.put(b"hello")
        st = cli_json("stat", shm_id)["objects"][0]
        assert st["extension"]["mode"] == "fast"
        assert (st["extension"]["c_sleep"], st["extension"]["p_sleep"]) == (0, 0)
        # The semaphores carry wake-ups only: an `empty` of 0 says nothing of a slot.
        assert [s["state"] for s in st["slots"]] == ["committed-unread", "free", "free"]
        text = run_cli("stat", shm_id)
        assert text.returncode == 0, text.stderr
        assert "fast (sleeping: consumer 0, producer 0)" in text.stdout
        assert ring.get(1) == b"hello"
    with ShmTraceRing.create(shm_id, 1, 4096, fast=False):
        assert cli_json("stat", shm_id)["objects"][0]["extension"]["mode"] == "compat"


def test_ls_and_stat_live_ring(shm_id: str) -> None:
    me = os.getpid()
    with ShmTraceRing.create(shm_id, 3, 4096) as ring:
        ring.put(b"hello")
        data = ring.access(5)
        ring.put(b"x" * 100)
        g = ring.acquire(5)  # slot 2: being written
        try:
            objs = listing(shm_id)
            o = objs[f"/{shm_id}_t"]
            assert o["kind"] == "ring" and o["ctshm"] is True and o["state"] == "running"
            assert (o["write_idx"], o["read_idx"], o["reserved_idx"]) == (2, 0, 1)
            assert o["capacity"] == 3 and o["slot_size"] == HUGE_PAGE_SIZE
            assert o["size"] == HEADER_SIZE + 3 * HUGE_PAGE_SIZE
            assert o["allocated"] == blocks(ring.name) * 512 > 0
            for who in ("creator", "producer", "consumer"):
                assert o[who]["pid"] == me and o[who]["alive"] is True, (who, o[who])
            assert me in o["users"]
            assert [s["exists"] for s in o["semaphores"]] == [True, True]

            text = run_cli("ls", "--prefix", shm_id)
            assert text.returncode == 0, text.stderr
            line = next(ln for ln in text.stdout.splitlines() if f"/{shm_id}_t" in ln)
            assert "running" in line and "2/0/1" in line and f"{me} (alive)" in line
            assert text.stdout.splitlines()[0].split()[:5] == ["KIND", "NAME", "SIZE", "ALLOC",
                                                               "STATE"]

            st = cli_json("stat", shm_id)["objects"]
            assert len(st) == 1
            slots = st[0]["slots"]
            assert [s["state"] for s in slots] == ["reserved-by-consumer", "committed-unread",
                                                   "being-written"]
            assert [s["message"] for s in slots] == [0, 1, 2]
            assert [s["length"] for s in slots] == [5, 100, None]
            sems = {s["name"]: s["value"] for s in st[0]["semaphores"]}
            assert sems == {f"/{shm_id}_t_filled": 1, f"/{shm_id}_t_empty": 0}
            assert st[0]["extension"]["magic_text"] == "CTSHMRG1"
            assert st[0]["extension"]["state"] == "ready"

            text = run_cli("stat", f"/{shm_id}_t")
            assert text.returncode == 0, text.stderr
            assert "reserved-by-consumer" in text.stdout and "being-written" in text.stdout
            assert f"{me} (alive)" in text.stdout
        finally:
            g.abort()
            assert isinstance(data, Data), data
            data.guard.release()
        assert drain(ring) == 1
    assert shm_entries(shm_id) == []


def test_inspection_modifies_nothing(shm_id: str) -> None:
    """ls / stat never register as a peer, write a byte, or allocate a page of the ring."""
    with ShmTraceRing.create(shm_id, 4, 4096) as ring:
        ring.put(b"abc")  # producer registered; no consumer yet
        before = bytes(ring._hv[:HEADER_SIZE])
        alloc = blocks(ring.name)
        sems = [NamedSemaphore(ring.name + s) for s in ("_filled", "_empty")]
        values = [s.value() for s in sems]
        for args in (("ls", "--prefix", shm_id), ("stat", shm_id), ("gc", "--prefix", shm_id,
                                                                     "--dry-run")):
            r = run_cli(*args)
            assert r.returncode == 0, (args, r.stderr)
        assert bytes(ring._hv[:HEADER_SIZE]) == before
        assert blocks(ring.name) == alloc
        assert [s.value() for s in sems] == values == [1, 3]
        assert ring.header()["consumer_pid"] == 0
        for s in sems:
            s.close()
        assert ring.get(5) == b"abc"  # still a working ring


def test_crashed_ring_details(shm_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.notify_crash(11, 0xDEAD0000, 2, message="segfault in tracer")
        assert cli.main(["stat", shm_id, "--json"]) == 0
        o = json.loads(capsys.readouterr().out)["objects"][0]
        assert o["state"] == "crashed" and o["finished"] == 2
        assert o["crash"] == {"signal": 11, "addr": 0xDEAD0000, "operation": 2,
                              "operation_text": "write", "message": "segfault in tracer"}
        assert cli.main(["stat", shm_id]) == 0
        out = capsys.readouterr().out
        assert "crashed" in out and "0xdead0000" in out and "segfault in tracer" in out


# ---------------------------------------------------------------------------------------------
# Dead ring (creator exited without cleaning up)
# ---------------------------------------------------------------------------------------------


def _dead_ring(id: str) -> int:
    code = ("import os\nfrom ctshm import ShmTraceRing\n"
            f"r = ShmTraceRing.create({id!r}, 2, 4096)\nr.put(b'abc')\n"
            "print(os.getpid(), flush=True)\nos._exit(0)\n")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert ring_files(id) == [True, True, True]
    return int(r.stdout.split()[0])


def test_dead_ring_ls_then_gc(shm_id: str) -> None:
    pid = _dead_ring(shm_id)
    o = listing(shm_id)[f"/{shm_id}_t"]
    assert o["creator"] == {"pid": pid, "start": o["creator"]["start"], "alive": False,
                            "text": f"{pid} (dead)"}
    assert o["creator"]["start"] > 0
    assert o["producer"]["pid"] == pid and o["producer"]["alive"] is False
    assert o["consumer"] is None and o["users"] == []
    assert o["state"] == "abandoned" and o["write_idx"] == 1  # its creator is dead

    text = run_cli("ls", "--prefix", shm_id)
    assert f"{pid} (dead)" in text.stdout

    dry = cli_json("gc", "--prefix", shm_id, "--dry-run")
    assert dry["dry_run"] is True
    assert [e["name"] for e in dry["removed"]] == [f"/{shm_id}_t"]
    assert dry["removed"][0]["objects"] == [f"/{shm_id}_t", f"/{shm_id}_t_filled",
                                            f"/{shm_id}_t_empty"]
    assert "dead" in dry["removed"][0]["reason"]
    assert ring_files(shm_id) == [True, True, True], "--dry-run removed something"
    text = run_cli("gc", "--prefix", shm_id, "--dry-run")
    assert "would remove" in text.stdout and f"/{shm_id}_t" in text.stdout

    done = cli_json("gc", "--prefix", shm_id)
    assert done["dry_run"] is False and done["errors"] == []
    assert done["removed"][0]["objects"] == [f"/{shm_id}_t", f"/{shm_id}_t_filled",
                                             f"/{shm_id}_t_empty"]
    assert ring_files(shm_id) == [False, False, False]
    assert shm_entries(shm_id) == []


def test_gc_keeps_live_ring_and_replaces_nothing(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        res = cli_json("gc", "--prefix", shm_id)
        assert res["removed"] == []
        assert [(e["name"], "alive" in e["reason"]) for e in res["kept"]] == \
            [(ring.name, True)]
        assert ring_files(shm_id) == [True, True, True]
        ring.put(b"still fine")
        assert ring.get(5) == b"still fine"


def test_gc_leaves_a_successor_alone(shm_id: str) -> None:
    """gc decides on the object it inspected: if the name was re-created in between, the
    successor survives."""
    _dead_ring(shm_id)
    objs = ops.collect(shm_id)
    (dead,) = objs
    assert ops.gc_decision(dead, False)[0] is True
    with ShmTraceRing.create(shm_id, 2, 4096) as successor:  # replaces the dead ring
        assert ops.remove("ring", dead["name"], dead) == []
        assert ring_files(shm_id) == [True, True, True]
        successor.put(b"ok")
        assert successor.get(5) == b"ok"


# ---------------------------------------------------------------------------------------------
# Rust-created ring
# ---------------------------------------------------------------------------------------------


@pytest.mark.seedref
@pytest.mark.timeout_s(180)
def test_rust_ring_owner_unknown(seedref: str, shm_id: str) -> None:
    p = start_peer(seedref, "produce", shm_id, 4, 4096, 2, 16, "--create", "--linger-ms",
                   60000)
    try:
        deadline = time.monotonic() + 30
        o: dict[str, Any] = {}
        while time.monotonic() < deadline:
            o = listing(shm_id).get(f"/{shm_id}_t", {})
            if o.get("state") == "finished":
                break
            time.sleep(0.05)
        assert o.get("state") == "finished", o
        assert o["ctshm"] is False
        assert o["creator"]["text"] == "unknown (Rust peer)" and o["creator"]["pid"] is None
        assert o["producer"]["text"] == "unknown" and o["consumer"]["text"] == "unknown"
        assert p.pid in o["users"]
        assert (o["write_idx"], o["read_idx"], o["reserved_idx"]) == (2, 0, 0)
        text = run_cli("ls", "--prefix", shm_id)
        assert "unknown (Rust peer)" in text.stdout

        st = cli_json("stat", f"{shm_id}_t")["objects"][0]
        assert [s["state"] for s in st["slots"]] == ["committed-unread"] * 2 + ["free"] * 2
        assert [s["length"] for s in st["slots"]] == [None] * 4  # the Rust peer writes none
        assert {s["name"]: s["value"] for s in st["semaphores"]} == {
            f"/{shm_id}_t_filled": 3, f"/{shm_id}_t_empty": 2}  # 2 messages + finish token
        text = run_cli("stat", shm_id)
        assert "Rust" in text.stdout and "whole slot" in text.stdout

        res = cli_json("gc", "--prefix", shm_id)
        assert res["removed"] == [] and "--include-unknown" in res["kept"][0]["reason"]
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == [] and f"in use by pid {p.pid}" in res["kept"][0]["reason"]
        assert ring_files(shm_id) == [True, True, True]

        p.send_signal(signal.SIGKILL)  # dies without unlinking anything
        p.communicate(timeout=30)
        assert ring_files(shm_id) == [True, True, True]
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown", "--dry-run")
        assert [e["name"] for e in res["removed"]] == [f"/{shm_id}_t"]
        assert ring_files(shm_id) == [True, True, True]
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert [e["name"] for e in res["removed"]] == [f"/{shm_id}_t"]
        assert ring_files(shm_id) == [False, False, False]
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=30)


# ---------------------------------------------------------------------------------------------
# Segments, orphan semaphores, odd objects
# ---------------------------------------------------------------------------------------------


def test_segment_ls_stat_rm(shm_id: str) -> None:
    with ShmMemory.create_readonly(shm_id, 8192) as m:
        o = listing(shm_id)[m.name]
        assert o["kind"] == "segment" and o["size"] == 8192 and o["allocated"] == 0
        assert os.getpid() in o["users"]
        assert o["creator"]["pid"] == os.getpid()  # from its owner record
        st = cli_json("stat", shm_id)["objects"]
        assert [(x["kind"], x["name"]) for x in st] == [("segment", m.name)]
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == [] and "is alive" in res["kept"][0]["reason"]

        r = run_cli("rm", f"{shm_id}_m")  # mapped by this process: refused
        assert r.returncode == 1 and r.stdout == ""
        assert f"{m.name} is mapped or open by pid {os.getpid()}" in r.stderr, r.stderr
        assert shm_exists(m.name)
        r = run_cli("rm", f"{shm_id}_m", "--json", "--force")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"removed": [m.name, m.name + "_owner"]}
        assert not shm_exists(m.name)
    assert shm_entries(shm_id) == []


def test_unused_segment_gc_include_unknown(shm_id: str) -> None:
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.keep_on_drop()
    m.close()
    res = cli_json("gc", "--prefix", shm_id)
    assert res["removed"] == [] and "--include-unknown" in res["kept"][0]["reason"]
    assert shm_exists(m.name)
    fd = os.open(SHM_DIR + m.name, os.O_RDONLY)  # open, not mapped: still in use
    try:
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == []
        assert f"in use by pid {os.getpid()}" in res["kept"][0]["reason"]
    finally:
        os.close(fd)
    res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
    assert [(e["kind"], e["name"]) for e in res["removed"]] == [("segment", m.name)]
    assert not shm_exists(m.name)


def test_orphan_semaphores(shm_id: str) -> None:
    unused, held = f"/{shm_id}a_t_filled", f"/{shm_id}b_t_empty"
    NamedSemaphore(unused, create=True, value=5).close()
    h = NamedSemaphore(held, create=True, value=1)
    try:
        objs = listing(shm_id)
        assert {n: (o["kind"], o["state"]) for n, o in objs.items()} == {
            unused: ("semaphore", "orphan"), held: ("semaphore", "orphan")}
        assert objs[unused]["users"] == [] and os.getpid() in objs[held]["users"]
        st = cli_json("stat", unused)["objects"]
        assert [(o["name"], o["value"], o["orphan"]) for o in st] == [(unused, 5, True)]
        text = run_cli("ls", "--prefix", shm_id)
        assert "orphan" in text.stdout and unused in text.stdout

        res = cli_json("gc", "--prefix", shm_id)
        assert [e["name"] for e in res["removed"]] == [unused]
        assert [e["name"] for e in res["kept"]] == [held]
        assert not sem_exists(unused) and sem_exists(held)
        r = run_cli("rm", held)  # open in this process: refused
        assert r.returncode == 1 and f"is mapped or open by pid {os.getpid()}" in r.stderr
        assert sem_exists(held)
        r = run_cli("rm", held, "--force")  # rm takes a semaphore name too
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["removed", held]
        assert not sem_exists(held)
    finally:
        h.close()
        NamedSemaphore.unlink_name(held)


def test_corrupt_and_initializing_objects(shm_id: str) -> None:
    # Size 0: a ring whose creator has not called ftruncate yet (or not a ring).
    fd0 = os.open(f"{SHM_DIR}/{shm_id}a_t", os.O_CREAT | os.O_RDWR, 0o600)
    # A header that does not match the object's size.
    fd1 = os.open(f"{SHM_DIR}/{shm_id}b_t", os.O_CREAT | os.O_RDWR, 0o600)
    # A semaphore file too short to be a semaphore: sem_getvalue on it would be SIGBUS.
    fd2 = os.open(f"{SHM_DIR}/sem.{shm_id}c_t_filled", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd1, HEADER_SIZE + HUGE_PAGE_SIZE)
        os.pwrite(fd1, (5).to_bytes(8, "little") + HUGE_PAGE_SIZE.to_bytes(8, "little"), 24)
        objs = {o["name"]: o for o in ops.collect(shm_id, detail=True)}
        a, b, c = objs[f"/{shm_id}a_t"], objs[f"/{shm_id}b_t"], objs[f"/{shm_id}c_t_filled"]
        assert a["state"] == "initializing" and "smaller than a ring header" in a["state_reason"]
        assert b["state"] == "not a ring" and "capacity=5" in b["state_reason"]
        assert b["slots"] == []
        assert c["state"] == "orphan" and "not a semaphore" in c["error"]
        r = run_cli("stat", f"{shm_id}c_t_filled")
        assert r.returncode == 0 and "not a semaphore" in r.stdout, r.stderr
        # No owner record: gc leaves them without --include-unknown.
        res = ops.gc(shm_id)
        assert sorted(e["name"] for e in res["removed"]) == [f"/{shm_id}c_t_filled"]
        assert shm_exists(f"/{shm_id}a_t") and shm_exists(f"/{shm_id}b_t")
        for id in (f"{shm_id}a", f"{shm_id}b"):
            assert cli.main(["rm", id]) == 0
        assert shm_entries(shm_id) == []
    finally:
        for fd in (fd0, fd1, fd2):
            os.close(fd)


def test_random_file_named_like_a_ring_is_not_a_ring(shm_id: str) -> None:
    """A file /X_t whose header words are garbage (20-digit "indices", a magic that is neither
    ctshm's nor 0) is "not a ring", not a ring of an unknown Rust peer."""
    fd = os.open(f"{SHM_DIR}/{shm_id}_t", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, HEADER_SIZE + HUGE_PAGE_SIZE)
        garbage = bytes((i * 37 + 11) % 251 + 3 for i in range(4096))
        os.pwrite(fd, garbage, 0)
        o = listing(shm_id)[f"/{shm_id}_t"]
        assert len(str(o["write_idx"])) >= 19  # what the garbage "says"
        assert o["state"] == "not a ring", o
        assert o["state_reason"].startswith("no ctshm magic, and the header does not match "
                                            "the object: "), o["state_reason"]
        assert o["creator"]["text"] == "not a ring"
        assert o["producer"] is None and o["consumer"] is None
        line = next(ln for ln in run_cli("ls", "--prefix", shm_id).stdout.splitlines()
                    if f"/{shm_id}_t" in ln)
        assert "not a ring" in line and "Rust" not in line and "unknown" not in line, line
        assert str(o["write_idx"]) not in line and str(o["capacity"]) not in line, line
        st = run_cli("stat", f"{shm_id}_t")
        assert st.returncode == 0 and "not a ring" in st.stdout and "Rust" not in st.stdout
        res = cli_json("gc", "--prefix", shm_id, "--include-unknown")
        assert res["removed"] == [] and "not a ring" in res["kept"][0]["reason"]
        assert cli.main(["rm", f"{shm_id}_t"]) == 0
        assert shm_entries(shm_id) == []
    finally:
        os.close(fd)
        if shm_exists(f"/{shm_id}_t"):
            os.unlink(f"{SHM_DIR}/{shm_id}_t")


# ---------------------------------------------------------------------------------------------
# Names, rm, errors, usage
# ---------------------------------------------------------------------------------------------


def test_resolve_names(shm_id: str) -> None:
    ring_t = ("ring", f"/{shm_id}_t")
    seg = ("segment", f"/{shm_id}_m")
    assert ops.resolve(shm_id) == []
    with ShmTraceRing.create(shm_id, 2, 4096):
        for arg in (shm_id, "/" + shm_id, f"{shm_id}_t", f"/{shm_id}_t",
                    f"/{shm_id}_t_filled", f"{shm_id}_t_empty", f"sem.{shm_id}_t_empty",
                    f"{SHM_DIR}/{shm_id}_t", f"{SHM_DIR}/sem.{shm_id}_t_filled"):
            assert ops.resolve(arg) == [ring_t], arg
        assert ops.resolve(f"{shm_id}_m") == []
        with ShmMemory.create_readonly(shm_id, 4096):
            assert ops.resolve(shm_id) == [ring_t, seg]  # an id names both
            assert ops.resolve(f"/{shm_id}_m") == [seg]
            assert ops.resolve(f"{shm_id}_t") == [ring_t]
    for bad in ("", "/", "a/b", "sem."):
        with pytest.raises(ops.OpsError, match="not a ctshm name"):
            ops.resolve(bad)


def test_rm_ring_of_live_owner(shm_id: str) -> None:
    me = os.getpid()
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        r = run_cli("rm", f"/{shm_id}")
        assert r.returncode == 1 and r.stdout == "", r
        assert r.stderr.startswith(f"ctshm rm: refusing to remove '/{shm_id}', a live process "
                                   f"uses it ({ring.name}: its creator pid {me} is alive, "
                                   f"{ring.name} is mapped or open by pid {me}"), r.stderr
        assert "--force" in r.stderr
        assert ring_files(shm_id) == [True, True, True]
        r = run_cli("rm", f"/{shm_id}", "--json")
        assert r.returncode == 1
        err = json.loads(r.stdout)
        assert err["command"] == "rm" and err["name"] == f"/{shm_id}"
        assert err["error"].startswith(f"refusing to remove '/{shm_id}'")
        assert f"its creator pid {me} is alive" in err["in_use"][ring.name]
        assert ring_files(shm_id) == [True, True, True]

        r = run_cli("rm", f"/{shm_id}", "--json", "--force")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"removed": [ring.name, ring.name + "_filled",
                                                    ring.name + "_empty"]}
        assert f"its creator pid {me} is alive" in r.stderr  # a note, not an error
        assert ring_files(shm_id) == [False, False, False]
        ring.put(b"handles keep working")
        assert ring.get(5) == b"handles keep working"
    assert shm_entries(shm_id) == []


def test_rm_refuses_ring_whose_producer_lives_elsewhere(shm_id: str) -> None:
    """Creator dead, but a registered producer is alive (and maps the ring): refused."""
    _dead_ring(shm_id)
    ready = f"/tmp/{shm_id}.ready"
    code = (f"import os, time\nfrom ctshm import ShmTraceRing\n"
            f"r = ShmTraceRing.open({shm_id!r}, timeout=10)\nr.put(b'x')\n"
            f"open({ready!r}, 'w').close()\ntime.sleep(60)\n")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.exists(ready), p.poll()
        r = run_cli("rm", shm_id)
        assert r.returncode == 1, r
        assert f"its producer pid {p.pid} is alive" in r.stderr, r.stderr
        assert f"is mapped or open by pid {p.pid}" in r.stderr, r.stderr
        assert ring_files(shm_id) == [True, True, True]
    finally:
        p.kill()
        assert p.wait(30) == -signal.SIGKILL
        os.unlink(ready)
    r = run_cli("rm", shm_id)  # every user is gone now
    assert r.returncode == 0, r.stderr
    assert ring_files(shm_id) == [False, False, False]


def test_rm_id_removes_ring_and_segment(shm_id: str, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    _dead_ring(shm_id)
    m = ShmMemory.create_readonly(shm_id, 4096)
    m.keep_on_drop()
    m.close()
    assert cli.main(["rm", shm_id]) == 0
    out = capsys.readouterr().out.split("\n")
    assert out[:4] == [f"removed /{shm_id}_t", f"removed /{shm_id}_t_filled",
                       f"removed /{shm_id}_t_empty", f"removed /{shm_id}_m"]
    assert shm_entries(shm_id) == []


@pytest.mark.parametrize("cmd", ["rm", "stat"])
def test_missing_name_exit_1(shm_id: str, cmd: str) -> None:
    for args in ((cmd, shm_id), (cmd, shm_id, "--json")):
        r = run_cli(*args)
        assert r.returncode == 1, r
        if "--json" in args:  # the error is JSON too, on stdout
            assert r.stderr == ""
            err = json.loads(r.stdout)
            assert err["command"] == cmd and err["name"] == shm_id
            assert err["error"].startswith(f"no ring, segment or ring semaphore named {shm_id!r}")
        else:
            assert f"no ring, segment or ring semaphore named {shm_id!r}" in r.stderr
            assert r.stdout == ""


def test_usage_errors_exit_2() -> None:
    for args in (("rm",), ("stat",), ("gc", "--bogus"), ("frobnicate",)):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r)
        assert "usage:" in r.stderr
    r = run_cli("rm", "a/b")
    assert r.returncode == 1 and "not a ctshm name" in r.stderr


@pytest.mark.parametrize("args,command,fragment", [
    (("rm", "--json"), "rm", "the following arguments are required: name"),
    (("stat", "--js"), "stat", "the following arguments are required: name"),  # abbreviated
    (("gc", "--bogus", "--json"), "gc", "unrecognized arguments: --bogus"),
    (("top", "--interval", "0", "--json"), "top", "--interval must be > 0"),
    (("frobnicate", "--json"), None, "invalid choice: 'frobnicate'"),
])
def test_usage_errors_with_json_are_json(args: tuple[str, ...], command: str | None,
                                         fragment: str) -> None:
    # Was: argparse's plain-text usage on stderr.  Same object as the other --json errors.
    r = run_cli(*args)
    assert r.returncode == 2, r
    assert r.stderr == ""
    err = json.loads(r.stdout)
    assert fragment in err["error"], err
    assert err["command"] == command and err["name"] is None
    assert err["usage"].startswith("usage: python -m ctshm")


def test_ls_json_shape_and_empty_prefix(shm_id: str) -> None:
    data = cli_json("ls", "--prefix", shm_id)
    assert data["objects"] == [] and data["shm_dir"] == SHM_DIR
    assert data["users_scan"] == "complete" or data["users_scan"].startswith("partial")
    r = run_cli("ls", "--prefix", shm_id)
    assert r.returncode == 0 and "no ctshm objects" in r.stdout
    res = cli_json("gc", "--prefix", shm_id)
    assert res == {"dry_run": False, "removed": [], "kept": [], "errors": []}


# ---------------------------------------------------------------------------------------------
# Help texts and lazy imports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [None, "info", "ls", "stat", "rm", "gc", "top", "bench"])
def test_help_is_plain_text_and_every_json_option_explained(cmd: str | None) -> None:
    r = run_cli(*([cmd] if cmd else []), "--help")
    assert r.returncode == 0, r.stderr
    for markup in ("``", ":class:", ":func:", "::\n"):
        assert markup not in r.stdout, (markup, r.stdout)
    if cmd is None:
        for c in ("info", "bench", "ls", "stat", "rm", "gc", "top"):
            assert re.search(rf"^    {c}\s+\S", r.stdout, re.M), (c, r.stdout)
    else:
        assert re.search(r"^  --json\s+\S", r.stdout, re.M), r.stdout  # with a help text
    if cmd == "rm":
        assert re.search(r"^  --force\s+\S", r.stdout, re.M), r.stdout
    if cmd == "top":
        for opt in ("--interval S", "--once", "--prefix PREFIX"):
            assert re.search(rf"^  {opt}\s+\S", r.stdout, re.M), (opt, r.stdout)


_MODULES = """
import runpy, sys
sys.argv = ["python -m ctshm", *{args!r}]
try:
    runpy.run_module("ctshm", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("MODULES", *sorted(m for m in sys.modules if m.startswith("ctshm")))
sys.exit(code)
"""


def _modules_after(*args: str) -> set[str]:
    r = run_python(_MODULES.format(args=list(args)))
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("MODULES "))
    return set(line.split()[1:])


def test_info_imports_neither_bench_nor_ops(shm_id: str) -> None:
    mods = _modules_after("info")
    assert "ctshm.cli" in mods
    assert "ctshm.bench" not in mods and "ctshm.ops" not in mods, sorted(mods)
    assert "ctshm.records" not in mods
    mods = _modules_after()  # no subcommand: info
    assert "ctshm.bench" not in mods and "ctshm.ops" not in mods, sorted(mods)
    mods = _modules_after("ls", "--prefix", shm_id)
    assert "ctshm.ops" in mods and "ctshm.bench" not in mods, sorted(mods)
