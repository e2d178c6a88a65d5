"""The spans reader against moto behind the strict front's Transaction Search: FilterLogEvents paging,
Insights chunking under a row limit, retrieval, retention, reader selection, throttling, denial."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
import pytest

from blocks.config import Config
from sandbox.transaction_search import TransactionSearch
from tasks import archive
from tasks import envelope as env
from tasks.aws import MemberSessions
from tasks.errors import AccountAccessError
from tasks.pacing import Backoff, TokenBucket
from tasks.span_records import SpanGroups, w3c_trace_id
from tasks.spans_reader import (
    Caller,
    filter_spans,
    insights_spans,
    retrieve_spans,
    select_reader,
    spans_retention_days,
)
from tasks.windows import Window

REGION = "us-east-1"
FAST = Backoff(base=0.02, cap=0.3, max_attempts=30)


def put_at(config: Config, account_id: str, starts: list[float], segments: int = 1) -> list[str]:
    """One trace per start second (X-Ray ids); `segments` segments each, 0.5 s long."""
    xray = MemberSessions(config.roster).client(account_id, REGION, "xray")
    ids, docs = [], []
    for i, start in enumerate(starts):
        trace_id = f"1-{int(start):08x}-{account_id}{i:012d}"
        ids.append(trace_id)
        for s in range(segments):
            document = {
                "name": f"svc-{s}",
                "id": f"{i:08x}{s:08x}",
                "trace_id": trace_id,
                "start_time": start + s * 0.01,
                "end_time": start + 0.5,
            }
            if s:
                document["parent_id"] = f"{i:08x}{0:08x}"
            docs.append(orjson.dumps(document).decode())
    for offset in range(0, len(docs), 50):
        answer = xray.put_trace_segments(TraceSegmentDocuments=docs[offset : offset + 50])
        assert answer["UnprocessedTraceSegments"] == []
    return ids


def w3c(ids: list[str]) -> set[str]:
    return {w3c_trace_id(t) for t in ids}


def drain(config: Config) -> list[env.Envelope]:
    sqs = boto3.client("sqs")
    out: list[env.Envelope] = []
    while True:
        messages = sqs.receive_message(QueueUrl=config.queue.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return out
        for m in messages:
            pointer = env.parse_pointer(m["Body"])
            raw = (
                env.gunzip_capped(archive.fetch_claim_check(boto3.client("s3"), pointer))
                if pointer
                else env.body_to_raw(m["Body"])
            )
            out.append(env.parse_envelope(raw))
            sqs.delete_message(QueueUrl=config.queue.queue_url, ReceiptHandle=m["ReceiptHandle"])


def clients(config: Config, account_id: str) -> tuple[Any, Any]:
    sessions = MemberSessions(config.roster)
    return sessions.client(account_id, REGION, "logs"), sessions.client(account_id, REGION, "xray")


def caller(account_id: str, rate: float = 1000.0) -> Caller:
    return Caller(account_id, REGION, TokenBucket(rate, burst=rate), backoff=FAST)


@pytest.fixture
def span_account(fresh_config: Config, search: TransactionSearch) -> str:
    account_id = fresh_config.roster.accounts[0].account_id
    search.set_destination(account_id, REGION, "CloudWatchLogs")
    return account_id


def test_filter_log_events_pages_through_every_span(fresh_config: Config, span_account: str) -> None:
    base = time.time() - 1800
    ids = put_at(fresh_config, span_account, [base + i for i in range(12)], segments=3)
    logs, _ = clients(fresh_config, span_account)
    call = caller(span_account)
    window = Window(datetime.fromtimestamp(base - 60, UTC), datetime.fromtimestamp(base + 60, UTC))
    groups = filter_spans(logs, call, window, SpanGroups(), page_limit=5)
    assert set(groups.traces) == w3c(ids)
    assert all(len(spans) == 3 for spans in groups.traces.values())
    assert groups.events == 36 and not groups.rejected
    assert call.stats.pages == 8  # 36 events, 5 per page
    sliced = filter_spans(logs, call, window, SpanGroups(), page_limit=5, parallel=3)  # slices paged at once
    assert {t: sorted(s) for t, s in sliced.traces.items()} == {t: sorted(s) for t, s in groups.traces.items()}
    # the window is [start, end): a span ending exactly at `end` belongs to the next one
    cut = datetime.fromtimestamp(base + 6.5, UTC)
    before = filter_spans(logs, call, Window(window.start, cut), SpanGroups())
    after = filter_spans(logs, call, Window(cut, window.end), SpanGroups())
    assert set(before.traces) | set(after.traces) == w3c(ids)
    assert not set(before.traces) & set(after.traces)


def test_a_window_is_cut_into_slices_only_while_the_quota_goes_unused(fresh_config: Config, span_account: str) -> None:
    base = time.time() - 1500
    ids = put_at(fresh_config, span_account, [base + i for i in range(20)], segments=3)  # 3 spans per ms
    logs, _ = clients(fresh_config, span_account)
    window = Window(datetime.fromtimestamp(base - 60, UTC), datetime.fromtimestamp(base + 60, UTC))
    one = caller(span_account)
    chained = filter_spans(logs, one, window, SpanGroups(), page_limit=7)  # pages end inside a timestamp
    assert set(chained.traces) == w3c(ids) and chained.events == 60
    assert one.stats.filter_splits == 0 and one.stats.pages == 9
    spare = caller(span_account)  # a token always spare: one chain's latency leaves the quota unused
    sliced = filter_spans(logs, spare, window, SpanGroups(), page_limit=7, parallel=4)
    assert spare.stats.filter_splits > 0
    assert list(sliced.traces.items()) == list(chained.traces.items())  # same spans, same order, none twice
    assert sliced.events == 60
    clock = [0.0]  # every call waits for its token: the bucket is the limit, more chains add only calls

    def wait(seconds: float) -> None:
        clock[0] += seconds

    paced = Caller(span_account, REGION, TokenBucket(4.0, burst=1, clock=lambda: clock[0], sleep=wait))  # exact floats
    assert list(filter_spans(logs, paced, window, SpanGroups(), page_limit=7, parallel=4).traces) == list(
        chained.traces
    )
    assert paced.stats.filter_splits == 0 and paced.stats.pages == 9


def test_insights_backfill_chunks_until_each_query_is_under_the_row_limit(
    fresh_config: Config, span_account: str
) -> None:
    base = float(int(time.time()) - 3600)
    ids = put_at(fresh_config, span_account, [base + i * 3 for i in range(40)])
    logs, _ = clients(fresh_config, span_account)
    call = caller(span_account)
    groups = SpanGroups()
    start, end = datetime.fromtimestamp(base - 30, UTC), datetime.fromtimestamp(base + 150, UTC)
    plan = insights_spans(logs, call, start, end, groups, row_limit=8, max_concurrent=3, poll_seconds=0)
    assert set(groups.traces) == w3c(ids)
    assert all(len(spans) == 1 for spans in groups.traces.values())  # no span twice at a chunk edge
    assert plan.splits > 0 and plan.queries == 2 * plan.splits + 1
    assert plan.rows == 40
    covered = sorted(plan.ranges)  # the answered ranges tile [start, end) without gaps
    assert covered[0][0] == int(start.timestamp()) and covered[-1][1] == int(end.timestamp())
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def test_throttled_logs_apis_are_paced_counted_and_nothing_missed(
    fresh_config: Config, span_account: str, search: TransactionSearch
) -> None:
    base = time.time() - 1700
    ids = put_at(fresh_config, span_account, [base + i for i in range(30)])
    logs, _ = clients(fresh_config, span_account)
    search.configure_filter_quota(5.0, burst=1)
    call = caller(span_account)  # the client's own bucket is far above the quota: the front throttles
    window = Window(datetime.fromtimestamp(base - 10, UTC), datetime.fromtimestamp(base + 60, UTC))
    groups = filter_spans(logs, call, window, SpanGroups(), page_limit=2)
    assert set(groups.traces) == w3c(ids)
    assert call.stats.throttles > 0 and call.stats.retries == call.stats.throttles
    assert search.counters["logs.FilterLogEvents.throttled"] >= call.stats.throttles
    search.start_query_limit_exceeded = 2  # the concurrent-query limit, twice
    insights = SpanGroups()
    before = call.stats.throttles
    insights_spans(logs, call, window.start, window.end, insights, poll_seconds=0)
    assert set(insights.traces) == w3c(ids)
    assert call.stats.throttles - before == 2


def test_a_role_without_the_logs_actions_fails_naming_the_action(
    fresh_config: Config, span_account: str, search: TransactionSearch
) -> None:
    search.deny_logs.add(span_account)
    logs, _ = clients(fresh_config, span_account)
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    with pytest.raises(AccountAccessError, match="lacks logs:FilterLogEvents"):
        filter_spans(logs, caller(span_account), Window(hour, now), SpanGroups())


def test_retrieval_retention_and_reader_selection(fresh_config: Config, span_account: str) -> None:
    base = time.time() - 900
    ids = put_at(fresh_config, span_account, [base + i for i in range(7)], segments=2)
    logs, xray = clients(fresh_config, span_account)
    call = caller(span_account)
    groups = SpanGroups()
    found = retrieve_spans(
        xray, call, ids[:6], datetime.fromtimestamp(base - 60, UTC), datetime.now(UTC), groups, poll_seconds=0
    )
    assert found == 6 and set(groups.traces) == w3c(ids[:6])
    assert all(len(spans) == 2 for spans in groups.traces.values())
    assert spans_retention_days(logs, call) == 30
    choice = select_reader(xray, call)
    assert (choice.reader, choice.destination, choice.status) == ("spans", "CloudWatchLogs", "ACTIVE")
    assert choice.indexed_percentage is not None and choice.indexed_percentage <= 100
    classic = fresh_config.roster.accounts[1].account_id
    _, classic_xray = clients(fresh_config, classic)
    assert select_reader(classic_xray, caller(classic)).reader == "xray"
