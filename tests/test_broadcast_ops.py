"""``ctshm ls/stat/rm/gc`` and the pytest plugin's leak check know ShmBroadcast (``/X_b``)."""

from __future__ import annotations

import os

from ctshm import ShmBroadcast, ops, pytest_plugin

from .helpers import fork_call, reap, run_python, shm_exists


def test_ls_and_stat_show_writer_and_readers(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=4, slot_size=64, max_readers=3)
    r = ShmBroadcast.open(shm_id)
    b.put(b"x")
    [o] = [o for o in ops.collect(shm_id) if o["kind"] == "broadcast"]
    assert o["kind"] == "broadcast" and o["state"] == "open" and o["published"] == 1
    assert o["creator"] is not None and o["creator"]["pid"] == os.getpid()
    assert o["readers"] == [{"slot": 0, "state": "active", "pid": os.getpid(), "alive": True,
                             "lag": 1}]
    assert ops.resolve(shm_id) == [("broadcast", f"/{shm_id}_b")]
    out = run_python(f"from ctshm.cli import main; raise SystemExit(main(['stat', {shm_id!r}]))")
    assert "broadcast /" in out.stdout and "reader 0" in out.stdout, out.stderr
    out = run_python(f"from ctshm.cli import main; raise SystemExit(main(['rm', {shm_id!r}]))")
    assert out.returncode != 0 and "alive" in out.stderr
    assert shm_exists(shm_id + "_b")
    r.close()
    b.close()


def test_gc_removes_a_broadcast_whose_processes_died(shm_id: str) -> None:
    def child() -> None:
        b = ShmBroadcast.create(shm_id, capacity=2, slot_size=16)
        r = ShmBroadcast.open(shm_id)
        b.put(b"1")
        os._exit(0)  # no close: the name stays, every party is dead
        del r

    assert reap(fork_call(child)) == 0
    assert shm_exists(shm_id + "_b")
    res = ops.gc(shm_id)
    assert [e["name"] for e in res["removed"]] == [f"/{shm_id}_b"], res
    assert not shm_exists(shm_id + "_b")


def test_gc_keeps_a_broadcast_with_a_live_reader(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=2, slot_size=16)
    b.keep_on_drop()
    b.close()
    r = ShmBroadcast.open(shm_id)   # the creator's handle is closed; a reader lives (us)
    res = ops.gc(shm_id)
    assert res["removed"] == [] and "alive" in res["kept"][0]["reason"]
    r.close()
    r.unlink()


def test_plugin_exact_leftovers_name_the_broadcast(shm_id: str) -> None:
    b = ShmBroadcast.create(shm_id, capacity=2, slot_size=16)
    assert f"/{shm_id}_b" in pytest_plugin._exact_leftovers(shm_id)
    assert f"/{shm_id}_b" in pytest_plugin.leftovers(shm_id)
    b.close()
    assert pytest_plugin.leftovers(shm_id) == []
