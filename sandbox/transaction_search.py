"""CloudWatch Transaction Search, emulated behind the strict X-Ray front (moto has none of it).

What real X-Ray does once an (account, region) sends its segments to CloudWatch Logs, and what
this emulation does in the same order:

* `UpdateTraceSegmentDestination` answers `Status=PENDING`; the switch becomes `ACTIVE` after
  `pending_seconds` (None: only when `activate()` is called, for tests that step through it).
  While PENDING every segment reaches both stores (X-Ray keeps it, `aws/spans` gets its span);
  once ACTIVE on CloudWatchLogs, X-Ray keeps only the *indexed* share (indexing rule `Default`,
  `Probabilistic.DesiredSamplingPercentage`, 1 % by default, chosen deterministically by trace
  id) and `aws/spans` gets every span.
* Spans are written as OTel span records (one log event = one span JSON, W3C trace id, the
  fields of the CloudWatch span format: `resource.attributes`, `scope`, `traceId`, `spanId`,
  `parentSpanId`, `name`, `kind`, `startTimeUnixNano`, `endTimeUnixNano`, `durationNano`,
  `attributes`, `status.code`, `events`) into the account's `aws/spans` log group in moto, with
  the log event's timestamp = the span's end (when the span is emitted). In-progress segments
  produce no span until they complete, as an OTel span exists only once ended.
* `GetIndexingRules` / `UpdateIndexingRule` (rule `Default` only), `StartTraceRetrieval` (≤ 100
  ids, a time range; tokens expire after 60 minutes) and `ListRetrievedTraces` (`RUNNING` for
  `retrieval_polls` calls, then `COMPLETE`; ≤ 5 traces per page, ≤ 100 spans per trace; formats
  `OTEL` and `XRAY`) answer with the shapes of the X-Ray API reference (botocore's model).
* For CloudWatch Logs (boto3 reaches the front through `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`): a
  FilterLogEvents quota per (account, region) (`filter_rate`/`filter_burst`; past it HTTP 400
  `ThrottlingException`, as Logs answers), `StartQuery` answering `LimitExceededException` for
  the next `start_query_limit_exceeded` calls (the concurrent-query limit), and accounts whose
  role lacks the Logs read actions (`deny_logs`: `AccessDeniedException` naming the action).
  FilterLogEvents is answered from moto's Logs backend in this process (`filter_log_events`);
  everything else is forwarded to moto unchanged.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tasks.otel import otel_trace_id
from tasks.pacing import TokenBucket

SPANS_LOG_GROUP = "aws/spans"
SPANS_LOG_STREAM = "default"
DEFAULT_INDEXED_PERCENTAGE = 1.0
RETRIEVAL_TTL_SECONDS = 3600.0
MAX_RETRIEVAL_IDS = 100
RETRIEVAL_PAGE_TRACES = 5
RETRIEVAL_SPANS_PER_TRACE = 100
LOGS_TARGET_PREFIX = "Logs_20140328."


@dataclass
class _Destination:
    destination: str = "XRay"
    previous: str = "XRay"
    switched_at: float = 0.0
    active: bool = True


@dataclass
class _Retrieval:
    account: str
    region: str
    trace_ids: list[str]
    start: float
    end: float
    created: float
    polls: int = 0


@dataclass
class _Stored:
    """What the emulation keeps per (account, region, W3C trace id) for retrieval."""

    spans: list[str] = field(default_factory=list)
    segments: dict[str, str] = field(default_factory=dict)  # segment id → latest document
    xray_id: str = ""
    start: float = 0.0
    end: float = 0.0


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str


def indexed(trace_id: str, percentage: float) -> bool:
    """Whether X-Ray indexes a trace at `percentage` (deterministic by its W3C id)."""
    return zlib.crc32(otel_trace_id(trace_id).encode()) % 10_000 < round(percentage * 100)


class TransactionSearch:
    """State and answers of the emulation; `StrictXRayFront` routes to it (thread-safe)."""

    def __init__(
        self,
        *,
        pending_seconds: float | None = 0.0,
        indexed_percentage: float = DEFAULT_INDEXED_PERCENTAGE,
        retention_days: int | None = 30,
        retrieval_polls: int = 1,
        filter_rate: float | None = None,
        filter_burst: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pending_seconds = pending_seconds
        self.default_percentage = indexed_percentage
        self.retention_days = retention_days
        self.retrieval_polls = retrieval_polls
        self.start_query_limit_exceeded = 0
        self.deny_logs: set[str] = set()
        self._clock = clock
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._destinations: dict[tuple[str, str], _Destination] = {}
        self._rules: dict[tuple[str, str], tuple[float, float]] = {}  # percentage, modified at
        self._seen: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # traces, indexed
        self._store: dict[tuple[str, str, str], _Stored] = {}
        self._retrievals: dict[str, _Retrieval] = {}
        self._filter_buckets: dict[tuple[str, str], TokenBucket] = {}
        self._filter_rate: float | None = None
        self._filter_burst: float | None = None
        self.configure_filter_quota(filter_rate, filter_burst)
        self.counters: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------ knobs

    def configure_filter_quota(self, rate: float | None, burst: float | None = None) -> None:
        """FilterLogEvents calls per second per (account, region); None: no quota."""
        if rate is not None and rate <= 0:
            raise ValueError(f"filter_rate must be > 0 (None disables the quota), got {rate}")
        with self._lock:
            self._filter_rate = rate
            self._filter_burst = burst
            self._filter_buckets = {}

    # ------------------------------------------------------------------ destination

    def update_destination(self, account: str, region: str, destination: str) -> dict[str, str]:
        if destination not in ("XRay", "CloudWatchLogs"):
            raise ApiError(400, "InvalidRequestException", "Destination must be XRay or CloudWatchLogs")
        with self._lock:
            current = self._destinations.get((account, region)) or _Destination()
            if current.destination == destination:
                return self._describe(current)
            state = _Destination(destination, current.destination, self._clock(), self.pending_seconds == 0)
            self._destinations[(account, region)] = state
            return self._describe(state)

    def set_destination(self, account: str, region: str, destination: str) -> None:
        """Switch at once, ACTIVE (seeding, tests that do not care about PENDING)."""
        self.update_destination(account, region, destination)
        self.activate(account, region)

    def activate(self, account: str, region: str) -> None:
        with self._lock:
            state = self._destinations.get((account, region))
            if state is not None:
                state.active = True

    def destination(self, account: str, region: str) -> dict[str, str]:
        with self._lock:
            return self._describe(self._destinations.get((account, region)) or _Destination())

    def _describe(self, state: _Destination) -> dict[str, str]:
        pending = self.pending_seconds
        if not state.active and pending is not None and self._clock() - state.switched_at >= pending:
            state.active = True
        return {"Destination": state.destination, "Status": "ACTIVE" if state.active else "PENDING"}

    def routes(self, account: str, region: str) -> tuple[bool, bool]:
        """(X-Ray keeps only the indexed share, spans go to aws/spans)."""
        answer = self.destination(account, region)
        if answer["Status"] == "PENDING":
            return False, True
        if answer["Destination"] == "CloudWatchLogs":
            return True, True
        return False, False

    # ------------------------------------------------------------------ indexing rules

    def percentage(self, account: str, region: str) -> float:
        with self._lock:
            return self._rules.get((account, region), (self.default_percentage, 0.0))[0]

    def indexing_rules(self, account: str, region: str) -> dict[str, Any]:
        with self._lock:
            desired, modified = self._rules.get((account, region), (self.default_percentage, 0.0))
            traces, kept = self._seen[(account, region)]
        actual = round(100.0 * kept / traces, 3) if traces else desired
        rule = {"Probabilistic": {"DesiredSamplingPercentage": desired, "ActualSamplingPercentage": actual}}
        return {"IndexingRules": [{"Name": "Default", "ModifiedAt": modified or None, "Rule": rule}]}

    def update_indexing_rule(self, account: str, region: str, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("Name") != "Default":
            raise ApiError(404, "ResourceNotFoundException", f"Indexing rule {request.get('Name')!r} not found")
        probabilistic = (request.get("Rule") or {}).get("Probabilistic") or {}
        desired = probabilistic.get("DesiredSamplingPercentage")
        if not isinstance(desired, (int, float)) or not 0 <= desired <= 100:
            raise ApiError(400, "InvalidRequestException", "DesiredSamplingPercentage must be a number in 0..100")
        with self._lock:
            self._rules[(account, region)] = (float(desired), self._clock())
        return {"IndexingRule": self.indexing_rules(account, region)["IndexingRules"][0]}

    # ------------------------------------------------------------------ PutTraceSegments

    def split_put(self, account: str, region: str, body: bytes) -> tuple[bytes | None, list[dict[str, Any]]]:
        """(the body X-Ray still gets, or None; the segment documents to write as spans)."""
        indexed_only, to_spans = self.routes(account, region)
        if not to_spans:
            return body, []
        try:
            request = json.loads(body or b"{}")
            texts = [t for t in request.get("TraceSegmentDocuments") or [] if isinstance(t, str)]
        except (ValueError, AttributeError):
            return body, []
        documents: list[dict[str, Any]] = []
        keep: list[str] = []
        percentage = self.percentage(account, region)
        traces: set[str] = set()
        kept: set[str] = set()
        for text in texts:
            try:
                document = json.loads(text)
            except ValueError:
                keep.append(text)
                continue
            if not isinstance(document, dict) or not isinstance(document.get("trace_id"), str):
                keep.append(text)
                continue
            documents.append(document)
            trace_id = document["trace_id"]
            traces.add(trace_id)
            if not indexed_only or indexed(trace_id, percentage):
                keep.append(text)
                kept.add(trace_id)
        if indexed_only:
            with self._lock:
                counts = self._seen[(account, region)]
                counts[0] += len(traces)
                counts[1] += len(kept)
        if not keep:
            return None, documents
        return json.dumps({**request, "TraceSegmentDocuments": keep}).encode(), documents

    def write_spans(self, account: str, region: str, documents: Iterable[dict[str, Any]]) -> int:
        """Convert completed segments to span records and append them to aws/spans in moto."""
        events: list[dict[str, Any]] = []
        for document in documents:
            if document.get("in_progress") or not isinstance(document.get("end_time"), (int, float)):
                continue
            trace32 = otel_trace_id(document["trace_id"])
            with self._lock:
                stored = self._store.setdefault((account, region, trace32), _Stored(xray_id=document["trace_id"]))
                stored.segments[str(document.get("id"))] = json.dumps(document)
                stored.start = min(stored.start or document["start_time"], float(document.get("start_time") or 0))
                stored.end = max(stored.end, float(document["end_time"]))
            for record in segment_spans(document, account, region):
                message = json.dumps(record, separators=(",", ":"))
                with self._lock:
                    stored.spans.append(message)
                events.append({"timestamp": record["endTimeUnixNano"] // 1_000_000, "message": message})
        if events:
            events.sort(key=lambda e: e["timestamp"])
            self._append_events(account, region, events)
            self.counters["spans_written"] += len(events)
        return len(events)

    def _append_events(self, account: str, region: str, events: list[dict[str, Any]]) -> None:
        from moto.logs.exceptions import ResourceAlreadyExistsException
        from moto.logs.models import logs_backends

        backend = logs_backends[account][region]
        with self._write_lock:
            if SPANS_LOG_GROUP not in backend.groups:
                with _suppress(ResourceAlreadyExistsException):
                    backend.create_log_group(SPANS_LOG_GROUP, {})
                if self.retention_days is not None:
                    backend.put_retention_policy(SPANS_LOG_GROUP, self.retention_days)  # type: ignore[arg-type]
            with _suppress(ResourceAlreadyExistsException):
                backend.ensure_log_stream(SPANS_LOG_GROUP, SPANS_LOG_STREAM)
            for offset in range(0, len(events), 10_000):
                backend.put_log_events(SPANS_LOG_GROUP, SPANS_LOG_STREAM, events[offset : offset + 10_000])

    # ------------------------------------------------------------------ retrieval

    def start_retrieval(self, account: str, region: str, request: dict[str, Any]) -> dict[str, Any]:
        ids = request.get("TraceIds")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "InvalidRequestException", "TraceIds must be a list of trace ids")
        if len(ids) > MAX_RETRIEVAL_IDS:
            raise ApiError(
                400,
                "InvalidRequestException",
                f"1 validation error detected: Value at 'traceIds' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_RETRIEVAL_IDS}",
            )
        start, end = request.get("StartTime"), request.get("EndTime")
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)) or end < start:
            raise ApiError(400, "InvalidRequestException", "StartTime and EndTime are required, EndTime >= StartTime")
        token = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        with self._lock:
            self._retrievals[token] = _Retrieval(account, region, list(ids), float(start), float(end), self._clock())
        return {"RetrievalToken": token}

    def list_retrieved(self, account: str, region: str, request: dict[str, Any]) -> dict[str, Any]:
        token = request.get("RetrievalToken")
        fmt = request.get("TraceFormat") or "XRAY"
        if fmt not in ("XRAY", "OTEL"):
            raise ApiError(400, "InvalidRequestException", "TraceFormat must be XRAY or OTEL")
        with self._lock:
            retrieval = self._retrievals.get(str(token))
            if retrieval is None or (retrieval.account, retrieval.region) != (account, region):
                raise ApiError(404, "ResourceNotFoundException", "Retrieval token not found")
            if self._clock() - retrieval.created > RETRIEVAL_TTL_SECONDS:
                return {"RetrievalStatus": "TIMEOUT", "TraceFormat": fmt, "Traces": []}
            retrieval.polls += 1
            if retrieval.polls <= self.retrieval_polls:
                return {"RetrievalStatus": "RUNNING", "TraceFormat": fmt, "Traces": []}
            found = []
            for trace_id in retrieval.trace_ids:
                stored = self._store.get((account, region, otel_trace_id(trace_id)))
                if stored is None or stored.end < retrieval.start or stored.start > retrieval.end:
                    continue
                found.append((otel_trace_id(trace_id), stored))
        try:
            offset = int(request.get("NextToken") or 0)
        except ValueError:
            raise ApiError(400, "InvalidRequestException", "Invalid NextToken") from None
        page = found[offset : offset + RETRIEVAL_PAGE_TRACES]
        traces = []
        for trace32, stored in page:
            if fmt == "OTEL":
                spans = [{"Id": json.loads(s)["spanId"], "Document": s} for s in stored.spans]
                trace_id = trace32
            else:
                spans = [{"Id": k, "Document": v} for k, v in stored.segments.items()]
                trace_id = stored.xray_id
            traces.append(
                {
                    "Id": trace_id,
                    "Duration": round(stored.end - stored.start, 3),
                    "Spans": spans[:RETRIEVAL_SPANS_PER_TRACE],
                }
            )
        answer: dict[str, Any] = {"RetrievalStatus": "COMPLETE", "TraceFormat": fmt, "Traces": traces}
        if offset + RETRIEVAL_PAGE_TRACES < len(found):
            answer["NextToken"] = str(offset + RETRIEVAL_PAGE_TRACES)
        return answer

    # ------------------------------------------------------------------ CloudWatch Logs

    def filter_log_events(self, account: str, region: str, body: bytes) -> dict[str, Any]:
        """FilterLogEvents answered from moto's Logs backend in this process: moto's events, pages
        and tokens, without the HTTP hop to moto, whose request routing costs more CPU than the
        query (in a benchmark the front and moto share the reader's process). Events come sorted by
        timestamp across streams, as the FilterLogEvents reference says (moto sorts only when asked
        to interleave)."""
        from moto.core.exceptions import JsonRESTError
        from moto.logs.models import logs_backends

        request: Any = _parse_json(body)  # moto's handler passes the parameters unchecked too
        try:
            events, token, searched = logs_backends[account][region].filter_log_events(
                request.get("logGroupName"),
                request.get("logStreamNames") or [],
                request.get("startTime"),
                request.get("endTime"),
                request.get("limit"),
                request.get("nextToken"),
                request.get("filterPattern"),
                True,
            )
        except JsonRESTError as error:
            raise ApiError(error.code, error.error_type, error.message) from None
        return {"events": events, "nextToken": token, "searchedLogStreams": searched}

    def logs_gate(self, account: str, region: str, operation: str, body: bytes) -> ApiError | None:
        """An error the Logs request must get instead of being forwarded, or None."""
        self.counters[f"logs.{operation}"] += 1
        if account in self.deny_logs and operation in ("FilterLogEvents", "StartQuery", "GetQueryResults"):
            return ApiError(
                400,
                "AccessDeniedException",
                f"User: arn:aws:sts::{account}:assumed-role/xraylake-reader is not authorized to perform: "
                f"logs:{operation} on resource: arn:aws:logs:{region}:{account}:log-group:{SPANS_LOG_GROUP}",
            )
        if operation == "FilterLogEvents" and self._filter_rate is not None:
            with self._lock:
                bucket = self._filter_buckets.get((account, region))
                if bucket is None:
                    burst = self._filter_burst if self._filter_burst is not None else max(1.0, self._filter_rate)
                    bucket = self._filter_buckets[(account, region)] = TokenBucket(self._filter_rate, burst)
                allowed = bucket.try_acquire()
            if not allowed:
                self.counters["logs.FilterLogEvents.throttled"] += 1
                return ApiError(400, "ThrottlingException", "Rate exceeded")
            self.counters["logs.FilterLogEvents.served"] += 1
        if operation == "StartQuery":
            with self._lock:
                if self.start_query_limit_exceeded > 0:
                    self.start_query_limit_exceeded -= 1
                    self.counters["logs.StartQuery.limit_exceeded"] += 1
                    return ApiError(
                        400, "LimitExceededException", "Account maximum query concurrency limit of [30] reached."
                    )
        return None


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        raise ApiError(400, "SerializationException", "the request body is not JSON") from None
    if not isinstance(request, dict):
        raise ApiError(400, "SerializationException", "the request body is not a JSON object")
    return request


class _suppress:
    def __init__(self, *types: type[BaseException]) -> None:
        self.types = types

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, self.types)


# --------------------------------------------------------------------------- segment → span records


def _section(node: dict[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key)
    return value if isinstance(value, dict) else {}


def segment_spans(document: dict[str, Any], account: str, region: str) -> list[dict[str, Any]]:
    """An X-Ray segment document → its span records (the segment, then every subsegment)."""
    trace32 = otel_trace_id(str(document["trace_id"]))
    service = str(document.get("name") or "unknown")
    resource: dict[str, Any] = {
        "service.name": service,
        "cloud.provider": "aws",
        "cloud.account.id": account,
        "cloud.region": region,
    }
    xray_sdk = ((document.get("aws") or {}).get("xray") or {}) if isinstance(document.get("aws"), dict) else {}
    if isinstance(xray_sdk, dict) and xray_sdk.get("sdk"):
        resource["aws.xray.sdk"] = str(xray_sdk.get("sdk"))
        resource["telemetry.sdk.name"] = "aws-xray-sdk"
    else:
        resource["telemetry.sdk.name"] = "opentelemetry"
        resource["telemetry.sdk.language"] = "python"
    if document.get("origin"):
        resource["cloud.platform"] = str(document["origin"])
    records: list[dict[str, Any]] = []

    def visit(node: dict[str, Any], parent: str, top: bool) -> None:
        start = node.get("start_time")
        end = node.get("end_time", start)
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            return
        namespace = node.get("namespace")
        kind = "SERVER" if top else ("CLIENT" if namespace in ("aws", "remote") else "INTERNAL")
        attributes: dict[str, Any] = {"aws.local.service": service, "aws.span.kind": "LOCAL_ROOT" if top else kind}
        http = _section(node, "http")
        request = _section(http, "request")
        response = _section(http, "response")
        if request.get("method"):
            attributes["http.request.method"] = request["method"]
        if request.get("url"):
            attributes["url.full"] = request["url"]
        if isinstance(response.get("status"), int):
            attributes["http.response.status_code"] = response["status"]
        if top:
            attributes["aws.local.operation"] = f"{request.get('method', 'GET')} {node.get('name')}"
        else:
            attributes["aws.remote.service"] = str(node.get("name"))
        aws = _section(node, "aws")
        if aws.get("operation"):
            attributes["rpc.system"] = "aws-api"
            attributes["rpc.method"] = aws["operation"]
            attributes["aws.remote.operation"] = aws["operation"]
        if aws.get("execution_arn"):  # a Step Functions segment names its execution
            attributes["aws.execution_arn"] = str(aws["execution_arn"])
        for key, value in (node.get("annotations") or {}).items():
            attributes[f"aws.xray.annotation.{key}"] = value
        error = bool(node.get("error") or node.get("fault") or node.get("throttle"))
        events = []
        cause = _section(node, "cause")
        for exception in cause.get("exceptions") or []:
            if isinstance(exception, dict):
                events.append(
                    {
                        "name": "exception",
                        "timeUnixNano": int(end * 1e9),
                        "attributes": {
                            "exception.type": str(exception.get("type") or ""),
                            "exception.message": str(exception.get("message") or ""),
                        },
                    }
                )
        span_id = str(node.get("id") or "")
        record = {
            "resource": {"attributes": resource},
            "scope": {"name": "xraylake.sandbox", "version": "1"},
            "traceId": trace32,
            "spanId": span_id,
            "parentSpanId": parent,
            "flags": 256,
            "name": str(node.get("name") or ""),
            "kind": kind,
            "startTimeUnixNano": int(start * 1e9),
            "endTimeUnixNano": int(end * 1e9),
            "durationNano": int(end * 1e9) - int(start * 1e9),
            "attributes": attributes,
            "status": {"code": "ERROR" if error else "UNSET"},
            "events": events,
        }
        records.append(record)
        for child in node.get("subsegments") or []:
            if isinstance(child, dict):
                visit(child, span_id, False)

    visit(document, str(document.get("parent_id") or ""), True)
    return records


__all__ = [
    "SPANS_LOG_GROUP",
    "ApiError",
    "TransactionSearch",
    "indexed",
    "segment_spans",
]
