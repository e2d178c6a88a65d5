"""Reconcile on the sandbox: X-Ray (moto) vs raw archive + Parquet (moto S3) vs the in-memory index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from prefect.events.clients import AssertingPassthroughEventsClient
from prefect.events.worker import EventsWorker

from blocks.config import Config
from flows.consume import run_consumer
from flows.parameters import default_window
from flows.reconcile import reconcile
from tasks import archive
from tasks import collector as col
from tasks import reconcile as rec
from tasks.envelope import parse_envelope
from tasks.index import client_for
from tests.flows.test_sweep import put_simple_traces

pytestmark = pytest.mark.usefixtures("prefect_harness")


def pipeline(config: Config, per_account: int = 6) -> dict[str, list[str]]:
    """Traces into X-Ray, collected (the sweep's per-account step) and consumed: every sink holds them."""
    accounts = config.roster.accounts[:2]
    ids = {a.account_id: put_simple_traces(config, a.account_id, per_account) for a in accounts}
    collector = col.Collector.from_config(config)
    for account in accounts:
        result = col.sweep_account(collector, account, "us-east-1", now=datetime.now(UTC))
        assert result.status == "ok", result.error
    stats = run_consumer(config, wait_seconds=1, use_tasks=False)
    assert stats.traces == sum(len(v) for v in ids.values()), stats.errors
    return ids


@pytest.fixture
def captured_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[EventsWorker]:
    """Events recorded client-side as they are emitted, and still sent on to the Prefect server
    (Prefect's own passthrough test client): the server's copy can lag on a busy machine."""
    AssertingPassthroughEventsClient.reset()
    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    yield worker
    worker.drain()


def mismatch_events(worker: EventsWorker, account_id: str) -> list[dict[str, Any]]:
    """`xraylake.reconcile.mismatch` events emitted for the account."""
    worker.drain()
    return [
        {"payload": event.payload, "resource": event.resource.id}
        for client in AssertingPassthroughEventsClient.all
        for event in client.events
        if event.event == "xraylake.reconcile.mismatch" and event.resource.id == f"aws.account.{account_id}"
    ]


def window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1), now


