"""Transaction Search span records (`aws/spans`) → the same documents as the classic X-Ray path (pure).

A span-form trace (envelope `xraylake.spans.v1`) is `{"Id": <32 hex>, "Spans": [<log event
message>, …]}`. Each record is one OTel span as CloudWatch stores it (see
tests/fixtures/aws_spans/README.md): `traceId`, `spanId`, `parentSpanId`, `name`, `kind`,
`startTimeUnixNano`, `endTimeUnixNano`, `status{code,message}`, flat `attributes{}`,
`resource.attributes{}`, `scope{name,version}`, `events[]`, `links[]`.

How it maps (README "Span records → documents"):

- **Span documents** (Trace Analytics, `otel-v1-apm-span`): a direct copy of the record — every
  attribute under `span.attributes.*` and every resource attribute under `resource.attributes.*`
  (dots → `@`, values as keywords), events and links kept, the scope as `otel.scope.name/version` —
  plus the account's resource attributes and the trace group as the classic path sets them.
- **Trace and segment documents, Parquet rows, service map, Step Functions fields**: each record
  becomes the X-Ray segment document X-Ray would have produced from it (SERVER / LOCAL_ROOT /
  parentless spans are segments named after their service, the others subsegments nested under
  their parent; HTTP, AWS SDK, SQL, messaging, status, exception events, annotations listed in
  `aws.xray.annotations`, the SDK) and goes through `tasks.transform.transform_trace`, so both
  stores give the same fields by the same code.
- **Ids**: the trace id becomes `1-<8 hex>-<24 hex>` (the classic reads' form), a segment id is the
  span id, a span document id is `{account}:{traceId}{spanId}` — a trace read from X-Ray and from
  `aws/spans` (during a switch, or in two accounts' stores) converges on the same documents.

A malformed record (not JSON, not an object, missing or malformed ids, another trace's id, no
usable times, end before start) is rejected alone with a reason; the rest of the trace is mapped.
Every document of a span-form trace carries `source_store: "spans"`; its segments say whether an
X-Ray SDK (`aws.xray.sdk`, or a `telemetry.sdk.name` starting with "X-Ray") or OpenTelemetry
(`telemetry.sdk.*`) produced them (`instrumentation`, `sdk`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from tasks import coerce, tracetime
from tasks.coerce import MAX_NAME, MAX_TEXT
from tasks.dependencies import REMOTE_SERVICE
from tasks.otel import service_map_relations
from tasks.redact import RedactionPolicy
from tasks.trace_model import TraceContext, TraceDocuments
from tasks.transform import transform_trace

__all__ = [
    "AWS_ATTRIBUTES",
    "SOURCE_SPANS",
    "SpanTrace",
    "instrumentation_of",
    "parse_span_records",
    "transform_span_trace",
    "xray_trace_id",
]

SOURCE_SPANS = "spans"
_W3C_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_XRAY_TRACE_ID = re.compile(r"1-([0-9a-f]{8})-([0-9a-f]{24})")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_MIN_NS = tracetime.MIN_EPOCH * 1_000_000_000
_MAX_NS = tracetime.MAX_EPOCH * 1_000_000_000

# OTLP JSON spells kinds and status codes as enum names, short names or numbers.
_KIND = {
    "SERVER": "SPAN_KIND_SERVER",
    "CLIENT": "SPAN_KIND_CLIENT",
    "PRODUCER": "SPAN_KIND_PRODUCER",
    "CONSUMER": "SPAN_KIND_CONSUMER",
    "INTERNAL": "SPAN_KIND_INTERNAL",
    "UNSPECIFIED": "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
    0: "SPAN_KIND_UNSPECIFIED",
}
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2, 0: 0, 1: 1, 2: 2}
_SEGMENT_KINDS = frozenset({"SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
_OUTBOUND_KINDS = frozenset({"SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER"})

# cloud.platform → the X-Ray origin of a segment (as the X-Ray exporter of the OTel Collector sets it).
_ORIGIN_BY_PLATFORM = {
    "aws_ec2": "AWS::EC2::Instance",
    "aws_ecs": "AWS::ECS::Container",
    "aws_eks": "AWS::EKS::Container",
    "aws_elastic_beanstalk": "AWS::ElasticBeanstalk::Environment",
    "aws_lambda": "AWS::Lambda::Function",
    "aws_app_runner": "AWS::AppRunner::Service",
}

# X-Ray `aws` block keys ← the attributes that name the same thing (first present wins).
AWS_ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("operation", ("aws.operation", "rpc.method")),
    ("region", ("aws.region", "cloud.region")),
    ("account_id", ("aws.account_id",)),
    ("request_id", ("aws.request_id", "aws.requestId")),
    ("retries", ("aws.xray.retries",)),
    ("table_name", ("aws.table_name", "aws.table.name", "aws.dynamodb.table_names")),
    ("queue_url", ("aws.queue_url", "aws.queue.url", "aws.sqs.queue_url")),
    ("function_name", ("aws.lambda.function.name", "faas.invoked_name")),
    ("topic_arn", ("aws.sns.topic.arn",)),
    ("bucket_name", ("aws.s3.bucket",)),
    ("stream_name", ("aws.kinesis.stream.name", "aws.kinesis.stream_name")),
    ("state_machine_arn", ("aws.stepfunctions.state_machine.arn", "aws.state_machine_arn")),
    ("execution_arn", ("aws.stepfunctions.execution.arn", "aws.execution_arn")),
    ("secret_arn", ("aws.secretsmanager.secret.arn",)),
)
_URL_ATTRIBUTES = frozenset({"url.full", "http.url", "http.target", "db.connection_string"})


def xray_trace_id(trace_id: str) -> str | None:
    """`6b0e9e245e1c…` (32 hex) → `1-6b0e9e24-5e1c…`; an X-Ray id stays; anything else → None."""
    lowered = trace_id.lower()
    if _W3C_TRACE_ID.fullmatch(lowered):
        return f"1-{lowered[:8]}-{lowered[8:]}"
    if _XRAY_TRACE_ID.fullmatch(lowered):
        return lowered
    return None


def instrumentation_of(resource: dict[str, Any], attributes: dict[str, Any]) -> tuple[str, str | None]:
    """(`xray-sdk` | `opentelemetry` | `unknown`, the SDK as `<name> <version>`) of a span."""
    xray_sdk = attributes.get("aws.xray.sdk") or resource.get("aws.xray.sdk")
    name = resource.get("telemetry.sdk.name")
    if type(xray_sdk) is str and xray_sdk:
        version = resource.get("aws.xray.sdk_version") or attributes.get("aws.xray.sdk_version")
        kind = "opentelemetry" if xray_sdk.lower().startswith("opentelemetry") else "xray-sdk"
        return kind, _sdk_text(xray_sdk, version)
    if type(name) is str and name:
        version = resource.get("telemetry.sdk.version")
        if name.lower().startswith("x-ray"):
            return "xray-sdk", _sdk_text(name, version)
        language = resource.get("telemetry.sdk.language")
        shown = f"{name} {language}" if type(language) is str and language else name
        return "opentelemetry", _sdk_text(shown, version)
    return "unknown", None


def _sdk_text(name: str, version: Any) -> str:
    text = f"{name} {version}" if type(version) is str and version else name
    return text[:256]


@dataclass(slots=True)
class _Record:
    raw: str  # the log event's message, verbatim
    data: dict[str, Any]
    span_id: str
    parent_id: str | None
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    children: list[_Record] = field(default_factory=list)


@dataclass(slots=True)
class SpanTrace:
    """A span-form trace's usable records, and the ones refused (`{trace_id, span_id, reason}`)."""

    trace_id: str  # X-Ray form
    records: list[_Record]
    rejected: list[dict[str, str | None]]


