"""Every flow works on the roster discovered from AWS Organizations (no static accounts at all):
backfill, consume, reconcile, replay and collect accept a discovered account; an account created
after the cache was written joins at the next sweep; a retired one is refused as retired.
Moto server over HTTP, the strict X-Ray front, flows under a real Prefect server."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from blocks import OrganizationsSource
from blocks.config import Config
from flows.backfill import backfill
from flows.collect import collect
from flows.consume import consume
from flows.reconcile import reconcile
from flows.replay import replay
from flows.sweep import sweep
from sandbox import seed
from tasks import archive
from tasks import reconcile as rec
from tasks.aws import MemberSessions
from tasks.index import client_for
from tasks.mappings import traces_alias
from tasks.organizations import load_run_config
from tests.flows.test_sweep import put_simple_traces

# slow: a dozen flow runs; the timeout also covers the Prefect server's start on a loaded machine
pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass
class OrgWorld:
    """An OU of this test's own, its accounts, and a config whose roster is that OU (no static list)."""

    org: Any
    root: str
    ou: str
    config: Config
    path: str

    def create(self, name: str) -> str:
        status = self.org.create_account(Email=f"{name}-{uuid.uuid4().hex[:6]}@example.com", AccountName=name)
        account_id = str(status["CreateAccountStatus"]["AccountId"])
        self.org.move_account(AccountId=account_id, SourceParentId=self.root, DestinationParentId=self.ou)
        return account_id


@pytest.fixture
def world(fresh_config: Config, tmp_path: Path) -> OrgWorld:
    org = boto3.client("organizations")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name=f"r-{uuid.uuid4().hex[:8]}")["OrganizationalUnit"]["Id"]
    source = OrganizationsSource(
        role_arn=f"arn:aws:iam::{seed.LOG_ACCOUNT_ID}:role/{seed.ORGANIZATIONS_READER_ROLE}",
        parents=[ou],
        cache_ttl_seconds=0,  # every sweep rediscovers; the other flows read the cache whatever its age
    )
    roster = fresh_config.roster.model_copy(update={"source": "organizations", "organizations": source, "accounts": []})
    config = fresh_config.model_copy(update={"roster": roster})
    path = tmp_path / "org-config.json"
    path.write_bytes(config.to_json())
    return OrgWorld(org, root, ou, config, str(path))


def range_back(hours: int = 1) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours), now


def indexed(config: Config, account_id: str) -> set[str]:
    search = client_for(config.opensearch)
    search.indices.refresh(index=traces_alias(config.opensearch.index_prefix))
    hits = search.search(
        index=traces_alias(config.opensearch.index_prefix),
        body={"size": 1000, "query": {"term": {"account_id": account_id}}},
    )["hits"]["hits"]
    return {h["_source"]["trace_id"] for h in hits}


def archived(config: Config, account_id: str) -> int:
    prefix = f"{config.archive.raw_prefix}/account_id={account_id}/"
    return sum(1 for _ in archive.list_keys(boto3.client("s3"), config.archive.bucket, prefix))


def execution_in(config: Config, account_id: str) -> tuple[str, str]:
    """A real (moto) Step Functions execution in the account, and its X-Ray trace id."""
    states = MemberSessions(config.roster).client(account_id, "us-east-1", "stepfunctions")
    machine = states.create_state_machine(
        name="orders",
        definition=orjson.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}).decode(),
        roleArn=f"arn:aws:iam::{account_id}:role/sfn",
    )["stateMachineArn"]
    execution = states.start_execution(stateMachineArn=machine, name="run-1")["executionArn"]
    started = states.describe_execution(executionArn=execution)["startDate"].timestamp()
    trace_id = f"1-{int(started):08x}-{'c' * 24}"
    root = {
        "name": "orders",
        "id": "2" * 16,
        "trace_id": trace_id,
        "start_time": started,
        "end_time": started + 0.2,
        "origin": "AWS::StepFunctions::StateMachine",
        "resource_arn": machine,
        "aws": {"execution_arn": execution},
    }
    xray = MemberSessions(config.roster).client(account_id, "us-east-1", "xray")
    xray.put_trace_segments(TraceSegmentDocuments=[orjson.dumps(root).decode()])
    return execution, trace_id


