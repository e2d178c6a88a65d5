"""X-Ray reads for one (account, region): windows, summaries paging, 5-id batches, throttling.

Pacing (`TokenBucket`, `LimiterRegistry`, `Backoff`: `tasks.pacing`, re-exported here) and windows
(`tasks.windows`) are pure. This module is the thin I/O over a boto3 X-Ray client built with
`XRAY_BOTO_CONFIG` (botocore retries off, so every throttle is seen, counted and handled here; the
attempt table is in `tasks.retrying`):

* `list_trace_ids`      GetTraceSummaries (Sampling=False), every NextToken page, ids de-duplicated;
                        a FilterExpression the endpoint rejects is dropped and reported.
* `batch_get_traces`    BatchGetTraces in groups of ≤ 5, UnprocessedTraceIds retried (bounded),
                        LimitExceeded traces kept and flagged, Trace objects returned as AWS sent them.
* `detect_transaction_search`  GetTraceSegmentDestination: CloudWatch Transaction Search accounts
                        return nothing from the X-Ray read APIs; the sweep reports them.

Every call takes a token from the (account, region) bucket first; `ThrottledException` drains the
bucket and backs off with full jitter; exhausted throttling → `TransientError`, AccessDenied →
`AccountAccessError` (via `tasks.errors.classify_aws_error`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from tasks.errors import TransientError, aws_error_code, classify_aws_error
from tasks.pacing import (
    DEFAULT_BACKOFF,
    DEFAULT_LIMITERS,
    Backoff,
    CallCounters,
    LimiterRegistry,
    Sleep,
    TokenBucket,
    limiter_for,
)
from tasks.retrying import boto_config, throttled_call
from tasks.windows import Window

if TYPE_CHECKING:
    from mypy_boto3_xray import XRayClient

    from tasks.aws import MemberSessions
else:
    XRayClient = Any

T = TypeVar("T")

TimeRangeType = Literal["TraceId", "Event", "Service"]
MAX_BATCH_IDS = 5
THROTTLE_CODES = frozenset(
    {
        "ThrottledException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
# What an endpoint answers to a FilterExpression it cannot evaluate (moto: InternalFailure).
FILTER_REJECTED_CODES = frozenset({"InternalFailure", "InvalidRequestException", "ValidationException"})

# botocore retries OFF for X-Ray: throttles must reach our bucket + backoff to be counted and paced.
XRAY_BOTO_CONFIG = boto_config("xray")

# =========================================================================== stats and results


@dataclass
class XRayStats(CallCounters):
    """What one (account, region) read cost; `merge` sums them for the sweep's report."""

    calls: int = 0
    pages: int = 0
    summaries: int = 0
    trace_ids: int = 0
    batches: int = 0
    traces: int = 0
    throttles: int = 0
    retries: int = 0
    unprocessed_retried: int = 0
    unprocessed_failed: int = 0
    limit_exceeded: int = 0
    missing: int = 0
    filter_fallbacks: int = 0
    wait_seconds: float = 0.0


@dataclass
class TraceIdListing:
    """GetTraceSummaries result for one window."""

    window: Window
    trace_ids: list[str]
    summaries: list[dict[str, Any]]
    pages: int
    filter_expression: str | None = None
    client_side_filter_needed: bool = False
    approximate_time: datetime | None = None
    traces_processed: int = 0


@dataclass
class TraceBatch:
    """BatchGetTraces result: traces as AWS returned them, plus what could not be fetched."""

    traces: list[dict[str, Any]]
    unprocessed: list[str] = field(default_factory=list)
    limit_exceeded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unprocessed and not self.missing


class TransactionSearchStatus(StrEnum):
    XRAY = "xray"  # segments go to X-Ray: these APIs see them
    CLOUDWATCH_LOGS = "cloudwatch_logs"  # Transaction Search: spans in aws/spans, X-Ray reads are empty
    UNKNOWN = "unknown"  # API missing (moto), denied, or failed


@dataclass(frozen=True)
class TransactionSearchState:
    status: TransactionSearchStatus
    destination: str | None = None
    destination_status: str | None = None
    detail: str = ""

    @property
    def xray_reads_empty(self) -> bool:
        return self.status is TransactionSearchStatus.CLOUDWATCH_LOGS


# =========================================================================== I/O


def xray_client(sessions: MemberSessions, account_id: str, region: str) -> XRayClient:
    """An X-Ray client for a member account with botocore retries off (see XRAY_BOTO_CONFIG)."""
    return sessions.client(account_id, region, "xray", config=XRAY_BOTO_CONFIG)  # type: ignore[no-any-return]


def _limiter(client: Any, account_id: str | None, limiter: TokenBucket | None) -> TokenBucket:
    if limiter is not None:
        return limiter
    region = getattr(getattr(client, "meta", None), "region_name", None) or "unknown"
    return DEFAULT_LIMITERS.get(account_id or "unknown", region)


def _context(client: Any, account_id: str | None, operation: str) -> str:
    region = getattr(getattr(client, "meta", None), "region_name", None) or "?"
    return f"xray {operation} account={account_id or '?'} region={region}"


