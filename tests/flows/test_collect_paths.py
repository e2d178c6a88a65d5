"""Sweep, collect and backfill on realistic traffic through the strict X-Ray front."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import boto3
import orjson
import pytest

from blocks.config import Config
from flows.backfill import backfill
from flows.collect import collect
from flows.sweep import sweep
from sandbox.faults import FaultProxy, sts_access_denied
from sandbox.stack import SandboxStack
from sandbox.traffic import complete_in_progress, generate_traffic, write_traffic
from sandbox.transaction_search import SPANS_LOG_GROUP, segment_spans
from tasks import collector as col
from tasks import span_retrieval, watermark
from tasks import xray as xray_tasks
from tasks.aws import MemberSessions
from tasks.span_records import w3c_trace_id
from tests.flows.test_sweep import drain

pytestmark = pytest.mark.usefixtures("prefect_harness")


def front(stack: SandboxStack):  # type: ignore[no-untyped-def]
    return next(c for c in stack.extra if type(c).__name__ == "StrictXRayFront")


@pytest.fixture
def traffic(fresh_config: Config):  # type: ignore[no-untyped-def]
    planned = generate_traffic(5, fresh_config.roster.accounts, traces_per_account=14, hours_back=2.0, now=time.time())
    report = write_traffic(planned, fresh_config.roster)
    return planned, report


def sent_traces(config: Config) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    """trace id → the copies sent (one per account: the cross-account trace is in two)."""
    out: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    seen: set[tuple[str, str]] = set()
    for envelope in drain(config):
        for trace in envelope.traces:
            key = (envelope.account_id, trace["Id"])
            assert key not in seen, f"{key} sent twice"
            seen.add(key)
            out.setdefault(trace["Id"], []).append(trace)
    return out


def test_sweep_collects_every_generated_trace_and_in_progress_ones_again(
    fresh_config: Config,
    config_file: str,
    traffic,
    stack: SandboxStack,  # type: ignore[no-untyped-def]
) -> None:
    planned, report = traffic
    strict = front(stack)
    strict.configure(page_size=3)
    try:
        state = sweep(config_path=config_file, first_lookback_minutes=180, lag_seconds=0, return_state=True)
    finally:
        strict.configure(page_size=10)
    assert state.is_completed(), state.message
    first = sent_traces(fresh_config)
    expected = {t for r in report.regions for t in r.trace_ids}
    assert set(first) == expected
    assert len(first[planned.cross_account_trace_id]) == 2

    # the >1 MiB trace came through the claim-check, byte for byte what X-Ray returned
    big_account = next(r.account_id for r in report.regions if planned.big_trace_id in r.trace_ids)
    client = xray_tasks.xray_client(MemberSessions(fresh_config.roster), big_account, "us-east-1")
    original = xray_tasks.batch_get_traces(client, [planned.big_trace_id]).traces[0]
    assert first[planned.big_trace_id][0]["Segments"] == original["Segments"]
    assert sum(len(s["Document"]) for s in original["Segments"]) > 1024 * 1024

    # in-progress traces come again once they complete
    in_progress = {t.trace_id for t in planned.traces if t.completions}
    assert in_progress
    complete_in_progress(planned, fresh_config.roster)
    assert sweep(config_path=config_file, lag_seconds=0, return_state=True).is_completed()
    second = sent_traces(fresh_config)
    assert in_progress <= set(second)
    for trace_id in in_progress:
        documents = [s["Document"] for s in second[trace_id][0]["Segments"]]
        assert not any('"in_progress":true' in d.replace(" ", "") for d in documents)


def test_throttling_and_small_pages_miss_nothing(
    fresh_config: Config,
    config_file: str,
    traffic,
    stack: SandboxStack,  # type: ignore[no-untyped-def]
) -> None:
    _, report = traffic
    strict = front(stack)
    strict.configure(page_size=2, rate_per_second=4, burst=2)
    try:
        state = sweep(
            config_path=config_file,
            first_lookback_minutes=180,
            lag_seconds=0,
            xray_rate_per_second=50,
            return_state=True,
        )
    finally:
        strict.configure(page_size=10, rate_per_second=20, burst=None)
    assert state.is_completed(), state.message
    data = state.result()
    assert data["totals"]["throttles"] > 0
    assert set(sent_traces(fresh_config)) == {t for r in report.regions for t in r.trace_ids}


def test_broken_trust_in_one_account_fails_only_that_account(
    fresh_config: Config,
    tmp_path,
    stack: SandboxStack,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    broken = fresh_config.roster.accounts[1].account_id
    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy:
        proxy.add(sts_access_denied(broken))
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", proxy.url)
        config = fresh_config.model_copy(
            update={"service_endpoints": fresh_config.service_endpoints | {"sts": proxy.url}}
        )
        path = tmp_path / "config.json"
        path.write_bytes(config.to_json())
        state = sweep(config_path=str(path), return_state=True)
    assert state.is_failed()
    assert broken in (state.message or "")
    rows = {a["account_id"]: a for a in state.result(raise_on_failure=False)["accounts"]}
    assert rows[broken]["status"] == "failed"
    assert "AccessDenied" in rows[broken]["error"]
    assert all(r["status"] == "ok" for a, r in rows.items() if a != broken)
    s3 = boto3.client("s3")
    assert watermark.read(s3, fresh_config.archive, broken, "us-east-1").high_water is None
    for account in fresh_config.roster.accounts:
        if account.account_id != broken:
            assert watermark.read(s3, fresh_config.archive, account.account_id, "us-east-1").high_water


def test_collect_one_execution_sends_its_trace_and_details(
    fresh_config: Config,
    config_file: str,
    traffic,  # type: ignore[no-untyped-def]
) -> None:
    _, report = traffic
    execution = next(e for e in report.executions if e.status == "FAILED")
    state = collect(execution_arn=execution.execution_arn, config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["execution_status"] == "FAILED"
    envelopes = drain(fresh_config)
    assert {e.source for e in envelopes} == {"collect"}
    assert {t["Id"] for e in envelopes for t in e.traces} == {execution.trace_id}
    assert envelopes[0].execution is not None
    assert envelopes[0].execution["executionArn"] == execution.execution_arn
    assert envelopes[0].execution["status"] == "FAILED"


def test_backfill_resumes_without_sending_finished_chunks_twice(
    fresh_config: Config,
    config_file: str,
    traffic,  # type: ignore[no-untyped-def]
) -> None:
    _, report = traffic
    time.sleep(1.1)  # the TIMED_OUT execution's trace ends up to 3 s after it started
    end = datetime.now(UTC)
    start = end - timedelta(hours=3)
    first = backfill(start=start, end=end, max_chunks=3, config_path=config_file, return_state=True)
    assert first.result(raise_on_failure=False)["totals"]["complete"] is False
    partial = sent_traces(fresh_config)
    second = backfill(start=start, end=end, config_path=config_file, return_state=True)
    assert second.is_completed(), second.message
    totals = second.result()["totals"]
    assert totals["complete"] is True
    assert totals["chunks_skipped"] == 3
    rest = sent_traces(fresh_config)
    assert not set(partial) & set(rest)
    assert set(partial) | set(rest) == {t for r in report.regions for t in r.trace_ids}
    s3 = boto3.client("s3")
    for account in fresh_config.roster.accounts:  # the sweep watermark is never touched
        assert watermark.read(s3, fresh_config.archive, account.account_id, "us-east-1").high_water is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: collect(execution_arn="arn:aws:states:us-east-1:12345:execution:x:y", config_path=p),
            "malformed",
        ),
        (
            lambda p: collect(execution_arn="arn:aws:states:us-east-1:999999999999:execution:m:e", config_path=p),
            "not in the roster",
        ),
        (
            lambda p: backfill(start=datetime.now(UTC), end=datetime.now(UTC) - timedelta(hours=1), config_path=p),
            "not after start",
        ),
        (
            lambda p: backfill(start=datetime.now(UTC) - timedelta(days=3700), end=datetime.now(UTC), config_path=p),
            "10 years",
        ),
        (lambda p: sweep(regions=["ap-south-1"], config_path=p), "no account is enabled"),
    ],
)
def test_bad_input_fails_before_any_work(call, message: str, config_file: str, fresh_config: Config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call(config_file)
    assert not drain(fresh_config)


def test_transaction_search_account_is_read_from_its_spans(
    fresh_config: Config,
    config_file: str,
    stack: SandboxStack,
) -> None:
    """The switched account's every trace arrives as span envelopes although X-Ray indexes ~1 %;
    the choice, the indexed percentage and the reason are in the run's data (artifact, --json)."""
    switched = fresh_config.roster.accounts[2].account_id
    strict = front(stack)
    strict.set_segment_destination(switched, "us-east-1", "CloudWatchLogs")
    try:
        planned = generate_traffic(
            5, fresh_config.roster.accounts, traces_per_account=14, hours_back=2.0, now=time.time()
        )
        report = write_traffic(planned, fresh_config.roster)
        state = sweep(config_path=config_file, first_lookback_minutes=180, lag_seconds=0, return_state=True)
    finally:
        strict.set_segment_destination(switched, "us-east-1", "XRay")
    assert state.is_completed(), state.message
    rows = {a["account_id"]: a for a in state.result()["accounts"]}
    assert rows[switched]["transaction_search"] == "cloudwatch_logs"
    assert rows[switched]["reader"] == "spans" and rows[switched]["indexed_percentage"] is not None
    assert "aws/spans" in rows[switched]["reader_reason"] and rows[switched]["error"] is None
    assert all(r["reader"] == "xray" for a, r in rows.items() if a != switched)
    by_account: dict[str, set[str]] = {}
    for envelope in drain(fresh_config):
        assert envelope.schema_ == ("xraylake.spans.v1" if envelope.account_id == switched else "xraylake.envelope.v1")
        by_account.setdefault(envelope.account_id, set()).update(t["Id"] for t in envelope.traces)
    generated = {t[2:10] + t[11:] for r in report.regions if r.account_id == switched for t in r.trace_ids}
    assert by_account[switched] == generated
    assert rows[switched]["traces"] == len(generated)