def _enum(value: Any, prefix: str) -> Any:
    """An OTLP enum as a lookup key: `SPAN_KIND_SERVER`/`server` → `SERVER`, numbers stay; other
    JSON (objects, lists) → None (never an unhashable key)."""
    if type(value) is str:
        return value.upper().removeprefix(prefix)
    return value if type(value) is int else None


def _nanos(value: Any) -> int | None:
    if type(value) is str and value.isdigit():
        value = int(value)
    elif type(value) is float and value == value and _MIN_NS <= value < _MAX_NS:
        value = int(value)  # a JSON writer that spelled the integer as a float
    if type(value) is int and _MIN_NS <= value < _MAX_NS:
        return value
    return None


@dataclass(frozen=True, slots=True)
class _Checked:
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int


def _record_problem(record: Any, trace_id: str) -> str | _Checked:
    """A reason the record is refused, or (span id, parent id, start ns, end ns)."""
    if type(record) is not dict:
        return f"span record is JSON {type(record).__name__}, not an object"
    raw = record.get("traceId")
    if type(raw) is not str or not raw:
        return "span record has no traceId"
    if not _W3C_TRACE_ID.fullmatch(raw.lower()):
        return f"traceId {raw[:40]!r} is not 32 hex digits"
    if raw.lower() != trace_id:
        return f"traceId {raw[:40]!r} is not the trace's id {trace_id}"
    span_id = record.get("spanId")
    if type(span_id) is not str or not span_id:
        return "span record has no spanId"
    if not _SPAN_ID.fullmatch(span_id.lower()):
        return f"spanId {span_id[:40]!r} is not 16 hex digits"
    parent = record.get("parentSpanId")
    if parent not in (None, "") and (type(parent) is not str or not _SPAN_ID.fullmatch(parent.lower())):
        return f"parentSpanId {coerce.to_text(parent, 40)!r} is not 16 hex digits"
    start = _nanos(record.get("startTimeUnixNano"))
    if start is None:
        return f"startTimeUnixNano {coerce.to_text(record.get('startTimeUnixNano'), 40)!r} is not a usable time"
    end = _nanos(record.get("endTimeUnixNano"))
    if end is None:
        return f"endTimeUnixNano {coerce.to_text(record.get('endTimeUnixNano'), 40)!r} is not a usable time"
    if end < start:
        return "endTimeUnixNano is before startTimeUnixNano"
    return _Checked(span_id.lower(), parent.lower() if type(parent) is str and parent else None, start, end)


