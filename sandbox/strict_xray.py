"""A strict X-Ray front: real AWS limits in front of moto's lenient X-Ray.

moto 5.2.5 answers GetTraceSummaries in one page without NextToken, accepts any number of ids in
BatchGetTraces, never throttles and fails every FilterExpression with InternalFailure. Code that
is only ever run against that would never exercise paging, 5-id batches or throttling. This
loopback HTTP server sits between boto3 and the moto server for the X-Ray service only (boto3
reaches it through `AWS_ENDPOINT_URL_XRAY`) and adds what real X-Ray does:

* a token bucket per (account, region) for the read APIs; past it HTTP 429 `ThrottledException`;
* GetTraceSummaries paged (`page_size` per page, newest first) with an opaque NextToken over a
  snapshot of the result set, so traces arriving between pages neither show up nor shift pages;
  `TimeRangeType=TraceId` is honoured (moto ignores it and always filters by segment times), and so
  is `Event` (the default: the trace's update time). moto only returns traces whose segments lie
  wholly inside the window, so a trace crossing a window boundary would be in no window at all;
  the front records, from every PutTraceSegments it forwards, each trace's latest event (the
  newest end_time, or start_time while in progress) and matches each trace to exactly one window;
* FilterExpression stripped (and recorded) before forwarding, or rejected (`filter_mode`);
* BatchGetTraces with more than 5 ids → HTTP 400 `InvalidRequestException`; optional
  deterministic `UnprocessedTraceIds` injection; `LimitExceeded` always present, and set (with the
  segment list cut) when a trace's documents exceed `trace_size_limit`;
* CloudWatch Transaction Search (moto has none of it): the segment destination switch through
  PENDING, the indexed share, indexing rules, trace retrieval, span records in `aws/spans`, and
  the CloudWatch Logs quotas the spans reader meets — `sandbox.transaction_search`, reached through
  `front.transaction_search` (Logs requests come here through `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`).

Requests are forwarded byte for byte (method, path, headers including the SigV4 Authorization,
body), so moto still picks the account from the access key. The front resolves the same account
for its own bookkeeping: in the sandbox it runs in the moto process and asks moto's IAM backend
which account owns the access key; when moto lives elsewhere it falls back to one bucket per key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import http.client
import json
import logging
import os
import re
import threading
import time
import uuid
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from sandbox import oam as oam_api
from sandbox.transaction_search import LOGS_TARGET_PREFIX, ApiError, TransactionSearch
from tasks.pacing import TokenBucket

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's account for keys it does not know
MAX_BATCH_IDS = 5

FilterMode = Literal["strip", "reject", "passthrough"]

# Path → operation name (X-Ray is rest-json: the operation is the request URI).
OPERATIONS: dict[str, str] = {
    "/TraceSummaries": "GetTraceSummaries",
    "/Traces": "BatchGetTraces",
    "/TraceSegments": "PutTraceSegments",
    "/TelemetryRecords": "PutTelemetryRecords",
    "/ServiceGraph": "GetServiceGraph",
    "/TraceGraph": "GetTraceGraph",
    "/GetTraceSegmentDestination": "GetTraceSegmentDestination",
    "/UpdateTraceSegmentDestination": "UpdateTraceSegmentDestination",
    "/GetIndexingRules": "GetIndexingRules",
    "/UpdateIndexingRule": "UpdateIndexingRule",
    "/StartTraceRetrieval": "StartTraceRetrieval",
    "/ListRetrievedTraces": "ListRetrievedTraces",
}
WRITE_OPERATIONS = frozenset(
    {"PutTraceSegments", "PutTelemetryRecords", "UpdateTraceSegmentDestination", "UpdateIndexingRule"}
)

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_SEARCH_OPERATIONS = frozenset(
    {
        "GetTraceSegmentDestination",
        "UpdateTraceSegmentDestination",
        "GetIndexingRules",
        "UpdateIndexingRule",
        "StartTraceRetrieval",
        "ListRetrievedTraces",
    }
)
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/,\s]+)/")


# --------------------------------------------------------------------------- account resolution


class MotoAccountResolver:
    """access key → account id, the way moto decides it (env, header, IAM backend, default).

    Only works when moto runs in this process (the sandbox). Keys moto does not know: temporary
    keys (`ASIA…`) get a bucket of their own (`key:<access key>`, moto out of process); long-term
    keys map to moto's default account, as moto does.
    """

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, access_key: str | None, headers: Mapping[str, str]) -> str:
        if os.environ.get("MOTO_ACCOUNT_ID"):
            return os.environ["MOTO_ACCOUNT_ID"]
        header = headers.get("x-moto-account-id")
        if header:
            return header
        if not access_key:
            return DEFAULT_ACCOUNT_ID
        with self._lock:
            cached = self._cache.get(access_key)
        if cached:
            return cached
        found = _moto_account_of(access_key)
        if found:
            with self._lock:
                self._cache[access_key] = found
            return found
        if access_key.startswith("ASIA"):
            return f"key:{access_key}"
        return DEFAULT_ACCOUNT_ID


def _moto_account_of(access_key: str) -> str | None:
    try:
        from moto.iam.models import iam_backends
        from moto.utilities.utils import PARTITION_NAMES
    except Exception:  # moto not installed here: the out-of-process fallback applies
        return None
    # list(): moto's own lookup does the same against concurrent account creation
    for account_id, account in list(iam_backends.items()):
        for partition in PARTITION_NAMES:
            with contextlib.suppress(Exception):
                if access_key in account[partition].access_keys:
                    return str(account_id)
    return None


# --------------------------------------------------------------------------- statistics


@dataclass
class _Counters:
    requests: int = 0
    throttled: int = 0
    pages_served: int = 0
    rejected: int = 0
    forwarded: int = 0
    unprocessed_injected: int = 0
    limit_exceeded: int = 0
    operations: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "pages_served": self.pages_served,
            "rejected": self.rejected,
            "forwarded": self.forwarded,
            "unprocessed_injected": self.unprocessed_injected,
            "limit_exceeded": self.limit_exceeded,
            "operations": dict(self.operations),
        }


@dataclass
class _Snapshot:
    query: str
    summaries: list[dict[str, Any]]
    approximate_time: Any
    processed: int
    created: float


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- the front


class StrictXRayFront:
    """Loopback HTTP server imposing real X-Ray limits on an upstream (moto) X-Ray endpoint.

    Knobs (`page_size`, `rate_per_second`, `burst`, `unprocessed_every`, `unprocessed_times`,
    `filter_mode`, `trace_size_limit`, `max_batch_ids`) may be changed at run time through
    `configure(...)` or by assigning the attribute; rate/burst changes refill every bucket.
    `rate_per_second=None` turns throttling off.
    """

    def __init__(
        self,
        upstream: str,
        page_size: int = 10,
        rate_per_second: float | None = 20.0,
        burst: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_batch_ids: int = MAX_BATCH_IDS,
        unprocessed_every: int = 0,
        unprocessed_times: int = 1,
        filter_mode: FilterMode = "strip",
        trace_size_limit: int | None = None,
        throttle_writes: bool = False,
        snapshot_ttl_seconds: float = 900.0,
        max_snapshots: int = 512,
        trace_id_lookahead_seconds: float = 6 * 3600.0,
        account_resolver: Callable[[str | None, Mapping[str, str]], str] | None = None,
        upstream_timeout: float = 30.0,
        transaction_search: TransactionSearch | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._upstream_parts = parts
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._page_size = 1
        self._rate: float | None = None
        self._burst: float | None = None
        self.page_size = page_size
        self.configure(rate_per_second=rate_per_second, burst=burst)
        self.max_batch_ids = max_batch_ids
        self.unprocessed_every = unprocessed_every
        self.unprocessed_times = unprocessed_times
        self.filter_mode: FilterMode = filter_mode
        self.trace_size_limit = trace_size_limit
        self.throttle_writes = throttle_writes
        self.snapshot_ttl_seconds = snapshot_ttl_seconds
        self.max_snapshots = max_snapshots
        self.trace_id_lookahead_seconds = trace_id_lookahead_seconds
        self.upstream_timeout = upstream_timeout
        self._resolve_account = account_resolver or MotoAccountResolver()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}  # non-blocking: 429 instead of waiting
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._withheld: dict[tuple[str, str, str], int] = defaultdict(int)
        self.transaction_search = transaction_search or TransactionSearch()
        # CloudWatch cross-account observability (sandbox/oam.py): None = no OAM API, no copies.
        self.oam: oam_api.OamRegistry | None = None
        self._services: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
        self._totals = _Counters()
        self._accounts: dict[str, _Counters] = defaultdict(_Counters)
        self._filters: list[str] = []
        # (account, region, trace id) → latest segment event seen in PutTraceSegments (epoch s)
        self._updated: dict[tuple[str, str, str], float] = {}
        self._in_progress: set[tuple[str, str, str, str]] = set()  # (account, region, trace, segment)
        # (account, region, trace id) → revision: grows with every put that adds or changes a
        # segment of the trace, as X-Ray's TraceSummary.Revision does
        self._revisions: dict[tuple[str, str, str], int] = defaultdict(int)
        # (account, region) → its trace ids in `_updated`, so per-account lookups do not scan every
        # account's traces (a monitoring account merges 1,000 linked accounts per query)
        self._traces_of: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.event_lookaround_seconds = 31 * 86400.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ knobs

    @property
    def page_size(self) -> int:
        return self._page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"page_size must be >= 1, got {value}")
        self._page_size = int(value)

    @property
    def rate_per_second(self) -> float | None:
        return self._rate

    @rate_per_second.setter
    def rate_per_second(self, value: float | None) -> None:
        self.configure(rate_per_second=value, burst=self._burst)

    @property
    def burst(self) -> float | None:
        return self._burst

    @burst.setter
    def burst(self, value: float | None) -> None:
        self.configure(rate_per_second=self._rate, burst=value)

    _UNSET: Any = object()

    def configure(self, **knobs: Any) -> None:
        """Change knobs at run time, e.g. `configure(page_size=3, rate_per_second=2, burst=2)`.

        Changing `rate_per_second` or `burst` replaces every bucket (full again).
        """
        rate = knobs.pop("rate_per_second", self._UNSET)
        burst = knobs.pop("burst", self._UNSET)
        if rate is not self._UNSET or burst is not self._UNSET:
            new_rate = self._rate if rate is self._UNSET else rate
            new_burst = self._burst if burst is self._UNSET else burst
            if new_rate is not None and new_rate <= 0:
                raise ValueError(f"rate_per_second must be > 0 (None disables throttling), got {new_rate}")
            if new_burst is not None and new_burst < 1:
                raise ValueError(f"burst must be >= 1, got {new_burst}")
            with self._lock:
                self._rate = None if new_rate is None else float(new_rate)
                self._burst = None if new_burst is None else float(new_burst)
                self._buckets = {}
        for name, value in knobs.items():
            if name.startswith("_") or not hasattr(self, name) or callable(getattr(self, name)):
                raise TypeError(f"unknown knob {name!r}")
            setattr(self, name, value)

    def set_segment_destination(self, account_id: str, region: str, destination: str) -> None:
        """`CloudWatchLogs` = Transaction Search enabled (spans to aws/spans, X-Ray indexes ~1 %);
        `XRay` = off. Switches at once (ACTIVE); `UpdateTraceSegmentDestination` passes through PENDING."""
        if destination not in ("XRay", "CloudWatchLogs"):
            raise ValueError(f"destination must be XRay or CloudWatchLogs, got {destination!r}")
        self.transaction_search.set_destination(account_id, region, destination)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("StrictXRayFront is not started")
        host = self._server.server_address[0]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name}:{self._server.server_address[1]}"

    def start(self) -> StrictXRayFront:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self._host, self._port), _Handler)
        server.daemon_threads = True
        server.front = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="strict-xray", daemon=True
        )
        self._thread.start()
        log.debug("strict X-Ray front on %s → %s", self.url, self.upstream)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StrictXRayFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict[str, Any]:
        """Totals plus `accounts` {account: counters}; `filter_expressions` seen (last 100)."""
        with self._lock:
            result = self._totals.as_dict()
            result["accounts"] = {account: c.as_dict() for account, c in self._accounts.items()}
            result["filter_expressions"] = list(self._filters)
            result["snapshots"] = len(self._snapshots)
            return result

    def account_stats(self, account_id: str) -> dict[str, Any]:
        with self._lock:
            counters = self._accounts.get(account_id)
            return (counters or _Counters()).as_dict()

    def requests(self, operation: str | None = None, account_id: str | None = None) -> int:
        """Request count, optionally for one operation and/or one account."""
        with self._lock:
            counters = self._totals if account_id is None else self._accounts.get(account_id, _Counters())
            return counters.requests if operation is None else counters.operations.get(operation, 0)

    def reset_stats(self) -> None:
        with self._lock:
            self._totals = _Counters()
            self._accounts = defaultdict(_Counters)
            self._filters = []

    def _count(self, account: str, **increments: int) -> None:
        with self._lock:
            for counters in (self._totals, self._accounts[account]):
                for name, value in increments.items():
                    setattr(counters, name, getattr(counters, name) + value)

    # ------------------------------------------------------------------ request handling

    def handle(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> _Answer:
        lowered = {k.lower(): v for k, v in headers}
        match = _CREDENTIAL.search(lowered.get("authorization", ""))
        access_key = match.group(1) if match else None
        region = match.group(2) if match else "us-east-1"
        account = self._resolve_account(access_key, lowered)
        route = urlsplit(path).path.rstrip("/") or "/"
        if self.oam is not None and route in oam_api.PATHS:
            return _json(*self.oam.handle(route, account, region, body))
        target = lowered.get("x-amz-target", "")
        if target.startswith(LOGS_TARGET_PREFIX):
            return self._logs(account, region, target[len(LOGS_TARGET_PREFIX) :], method, path, headers, body)
        operation = OPERATIONS.get(route, route.lstrip("/") or "unknown")
        with self._lock:
            self._totals.requests += 1
            self._totals.operations[operation] += 1
            counters = self._accounts[account]
            counters.requests += 1
            counters.operations[operation] += 1

        if self._rate is not None and (self.throttle_writes or operation not in WRITE_OPERATIONS):
            with self._lock:
                bucket = self._buckets.get((account, region))
                if bucket is None:
                    burst = self._burst if self._burst is not None else max(1.0, self._rate)
                    bucket = self._buckets[(account, region)] = TokenBucket(self._rate, burst)
                allowed = bucket.try_acquire()
            if not allowed:
                self._count(account, throttled=1)
                return _error(429, "ThrottledException", "Rate exceeded")

        if method == "POST" and operation == "PutTraceSegments":
            return self._put_trace_segments(account, region, method, path, headers, body)
        if method == "POST" and operation == "GetTraceSummaries":
            return self._trace_summaries(account, region, method, path, headers, body)
        if method == "POST" and operation == "BatchGetTraces":
            return self._batch_get_traces(account, region, method, path, headers, body)
        if method == "POST" and operation in _SEARCH_OPERATIONS:
            return self._transaction_search(account, region, operation, body)
        return self._forward(account, method, path, headers, body)

    # ------------------------------------------------------------------ Transaction Search

    def _put_trace_segments(
        self, account: str, region: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Answer:
        search = self.transaction_search
        to_xray, documents = search.split_put(account, region, body)
        answer = _json(200, {"UnprocessedTraceSegments": []})
        if to_xray is not None:
            if to_xray is not body:  # the indexed share only: the signature no longer matches, moto does not check
                headers = [(k, v) for k, v in headers if k.lower() != "content-md5"]
            answer = self._forward(account, method, path, headers, to_xray)
            if answer.status == 200:
                self._record_updates(account, region, to_xray)
        if documents and answer.status == 200:
            search.write_spans(account, region, documents)
        return answer

    def _transaction_search(self, account: str, region: str, operation: str, body: bytes) -> _Answer:
        search = self.transaction_search
        request = _parse(body) or {}
        try:
            if operation == "GetTraceSegmentDestination":
                return _json(200, search.destination(account, region))
            if operation == "UpdateTraceSegmentDestination":
                return _json(200, search.update_destination(account, region, str(request.get("Destination"))))
            if operation == "GetIndexingRules":
                return _json(200, search.indexing_rules(account, region))
            if operation == "UpdateIndexingRule":
                return _json(200, search.update_indexing_rule(account, region, request))
            if operation == "StartTraceRetrieval":
                return _json(200, search.start_retrieval(account, region, request))
            return _json(200, search.list_retrieved(account, region, request))
        except ApiError as error:
            self._count(account, rejected=1)
            return _error(error.status, error.code, error.message)

    def _logs(
        self,
        account: str,
        region: str,
        operation: str,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> _Answer:
        """CloudWatch Logs: the emulated quotas and denials first, then FilterLogEvents from the
        emulation (moto's backend in this process), anything else from moto."""
        search = self.transaction_search
        refused = search.logs_gate(account, region, operation, body)
        if refused is None and operation == "FilterLogEvents":
            try:
                return _json(200, search.filter_log_events(account, region, body))
            except ApiError as error:
                refused = error
        if refused is not None:
            answer = _json(refused.status, {"__type": refused.code, "message": refused.message})
            answer.headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", refused.code)]
            return answer
        return self._forward(account, method, path, headers, body)

    def _record_updates(self, account: str, region: str, body: bytes) -> None:
        """Remember each trace's update time, X-Ray's `Event` time range.

        A document's own time (end_time, or start_time while in progress) stands for the time it
        was received, so backdated sandbox traffic lands in its windows; a put that completes a
        segment seen in progress before is an update received now, as late traces are for real.
        """
        request = _parse(body) or {}
        updates: dict[str, float] = {}
        now = time.time()
        for text in request.get("TraceSegmentDocuments") or []:
            document = _parse(text.encode() if isinstance(text, str) else b"")
            if not isinstance(document, dict) or not isinstance(document.get("trace_id"), str):
                continue
            trace_id = document["trace_id"]
            if document.get("type") != "subsegment" and isinstance(document.get("name"), str):
                with self._lock:  # the trace's services, for a monitoring account's ServiceIds
                    self._services[(account, region, trace_id)].add(
                        (document["name"], str(document.get("origin") or ""))
                    )
            key = (account, region, trace_id, str(document.get("id")))
            when = _number(document.get("end_time"))
            with self._lock:
                if document.get("in_progress") or when is None:
                    self._in_progress.add(key)
                    when = _number(document.get("start_time"))
                elif key in self._in_progress:
                    self._in_progress.discard(key)
                    when = max(when, now)
            if when is not None:
                updates[trace_id] = max(updates.get(trace_id, when), when)
        with self._lock:
            for trace_id, when in updates.items():
                trace_key = (account, region, trace_id)
                self._updated[trace_key] = max(self._updated.get(trace_key, when), when)
                self._revisions[trace_key] += 1
                self._traces_of[(account, region)].add(trace_id)

    def _updated_between(self, account: str, region: str, start: float, end: float) -> list[str]:
        with self._lock:
            return [
                trace_id
                for trace_id in self._traces_of.get((account, region), ())
                if start <= self._updated[(account, region, trace_id)] < end
            ]

    def _may_list(self, source: str, region: str, request: Mapping[str, Any]) -> bool:
        """Whether a linked account can have a summary for this query. Every sandbox put passes
        through this front, so an account with recorded traces, none in the queried range, has
        nothing to list; an account the front never saw is always asked."""
        start, end = _number(request.get("StartTime")), _number(request.get("EndTime"))
        with self._lock:
            traces = self._traces_of.get((source, region))
            if not traces or start is None or end is None:
                return True
            range_type = request.get("TimeRangeType", "Event")
            if range_type == "Event":
                return any(start <= self._updated[(source, region, t)] < end for t in traces)
            if range_type == "TraceId":
                return any(start // 1 <= _trace_epoch(t) < end for t in traces)
            return True

    def _updated_at(self, account: str, region: str, trace_id: str) -> float | None:
        with self._lock:
            return self._updated.get((account, region, trace_id))

    def revision(self, account: str, region: str, trace_id: str) -> int:
        """The trace's revision as TraceSummary reports it (1 for traces put before the front)."""
        with self._lock:
            return self._revisions.get((account, region, trace_id)) or 1

    # ------------------------------------------------------------------ GetTraceSummaries

    def _trace_summaries(
        self, account: str, region: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Answer:
        request = _parse(body)
        if request is None:
            return self._forward(account, method, path, headers, body)
        next_token = request.pop("NextToken", None)
        expression = request.get("FilterExpression")
        if expression is not None:
            if next_token is None:  # one record per query, not per page
                with self._lock:
                    self._filters = [*self._filters[-99:], str(expression)]
            if self.filter_mode == "reject":
                self._count(account, rejected=1)
                return _error(400, "InvalidRequestException", "FilterExpression is not supported here")
            if self.filter_mode == "strip":
                request.pop("FilterExpression")

        query = _query_key(account, region, request)
        if next_token is not None:
            decoded = _decode_token(next_token)
            if decoded is None or decoded[2] != query:
                self._count(account, rejected=1)
                return _error(400, "InvalidRequestException", "Invalid NextToken for this request")
            snapshot_id, offset, _ = decoded
            if offset < 0:
                self._count(account, rejected=1)
                return _error(400, "InvalidRequestException", "Invalid NextToken for this request")
            snapshot = self._snapshot(snapshot_id)
            if snapshot is None:  # expired: re-query and slice (no longer a snapshot)
                fetched = self._fetch_summaries(account, region, method, path, headers, request)
                if isinstance(fetched, _Answer):
                    return fetched
                snapshot = fetched
        else:
            fetched = self._fetch_summaries(account, region, method, path, headers, request)
            if isinstance(fetched, _Answer):
                return fetched
            snapshot = fetched
            snapshot_id, offset = uuid.uuid4().hex, 0
            snapshot.query = query

        page = snapshot.summaries[offset : offset + self.page_size]
        answer: dict[str, Any] = {
            "TraceSummaries": page,
            "ApproximateTime": snapshot.approximate_time,
            "TracesProcessedCount": snapshot.processed,
        }
        end = offset + len(page)
        if end < len(snapshot.summaries):
            answer["NextToken"] = _encode_token(snapshot_id, end, query)
            self._store_snapshot(snapshot_id, snapshot)
        else:
            with self._lock:
                self._snapshots.pop(snapshot_id, None)
        self._count(account, pages_served=1)
        return _json(200, answer)

    def _fetch_summaries(
        self,
        account: str,
        region: str,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        request: dict[str, Any],
        copies: bool = True,
    ) -> _Snapshot | _Answer:
        sources = self.oam.trace_sources(account, region) if copies and self.oam is not None else []
        if sources:  # a monitoring account: its own traces plus the linked accounts' copies
            asked = [account, *(s for s in sources if self._may_list(s, region, request))]

            def fetch(source: str) -> _Snapshot | _Answer:
                return self._fetch_summaries(
                    source, region, method, path, [*headers, ("x-moto-account-id", source)], request, copies=False
                )

            # X-Ray answers a monitoring account's query in one call; forwarding to each linked
            # account one after another made 1,000 of them exceed the client's read timeout.
            with ThreadPoolExecutor(min(8, len(asked))) as pool:
                fetched_all = list(pool.map(fetch, asked))
            per_account: dict[str, list[dict[str, Any]]] = {}
            for source, fetched in zip(asked, fetched_all, strict=True):
                if isinstance(fetched, _Answer):
                    return fetched
                per_account[source] = fetched.summaries
            merged = oam_api.merge_summaries(per_account, lambda a, t: sorted(self._services.get((a, region, t), ())))
            merged.sort(key=lambda s: (_trace_epoch(s.get("Id")), str(s.get("Id"))), reverse=True)
            return _Snapshot(
                query="",
                summaries=merged,
                approximate_time=time.time(),
                processed=len(merged),
                created=time.monotonic(),
            )
        upstream_request = dict(request)
        by_trace_id = request.get("TimeRangeType") == "TraceId"
        by_event = request.get("TimeRangeType", "Event") == "Event"
        start = _number(request.get("StartTime"))
        end = _number(request.get("EndTime"))
        if by_trace_id and start is not None and end is not None:
            # moto filters by segment times (start > StartTime, end < EndTime): widen, then filter by id
            upstream_request["StartTime"] = start - 1
            upstream_request["EndTime"] = end + self.trace_id_lookahead_seconds
        if by_event and start is not None and end is not None:
            # widen, then keep the traces whose latest event (update time) falls in [start, end)
            upstream_request["StartTime"] = start - self.event_lookaround_seconds
            upstream_request["EndTime"] = end + self.event_lookaround_seconds
        answer = self._forward(account, method, path, headers, json.dumps(upstream_request).encode())
        if answer.status != 200:
            return answer
        data = _parse(answer.body) or {}
        summaries: list[dict[str, Any]] = list(data.get("TraceSummaries") or [])
        if by_trace_id and start is not None and end is not None:
            summaries = [s for s in summaries if start // 1 <= _trace_epoch(s.get("Id")) < end]
        if by_event and start is not None and end is not None:
            kept = []
            for summary in summaries:
                updated = self._updated_at(account, region, str(summary.get("Id")))
                if updated is None:  # put before the front existed: moto's own window semantics
                    updated = start
                if start <= updated < end:
                    kept.append(summary)
            # moto leaves out traces still in progress; X-Ray lists them (IsPartial until complete).
            listed = {str(s.get("Id")) for s in kept}
            for trace_id in self._updated_between(account, region, start, end):
                if trace_id not in listed:
                    kept.append(
                        {
                            "Id": trace_id,
                            "IsPartial": True,
                            "HasError": False,
                            "HasFault": False,
                            "HasThrottle": False,
                            "Annotations": {},
                            "ServiceIds": [],
                            "Users": [],
                        }
                    )
            summaries = kept
        for summary in summaries:  # moto spells it IsParital; AWS always sends IsPartial
            if "IsPartial" not in summary:
                summary["IsPartial"] = bool(summary.pop("IsParital", False))
            summary["Revision"] = self.revision(account, region, str(summary.get("Id")))
        summaries.sort(key=lambda s: (_trace_epoch(s.get("Id")), str(s.get("Id"))), reverse=True)
        processed = data.get("TracesProcessedCount", len(summaries))
        if by_trace_id or by_event:
            processed = len(summaries)
        return _Snapshot(
            query="",
            summaries=summaries,
            approximate_time=data.get("ApproximateTime", time.time()),
            processed=processed,
            created=time.monotonic(),
        )

    def _snapshot(self, snapshot_id: str) -> _Snapshot | None:
        with self._lock:
            snapshot = self._snapshots.get(snapshot_id)
            if snapshot is None:
                return None
            if time.monotonic() - snapshot.created > self.snapshot_ttl_seconds:
                self._snapshots.pop(snapshot_id, None)
                return None
            self._snapshots.move_to_end(snapshot_id)
            return snapshot

    def _store_snapshot(self, snapshot_id: str, snapshot: _Snapshot) -> None:
        with self._lock:
            self._snapshots[snapshot_id] = snapshot
            self._snapshots.move_to_end(snapshot_id)
            while len(self._snapshots) > self.max_snapshots:
                self._snapshots.popitem(last=False)

    # ------------------------------------------------------------------ BatchGetTraces

    def _batch_get_traces(
        self, account: str, region: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Answer:
        request = _parse(body)
        if request is None or not isinstance(request.get("TraceIds"), list):
            return self._forward(account, method, path, headers, body)
        trace_ids = [str(t) for t in request["TraceIds"]]
        if len(trace_ids) > self.max_batch_ids:
            self._count(account, rejected=1)
            shown = json.dumps(trace_ids)
            return _error(
                400,
                "InvalidRequestException",
                f"1 validation error detected: Value '{shown}' at 'traceIds' failed to satisfy "
                f"constraint: Member must have length less than or equal to {self.max_batch_ids}",
            )
        withheld = self._withhold(account, region, trace_ids)
        wanted = [t for t in trace_ids if t not in withheld]
        result: dict[str, Any] = {"Traces": [], "UnprocessedTraceIds": []}
        sources = self.oam.trace_sources(account, region) if self.oam is not None else []
        if wanted and sources:  # a monitoring account: every linked account's segments of each id
            request["TraceIds"] = wanted
            per_account: dict[str, list[dict[str, Any]]] = {}
            with self._lock:  # ask only the accounts that recorded one of these ids
                holders = [a for a in sources if any((a, region, t) in self._updated for t in wanted)]
            for source in [account, *holders]:
                answer = self._forward(
                    account, method, path, [*headers, ("x-moto-account-id", source)], json.dumps(request).encode()
                )
                if answer.status != 200:
                    return answer
                per_account[source] = list((_parse(answer.body) or {}).get("Traces") or [])
            merged = oam_api.merge_traces(per_account)
            found = {str(t.get("Id")) for t in merged}
            result = {"Traces": merged, "UnprocessedTraceIds": [t for t in wanted if t not in found]}
        elif wanted:
            request["TraceIds"] = wanted
            answer = self._forward(account, method, path, headers, json.dumps(request).encode())
            if answer.status != 200:
                return answer
            result = _parse(answer.body) or result
        traces: list[dict[str, Any]] = list(result.get("Traces") or [])
        cut = 0
        for trace in traces:
            trace["Segments"] = _latest_versions(trace.get("Segments") or [])
            trace["Duration"] = _duration(trace["Segments"], trace.get("Duration"))
            if self._limit_trace(trace):
                cut += 1
        result["Traces"] = traces
        result["UnprocessedTraceIds"] = [*(result.get("UnprocessedTraceIds") or []), *withheld]
        if withheld or cut:
            self._count(account, unprocessed_injected=len(withheld), limit_exceeded=cut)
        return _json(200, result)

    def _withhold(self, account: str, region: str, trace_ids: Iterable[str]) -> list[str]:
        every, times = self.unprocessed_every, self.unprocessed_times
        if every <= 0 or times <= 0:
            return []
        withheld: list[str] = []
        with self._lock:
            for trace_id in trace_ids:
                if zlib.crc32(trace_id.encode()) % every != 0:
                    continue
                key = (account, region, trace_id)
                if self._withheld[key] < times:
                    self._withheld[key] += 1
                    withheld.append(trace_id)
        return withheld

    def _limit_trace(self, trace: dict[str, Any]) -> bool:
        """Cut the segment list at `trace_size_limit` bytes of documents, as AWS does; True if cut."""
        limit = self.trace_size_limit
        segments = list(trace.get("Segments") or [])
        if limit is None:
            trace.setdefault("LimitExceeded", False)
            return False
        total, kept = 0, []
        for segment in segments:
            size = len(str(segment.get("Document", "")).encode())
            if total + size > limit:
                break
            total += size
            kept.append(segment)
        exceeded = len(kept) < len(segments)
        trace["Segments"] = kept
        trace["LimitExceeded"] = exceeded or bool(trace.get("LimitExceeded", False))
        return exceeded

    # ------------------------------------------------------------------ forwarding

    def _forward(self, account: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> _Answer:
        parts = self._upstream_parts
        connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_type(parts.hostname or "127.0.0.1", parts.port, timeout=self.upstream_timeout)
        send_headers = {k: v for k, v in headers if k.lower() not in _HOP_BY_HOP}
        try:
            connection.request(method, path, body=body if body or method != "GET" else None, headers=send_headers)
            response = connection.getresponse()
            payload = response.read()
            relayed = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            log.warning("strict X-Ray front: upstream %s unreachable: %s", self.upstream, error)
            return _error(503, "ServiceUnavailable", f"upstream unavailable: {error}")
        finally:
            connection.close()
        self._count(account, forwarded=1)
        return _Answer(status=status, body=payload, headers=relayed)


# --------------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "xraylake-strict-xray"

    def _serve(self) -> None:
        front: StrictXRayFront = self.server.front  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            answer = front.handle(self.command, self.path, list(self.headers.items()), body)
        except Exception as error:  # never leave the client hanging
            log.exception("strict X-Ray front failed")
            answer = _error(500, "InternalFailure", f"strict X-Ray front: {error}")
        self.send_response(answer.status)
        names = {k.lower() for k, _ in answer.headers}
        for name, value in answer.headers:
            self.send_header(name, value)
        if "x-amzn-requestid" not in names:
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("strict X-Ray front: " + format, *args)


def _json(status: int, body: dict[str, Any]) -> _Answer:
    return _Answer(status, json.dumps(body).encode(), [("Content-Type", "application/json")])


def _error(status: int, code: str, message: str) -> _Answer:
    answer = _json(status, {"__type": code, "message": message})
    answer.headers.append(("x-amzn-ErrorType", code))
    return answer


def _latest_versions(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One version per segment id, as X-Ray returns it: moto keeps every put (an in-progress
    version and its completion); keep the completed one, else the last put."""
    chosen: dict[str, dict[str, Any]] = {}
    for segment in segments:
        segment_id = str(segment.get("Id"))
        previous = chosen.get(segment_id)
        if previous is None or _completed(segment) or not _completed(previous):
            chosen[segment_id] = segment
    return list(chosen.values())


def _duration(segments: list[dict[str, Any]], fallback: Any) -> Any:
    """Seconds from the first segment's start to the last end (X-Ray's float; moto truncates to int)."""
    starts, ends = [], []
    for segment in segments:
        document = _parse(str(segment.get("Document", "")).encode()) or {}
        start, end = _number(document.get("start_time")), _number(document.get("end_time"))
        if start is not None:
            starts.append(start)
            ends.append(end if end is not None else start)
    return max(ends) - min(starts) if starts else fallback


def _completed(segment: dict[str, Any]) -> bool:
    document = _parse(str(segment.get("Document", "")).encode()) or {}
    return "end_time" in document and not document.get("in_progress")


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _trace_epoch(trace_id: Any) -> int:
    try:
        return int(str(trace_id).split("-")[1], 16)
    except (IndexError, ValueError):
        return 0


def _query_key(account: str, region: str, request: Mapping[str, Any]) -> str:
    """What a NextToken is bound to: same account, region and query (NextToken excluded)."""
    canonical = json.dumps([account, region, copy.deepcopy(dict(request))], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _encode_token(snapshot_id: str, offset: int, query: str) -> str:
    raw = json.dumps({"s": snapshot_id, "o": offset, "q": query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: Any) -> tuple[str, int, str] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        return str(data["s"]), int(data["o"]), str(data["q"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


__all__ = ["DEFAULT_ACCOUNT_ID", "MAX_BATCH_IDS", "MotoAccountResolver", "StrictXRayFront"]
