"""``python -m ctshm bench``: a smoke run with tiny counts in a subprocess.

Only structure and verification are asserted, never speed: the numbers depend on whatever
else the machine runs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ctshm import bench
from ctshm.bench import sp1

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
            "'--no-memory', '--full-report', '--targets']))")
    p = run_python(code, timeout=100)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    heads = [line.split()[0] for line in out.splitlines() if line[:1] == "W"]
    assert heads == ["W1", "W4"], out
    assert out.count("verified") >= 4
    assert "targets (informational" in out
    assert out.count("  machine: nproc ") == 2, out  # every table names its machine


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


def _with_seed(peers: list[str]) -> list[str]:
    return [*peers, "rust-seed"] if os.environ.get("SEEDREF_BIN") else peers


@pytest.mark.timeout_s(300)
def test_bench_oversubscribe_two_pairs_every_message_delivered(shm_id: str) -> None:
    peers = _with_seed(["ctshm-records", "ctshm-slot", "mp.Pipe", "os.pipe"])
    report = run_bench(shm_id, "--scale", "0.002", "--oversubscribe", "2", "--workloads",
                       "W1,W4", "--peers", ",".join(peers), "--no-import", "--no-memory",
                       "--timeout", "120")
    assert report["oversubscribe"] == 2
    assert report["leaked_and_removed"] == []
    env = report["environment"]
    assert env["nproc"] >= 1 and env["cpu_model"]
    for w in ("W1", "W4"):
        d = report["workloads"][w]
        per_pair = max(10, round(bench.WORKLOADS[w].full_count * 0.002))
        assert d["count"] == per_pair and d["pairs"] == 2
        assert len(d["loadavg_before"]) == 3 and len(d["loadavg_after"]) == 3
        expected = {n for n in peers if bench.WORKLOADS[w].kind in bench.PEERS[n].kinds}
        assert set(d["results"]) == expected, w
        for name, r in d["results"].items():
            assert r["ok"] and r["verified"], (w, name, r)
            assert r["pairs"] == 2 and r["errors"] == 0, (w, name, r)
            assert r["count"] == 2 * per_pair, (w, name, r)  # the aggregate: both pairs
            assert len(r["per_pair"]) == 2
            for p in r["per_pair"]:
                assert p["verified"] and p["count"] == per_pair, (w, name, p)
            assert r["msgs_per_s"] > 0 and r["ratio"] is not None


READERS = ["memoryview"] + (["numpy"] if sp1.Verifier(8 << 20).name == "numpy" else [])


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.timeout_s(200)
def test_bench_sp1_every_byte_delivered(shm_id: str, reader: str) -> None:
    peers = _with_seed(["ctshm-slot", "os.pipe"])  # os.pipe has no SP1: not in the table
    report = run_bench(shm_id, "--scale", "0.002", "--workloads", "SP1", "--sp1-slot-mib",
                       "2", "--sp1-reader", reader, "--peers", ",".join(peers),
                       "--no-import", "--no-memory", "--timeout", "120")
    assert report["leaked_and_removed"] == []
    d = report["workloads"]["SP1"]
    assert set(report["workloads"]) == {"SP1"}
    assert d["size"] == 2 << 20 and d["depth"] == 5 and d["count"] == 10
    assert d["reader"] == reader
    assert set(d["results"]) == {n for n in peers if n != "os.pipe"}
    for name, r in d["results"].items():
        assert r["ok"] and r["verified"], (name, r)
        assert r["count"] == 10 and r["errors"] == 0, (name, r)
        assert r["bytes"] == 10 * (2 << 20), (name, r)  # every byte was read and checked
        assert r["verifier"] == reader
        assert r["max_held"] == 3 and r["releases_out_of_order"] > 0, (name, r)
        assert r["gb_per_s"] > 0
    assert set(d["baseline"]) == {"memcpy (1 process)", "fill+verify (1 process)"}
    for r in d["baseline"].values():
        assert r["verified"] and r["bytes"] == 10 * (2 << 20)


@pytest.mark.parametrize("reader", READERS)
def test_sp1_checksum_catches_one_wrong_byte(reader: str) -> None:
    size = 2 << 20
    table = sp1.frame_table(size)
    buf = memoryview(bytearray(size))
    ver = sp1.Verifier(size, reader)
    for seq in (0, 1, 255, 256, 1000):
        sp1.fill(buf, seq, table)
        assert sp1.check_frame(buf, seq, ver) is None
        assert sp1.check_frame(buf, seq + 1, ver) is not None  # wrong sequence number
        for off in (16, size // 2 + 3, size - 1):  # first, a middle and the last byte
            buf[off] ^= 0x40
            why = sp1.check_frame(buf, seq, ver)
            assert why is not None and "checksum" in why, (seq, off)
            buf[off] ^= 0x40
        assert sp1.check_frame(buf[:-8], seq, ver) is not None  # short view


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_find_seedref_env_then_cwd_parents(tmp_path: Path) -> None:
    fake = tmp_path / "seedref-bin"
    _executable(fake, "#!/bin/sh\nexit 0\n")
    src = tmp_path / "top" / "shared" / "seedref"
    src.mkdir(parents=True)
    _executable(src / "build.sh", f"#!/bin/sh\necho building >&2\necho {fake}\n")
    deep = tmp_path / "top" / "checkout" / "sub"
    deep.mkdir(parents=True)
    assert bench.find_seedref(env={}, cwd=str(deep)) == (str(fake), None)
    assert bench.find_seedref(env={"CTSHM_SEEDREF": str(src)}, cwd="/") == (str(fake), None)
    assert bench.find_seedref(env={"SEEDREF_BIN": str(fake)}, cwd="/") == (str(fake), None)
    path, why = bench.find_seedref(env={"SEEDREF_BIN": str(src)}, cwd=str(deep))
    assert path is None and why is not None and "SEEDREF_BIN" in why
    path, why = bench.find_seedref(env={"CTSHM_SEEDREF": str(tmp_path)}, cwd=str(deep))
    assert path is None and why is not None and "build.sh" in why
    path, why = bench.find_seedref(env={}, cwd=str(tmp_path))  # no shared/seedref above
    assert path is None and why is not None
    path, why = bench.find_seedref(build=False, env={}, cwd=str(deep))
    assert path is None and why is not None and "not built" in why


def test_cli_imports_bench_only_to_run_it() -> None:
    code = ("import contextlib, io, sys; from ctshm.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(['info', '--json'])\n"
            "print(rc, 'ctshm.bench' in sys.modules)\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(['bench', '--workloads', 'W9'])\n"
            "print(rc, 'ctshm.bench' in sys.modules)")
    p = run_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "False", "2", "True"], p.stdout