def test_collect_an_execution_of_a_transaction_search_account_retrieves_its_spans(
    fresh_config: Config, config_file: str, stack: SandboxStack
) -> None:
    """X-Ray indexes ~1 % there and BatchGetTraces cannot find the rest: the execution's trace is
    found by its ARN in `aws/spans` and retrieved whole (StartTraceRetrieval/ListRetrievedTraces)."""
    switched = fresh_config.roster.accounts[1]
    strict = front(stack)
    strict.set_segment_destination(switched.account_id, "us-east-1", "CloudWatchLogs")
    try:
        planned = generate_traffic(23, fresh_config.roster.accounts[:2], traces_per_account=1, now=time.time())
        planned = dataclasses.replace(
            planned, regions=[r for r in planned.regions if r.account_id == switched.account_id]
        )
        report = write_traffic(planned, fresh_config.roster)
        execution = next(e for e in report.executions if e.account_id == switched.account_id)
        state = collect(execution_arn=execution.execution_arn, config_path=config_file, return_state=True)
    finally:
        strict.set_segment_destination(switched.account_id, "us-east-1", "XRay")
    assert state.is_completed(), state.message
    data = state.result()
    assert data["account"]["reader"] == "spans" and data["execution_status"] == execution.status
    envelopes = drain(fresh_config)
    assert {(e.schema_, e.source) for e in envelopes} == {("xraylake.spans.v1", "collect")}
    trace_id = w3c_trace_id(execution.trace_id)
    assert [t["Id"] for e in envelopes for t in e.traces] == [trace_id]
    assert envelopes[0].execution is not None and envelopes[0].execution["executionArn"] == execution.execution_arn
    collector = col.Collector.from_config(fresh_config)
    _, logs_call = collector.span_callers(switched.account_id, "us-east-1")
    stored = span_retrieval.read_traces(collector.logs_client(switched.account_id, "us-east-1"), logs_call, [trace_id])
    retrieved = envelopes[0].traces[0]["Spans"]
    assert sorted(retrieved) == sorted(stored.groups.traces[trace_id])  # every span, verbatim
    assert len(retrieved) > 1  # the state machine's span and the states and functions below it


