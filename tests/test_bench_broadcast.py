"""The broadcast workloads of ``python -m ctshm bench --broadcast`` run, verify every message
at every reader, and leave nothing behind (figures are never asserted: benchmarks only)."""

from __future__ import annotations

import pytest

from ctshm.bench import broadcasts

from .helpers import WORKER_PREFIX, our_shm_entries


@pytest.mark.parametrize("peer", ["ctshm-bcast", "ctshm-bcast-view", "os.pipe x4",
                                  "mp.Queue x4"])
def test_broadcast_workload_runs_verified(peer: str, shm_id: str) -> None:
    r = broadcasts.run_one(peer, "B4K", 0.005, shm_id, 60)
    assert r["ok"] and r["verified"], r
    assert r["n"] == 100 and r["mib_per_s"] > 0
    assert our_shm_entries(WORKER_PREFIX) == set()


def test_broadcast_table_has_every_peer() -> None:
    fake = {"ok": True, "verified": True, "n": 10, "size": 4096, "seconds": 1.0,
            "mib_per_s": 2.0, "msgs_per_s": 10.0}
    report = {"nproc": 2, "load": [1.0, 1.5],
              "workloads": {"B4K": {p: dict(fake) for p in broadcasts.PEERS},
                            "B1M": {"ctshm-bcast": dict(fake),
                                    "iceoryx2": {"ok": False, "why": "not measured: x"}}}}
    text = broadcasts.format_table(report)
    for p in broadcasts.PEERS:
        assert p in text
    assert "not measured: x" in text and "1.00x" in text
