"""A fanned-out backfill: child flow runs of the backfill-chunk deployment, shared by two process
workers on one work pool of the real (harness) Prefect server; resumable from the checkpoints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL

from blocks.config import Config
from flows.backfill import backfill, backfill_chunk, checkpoint_prefix, finished_chunks
from tests.flows.test_sweep import drain, put_simple_traces

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
PROJECT_DIR = Path(__file__).resolve().parents[2]


def start_worker(pool: str, name: str, log: Path, queue: str = "backfill") -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO",  # the CLI quiets its console; a worker must not
        "PYTHONUNBUFFERED": "1",
    }
    prefect = Path(sys.executable).parent / "prefect"
    command = [
        str(prefect),
        "worker",
        "start",
        "--pool",
        pool,
        "--work-queue",
        queue,
        "--name",
        name,
        "--limit",
        "1",
    ]
    return subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker slow to stop on SIGTERM on a loaded machine
            worker.kill()
            worker.wait(timeout=30)


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

    pool = f"backfill-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:  # what `prefect deploy` registers from prefect.yaml
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        client.create_deployment(
            flow_id=client.create_flow_from_name(backfill_chunk.name),
            name="backfill-chunk",
            entrypoint="flows/backfill.py:backfill_chunk",
            work_pool_name=pool,
            work_queue_name="backfill",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_DIR)}}],
        )
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
