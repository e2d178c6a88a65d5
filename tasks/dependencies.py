"""Dependency nodes like X-Ray's (pure): for raw segment documents, the downstream node X-Ray would
infer from a CLIENT subsegment (namespace `aws` or `remote`), as an inferred SERVER span.

BatchGetTraces returns, beside the segments an application sent, *inferred* segments (`"inferred":
true`, `parent_id` = the calling subsegment) for downstream resources that send no segments
themselves: a DynamoDB table (`name: DynamoDB`, `origin: AWS::DynamoDB::Table`), an SNS topic, a
remote HTTP host. Raw documents (import, Transaction Search span records) carry no such segment, so
their service map would show a caller with no edge. Here each such call becomes the node X-Ray draws:

- `namespace: aws` → named like the subsegment (`DynamoDB`, `S3`, `SQS`, …; the Go SDK's
  `dynamodb` → `DynamoDB`), as X-Ray names its inferred segment; typed `AWS::DynamoDB::Table`,
  `AWS::S3::Bucket`, `AWS::SQS::Queue`, … (`AWS::<name>` for other services). A document made of
  an OTel span (`tasks.spans`) names the service under `REMOTE_SERVICE` (from `aws.remote.service`
  or `rpc.service`), since its span name is `DynamoDB.GetItem` or `orders-queue send`;
- `namespace: remote` with `sql` → `<database>@<host>` from `sql.url` (the SDKs' own subsegment
  name), else the subsegment name; typed `Database::SQL`;
- `namespace: remote` with `http.request.url` → the URL's host; typed `remote`;
- `namespace: remote`, neither → the subsegment name; typed `remote`.

The node is a SERVER span, child of the call span, with the call's times and status, the call's
`http.*`, `aws.*` and `db.*` attributes, `aws.xray.inferred` and the node type — the shape Trace
Analytics' service map understands (Data Prepper draws an edge for every parent → child span pair
crossing services). A call that already has a segment below it (X-Ray's inferred segment, or the
downstream service's own segment, e.g. a Lambda function) gets no node: nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from tasks.coerce import digest_hex
from tasks.otel import resource_attributes, split_sql_url
from tasks.trace_model import TraceContext

__all__ = ["AWS_NODE_TYPES", "REMOTE_SERVICE", "dependency_node", "dependency_spans", "inferred_span_id"]

# X-Ray's type of the inferred node per AWS service (the subsegment name the SDKs use).
AWS_NODE_TYPES = {
    "DynamoDB": "AWS::DynamoDB::Table",
    "S3": "AWS::S3::Bucket",
    "SQS": "AWS::SQS::Queue",
    "SNS": "AWS::SNS",
    "Lambda": "AWS::Lambda",
    "Kinesis": "AWS::Kinesis::Stream",
    "StepFunctions": "AWS::StepFunctions::StateMachine",
    "SFN": "AWS::StepFunctions::StateMachine",
    "SecretsManager": "AWS::SecretsManager",
    "KMS": "AWS::KMS",
    "STS": "AWS::STS",
    "EventBridge": "AWS::Events",
}

_CANONICAL = {name.lower(): name for name in AWS_NODE_TYPES}
# Key of an X-Ray document made of an OTel span that names the AWS service it called.
REMOTE_SERVICE = "xraylake_remote_service"

# The call's attributes the node repeats (what X-Ray copies into its inferred segment).
_COPIED_PREFIXES = ("span.attributes.http@", "span.attributes.aws@", "span.attributes.db@")
_NOT_COPIED_PREFIX = "span.attributes.aws@xray@"
_MAX_NAME = 1024
# Span fields seen so far that the node repeats, and that it does not (the prefix test, cached:
# a call span has ~40 fields, most of them the same in every trace; bounded, annotations are keys)
_COPIED: set[str] = set()
_NOT_COPIED: set[str] = set()


def _copied(field: str) -> bool:
    copied = field.startswith(_COPIED_PREFIXES) and not field.startswith(_NOT_COPIED_PREFIX)
    known = _COPIED if copied else _NOT_COPIED
    if len(known) >= 4096:
        known.clear()
    known.add(field)
    return copied


# (account, account name, environment, region, node name, node type) → the node's resource
# attributes (what `resource_attributes` reads of the context; read-only once built; bounded)
_RESOURCES: dict[tuple[str, str, str, str, str, str], dict[str, Any]] = {}


def dependency_node(call: dict[str, Any], node: dict[str, Any]) -> tuple[str, str] | None:
    """(node name, node type) X-Ray would infer for a CLIENT subsegment, or None."""
    namespace = call.get("namespace")
    name = call.get("name") or ""
    if namespace == "aws":
        service = node.get(REMOTE_SERVICE)
        if type(service) is str and service:
            name = service[:_MAX_NAME]
        canonical = _CANONICAL.get(name.lower().replace(" ", ""))
        if canonical is not None:  # `dynamodb` (Go SDK) → `DynamoDB`, the name X-Ray draws
            return canonical, AWS_NODE_TYPES[canonical]
        return name, f"AWS::{name}"
    if namespace != "remote":
        return None
    sql_url = call.get("sql_url")
    if sql_url is not None or type(node.get("sql")) is dict:
        if sql_url:
            connection, database = split_sql_url(sql_url)
            at = connection.find("//")  # `jdbc:postgresql://host:5432` → `//host:5432`
            host = _host(connection[at:]) if at != -1 else None
            if database and host:
                return f"{database}@{host}"[:_MAX_NAME], "Database::SQL"
        return name, "Database::SQL"
    url = call.get("http_url")
    if url:
        host = _host(url)
        if host:
            return host[:_MAX_NAME], "remote"
    return name, "remote"


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def inferred_span_id(call_segment_id: str) -> str:
    """A stable span id for the node inferred below one call (re-collections produce the same)."""
    return digest_hex(f"inferred:{call_segment_id}", 8)


def dependency_spans(
    ctx: TraceContext,
    template: dict[str, Any],
    calls: Iterable[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]],
    served: set[str],
) -> list[dict[str, Any]]:
    """The inferred SERVER spans for `calls` ((segment doc, span doc, original node) of each CLIENT
    subsegment) whose segment id is not in `served` (the parent ids of the trace's segments)."""
    spans: list[dict[str, Any]] = []
    for doc, call_span, node in calls:
        if doc["segment_id"] in served:
            continue
        found = dependency_node(doc, node)
        if found is None or not found[0]:
            continue
        name, node_type = found
        cache_key = (ctx.account_id, ctx.account_name, ctx.environment, ctx.region, name, node_type)
        resource = _RESOURCES.get(cache_key)
        if resource is None:
            aws: dict[str, Any] | None = {} if node_type.startswith("AWS::") else None
            if len(_RESOURCES) >= 4096:
                _RESOURCES.clear()
            resource = _RESOURCES[cache_key] = resource_attributes(ctx, {"origin": node_type}, name, aws, None)
        span = {**template, **resource}
        for field, value in call_span.items():
            if field in _COPIED or (field not in _NOT_COPIED and _copied(field)):
                span[field] = value
        # what span.update({...}) of these would do, key by key (new keys in this order)
        span["spanId"] = inferred_span_id(doc["segment_id"])
        span["parentSpanId"] = call_span["spanId"]
        span["name"] = span["serviceName"] = name
        span["kind"] = "SPAN_KIND_SERVER"
        span["startTime"] = call_span["startTime"]
        span["endTime"] = call_span["endTime"]
        span["durationInNanos"] = call_span["durationInNanos"]
        span["events"] = []
        span["links"] = []
        span["status.code"] = call_span["status.code"]
        span["traceGroup"] = call_span["traceGroup"]
        span["traceGroupFields.endTime"] = call_span["traceGroupFields.endTime"]
        span["traceGroupFields.durationInNanos"] = call_span["traceGroupFields.durationInNanos"]
        span["traceGroupFields.statusCode"] = call_span["traceGroupFields.statusCode"]
        span["span.attributes.aws@xray@inferred"] = "true"
        span["span.attributes.aws@xray@origin"] = node_type
        if "status.message" in call_span:
            span["status.message"] = call_span["status.message"]
        if "span.attributes.aws@xray@status" in call_span:
            span["span.attributes.aws@xray@status"] = call_span["span.attributes.aws@xray@status"]
        spans.append(span)
    return spans
