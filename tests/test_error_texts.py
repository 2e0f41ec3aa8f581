"""What a newcomer's mistakes and surprises are told: each text names the object and says
what to do (issue: "What a new user hits").  Risky cases run in subprocesses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from ctshm import ShmMemory, ShmTraceRing, UnreadMessagesWarning, _shmdir, libc

from .helpers import REPO_ROOT, SHM_DIR, run_python, start_thread


def _cli_json(*args: str) -> object:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "ctshm", *args, "--json"], env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_sparse_segment_warning_says_reading_also_kills() -> None:
    text = _shmdir.SPARSE_SEGMENT
    assert "reading" in text and "SIGBUS" in text and "reserve" in text


@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "bell\x07", "del\x7f"])
def test_ids_with_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        ShmTraceRing.create(bad, 1, 4096)
    with pytest.raises(ValueError, match="control character"):
        ShmMemory.create_readwrite(bad, 4096)


def test_closed_while_waiting_does_not_blame_another_thread(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096) as ring:
        ring.put(b"full")
        t, errors = start_thread(lambda: ring.put(b"more", timeout=30))
        time.sleep(0.2)
        with pytest.warns(UnreadMessagesWarning):  # "full" was never read
            ring.close()
        t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
    text = str(errors[0])
    assert "was closed while acquire() waited" in text and "this task" in text


def test_unmappable_ring_says_why() -> None:
    out = run_python("""
import warnings, resource
warnings.simplefilter("ignore")
resource.setrlimit(resource.RLIMIT_AS, (1 << 34, 1 << 34))  # 16 GiB of address space
from ctshm import ShmTraceRing
try:
    ShmTraceRing.create("ctbig%d" % __import__("os").getpid(), 4096, 32 << 20)
except OSError as e:
    print("ERR", e)
""")
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "cannot map" in out.stdout and "TiB" in out.stdout
    assert "fewer or smaller slots" in out.stdout


def test_second_producer_is_told_about_pools_and_the_queue(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 2, 4096) as ring:
        ring.put(b"mine")  # this process is the producer
        out = run_python(f"""
from ctshm import ShmTraceRing
with ShmTraceRing.open({shm_id!r}) as ring:
    try:
        ring.put(b"theirs")
    except RuntimeError as e:
        print(e)
""")
        assert out.returncode == 0, out.stderr
        assert "multiprocessing.Pool" in out.stdout and "ctshm.ShmQueue" in out.stdout
        assert ring.get(timeout=1) == b"mine"


def test_mode_sets_exact_permission_bits(shm_id: str) -> None:
    old = os.umask(0o077)
    try:
        with ShmTraceRing.create(shm_id, 1, 4096, mode=0o660) as ring:
            body = ring.name.lstrip("/")
            for f in (body, f"sem.{body}_filled", f"sem.{body}_empty"):
                st = os.stat(os.path.join(SHM_DIR, f))
                assert stat.S_IMODE(st.st_mode) == 0o660, f
    finally:
        os.umask(old)
    with pytest.raises(ValueError, match="mode must be permission bits"):
        ShmTraceRing.create(shm_id, 1, 4096, mode=0o7777)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_permission_error_has_a_hint(shm_id: str) -> None:
    with ShmTraceRing.create(shm_id, 1, 4096):
        out = run_python(f"""
import os
from ctshm import ShmTraceRing
os.setgid(65534); os.setuid(65534)
try:
    ShmTraceRing.open({shm_id!r}, timeout=1)
except PermissionError as e:
    print("ERR", e)
""")
        assert "ERR" in out.stdout, out.stderr
        assert "mode=0o660" in out.stdout and "creator's user" in out.stdout


def test_ls_does_not_call_an_empty_object_a_rust_ring(shm_id: str) -> None:
    name = f"/{shm_id}_t"
    fd = libc.shm_open(name, libc.O_CREAT | libc.O_EXCL | libc.O_RDWR, 0o600)
    try:
        text = json.dumps(_cli_json("stat", name))
        assert "Rust peer" not in text and "nothing written yet" in text
    finally:
        os.close(fd)
        libc.shm_unlink(name)


def test_ls_shows_a_ring_whose_creator_died_as_abandoned(shm_id: str) -> None:
    out = run_python(f"""
import os
from ctshm import ShmTraceRing
ring = ShmTraceRing.create({shm_id!r}, 1, 4096)
os._exit(0)  # no unlink: the ring stays, its creator dead
""")
    assert out.returncode == 0, out.stderr
    try:
        info = _cli_json("stat", f"/{shm_id}_t")
        assert isinstance(info, dict)
        ring = info["objects"][0]
        assert ring["state"] == "abandoned", ring["state"]
        assert "python -m ctshm gc" in ring["state_reason"]
    finally:
        for suffix in ("_t", "_t_filled", "_t_empty"):
            for p in (os.path.join(SHM_DIR, shm_id + suffix),
                      os.path.join(SHM_DIR, "sem." + shm_id + suffix)):
                if os.path.exists(p):
                    os.unlink(p)
