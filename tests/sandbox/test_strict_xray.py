"""The strict X-Ray front over the real moto server: paging, 5-id limit, throttling, accounts."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from blocks import Roster
from sandbox.stack import SandboxStack
from sandbox.strict_xray import StrictXRayFront
from tasks.aws import MemberSessions

REGION = "us-east-1"
NO_RETRIES = BotoConfig(retries={"mode": "standard", "total_max_attempts": 1})


def trace_id(epoch: float) -> str:
    return f"1-{int(epoch):08x}-{secrets.token_hex(12)}"


def segment(tid: str, start: float, end: float | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"id": secrets.token_hex(8), "name": "svc", "trace_id": tid, "start_time": start}
    body["end_time"] = end if end is not None else start + 0.5
    body.update(extra)
    return json.dumps(body)


def put_traces(client: Any, count: int, base: float) -> list[str]:
    """`count` one-segment traces starting at base, base+1 s, … (newest last)."""
    ids, docs = [], []
    for i in range(count):
        tid = trace_id(base + i)
        ids.append(tid)
        docs.append(segment(tid, base + i + 0.1))
    response = client.put_trace_segments(TraceSegmentDocuments=docs)
    assert response["UnprocessedTraceSegments"] == []
    return ids


def window() -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {"StartTime": now - timedelta(hours=1), "EndTime": now}


def read_all(client: Any, **params: Any) -> tuple[list[str], int]:
    ids: list[str] = []
    pages = 0
    token = None
    while True:
        response = client.get_trace_summaries(**params, **({"NextToken": token} if token else {}))
        pages += 1
        ids.extend(s["Id"] for s in response["TraceSummaries"])
        token = response.get("NextToken")
        if not token:
            return ids, pages


@pytest.fixture
def front(stack: SandboxStack) -> Iterator[StrictXRayFront]:
    assert stack.config.aws_endpoint_url
    with StrictXRayFront(upstream=stack.config.aws_endpoint_url, rate_per_second=None) as running:
        yield running


@pytest.fixture
def sessions(fresh_roster: Roster) -> MemberSessions:
    return MemberSessions(fresh_roster)


def member_xray(sessions: MemberSessions, account_id: str, endpoint: str) -> Any:
    credentials = sessions.session(account_id, REGION).get_credentials()
    assert credentials is not None
    frozen = credentials.get_frozen_credentials()
    return boto3.client(
        "xray",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
        config=NO_RETRIES,
    )


@pytest.fixture
def member(front: StrictXRayFront, sessions: MemberSessions, fresh_roster: Roster) -> Any:
    return member_xray(sessions, fresh_roster.accounts[0].account_id, front.url)


def test_pages_with_next_token_read_every_trace_newest_first(
    front: StrictXRayFront, member: Any, fresh_roster: Roster
) -> None:
    front.page_size = 3
    put = put_traces(member, 8, time.time() - 1200)
    first = member.get_trace_summaries(**window(), Sampling=False)
    assert len(first["TraceSummaries"]) == 3
    assert first["NextToken"]
    ids, pages = read_all(member, **window(), Sampling=False)
    assert sorted(ids) == sorted(put)
    assert len(ids) == len(set(ids)) == 8
    assert pages == 3
    assert ids == list(reversed(put)), "newest first"
    account = fresh_roster.accounts[0].account_id
    assert front.account_stats(account)["pages_served"] == 4
    assert front.stats()["accounts"][account]["operations"]["GetTraceSummaries"] == 4


def test_pages_are_a_snapshot_when_traces_arrive_between_pages(front: StrictXRayFront, member: Any) -> None:
    front.configure(page_size=3)
    base = time.time() - 1800
    first_set = put_traces(member, 7, base)
    params = window()
    page = member.get_trace_summaries(**params)
    seen = [s["Id"] for s in page["TraceSummaries"]]
    late = put_traces(member, 4, base + 100)  # newer than all the others: would shift every page
    token = page["NextToken"]
    while token:
        page = member.get_trace_summaries(**params, NextToken=token)
        seen.extend(s["Id"] for s in page["TraceSummaries"])
        token = page.get("NextToken")
    assert sorted(seen) == sorted(first_set)
    fresh, _ = read_all(member, **window())
    assert sorted(fresh) == sorted(first_set + late)


def test_next_token_is_bound_to_its_query(front: StrictXRayFront, member: Any) -> None:
    front.page_size = 2
    put_traces(member, 5, time.time() - 600)
    params = window()
    token = member.get_trace_summaries(**params)["NextToken"]
    other = dict(params, StartTime=params["StartTime"] - timedelta(minutes=5))
    for bad in ({**other, "NextToken": token}, {**params, "NextToken": "not-a-token"}):
        with pytest.raises(ClientError) as caught:
            member.get_trace_summaries(**bad)
        assert caught.value.response["Error"]["Code"] == "InvalidRequestException"


def test_more_than_five_ids_rejected_like_aws(front: StrictXRayFront, member: Any) -> None:
    ids = put_traces(member, 6, time.time() - 900)
    with pytest.raises(ClientError) as caught:
        member.batch_get_traces(TraceIds=ids)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidRequestException"
    assert "1 validation error" in error["Message"]
    assert "length less than or equal to 5" in error["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    five = member.batch_get_traces(TraceIds=ids[:5])
    assert sorted(t["Id"] for t in five["Traces"]) == sorted(ids[:5])
    assert all(t["LimitExceeded"] is False for t in five["Traces"])
    assert front.stats()["rejected"] == 1


def test_throttles_past_the_bucket_with_throttled_exception(
    front: StrictXRayFront, member: Any, fresh_roster: Roster
) -> None:
    put_traces(member, 2, time.time() - 300)
    front.configure(rate_per_second=0.5, burst=2)
    member.get_trace_summaries(**window())
    member.get_trace_summaries(**window())
    with pytest.raises(ClientError) as caught:
        member.get_trace_summaries(**window())
    assert caught.value.response["Error"]["Code"] == "ThrottledException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert type(caught.value).__name__ == "ThrottledException"
    # writes are not throttled by default (the traffic generator goes through the front too)
    put_traces(member, 1, time.time() - 200)
    account = fresh_roster.accounts[0].account_id
    assert front.account_stats(account)["throttled"] == 1
    assert front.stats()["throttled"] == 1
    # reconfiguring at run time refills the buckets with the new burst
    front.configure(rate_per_second=0.5, burst=1)
    member.get_trace_summaries(**window())
    with pytest.raises(ClientError):
        member.get_trace_summaries(**window())


def test_buckets_are_per_account(front: StrictXRayFront, sessions: MemberSessions, fresh_roster: Roster) -> None:
    first, second = (member_xray(sessions, a.account_id, front.url) for a in fresh_roster.accounts[:2])
    front.configure(rate_per_second=0.2, burst=1)
    first.get_trace_summaries(**window())
    second.get_trace_summaries(**window())  # own bucket: not throttled
    with pytest.raises(ClientError):
        first.get_trace_summaries(**window())


def test_member_role_sees_only_its_own_traces(
    front: StrictXRayFront, sessions: MemberSessions, fresh_roster: Roster
) -> None:
    dev, qa = (a.account_id for a in fresh_roster.accounts[:2])
    dev_client, qa_client = member_xray(sessions, dev, front.url), member_xray(sessions, qa, front.url)
    dev_ids = put_traces(dev_client, 3, time.time() - 700)
    qa_ids = put_traces(qa_client, 2, time.time() - 700)
    assert sorted(read_all(dev_client, **window())[0]) == sorted(dev_ids)
    assert sorted(read_all(qa_client, **window())[0]) == sorted(qa_ids)
    assert qa_client.batch_get_traces(TraceIds=dev_ids[:1])["Traces"] == []
    accounts = front.stats()["accounts"]
    assert accounts[dev]["operations"]["PutTraceSegments"] == 1
    assert accounts[qa]["operations"]["PutTraceSegments"] == 1


def test_filter_expression_stripped_or_rejected(front: StrictXRayFront, member: Any) -> None:
    ids = put_traces(member, 2, time.time() - 400)
    got = member.get_trace_summaries(**window(), FilterExpression='service("svc")')
    assert sorted(s["Id"] for s in got["TraceSummaries"]) == sorted(ids)
    assert front.stats()["filter_expressions"] == ['service("svc")']
    front.filter_mode = "reject"
    with pytest.raises(ClientError) as caught:
        member.get_trace_summaries(**window(), FilterExpression="error")
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"


def test_unprocessed_ids_injected_then_served_on_retry(front: StrictXRayFront, member: Any) -> None:
    ids = put_traces(member, 4, time.time() - 500)
    front.configure(unprocessed_every=1, unprocessed_times=1)
    first = member.batch_get_traces(TraceIds=ids)
    assert first["Traces"] == []
    assert sorted(first["UnprocessedTraceIds"]) == sorted(ids)
    second = member.batch_get_traces(TraceIds=ids)
    assert sorted(t["Id"] for t in second["Traces"]) == sorted(ids)
    assert second["UnprocessedTraceIds"] == []
    assert front.stats()["unprocessed_injected"] == 4


def test_trace_size_limit_cuts_segments_and_flags_limit_exceeded(front: StrictXRayFront, member: Any) -> None:
    start = time.time() - 300
    tid = trace_id(start)
    docs = [segment(tid, start + 0.1, start + 2, annotations={"pad": "x" * 400})]
    docs += [segment(tid, start + 0.2 + i / 10, start + 1, parent_id="a" * 16) for i in range(3)]
    member.put_trace_segments(TraceSegmentDocuments=docs)
    full = member.batch_get_traces(TraceIds=[tid])["Traces"][0]
    assert full["LimitExceeded"] is False
    assert len(full["Segments"]) == 4
    front.trace_size_limit = 700
    cut = member.batch_get_traces(TraceIds=[tid])["Traces"][0]
    assert cut["LimitExceeded"] is True
    assert 1 <= len(cut["Segments"]) < 4
    assert cut["Segments"] == full["Segments"][: len(cut["Segments"])]


def test_trace_id_time_range_uses_the_id_timestamp(front: StrictXRayFront, member: Any) -> None:
    now = time.time()
    tid = trace_id(now - 600)
    # starts inside [now-15m, now-5m) but ends after it: moto's segment-time filter misses it
    member.put_trace_segments(TraceSegmentDocuments=[segment(tid, now - 599.5, now - 60)])
    params = {
        "StartTime": datetime.fromtimestamp(now - 900, UTC),
        "EndTime": datetime.fromtimestamp(now - 300, UTC),
    }
    by_event = member.get_trace_summaries(**params, TimeRangeType="Event")
    by_id = member.get_trace_summaries(**params, TimeRangeType="TraceId")
    assert tid not in [s["Id"] for s in by_event["TraceSummaries"]]
    assert [s["Id"] for s in by_id["TraceSummaries"]] == [tid]


def test_knob_validation(stack: SandboxStack) -> None:
    assert stack.config.aws_endpoint_url
    front = StrictXRayFront(upstream=stack.config.aws_endpoint_url)
    with pytest.raises(ValueError, match="page_size"):
        front.page_size = 0
    with pytest.raises(ValueError, match="rate_per_second"):
        front.configure(rate_per_second=0)
    with pytest.raises(TypeError, match="unknown knob"):
        front.configure(pages=3)
    with pytest.raises(ValueError, match="upstream"):
        StrictXRayFront(upstream="localhost:1234")
    with pytest.raises(RuntimeError, match="not started"):
        _ = front.url
