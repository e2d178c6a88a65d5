"""The failure paths tests/flows/test_failure_events.py leaves out, each made to happen the way the
world makes it (a data file or an old manifest list gone from S3, unreadable objects in the raw
archive, an Organizations OU deleted while the cached roster ages): the run's end state, its
one-line message and the event its alert automation (deployments/automations.yaml) matches on.
Moto S3 / Organizations over HTTP, the SQL catalog, flows under the real Prefect server."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from prefect.events.worker import EventsWorker

from blocks import OrganizationsSource
from blocks.config import Config
from sandbox import seed
from tasks import catalog, organizations
from tasks.replay import RawPartition
from tests.flows.test_failure_events import automation_for, emitted
from tests.flows.test_reconcile import captured_events
from tests.flows.test_sweep import put_simple_traces
from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches, make_trace

pytestmark = pytest.mark.usefixtures("prefect_harness")
__all__ = ["captured_events"]  # the fixture, used by name

COLLECTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def payloads(events: list[Any], name: str, resource: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in events if e.event == name and e.resource.id == resource]


def one_line(message: str | None) -> str:
    assert message and "\n" not in message, message
    return message


def maintenance_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="compact-maintenance")),
        )


def test_a_compaction_partition_and_a_maintenance_failure_fail_the_run_with_their_events(
    fresh_config: Config, config_file: str, captured_events: EventsWorker
) -> None:
    from flows.compact import compact

    a0, a1 = (a.account_id for a in fresh_config.roster.accounts[:2])
    t0 = [make_trace(a0, f"t{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(6)]
    t1 = [make_trace(a1, f"u{i}", HOUR_START + timedelta(hours=1, minutes=i)) for i in range(4)]
    # three commits: every partition holds two files, each table has three snapshots
    ingest_batches(fresh_config, [[envelope(fresh_config, t0[:4], 0, COLLECTED), envelope(fresh_config, t1[:2], 1)]])
    ingest_batches(fresh_config, [[envelope(fresh_config, t0[2:], 0, COLLECTED + timedelta(minutes=5))]])
    ingest_batches(fresh_config, [[envelope(fresh_config, t1[2:], 1, COLLECTED)]])
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket

    # the world: one data file of account 0's traces partition is gone (a lifecycle rule, a hand)
    traces = catalog.open_table(fresh_config, "traces")
    files = traces.inspect.files().select(["file_path", "partition"]).to_pylist()
    lost = next(f["file_path"] for f in files if f["partition"]["account_id"] == a0)
    s3.delete_object(Bucket=bucket, Key=lost.removeprefix(f"s3://{bucket}/"))
    # …and the manifest list of the segments table's first (retained, not current) snapshot
    segments = catalog.open_table(fresh_config, "segments")
    first = segments.metadata.snapshots[0]
    assert first.snapshot_id != segments.metadata.current_snapshot_id
    s3.delete_object(Bucket=bucket, Key=first.manifest_list.removeprefix(f"s3://{bucket}/"))

    state = compact(config_path=config_file, return_state=True)
    assert state.is_failed() and not state.is_crashed(), state
    message = one_line(state.message)
    data = state.result(raise_on_failure=False)
    totals = data["totals"]
    failed = [p for p in data["partitions"] if p["status"] == "failed"]
    assert len(failed) == 1, failed
    label = failed[0]["partition"]
    assert label.startswith(f"traces/{a0}/us-east-1/")
    assert "FileNotFound" in failed[0]["error"] or "NoSuchKey" in failed[0]["error"], failed
    # the other three partitions were compacted all the same
    assert (totals["partitions_with_work"], totals["partitions_compacted"], totals["partitions_failed"]) == (4, 3, 1)
    assert [e.split(":")[0] for e in data["errors"]] == ["segments maintenance"]
    assert message.startswith("1 of 4 partitions failed; segments maintenance: FileNotFoundError: "), message
    assert first.manifest_list.rsplit("/", 1)[-1] in message  # names what is missing
    assert len(message) <= 1000

    events = emitted(captured_events)
    partition_events = payloads(events, "xraylake.compaction.failed", f"s3.{bucket}.{label}")
    assert len(partition_events) == 1 and partition_events[0]["error"] == failed[0]["error"]
    maintenance = payloads(events, "xraylake.flow.failed", "xraylake.flow.compact")
    assert len(maintenance) == 1, maintenance
    assert maintenance[0]["flow"] == "compact" and maintenance[0]["error_kind"] == "MaintenanceFailed"
    assert maintenance[0]["error"].startswith("segments maintenance: ")
    # a missing object is not transient: the maintenance task ran once, no retry waited for nothing
    runs = maintenance_runs(state.state_details.flow_run_id)
    assert sorted((run.state_name, run.run_count) for run in runs) == [("Completed", 1), ("Failed", 1)], runs
    assert automation_for("xraylake.compaction.failed") and automation_for("xraylake.flow.failed")


def test_a_replay_with_unreadable_archived_envelopes_replays_the_rest_counts_them_and_resumes(
    fresh_config: Config, config_file: str, captured_events: EventsWorker
) -> None:
    from flows.replay import replay

    a0, a1 = (a.account_id for a in fresh_config.roster.accounts[:2])
    ingest_batches(
        fresh_config,
        [
            [envelope(fresh_config, [make_trace(a0, f"r{i}", HOUR_START + timedelta(minutes=i))], 0) for i in range(3)],
            [envelope(fresh_config, [make_trace(a1, f"q{i}", HOUR_START + timedelta(minutes=i))], 1) for i in range(2)],
        ],
        commit=False,
    )
    s3 = boto3.client("s3")
    store = fresh_config.archive
    folder = f"{store.raw_prefix}/{RawPartition(a0, 'us-east-1', HOUR_START).prefix}"
    broken = {
        f"{folder}truncated.json.gz": gzip.compress(b'{"schema": "xraylake.envelope.v1"}')[:20],  # cut short
        f"{folder}foreign.json.gz": gzip.compress(orjson.dumps({"schema": "someone.else.v3"})),
    }
    for key, body in broken.items():
        s3.put_object(Bucket=store.bucket, Key=key, Body=body)
    window = {"start": HOUR_START, "end": HOUR_START + timedelta(hours=1), "target": "direct"}

    state = replay(**window, config_path=config_file, return_state=True)
    assert state.is_failed() and not state.is_crashed(), state
    message = one_line(state.message)
    data = state.result(raise_on_failure=False)
    # every readable envelope was replayed, the two unreadable ones counted, not lost
    assert (data["objects"], data["sent"], data["failed_envelopes"]) == (7, 5, 2), data
    assert (data["partitions"], data["partitions_skipped"]) == (3, 0)
    assert message.startswith("2 envelopes failed (last: unreadable raw/account_id="), message
    assert message.endswith("their partitions were not checkpointed: run again to resume"), message
    events = payloads(emitted(captured_events), "xraylake.flow.failed", "xraylake.flow.replay")
    assert len(events) == 1, events
    assert events[0]["flow"] == "replay" and events[0]["error_kind"] == "ReplayIncomplete"
    assert events[0]["error"].startswith("2 envelopes failed")
    assert all(key.rsplit("/", 1)[-1] in events[0]["error"] for key in broken), events[0]  # which ones
    automation_for("xraylake.flow.failed")

    # the cause removed, the same replay resumes: only the partition that failed runs again
    s3.delete_objects(Bucket=store.bucket, Delete={"Objects": [{"Key": k} for k in broken]})
    again = replay(**window, config_path=config_file, return_state=True)
    assert again.is_completed(), again.message
    data = again.result()
    assert (data["partitions_skipped"], data["objects"], data["sent"], data["failed_envelopes"]) == (2, 3, 3, 0)


def test_a_roster_cache_past_its_age_whose_refresh_fails_is_swept_stale_with_its_event(
    fresh_config: Config, tmp_path: Path, captured_events: EventsWorker
) -> None:
    from flows.sweep import sweep

    org = boto3.client("organizations")
    root = org.list_roots()["Roots"][0]["Id"]
    ous = [
        org.create_organizational_unit(ParentId=root, Name=f"s-{uuid.uuid4().hex[:8]}")["OrganizationalUnit"]["Id"]
        for _ in range(2)
    ]
    created = org.create_account(Email=f"stale-{uuid.uuid4().hex[:6]}@example.com", AccountName="stale")
    account = str(created["CreateAccountStatus"]["AccountId"])
    org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ous[0])
    source = OrganizationsSource(
        role_arn=f"arn:aws:iam::{seed.LOG_ACCOUNT_ID}:role/{seed.ORGANIZATIONS_READER_ROLE}",
        parents=ous,
        cache_ttl_seconds=3600,
    )
    roster = fresh_config.roster.model_copy(update={"source": "organizations", "organizations": source, "accounts": []})
    config = fresh_config.model_copy(update={"roster": roster})
    path = tmp_path / "org-config.json"
    path.write_bytes(config.to_json())

    # a good roster was discovered two hours ago (older than its one-hour limit)…
    s3 = boto3.client("s3")
    fetched = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    assert [a.account_id for a in organizations.load_run_config(str(path)).config.roster.accounts] == [account]
    key = organizations.cache_key(config)
    cached = orjson.loads(s3.get_object(Bucket=config.archive.bucket, Key=key)["Body"].read())
    aged = orjson.dumps(cached | {"fetched_at": fetched.isoformat()})
    s3.put_object(Bucket=config.archive.bucket, Key=key, Body=aged)
    # …and since then someone deleted an (empty) OU the configuration still names
    org.delete_organizational_unit(OrganizationalUnitId=ous[1])
    put_simple_traces(config, account, 3)

    state = sweep(config_path=str(path), return_state=True)
    assert state.is_completed(), state.message  # the last good roster is swept
    assert one_line(state.message) == "3 traces sent"  # the roster's staleness is the event's and the summary's
    totals = state.result()["totals"]
    assert totals["traces"] == 3 and totals["roster_source"] == "stale-cache", totals
    events = payloads(emitted(captured_events), "xraylake.roster.stale", "xraylake.roster")
    assert len(events) == 1, events
    assert ous[1] in events[0]["error"] and "does not exist" in events[0]["error"], events[0]
    assert datetime.fromisoformat(events[0]["fetched_at"]) == fetched
    assert events[0]["accounts"] == 1
    automation_for("xraylake.roster.stale")
