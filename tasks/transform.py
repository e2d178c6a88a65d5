"""Pure transform: one X-Ray `Trace` (as BatchGetTraces returns it) → its documents.

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

Beside it: the input/output types (`tasks.trace_model`), value coercion (`tasks.coerce`), OTel ids,
resources and service map (`tasks.otel`), Step Functions fields (`tasks.sfn_fields`), Arrow rows of
the documents (`tasks.tables.to_arrow`). The one-pass walker filling each segment document and its
span together stays here: that is where the speed is.

Index day and Parquet partition come from the epoch in the trace id (the request start, immutable
across re-collections, so the same document always lands in the same daily index), falling back
to the earliest segment start, then to collected_at.

Type discipline (`tasks.coerce`), so one odd value never causes a mapping conflict: ids/names/free
text are strings (objects become compact JSON), status codes and content lengths are int64 or null,
times are epoch seconds (numbers, numeric strings, scientific notation, ISO strings) → ISO-8601
UTC, flags are booleans. Annotations are stored twice: every value as a string under `annotations`
(keyword), numeric values again under `annotations_num` (double).
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Any

import orjson

from tasks import coerce, ids, mappings, tracetime
from tasks.coerce import MAX_NAME, MAX_TEXT, iso_ms, iso_ns
from tasks.dependencies import dependency_spans
from tasks.otel import (
    XRAY_TRACE_ID,
    add_resource_attributes,
    context_resource,
    exception_stacktrace,
    go_json,
    otel_span_id,
    otel_trace_id,
    service_map_relations,
    split_sql_url,
)
from tasks.redact import RedactionPolicy
from tasks.sfn_fields import SFN_ORIGIN, StateMachineSegment, step_functions_fields
from tasks.trace_model import TraceContext, TraceDocuments

__all__ = ["AWS_RESOURCE_KEYS", "SOURCE_XRAY", "sdk_instrumentation", "transform_trace"]

KIND_SERVER = "SPAN_KIND_SERVER"
KIND_CLIENT = "SPAN_KIND_CLIENT"
KIND_INTERNAL = "SPAN_KIND_INTERNAL"
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

MAX_DEPTH = 64  # deeper subsegment nesting is cut (and reported)
MAX_PROBLEMS = 200
MAX_ANNOTATIONS = 200  # per (sub)segment
_MIN_TIME = float(tracetime.MIN_EPOCH)
_MAX_TIME = float(tracetime.MAX_EPOCH)

# The helpers under the short names the walker uses (module globals: looked up as fast as before).
# `_second_cache` is the one bounded cache of `tasks.coerce` (cleared in place, never replaced).
_second_cache = coerce.second_cache
_base = coerce.iso_second
_long = coerce.to_long
_float = coerce.to_float
_bool = coerce.to_bool
_text = coerce.to_text
_safe_json = coerce.safe_json
_digest_hex = coerce.digest_hex
_epoch_us = tracetime.epoch_us
_INT64 = coerce.INT64

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
_SEGMENT_OF, _SPAN_OF, _DOCUMENT_OF = itemgetter(0), itemgetter(1), itemgetter(5)


class _Top:
    """A top-level segment document: what its subsegments share, and what the trace pass needs."""

    __slots__ = (
        "instrumentation",
        "is_subsegment",
        "node",
        "parent_id",
        "sdk",
        "segment_id",
        "service",
        "sfn_arns",
        "span_base",
    )

    def __init__(self, segment_id: str, parent_id: str | None, service: str, is_subsegment: bool) -> None:
        self.instrumentation = "unknown"
        self.sdk: str | None = None
        self.segment_id = segment_id
        self.parent_id = parent_id
        self.service = service
        self.is_subsegment = is_subsegment
        self.span_base: dict[str, Any] = {}
        self.sfn_arns: tuple[Any, ...] = ()
        self.node: _Walked | None = None


_SPAN_TEMPLATE: dict[str, Any] = {
    "traceId": "",
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

# The last context's shared parts: (context, its collected_at in seconds, the trace document's
# context fields, the segment document template without trace_id, the trace document template,
# the span template with the context's resource attributes, without traceId). Never mutated once
# built, and replaced as a whole tuple, so threads transforming under different contexts never mix.
_ContextParts = tuple[float, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], tuple[float, float]]
_CONTEXT_CACHE: tuple[Any, _ContextParts] = (None, (0.0, {}, {}, {}, {}, (0.0, 0.0)))

# The trace document's keys after the context fields, in document order (the Step Functions
# fields follow, `SFN_FIELDS`); `finish` copies a template holding them all and fills them in.
_TRACE_KEYS = (
    "trace_id",
    "partition_hour",
    "start",
    "end",
    "duration",
    "xray_duration",
    "root_segment_id",
    "root_service_name",
    "root_service_type",
    "status",
    "has_error",
    "has_fault",
    "has_throttle",
    "http_method",
    "http_url",
    "http_status",
    "services",
    "instrumentation",
    "segment_count",
    "in_progress",
    "partial",
    "limit_exceeded",
    "problem_count",
    "annotations",
    "annotations_num",
)


# What `finish` writes into most trace documents, preset in the template (it writes only the rest).
_TRACE_DEFAULTS = {
    "status": "ok",
    "has_error": False,
    "has_fault": False,
    "has_throttle": False,
    "in_progress": False,
    "partial": False,
    "limit_exceeded": False,
    "problem_count": 0,
}


def _no_problem(segment_id: str | None, reason: str) -> None:
    raise AssertionError(reason)  # step_functions_fields reports nothing without execution details


def _context_parts(ctx: TraceContext) -> _ContextParts:
    global _CONTEXT_CACHE
    cached = _CONTEXT_CACHE
    if cached[0] is not ctx:
        collected_s = ctx.collected_at.timestamp()
        fields = {
            "account_id": ctx.account_id,
            "account_name": ctx.account_name,
            "environment": ctx.environment,
            "region": ctx.region,
            "collected_at": iso_ms(round(collected_s * 1_000_000)),
            "envelope_id": ctx.envelope_id,
            "source": ctx.source,
            "source_store": SOURCE_XRAY,  # tasks.spans sets "spans" on what it maps
        }
        template = dict.fromkeys(mappings.SEGMENT_FIELDS)
        template.update(fields)
        template.update(
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
        trace_template = {
            **fields,
            **dict.fromkeys(_TRACE_KEYS),
            **step_functions_fields(None, None, _DEFAULT_POLICY, _no_problem),
        }
        trace_template.update(_TRACE_DEFAULTS)
        # `new_top` fills in the service name and provider, `dependency_spans` overwrites all six
        span_template = {**_SPAN_TEMPLATE, **context_resource(ctx)}
        window = tracetime.credible_window(collected_s)
        cached = _CONTEXT_CACHE = (ctx, (collected_s, fields, template, trace_template, span_template, window))
    return cached[1]


class _TraceBuilder:
    def __init__(self, ctx: TraceContext, policy: RedactionPolicy) -> None:
        self.ctx = ctx
        self.policy = policy
        self.redact_url = policy.redact_url
        self.problems: list[dict[str, str | None]] = []
        self.problem_overflow = 0
        self.nodes: list[_Walked] = []
        self.documents: list[dict[str, Any]] = []  # parsed segment documents (for the trace time)
        self.tops: list[_Top] = []
        self.exceptions: dict[str, tuple[str | None, str | None]] = {}
        self.cause_refs: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        # CLIENT subsegments (namespace aws/remote): the calls a dependency node may stand for
        self.calls: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        self.segment_links: dict[int, str] = {}  # id(segment doc) → its `links` as JSON (Parquet)
        # the earliest start_time of every walked (sub)segment (tracetime's anchor rule needs it)
        self.earliest_us: int | None = None
        self.walked_all = True  # False once a (sub)segment was refused or a document failed
        self.sfn_seen = False  # True once a (sub)segment has origin SFN_ORIGIN
        self.trace_annotations: dict[str, list[Any]] = {}
        # What every trace of the context shares (an envelope's traces share one context).
        (
            self.collected_at_s,
            self.context_fields,
            self.context_template,
            self.trace_template,
            self.context_span_template,
            self.credible_window,  # tracetime's rule 1 for this collection time
        ) = _context_parts(ctx)
        self.trace_id = ""
        self.otel_trace_id = ""
        self.id_epoch: int | None = None  # tracetime.id_epoch of the trace's `Id`

    def start(self, trace_id: str, match: re.Match[str] | None, given_id: Any) -> None:
        """`match`: XRAY_TRACE_ID.fullmatch(trace_id); `given_id`: the trace's `Id` as given."""
        self.trace_id = trace_id
        if match is not None:  # what otel_trace_id and tracetime.id_epoch make of it, without re-parsing
            epoch_hex, rest = match.groups()
            self.otel_trace_id = (epoch_hex + rest).lower()
            if trace_id == given_id:
                epoch = int(epoch_hex, 16)
                self.id_epoch = epoch if tracetime.MIN_EPOCH <= epoch < tracetime.MAX_EPOCH else None
            else:
                self.id_epoch = tracetime.id_epoch(given_id)
        else:
            self.otel_trace_id = otel_trace_id(trace_id)
            self.id_epoch = tracetime.id_epoch(given_id)

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
        self.documents.append(parsed)
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
        # {**span template, "serviceName": name, **resource_attributes(...)}, written in place
        top.span_base = span_base = self.context_span_template.copy()
        span_base["traceId"] = self.otel_trace_id
        span_base["serviceName"] = span_base["resource.attributes.service@name"] = name
        if aws is not None:
            span_base["resource.attributes.cloud@provider"] = "aws"
        add_resource_attributes(span_base, node, aws, resource_arn, lambda reason: self.problem(segment_id, reason))
        if aws is not None:
            top.sfn_arns = (aws.get("execution_arn"), aws.get("state_machine_arn"), resource_arn)
            xray = aws.get("xray")
            if type(xray) is dict and xray.get("sdk") is not None:
                sdk, version = xray.get("sdk"), xray.get("sdk_version")
                plain = type(sdk) is str and (version is None or type(version) is str)
                known = _SDK_CACHE.get((sdk, version)) if plain else None
                if known is None:
                    known = sdk_instrumentation(sdk, version)
                    if plain:
                        if len(_SDK_CACHE) >= 1024:
                            _SDK_CACHE.clear()
                        _SDK_CACHE[(sdk, version)] = known
                top.instrumentation, top.sdk = known
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
        if type(raw) is str and len(raw) == 16 and _HEX.issuperset(raw):
            segment_id = span_id = raw
        elif type(raw) is str and ids.segment_id_problem(raw) is None:  # upper-case hex: OTel ids are lower-case
            segment_id, span_id = raw, raw.lower()
        elif top is None and isinstance(fallback_id, str) and ids.segment_id_problem(fallback_id) is None:
            segment_id, span_id = fallback_id, fallback_id.lower()  # BatchGetTraces' Segment.Id
            problem(segment_id, f"{ids.segment_id_problem(raw)}; using the segment's Id {segment_id}")
        else:
            where = fallback_id if isinstance(fallback_id, str) else f"{parent_id}/{fallback_id}"
            reason = ids.segment_id_problem(raw)
            problem(_text(where, 64), f"{reason}: (sub)segment and its subsegments not indexed")
            self.walked_all = False
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
        doc = self.context_template.copy()
        doc["trace_id"] = self.trace_id
        span = top.span_base.copy()
        doc["segment_id"] = segment_id
        doc["top_segment_id"] = top.segment_id
        doc["name"] = name
        doc["service_name"] = top.service
        doc["instrumentation"] = top.instrumentation
        doc["sdk"] = top.sdk
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
        if raw is not None and type(raw) is not bool:
            problem(segment_id, f"in_progress {_text(raw, 40)!r} is not a boolean; read as {in_progress}")
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
            if self.earliest_us is None or start_us < self.earliest_us:
                self.earliest_us = start_us
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
            if type(raw) is not bool:
                self.not_boolean(segment_id, "error", raw, error)
        raw = get("fault")
        if raw is not None:
            flags_given = True
            fault = raw is True or _bool(raw)
            if type(raw) is not bool:
                self.not_boolean(segment_id, "fault", raw, fault)
        raw = get("throttle")
        if raw is not None:
            flags_given = True
            throttle = raw is True or _bool(raw)
            if type(raw) is not bool:
                self.not_boolean(segment_id, "throttle", raw, throttle)

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
                            raw = self.text_field(segment_id, "http.request.method", raw, 64)
                        doc["http_method"] = span["span.attributes.http@method"] = raw
                    raw = request.get("url")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > MAX_TEXT:
                            raw = self.text_field(segment_id, "http.request.url", raw, MAX_TEXT)
                        if "?" in raw or "@" in raw or "#" in raw:
                            raw = self.redact_url(raw)
                        doc["http_url"] = span["span.attributes.http@url"] = raw
                    raw = request.get("client_ip")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 256:
                            raw = self.text_field(segment_id, "http.request.client_ip", raw, 256)
                        doc["http_client_ip"] = span["span.attributes.http@client_ip"] = client_ip = raw
                    raw = request.get("user_agent")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > MAX_NAME:
                            raw = self.text_field(segment_id, "http.request.user_agent", raw, MAX_NAME)
                        doc["http_user_agent"] = span["span.attributes.http@user_agent"] = raw
                    raw = request.get("x_forwarded_for")
                    if raw is not None:
                        flag = raw is True or _bool(raw)
                        if type(raw) is not bool:
                            self.not_boolean(segment_id, "http.request.x_forwarded_for", raw, flag)
                        span["span.attributes.aws@xray@x_forwarded_for"] = "true" if flag else "false"
                    raw = request.get("traced")  # where the X-Ray docs put it (the receiver: `traced`)
                    if raw is not None:
                        flag = raw is True or _bool(raw)
                        if type(raw) is not bool:
                            self.not_boolean(segment_id, "http.request.traced", raw, flag)
                        span["span.attributes.aws@xray@traced"] = "true" if flag else "false"
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
                            raw = self.text_field(segment_id, "aws.operation", raw, 256)
                        doc["aws_operation"] = span["span.attributes.aws@operation"] = raw
                    raw = aws.get("region")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 64:
                            raw = self.text_field(segment_id, "aws.region", raw, 64)
                        doc["aws_region"] = span["span.attributes.aws@region"] = raw
                    raw = aws.get("account_id")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 64:
                            raw = self.text_field(segment_id, "aws.account_id", raw, 64)
                        doc["aws_account_id"] = span["span.attributes.aws@account_id"] = raw
                    raw = aws.get("request_id")
                    if raw is not None:
                        if type(raw) is not str or len(raw) > 256:
                            raw = self.text_field(segment_id, "aws.request_id", raw, 256)
                        doc["aws_request_id"] = span["span.attributes.aws@request_id"] = raw
                    raw = aws.get("retries")
                    if raw is not None:
                        retries = raw if type(raw) is int else _long(raw)
                        if type(raw) is not int:
                            problem(segment_id, f"aws.retries {_text(raw, 40)!r} is not an integer; read as {retries}")
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
                        # aws.go `addAWSToSpan`: both, independently of which one names the resource
                        if "table_name" in aws and aws["table_name"] is not None:
                            span["span.attributes.aws@table_name"] = _text(aws["table_name"], MAX_NAME)
                        if "queue_url" in aws and aws["queue_url"] is not None:
                            span["span.attributes.aws@queue_url"] = _text(aws["queue_url"], MAX_NAME)
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
                    db_url, db_name = split_sql_url(raw)
                    span["span.attributes.db@connection_string"] = db_url
                    if db_name is not None:
                        span["span.attributes.db@name"] = db_name
                    else:  # the receiver rejects the whole segment (sql.go `splitSQLURL`)
                        problem(segment_id, "sql.url has no database name (protocol://host/db); kept as the connection")
                raw = sql.get("database_type")
                if raw is not None:
                    doc["sql_database_type"] = span["span.attributes.db@system"] = self.text_field(
                        segment_id, "sql.database_type", raw, 256
                    )
                raw = sql.get("sanitized_query")
                if raw is not None:
                    doc["sql_sanitized_query"] = span["span.attributes.db@statement"] = self.text_field(
                        segment_id, "sql.sanitized_query", raw, MAX_TEXT
                    )
                raw = sql.get("user")
                if raw is not None:
                    span["span.attributes.db@user"] = self.text_field(segment_id, "sql.user", raw, 256)
                raw = sql.get("database_version")
                if raw is not None:
                    span["span.attributes.db@version"] = self.text_field(segment_id, "sql.database_version", raw, 256)
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
                if ids.segment_id_problem(cause) is not None:
                    problem(segment_id, f"cause {_text(cause, 40)!r} is not a 16-hex exception id")
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
        if raw is not None:
            if type(raw) is dict:
                if raw:
                    self.metadata(segment_id, raw, span)
            else:
                problem(segment_id, "metadata is not an object (kept in the raw document only)")
        raw = get("links")
        if raw is not None:
            if type(raw) is list:
                if raw:
                    span["links"] = self.links(segment_id, raw)
                    self.segment_links[id(doc)] = _safe_json(raw)
            else:
                problem(segment_id, f"links is {type(raw).__name__}, not a list (kept in the raw document only)")

        # ---- classification
        namespace = None
        raw = get("origin")
        if raw is not None:
            if type(raw) is not str or len(raw) > 256:
                raw = self.text_field(segment_id, "origin", raw, 256)
            doc["origin"] = span["span.attributes.aws@xray@origin"] = raw
            if raw == SFN_ORIGIN:
                self.sfn_seen = True
        raw = get("namespace")
        if raw is not None:
            if type(raw) is not str or len(raw) > 64:
                raw = self.text_field(segment_id, "namespace", raw, 64)
            doc["namespace"] = span["span.attributes.aws@xray@namespace"] = namespace = raw
            if raw == "aws":
                span["span.attributes.aws@service"] = name
            elif raw != "remote":  # name.go rejects the whole segment; xraylake keeps it, flagged
                problem(segment_id, f"unknown namespace {raw[:64]!r} (aws or remote); span kept as INTERNAL")
        raw = get("inferred")
        if raw is not None:
            flag = raw is True or _bool(raw)
            if type(raw) is not bool:
                self.not_boolean(segment_id, "inferred", raw, flag)
            if flag:
                doc["inferred"] = True
                span["span.attributes.aws@xray@inferred"] = "true"
        raw = get("traced")  # translator.go `addBool(seg.Traced, aws.xray.traced)`
        if raw is not None:
            flag = raw is True or _bool(raw)
            if type(raw) is not bool:
                self.not_boolean(segment_id, "traced", raw, flag)
            span["span.attributes.aws@xray@traced"] = "true" if flag else "false"
        raw = get("user")
        if raw is not None:
            doc["user"] = span["span.attributes.enduser@id"] = self.text_field(segment_id, "user", raw, 256)
        raw = get("resource_arn")
        if raw is not None:
            doc["resource_arn"] = self.text_field(segment_id, "resource_arn", raw, MAX_NAME)
        # name.go then translator.go: a subsegment with a known namespace is CLIENT, else SERVER when
        # it names a client_ip, else INTERNAL; a top-level segment is always SERVER.
        if not is_subsegment:
            span["kind"] = KIND_SERVER
        elif namespace in _CLIENT_NAMESPACES:
            span["kind"] = KIND_CLIENT
            self.calls.append((doc, span, node))
        elif client_ip is not None:
            span["kind"] = KIND_SERVER
        if http_status is not None and not 100 <= http_status < 399:  # StatusCodeFromHTTP
            span["status.code"] = STATUS_ERROR
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
            raw = exception.get("type")
            ex_type = raw if (type(raw) is str and len(raw) <= MAX_NAME) or raw is None else None
            if ex_type is None and raw is not None:
                ex_type = self.text_field(segment_id, "cause.exceptions[].type", raw, MAX_NAME)
            raw = exception.get("message")
            ex_message = raw if (type(raw) is str and len(raw) <= MAX_TEXT) or raw is None else None
            if ex_message is None and raw is not None:
                ex_message = self.text_field(segment_id, "cause.exceptions[].message", raw, MAX_TEXT)
            ex_id = exception.get("id")
            if type(ex_id) is str:
                self.exceptions[ex_id] = (ex_type, ex_message)
            elif ex_id is not None:
                self.problem(segment_id, f"cause.exceptions[].id {_text(ex_id, 40)!r} is not a string")
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
                odd: list[str] = []
                attributes["exception@stacktrace"] = exception_stacktrace(ex_type, ex_message, stack, odd)
                for reason in odd[:3]:
                    self.problem(segment_id, f"cause.exceptions[].{reason}")
            elif stack is not None and type(stack) is not list:
                self.problem(segment_id, f"cause.exceptions[].stack is {type(stack).__name__}, not a list")
            if ex_id is not None:
                attributes["aws@xray@exception@id"] = _text(ex_id, 64) or ""
            remote = exception.get("remote")
            if remote is not None:
                flag = remote is True or _bool(remote)
                if type(remote) is not bool:
                    self.not_boolean(segment_id, "cause.exceptions[].remote", remote, flag)
                attributes["aws@xray@exception@remote"] = "true" if flag else "false"
            # cause.go: truncated and skipped (frame counts), cause (the id of the exception's cause)
            for key in ("truncated", "skipped"):
                raw = exception.get(key)
                if raw is not None:
                    count = raw if type(raw) is int else _long(raw)
                    if type(raw) is not int:
                        self.problem(segment_id, f"cause.exceptions[].{key} {_text(raw, 40)!r} is not an integer")
                    if count is not None:
                        attributes["aws@xray@exception@" + key] = str(count)
            raw = exception.get("cause")
            if raw is not None:
                attributes["aws@xray@exception@cause"] = self.text_field(
                    segment_id, "cause.exceptions[].cause", raw, 64
                )
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

    def text_field(self, segment_id: str, field: str, value: Any, limit: int) -> str:
        """A string field that is not a string (or is longer than `limit`): coerced, and flagged
        when the type was wrong (the original stays in the lossless `document` column)."""
        if type(value) is not str:
            self.problem(segment_id, f"{field} is {type(value).__name__}, not a string; stored as text")
        return _text(value, limit) or ""

    def not_boolean(self, segment_id: str, field: str, value: Any, read_as: bool) -> None:
        self.problem(segment_id, f"{field} {_text(value, 40)!r} is not a boolean; read as {read_as}")

    def metadata(self, segment_id: str, raw: dict[str, Any], span: dict[str, Any]) -> None:
        """metadata.go: `aws.xray.metadata.<namespace>` = the namespace's object as JSON (Go's
        `json.Marshal`: compact, keys sorted, `<` `>` `&` escaped), capped at MAX_TEXT."""
        for count, (namespace, value) in enumerate(raw.items()):
            if count >= MAX_ANNOTATIONS:
                self.problem(segment_id, f"more than {MAX_ANNOTATIONS} metadata namespaces; the rest is not mapped")
                break
            if type(value) is not dict:  # the receiver rejects the segment (map[string]map[string]any)
                self.problem(segment_id, f"metadata {namespace[:64]!r} is {type(value).__name__}, not an object")
            text = go_json(value)
            if len(text) > MAX_TEXT:
                text = text[:MAX_TEXT]
            span["span.attributes.aws@xray@metadata@" + namespace.replace(".", "@")[:256]] = text

    def links(self, segment_id: str, raw: list[Any]) -> list[dict[str, Any]]:
        """Segment `links` ({trace_id, id, attributes}, tracesegment.go `SpanLinkData`) → span links
        as Data Prepper stores them (traceId, spanId, traceState, attributes, droppedAttributesCount)."""
        links: list[dict[str, Any]] = []
        for position, link in enumerate(raw[:MAX_ANNOTATIONS]):
            if type(link) is not dict:
                self.problem(segment_id, f"links[{position}] is {type(link).__name__}, not an object; skipped")
                continue
            trace_id, span_id = link.get("trace_id"), link.get("id")
            if type(trace_id) is not str or XRAY_TRACE_ID.fullmatch(trace_id) is None:
                self.problem(segment_id, f"links[{position}].trace_id {_text(trace_id, 60)!r} is not an X-Ray trace id")
            if type(span_id) is not str or ids.segment_id_problem(span_id) is not None:
                self.problem(segment_id, f"links[{position}].id {_text(span_id, 40)!r} is not a 16-hex segment id")
            attributes: dict[str, str] = {}
            raw_attributes = link.get("attributes")
            if type(raw_attributes) is dict:
                for key, value in list(raw_attributes.items())[:MAX_ANNOTATIONS]:
                    attributes[str(key).replace(".", "@")[:256]] = _text(value, MAX_NAME) or ""
            elif raw_attributes is not None:
                self.problem(segment_id, f"links[{position}].attributes is not an object")
            links.append(
                {
                    "traceId": otel_trace_id(_text(trace_id, MAX_NAME) or ""),
                    "spanId": otel_span_id(_text(span_id, MAX_NAME) or ""),
                    "traceState": "",
                    "attributes": attributes,
                    "droppedAttributesCount": 0,
                }
            )
        if len(raw) > MAX_ANNOTATIONS:
            self.problem(segment_id, f"more than {MAX_ANNOTATIONS} links; the rest is not mapped")
        return links

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
            # annotations.go: each annotation under its own key (Data Prepper writes `.` as `@`)
            span["span.attributes." + raw_key.replace(".", "@")[:256]] = text
            stored = typed[key]
            seen = merged.get(key)
            if seen is None:
                merged[key] = [stored]
            elif len(seen) < 32 and not any(type(v) is type(stored) and v == stored for v in seen):
                seen.append(stored)
        if strings:
            doc["annotations"] = strings
            # annotations.go: `aws.xray.annotations` lists every annotation key
            span["span.attributes.aws@xray@annotations"] = [k[:256] for k in list(raw)[:MAX_ANNOTATIONS]]
        if numbers:
            doc["annotations_num"] = numbers
        return typed or None

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

        missing_parent = independent = False
        for top in tops:
            if top.parent_id is not None:
                if top.parent_id not in ids:
                    missing_parent = True
                    self.problem(top.segment_id, f"parent {top.parent_id} is not in the trace")
                if top.is_subsegment:
                    independent = True
        if independent:
            self._adopt_independent_subsegments(nodes, tops)
        root = tops[0] if len(tops) == 1 else _choose_root(tops, ids)
        raw = trace.get("LimitExceeded")
        limit_exceeded = raw is True or (raw is not None and raw is not False and _bool(raw))
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
        # the (sub)segments holding the earliest start and the latest end: their `start` and `end`
        # are iso_ms of those times already
        start_doc: dict[str, Any] = {}
        end_doc: dict[str, Any] = {}
        timeless = []
        for doc, span, node_start, node_end, _, _, _ in nodes:
            if doc["status"] != "ok":
                has_fault = has_fault or doc["fault"]
                has_throttle = has_throttle or doc["throttle"]
                has_error = has_error or doc["error"]
            if doc["in_progress"]:
                in_progress = True
            if node_start is not None and (start_us is None or node_start < start_us):
                start_us, start_doc = node_start, doc
            if node_end is not None and (end_us is None or node_end > end_us):
                end_us, end_doc = node_end, doc
            span["traceGroup"] = group
            span["traceGroupFields.endTime"] = group_end
            span["traceGroupFields.durationInNanos"] = group_duration
            span["traceGroupFields.statusCode"] = group_status
            if span["startTime"] is None or doc["start"] is None:
                timeless.append((doc, span))
        if start_us is not None and end_us is not None and end_us < start_us:
            end_us = None
        status = "fault" if has_fault else "throttle" if has_throttle else "error" if has_error else "ok"

        # tracetime.anchor_second, from what this transform already knows: the id epoch (parsed
        # once, in `start`), the collection second, and the earliest start the walk saw (a second
        # walk only when a node was refused or a document failed half-way, and only when needed).
        anchor = self.id_epoch
        low, high = self.credible_window
        if anchor is None or not low <= anchor <= high:
            earliest = self.earliest_us if self.walked_all else tracetime.earliest_start_us(trace, self.documents)
            anchor = tracetime.anchor_without_credible_id(self.id_epoch, earliest, self.collected_at_s)
        dt, hour, day, hour_iso = tracetime.hour_spellings(anchor)
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

        spans = list(map(_SPAN_OF, nodes))
        calls = self.calls
        if calls:
            if nodes is not self.nodes:  # de-duplicated: only the kept copies' calls
                kept = {id(walked[0]) for walked in nodes}
                calls = [call for call in calls if id(call[0]) in kept]
            served = {top.parent_id for top in tops if top.parent_id is not None}
            span_template = self.context_span_template.copy()
            span_template["traceId"] = self.otel_trace_id
            spans += dependency_spans(ctx, span_template, calls, served)

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

        tops_services = [top for top in tops if not top.is_subsegment]
        trace_doc = self.trace_template.copy()  # every key, in document order (see _TRACE_KEYS)
        trace_doc["trace_id"] = self.trace_id
        trace_doc["partition_hour"] = hour_iso
        if start_us is not None:
            trace_doc["start"] = start_doc["start"] if measured_start is not None else iso_ms(start_us)
        if end_us is not None:
            trace_doc["end"] = end_doc["end"]
            if measured_start is not None:
                trace_doc["duration"] = (end_us - measured_start) / 1_000_000
        raw = trace.get("Duration")
        if raw is not None:
            trace_doc["xray_duration"] = _float(raw)
        if root is not None:
            trace_doc["root_segment_id"] = root.segment_id
        if root_doc is not None:
            trace_doc["root_service_name"] = root_doc["name"]
            trace_doc["root_service_type"] = root_doc["origin"]
        if status != "ok":  # the template says ok, and no error, fault or throttle
            trace_doc["status"] = status
            trace_doc["has_error"] = has_error
            trace_doc["has_fault"] = has_fault
            trace_doc["has_throttle"] = has_throttle
        if root_doc is not None:
            trace_doc["http_method"] = root_doc["http_method"]
            trace_doc["http_url"] = root_doc["http_url"]
            trace_doc["http_status"] = root_doc["http_status"]
        if len(tops_services) == 1:
            trace_doc["services"] = [tops_services[0].service]
            trace_doc["instrumentation"] = [tops_services[0].instrumentation]
        else:
            trace_doc["services"] = sorted({top.service for top in tops_services})
            trace_doc["instrumentation"] = sorted({top.instrumentation for top in tops_services})
        trace_doc["segment_count"] = len(nodes)
        if in_progress:  # the template's flags are False
            trace_doc["in_progress"] = True
        if limit_exceeded or missing_parent:
            trace_doc["partial"] = True
            trace_doc["limit_exceeded"] = limit_exceeded
        if annotations:
            trace_doc["annotations"] = annotations
        if annotations_num:
            trace_doc["annotations_num"] = annotations_num
        if self.sfn_seen or ctx.execution:
            trace_doc.update(self.step_functions(tops))
        trace_doc["problem_count"] = len(self.problems) + self.problem_overflow
        if self.problem_overflow:
            self.problems.append({"segment_id": None, "reason": f"{self.problem_overflow} more problems not listed"})

        # positional, in TraceDocuments' field order (16 keywords cost each trace ~1.4 µs)
        return TraceDocuments(
            self.trace_id,  # trace_id
            ctx.account_id,  # account_id
            ctx.region,  # region
            day,
            dt,
            hour,
            round(self.collected_at_s * 1000),  # version
            trace_doc,  # trace
            list(map(_SEGMENT_OF, nodes)),  # segments
            spans,
            service_map_relations(spans, group),  # service_map
            self.problems,  # problems
            list(map(_DOCUMENT_OF, nodes)),  # segment_documents
            [_safe_json(walked[6]) if walked[6] else None for walked in nodes] if typed else [None] * len(nodes),
            [self.segment_links.get(id(walked[0])) for walked in nodes] if self.segment_links else [],  # segment_links
            _safe_json(typed) if typed else None,  # trace_annotations
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
        """The Step Functions fields of the trace document (`finish` calls it only when there is a
        state machine segment or execution details: else they are the trace template's)."""
        machine = None
        machines = [top for top in tops if top.node is not None and top.node[0]["origin"] == SFN_ORIGIN]
        if machines:  # the earliest (a single sort of every top cost each trace ~1 µs)
            first = min(machines, key=_top_start)
            doc, _, start_us, end_us, _, _, _ = first.node  # type: ignore[misc]
            machine = StateMachineSegment(doc, first.sfn_arns, start_us, end_us)
        return step_functions_fields(machine, self.ctx.execution, self.policy, self.problem)


SOURCE_XRAY = "xray"
XRAY_SDK, OPENTELEMETRY, UNKNOWN = "xray-sdk", "opentelemetry", "unknown"


# (aws.xray.sdk, sdk_version) strings → sdk_instrumentation of them (few distinct; bounded)
_SDK_CACHE: dict[tuple[Any, Any], tuple[str, str | None]] = {}


def sdk_instrumentation(name: Any, version: Any = None) -> tuple[str, str | None]:
    """A segment's `aws.xray.sdk` (+ `sdk_version`) → (`xray-sdk` | `opentelemetry`, `<name> <version>`).

    X-Ray SDKs name themselves "X-Ray for Java" etc.; the OTel Collector's X-Ray exporter and ADOT
    write "opentelemetry for <language>"."""
    text = _text(name, 200)
    if not text:
        return UNKNOWN, None
    kind = OPENTELEMETRY if text.lower().startswith("opentelemetry") else XRAY_SDK
    shown = f"{text} {_text(version, 50)}" if version is not None and _text(version, 50) else text
    return kind, shown


def _top_start(top: _Top) -> tuple[bool, int]:
    start = top.node[2] if top.node is not None else None
    return (start is None, start or 0)


def _annotation_string(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    return value if type(value) is str else str(value)


def _choose_root(tops: list[_Top], ids: set[str]) -> _Top | None:
    """The segment without parent (earliest when several); else the earliest orphan (preferring
    a non-inferred one); else the earliest segment."""
    if len(tops) < 2:  # one top-level segment is the root whatever its parent
        return tops[0] if tops else None
    parentless = [top for top in tops if top.parent_id is None and not top.is_subsegment]
    if parentless:
        return min(parentless, key=_top_start)
    orphans = [top for top in tops if top.parent_id not in ids]
    real = [top for top in orphans if not top.is_subsegment and top.node is not None and not top.node[0]["inferred"]]
    if real:
        return min(real, key=_top_start)
    return min(orphans or tops, key=_top_start)


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
        match = XRAY_TRACE_ID.fullmatch(trace_id)
        if match is None:
            builder.problem(None, f"trace id {trace_id[:80]!r} is not 1-<8 hex>-<24 hex>")
        builder.start(trace_id, match, trace.get("Id"))
        if type(segments) is list:
            for index, wrapper in enumerate(segments):
                try:
                    builder.add_document(index, wrapper)
                except Exception as error:  # one segment never fails the trace
                    builder.walked_all = False
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
            "instrumentation": [],
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
