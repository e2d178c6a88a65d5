"""A fanned-out backfill: child flow runs of the backfill-chunk deployment, shared by two process
workers on one work pool of the real (harness) Prefect server; resumable from the checkpoints."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from prefect.client.orchestration import get_client

from blocks.config import Config
from flows.backfill import backfill, backfill_chunk, checkpoint_prefix, finished_chunks
from tests.flows.test_sweep import drain, put_simple_traces
from tests.flows.workers import pool_with_deployment, start_worker, stop_workers

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


@pytest.mark.timeout(900)  # child flow-run processes on a 2-core machine
def test_two_process_workers_share_the_chunks_and_a_second_run_resumes(
    fresh_config: Config, config_file: str, tmp_path: Path
) -> None:
    accounts = fresh_config.roster.accounts[:2]
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=2)
    since_end = (datetime.now(UTC) - end).total_seconds()
    expected: set[str] = set()
    for account in accounts:  # one trace in each of the two hours
        for age in (since_end + 600, since_end + 4200):
            expected |= set(put_simple_traces(fresh_config, account.account_id, 1, age_seconds=age))
    options = {
        "start": start,
        "end": end,
        "accounts": [a.account_id for a in accounts],
        "fan_out": True,
        "chunks_per_run": 1,
        "config_path": config_file,
    }

    pool = pool_with_deployment(backfill_chunk.name, "backfill-chunk", "flows/backfill.py:backfill_chunk", "backfill")
    logs = [Path(os.environ.get("XRAYLAKE_WORKER_LOGS", tmp_path)) / f"worker-{n}.log" for n in "ab"]
    workers = [start_worker(pool, log.stem, log) for log in logs]
    try:
        state = backfill(**options, return_state=True)
        second = backfill(**options, return_state=True)
    finally:
        stop_workers(workers)

    assert state.is_completed(), state.message
    totals = state.result()["totals"]
    chunks = 2 * len(accounts)
    assert totals["chunks"] == chunks and totals["chunks_finished"] == chunks and totals["complete"]
    sent = [t["Id"] for e in drain(fresh_config) for t in e.traces]
    assert set(sent) >= expected  # the accounts' other traffic of those hours may come too
    assert totals["traces"] == len(sent)  # the parent's totals are its children's, from the checkpoints

    # every child ran on one of the two workers, and both took some
    ran = [set(re.findall(r"flow run '([0-9a-f-]{36})'", log.read_text())) for log in logs]
    with get_client(sync_client=True) as client:
        children = {
            str(r.id)
            for r in client.read_flow_runs()
            if r.deployment_id is not None and f"backfill-{totals['backfill_id']}" in r.tags
        }
    assert len(children) == chunks
    assert ran[0] and ran[1] and ran[0] | ran[1] == children, (ran, children)

    # the same backfill again: every checkpoint exists, so no child is submitted and nothing is sent
    assert second.is_completed(), second.message
    again = second.result()["totals"]
    assert again["chunks_skipped"] == chunks and again["chunks_finished"] == 0 and again["traces"] == 0
    assert drain(fresh_config) == []
    store = fresh_config.archive
    for account in accounts:
        prefix = checkpoint_prefix(store.state_prefix, totals["backfill_id"], account.account_id, "us-east-1")
        assert len(finished_chunks(boto3.client("s3"), store.bucket, prefix)) == 2
