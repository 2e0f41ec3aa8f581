"""Environments that lack something: libatomic, executable memory, /dev/shm, space in it.

Each case runs a fresh Python in a private mount namespace (``unshare -m``, root only) where
the lack is real: libatomic is hidden by bind-mounting /dev/null over it, executable memory
is refused with ``prctl(PR_SET_MDWE)``, /dev/shm is hidden / mounted read-only / replaced by a
small tmpfs.  Nothing done there reaches the host's /dev/shm (every namespace that creates
objects has a tmpfs of its own, and the child checks it is empty at the end).  The space
check itself is also tested without root, against a fake ``statvfs``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import pytest

from ctshm import _shmdir

from .helpers import REPO_ROOT

NS_TIMEOUT = 90


def _libatomic_path() -> str:
    ctypes.CDLL("libatomic.so.1")
    with open("/proc/self/maps") as f:
        for line in f:
            if "libatomic" in line:
                return line.split()[-1]
    raise AssertionError("libatomic.so.1 loaded but not in /proc/self/maps")


def _need_namespaces() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("mount namespaces are Linux-only")
    if os.geteuid() != 0:
        pytest.skip("needs root: unshare -m and mount (CI runs as root)")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) from util-linux")


def run_in_namespace(prelude: str, code: str, timeout: float = NS_TIMEOUT
                     ) -> subprocess.CompletedProcess[str]:
    """Run ``prelude`` (sh, as root, in a private mount namespace), then ``python -c code``."""
    _need_namespaces()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONDONTWRITEBYTECODE="1")
    env.pop("CTSHM_ATOMICS", None)
    script = "set -eu\n" + prelude + '\nexec "$0" -c "$1"\n'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable,
         textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


PRIVATE_SHM = "mount -t tmpfs -o size=256m,mode=1777 ctshm-test /dev/shm\n"


def hide_libatomic() -> str:
    try:
        path = _libatomic_path()
    except OSError:
        pytest.skip("libatomic.so.1 is not installed here: nothing to hide")
    return f"mount --bind /dev/null {path}\n"


EMPTY_AT_END = """
import os as _os
assert _os.listdir("/dev/shm") == [], _os.listdir("/dev/shm")
"""


# ---------------------------------------------------------------------------------------------
# No libatomic.so.1: the machine-code backend, and info says so
# ---------------------------------------------------------------------------------------------


def test_without_libatomic_the_machine_code_backend_is_chosen() -> None:
    code = textwrap.dedent("""
        import json, subprocess, sys
        from ctshm import atomics, ShmTraceRing
        b = atomics.get_backend()
        ring = ShmTraceRing.create("envlib", 2, 4096)
        ring.put(b"hi")
        assert bytes(ring.get(timeout=5)) == b"hi"
        ring.close()
        info = json.loads(subprocess.run([sys.executable, "-m", "ctshm", "info", "--json"],
                          capture_output=True, text=True, check=True).stdout)
        print(json.dumps({"backend": b.name, "info": info}))
    """) + EMPTY_AT_END
    out = json.loads(_ok(run_in_namespace(PRIVATE_SHM + hide_libatomic(), code)))
    assert out["backend"] == "machine-code"
    assert out["info"]["atomics_backend"] == "machine-code"
    assert out["info"]["atomics_available"] == ["machine-code"]
    assert "libatomic not found" in out["info"]["atomics_unavailable"]["libatomic"]


def test_control_with_libatomic_it_is_the_default() -> None:
    # The same child without the bind mount: proves the test above observes the mount.
    code = "from ctshm import atomics; print(atomics.get_backend().name)"
    r = run_in_namespace(PRIVATE_SHM, code)
    try:
        _libatomic_path()
    except OSError:
        pytest.skip("libatomic.so.1 is not installed here")
    assert _ok(r).strip() == "libatomic"


# ---------------------------------------------------------------------------------------------
# No executable memory and no libatomic: AtomicsUnavailable at first use, the rest works
# ---------------------------------------------------------------------------------------------

_MDWE = """
import ctypes, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
_libc = ctypes.CDLL(None, use_errno=True)
if _libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("NO-MDWE", ctypes.get_errno()); sys.exit(0)
"""


def test_no_exec_memory_and_no_libatomic_is_a_clear_error_at_first_use() -> None:
    code = _MDWE + """
import ctshm, json, subprocess
from ctshm import ShmMemory, ShmTraceRing, atomics, cli
m = ShmMemory.create_readonly("envx", 4096)       # segments need no atomics
w = ShmMemory.open_readwrite("envx"); w.buf[:3] = b"abc"; w.close()
assert bytes(m.buf[:3]) == b"abc"; m.close()
errors = []
for attempt in (atomics.get_backend, lambda: ShmTraceRing.create("envx", 2, 4096)):
    try:
        attempt()
        errors.append("no error")
    except atomics.AtomicsUnavailable as e:
        errors.append(str(e))
