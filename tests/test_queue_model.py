"""The Promela model of ShmQueue's protocol (model/queue.pml), checked by
model/check_queue.sh (through model/check.sh's runner): every configuration passes Q1-Q5,
including get_many's batched claim (BATCH runs), and every seeded mutant yields a
counterexample of its property (the script's exit status says so)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from .helpers import REPO_ROOT
from .test_model import run_check_script

CHECK_SH = os.path.join(REPO_ROOT, "model", "check_queue.sh")
CHECK_TIMEOUT = 1500.0  # ~6 min of spin on 2 loaded cores; generous


@pytest.mark.timeout_s(CHECK_TIMEOUT + 60)
def test_queue_model_check(tmp_path: Any) -> None:
    run_check_script(CHECK_SH, CHECK_TIMEOUT, tmp_path)