def _call(
    client: Any,
    operation: str,
    params: dict[str, Any],
    *,
    limiter: TokenBucket,
    backoff: Backoff,
    stats: XRayStats,
    context: str,
    sleep: Sleep,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """One API call paced by the bucket; throttles back off and retry (`throttled_call`); other
    errors propagate for `_translate`."""
    return throttled_call(
        getattr(client, operation), params,
        throttle_codes=THROTTLE_CODES, limiter=limiter, backoff=backoff, counters=stats,
        context=context, sleep=sleep, rng=rng,
    )  # fmt: skip


def _translate(error: Exception, context: str) -> Exception:
    if isinstance(error, TransientError):
        return error
    if isinstance(error, (ClientError, BotoCoreError, ConnectionError, TimeoutError)):
        return classify_aws_error(error, context)
    return error


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def list_trace_ids(
    client: XRayClient,
    window: Window,
    time_range_type: TimeRangeType = "Event",
    filter_expression: str | None = None,
    *,
    account_id: str | None = None,
    limiter: TokenBucket | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    stats: XRayStats | None = None,
    max_pages: int = 10_000,
    sleep: Sleep = time.sleep,
) -> TraceIdListing:
    """Every trace id of `window` (GetTraceSummaries, Sampling=False, all NextToken pages).

    Ids are de-duplicated in first-seen order (newest first as served); `summaries` holds the
    first summary per id. If the endpoint rejects `filter_expression` (InternalFailure /
    InvalidRequestException), the listing is redone without it and
    `client_side_filter_needed` is True: the caller must filter the traces itself.
    """
    stats = stats if stats is not None else XRayStats()
    bucket = _limiter(client, account_id, limiter)
    context = _context(client, account_id, "GetTraceSummaries")

    def pages(expression: str | None) -> TraceIdListing:
        return _list_pages(
            client, window, time_range_type, expression, bucket, backoff, stats, context, max_pages, sleep
        )

    try:
        if not filter_expression:
            return pages(None)
        try:
            return pages(filter_expression)
        except ClientError as error:
            if aws_error_code(error) not in FILTER_REJECTED_CODES:
                raise
        stats.add(filter_fallbacks=1)
        listing = pages(None)
        listing.filter_expression = filter_expression
        listing.client_side_filter_needed = True
        return listing
    except Exception as error:
        raise _translate(error, context) from error


def _list_pages(
    client: Any,
    window: Window,
    time_range_type: TimeRangeType,
    filter_expression: str | None,
    limiter: TokenBucket,
    backoff: Backoff,
    stats: XRayStats,
    context: str,
    max_pages: int,
    sleep: Sleep,
) -> TraceIdListing:
    params: dict[str, Any] = {
        "StartTime": window.start,
        "EndTime": window.end,
        "TimeRangeType": time_range_type,
        "Sampling": False,
    }
    if filter_expression:
        params["FilterExpression"] = filter_expression
    summaries: dict[str, dict[str, Any]] = {}
    seen_tokens: set[str] = set()
    pages, processed = 0, 0
    approximate: datetime | None = None
    token: str | None = None
    while True:
        request = dict(params, NextToken=token) if token else params
        response = _call(
            client, "get_trace_summaries", request,
            limiter=limiter, backoff=backoff, stats=stats, context=context, sleep=sleep,
        )  # fmt: skip
        pages += 1
        stats.add(pages=1)
        page = response.get("TraceSummaries") or []
        stats.add(summaries=len(page))
        for summary in page:
            trace_id = summary.get("Id")
            if trace_id and trace_id not in summaries:
                summaries[trace_id] = summary
        processed = max(processed, int(response.get("TracesProcessedCount") or 0))
        approximate = response.get("ApproximateTime") or approximate
        token = response.get("NextToken")
        if not token:
            break
        if token in seen_tokens:
            raise TransientError(f"{context}: the endpoint repeated a NextToken; paging would never end")
        if pages >= max_pages:
            raise TransientError(f"{context}: more than {max_pages} pages; use smaller windows")
        seen_tokens.add(token)
    stats.add(trace_ids=len(summaries))
    return TraceIdListing(
        window=window,
        trace_ids=list(summaries),
        summaries=list(summaries.values()),
        pages=pages,
        filter_expression=filter_expression,
        approximate_time=approximate,
        traces_processed=processed,
    )


def batch_get_traces(
    client: XRayClient,
    trace_ids: Sequence[str],
    *,
    account_id: str | None = None,
    limiter: TokenBucket | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    stats: XRayStats | None = None,
    batch_size: int = MAX_BATCH_IDS,
    max_unprocessed_rounds: int = 5,
    sleep: Sleep = time.sleep,
) -> TraceBatch:
    """Full traces for `trace_ids` (de-duplicated), ≤ 5 ids per BatchGetTraces call.

    `UnprocessedTraceIds` are retried in up to `max_unprocessed_rounds` further rounds (with
    backoff between rounds), then reported in `unprocessed`. Ids neither returned nor
    unprocessed are `missing`. Traces with `LimitExceeded` are kept and listed. Trace objects are
    returned in request order exactly as AWS sent them (Documents are the original strings).
    """
    if not 1 <= batch_size <= MAX_BATCH_IDS:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH_IDS}, got {batch_size}")
    if max_unprocessed_rounds < 0:
        raise ValueError("max_unprocessed_rounds must be >= 0")
    stats = stats if stats is not None else XRayStats()
    bucket = _limiter(client, account_id, limiter)
    context = _context(client, account_id, "BatchGetTraces")
    wanted = _unique(trace_ids)
    found: dict[str, dict[str, Any]] = {}
    pending = wanted
    unprocessed: list[str] = []
    try:
        for round_number in range(max_unprocessed_rounds + 1):
            if round_number:
                stats.add(unprocessed_retried=len(pending))
                delay = backoff.delay(round_number - 1)
                stats.add(wait_seconds=delay)
                sleep(delay)
            unprocessed = []
            for offset in range(0, len(pending), batch_size):
                group = pending[offset : offset + batch_size]
                response = _call(
                    client, "batch_get_traces", {"TraceIds": group},
                    limiter=bucket, backoff=backoff, stats=stats, context=context, sleep=sleep,
                )  # fmt: skip
                stats.add(batches=1)
                for trace in response.get("Traces") or []:
                    trace_id = trace.get("Id")
                    if trace_id and trace_id not in found:
                        found[trace_id] = trace
                unprocessed.extend(t for t in response.get("UnprocessedTraceIds") or [] if t not in found)
            pending = _unique(unprocessed)
            if not pending:
                break
    except Exception as error:
        raise _translate(error, context) from error
    unprocessed = _unique(unprocessed)
    requested = set(wanted)
    traces = [found[t] for t in wanted if t in found]
    traces.extend(trace for trace_id, trace in found.items() if trace_id not in requested)
    limit_exceeded = [t["Id"] for t in traces if t.get("LimitExceeded")]
    missing = [t for t in wanted if t not in found and t not in unprocessed]
    stats.add(
        traces=len(traces),
        unprocessed_failed=len(unprocessed),
        limit_exceeded=len(limit_exceeded),
        missing=len(missing),
    )
    return TraceBatch(traces=traces, unprocessed=unprocessed, limit_exceeded=limit_exceeded, missing=missing)


