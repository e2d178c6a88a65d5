"""What every flow does around its body (flows/parameters.py `takes`): refused parameters and
configuration problems end the run Failed within seconds with a one-line message naming the
cause, the flow's failure event reaches the Prefect server, and runs log at INFO."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.config import Config

pytestmark = pytest.mark.usefixtures("prefect_harness")


def events_named(
    name: str, resource_id: str, matching: Callable[[Any], bool] = lambda event: True, timeout: float = 30.0
) -> list[Any]:
    """The server's events `name` on `resource_id`, once one of them is `matching`: the server
    stores events asynchronously, and an earlier test's event of the same name may be there first."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=30)
    wanted = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_events(wanted, limit=50).events
            if any(map(matching, found)) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def run_logs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        return client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def test_end_before_start_fails_the_run_in_seconds_with_one_line() -> None:
    from flows.replay import replay

    now = datetime.now(UTC)
    began = time.monotonic()
    state = replay(start=now.isoformat(), end=(now - timedelta(hours=1)).isoformat(), return_state=True)
    assert time.monotonic() - began < 30
    assert state.is_failed() and not state.is_crashed()
    assert state.message is not None and "\n" not in state.message
    assert "InvalidParameters: empty range: end" in state.message and "is not after start" in state.message

    def ours(event: Any) -> bool:
        return "is not after start" in event.payload["error"]

    events = events_named("xraylake.flow.failed", "xraylake.flow.replay", ours)
    assert any(map(ours, events)), events


def test_collect_of_an_unknown_account_fails_naming_it_and_emits_collect_failed(config_file: str) -> None:
    from flows.collect import collect

    arn = "arn:aws:states:us-east-1:999999999999:execution:orders:run-unknown"
    state = collect(execution_arn=arn, config_path=config_file, return_state=True)
    assert state.is_failed() and not state.is_crashed()
    assert state.message is not None and "\n" not in state.message
    assert "UnknownAccountError: account '999999999999' is not in the roster" in state.message
    (event, *_) = events_named("xraylake.collect.failed", f"aws.stepfunctions.execution.{arn}")
    assert event.payload["error_kind"] == "UnknownAccountError"
    assert "999999999999" in event.payload["error"]


def test_a_run_logs_its_progress_at_info(fresh_config: Config, config_file: str) -> None:
    from flows.sweep import sweep

    account = fresh_config.roster.accounts[0].account_id
    state = sweep(accounts=[account], lag_seconds=0, config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    logs = run_logs(state.state_details.flow_run_id)
    info = [log.message for log in logs if log.level == 20]
    assert any(m.startswith("sweep starting with") and account in m for m in info), info
    assert any(f"account {account} (dev) region us-east-1:" in m for m in info), info  # the task's line
    assert any(m.startswith("sweep finished: 0 traces sent") for m in info), info
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                key=ArtifactFilterKey(any_=["xraylake-sweep-summary"]),
            )
        )
    rows = [line.split("|")[1].strip() for line in str(summary.data).splitlines() if line.startswith("| ")]
    rows = [r for r in rows if r]  # the header row is empty
    assert rows[:3] == ["accounts", "account/regions", "failed account/regions"], rows
    assert [r for r in rows if r.startswith("roster")] == ["roster"], rows  # said once
