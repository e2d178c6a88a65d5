"""Process workers on a work pool of the real (harness) Prefect server, for tests of flows that
fan out child runs to a deployment (the backfill's chunks, the sweep's shards)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL

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


def pool_with_deployment(flow_name: str, deployment: str, entrypoint: str, queue: str) -> str:
    """A new process work pool holding `deployment` on `queue`, as `prefect deploy` registers it
    from prefect.yaml; returns the pool's name."""
    pool = f"{deployment}-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        client.create_deployment(
            flow_id=client.create_flow_from_name(flow_name),
            name=deployment,
            entrypoint=entrypoint,
            work_pool_name=pool,
            work_queue_name=queue,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_DIR)}}],
        )
    return pool
