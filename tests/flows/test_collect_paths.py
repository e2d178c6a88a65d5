"""Sweep, collect and backfill on realistic traffic through the strict X-Ray front."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from blocks.config import Config
from flows.backfill import backfill
from flows.collect import collect
from flows.sweep import sweep
from sandbox.faults import FaultProxy, sts_access_denied
from sandbox.stack import SandboxStack
from sandbox.traffic import complete_in_progress, generate_traffic, write_traffic
from tasks import watermark
from tasks import xray as xray_tasks
from tasks.aws import MemberSessions
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
            lambda p: backfill(start=datetime.now(UTC) - timedelta(days=31), end=datetime.now(UTC), config_path=p),
            "30-day retention",
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
