"""The Promela model of ShmQueue's protocol (model/queue.pml), checked by
model/check_queue.sh: every configuration passes Q1-Q5 and every seeded mutant yields a
counterexample of its property (check_queue.sh's exit status says so)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from .helpers import REPO_ROOT

CHECK_SH = os.path.join(REPO_ROOT, "model", "check_queue.sh")
CHECK_TIMEOUT = 1500.0  # ~8 min of spin on 2 loaded cores; generous


@pytest.mark.timeout_s(CHECK_TIMEOUT + 60)
def test_queue_model_check(tmp_path: Any) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("model/check_queue.sh needs bash")
    env = dict(os.environ, CHECK_OUT=str(tmp_path / "trails"))
    try:
        proc = subprocess.run([bash, CHECK_SH], env=env, cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=CHECK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as e:
        partial = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                          for x in (e.stdout, e.stderr))
        pytest.fail(f"model/check_queue.sh did not finish within {CHECK_TIMEOUT:g} s:\n{partial}")
    out = proc.stdout + proc.stderr
    print(out)
    if proc.returncode == 77:
        reason = next((ln for ln in out.splitlines() if "SKIP" in ln), out.strip()[-300:])
        pytest.skip(f"queue model check not run: {reason}")
    assert proc.returncode == 0, f"model/check_queue.sh exit {proc.returncode}:\n{out[-6000:]}"