print(json.dumps({"errors": errors, "info": cli.environment()["atomics_backend"]}))
""" + EMPTY_AT_END
    out = _ok(run_in_namespace(PRIVATE_SHM + hide_libatomic(), code))
    if out.startswith("NO-MDWE"):
        pytest.skip(f"this kernel has no PR_SET_MDWE (needs Linux >= 6.3): {out.strip()}")
    res = json.loads(out)
    assert len(res["errors"]) == 2
    for e in res["errors"]:
        assert "no atomics backend works here" in e, e
        assert "libatomic not found" in e and "refused an executable page" in e, e
        assert "apt-get install libatomic1" in e, e
    assert res["info"].startswith("none (no atomics backend works here")


def test_control_mdwe_alone_leaves_libatomic_working() -> None:
    code = _MDWE + """
from ctshm import atomics
print(atomics.get_backend().name, atomics.available_backends())
"""
    out = _ok(run_in_namespace(PRIVATE_SHM, code))
    if out.startswith("NO-MDWE"):
        pytest.skip(f"this kernel has no PR_SET_MDWE: {out.strip()}")
    assert out.strip() == "libatomic ['libatomic']"  # machine code refused, as intended


# ---------------------------------------------------------------------------------------------
# No /dev/shm (AWS Lambda), read-only /dev/shm: OSError naming the directory and the fix
# ---------------------------------------------------------------------------------------------

# /dev becomes an empty tmpfs with only the device nodes Python needs: no /dev/shm at all.
NO_DEV_SHM = """
mount -t tmpfs ctshm-test /mnt
mkdir /mnt/dev
mount --rbind /dev /mnt/dev
mount -t tmpfs -o mode=755 ctshm-test /dev
for n in null zero urandom random full; do touch /dev/$n; mount --bind /mnt/dev/$n /dev/$n; done
ln -s /proc/self/fd /dev/fd
"""

_DIR_ERRORS = """
import errno, json, os, time
from ctshm import ShmMemory, ShmTraceRing, cli
from ctshm.semaphore import NamedSemaphore
out = {}
def attempt(label, f):
    t = time.monotonic()
    try:
        f()
        out[label] = "no error"
    except OSError as e:
        out[label] = [type(e).__name__, errno.errorcode.get(e.errno), str(e),
                      round(time.monotonic() - t, 2)]
attempt("memory create", lambda: ShmMemory.create_readonly("envd", 4096))
attempt("memory open", lambda: ShmMemory.open_readwrite("envd"))
attempt("ring create", lambda: ShmTraceRing.create("envd", 2, 4096))
attempt("ring open, no timeout", lambda: ShmTraceRing.open("envd", timeout=None))
attempt("semaphore", lambda: NamedSemaphore("/envd_s", create=True, value=0))
out["info"] = cli.environment()["shm_dir"]
print(json.dumps(out))
"""


def test_without_dev_shm_create_and_open_fail_at_once_naming_the_directory() -> None:
    res = json.loads(_ok(run_in_namespace(NO_DEV_SHM, _DIR_ERRORS, timeout=60)))
    assert res.pop("info").startswith("/dev/shm absent")
    for label, v in res.items():
        assert v != "no error", label
        kind, code, msg, seconds = v
        assert kind == "ShmDirError" and code == "ENOENT", (label, v)
        assert "/dev/shm does not exist" in msg and "mount -t tmpfs" in msg, (label, msg)
        assert seconds < 5, f"{label} took {seconds} s: it must not wait for a creator"


def test_read_only_dev_shm_create_and_open_fail_at_once_naming_the_fix() -> None:
    prelude = "mount -t tmpfs -o ro,size=16m ctshm-test /dev/shm\n"
    res = json.loads(_ok(run_in_namespace(prelude, _DIR_ERRORS, timeout=60)))
    assert "READ-ONLY" in res.pop("info")
    for label, v in res.items():
        assert v != "no error", label
        kind, code, msg, seconds = v
        assert kind == "ShmDirError", (label, v)
        assert code in ("EROFS", "ENOENT"), (label, v)  # ENOENT: opening what is not there
        assert "/dev/shm is mounted read-only" in msg and "remount" in msg, (label, msg)
        assert seconds < 5, f"{label} took {seconds} s"


def test_absent_object_on_a_good_dev_shm_is_still_file_not_found() -> None:
    # Control: the directory check must not swallow the ordinary "no such object".
    code = """
from ctshm import ShmMemory, ShmTraceRing
for f in (lambda: ShmMemory.open_readwrite("envn"), lambda: ShmTraceRing.open("envn", timeout=0.2)):
    try:
        f()
    except FileNotFoundError as e:
        print(type(e).__name__, "does not exist" in str(e))
