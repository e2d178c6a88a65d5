"""Pure transform: one X-Ray `Trace` (as BatchGetTraces returns it) → documents and Arrow rows.

No I/O. `transform_trace` never raises: whatever cannot be mapped is reported in
`TraceDocuments.problems` ({segment_id, reason}) and the rest of the trace is still transformed.

Outputs (field names are the contract in `tasks.mappings`):

- trace document      `{account_id}:{trace_id}` in `xray-traces-YYYY.MM.DD`
- segment documents   `{trace_id}:{segment_id}` in `xray-segments-YYYY.MM.DD`, one per segment and
                      per (nested) subsegment
- span documents      Data Prepper `otel-v1-apm-span` schema (flat dotted keys, `@` for dots in
                      attribute names), translated like the OTel Collector's awsxrayreceiver
- service-map docs    Data Prepper `otel-v1-apm-service-map` relationships, `hashId` as Data
                      Prepper computes it (base64 MD5 of the relationship)
- Arrow rows          `to_arrow([...])` → (traces, segments) tables with `TRACE_SCHEMA` / `SEGMENT_SCHEMA`

Index day and Parquet partition come from the epoch in the trace id (the request start, immutable
across re-collections, so the same document always lands in the same daily index), falling back
to the earliest segment start, then to collected_at.

Type discipline, so one odd value never causes a mapping conflict: ids/names/free text are strings
(objects become compact JSON), status codes and content lengths are int64 or null, times are
epoch seconds (numbers, numeric strings, scientific notation, ISO strings) → ISO-8601 UTC, flags
are booleans. Annotations are stored twice: every value as a string under `annotations` (keyword),
numeric values again under `annotations_num` (double).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson
import pyarrow as pa

from tasks import ids, mappings, tracetime
from tasks.redact import RedactionPolicy

__all__ = [
    "SEGMENT_SCHEMA",
    "TRACE_SCHEMA",
    "IndexRequest",
    "TraceContext",
    "TraceDocuments",
    "otel_span_id",
    "otel_trace_id",
    "service_map_hash",
    "to_arrow",
    "transform_trace",
]

SFN_ORIGIN = "AWS::StepFunctions::StateMachine"
KIND_SERVER = "SPAN_KIND_SERVER"
KIND_CLIENT = "SPAN_KIND_CLIENT"
KIND_INTERNAL = "SPAN_KIND_INTERNAL"
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

MAX_DEPTH = 64  # deeper subsegment nesting is cut (and reported)
MAX_PROBLEMS = 200
MAX_ANNOTATIONS = 200  # per (sub)segment
MAX_TEXT = 4096  # any single string field
MAX_NAME = 1024
_MIN_TIME = float(tracetime.MIN_EPOCH)
_MAX_TIME = float(tracetime.MAX_EPOCH)
_INT64 = 1 << 63

_TRACE_ID = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_STATE_MACHINE_ARN = re.compile(r"^(arn:[^:]+:states:[^:]*:[^:]*):(?:stateMachine|express|execution):([^:]+)")

# X-Ray `aws` keys naming the resource a subsegment called, in order of preference.
AWS_RESOURCE_KEYS = (
    "table_name",
    "queue_url",
    "function_name",
    "topic_arn",
    "bucket_name",
    "stream_name",
    "state_machine_arn",
    "execution_arn",
    "secret_arn",
    "key_id",
)
_TRUE_STRINGS = frozenset({"true", "True", "TRUE", "1"})


# ====================================================================== inputs / outputs


@dataclass(frozen=True, slots=True)
class TraceContext:
    """Where a trace came from (the envelope plus the roster's names for the account)."""

    account_id: str
    account_name: str
    environment: str
    region: str
    collected_at: datetime
    envelope_id: str
    source: str
    execution: dict[str, Any] | None = None  # Step Functions DescribeExecution output


@dataclass(frozen=True, slots=True)
class IndexRequest:
    index: str
    doc_id: str
    source: dict[str, Any]
    kind: str  # traces | segments | spans | service-map


@dataclass(slots=True)
class TraceDocuments:
    """Everything one trace becomes. `problems` lists what could not be mapped."""

    trace_id: str
    account_id: str
    region: str
    day: str  # YYYY.MM.DD: daily index suffix
    dt: str  # YYYY-MM-DD: Parquet partition
    hour: str  # HH: Parquet partition
    version: int  # collected_at in epoch ms (external versioning)
    trace: dict[str, Any]
    segments: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    service_map: list[dict[str, Any]]
    problems: list[dict[str, str | None]]
    # Parquet-only columns, parallel to `segments`: the original Document string (top-level
    # segments only; subsegments live inside it) and the typed annotations as JSON.
    segment_documents: list[str | None] = field(default_factory=list)
    segment_annotations: list[str | None] = field(default_factory=list)
    trace_annotations: str | None = None

    # Every id a member account can influence starts with the account: trace and segment ids
    # travel in request headers, so without it one roster account could overwrite another's
    # documents by reusing its ids (a newer collected_at wins the external version).
    @property
    def trace_doc_id(self) -> str:
        return f"{self.account_id}:{self.trace_id}"

    def segment_doc_id(self, segment: dict[str, Any]) -> str:
        return f"{self.account_id}:{self.trace_id}:{segment['segment_id']}"

    def span_doc_id(self, span: dict[str, Any]) -> str:
        return f"{self.account_id}:{span['traceId']}{span['spanId']}"

    def index_requests(self, prefix: str = "xray") -> Iterator[IndexRequest]:
        """Every document with its index and id (version them all with `self.version`)."""
        yield IndexRequest(mappings.traces_index(self.day, prefix), self.trace_doc_id, self.trace, "traces")
        segment_index = mappings.segments_index(self.day, prefix)
        segment_prefix = f"{self.account_id}:{self.trace_id}:"
        for segment in self.segments:
            yield IndexRequest(segment_index, segment_prefix + segment["segment_id"], segment, "segments")
        span_index = mappings.spans_index(self.day)
        span_prefix = f"{self.account_id}:"
        for span in self.spans:
            yield IndexRequest(span_index, f"{span_prefix}{span['traceId']}{span['spanId']}", span, "spans")
        for relation in self.service_map:
            yield IndexRequest(mappings.SERVICE_MAP_INDEX, relation["hashId"], relation, "service-map")


# ====================================================================== coercion helpers

# Epoch second → ISO text. Bounded (about 2 MB) because a long-running consumer sees every second
# of every day: 16k entries cover 4.5 hours of distinct seconds, the span of most envelopes.
SECOND_CACHE_ENTRIES = 16_384
_second_cache: dict[int, str] = {}


def _base(second: int) -> str:
    text = _second_cache.get(second)
    if text is None:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        if len(_second_cache) >= SECOND_CACHE_ENTRIES:
            _second_cache.clear()
        _second_cache[second] = text
    return text


def iso_ms(us: int) -> str:
    """Epoch microseconds → `2017-07-08T00:23:31.562Z`."""
    return "%s.%03dZ" % (_base(us // 1_000_000), (us // 1000) % 1000)  # noqa: UP031 (faster)


def iso_ns(us: int) -> str:
    """Epoch microseconds → `2017-07-08T00:23:31.562000000Z` (X-Ray has µs resolution at best)."""
    return "%s.%06d000Z" % (_base(us // 1_000_000), us % 1_000_000)  # noqa: UP031 (faster)


_epoch_us = tracetime.epoch_us


def _long(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        return value if -_INT64 <= value < _INT64 else None
    if kind is float:
        return int(value) if value.is_integer() and -9.2e18 < value < 9.2e18 else None
    if kind is str:
        text = value.strip()
        try:
            return _long(int(text))
        except ValueError:
            try:
                return _long(float(text))
            except ValueError:
                return None
    return None


def _float(value: Any) -> float | None:
    kind = type(value)
    if kind is float:
        return value if value == value and abs(value) != float("inf") else None
    if kind is int:
        return float(value) if -_INT64 < value < _INT64 else None
    if kind is str:
        try:
            return _float(float(value))
        except ValueError:
            return None
    return None


def _bool(value: Any) -> bool:
    return value is True or (type(value) is str and value in _TRUE_STRINGS) or (type(value) is int and value == 1)


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """Any JSON value → a string (objects as compact JSON), capped; None stays None."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= limit else value[:limit]
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = str(value)
    return text if len(text) <= limit else text[:limit]


def _safe_json(value: Any) -> str:
    """Compact JSON of any value; whatever orjson refuses (ints beyond 64 bits, …) via repr."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


def _digest_hex(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def otel_trace_id(xray_trace_id: str) -> str:
    """`1-5759e988-bd862e3fe1be46a994272793` → `5759e988bd862e3fe1be46a994272793`.

    A malformed id maps to a stable 32-hex digest of itself (so it still groups its spans).
    """
    match = _TRACE_ID.fullmatch(xray_trace_id)
    if match:
        return (match.group(1) + match.group(2)).lower()
    return _digest_hex(xray_trace_id, 16)


def otel_span_id(segment_id: str) -> str:
    """X-Ray ids already are 16 hex digits; anything else maps to a stable 16-hex digest."""
    if len(segment_id) == 16 and _SPAN_ID.fullmatch(segment_id):
        return segment_id
    lowered = segment_id.lower()
    if len(lowered) == 16 and _SPAN_ID.fullmatch(lowered):
        return lowered
    return _digest_hex(segment_id, 8)


def service_map_hash(
    service_name: str | None,
    kind: str | None,
    trace_group: str | None,
    target: tuple[str | None, str | None] | None,
    destination: tuple[str | None, str | None] | None,
) -> str:
    """Data Prepper's ServiceMapRelationship.md5Hash: base64(MD5("svc,kind,group,tRes,tDom,dRes,dDom")).

    Endpoints are (resource, domain); Java string concatenation renders null as "null".
    """

    def java(value: str | None) -> str:
        return "null" if value is None else value

    text = f"{java(service_name)},{java(kind)},{java(trace_group)},"
    if target is not None:
        text += f"{java(target[0])},{java(target[1])}"
    text += ","
    if destination is not None:
        text += f"{java(destination[0])},{java(destination[1])}"
    return base64.b64encode(hashlib.md5(text.encode("utf-8", "surrogatepass")).digest()).decode()


def _annotation_key(key: str) -> str:
    """Keyword-safe object key: dots would create sub-objects (and conflicts), so they become `_`."""
    key = key.strip().replace(".", "_")
    if len(key) > 128:
        key = key[:128]
    return key or "_"


# ====================================================================== the walker

_HEX = frozenset("0123456789abcdef")
_RESOURCE_RANK = {key: rank for rank, key in enumerate(AWS_RESOURCE_KEYS)}
_CLIENT_NAMESPACES = frozenset({"aws", "remote"})

# A walked (sub)segment: (segment doc, span doc, start µs, end µs, its top-level _Top,
# original Document string or None, typed annotations or None).
_Walked = tuple[dict[str, Any], dict[str, Any], int | None, int | None, "_Top", str | None, dict[str, Any] | None]


class _Top:
    """A top-level segment document: what its subsegments share, and what the trace pass needs."""

    __slots__ = ("is_subsegment", "node", "parent_id", "segment_id", "service", "sfn_arns", "span_base")

    def __init__(self, segment_id: str, parent_id: str | None, service: str, is_subsegment: bool) -> None:
        self.segment_id = segment_id
        self.parent_id = parent_id
        self.service = service
        self.is_subsegment = is_subsegment
        self.span_base: dict[str, Any] = {}
        self.sfn_arns: tuple[Any, ...] = ()
        self.node: _Walked | None = None


class _TraceBuilder:
    def __init__(self, ctx: TraceContext, policy: RedactionPolicy) -> None:
        self.ctx = ctx
        self.policy = policy
        self.redact_url = policy.redact_url
        self.problems: list[dict[str, str | None]] = []
        self.problem_overflow = 0
        self.nodes: list[_Walked] = []
        self.tops: list[_Top] = []
        self.exceptions: dict[str, tuple[str | None, str | None]] = {}
        self.cause_refs: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        self.trace_annotations: dict[str, list[Any]] = {}
        self.collected_iso = iso_ms(round(ctx.collected_at.timestamp() * 1_000_000))
        self.context_fields = {
            "account_id": ctx.account_id,
            "account_name": ctx.account_name,
            "environment": ctx.environment,
            "region": ctx.region,
            "collected_at": self.collected_iso,
            "envelope_id": ctx.envelope_id,
            "source": ctx.source,
        }
        self.trace_id = ""
        self.otel_trace_id = ""
        self.seg_template: dict[str, Any] = {}
        self.span_template: dict[str, Any] = {}

    def start(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.otel_trace_id = otel_trace_id(trace_id)
        template = dict.fromkeys(mappings.SEGMENT_FIELDS)
        template.update(self.context_fields)
        template.update(
            trace_id=trace_id,
            is_subsegment=False,
            depth=0,
            inferred=False,
            in_progress=False,
            error=False,
            fault=False,
            throttle=False,
            status="ok",
            exception_count=0,
        )
        self.seg_template = template
        self.span_template = {
            "traceId": self.otel_trace_id,
            "spanId": "",
            "traceState": "",
            "parentSpanId": "",
            "name": "",
            "kind": KIND_INTERNAL,
            "startTime": None,
            "endTime": None,
            "durationInNanos": 0,
            "serviceName": "",
            "events": None,
            "links": None,
            "droppedAttributesCount": 0,
            "droppedEventsCount": 0,
            "droppedLinksCount": 0,
            "traceGroup": None,
            "traceGroupFields.endTime": None,
            "traceGroupFields.durationInNanos": None,
            "traceGroupFields.statusCode": None,
            "status.code": STATUS_UNSET,
        }

    # -------------------------------------------------------------- reporting

    def problem(self, segment_id: str | None, reason: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"segment_id": segment_id, "reason": reason})
        else:
            self.problem_overflow += 1

    # -------------------------------------------------------------- segments

    def add_document(self, index: int, wrapper: Any) -> None:
        if not isinstance(wrapper, dict):
            self.problem(None, f"Segments[{index}] is not an object ({type(wrapper).__name__})")
            return
        raw_wrapper_id = wrapper.get("Id")
        wrapper_id = raw_wrapper_id[:MAX_NAME] if type(raw_wrapper_id) is str and raw_wrapper_id else None
        document = wrapper.get("Document")
        if type(document) is str:
            try:
                parsed = orjson.loads(document)
            except orjson.JSONDecodeError as error:
                self.problem(wrapper_id, f"Document is not JSON ({str(error)[:120]}); segment skipped")
                return
        elif isinstance(document, dict):  # already decoded by someone: accept, keep a JSON copy
            parsed = document
            document = _safe_json(document)
        else:
            self.problem(wrapper_id, f"Document missing or not a string ({type(document).__name__}); skipped")
            return
        if type(parsed) is not dict:
            self.problem(wrapper_id, f"Document is JSON {type(parsed).__name__}, not an object; skipped")
            return
        doc_trace_id = parsed.get("trace_id")
        if doc_trace_id is not None and doc_trace_id != self.trace_id:
            shown = _text(doc_trace_id, 80)
            self.problem(wrapper_id, f"segment trace_id {shown!r} differs from trace {self.trace_id!r}")
        parent = parsed.get("parent_id")
        if parent is not None and (type(parent) is not str or not parent):
            self.problem(wrapper_id, f"parent_id {_text(parent, 40)!r} is not a string id")
            parent = _text(parent, MAX_NAME) or None
        self.walk(
            parsed,
            parent[:MAX_NAME] if parent else None,
            None,
            0,
            None,
            parsed.get("type") == "subsegment",
            wrapper_id or f"{self.trace_id}/{index}",
            document,
        )

    def new_top(
        self, node: dict[str, Any], segment_id: str, parent_id: str | None, name: str, is_subsegment: bool
    ) -> _Top:
        top = _Top(segment_id, parent_id, name, is_subsegment)
        aws = node.get("aws")
        aws = aws if type(aws) is dict else None
        resource_arn = node.get("resource_arn")
        resource_arn = _text(resource_arn, MAX_NAME) if resource_arn is not None else None
        top.span_base = {
            **self.span_template,
            "serviceName": name,
            **self.resource_attributes(node, name, aws, resource_arn),
        }
        if aws is not None:
            top.sfn_arns = (aws.get("execution_arn"), aws.get("state_machine_arn"), resource_arn)
        else:
            top.sfn_arns = (resource_arn,)
        self.tops.append(top)
        return top

    def walk(
        self,
        node: dict[str, Any],
        parent_id: str | None,
        parent_span_id: str | None,
        depth: int,
        top: _Top | None,
        is_subsegment: bool,
        fallback_id: str | int,
        document: str | None,
    ) -> None:
        """One (sub)segment → its segment doc and span doc (written in place, hot path), then its
        subsegments. Fast paths first; anything unusual goes through the coercion helpers."""
        problem = self.problem
        get = node.get

        # ---- identity: ids become document ids, so a (sub)segment without a 16-hex id is refused
        # with its subsegments (X-Ray itself refuses such documents), and the reason recorded.
        raw = get("id")
        if type(raw) is str and len(raw) == 16 and (_HEX.issuperset(raw) or ids.segment_id_problem(raw) is None):
            segment_id = raw
        elif top is None and isinstance(fallback_id, str) and ids.segment_id_problem(fallback_id) is None:
            segment_id = fallback_id  # BatchGetTraces' Segment.Id: the id X-Ray filed it under
            problem(segment_id, f"{ids.segment_id_problem(raw)}; using the segment's Id {segment_id}")
        else:
            where = fallback_id if isinstance(fallback_id, str) else f"{parent_id}/{fallback_id}"
            reason = ids.segment_id_problem(raw)
            problem(_text(where, 64), f"{reason}: (sub)segment and its subsegments not indexed")
            return
        raw = get("name")
        if type(raw) is str and 0 < len(raw) <= MAX_NAME:
            name = raw
        else:
            name = _text(raw, MAX_NAME) or "unknown"
            if type(raw) is not str or not raw:
                problem(segment_id, f"missing or non-string name ({_text(raw, 40)!r})")
        is_top = top is None
        if top is None:
            top = self.new_top(node, segment_id, parent_id, name, is_subsegment)
        doc = self.seg_template.copy()
        span = top.span_base.copy()
        span_id = segment_id if len(segment_id) == 16 and _HEX.issuperset(segment_id) else otel_span_id(segment_id)
        doc["segment_id"] = segment_id
        doc["top_segment_id"] = top.segment_id
        doc["name"] = name
        doc["service_name"] = top.service
        span["spanId"] = span_id
        span["name"] = name
        span["events"] = []
        span["links"] = []
        if parent_id is not None:
            doc["parent_id"] = parent_id
            span["parentSpanId"] = parent_span_id if parent_span_id is not None else otel_span_id(parent_id)
        if depth:
            doc["depth"] = depth
        if is_subsegment:
            doc["is_subsegment"] = True

        # ---- times
        raw = get("start_time")
        if type(raw) is float and _MIN_TIME <= raw < _MAX_TIME:
            start_us: int | None = round(raw * 1_000_000)
        else:
            start_us = _epoch_us(raw)
            if start_us is None:
                problem(segment_id, f"invalid start_time {_text(raw, 40)!r}")
            elif type(raw) is str:
                problem(segment_id, "start_time given as a string")
        raw = get("in_progress")
        in_progress = raw is not None and (raw is True or _bool(raw))
        raw = get("end_time")
        if type(raw) is float and _MIN_TIME <= raw < _MAX_TIME:
            end_us: int | None = round(raw * 1_000_000)
        elif raw is None:
            end_us = None
            if not in_progress:
                problem(segment_id, "no end_time and not in_progress")
        else:
            end_us = _epoch_us(raw)
            if end_us is None:
                problem(segment_id, f"invalid end_time {_text(raw, 40)!r}")
            elif type(raw) is str:
                problem(segment_id, "end_time given as a string")
        if start_us is not None:
            # ISO strings: `%` beats f-strings with format specs; the ms form is a slice of the ns one
            second, fraction = divmod(start_us, 1_000_000)
            base = _second_cache.get(second) or _base(second)
            span["startTime"] = span["endTime"] = start_text = "%s.%06d000Z" % (base, fraction)  # noqa: UP031
            doc["start"] = start_text[:23] + "Z"
            if end_us is not None:
                end_second, fraction = divmod(end_us, 1_000_000)
                if end_second != second:
                    base = _second_cache.get(end_second) or _base(end_second)
                end_text = "%s.%06d000Z" % (base, fraction)  # noqa: UP031
                doc["end"] = end_text[:23] + "Z"
                if end_us >= start_us:
                    doc["duration"] = (end_us - start_us) / 1_000_000
                    span["endTime"] = end_text
                    span["durationInNanos"] = (end_us - start_us) * 1000
                else:
                    problem(segment_id, "end_time before start_time")
                    span["endTime"] = start_text
        elif end_us is not None:
            doc["end"] = iso_ms(end_us)
            span["startTime"] = span["endTime"] = iso_ns(end_us)
        if in_progress:
            doc["in_progress"] = True
            span["span.attributes.aws@xray@inprogress"] = "true"

        # ---- flags
        error = fault = throttle = flags_given = False
        raw = get("error")
        if raw is not None:
            flags_given = True
            error = raw is True or _bool(raw)
        raw = get("fault")
        if raw is not None:
            flags_given = True
            fault = raw is True or _bool(raw)
        raw = get("throttle")
        if raw is not None:
            flags_given = True
            throttle = raw is True or _bool(raw)

        # ---- http
        http_status = client_ip = None
        http = get("http")
        if http is not None:
            if type(http) is dict:
                request = http.get("request")
                if type(request) is dict:
                    raw = request.get("method")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 64:
                            raw = _text(raw, 64)
                        doc["http_method"] = span["span.attributes.http@method"] = raw
                    raw = request.get("url")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > MAX_TEXT:
                            raw = _text(raw) or ""
                        if "?" in raw or "@" in raw or "#" in raw:
                            raw = self.redact_url(raw)
                        doc["http_url"] = span["span.attributes.http@url"] = raw
                    raw = request.get("client_ip")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 256:
                            raw = _text(raw, 256)
                        doc["http_client_ip"] = span["span.attributes.http@client_ip"] = client_ip = raw
                    raw = request.get("user_agent")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > MAX_NAME:
                            raw = _text(raw, MAX_NAME)
                        doc["http_user_agent"] = span["span.attributes.http@user_agent"] = raw
                    raw = request.get("x_forwarded_for")
                    if raw is not None and (raw is True or _bool(raw)):
                        span["span.attributes.aws@xray@x_forwarded_for"] = "true"
                    raw = request.get("traced")
                    if raw is not None and (raw is True or _bool(raw)):
                        span["span.attributes.aws@xray@traced"] = "true"
                elif request is not None:
                    problem(segment_id, f"http.request is {type(request).__name__}, not an object")
                response = http.get("response")
                if type(response) is dict:
                    raw = response.get("status")
                    if raw is not None:
                        if type(raw) is int and 0 <= raw < 1_000_000:
                            http_status = raw
                        else:
                            http_status = _long(raw)
                            problem(segment_id, f"http.response.status {_text(raw, 40)!r} coerced")
                        if http_status is not None:
                            doc["http_status"] = http_status
                            span["span.attributes.http@status_code"] = str(http_status)
                    raw = response.get("content_length")
                    if raw is not None:
                        length: int | None
                        if type(raw) is int and -_INT64 <= raw < _INT64:
                            length = raw
                        else:
                            length = _long(raw)
                            problem(segment_id, f"http.response.content_length {_text(raw, 40)!r} coerced")
                        if length is not None:
                            doc["http_content_length"] = length
                            span["span.attributes.http@response_content_length"] = str(length)
                elif response is not None:
                    problem(segment_id, f"http.response is {type(response).__name__}, not an object")
            else:
                problem(segment_id, f"http is {type(http).__name__}, not an object")
            if not flags_given and http_status is not None and http_status >= 400:
                if http_status == 429:
                    throttle = error = True
                elif http_status >= 500:
                    fault = True
                else:
                    error = True

        # ---- aws
        aws = get("aws")
        if aws is not None:
            if type(aws) is dict:
                if aws:
                    raw = aws.get("operation")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 256:
                            raw = _text(raw, 256)
                        doc["aws_operation"] = span["span.attributes.aws@operation"] = raw
                    raw = aws.get("region")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 64:
                            raw = _text(raw, 64)
                        doc["aws_region"] = span["span.attributes.aws@region"] = raw
                    raw = aws.get("account_id")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 64:
                            raw = _text(raw, 64)
                        doc["aws_account_id"] = span["span.attributes.aws@account_id"] = raw
                    raw = aws.get("request_id")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 256:
                            raw = _text(raw, 256)
                        doc["aws_request_id"] = span["span.attributes.aws@request_id"] = raw
                    raw = aws.get("retries")
                    if raw is not None:
                        retries = raw if type(raw) is int else _long(raw)
                        if retries is not None:
                            span["span.attributes.aws@xray@retries"] = str(retries)
                    resource_key = None
                    for key in aws:
                        rank = _RESOURCE_RANK.get(key)
                        if (
                            rank is not None
                            and aws[key] is not None
                            and (resource_key is None or rank < _RESOURCE_RANK[resource_key])
                        ):
                            resource_key = key
                    if resource_key is not None:
                        raw = aws[resource_key]
                        if type(raw) is not str or len(raw) > MAX_NAME:
                            raw = _text(raw, MAX_NAME)
                        doc["aws_resource_type"] = resource_key
                        doc["aws_resource"] = raw
                        if resource_key == "table_name":
                            span["span.attributes.aws@table_name"] = raw
                        elif resource_key == "queue_url":
                            span["span.attributes.aws@queue_url"] = raw
                    else:
                        names = aws.get("resource_names")
                        if type(names) is list and names:
                            doc["aws_resource_type"] = "resource_names"
                            doc["aws_resource"] = _text(names[0], MAX_NAME)
            else:
                problem(segment_id, f"aws is {type(aws).__name__}, not an object")

        # ---- sql
        sql = get("sql")
        if sql is not None:
            if type(sql) is dict:
                raw = sql.get("url")
                if raw is not None:
                    raw = _text(raw) or ""
                    if "?" in raw or "@" in raw or "#" in raw:
                        raw = self.redact_url(raw)
                    doc["sql_url"] = raw
                    db_url, db_name = _split_sql_url(raw)
                    span["span.attributes.db@connection_string"] = db_url
                    if db_name is not None:
                        span["span.attributes.db@name"] = db_name
                raw = sql.get("database_type")
                if raw is not None:
                    doc["sql_database_type"] = span["span.attributes.db@system"] = _text(raw, 256)
                raw = sql.get("sanitized_query")
                if raw is not None:
                    doc["sql_sanitized_query"] = span["span.attributes.db@statement"] = _text(raw)
                raw = sql.get("user")
                if raw is not None:
                    span["span.attributes.db@user"] = _text(raw, 256)
                raw = sql.get("database_version")
                if raw is not None:
                    span["span.attributes.db@version"] = _text(raw, 256)
            else:
                problem(segment_id, f"sql is {type(sql).__name__}, not an object")

        # ---- cause / exceptions
        message = None
        cause = get("cause")
        if cause is not None:
            if type(cause) is dict:
                exceptions = cause.get("exceptions")
                if type(exceptions) is list:
                    message = self.exception_events(segment_id, exceptions, doc, span, start_us, end_us)
                elif exceptions is not None:
                    problem(segment_id, f"cause.exceptions is {type(exceptions).__name__}, not a list")
            elif type(cause) is str:
                doc["cause_exception_id"] = message = cause[:64]
                self.cause_refs.append((doc, span, cause[:64]))
            else:
                problem(segment_id, f"cause is {type(cause).__name__}, neither an exception id nor an object")

        # ---- annotations, metadata
        typed = None
        raw = get("annotations")
        if raw is not None:
            if type(raw) is dict:
                if raw:
                    typed = self.annotations(segment_id, raw, doc, span)
            else:
                problem(segment_id, f"annotations is {type(raw).__name__}, not an object")
        raw = get("metadata")
        if raw is not None and type(raw) is not dict:
            problem(segment_id, "metadata is not an object (kept in the raw document only)")

        # ---- classification
        namespace = None
        raw = get("origin")
        if raw is not None:
            if type(raw) is not str or len(raw) > 256:
                raw = _text(raw, 256)
            doc["origin"] = span["span.attributes.aws@xray@origin"] = raw
        raw = get("namespace")
        if raw is not None:
            if type(raw) is not str or len(raw) > 64:
                raw = _text(raw, 64)
            doc["namespace"] = span["span.attributes.aws@xray@namespace"] = namespace = raw
            if raw == "aws" and is_subsegment:
                span["span.attributes.aws@service"] = name
        raw = get("inferred")
        if raw is not None and (raw is True or _bool(raw)):
            doc["inferred"] = True
            span["span.attributes.aws@xray@inferred"] = "true"
        raw = get("user")
        if raw is not None:
            doc["user"] = span["span.attributes.enduser@id"] = _text(raw, 256)
        raw = get("resource_arn")
        if raw is not None:
            doc["resource_arn"] = _text(raw, MAX_NAME)
        if not is_subsegment or client_ip is not None:
            span["kind"] = KIND_SERVER
        elif namespace in _CLIENT_NAMESPACES:
            span["kind"] = KIND_CLIENT
        if fault or error or throttle:
            status = "fault" if fault else "throttle" if throttle else "error"
            doc["status"] = span["span.attributes.aws@xray@status"] = status
            doc["error"], doc["fault"], doc["throttle"] = error, fault, throttle
            if message is None:
                message = f"HTTP {http_status}" if http_status is not None and http_status >= 400 else status
        if message is not None or cause is not None:
            span["status.code"] = STATUS_ERROR
            span["status.message"] = (message or "error")[:MAX_NAME]

        walked = (doc, span, start_us, end_us, top, document, typed)
        self.nodes.append(walked)
        if is_top:
            top.node = walked

        # ---- children
        children = get("subsegments")
        if children is not None:
            if type(children) is not list:
                problem(segment_id, f"subsegments is {type(children).__name__}, not a list")
            elif depth >= MAX_DEPTH:
                problem(segment_id, f"subsegments nested deeper than {MAX_DEPTH}; the rest is not mapped")
            else:
                walk = self.walk
                for position, child in enumerate(children):
                    if type(child) is dict:
                        walk(child, segment_id, span_id, depth + 1, top, True, position, None)
                    else:
                        shown = type(child).__name__
                        problem(segment_id, f"subsegments[{position}] is {shown}, not an object")

    # -------------------------------------------------------------- pieces

    def exception_events(
        self,
        segment_id: str,
        exceptions: list[Any],
        doc: dict[str, Any],
        span: dict[str, Any],
        start_us: int | None,
        end_us: int | None,
    ) -> str | None:
        """Exceptions → span events (name `exception`); the first one fills the segment doc."""
        moment = end_us if end_us is not None else start_us
        event_time = iso_ns(moment) if moment is not None else None
        events: list[dict[str, Any]] = []
        message = None
        for exception in exceptions:
            if type(exception) is not dict:
                self.problem(segment_id, "cause.exceptions holds a non-object")
                continue
            ex_type = _text(exception.get("type"), MAX_NAME)
            ex_message = _text(exception.get("message"))
            ex_id = exception.get("id")
            if type(ex_id) is str:
                self.exceptions[ex_id] = (ex_type, ex_message)
            if not events:
                doc["exception_type"], doc["exception_message"] = ex_type, ex_message
                message = f"{ex_type or 'Exception'}: {ex_message or ''}".rstrip(": ")
            attributes: dict[str, str] = {}
            if ex_type is not None:
                attributes["exception@type"] = ex_type
            if ex_message is not None:
                attributes["exception@message"] = ex_message
            stack = exception.get("stack")
            if type(stack) is list and stack:
                attributes["exception@stacktrace"] = _stacktrace(ex_type, ex_message, stack)
            if ex_id is not None:
                attributes["aws@xray@exception@id"] = _text(ex_id, 64) or ""
            remote = exception.get("remote")
            if remote is not None and (remote is True or _bool(remote)):
                attributes["aws@xray@exception@remote"] = "true"
            events.append(
                {
                    "name": "exception",
                    "time": event_time,
                    "attributes": attributes,
                    "droppedAttributesCount": 0,
                }
            )
        doc["exception_count"] = len(events)
        span["events"] = events
        return message

    def annotations(
        self, segment_id: str, raw: dict[str, Any], doc: dict[str, Any], span: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Annotations → `annotations` (all strings), `annotations_num` (numbers), span attributes;
        returns the typed values (Parquet) and merges them into the trace's annotations."""
        strings: dict[str, str] = {}
        numbers: dict[str, float] = {}
        typed: dict[str, Any] = {}
        denied = self.policy.key_denied
        replacement = self.policy.replacement
        merged = self.trace_annotations
        for count, (raw_key, value) in enumerate(raw.items()):
            if count >= MAX_ANNOTATIONS:
                self.problem(segment_id, f"more than {MAX_ANNOTATIONS} annotations; the rest is not mapped")
                break
            if value is None:
                continue
            key = _annotation_key(raw_key)
            kind = type(value)
            if denied(raw_key):
                value, kind = replacement, str
            if kind is str:
                text = value if len(value) <= MAX_NAME else value[:MAX_NAME]
                typed[key] = text
            elif kind is bool:
                text = "true" if value else "false"
                typed[key] = value
            elif kind is int or kind is float:
                text = str(value)
                typed[key] = value
                number = _float(value)
                if number is not None:
                    numbers[key] = number
            else:
                self.problem(segment_id, f"annotation {key!r} is {kind.__name__}; stored as JSON text")
                text = _text(value, MAX_NAME) or ""
                typed[key] = text
            strings[key] = text
            span["span.attributes." + key] = text
            stored = typed[key]
            seen = merged.get(key)
            if seen is None:
                merged[key] = [stored]
            elif len(seen) < 32 and not any(type(v) is type(stored) and v == stored for v in seen):
                seen.append(stored)
        if strings:
            doc["annotations"] = strings
        if numbers:
            doc["annotations_num"] = numbers
        return typed or None

    def resource_attributes(
        self, node: dict[str, Any], name: str, aws: dict[str, Any] | None, resource_arn: str | None
    ) -> dict[str, str]:
        ctx = self.ctx
        resource = {
            "resource.attributes.service@name": name,
            "resource.attributes.cloud@provider": "aws",
            "resource.attributes.cloud@region": ctx.region,
            "resource.attributes.cloud@account@id": ctx.account_id,
            "resource.attributes.deployment@environment": ctx.environment,
            "resource.attributes.xraylake@account@name": ctx.account_name,
        }
        if aws is not None:
            account = _text(aws.get("account_id"), 64)
            if account:
                resource["resource.attributes.cloud@account@id"] = account
            for block, section in aws.items():
                pairs = _RESOURCE_BLOCK_MAP.get(block)
                if pairs is not None and type(section) is dict:
                    for source_key, target in pairs:
                        value = section.get(source_key)
                        if value is not None:
                            resource[target] = _text(value, 256) or ""
        origin = node.get("origin")
        if type(origin) is str:
            resource["resource.attributes.aws@xray@origin"] = origin[:256]
        service = node.get("service")
        if type(service) is dict and service.get("version") is not None:
            resource["resource.attributes.service@version"] = _text(service.get("version"), 256) or ""
        if resource_arn is not None:
            resource["resource.attributes.aws@xray@resource_arn"] = resource_arn
        return resource

    # -------------------------------------------------------------- trace level

    def finish(self, trace: dict[str, Any]) -> TraceDocuments:
        ctx = self.ctx
        nodes = self.nodes
        ids = {walked[0]["segment_id"] for walked in nodes}
        tops = self.tops
        if len(ids) != len(nodes):
            nodes, tops = self._dedupe()

        for doc, span, ref in self.cause_refs:
            found = self.exceptions.get(ref)
            if found is None:
                self.problem(doc["segment_id"], f"cause references unknown exception id {ref!r}")
            elif doc["exception_type"] is None and (found[0] or found[1]):
                doc["exception_type"], doc["exception_message"] = found
                message = f"{found[0] or 'Exception'}: {found[1] or ''}".rstrip(": ")
                span["status.message"] = message[:MAX_NAME]

        missing_parent = False
        for top in tops:
            if top.parent_id is not None and top.parent_id not in ids:
                missing_parent = True
                self.problem(top.segment_id, f"parent {top.parent_id} is not in the trace")
        self._adopt_independent_subsegments(nodes, tops)
        root = _choose_root(tops, ids)
        limit_exceeded = _bool(trace.get("LimitExceeded"))
        if limit_exceeded:
            self.problem(None, "LimitExceeded: X-Ray truncated this trace")

        group = group_end = group_duration = group_status = None
        root_doc = None
        if root is not None and root.node is not None:
            root_doc, root_span = root.node[0], root.node[1]
            group = root_doc["name"]
            group_status = root_span["status.code"]
            if root.node[3] is not None:
                group_end = root_span["endTime"]
                group_duration = root_span["durationInNanos"]

        has_fault = has_throttle = has_error = in_progress = False
        start_us = end_us = None
        timeless = []
        for doc, span, node_start, node_end, _, _, _ in nodes:
            if doc["status"] != "ok":
                has_fault = has_fault or doc["fault"]
                has_throttle = has_throttle or doc["throttle"]
                has_error = has_error or doc["error"]
            if doc["in_progress"]:
                in_progress = True
            if node_start is not None and (start_us is None or node_start < start_us):
                start_us = node_start
            if node_end is not None and (end_us is None or node_end > end_us):
                end_us = node_end
            span["traceGroup"] = group
            span["traceGroupFields.endTime"] = group_end
            span["traceGroupFields.durationInNanos"] = group_duration
            span["traceGroupFields.statusCode"] = group_status
            if span["startTime"] is None or doc["start"] is None:
                timeless.append((doc, span))
        if start_us is not None and end_us is not None and end_us < start_us:
            end_us = None
        status = "fault" if has_fault else "throttle" if has_throttle else "error" if has_error else "ok"

        anchor = tracetime.anchor_second(trace, ctx.collected_at)
        partition = tracetime.Partition.of(anchor)
        measured_start = start_us
        if start_us is None and nodes:
            # No (sub)segment has a usable start: the trace is placed at its anchor (never a null
            # start in the index or Parquet), and says so.
            self.problem(None, "no segment has a usable start_time: start is the trace's anchor time")
            start_us = anchor * 1_000_000
        if timeless and start_us is not None:  # no usable time on the (sub)segment: the trace start
            fallback = iso_ns(start_us)
            for doc, span in timeless:
                if span["startTime"] is None:
                    span["startTime"] = span["endTime"] = fallback
                if doc["start"] is None:
                    doc["start"] = fallback[:23] + "Z"

        annotations: dict[str, Any] = {}
        annotations_num: dict[str, Any] = {}
        typed: dict[str, Any] = {}
        for key, values in self.trace_annotations.items():
            typed[key] = values[0] if len(values) == 1 else values
            strings = [_annotation_string(v) for v in values]
            annotations[key] = strings[0] if len(strings) == 1 else strings
            numbers = [float(v) for v in values if type(v) is int or type(v) is float]
            if numbers:
                annotations_num[key] = numbers[0] if len(numbers) == 1 else numbers

        trace_doc = {
            **self.context_fields,
            "trace_id": self.trace_id,
            "partition_hour": partition.hour_iso,
            "start": iso_ms(start_us) if start_us is not None else None,
            "end": iso_ms(end_us) if end_us is not None else None,
            "duration": (end_us - measured_start) / 1_000_000
            if measured_start is not None and end_us is not None
            else None,
            "xray_duration": _float(trace.get("Duration")),
            "root_segment_id": root.segment_id if root is not None else None,
            "root_service_name": root_doc["name"] if root_doc is not None else None,
            "root_service_type": root_doc["origin"] if root_doc is not None else None,
            "status": status,
            "has_error": has_error,
            "has_fault": has_fault,
            "has_throttle": has_throttle,
            "http_method": root_doc["http_method"] if root_doc is not None else None,
            "http_url": root_doc["http_url"] if root_doc is not None else None,
            "http_status": root_doc["http_status"] if root_doc is not None else None,
            "services": sorted({top.service for top in tops if not top.is_subsegment}),
            "segment_count": len(nodes),
            "in_progress": in_progress,
            "partial": limit_exceeded or missing_parent,
            "limit_exceeded": limit_exceeded,
            "problem_count": 0,
            "annotations": annotations or None,
            "annotations_num": annotations_num or None,
            **self.step_functions(tops),
        }
        trace_doc["problem_count"] = len(self.problems) + self.problem_overflow
        if self.problem_overflow:
            self.problems.append({"segment_id": None, "reason": f"{self.problem_overflow} more problems not listed"})

        return TraceDocuments(
            trace_id=self.trace_id,
            account_id=ctx.account_id,
            region=ctx.region,
            day=partition.day,
            dt=partition.dt,
            hour=partition.hour,
            version=round(ctx.collected_at.timestamp() * 1000),
            trace=trace_doc,
            segments=[walked[0] for walked in nodes],
            spans=[walked[1] for walked in nodes],
            service_map=_service_map(nodes, group),
            problems=self.problems,
            segment_documents=[walked[5] for walked in nodes],
            segment_annotations=[_safe_json(walked[6]) if walked[6] else None for walked in nodes],
            trace_annotations=_safe_json(typed) if typed else None,
        )

    def _dedupe(self) -> tuple[list[_Walked], list[_Top]]:
        """One record per segment id: a complete copy beats an in-progress one, else the first wins."""
        chosen: dict[str, int] = {}
        for index, walked in enumerate(self.nodes):
            segment_id = walked[0]["segment_id"]
            seen = chosen.get(segment_id)
            if seen is None:
                chosen[segment_id] = index
                continue
            self.problem(segment_id, "duplicate segment id; one copy kept")
            if self.nodes[seen][3] is None and walked[3] is not None:
                chosen[segment_id] = index
        keep = sorted(chosen.values())
        nodes = [self.nodes[index] for index in keep]
        kept_ids = {id(walked) for walked in nodes}
        tops = [top for top in self.tops if top.node is not None and id(top.node) in kept_ids]
        return nodes, tops

    @staticmethod
    def _adopt_independent_subsegments(nodes: list[_Walked], tops: list[_Top]) -> None:
        """A subsegment sent on its own (`type: subsegment`) belongs to its parent's service."""
        independent = [top for top in tops if top.is_subsegment and top.parent_id is not None]
        if not independent:
            return
        owner = {walked[0]["segment_id"]: walked[4] for walked in nodes}
        for top in independent:
            parent, hops = owner.get(top.parent_id or ""), 0
            while parent is not None and parent.is_subsegment and parent.parent_id is not None and hops < 16:
                parent, hops = owner.get(parent.parent_id), hops + 1
            if parent is None or parent is top:
                continue
            top.service = service = parent.service
            for doc, span, _, _, member_top, _, _ in nodes:
                if member_top is top:
                    doc["service_name"] = span["serviceName"] = service
                    span["resource.attributes.service@name"] = service

    def step_functions(self, tops: list[_Top]) -> dict[str, Any]:
        ctx = self.ctx
        machine = None
        for top in sorted(tops, key=_top_start):
            if top.node is not None and top.node[0]["origin"] == SFN_ORIGIN:
                machine = top
                break
        execution = ctx.execution if isinstance(ctx.execution, dict) and ctx.execution else None
        if execution is not None and machine is not None:
            traced_arn = next((a for a in machine.sfn_arns if type(a) is str and ":execution:" in a), None)
            described_arn = execution.get("executionArn")
            if traced_arn and type(described_arn) is str and described_arn and described_arn != traced_arn:
                self.problem(None, f"execution details are for {described_arn[:200]}, not {traced_arn[:200]}; ignored")
                execution = None
        fields: dict[str, Any] = dict.fromkeys(_SFN_FIELDS)
        fields["step_functions"] = machine is not None or execution is not None
        if not fields["step_functions"]:
            return fields
        start_us = stop_us = None
        if machine is not None and machine.node is not None:
            doc = machine.node[0]
            for candidate in machine.sfn_arns:
                if type(candidate) is not str:
                    continue
                if ":execution:" in candidate or ":express:" in candidate:
                    fields["execution_arn"] = fields["execution_arn"] or candidate[:MAX_NAME]
                elif ":stateMachine:" in candidate:
                    fields["state_machine_arn"] = fields["state_machine_arn"] or candidate[:MAX_NAME]
            fields["state_machine_name"] = doc["name"]
            start_us, stop_us = machine.node[2], machine.node[3]
            if doc["in_progress"] and stop_us is None:
                fields["execution_status"] = "RUNNING"
            elif doc["status"] != "ok":
                fields["execution_status"] = "FAILED"
            else:
                fields["execution_status"] = "SUCCEEDED"
            fields["execution_status_source"] = "trace"
        if execution is not None:
            get = execution.get
            arn = get("executionArn")
            if type(arn) is str and arn:
                fields["execution_arn"] = arn[:MAX_NAME]
            machine_arn = get("stateMachineArn")
            if type(machine_arn) is str and machine_arn:
                fields["state_machine_arn"] = machine_arn[:MAX_NAME]
            name = get("name")
            if type(name) is str and name:
                fields["execution_name"] = name[:MAX_NAME]
            status = get("status")
            if type(status) is str and status:
                fields["execution_status"] = status[:64]
                fields["execution_status_source"] = "describe_execution"
            described_start = _epoch_us(get("startDate"))
            described_stop = _epoch_us(get("stopDate"))
            if described_start is not None:
                # A finished execution described without stopDate (seen for TIMED_OUT) keeps the
                # state machine segment's end rather than losing its duration.
                finished = fields["execution_status"] != "RUNNING"
                start_us, stop_us = (
                    described_start,
                    described_stop if described_stop is not None or not finished else stop_us,
                )
            elif described_stop is not None:
                stop_us = described_stop
            for key, text_field, flag_field in (
                ("input", "execution_input", "execution_input_truncated"),
                ("output", "execution_output", "execution_output_truncated"),
            ):
                value = get(key)
                if value is not None:
                    fields[text_field], fields[flag_field] = self.policy.redact_payload(value)
            error = get("error")
            if error is not None:
                fields["execution_error"] = _text(error, MAX_NAME)
            cause = get("cause")
            if cause is not None:
                fields["execution_cause"] = self.policy.redact_payload(cause)[0]
        arn = fields["execution_arn"]
        if type(arn) is str:
            match = _STATE_MACHINE_ARN.match(arn)
            if match:
                if fields["state_machine_arn"] is None:
                    fields["state_machine_arn"] = f"{match.group(1)}:stateMachine:{match.group(2)}"
                if fields["execution_name"] is None:
                    fields["execution_name"] = arn.rsplit(":", 1)[-1][:MAX_NAME]
        machine_arn = fields["state_machine_arn"]
        if type(machine_arn) is str and ":stateMachine:" in machine_arn:
            fields["state_machine_name"] = machine_arn.split(":stateMachine:", 1)[1].split(":", 1)[0]
        fields["execution_start"] = iso_ms(start_us) if start_us is not None else None
        fields["execution_stop"] = iso_ms(stop_us) if stop_us is not None else None
        if start_us is not None and stop_us is not None and stop_us >= start_us:
            fields["execution_duration_seconds"] = (stop_us - start_us) / 1_000_000
        return fields


_SFN_FIELDS = (
    "step_functions",
    "execution_arn",
    "execution_name",
    "state_machine_name",
    "state_machine_arn",
    "execution_status",
    "execution_status_source",
    "execution_start",
    "execution_stop",
    "execution_duration_seconds",
    "execution_input",
    "execution_input_truncated",
    "execution_output",
    "execution_output_truncated",
    "execution_error",
    "execution_cause",
)


def _top_start(top: _Top) -> tuple[bool, int]:
    start = top.node[2] if top.node is not None else None
    return (start is None, start or 0)


_RESOURCE_BLOCKS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "ec2",
        (
            ("availability_zone", "resource.attributes.cloud@availability_zone"),
            ("instance_id", "resource.attributes.host@id"),
            ("instance_size", "resource.attributes.host@type"),
            ("ami_id", "resource.attributes.host@image@id"),
        ),
    ),
    (
        "ecs",
        (
            ("container", "resource.attributes.container@name"),
            ("container_id", "resource.attributes.container@id"),
            ("availability_zone", "resource.attributes.cloud@availability_zone"),
        ),
    ),
    (
        "elastic_beanstalk",
        (
            ("environment_name", "resource.attributes.service@namespace"),
            ("deployment_id", "resource.attributes.service@instance@id"),
            ("version_label", "resource.attributes.service@version"),
        ),
    ),
    (
        "eks",
        (
            ("cluster_name", "resource.attributes.k8s@cluster@name"),
            ("pod", "resource.attributes.k8s@pod@name"),
            ("container_id", "resource.attributes.container@id"),
        ),
    ),
    (
        "xray",
        (
            ("sdk", "resource.attributes.telemetry@sdk@name"),
            ("sdk_version", "resource.attributes.telemetry@sdk@version"),
        ),
    ),
)


_RESOURCE_BLOCK_MAP = dict(_RESOURCE_BLOCKS)


def _annotation_string(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    return value if type(value) is str else str(value)


def _stacktrace(ex_type: str | None, message: str | None, stack: list[Any]) -> str:
    """Like the awsxrayreceiver: `Type: message\\n\\tat label(path: line)\\n…`."""
    lines = [f"{ex_type or ''}: {message or ''}"]
    for frame in stack[:64]:
        if type(frame) is dict:
            line = frame.get("line")
            lines.append(
                f"\tat {_text(frame.get('label'), 256) or ''}({_text(frame.get('path'), 512) or ''}: "
                f"{line if type(line) is int else '<unknown>'})"
            )
    text = "\n".join(lines) + "\n"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


_SQL_URL = re.compile(r"^(.+//.+)/([^?]+)\??.*$")


def _split_sql_url(url: str) -> tuple[str, str | None]:
    """`proto://host:port/db?x` → (`proto://host:port`, `db`), as the awsxrayreceiver splits it."""
    match = _SQL_URL.match(url)
    if match is None:
        return url, None
    return match.group(1), match.group(2)


def _choose_root(tops: list[_Top], ids: set[str]) -> _Top | None:
    """The segment without parent (earliest when several); else the earliest orphan (preferring
    a non-inferred one); else the earliest segment."""
    if not tops:
        return None
    parentless = [top for top in tops if top.parent_id is None and not top.is_subsegment]
    if parentless:
        return min(parentless, key=_top_start)
    orphans = [top for top in tops if top.parent_id not in ids]
    real = [top for top in orphans if not top.is_subsegment and top.node is not None and not top.node[0]["inferred"]]
    if real:
        return min(real, key=_top_start)
    return min(orphans or tops, key=_top_start)


_HASH_CACHE: dict[tuple[Any, ...], str] = {}


def _service_map(nodes: list[_Walked], group: str | None) -> list[dict[str, Any]]:
    """Data Prepper service-map relationships: for each parent→child span pair crossing services a
    destination edge (parent service → child) and a target edge (child service), plus isolated
    services for services without any edge."""
    by_span = {walked[1]["spanId"]: walked[1] for walked in nodes}
    relations: dict[str, dict[str, Any]] = {}
    connected: set[str] = set()
    services: set[str] = set()

    def add(
        service: str, kind: str | None, target: tuple[str, str] | None, destination: tuple[str, str] | None
    ) -> None:
        key = (service, kind, group, target, destination)
        hash_id = _HASH_CACHE.get(key)
        if hash_id is None:
            hash_id = service_map_hash(service, kind, group, target, destination)
            if len(_HASH_CACHE) > 100_000:
                _HASH_CACHE.clear()
            _HASH_CACHE[key] = hash_id
        if hash_id not in relations:
            relations[hash_id] = {
                "serviceName": service,
                "kind": kind,
                "destination": {"resource": destination[0], "domain": destination[1]} if destination else None,
                "target": {"resource": target[0], "domain": target[1]} if target else None,
                "traceGroupName": group,
                "hashId": hash_id,
            }

    for walked in nodes:
        child = walked[1]
        services.add(child["serviceName"])
        parent_span_id = child["parentSpanId"]
        if not parent_span_id:
            continue
        parent = by_span.get(parent_span_id)
        if parent is None or parent["serviceName"] == child["serviceName"]:
            continue
        add(parent["serviceName"], parent["kind"], None, (child["name"], child["serviceName"]))
        add(child["serviceName"], child["kind"], (child["name"], child["serviceName"]), None)
        connected.add(parent["serviceName"])
        connected.add(child["serviceName"])
    for service in sorted(services - connected):
        add(service, None, None, None)
    return list(relations.values())


# ====================================================================== entry point


def transform_trace(
    trace: dict[str, Any], ctx: TraceContext, redaction: RedactionPolicy | None = None
) -> TraceDocuments:
    """One BatchGetTraces `Trace` → its documents. Never raises: problems are data."""
    builder = _TraceBuilder(ctx, redaction if redaction is not None else _DEFAULT_POLICY)
    try:
        if not isinstance(trace, dict):
            builder.problem(None, f"trace is {type(trace).__name__}, not an object")
            trace = {}
        raw_id = trace.get("Id")
        segments = trace.get("Segments")
        if type(raw_id) is not str or not raw_id:
            raw_id = _first_trace_id(segments) or ""
            builder.problem(None, f"trace Id missing or invalid; using {raw_id or 'a digest'!r}")
        trace_id = raw_id[:MAX_NAME] or _digest_hex(_safe_json(trace), 16)
        if _TRACE_ID.fullmatch(trace_id) is None:
            builder.problem(None, f"trace id {trace_id[:80]!r} is not 1-<8 hex>-<24 hex>")
        builder.start(trace_id)
        if type(segments) is list:
            for index, wrapper in enumerate(segments):
                try:
                    builder.add_document(index, wrapper)
                except Exception as error:  # one segment never fails the trace
                    wrapper_id = wrapper.get("Id") if isinstance(wrapper, dict) else None
                    reason = f"segment not mapped: {type(error).__name__}: {error}"
                    builder.problem(_text(wrapper_id, 64), reason)
        elif segments is not None:
            builder.problem(None, f"Segments is {type(segments).__name__}, not a list")
        if not builder.nodes:
            builder.problem(None, "trace has no usable segment")
        return builder.finish(trace)
    except Exception as error:  # last line of defence: an empty but valid result
        return _failed(builder, ctx, trace, error)
    finally:
        # Each _Top and its walked tuple point at each other: break those cycles so the builder is
        # freed by reference counting at once instead of waiting for (and feeding) the cyclic GC.
        for top in builder.tops:
            top.node = None


_DEFAULT_POLICY = RedactionPolicy()


def _first_trace_id(segments: Any) -> str | None:
    if type(segments) is not list:
        return None
    for wrapper in segments:
        if isinstance(wrapper, dict) and isinstance(wrapper.get("Document"), str):
            try:
                parsed = orjson.loads(wrapper["Document"])
            except orjson.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and isinstance(parsed.get("trace_id"), str) and parsed["trace_id"]:
                return str(parsed["trace_id"])
    return None


def _failed(builder: _TraceBuilder, ctx: TraceContext, trace: Any, error: Exception) -> TraceDocuments:
    trace_id = builder.trace_id or "unknown"
    partition = tracetime.trace_partition(trace if isinstance(trace, dict) else {}, ctx.collected_at)
    reason = f"trace not mapped: {type(error).__name__}: {error}"
    problems = [*builder.problems, {"segment_id": None, "reason": reason}]
    trace_doc: dict[str, Any] = dict.fromkeys(mappings.TRACE_FIELDS)
    trace_doc.update(builder.context_fields)
    trace_doc.update(
        {
            "trace_id": trace_id,
            "partition_hour": partition.hour_iso,
            "status": "ok",
            "services": [],
            "segment_count": 0,
            "in_progress": False,
            "partial": True,
            "limit_exceeded": False,
            "has_error": False,
            "has_fault": False,
            "has_throttle": False,
            "step_functions": False,
            "problem_count": len(problems),
        }
    )
    return TraceDocuments(
        trace_id=trace_id,
        account_id=ctx.account_id,
        region=ctx.region,
        day=partition.day,
        dt=partition.dt,
        hour=partition.hour,
        version=round(ctx.collected_at.timestamp() * 1000),
        trace=trace_doc,
        segments=[],
        spans=[],
        service_map=[],
        problems=problems,
    )


# ====================================================================== Arrow

_TS = pa.timestamp("us", tz="UTC")

TRACE_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("account_name", pa.string()),
        pa.field("environment", pa.string()),
        pa.field("region", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("start", _TS),
        pa.field("end", _TS),
        pa.field("duration", pa.float64()),
        pa.field("xray_duration", pa.float64()),
        pa.field("root_segment_id", pa.string()),
        pa.field("root_service_name", pa.string()),
        pa.field("root_service_type", pa.string()),
        pa.field("status", pa.string()),
        pa.field("has_error", pa.bool_()),
        pa.field("has_fault", pa.bool_()),
        pa.field("has_throttle", pa.bool_()),
        pa.field("http_method", pa.string()),
        pa.field("http_url", pa.string()),
        pa.field("http_status", pa.int64()),
        pa.field("services", pa.list_(pa.string())),
        pa.field("segment_count", pa.int64()),
        pa.field("in_progress", pa.bool_()),
        pa.field("partial", pa.bool_()),
        pa.field("limit_exceeded", pa.bool_()),
        pa.field("problem_count", pa.int64()),
        pa.field("annotations", pa.string()),  # JSON, typed values; several values → a list
        pa.field("step_functions", pa.bool_()),
        pa.field("execution_arn", pa.string()),
        pa.field("execution_name", pa.string()),
        pa.field("state_machine_name", pa.string()),
        pa.field("state_machine_arn", pa.string()),
        pa.field("execution_status", pa.string()),
        pa.field("execution_status_source", pa.string()),
        pa.field("execution_start", _TS),
        pa.field("execution_stop", _TS),
        pa.field("execution_duration_seconds", pa.float64()),
        pa.field("execution_input", pa.string()),
        pa.field("execution_input_truncated", pa.bool_()),
        pa.field("execution_output", pa.string()),
        pa.field("execution_output_truncated", pa.bool_()),
        pa.field("execution_error", pa.string()),
        pa.field("execution_cause", pa.string()),
        pa.field("collected_at", _TS, nullable=False),
        pa.field("envelope_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("dt", pa.string(), nullable=False),
        pa.field("hour", pa.string(), nullable=False),
    ]
)

SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("account_name", pa.string()),
        pa.field("environment", pa.string()),
        pa.field("region", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("parent_id", pa.string()),
        pa.field("top_segment_id", pa.string()),
        pa.field("is_subsegment", pa.bool_()),
        pa.field("depth", pa.int32()),
        pa.field("name", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("inferred", pa.bool_()),
        pa.field("start", _TS),
        pa.field("end", _TS),
        pa.field("duration", pa.float64()),
        pa.field("in_progress", pa.bool_()),
        pa.field("error", pa.bool_()),
        pa.field("fault", pa.bool_()),
        pa.field("throttle", pa.bool_()),
        pa.field("status", pa.string()),
        pa.field("http_method", pa.string()),
        pa.field("http_url", pa.string()),
        pa.field("http_status", pa.int64()),
        pa.field("http_content_length", pa.int64()),
        pa.field("http_client_ip", pa.string()),
        pa.field("http_user_agent", pa.string()),
        pa.field("aws_operation", pa.string()),
        pa.field("aws_region", pa.string()),
        pa.field("aws_account_id", pa.string()),
        pa.field("aws_request_id", pa.string()),
        pa.field("aws_resource_type", pa.string()),
        pa.field("aws_resource", pa.string()),
        pa.field("sql_url", pa.string()),
        pa.field("sql_database_type", pa.string()),
        pa.field("sql_sanitized_query", pa.string()),
        pa.field("exception_type", pa.string()),
        pa.field("exception_message", pa.string()),
        pa.field("exception_count", pa.int32()),
        pa.field("cause_exception_id", pa.string()),
        pa.field("user", pa.string()),
        pa.field("resource_arn", pa.string()),
        pa.field("annotations", pa.string()),  # JSON, typed values
        pa.field("collected_at", _TS, nullable=False),
        pa.field("envelope_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("document", pa.string()),  # the original segment Document (top-level rows only)
        pa.field("dt", pa.string(), nullable=False),
        pa.field("hour", pa.string(), nullable=False),
    ]
)

# Columns that do not come straight from the OpenSearch document of the same name.
_ARROW_SPECIAL = frozenset({"annotations", "document", "dt", "hour"})


def _values(docs: list[dict[str, Any]], name: str) -> list[Any]:
    """One column's values: documents are built from complete templates, so `itemgetter` over
    `map` (no Python frame per row) works; any document lacking the key falls back to `.get`."""
    try:
        return list(map(itemgetter(name), docs))
    except KeyError:
        return [doc.get(name) for doc in docs]


def _column(values: list[Any], data_type: pa.DataType) -> pa.Array:
    if data_type == _TS:  # ISO strings → timestamps, vectorised
        return pa.array(values, pa.string()).cast(_TS)
    return pa.array(values, data_type)


def to_arrow(docs_list: Sequence[TraceDocuments]) -> tuple[pa.Table, pa.Table]:
    """(traces, segments) tables with TRACE_SCHEMA / SEGMENT_SCHEMA, built column by column."""
    traces = [docs.trace for docs in docs_list]
    trace_columns: list[pa.Array] = []
    for schema_field in TRACE_SCHEMA:
        name = schema_field.name
        if name == "annotations":
            values: list[Any] = [docs.trace_annotations for docs in docs_list]
        elif name == "dt":
            values = [docs.dt for docs in docs_list]
        elif name == "hour":
            values = [docs.hour for docs in docs_list]
        else:
            values = _values(traces, name)
        trace_columns.append(_column(values, schema_field.type))
    traces_table = pa.Table.from_arrays(trace_columns, schema=TRACE_SCHEMA)

    segments = [segment for docs in docs_list for segment in docs.segments]
    segment_columns: list[pa.Array] = []
    for schema_field in SEGMENT_SCHEMA:
        name = schema_field.name
        if name == "annotations":
            values = [value for docs in docs_list for value in _padded(docs.segment_annotations, docs.segments)]
        elif name == "document":
            values = [value for docs in docs_list for value in _padded(docs.segment_documents, docs.segments)]
        elif name == "dt":
            values = [docs.dt for docs in docs_list for _ in docs.segments]
        elif name == "hour":
            values = [docs.hour for docs in docs_list for _ in docs.segments]
        else:
            values = _values(segments, name)
        segment_columns.append(_column(values, schema_field.type))
    segments_table = pa.Table.from_arrays(segment_columns, schema=SEGMENT_SCHEMA)
    return traces_table, segments_table


def _padded(values: list[str | None], segments: list[dict[str, Any]]) -> list[str | None]:
    if len(values) == len(segments):
        return values
    return (values + [None] * len(segments))[: len(segments)]
