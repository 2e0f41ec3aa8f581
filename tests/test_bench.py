"""``python -m ctshm bench``: a smoke run with tiny counts in a subprocess.

Only structure and verification are asserted, never speed: the numbers depend on whatever
else the machine runs.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from ctshm import bench

from .helpers import run_python

ALWAYS = ("ctshm-records", "ctshm-slot", "mp.Queue", "mp.Pipe", "os.pipe")


def run_bench(shm_id: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    code = ("import sys; from ctshm.cli import main; "
            f"sys.exit(main(['bench', '--quick', '--json', '--id-prefix', {shm_id!r}, "
            f"*{list(args)!r}]))")
    p = run_python(code, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    report: dict[str, Any] = json.loads(p.stdout)
    return report


@pytest.mark.timeout_s(300)
def test_bench_smoke_every_workload_verified(shm_id: str) -> None:
    peers = [n for n in bench.PEERS if n != "rust-seed" or os.environ.get("SEEDREF_BIN")]
    report = run_bench(shm_id, "--scale", "0.002", "--import-n", "1", "--timeout", "60",
                       "--peers", ",".join(peers))
    assert set(report["workloads"]) == {"W1", "W2", "W3", "W4"}
    assert report["leaked_and_removed"] == []
    for w, d in report["workloads"].items():
        wl = bench.WORKLOADS[w]
        assert d["count"] == max(10, round(wl.full_count * 0.002))
        assert d["reference"] in d["results"]
        expected = {n for n in peers if wl.kind in bench.PEERS[n].kinds
                    and report["peers"][n]["available"]}
        assert set(d["results"]) == expected, w
        assert set(ALWAYS) & expected == {n for n in ALWAYS if wl.kind in bench.PEERS[n].kinds}
        for name, r in d["results"].items():
            assert r["ok"], (w, name, r.get("error"))
            assert r["verified"], (w, name, r)
            assert r["count"] == d["count"] and r["errors"] == 0, (w, name, r)
            if d["kind"] == "pingpong":
                assert 0 < r["median_us"] <= r["p99_us"], (w, name, r)
            else:
                assert r["msgs_per_s"] > 0 and r["elapsed_s"] > 0, (w, name, r)
            assert r["ratio"] is not None and r["ratio"] > 0
    for n, p in report["peers"].items():  # an unavailable peer says why
        assert p["available"] or p["reason"], n
    imp = report["import"]["default"]
    assert set(imp["importtime_ms"]) == {"ctshm", "multiprocessing.shared_memory"}
    assert all(v > 0 for v in imp["importtime_ms"].values())
    mem = report["memory"]
    assert mem["allocated_after"] > mem["allocated_before"]
    assert {t["target"] for t in report["targets"]} >= {
        "W1 batched >= 1,000,000 msg/s", "W4 median <= 0.75x os.pipe"}


@pytest.mark.timeout_s(120)
def test_bench_table_output_and_subset(shm_id: str) -> None:
    code = ("import sys; from ctshm.cli import main; "
            f"sys.exit(main(['bench', '--quick', '--scale', '0.001', '--id-prefix', {shm_id!r}, "
            "'--workloads', 'W1,W4', '--peers', 'ctshm-slot,os.pipe', '--no-import', "
            "'--no-memory']))")
    p = run_python(code, timeout=100)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    heads = [line.split()[0] for line in out.splitlines() if line[:1] == "W"]
    assert heads == ["W1", "W4"], out
    assert out.count("verified") >= 4
    assert "targets (informational" in out


def test_bench_rejects_unknown_names() -> None:
    assert bench.main(["--workloads", "W9"]) == 2
    assert bench.main(["--peers", "carrier-pigeon"]) == 2


@pytest.mark.seedref
@pytest.mark.timeout_s(300)
def test_bench_rust_seed_peer(shm_id: str) -> None:
    path, why = bench.find_seedref()
    if path is None:
        pytest.skip(f"Rust seed peer unavailable: {why}")
    report = run_bench(shm_id, "--scale", "0.005", "--workloads", "W1,W3", "--peers",
                       "ctshm-slot,rust-seed", "--no-import", "--no-memory")
    for w in ("W1", "W3"):
        r = report["workloads"][w]["results"]["rust-seed"]
        assert r["verified"] and r["count"] == report["workloads"][w]["count"], r
