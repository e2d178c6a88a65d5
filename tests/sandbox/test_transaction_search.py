"""Transaction Search emulated behind the strict front, over the real moto server: the switch through
PENDING, the indexed share, span records in aws/spans, indexing rules, retrieval, Logs quotas."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from blocks import Roster
from sandbox.stack import SandboxStack
from sandbox.strict_xray import StrictXRayFront
from sandbox.transaction_search import SPANS_LOG_GROUP, TransactionSearch, indexed
from tasks.aws import MemberSessions
from tests.sandbox.test_strict_xray import NO_RETRIES, REGION, put_traces, read_all, window

W3C = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def search() -> TransactionSearch:
    return TransactionSearch(pending_seconds=None, retrieval_polls=1)


@pytest.fixture
def front(stack: SandboxStack, search: TransactionSearch) -> Iterator[StrictXRayFront]:
    assert stack.config.aws_endpoint_url
    upstream = stack.config.aws_endpoint_url
    with StrictXRayFront(upstream=upstream, rate_per_second=None, transaction_search=search) as running:
        yield running


def member_client(service: str, fresh_roster: Roster, endpoint: str) -> Any:
    account_id = fresh_roster.accounts[0].account_id
    credentials = MemberSessions(fresh_roster).session(account_id, REGION).get_credentials()
    assert credentials is not None
    frozen = credentials.get_frozen_credentials()
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
        config=NO_RETRIES,
    )


@pytest.fixture
def xray(front: StrictXRayFront, fresh_roster: Roster) -> Any:
    return member_client("xray", fresh_roster, front.url)


@pytest.fixture
def logs(front: StrictXRayFront, fresh_roster: Roster) -> Any:
    return member_client("logs", fresh_roster, front.url)


def span_records(logs: Any) -> list[dict[str, Any]]:
    events, token = [], None
    while True:
        page = logs.filter_log_events(logGroupName=SPANS_LOG_GROUP, **({"nextToken": token} if token else {}))
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return [json.loads(e["message"]) for e in events]


def test_switch_passes_through_pending_then_indexes_only_the_share(
    xray: Any, logs: Any, search: TransactionSearch, fresh_roster: Roster
) -> None:
    before = xray.get_trace_segment_destination()
    assert (before["Destination"], before["Status"]) == ("XRay", "ACTIVE")
    switched = xray.update_trace_segment_destination(Destination="CloudWatchLogs")
    assert (switched["Destination"], switched["Status"]) == ("CloudWatchLogs", "PENDING")
    during = put_traces(xray, 3, time.time() - 600)
    # PENDING: both stores get every trace
    assert sorted(read_all(xray, **window(), Sampling=False)[0]) == sorted(during)
    assert {r["traceId"] for r in span_records(logs)} == {t[2:10] + t[11:] for t in during}

    search.activate(fresh_roster.accounts[0].account_id, REGION)
    assert xray.get_trace_segment_destination()["Status"] == "ACTIVE"
    assert xray.get_indexing_rules()["IndexingRules"][0]["Rule"]["Probabilistic"]["DesiredSamplingPercentage"] == 1
    xray.update_indexing_rule(Name="Default", Rule={"Probabilistic": {"DesiredSamplingPercentage": 5}})
    after = put_traces(xray, 300, time.time() - 500)
    listed = set(read_all(xray, **window(), Sampling=False)[0]) - set(during)
    expected = {t for t in after if indexed(t, 5.0)}
    assert listed == expected  # X-Ray lists the indexed share only …
    assert 0 < len(listed) < 40
    spans = span_records(logs)
    assert {r["traceId"] for r in spans} == {t[2:10] + t[11:] for t in during + after}  # … aws/spans all
    record = spans[0]
    assert W3C.fullmatch(record["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", record["spanId"])
    assert record["kind"] == "SERVER" and record["status"] == {"code": "UNSET"}
    assert record["endTimeUnixNano"] - record["startTimeUnixNano"] == record["durationNano"] > 0
    assert record["attributes"]["aws.local.service"] == record["resource"]["attributes"]["service.name"] == "svc"
    assert record["resource"]["attributes"]["cloud.account.id"] == fresh_roster.accounts[0].account_id
    rules = xray.get_indexing_rules()["IndexingRules"]
    assert rules[0]["Name"] == "Default"
    assert rules[0]["Rule"]["Probabilistic"]["DesiredSamplingPercentage"] == 5.0
    actual = rules[0]["Rule"]["Probabilistic"]["ActualSamplingPercentage"]
    assert actual == pytest.approx(100 * len(expected) / 300, abs=0.001)
    retention = logs.describe_log_groups(logGroupNamePrefix=SPANS_LOG_GROUP)["logGroups"][0]
    assert retention["retentionInDays"] == 30


def test_update_indexing_rule(xray: Any) -> None:
    rule = xray.update_indexing_rule(Name="Default", Rule={"Probabilistic": {"DesiredSamplingPercentage": 100}})
    assert rule["IndexingRule"]["Rule"]["Probabilistic"]["DesiredSamplingPercentage"] == 100
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        xray.update_indexing_rule(Name="Other", Rule={"Probabilistic": {"DesiredSamplingPercentage": 5}})
    with pytest.raises(ClientError, match="InvalidRequestException"):
        xray.update_indexing_rule(Name="Default", Rule={"Probabilistic": {"DesiredSamplingPercentage": 101}})


def test_trace_retrieval_runs_then_completes_in_pages_of_five(xray: Any, fresh_roster: Roster) -> None:
    xray.update_trace_segment_destination(Destination="CloudWatchLogs")
    ids = put_traces(xray, 7, time.time() - 300)
    now = time.time()
    token = xray.start_trace_retrieval(TraceIds=ids, StartTime=now - 900, EndTime=now)["RetrievalToken"]
    first = xray.list_retrieved_traces(RetrievalToken=token, TraceFormat="OTEL")
    assert (first["RetrievalStatus"], first["Traces"]) == ("RUNNING", [])
    page = xray.list_retrieved_traces(RetrievalToken=token, TraceFormat="OTEL")
    assert page["RetrievalStatus"] == "COMPLETE" and len(page["Traces"]) == 5 and page["NextToken"]
    rest = xray.list_retrieved_traces(RetrievalToken=token, TraceFormat="OTEL", NextToken=page["NextToken"])
    traces = page["Traces"] + rest["Traces"]
    assert {t["Id"] for t in traces} == {t[2:10] + t[11:] for t in ids}
    document = json.loads(traces[0]["Spans"][0]["Document"])
    assert document["traceId"] == traces[0]["Id"] and traces[0]["Spans"][0]["Id"] == document["spanId"]
    with pytest.raises(ClientError, match="less than or equal to 100"):
        xray.start_trace_retrieval(TraceIds=ids * 15, StartTime=now - 900, EndTime=now)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        xray.list_retrieved_traces(RetrievalToken="nope", TraceFormat="OTEL")


def test_logs_quota_and_denied_actions(logs: Any, xray: Any, search: TransactionSearch, fresh_roster: Roster) -> None:
    xray.update_trace_segment_destination(Destination="CloudWatchLogs")
    put_traces(xray, 1, time.time() - 300)
    search.configure_filter_quota(1.0, burst=2)
    logs.filter_log_events(logGroupName=SPANS_LOG_GROUP)
    logs.filter_log_events(logGroupName=SPANS_LOG_GROUP)
    with pytest.raises(ClientError, match="ThrottlingException"):
        logs.filter_log_events(logGroupName=SPANS_LOG_GROUP)
    search.deny_logs.add(fresh_roster.accounts[0].account_id)
    with pytest.raises(ClientError, match="not authorized to perform: logs:StartQuery"):
        logs.start_query(logGroupName=SPANS_LOG_GROUP, startTime=0, endTime=1, queryString="fields @message")
