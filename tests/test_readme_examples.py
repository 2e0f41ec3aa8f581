"""Every code block of README.md runs, as a newcomer would paste it.

* ``python`` blocks: each is saved to a file and run as a script in a fresh interpreter
  (``spawn`` children re-import it, as they would ``hello.py``), once plainly and once with
  ``-X dev`` (so the checking mode of rule 1 finds no view outliving its guard).  Ids in the
  README start with ``demo_``; here they are made unique per test and xdist worker.  A block
  must exit 0 and print no warning at all (no ``UnreadMessagesWarning``, no
  ``StaleViewWarning``, no ``ResourceWarning``).
* ``sh`` blocks: every ``python -m ctshm ...`` command runs as written (``bench --quick``
  with the hidden ``--scale`` so the test stays short; the full quick run is
  tests/test_bench.py's business); the install line is checked by installing the checkout
  into a scratch directory without network (``--no-build-isolation --no-deps``).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO_ROOT, WORKER_PREFIX

README = Path(REPO_ROOT) / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
_counter = itertools.count(1)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in _BLOCK.findall(README.read_text()) if kind == lang]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("PYTHONDEVMODE", "PYTHONWARNINGS", "CTSHM_CHECK_VIEWS"):
        env.pop(k, None)
    return env


def test_readme_has_the_blocks_this_test_runs() -> None:
    assert len(_blocks("python")) >= 6 and len(_blocks("sh")) >= 3
    assert {kind for kind, _ in _BLOCK.findall(README.read_text())} <= {"python", "sh"}


@pytest.mark.timeout_s(150)
@pytest.mark.parametrize("dev", [False, True], ids=["plain", "dev-mode"])
@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs(tmp_path: Path, index: int, dev: bool) -> None:
    numpy_needed = "numpy" in _blocks("python")[index]
    if numpy_needed:
        pytest.importorskip("numpy")
    code = _blocks("python")[index].replace('"demo_', f'"{WORKER_PREFIX}_rm{next(_counter)}')
    script = tmp_path / "example.py"
    script.write_text(code)
    cmd = [sys.executable, *(["-X", "dev"] if dev else []), str(script)]
    # Below the test's own hang bound: on a hang, run() kills the example (no orphan left
    # blocked with the ring open; the leak check then removes and reports its objects).
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=90, check=False)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    if "def producer" in code:  # the hello world prints its three messages
        assert out.stdout.split("\n")[:3] == ["hello 0", "hello 1", "hello 2"]


def _sh_commands() -> list[str]:
    cmds = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                cmds.append(line)
    return cmds


def _install_parts() -> list[list[str]]:
    return [shlex.split(p) for c in _sh_commands() for p in c.split("&&")
            if shlex.split(p)[:2] == [".venv/bin/pip", "install"]]


def test_install_line_installs_the_checkout(tmp_path: Path) -> None:
    """``.venv/bin/pip install .``: the same, offline, into a scratch directory (CI runs the
    line itself, with network, in .ci/run's first step)."""
    assert _install_parts() and all(p[2:] == ["."] for p in _install_parts())
    try:
        import wheel  # noqa: F401 (pip builds the package with it, offline)
    except ImportError:
        pytest.skip("the `wheel` package is not installed here: pip cannot build the "
                    "checkout offline (.ci/run installs it with `pip install` on every run)")
    run = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
           "--no-build-isolation", "--no-index", "--target", str(tmp_path / "site"), REPO_ROOT]
    out = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "ctshm" / "ring.py").exists()


@pytest.mark.timeout_s(300)
@pytest.mark.parametrize("command", _sh_commands())
def test_sh_command_runs(command: str) -> None:
    """Each ``python -m ctshm`` command of a line (the venv and install steps are
    test_install_line_installs_the_checkout's)."""
    ran = 0
    for part in (p.strip() for p in command.split("&&")):
        argv = shlex.split(part)
        if argv[:3] == ["python3", "-m", "venv"] or argv[:2] == [".venv/bin/pip", "install"]:
            continue
        if argv[0] in ("python", ".venv/bin/python"):
            argv = [sys.executable, *argv[1:]]
        assert argv[1:3] == ["-m", "ctshm"], f"the README runs an unexpected command: {part}"
        if argv[3:5] == ["bench", "--quick"]:
            argv += ["--scale", "0.002", "--id-prefix", f"{WORKER_PREFIX}_rb"]
        out = subprocess.run(argv, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                             timeout=240, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        ran += 1
    if not ran:
        pytest.skip("an install-only line (see test_install_line_installs_the_checkout)")
