"""Every failure path of every flow emits the event its alert automation
(deployments/automations.yaml) reacts to: each run below fails one way, and the event it emitted
is checked by name, resource and payload. Refused parameters, an account outside the roster and
a collect of an unknown account are covered in tests/flows/test_parameters.py, a reconcile
mismatch in tests/flows/test_reconcile.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from prefect.events.clients import AssertingPassthroughEventsClient
from prefect.events.worker import EventsWorker

from blocks.config import Config, LakeCatalog
from deployments.automations import load_definitions
from tests.flows.test_consume import send
from tests.flows.test_reconcile import captured_events

pytestmark = pytest.mark.usefixtures("prefect_harness")
__all__ = ["captured_events"]  # the fixture, used by name


def emitted(worker: EventsWorker) -> list[Any]:
    """Every event emitted so far (the worker stops once drained: call this once, at the end)."""
    worker.drain()
    return [e for client in AssertingPassthroughEventsClient.all for e in client.events]


def automation_for(event: str) -> str:
    """The name of the automation that alerts on `event` (fails when none does)."""
    names = [a["name"] for a in load_definitions() if event in a["trigger"]["expect"]]
    assert names, f"no automation alerts on {event}"
    return names[0]


def written(config: Config, tmp_path: Path, name: str, **update: Any) -> str:
    path = tmp_path / f"{name}.json"
    path.write_bytes(config.model_copy(update=update).to_json())
    return str(path)


@pytest.mark.slow  # ten flow runs: ~35 s on a loaded 2-core machine
def test_each_flow_failure_emits_the_event_its_automation_expects(
    fresh_config: Config, tmp_path: Path, captured_events: EventsWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import commit as commit_module
    from flows import compact as compact_module
    from flows.backfill import backfill, backfill_chunk
    from flows.collect import collect
    from flows.commit import commit
    from flows.compact import compact
    from flows.consume import consume
    from flows.replay import replay
    from flows.sweep import sweep

    # an unreachable catalog is transient: fail at once instead of after the tasks' retries
    monkeypatch.setattr(commit_module, "commit_table_task", commit_module.commit_table_task.with_options(retries=0))
    monkeypatch.setattr(compact_module, "plan_task", compact_module.plan_task.with_options(retries=0))

    good = written(fresh_config, tmp_path, "good")
    # every S3 call fails per account (watermarks, checkpoints): the account fails alone
    no_bucket = written(
        fresh_config,
        tmp_path,
        "no-bucket",
        archive=fresh_config.archive.model_copy(update={"bucket": "xraylake-missing-bucket"}),
    )
    no_catalog = written(fresh_config, tmp_path, "no-catalog", lake=LakeCatalog(sql_uri="sqlite:////nonexistent/l.db"))
    first = fresh_config.roster.accounts[0]
    region = first.regions[0]
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    execution = f"arn:aws:states:{region}:{first.account_id}:execution:orders:never-ran"
    send(fresh_config, "{not json")  # a poison message for the consume
    corrupt = (
        f"parquet/traces/account_id={first.account_id}/region={region}/dt={hour:%Y-%m-%d}/hour={hour:%H}/bad.parquet"
    )
    boto3.client("s3").put_object(Bucket=fresh_config.archive.bucket, Key=corrupt, Body=b"PAR1 not really")

    cases: list[tuple[str, Callable[[], Any], str, str, Callable[[dict[str, Any]], bool]]] = [
        (
            "sweep: no configuration",
            lambda: sweep(config_path=str(tmp_path / "missing.json"), return_state=True),
            "xraylake.flow.failed",
            "xraylake.flow.sweep",
            lambda p: p["error_kind"] == "ConfigError",
        ),
        (
            "sweep: one account fails",
            lambda: sweep(accounts=[first.account_id], config_path=no_bucket, return_state=True),
            "xraylake.account.failed",
            f"aws.account.{first.account_id}",
            lambda p: p["flow"] == "sweep" and p["region"] == region and "NoSuchBucket" in p["error"],
        ),
        (
            "backfill: one account fails",
            lambda: backfill(
                start=hour,
                end=hour + timedelta(hours=1),
                accounts=[first.account_id],
                config_path=no_bucket,
                return_state=True,
            ),
            "xraylake.account.failed",
            f"aws.account.{first.account_id}",
            lambda p: p["flow"] == "backfill" and p["region"] == region,
        ),
        (
            "backfill-chunk: its account fails",
            lambda: backfill_chunk(
                backfill_id="0123456789abcdef",
                account_id=first.account_id,
                region=region,
                start=hour,
                end=hour + timedelta(hours=1),
                config_path=no_bucket,
                return_state=True,
            ),
            "xraylake.account.failed",
            f"aws.account.{first.account_id}",
            lambda p: p["flow"] == "backfill-chunk" and p["region"] == region,
        ),
        (
            "collect: the execution does not exist",
            lambda: collect(execution_arn=execution, config_path=good, return_state=True),
            "xraylake.collect.failed",
            f"aws.stepfunctions.execution.{execution}",
            lambda p: p["error_kind"] != "" and "never-ran" in p["error"],
        ),
        (
            "consume: a message is dead-lettered",
            lambda: consume(wait_seconds=1, config_path=good, return_state=True),
            "xraylake.message.dead-lettered",
            f"aws.sqs.{fresh_config.queue.dlq_url}",
            lambda p: p["count"] == 1,
        ),
        (
            "replay: the archive is empty",
            lambda: replay(start=hour, end=hour + timedelta(hours=1), config_path=good, return_state=True),
            "xraylake.flow.failed",
            "xraylake.flow.replay",
            lambda p: "is empty or does not exist" in p["error"],
        ),
        (
            "commit: the lake catalog cannot be opened",
            lambda: commit(tables=["traces"], config_path=no_catalog, return_state=True),
            "xraylake.flow.failed",
            "xraylake.flow.commit",
            lambda p: "catalog" in p["error"],
        ),
        (
            "commit: a pending file is not lake Parquet",
            lambda: commit(tables=["traces"], config_path=good, return_state=True),
            "xraylake.lake.file-refused",
            f"s3.{fresh_config.archive.bucket}.{corrupt}",
            lambda p: bool(p["reason"]),
        ),
        (
            "compact: the lake catalog cannot be opened",
            lambda: compact(tables=["traces"], config_path=no_catalog, return_state=True),
            "xraylake.flow.failed",
            "xraylake.flow.compact",
            lambda p: "catalog" in p["error"],
        ),
    ]
    for label, run, *_ in cases:
        state = run()
        if label.startswith(("consume", "commit: a pending")):  # set aside as data: the run completes
            assert state.is_completed(), (label, state)
        else:
            assert state.is_failed() and not state.is_crashed(), (label, state)
            assert state.message and "\n" not in state.message, (label, state.message)
    events = emitted(captured_events)
    missing = []
    for label, _, event, resource, check in cases:
        mine = [e.payload for e in events if e.event == event and e.resource.id == resource]
        if not any(check(payload) for payload in mine):
            missing.append((label, event, resource, mine))
        automation_for(event)
    assert not missing, missing