def parse_span_records(trace: dict[str, Any]) -> SpanTrace | str:
    """A span-form trace → its usable records, or the reason the whole trace is refused."""
    raw_id = trace.get("Id")
    xray_id = xray_trace_id(raw_id) if type(raw_id) is str else None
    if xray_id is None:
        return f"trace Id {coerce.to_text(raw_id, 80)!r} is neither 32 hex digits nor 1-<8 hex>-<24 hex>"
    w3c_id = xray_id[2:10] + xray_id[11:]
    records: list[_Record] = []
    rejected: list[dict[str, str | None]] = []
    seen: set[str] = set()
    spans = trace.get("Spans")
    for index, message in enumerate(spans if type(spans) is list else []):
        try:
            data = orjson.loads(message) if type(message) is str else message
        except orjson.JSONDecodeError as error:
            rejected.append({"trace_id": xray_id, "span_id": None, "reason": f"Spans[{index}] is not JSON ({error})"})
            continue
        found = _record_problem(data, w3c_id)
        if isinstance(found, str):
            span_id = data.get("spanId") if type(data) is dict else None
            rejected.append(
                {
                    "trace_id": xray_id,
                    "span_id": span_id[:40] if type(span_id) is str else None,
                    "reason": f"Spans[{index}]: {found}",
                }
            )
            continue
        span_id = found.span_id
        if span_id in seen:
            rejected.append(
                {"trace_id": xray_id, "span_id": span_id, "reason": f"Spans[{index}]: duplicate spanId, first kept"}
            )
            continue
        seen.add(span_id)
        attributes = data.get("attributes")
        resource = data.get("resource")
        resource = resource.get("attributes") if type(resource) is dict else None
        kind = data.get("kind")
        records.append(
            _Record(
                raw=message if type(message) is str else coerce.safe_json(message),
                data=data,
                span_id=span_id,
                parent_id=found.parent_id,
                kind=_KIND.get(_enum(kind, "SPAN_KIND_")) or "SPAN_KIND_UNSPECIFIED",
                start_ns=found.start_ns,
                end_ns=found.end_ns,
                attributes=attributes if type(attributes) is dict else {},
                resource=resource if type(resource) is dict else {},
            )
        )
    return SpanTrace(xray_id, records, rejected)


