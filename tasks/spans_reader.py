"""Transaction Search reads for one (account, region): reader selection, `aws/spans` through
FilterLogEvents (sweeps) and Logs Insights (backfill), and X-Ray trace retrieval (single traces).

Thin I/O over boto3 clients of the member account (the same assumed role as the X-Ray reader);
the pure half — reader choice, trace ids, grouping, rejection reasons — is `tasks.span_records`.

* `select_reader`       GetTraceSegmentDestination + GetIndexingRules (`Default` rule's
                        sampling percentage) + the reader of the previous run → `ReaderChoice`.
* `filter_spans`        FilterLogEvents over [start, end) in ms, every nextToken page (pages may be
                        empty while a token remains, as the API documents); one chain of pages,
                        cut into slices paged at once only while the quota would go unused.
* `insights_spans`      StartQuery/GetQueryResults `fields @timestamp, @message | sort @timestamp asc
                        | limit N`: a time range whose query returns N rows (the row limit, at most
                        10,000) is split in halves and asked again, until every query stays under it;
                        at most `max_concurrent` queries run at once (the account limit is 30 in the
                        StartQuery reference, 100 in the Logs Insights guide: the default 10 leaves
                        room for people's own queries).
* `retrieve_spans`      StartTraceRetrieval (≤ 100 ids) → ListRetrievedTraces (`OTEL`) until COMPLETE.
* `spans_retention_days` DescribeLogGroups: the backfill horizon (None: never expires).

Every call takes a token from the (account, region) Logs bucket first (`LOGS_LIMITERS`, 5 calls/s by
default: FilterLogEvents' quota — check your account's Service Quotas); `ThrottlingException` and
`LimitExceededException` drain the bucket, back off with full jitter and are counted (`SpanStats`);
exhausted → `TransientError`. AccessDenied → `AccountAccessError` naming the missing action, so an
account whose role lacks the Logs permissions fails alone, saying what to grant.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tasks.errors import ACCESS_CODES, AccountAccessError, TransientError, aws_error_code, classify_aws_error
from tasks.pacing import DEFAULT_BACKOFF, Backoff, CallCounters, LimiterRegistry, Sleep, TokenBucket
from tasks.retrying import throttled_call
from tasks.span_records import ReaderChoice, SpanGroups, choose_reader, split_range
from tasks.windows import Window

SPANS_LOG_GROUP = "aws/spans"
INSIGHTS_ROW_LIMIT = 10_000  # GetQueryResults returns at most 10,000 rows; `limit` cannot exceed it
INSIGHTS_MAX_CONCURRENT = 10
INSIGHTS_QUERY = "fields @timestamp, @message | sort @timestamp asc | limit {limit}"
FILTER_PAGE_LIMIT = 10_000
RETRIEVAL_MAX_IDS = 100
LOGS_RATE_PER_SECOND = 5.0
THROTTLE_CODES = frozenset(
    {"ThrottlingException", "ThrottledException", "Throttling", "TooManyRequestsException", "LimitExceededException"}
)
_NOT_AVAILABLE = frozenset({"404", "NotFound", "UnknownOperationException", "UnknownOperation", "NotImplemented"})

LOGS_LIMITERS = LimiterRegistry(rate=LOGS_RATE_PER_SECOND)


@dataclass
class SpanStats(CallCounters):
    """What one (account, region) spans read cost; counted like `XRayStats`."""

    calls: int = 0
    pages: int = 0
    events: int = 0
    filter_splits: int = 0  # FilterLogEvents ranges cut into slices paged at once
    queries: int = 0
    query_splits: int = 0
    throttles: int = 0
    retries: int = 0
    wait_seconds: float = 0.0


@dataclass
class Caller:
    """Paced, counted calls for one (account, region)."""

    account_id: str
    region: str
    limiter: TokenBucket
    stats: SpanStats = field(default_factory=SpanStats)
    backoff: Backoff = DEFAULT_BACKOFF
    sleep: Sleep = time.sleep
    rng: random.Random | None = None

    def __call__(self, client: Any, operation: str, action: str, **params: Any) -> dict[str, Any]:
        context = f"{action} account={self.account_id} region={self.region}"
        try:
            return throttled_call(
                getattr(client, operation), params,
                throttle_codes=THROTTLE_CODES, limiter=self.limiter, backoff=self.backoff,
                counters=self.stats, context=context, sleep=self.sleep, rng=self.rng,
            )  # fmt: skip
        except ClientError as error:
            code = aws_error_code(error)
            if code in ACCESS_CODES:
                raise AccountAccessError(
                    f"{context}: the member role lacks {action} ({code}); grant it on {SPANS_LOG_GROUP}"
                    if action.startswith("logs:")
                    else f"{context}: the member role lacks {action} ({code})"
                ) from error
            raise classify_aws_error(error, context) from error
        except (BotoCoreError, ConnectionError, TimeoutError) as error:
            raise classify_aws_error(error, context) from error


# --------------------------------------------------------------------------- reader selection


def select_reader(xray: Any, call: Caller, previous: str | None = None) -> ReaderChoice:
    """The reader of this run (`tasks.span_records.choose_reader`); never raises for a missing API."""
    try:
        where = call(xray, "get_trace_segment_destination", "xray:GetTraceSegmentDestination")
    except (AccountAccessError, TransientError) as error:
        return choose_reader(None, None, previous=previous, detail=str(error)[:200])
    except Exception as error:
        text = str(error)
        detail = "not implemented by the endpoint" if any(c in text for c in _NOT_AVAILABLE) else text[:200]
        return choose_reader(None, None, previous=previous, detail=detail)
    destination, status = where.get("Destination"), where.get("Status")
    percentage: float | None = None
    if destination == "CloudWatchLogs":
        try:
            rules = call(xray, "get_indexing_rules", "xray:GetIndexingRules").get("IndexingRules") or []
        except Exception:
            rules = []
        for rule in rules:
            probabilistic = (rule.get("Rule") or {}).get("Probabilistic") or {}
            if rule.get("Name") == "Default" and probabilistic:
                value = probabilistic.get("ActualSamplingPercentage", probabilistic.get("DesiredSamplingPercentage"))
                percentage = float(value) if value is not None else None
    return choose_reader(destination, status, percentage, previous)


# --------------------------------------------------------------------------- FilterLogEvents


def _ms(value: datetime) -> int:
    return int(value.astimezone(UTC).timestamp() * 1000)


def _pages(
    logs: Any,
    call: Caller,
    start: int,
    end: int,
    page_limit: int,
    max_pages: int,
    filter_pattern: str | None = None,
) -> Iterator[tuple[list[Any], bool]]:
    """(events, more pages follow) of FilterLogEvents over [start, end) in ms, page by page (only
    events matching `filter_pattern`, a CloudWatch Logs filter pattern, when given)."""
    if not 1 <= page_limit <= FILTER_PAGE_LIMIT:
        raise ValueError(f"page_limit must be 1..{FILTER_PAGE_LIMIT}, got {page_limit}")
    params: dict[str, Any] = {
        "logGroupName": SPANS_LOG_GROUP,
        "startTime": start,
        "endTime": end - 1,  # endTime is inclusive
        "limit": page_limit,
    }
    if filter_pattern:
        params["filterPattern"] = filter_pattern
    seen_tokens: set[str] = set()
    for _ in range(max_pages):
        try:
            page = call(logs, "filter_log_events", "logs:FilterLogEvents", **params)
        except TransientError:
            raise
        except Exception as error:
            if "ResourceNotFoundException" in str(error):
                return  # no span written yet: the group does not exist
            raise
        events = page.get("events") or []
        call.stats.add(pages=1, events=len(events))
        token = page.get("nextToken")
        yield events, bool(token)
        if not token:
            return
        if token in seen_tokens:
            raise TransientError(f"logs:FilterLogEvents {call.account_id}/{call.region}: nextToken repeated")
        seen_tokens.add(token)
        params["nextToken"] = token
    raise TransientError(f"logs:FilterLogEvents {call.account_id}/{call.region}: more than {max_pages} pages")


def filter_events(
    logs: Any,
    call: Caller,
    window: Window,
    *,
    page_limit: int = FILTER_PAGE_LIMIT,
    max_pages: int = 100_000,
    filter_pattern: str | None = None,
) -> Iterator[str]:
    """Every `aws/spans` message with a timestamp in [window.start, window.end) (and matching
    `filter_pattern` when given: filtered by the service), one page after the other."""
    pages = _pages(logs, call, _ms(window.start), _ms(window.end), page_limit, max_pages, filter_pattern)
    for events, _ in pages:
        for event in events:
            yield event.get("message")


@dataclass
class _Slice:
    """A time range [start, end) in ms paged by one chain of FilterLogEvents calls."""

    start: int
    end: int
    skip: frozenset[str] = frozenset()  # eventIds at `start` the slice it was cut from already read
    messages: list[Any] = field(default_factory=list)


class _WindowPager:
    """One window read by up to `parallel` chains of FilterLogEvents pages at once (`filter_spans`)."""

    def __init__(
        self,
        logs: Any,
        call: Caller,
        window: Window,
        page_limit: int,
        parallel: int,
        stop: threading.Event | None,
        max_pages: int = 100_000,
    ) -> None:
        self.logs, self.call, self.page_limit, self.max_pages = logs, call, page_limit, max_pages
        self.parallel, self.stop = max(1, parallel), stop
        self._cond = threading.Condition()
        self._pending = [_Slice(_ms(window.start), _ms(window.end))]
        self._done: list[_Slice] = []
        self._busy = 0
        self._failed: BaseException | None = None

    def messages(self) -> list[Any]:
        """Every message of the window, in time order."""
        if self.parallel == 1:
            self._work()
        else:
            with ThreadPoolExecutor(self.parallel, thread_name_prefix="spans-page") as pool:
                for worker in [pool.submit(self._work) for _ in range(self.parallel)]:
                    worker.result()
        if self._failed is not None:
            raise self._failed
        return [message for piece in sorted(self._done, key=lambda p: p.start) for message in piece.messages]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and self._busy and self._failed is None:
                    self._cond.wait()
                if self._failed is not None or not self._pending:
                    return
                piece = self._pending.pop(0)
                self._busy += 1
            try:
                self._read(piece)
            except BaseException as error:
                with self._cond:
                    self._failed = self._failed or error
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _read(self, piece: _Slice) -> None:
        top, at_top = piece.start - 1, set[str | None]()  # the latest timestamp read, and the events at it
        for events, more in _pages(self.logs, self.call, piece.start, piece.end, self.page_limit, self.max_pages):
            for event in events:
                event_id = event.get("eventId")
                if event_id is not None and event_id in piece.skip:
                    continue
                piece.messages.append(event.get("message"))
                stamp = event.get("timestamp")
                if isinstance(stamp, int) and stamp >= top:
                    at_top = at_top if stamp == top else set()
                    top = stamp
                    at_top.add(event_id)
            if self.stop is not None and self.stop.is_set():
                raise TransientError(f"logs:FilterLogEvents {self.call.account_id}/{self.call.region}: read stopped")
            if more and events and self._split(piece, top, at_top):
                break
        with self._cond:
            self._done.append(piece)

    def _split(self, piece: _Slice, top: int, at_top: set[str | None]) -> bool:
        """Hand the rest of `piece`, [top, end), to idle workers as slices, when the quota goes unused.

        Pages come sorted by timestamp (the FilterLogEvents reference), so every event of `piece`
        before `top` has been read; the events at `top` already read are skipped by the first slice."""
        if top <= piece.start or piece.end - top < 2 or None in at_top:
            return False  # no progress to cut at, or events read at `top` that could not be told apart
        with self._cond:
            idle = self.parallel - self._busy
            if idle < 1 or self._pending:
                return False
        if self.call.limiter.tokens < 1:
            return False  # the bucket is the limit, not this chain's latency: more chains add only calls
        parts = min(idle + 1, piece.end - top)
        edges = [top + (piece.end - top) * i // parts for i in range(parts)] + [piece.end]
        rest = [_Slice(a, b) for a, b in itertools.pairwise(edges)]
        rest[0].skip = frozenset(str(event_id) for event_id in at_top)
        self.call.stats.add(filter_splits=1)
        with self._cond:
            self._pending.extend(rest)
            self._cond.notify_all()
        return True


def filter_spans(
    logs: Any,
    call: Caller,
    window: Window,
    groups: SpanGroups,
    redaction: Any = None,
    page_limit: int = FILTER_PAGE_LIMIT,
    parallel: int = 1,
    stop: threading.Event | None = None,
) -> SpanGroups:
    """Every `aws/spans` message of `window` grouped by trace into `groups` (returned).

    One chain of FilterLogEvents pages to start with, so a window of one page costs one call.
    `parallel` > 1: when a page comes back with more to read while a token of the account's bucket
    goes unused (one chain's latency is above 1/quota) and a worker is idle, the rest of that
    chain's range is cut at the last timestamp read into slices paged at once, up to `parallel`
    chains (FilterLogEvents returns events sorted by timestamp: what lies before that timestamp
    was read; events at it already read are skipped by eventId). The slices' events are added in
    time order, so the result does not depend on `parallel`. `stop` set: the read ends after the
    page in flight, raising `TransientError`."""
    messages = _WindowPager(logs, call, window, page_limit, parallel, stop).messages()
    groups.extend(messages, redaction)
    return groups


# --------------------------------------------------------------------------- Logs Insights


@dataclass
class InsightsPlan:
    """What an Insights backfill asked: ranges queried, splits, rows read."""

    queries: int = 0
    splits: int = 0
    rows: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)


def _row_ms(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:  # the service's form: "2024-01-01 00:00:00.123"
        return int(datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        return None


def insights_spans(
    logs: Any,
    call: Caller,
    start: datetime,
    end: datetime,
    groups: SpanGroups,
    *,
    redaction: Any = None,
    row_limit: int = INSIGHTS_ROW_LIMIT,
    max_concurrent: int = INSIGHTS_MAX_CONCURRENT,
    poll_seconds: float = 1.0,
    max_polls: int = 3600,
) -> InsightsPlan:
    """Every span of [start, end) (whole seconds) through Logs Insights, chunked under `row_limit`."""
    if not 1 <= row_limit <= INSIGHTS_ROW_LIMIT:
        raise ValueError(f"row_limit must be 1..{INSIGHTS_ROW_LIMIT}, got {row_limit}")
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
    plan = InsightsPlan()
    pending: list[tuple[int, int]] = [(int(start.timestamp()), int(-(-end.timestamp() // 1)))]
    running: dict[str, tuple[int, int]] = {}
    polls: dict[str, int] = {}
    query = INSIGHTS_QUERY.format(limit=row_limit)
    while pending or running:
        while pending and len(running) < max_concurrent:
            low, high = pending.pop(0)
            try:
                started = call(
                    logs, "start_query", "logs:StartQuery",
                    logGroupName=SPANS_LOG_GROUP, startTime=low, endTime=high, queryString=query, limit=row_limit,
                )  # fmt: skip
            except Exception as error:
                if "ResourceNotFoundException" in str(error):
                    continue
                raise
            plan.queries += 1
            call.stats.add(queries=1)
            running[started["queryId"]] = (low, high)
        for query_id in list(running):
            result = call(logs, "get_query_results", "logs:GetQueryResults", queryId=query_id)
            status = result.get("status")
            if status in ("Scheduled", "Running", "Unknown"):
                polls[query_id] = polls.get(query_id, 0) + 1
                if polls[query_id] > max_polls:
                    raise TransientError(f"logs:StartQuery {query_id}: still {status} after {max_polls} polls")
                continue
            low, high = running.pop(query_id)
            if status != "Complete":
                raise TransientError(f"logs:StartQuery {call.account_id}/{call.region} [{low}, {high}): {status}")
            rows = result.get("results") or []
            if len(rows) >= row_limit:
                halves = split_range(low, high)
                if halves is None:
                    raise TransientError(
                        f"logs:StartQuery {call.account_id}/{call.region}: more than {row_limit} spans in the "
                        f"second {low}; raise row_limit (≤ {INSIGHTS_ROW_LIMIT})"
                    )
                plan.splits += 1
                call.stats.add(query_splits=1)
                pending[:0] = list(halves)
                continue
            plan.ranges.append((low, high))
            for row in rows:
                cells = {cell.get("field"): cell.get("value") for cell in row}
                stamp = _row_ms(cells.get("@timestamp"))
                if stamp is not None and not low * 1000 <= stamp < high * 1000:
                    continue  # the range's end second belongs to the next range
                plan.rows += 1
                groups.add(cells.get("@message"), redaction)
        if running:
            call.sleep(poll_seconds)
    return plan


# --------------------------------------------------------------------------- retrieval, retention


def retrieve_spans(
    xray: Any,
    call: Caller,
    trace_ids: list[str],
    start: datetime,
    end: datetime,
    groups: SpanGroups,
    *,
    redaction: Any = None,
    poll_seconds: float = 1.0,
    max_polls: int = 600,
) -> int:
    """Spans of the given traces (StartTraceRetrieval → ListRetrievedTraces, OTEL); traces found."""
    found = 0
    for offset in range(0, len(trace_ids), RETRIEVAL_MAX_IDS):
        ids = trace_ids[offset : offset + RETRIEVAL_MAX_IDS]
        token = call(
            xray, "start_trace_retrieval", "xray:StartTraceRetrieval", TraceIds=ids, StartTime=start, EndTime=end
        )["RetrievalToken"]
        next_token: str | None = None
        for _ in range(max_polls):
            params: dict[str, Any] = {"RetrievalToken": token, "TraceFormat": "OTEL"}
            if next_token:
                params["NextToken"] = next_token
            page = call(xray, "list_retrieved_traces", "xray:ListRetrievedTraces", **params)
            status = page.get("RetrievalStatus")
            if status in ("SCHEDULED", "RUNNING"):
                call.sleep(poll_seconds)
                continue
            if status != "COMPLETE":
                raise TransientError(
                    f"trace retrieval of {len(ids)} trace ids in {call.account_id}/{call.region} ended {status} "
                    "(xray:ListRetrievedTraces)"
                )
            for trace in page.get("Traces") or []:
                found += 1
                for span in trace.get("Spans") or []:
                    groups.add(span.get("Document"), redaction)
            next_token = page.get("NextToken")
            if not next_token:
                break
        else:
            raise TransientError(
                f"trace retrieval of {len(ids)} trace ids in {call.account_id}/{call.region} not COMPLETE after "
                f"{max_polls} polls {poll_seconds:g} s apart (last status {status}; xray:ListRetrievedTraces)"
            )
    return found


def spans_retention_days(logs: Any, call: Caller) -> int | None:
    """`aws/spans`' retentionInDays (None: never expires, or no such group yet)."""
    answer = call(logs, "describe_log_groups", "logs:DescribeLogGroups", logGroupNamePrefix=SPANS_LOG_GROUP)
    for group in answer.get("logGroups") or []:
        if group.get("logGroupName") == SPANS_LOG_GROUP:
            value = group.get("retentionInDays")
            return int(value) if value is not None else None
    return None


def caller_for(
    account_id: str, region: str, limiters: LimiterRegistry | None = None, sleep: Callable[[float], None] = time.sleep
) -> Caller:
    return Caller(account_id, region, (limiters or LOGS_LIMITERS).get(account_id, region), sleep=sleep)


__all__ = [
    "INSIGHTS_MAX_CONCURRENT",
    "INSIGHTS_ROW_LIMIT",
    "LOGS_LIMITERS",
    "SPANS_LOG_GROUP",
    "Caller",
    "InsightsPlan",
    "SpanStats",
    "caller_for",
    "filter_events",
    "filter_spans",
    "insights_spans",
    "retrieve_spans",
    "select_reader",
    "spans_retention_days",
]