"""
    out = _ok(run_in_namespace(PRIVATE_SHM, code)).split("\n")
    assert out[:2] == ["FileNotFoundError False", "FileNotFoundError False"]


# ---------------------------------------------------------------------------------------------
# A small /dev/shm (Docker's 64 MiB default)
# ---------------------------------------------------------------------------------------------


def test_small_dev_shm_info_shows_it_and_a_ring_too_large_warns_then_acquire_raises() -> None:
    # A ring larger than the free space is sparse: made with a warning (not refused), and
    # acquire() raises ENOSPC when the slots it really backs run out (never SIGBUS).
    code = """
import errno, json, subprocess, sys, warnings
from ctshm import ShmMemory, ShmTraceRing
out = {}
info = subprocess.run([sys.executable, "-m", "ctshm", "info", "--json"],
                      capture_output=True, text=True, check=True).stdout
out["info"] = json.loads(info)["shm_dir"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ring = ShmTraceRing.create("envs", 40, 1 << 20)   # 2 MiB header + 40 x 2 MiB = 82 MiB
out["big ring"] = [(w.category.__name__, str(w.message), w.filename) for w in caught]
try:
    for n in range(40):                            # whole slots: 2 MiB reserved each
        g = ring.acquire(timeout=0); g.buf[-1] = 1; g.commit()
    out["big ring full"] = "never"
except OSError as e:
    out["big ring full"] = [n, errno.errorcode[e.errno], e.filename]
ring.close()
with ShmTraceRing.create("envs", 8, 1 << 20) as ring:   # 18 MiB: fits
    ring.put(b"x")
    out["small ring"] = bytes(ring.get(timeout=5)).decode()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = ShmMemory.create_readonly("envs", 100 << 20)  # sparse: allowed, with a warning
    out["segment"] = [m.size, [(w.category.__name__, str(w.message), w.filename)
                               for w in caught]]
    m.close()
print(json.dumps(out))
""" + EMPTY_AT_END
    prelude = "mount -t tmpfs -o size=64m,mode=1777 ctshm-test /dev/shm\n"
    res = json.loads(_ok(run_in_namespace(prelude, code)))
    assert res["info"] == "/dev/shm size 64.0 MiB, free 64.0 MiB", res["info"]
    [(category, msg, filename)] = res["big ring"]
    assert category == "ResourceWarning"
    assert filename == "<string>", "the warning points at the caller of create()"
    assert "ShmTraceRing '/envs_t' needs 85,983,232 bytes (82.0 MiB), /dev/shm has " \
           "67,108,864 bytes (64.0 MiB) free of 64.0 MiB" in msg, msg
    assert "acquire()/put() raise OSError(ENOSPC)" in msg and "--shm-size" in msg, msg
    # 64 MiB hold the two header pages and 31 slots of 2 MiB: the 32nd is refused.
    assert res["big ring full"] == [31, "ENOSPC", "/envs_t"]
    assert res["small ring"] == "x"
    size, caught = res["segment"]
    assert size == 100 << 20
    assert len(caught) == 1 and caught[0][0] == "ResourceWarning", caught
    assert "needs 104,857,600 bytes (100.0 MiB), /dev/shm has 67,108,864 bytes" in caught[0][1]
    assert caught[0][2] == "<string>", "the warning points at the caller of create_readonly()"


# ---------------------------------------------------------------------------------------------
# The space check without root: a fake statvfs
# ---------------------------------------------------------------------------------------------


class _FakeVfs:
    f_frsize = 4096
    f_blocks = 16384   # 64 MiB
    f_bavail = 2560    # 10 MiB free
    f_flag = 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/shm is Linux's")
def test_check_free_warns_with_the_figures(monkeypatch: Any) -> None:
    monkeypatch.setattr(_shmdir.os, "statvfs", lambda path: _FakeVfs())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _shmdir.check_free("ShmTraceRing", "/r_t", 10 << 20, _shmdir.SPARSE_RING, 2)  # fits
        assert caught == []
        _shmdir.check_free("ShmTraceRing", "/r_t", (10 << 20) + 1, _shmdir.SPARSE_RING, 2)
        _shmdir.check_free("ShmMemory", "/m_m", 11 << 20, _shmdir.SPARSE_SEGMENT, 2)
    assert [w.category for w in caught] == [ResourceWarning, ResourceWarning]
    ring, seg = (str(w.message) for w in caught)
    assert "ShmTraceRing '/r_t' needs 10,485,761 bytes" in ring
    assert "/dev/shm has 10,485,760 bytes (10.0 MiB) free of 64.0 MiB" in ring
    assert "raise OSError(ENOSPC) once /dev/shm runs out, never SIGBUS" in ring
    assert "ShmMemory '/m_m' needs 11,534,336 bytes" in seg and "SIGBUS" in seg and "ENOSPC" in seg
    assert all(w.filename == __file__ for w in caught)
    assert _shmdir.describe() == "/dev/shm size 64.0 MiB, free 10.0 MiB"
