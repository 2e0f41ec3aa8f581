"""The Promela model of ShmBroadcast's protocol (model/broadcast.pml): ``check_broadcast.sh``
checks every configuration exhaustively with spin; the model of broadcast.py passes every
property (P1 no overwrite of an unread slot, P2 per-reader order with nothing lost before
the end, P3 no lost wake-up, L1 progress after a reader dies), each seeded mutant fails
with its property, and the two design findings (FINDING_*) fail again when put back."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from .helpers import REPO_ROOT

CHECK = os.path.join(REPO_ROOT, "model", "check_broadcast.sh")


@pytest.mark.timeout_s(1600)
def test_broadcast_model_check(tmp_path: Any) -> None:
    if shutil.which("spin") is None or shutil.which("gcc") is None:
        pytest.skip("spin and gcc are needed to model-check (apt-get install spin gcc)")
    env = dict(os.environ, CHECK_OUT=str(tmp_path))
    out = subprocess.run(["bash", CHECK], capture_output=True, text=True, timeout=1500,
                         cwd=REPO_ROOT, check=False, env=env)
    if out.returncode == 77:
        pytest.skip(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "PASS" in out.stdout
    for run in ("mutant-release-early", "mutant-finish-after", "mutant-no-recheck",
                "mutant-no-evict", "finding-join-no-wake"):
        assert run in out.stdout
