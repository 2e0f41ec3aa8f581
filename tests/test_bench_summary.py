"""``python -m ctshm bench --quick`` fits a screen: one short table per workload with a
verdict line each, progress on stderr only, the peers that could not be measured on one
line with how to get them, and the project's own targets only with ``--targets``."""

from __future__ import annotations

import pytest

from ctshm.bench.compact import format_compact

from .helpers import run_python


@pytest.mark.timeout_s(300)
def test_quick_report_fits_a_screen(shm_id: str, tmp_path: object) -> None:
    code = ("import sys; from ctshm.cli import main; "
            f"sys.exit(main(['bench', '--quick', '--scale', '0.002', '--id-prefix', {shm_id!r},"
            " '--exclude', 'posix_ipc+shm,faster-fifo,iceoryx2']))")
    p = run_python(code, env={"SEEDREF_BIN": "/nonexistent/seedref",
                              "CTSHM_SEEDREF": "/nonexistent"}, timeout=280)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert len(lines) <= 30, p.stdout
    assert [ln.split()[0] for ln in lines if ln[:1] == "W"] == ["W1", "W2", "W3", "W4"]
    assert sum(ln.startswith("  -> ctshm") for ln in lines) == 4  # a verdict per workload
    missing = [ln for ln in lines if ln.startswith("not measured: ")]
    assert len(missing) == 1 and "rust-seed (set SEEDREF_BIN" in missing[0], p.stdout
    assert "targets" not in p.stdout and "[1/1]" not in p.stdout  # no progress on stdout
    assert "[1/1] W1" in p.stderr
    assert max(len(ln) for ln in lines) <= 100, p.stdout


def _report(**peer_state: bool) -> dict[str, object]:
    row = {"msgs_per_s": 1000.0, "mb_per_s": 1.0, "verified": True}
    return {
        "ctshm": "0", "seconds": 1.0, "targets": [
            {"target": "W1 batched >= 1,000,000 msg/s", "ratio": 0.5, "cmp": ">=",
             "need": 1.0, "met": False}],
        "environment": {"python": "3", "platform": "Linux", "cpus": 2,
                        "loadavg_start": [0.1]},
        "peers": {n: {"available": ok, "reason": None if ok else "absent",
                      "extra": n in ("faster-fifo", "iceoryx2")}
                  for n, ok in peer_state.items()},
        "workloads": {"W1": {"kind": "stream", "title": "200,000 x 64 B stream",
                             "reference": "ctshm-records", "results": {
                                 "ctshm-records": row, "os.pipe": {**row, "ratio": 0.5},
                                 "mp.Queue": {**row, "ratio": 4.0}}}},
    }


def test_missing_peers_share_one_line_with_how_to_install() -> None:
    text = format_compact(_report(**{"faster-fifo": False, "iceoryx2": False,
                                     "rust-seed": False, "os.pipe": True}))
    (line,) = [ln for ln in text.splitlines() if ln.startswith("not measured")]
    assert "faster-fifo, iceoryx2 (pip install 'ctshm[bench]')" in line
    assert "rust-seed (set SEEDREF_BIN" in line


def test_targets_only_with_the_flag() -> None:
    report = _report(**{"os.pipe": True})
    assert "W1 batched" not in format_compact(report)
    assert "W1 batched" in format_compact(report, targets=True)
    verdict = [ln for ln in format_compact(report).splitlines() if "->" in ln]
    assert verdict == ["  -> ctshm (records): 4.0x faster than mp.Queue; os.pipe is ahead "
                       "(up to 2.0x)"]


def test_a_long_verdict_wraps_within_the_screen() -> None:
    """The quick report's verdict with peers on both sides (seen: 103 columns for W4 under
    load) goes on two lines rather than past 100 columns."""
    from ctshm.bench.compact import _verdict
    others = {"mp.Queue": {"ratio": 9.2}, "mp.Pipe": {"ratio": 1.4}, "os.pipe": {"ratio": 0.7}}
    text = _verdict("pingpong", "ctshm (one per slot)", others)
    assert "mp.Queue, mp.Pipe" in text and "os.pipe is ahead" in text
    assert max(len(ln) for ln in text.splitlines()) <= 100, text