# ====================================================================== record → X-Ray document


def _first(attributes: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "" and value != []:
            return value[0] if type(value) is list else value
    return None


def _int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if type(value) is str and value.isdigit():
        return int(value)
    return None


def _service(record: _Record) -> str:
    for source, key in (
        (record.attributes, "aws.local.service"),
        (record.resource, "aws.local.service"),
        (record.resource, "service.name"),
    ):
        value = source.get(key)
        if type(value) is str and value:
            return value[:MAX_NAME]
    return "unknown_service"


def _is_segment(record: _Record) -> bool:
    """SERVER, CONSUMER, LOCAL_ROOT and parentless spans are X-Ray segments; the rest subsegments."""
    return (
        record.parent_id is None
        or record.kind in _SEGMENT_KINDS
        or record.attributes.get("aws.span.kind") == "LOCAL_ROOT"
    )


def _http(attributes: dict[str, Any]) -> dict[str, Any] | None:
    get = attributes.get
    request: dict[str, Any] = {}
    method = get("http.request.method") or get("http.method")
    if method is not None:
        request["method"] = method
    url = get("url.full") or get("http.url")
    if url is None:
        path = get("url.path") or get("http.target")
        if path is not None:
            host = get("server.address") or get("http.host")
            scheme = get("url.scheme") or get("http.scheme") or "http"
            url = f"{scheme}://{host}{path}" if host else str(path)
            query = get("url.query")
            if query:
                url += f"?{query}"
    if url is not None:
        request["url"] = url
    client_ip = get("client.address") or get("http.client_ip")
    if client_ip is not None:
        request["client_ip"] = client_ip
    agent = get("user_agent.original") or get("http.user_agent")
    if agent is not None:
        request["user_agent"] = agent
    response: dict[str, Any] = {}
    status = _int(get("http.response.status_code") or get("http.status_code"))
    if status is not None:
        response["status"] = status
    length = _int(get("http.response.body.size") or get("http.response_content_length"))
    if length is not None:
        response["content_length"] = length
    if not request and not response:
        return None
    http: dict[str, Any] = {}
    if request:
        http["request"] = request
    if response:
        http["response"] = response
    return http


def _sql(attributes: dict[str, Any]) -> dict[str, Any] | None:
    system = attributes.get("db.system")
    if system is None:
        return None
    sql: dict[str, Any] = {"database_type": system}
    url = attributes.get("db.connection_string")
    name = attributes.get("db.name") or attributes.get("db.namespace")
    if url is None:
        host = attributes.get("server.address") or attributes.get("net.peer.name")
        port = attributes.get("server.port") or attributes.get("net.peer.port")
        if host is not None:
            url = f"{system}://{host}:{port}" if port is not None else f"{system}://{host}"
    if url is not None:
        sql["url"] = f"{url}/{name}" if name is not None else url
    for key, names in (
        ("user", ("db.user",)),
        ("sanitized_query", ("db.statement", "db.query.text")),
        ("database_version", ("db.version",)),
    ):
        value = _first(attributes, names)
        if value is not None:
            sql[key] = value
    return sql


def _document(record: _Record, trace_id: str, is_top: bool, service: str) -> dict[str, Any]:
    """The X-Ray segment (or subsegment) document X-Ray would have made of this span."""
    attributes = record.attributes
    get = attributes.get
    doc: dict[str, Any] = {
        "id": record.span_id,
        "trace_id": trace_id,
        "name": service if is_top else (record.data.get("name") or "unknown"),
        "start_time": (record.start_ns // 1000) / 1_000_000,
        "end_time": (record.end_ns // 1000) / 1_000_000,
    }
    if record.parent_id is not None:
        doc["parent_id"] = record.parent_id
    http = _http(attributes)
    if http is not None:
        doc["http"] = http

    aws: dict[str, Any] = {}
    for key, names in AWS_ATTRIBUTES:
        value = _first(attributes, names)
        if value is not None:
            aws[key] = value
    remote = get("aws.remote.service")
    is_aws_call = get("rpc.system") == "aws-api" or (type(remote) is str and remote.startswith("AWS::"))
    if "operation" not in aws and is_aws_call and get("aws.remote.operation") is not None:
        aws["operation"] = get("aws.remote.operation")
    if not is_aws_call and "operation" in aws and "aws.operation" not in attributes:
        del aws["operation"]  # rpc.method of a non-AWS RPC is no AWS operation
    if is_top:
        kind, _ = instrumentation_of(record.resource, attributes)
        sdk = get("aws.xray.sdk") or record.resource.get("aws.xray.sdk") or record.resource.get("telemetry.sdk.name")
        if sdk is not None:
            if kind == "opentelemetry" and not str(sdk).lower().startswith("opentelemetry for"):
                language = record.resource.get("telemetry.sdk.language")
                sdk = f"opentelemetry for {language}" if language else "opentelemetry"
            version = (
                get("aws.xray.sdk_version")
                or record.resource.get("aws.xray.sdk_version")
                or record.resource.get("telemetry.sdk.version")
            )
            xray = {"sdk": sdk}
            if version is not None:
                xray["sdk_version"] = version
            aws["xray"] = xray
    if aws:
        doc["aws"] = aws
    sql = _sql(attributes)
    if sql is not None:
        doc["sql"] = sql

    status = record.data.get("status")
    code = status.get("code") if type(status) is dict else None
    code = _STATUS.get(_enum(code, "STATUS_CODE_"), 0)
    if code == 2:
        http_status = http.get("response", {}).get("status") if http is not None else None
        if http_status is None or http_status < 400:
            doc["fault"] = True  # an error without an HTTP status: X-Ray's exporter calls it a fault
    exceptions = []
    events = record.data.get("events")
    for event in events if type(events) is list else ():
        if type(event) is dict and event.get("name") == "exception":
            event_attributes = event.get("attributes")
            if type(event_attributes) is dict:
                exception = {}
                for key in ("type", "message"):
                    value = event_attributes.get(f"exception.{key}")
                    if value is not None:
                        exception[key] = value
                exceptions.append(exception)
    if exceptions:
        doc["cause"] = {"exceptions": exceptions}

    listed = get("aws.xray.annotations")
    if type(listed) is list and listed:
        annotations = {key: get(key) for key in listed if type(key) is str and get(key) is not None}
        if annotations:
            doc["annotations"] = annotations

    namespace = get("aws.xray.namespace")
    if namespace is None and not is_top and record.kind in _OUTBOUND_KINDS:
        namespace = "aws" if is_aws_call else "remote"
    if namespace is not None:
        doc["namespace"] = namespace
    if namespace == "aws" and not is_top:  # the service its dependency node is named after
        called = remote[5:] if type(remote) is str and remote.startswith("AWS::") else get("rpc.service")
        if type(called) is str and called:
            doc[REMOTE_SERVICE] = called
    origin = get("aws.xray.origin")
    if origin is None and is_top:  # the resource's origin is its segment's, not its subsegments'
        origin = record.resource.get("aws.xray.origin") or _ORIGIN_BY_PLATFORM.get(
            record.resource.get("cloud.platform")  # type: ignore[arg-type]
        )
    if origin is not None:
        doc["origin"] = origin
    resource_arn = get("aws.xray.resource_arn")
    if resource_arn is None and is_top:
        resource_arn = (
            record.resource.get("aws.xray.resource_arn")
            or get("cloud.resource_id")
            or record.resource.get("cloud.resource_id")
        )
    if resource_arn is not None:
        doc["resource_arn"] = resource_arn
    if str(get("aws.xray.inprogress")).lower() == "true":
        doc["in_progress"] = True
    if str(get("aws.xray.inferred")).lower() == "true":
        doc["inferred"] = True
    user = get("enduser.id") or get("aws.xray.user")
    if user is not None:
        doc["user"] = user
    return doc


def _segments(parsed: SpanTrace) -> list[dict[str, Any]]:
    """X-Ray `Segments` of the trace (documents as objects, subsegments nested in their parents)."""
    by_id = {record.span_id: record for record in parsed.records}
    tops = [record for record in parsed.records if _is_segment(record)]
    for record in parsed.records:
        if record.parent_id is not None and not _is_segment(record):
            parent = by_id.get(record.parent_id)
            if parent is not None:
                parent.children.append(record)
    placed: set[str] = set()
    segments: list[dict[str, Any]] = []

    def nest(record: _Record, service: str, is_top: bool, depth: int) -> dict[str, Any]:
        placed.add(record.span_id)
        doc = _document(record, parsed.trace_id, is_top, service)
        if depth:  # nested: the parent is the enclosing document, as in X-Ray
            doc.pop("parent_id", None)
        children = [child for child in record.children if child.span_id not in placed]
        if children and depth < tracetime.MAX_DEPTH:
            doc["subsegments"] = [nest(child, service, False, depth + 1) for child in children]
        return doc

    for record in tops:
        service = _service(record)
        segments.append({"Id": record.span_id, "Document": nest(record, service, True, 0)})
    for record in parsed.records:  # subsegments whose parent is missing, or in a cycle
        if record.span_id not in placed:
            doc = nest(record, _service(record), False, 0)
            doc["type"] = "subsegment"
            segments.append({"Id": record.span_id, "Document": doc})
    return segments


# ====================================================================== span documents


def _keyword(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT]
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return str(value)
    if kind is list and all(type(v) in (str, int, float, bool) for v in value):
        return [_keyword(v) for v in value]
    return coerce.safe_json(value)[:MAX_TEXT]


_FLAT_KEYS: dict[tuple[str, str], str] = {}  # (prefix, attribute) → document key; bounded


def _flat(prefix: str, attributes: Any, policy: RedactionPolicy) -> dict[str, Any]:
    """Attributes → flat document keys (dots → `@`), values as keywords; denied keys masked, URL
    query values redacted (as the classic path does)."""
    if type(attributes) is not dict:
        return {}
    denied = policy.key_denied
    names = _FLAT_KEYS
    flat = {}
    for key, value in attributes.items():
        if value is None:
            continue
        name = names.get((prefix, key))
        if name is None:
            name = prefix + key.replace(".", "@")
            if len(names) > 65536:
                names.clear()
            names[(prefix, key)] = name
        if denied(key):
            value = policy.replacement
        elif type(value) is str:
            if key in _URL_ATTRIBUTES and ("?" in value or "@" in value or "#" in value):
                value = policy.redact_url(value)
            elif key == "url.query":
                value = policy.redact_url(f"?{value}")[1:]
            flat[name] = value if len(value) <= MAX_TEXT else value[:MAX_TEXT]
            continue
        flat[name] = _keyword(value)
    return flat


def _iso_nanos(ns: int) -> str:
    return "%s.%09dZ" % (coerce.iso_second(ns // 1_000_000_000), ns % 1_000_000_000)  # noqa: UP031


def _span_document(
    record: _Record, classic: dict[str, Any], context: dict[str, Any], policy: RedactionPolicy
) -> dict[str, Any]:
    data = record.data
    status = data.get("status")
    code = status.get("code") if type(status) is dict else None
    message = status.get("message") if type(status) is dict else None
    events = []
    for event in data.get("events") or ():
        if type(event) is dict:
            moment = _nanos(event.get("timeUnixNano"))
            events.append(
                {
                    "name": coerce.to_text(event.get("name"), 256),
                    "time": _iso_nanos(moment) if moment is not None else _iso_nanos(record.start_ns),
                    "attributes": {
                        k.removeprefix("e."): v for k, v in _flat("e.", event.get("attributes"), policy).items()
                    },
                    "droppedAttributesCount": _int(event.get("droppedAttributesCount")) or 0,
                }
            )
    links = []
    for link in data.get("links") or ():
        if type(link) is dict:
            links.append(
                {
                    "traceId": coerce.to_text(link.get("traceId"), 64),
                    "spanId": coerce.to_text(link.get("spanId"), 32),
                    "traceState": coerce.to_text(link.get("traceState"), 1024) or "",
                    "attributes": {
                        k.removeprefix("l."): v for k, v in _flat("l.", link.get("attributes"), policy).items()
                    },
                    "droppedAttributesCount": _int(link.get("droppedAttributesCount")) or 0,
                }
            )
    scope = data.get("scope")
    span = {
        "traceId": record.data["traceId"].lower(),
        "spanId": record.span_id,
        "traceState": coerce.to_text(data.get("traceState"), 1024) or "",
        "parentSpanId": record.parent_id or "",
        "name": coerce.to_text(data.get("name"), MAX_NAME) or "",
        "kind": record.kind,
        "startTime": _iso_nanos(record.start_ns),
        "endTime": _iso_nanos(record.end_ns),
        "durationInNanos": record.end_ns - record.start_ns,
        "serviceName": classic.get("serviceName") or _service(record),
        "events": events,
        "links": links,
        "droppedAttributesCount": _int(data.get("droppedAttributesCount")) or 0,
        "droppedEventsCount": _int(data.get("droppedEventsCount")) or 0,
        "droppedLinksCount": _int(data.get("droppedLinksCount")) or 0,
        "traceGroup": classic.get("traceGroup"),
        "traceGroupFields.endTime": classic.get("traceGroupFields.endTime"),
        "traceGroupFields.durationInNanos": classic.get("traceGroupFields.durationInNanos"),
        "traceGroupFields.statusCode": classic.get("traceGroupFields.statusCode"),
        "status.code": _STATUS.get(_enum(code, "STATUS_CODE_"), 0),
    }
    if message:
        span["status.message"] = coerce.to_text(message, MAX_NAME)
    if type(scope) is dict:  # the OTel names for the scope outside OTLP (otel.scope.*)
        if scope.get("name"):
            span["span.attributes.otel@scope@name"] = coerce.to_text(scope.get("name"), 256)
        if scope.get("version"):
            span["span.attributes.otel@scope@version"] = coerce.to_text(scope.get("version"), 256)
    span.update(context)
    span.update(_flat("resource.attributes.", record.resource, policy))
    span.update(_flat("span.attributes.", record.attributes, policy))
    return span


# ====================================================================== entry point

_DEFAULT_POLICY = RedactionPolicy()  # one instance: its key matcher memoises


def transform_span_trace(
    parsed: SpanTrace, ctx: TraceContext, redaction: RedactionPolicy | None = None
) -> TraceDocuments:
    """Usable span records of one trace → its documents (the module docstring). Never raises."""
    policy = redaction if redaction is not None else _DEFAULT_POLICY
    segments = _segments(parsed)
    result = transform_trace({"Id": parsed.trace_id, "Segments": segments}, ctx, policy)
    by_span = {span["spanId"]: span for span in result.spans}
    context = {
        "resource.attributes.cloud@provider": "aws",
        "resource.attributes.cloud@region": ctx.region,
        "resource.attributes.cloud@account@id": ctx.account_id,
        "resource.attributes.deployment@environment": ctx.environment,
        "resource.attributes.xraylake@account@name": ctx.account_name,
    }
    spans = [
        _span_document(record, by_span.get(record.span_id, {}), context, policy)
        for record in parsed.records
        if record.span_id in by_span
    ]
    # the dependency nodes the transform inferred for calls with no SERVER span below them
    recorded = {record.span_id for record in parsed.records}
    spans += [span for span in result.spans if span["spanId"] not in recorded]
    raw_by_id = {record.span_id: record.raw for record in parsed.records}
    result.spans = spans
    result.service_map = service_map_relations(spans, result.trace.get("root_service_name"))
    result.segment_documents = [raw_by_id.get(segment["segment_id"]) for segment in result.segments]
    result.trace["source_store"] = SOURCE_SPANS
    for segment in result.segments:
        segment["source_store"] = SOURCE_SPANS
    return result
