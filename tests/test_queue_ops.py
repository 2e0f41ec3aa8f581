"""`ctshm ls/stat/rm/gc` and the pytest plugin's leak check know ShmQueue objects."""

from __future__ import annotations

import os
import subprocess
import sys

from ctshm import ShmQueue
from ctshm.ops.cleanup import gc, remove
from ctshm.ops.names import collect, resolve
from ctshm.ops.queues import inspect_queue
from ctshm.pytest_plugin import leftovers

from .helpers import REPO_ROOT, shm_exists


def test_ls_and_stat_show_a_queue(shm_id: str) -> None:
    q = ShmQueue.create(shm_id, capacity=4, slot_size=32)
    q.put(b"x")
    objs = [o for o in collect(shm_id) if o["kind"] == "queue"]
    assert [o["name"] for o in objs] == [f"/{shm_id}_q"]
    info = inspect_queue(f"/{shm_id}_q", detail=True)
    assert info is not None
    assert (info["queued"], info["capacity"], info["slot_size"]) == (1, 4, 32)
    assert info["creator"]["pid"] == os.getpid() and info["creator"]["alive"]
    assert info["slots"][0] == "lap 0 FULL" and len(info["semaphores"]) == 2
    assert resolve(shm_id) == [("queue", f"/{shm_id}_q")]
    r = subprocess.run([sys.executable, "-m", "ctshm", "stat", shm_id], capture_output=True,
                       text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert r.returncode == 0 and "queued          1" in r.stdout, r.stdout + r.stderr
    q.close()


def test_gc_keeps_a_live_queue_and_removes_a_dead_ones(shm_id: str) -> None:
    q = ShmQueue.create(shm_id, capacity=2, slot_size=8)
    kept = gc(shm_id)
    assert [e["name"] for e in kept["kept"]] == [f"/{shm_id}_q"] and not kept["removed"]
    q.close()
    code = (f"import os; from ctshm import ShmQueue; "
            f"q = ShmQueue.create({shm_id + 'd'!r}, capacity=2, slot_size=8); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert shm_exists(f"/{shm_id}d_q")
    res = gc(shm_id + "d")
    assert res["removed"][0]["objects"] == [f"/{shm_id}d_q", f"/{shm_id}d_q_items",
                                            f"/{shm_id}d_q_space"]
    assert not shm_exists(f"/{shm_id}d_q")


def test_rm_removes_queue_and_semaphores_and_leak_check_sees_them(shm_id: str) -> None:
    q = ShmQueue.create(shm_id, capacity=2, slot_size=8)
    q._owner = False  # let rm do the unlinking
    q._finalizer.detach()  # type: ignore[union-attr]
    assert set(leftovers(shm_id)) == {f"/{shm_id}_q", f"/{shm_id}_q_items (semaphore)",
                                      f"/{shm_id}_q_space (semaphore)"}
    assert sorted(remove("queue", f"/{shm_id}_q")) == [
        f"/{shm_id}_q", f"/{shm_id}_q_items", f"/{shm_id}_q_space"]
    assert leftovers(shm_id) == []