_NOT_AVAILABLE_CODES = frozenset(
    {"404", "NotFound", "UnknownOperationException", "UnknownOperation", "NotImplemented", "InvalidAction"}
)


def detect_transaction_search(
    client: XRayClient,
    *,
    account_id: str | None = None,
    limiter: TokenBucket | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    stats: XRayStats | None = None,
    sleep: Sleep = time.sleep,
) -> TransactionSearchState:
    """Where the account's segments go (GetTraceSegmentDestination). Never raises.

    Destination=CloudWatchLogs (ACTIVE or PENDING) → CLOUDWATCH_LOGS: X-Ray reads return nothing.
    Not implemented (moto answers 404), access denied (the reader role may lack
    `xray:GetTraceSegmentDestination`), exhausted throttling or any other failure → UNKNOWN.
    """
    stats = stats if stats is not None else XRayStats()
    bucket = _limiter(client, account_id, limiter)
    context = _context(client, account_id, "GetTraceSegmentDestination")
    if not hasattr(client, "get_trace_segment_destination"):
        return TransactionSearchState(TransactionSearchStatus.UNKNOWN, detail="botocore lacks the API")
    try:
        response = _call(
            client, "get_trace_segment_destination", {},
            limiter=bucket, backoff=backoff, stats=stats, context=context, sleep=sleep,
        )  # fmt: skip
    except ClientError as error:
        code = aws_error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = "not implemented by the endpoint" if code in _NOT_AVAILABLE_CODES or status == 404 else code
        return TransactionSearchState(TransactionSearchStatus.UNKNOWN, detail=f"{context}: {reason}")
    except Exception as error:
        return TransactionSearchState(
            TransactionSearchStatus.UNKNOWN, detail=str(_translate(error, context)) or type(error).__name__
        )
    destination = response.get("Destination")
    destination_status = response.get("Status")
    if destination == "CloudWatchLogs":
        status_value = TransactionSearchStatus.CLOUDWATCH_LOGS
    elif destination == "XRay":
        status_value = TransactionSearchStatus.XRAY
    else:
        status_value = TransactionSearchStatus.UNKNOWN
    return TransactionSearchState(
        status_value,
        destination=destination,
        destination_status=destination_status,
        detail=f"Destination={destination} Status={destination_status}",
    )


__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_LIMITERS",
    "MAX_BATCH_IDS",
    "XRAY_BOTO_CONFIG",
    "Backoff",
    "LimiterRegistry",
    "TimeRangeType",
    "TokenBucket",
    "TraceBatch",
    "TraceIdListing",
    "TransactionSearchState",
    "TransactionSearchStatus",
    "XRayStats",
    "batch_get_traces",
    "detect_transaction_search",
    "limiter_for",
    "list_trace_ids",
    "xray_client",
]