def test_clean_system_reconciles_with_zero_mismatches(fresh_config: Config, config_file: str) -> None:
    ids = pipeline(fresh_config)
    start, end = window()
    state = reconcile(start=start, end=end, accounts=list(ids), config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    report = rec.ReconcileReport.model_validate(state.result())
    assert report.ok, report.message()
    assert report.mismatches == 0
    total = sum(len(v) for v in ids.values())
    assert report.totals == {"xray": total, "raw": total, "parquet": total, "index": total}
    assert {r.account_id for r in report.rows} == set(ids)
    assert len(report.rows) == len(ids) * 2  # two hours per account
    assert all(r.xray is not None for r in report.rows)


def test_deleted_index_document_and_raw_object_are_found_and_repaired(
    fresh_config: Config, config_file: str, captured_events: EventsWorker
) -> None:
    ids = pipeline(fresh_config)
    first, second = list(ids)
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-traces")
    victim = ids[first][0]
    hit = client.search(index="xray-traces", body={"query": {"term": {"trace_id": victim}}})["hits"]["hits"][0]
    client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket
    raw_keys = [o["Key"] for o in archive.list_keys(s3, bucket, f"raw/account_id={second}/")]
    assert len(raw_keys) == 1  # all of the second account's traces in one envelope
    s3.delete_object(Bucket=bucket, Key=raw_keys[0])

    start, end = window()
    state = reconcile(start=start, end=end, accounts=list(ids), repair=True, config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    repaired = rec.ReconcileReport.model_validate(state.result())
    found = repaired.before  # the first pass, before repair
    assert found is not None
    assert not found.ok
    assert found.missing == {"xray": 0, "raw": len(ids[second]), "parquet": 0, "index": 1}
    assert [i for r in found.rows for i in r.missing_ids.get("index", [])] == [victim]
    assert {i for r in found.rows for i in r.missing_ids.get("raw", [])} == set(ids[second])
    events = mismatch_events(captured_events, second)
    assert events, "no xraylake.reconcile.mismatch event"
    assert events[0]["payload"]["missing"]["raw"] == len(ids[second])
    assert events[0]["payload"]["repair"] is True
    assert repaired.repair is not None
    assert repaired.repair.recollected_traces == len(ids[second])
    assert repaired.repair.index_created >= 1
    assert repaired.repair.errors == []
    assert repaired.ok, (repaired.message(), repaired.repair)
    assert repaired.mismatches == 0
    restored = [o["Key"] for o in archive.list_keys(s3, bucket, f"raw/account_id={second}/")]
    assert len(restored) == 1  # a new envelope (source "backfill") holding the re-collected traces
    envelope = parse_envelope(archive.get_raw(s3, bucket, restored[0]))
    assert envelope.source == "backfill"
    assert {t["Id"] for t in envelope.traces} == set(ids[second])
    client.indices.refresh(index="xray-traces")
    assert client.count(index="xray-traces", body={"query": {"term": {"trace_id": victim}}})["count"] == 1

    clean = rec.ReconcileReport.model_validate(
        reconcile(start=start, end=end, accounts=list(ids), config_path=config_file, return_state=True).result()
    )
    assert clean.ok
    assert clean.mismatches == 0


def test_bad_inputs_fail_before_any_work(config_file: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    with pytest.raises(ValueError, match="empty range"):
        reconcile(start=now, end=now, config_path=config_file)
    with pytest.raises(ValueError, match="not in the roster"):
        reconcile(start=now - timedelta(hours=1), end=now, accounts=["999999999999"], config_path=config_file)
    with pytest.raises(ValueError, match="before start"):
        rec.validate_window(now, now - timedelta(hours=1), now)
    with pytest.raises(ValueError, match="in the future"):
        rec.validate_window(now, now + timedelta(days=1), now)
    with pytest.raises(ValueError, match="lookback_hours"):
        default_window(None, None, 0, 30, now)


# ----------------------------------------------------------------------------- pure pieces


def test_window_rules() -> None:
    start = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    end = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert rec.hours_of(start, end) == [start.replace(minute=0), start.replace(hour=11, minute=0)]
    low, high = rec.id_bounds(start, end)
    inside = f"1-{int(start.timestamp()):08x}-{'a' * 24}"
    last = f"1-{int(end.timestamp()) - 1:08x}-{'f' * 24}"
    outside = f"1-{int(end.timestamp()):08x}-{'0' * 24}"
    assert low <= inside < high
    assert low <= last < high
    assert outside >= high
    assert rec.in_window(inside, start, end)
    assert rec.in_window(last, start, end)
    assert not rec.in_window(outside, start, end)
    assert not rec.in_window("garbage", start, end)
    now = datetime(2026, 12, 25, tzinfo=UTC)
    assert rec.xray_checkable(rec.hours_of(start, end), now) == set()  # older than 30 days
    with pytest.raises(ValueError, match="time zone"):
        rec.validate_window(start.replace(tzinfo=None), end, now)


def test_compare_and_plan_repair() -> None:
    start = datetime(2026, 11, 20, 10, tzinfo=UTC)
    end = start + timedelta(hours=1)
    epoch = int(start.timestamp())
    t = [f"1-{epoch + i:08x}-{i:024x}" for i in range(4)]
    target = ("012345678901", "us-east-1")
    obs = rec.Observation(start=start, end=end, xray_hours={start})
    at = rec.xray_positions
    obs.add("xray", target, at(t))
    keys = {t[0]: "raw/k0", t[1]: "raw/k0", t[3]: "raw/k3"}  # t[2] lost from raw
    obs.add_raw(target, {i: (keys[i], second) for i, second in at(list(keys)).items()})
    obs.add("parquet", target, at(t[:3]))  # t[3] missing in Parquet
    obs.add("index", target, at([t[0], t[2], t[3]]))  # t[1] missing in the index
    report = rec.compare(obs, [target], max_ids=10)
    assert not report.ok
    assert report.missing == {"xray": 0, "raw": 1, "parquet": 1, "index": 1}
    row = report.rows[0]
    assert (row.xray, row.raw, row.parquet, row.index) == (4, 3, 3, 3)
    assert row.missing_ids == {"raw": [t[2]], "parquet": [t[3]], "index": [t[1]]}
    plan = rec.plan_repair(obs, [target])
    assert plan.recollect == {target: [t[2]]}
    assert plan.reprocess == {"raw/k0": {t[1]: {"index"}}, "raw/k3": {t[3]: {"parquet"}}}
    assert plan.unrepairable == {}
    assert rec.repair_part_name("e", [t[1], t[0]]) == rec.repair_part_name("e", [t[0], t[1]])


def test_a_transaction_search_account_reconciles_against_aws_spans(
    fresh_config: Config, config_file: str, stack: Any
) -> None:
    """X-Ray lists ~1 % of a span account's traces; reconcile takes `aws/spans` as the truth there
    and finds every trace in raw (W3C ids in span envelopes), Parquet and the index alike."""
    switched = fresh_config.roster.accounts[1]
    front = next(c for c in stack.extra if type(c).__name__ == "StrictXRayFront")
    front.set_segment_destination(switched.account_id, "us-east-1", "CloudWatchLogs")
    try:
        ids = put_simple_traces(fresh_config, switched.account_id, 8)
        result = col.sweep_account(
            col.Collector.from_config(fresh_config), switched, "us-east-1", now=datetime.now(UTC)
        )
        assert result.status == "ok" and result.reader == "spans", result.error
        stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
        assert stats.traces == len(ids), stats.errors
        start, end = window()
        state = reconcile(
            start=start, end=end, accounts=[switched.account_id], config_path=config_file, return_state=True
        )
    finally:
        front.set_segment_destination(switched.account_id, "us-east-1", "XRay")
    assert state.is_completed(), state.message
    report = rec.ReconcileReport.model_validate(state.result())
    assert report.ok, report.message()
    assert report.totals == {"xray": len(ids), "raw": len(ids), "parquet": len(ids), "index": len(ids)}


def test_a_transaction_search_account_is_repaired_from_aws_spans(
    fresh_config: Config, config_file: str, stack: Any
) -> None:
    """Lost raw envelopes and index documents of a span account: repair re-reads those traces from
    `aws/spans` (FilterLogEvents by trace id), sends span envelopes, consumes them, and the second
    pass agrees in every sink."""
    switched = fresh_config.roster.accounts[1]
    front = next(c for c in stack.extra if type(c).__name__ == "StrictXRayFront")
    front.set_segment_destination(switched.account_id, "us-east-1", "CloudWatchLogs")
    try:
        ids = put_simple_traces(fresh_config, switched.account_id, 5)
        collector = col.Collector.from_config(fresh_config)
        result = col.sweep_account(collector, switched, "us-east-1", now=datetime.now(UTC))
        assert result.status == "ok" and result.reader == "spans", result.error
        assert run_consumer(fresh_config, wait_seconds=1, use_tasks=False).traces == len(ids)
        s3 = boto3.client("s3")
        bucket = fresh_config.archive.bucket
        raw_keys = [o["Key"] for o in archive.list_keys(s3, bucket, f"raw/account_id={switched.account_id}/")]
        assert raw_keys
        for key in raw_keys:
            s3.delete_object(Bucket=bucket, Key=key)
        client = client_for(fresh_config.opensearch)
        client.indices.refresh(index="xray-traces")
        victim = ids[0]
        hit = client.search(index="xray-traces", body={"query": {"term": {"trace_id": victim}}})["hits"]["hits"][0]
        client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
        start, end = window()
        state = reconcile(
            start=start, end=end, accounts=[switched.account_id], repair=True, config_path=config_file,
            return_state=True,
        )  # fmt: skip
    finally:
        front.set_segment_destination(switched.account_id, "us-east-1", "XRay")
    assert state.is_completed(), state.message
    repaired = rec.ReconcileReport.model_validate(state.result())
    assert repaired.before is not None
    assert repaired.before.missing == {"xray": 0, "raw": len(ids), "parquet": 0, "index": 1}
    summary = repaired.repair
    assert summary is not None and summary.errors == [], summary
    assert summary.recollected_from_spans == summary.recollected_traces == len(ids)
    assert summary.not_in_spans == 0 and summary.not_in_xray == 0
    assert summary.span_reads == len(ids)  # one FilterLogEvents pass per trace id (few ids per hour)
    assert repaired.ok, (repaired.message(), summary)
    assert repaired.totals == {"xray": len(ids), "raw": len(ids), "parquet": len(ids), "index": len(ids)}
    restored = [o["Key"] for o in archive.list_keys(s3, bucket, f"raw/account_id={switched.account_id}/")]
    envelopes = [parse_envelope(archive.get_raw(s3, bucket, key)) for key in restored]
    assert {(e.schema_, e.source) for e in envelopes} == {("xraylake.spans.v1", "backfill")}
    assert {t["Id"] for e in envelopes for t in e.traces} == {t[2:10] + t[11:] for t in ids}
