"""Opt-in: the atomics (and ring) tests on 64-bit Arm, under qemu-user emulation.

Runs ``tools/aarch64/run-tests.sh --quick`` (an arm64 Debian userland entered with chroot +
binfmt_misc + qemu-aarch64-static; both atomics backends, multi-process contention) and
expects exit status 0.  Skipped unless ``CTSHM_AARCH64=1`` and the userland has been built
(``sudo tools/aarch64/build-userland.sh``, a few minutes, ~220 MB); needs root.  See
tools/aarch64/README.md for what the emulated run proves and what it does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "aarch64" / "run-tests.sh"
ROOT = Path(os.environ.get("CTSHM_ARM64_ROOT", "/var/tmp/ctshm-arm64-root"))
MARKER = ROOT / ".ctshm-userland-complete"

pytestmark = pytest.mark.aarch64_emulated


def _skip_reason() -> str | None:
    if os.environ.get("CTSHM_AARCH64", "").strip() != "1":
        return ("aarch64 emulation is opt-in: set CTSHM_AARCH64=1 (after building the userland "
                "with tools/aarch64/build-userland.sh)")
    if not sys.platform.startswith("linux"):
        return "aarch64 emulation needs Linux (chroot, binfmt_misc, qemu-user)"
    if not MARKER.is_file():
        return (f"CTSHM_AARCH64=1 but there is no arm64 userland at {ROOT} "
                f"(missing {MARKER.name}): run tools/aarch64/build-userland.sh as root first")
    if os.geteuid() != 0:
        return "aarch64 emulation needs root (chroot, mount, binfmt_misc)"
    return None


@pytest.mark.timeout_s(420)  # the quick run is bounded to ~5 minutes by its own budget
def test_quick_run_under_qemu_aarch64() -> None:
    reason = _skip_reason()
    if reason is not None:
        print(f"SKIP aarch64_emulated: {reason}")
        pytest.skip(reason)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--quick"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=400,
    )
    tail = "\n".join(proc.stdout.splitlines()[-60:])
    print(tail)
    assert proc.returncode == 0, (
        f"tools/aarch64/run-tests.sh --quick exited {proc.returncode}; last lines:\n{tail}")