def plant_old_spans(config: Config, account_id: str, start: float, count: int, retention_days: int) -> set[str]:
    """Spans of `count` traces from `start` (epoch seconds, far past) in the account's `aws/spans`,
    kept `retention_days`. Written into moto's logs backend directly: PutLogEvents (moto's as AWS's)
    refuses events older than 14 days, yet a log group with a longer retention holds older ones."""
    from moto.logs.models import logs_backends

    logs = MemberSessions(config.roster).client(account_id, "us-east-1", "logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=SPANS_LOG_GROUP)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=SPANS_LOG_GROUP, logStreamName="old")
    logs.put_retention_policy(logGroupName=SPANS_LOG_GROUP, retentionInDays=retention_days)
    events, ids = [], set()
    for i in range(count):
        begin = start + i * 300
        document = {
            "name": "ledger",
            "id": f"{i + 1:016x}",
            "trace_id": f"1-{int(begin):08x}-{account_id}{i:012d}",
            "start_time": begin,
            "end_time": begin + 0.4,
        }
        ids.add(w3c_trace_id(document["trace_id"]))
        for record in segment_spans(document, account_id, "us-east-1"):
            events.append(
                {"timestamp": record["endTimeUnixNano"] // 1_000_000, "message": orjson.dumps(record).decode()}
            )
    logs_backends[account_id]["us-east-1"].groups[SPANS_LOG_GROUP].put_log_events(
        "old", sorted(events, key=lambda e: e["timestamp"])
    )
    return ids


def test_backfill_reads_a_span_account_back_to_its_log_retention_and_says_why_a_classic_one_cannot(
    fresh_config: Config, config_file: str, stack: SandboxStack
) -> None:
    classic, switched = fresh_config.roster.accounts[0], fresh_config.roster.accounts[1]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=40)
    planted = plant_old_spans(fresh_config, switched.account_id, start.timestamp() + 60, 4, retention_days=90)
    strict = front(stack)
    strict.set_segment_destination(switched.account_id, "us-east-1", "CloudWatchLogs")
    try:
        state = backfill(
            start=start, end=start + timedelta(hours=2), accounts=[classic.account_id, switched.account_id],
            fail_on_account_errors=False, config_path=config_file, return_state=True,
        )  # fmt: skip
    finally:
        strict.set_segment_destination(switched.account_id, "us-east-1", "XRay")
    assert state.is_completed(), state.message
    rows = {a["account_id"]: a for a in state.result()["accounts"]}
    assert rows[switched.account_id]["status"] == "ok" and rows[switched.account_id]["reader"] == "spans"
    assert rows[switched.account_id]["traces"] == len(planted) and rows[switched.account_id]["error"] is None
    refused = rows[classic.account_id]
    assert refused["status"] == "failed" and refused["traces"] == 0
    assert "X-Ray keeps traces 30 days" in refused["error"] and "xraylake replay" in refused["error"]
    assert "\n" not in refused["error"]
    envelopes = drain(fresh_config)
    assert {e.account_id for e in envelopes} == {switched.account_id}
    assert {t["Id"] for e in envelopes for t in e.traces} == planted