def test_a_discovered_account_is_backfilled_consumed_reconciled_replayed_and_collected(world: OrgWorld) -> None:
    config, path = world.config, world.path
    found = world.create("found")
    ids = set(put_simple_traces(config, found, 4))
    start, end = range_back()

    # (a) the first run finds no cached roster: it discovers it, and the account is known
    state = backfill(start=start, end=end, accounts=[found], config_path=path, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["totals"]["traces"] == 4
    consumed = consume(wait_seconds=1, config_path=path, return_state=True)  # the cached roster admits it
    assert consumed.is_completed(), consumed.message
    assert consumed.result()["traces"] == 4 and consumed.result()["dead_lettered"] == {}
    assert indexed(config, found) == ids
    assert archived(config, found) >= 1
    run = load_run_config(path)
    assert run.roster.source == "cache" and [a.account_id for a in run.config.roster.accounts] == [found]

    # (b) reconcile over that account: X-Ray, raw, Parquet and the index agree
    state = reconcile(start=start, end=end, accounts=[found], config_path=path, return_state=True)
    assert state.is_completed(), state.message
    report = rec.ReconcileReport.model_validate(state.result())
    assert report.ok, report.message()
    assert report.totals == {"xray": 4, "raw": 4, "parquet": 4, "index": 4}

    # (c) replay and collect accept it; an account outside the roster is still refused
    state = replay(start=start, end=end, accounts=[found], dry_run=True, config_path=path, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["traces"] == 4
    execution, trace_id = execution_in(config, found)
    time.sleep(1.0)
    state = collect(execution_arn=execution, config_path=path, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["result"].trace_ids == [trace_id]
    outsider = execution.replace(f":{found}:", ":000000000042:")
    state = collect(execution_arn=outsider, config_path=path, return_state=True)
    assert state.is_failed() and "account '000000000042' is not in the roster" in (state.message or "")


def test_a_new_account_joins_at_the_next_sweep_and_a_retired_one_is_refused_as_retired(world: OrgWorld) -> None:
    config, path = world.config, world.path
    kept, closing = world.create("kept"), world.create("closing")
    first = sweep(config_path=path, return_state=True)
    assert first.is_completed(), first.message
    assert {r["account_id"] for r in first.result()["accounts"]} == {kept, closing}

    # (d) created after the cache was written: unknown to a backfill until a sweep refreshes the roster
    added = world.create("added")
    ids = set(put_simple_traces(config, added, 3))
    start, end = range_back()
    refused = backfill(start=start, end=end, accounts=[added], config_path=path, return_state=True)
    assert refused.is_failed()
    assert f"account '{added}' is not in the roster" in (refused.message or "")
    assert "joins it at the next sweep" in (refused.message or "")
    world.org.close_account(AccountId=closing)
    second = sweep(config_path=path, return_state=True)
    assert second.is_completed(), second.message  # the closed account is retired, not failed
    # swept on the cached roster while the refresh ran beside: its last sweep is reported retired
    rows = {r["account_id"]: r for r in second.result()["accounts"]}
    assert set(rows) == {kept, added, closing} and rows[closing]["status"] == "retired"
    state = backfill(start=start, end=end, accounts=[added], config_path=path, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["totals"]["traces"] == 3
    sent = {t for a in state.result()["results"] for t in a.trace_ids}
    assert sent == ids

    # a retired account named explicitly: one line saying since when, not "unknown account"
    for flow, options in ((backfill, {"start": start, "end": end}), (reconcile, {"start": start, "end": end})):
        state = flow(accounts=[closing], config_path=path, return_state=True, **options)
        assert state.is_failed()
        message = state.message or ""
        assert f"account {closing} (closing) is retired since {datetime.now(UTC):%Y-%m-%d}" in message, message
        assert "status SUSPENDED" in message and "not in the roster" not in message
    # the CLI checks against the same roster before any flow run exists, and lists the retired account
    from typer.testing import CliRunner

    from xraylake.cli import app

    cli = CliRunner()
    options = ["--start", start.isoformat(), "--end", end.isoformat(), "--config", path]
    refused_cli = cli.invoke(app, ["backfill", *options, "--account", closing])
    assert refused_cli.exit_code == 2 and f"account {closing} (closing) is retired since" in refused_cli.output
    shown = orjson.loads(cli.invoke(app, ["roster", "--config", path, "--json"]).stdout)
    assert {a["account_id"] for a in shown["accounts"]} == {kept, added}
    assert [(r["account_id"], r["reason"]) for r in shown["retired"]] == [(closing, "status SUSPENDED")]
    assert shown["retired"][0]["since"].startswith(f"{datetime.now(UTC):%Y-%m-%d}")
