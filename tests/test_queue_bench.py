"""The ShmQueue benchmark workloads run, verify their messages, and format a table."""

from __future__ import annotations

import pytest

from ctshm.bench import queues as qb


@pytest.mark.parametrize("name", ["Q3", "Q3m"])  # 4x4 64 B; Q3m: consumers take batches
@pytest.mark.parametrize("peer", qb.QUEUE_PEERS)
def test_queue_workload_runs_and_verifies(peer: str, name: str, shm_id: str) -> None:
    if qb.available(peer):
        pytest.skip(str(qb.available(peer)))
    w = next(w for w in qb.QUEUE_WORKLOADS if w.name == name)._replace(messages=400)
    r = qb.run_one(peer, w, shm_id, timeout=60)
    assert r["verified"] and r["messages"] == 400 and r["msgs_per_s"] > 0, r


def test_queue_report_table(shm_id: str) -> None:
    rep = qb.run(scale=0.0, repeat=1, peers=("ctshm-queue",), prefix=shm_id, log=lambda s: None)
    text = qb.format_table(rep)
    assert "Q7" in text and "ctshm-queue" in text
    assert all(d["results"]["ctshm-queue"]["verified"] for d in rep["workloads"].values())
