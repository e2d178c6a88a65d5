"""Child flow runs on a deployment: how a parent fans work out across workers and waits for it.

Used by the fanned-out backfill (one child per group of chunks) and the sharded sweep (one child
per shard). Any number of workers on the deployment's work pool share the children; the
deployment's concurrency limit bounds how many run at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import State

from blocks.config import BLOCK_SOURCE

POLL_SECONDS = 2.0


def config_parameters(config_path: str | None) -> dict[str, Any]:
    """The children read the parent's configuration (else the deployment's own config_block)."""
    if config_path and config_path.startswith(BLOCK_SOURCE):
        return {"config_block": config_path.removeprefix(BLOCK_SOURCE)}
    if config_path:
        return {"config_path": config_path}
    return {}


def submit(deployment: str, parameters: dict[str, Any], tags: list[str]) -> UUID:
    """One child run of `deployment` (flow-name/deployment-name), scheduled now; not awaited."""
    try:
        child: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call in a sync flow
            deployment, parameters=parameters, timeout=0, tags=tags
        )
    except ObjectNotFound:  # Prefect's own message is "None"
        raise LookupError(
            f"deployment {deployment} does not exist on this Prefect server: serve it (`xraylake serve`) "
            "or deploy it (`prefect deploy --all`) with a worker on its work pool"
        ) from None
    return child.id


def wait_for(runs: Iterable[UUID], on_poll: Callable[[], None] | None = None) -> dict[UUID, State]:
    """The final state of every run, polling the API every POLL_SECONDS (`on_poll` after each)."""
    pending = list(runs)
    states: dict[UUID, State] = {}
    with get_client(sync_client=True) as client:
        while len(states) < len(pending):
            time.sleep(POLL_SECONDS)
            for run_id in pending:
                if run_id not in states:
                    state = client.read_flow_run(run_id).state
                    if state is not None and state.is_final():
                        states[run_id] = state
            if on_poll is not None:
                on_poll()
    return states
