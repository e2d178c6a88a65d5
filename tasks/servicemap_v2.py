"""`otel-v2-apm-service-map` documents from one trace's standard spans (pure).

What Data Prepper's `otel_apm_service_map` processor emits (`NodeOperationDetail`, read in
opensearch-project/data-prepper, `data-prepper-plugins/otel-apm-service-map-processor`):

- an edge per CLIENT span whose child is a SERVER span: `sourceNode` = the client's service,
  `targetNode` = the server's service (both `type: "service"`, `keyAttributes` {environment,
  name}, `groupByAttributes`), `sourceOperation` = the operation of the SERVER span of the
  client's own service it descends from (the nearest; none when there is none — Data Prepper
  takes whichever of several it decorates last, the same name for X-Ray's Lambda pair),
  `targetOperation` = the server's operation;
- a node per SERVER span with no CLIENT descendant in its own service (`targetNode` absent);
- `nodeConnectionHash` = Java `Objects.hash(sourceNode, targetNode)` and
  `operationConnectionHash` = `Objects.hash(sourceNode, targetNode, sourceOp, targetOp)` (absent
  when both operation names are), rendered with `String.valueOf` — computed here with Java's
  hash codes, so the values equal Data Prepper's;
- operation names by `OTelSpanDerivationUtil.computeOperationName` (`GET /first-path-section`
  for HTTP spans named after their method, else the span name); environments by
  `computeEnvironment` (AWS platform, then `deployment.environment[.name]`, else
  `generic:default`).

Where xraylake differs, on purpose:

- **Typed dependency nodes.** Data Prepper drops a CLIENT span without a SERVER child (its remote
  service is "unknown"); X-Ray traces are full of them (AWS SDK calls, SQL, HTTP to hosts outside
  the trace). They become target nodes typed `aws_resource` (`AWS::DynamoDB`, operation the AWS
  operation — Data Prepper's own naming for `rpc.system=aws-api`), `database` (`db.system`,
  operation the statement's first word) or `remote_host` (`host:port`, operation `METHOD /path`).
  A SERVER span the transform infers for such a call (`aws.xray.inferred`) stands for the same
  resource: the edge gets the same typed node (never a `service` node, never a source node).
- **Span time.** `timestamp` is the span's end time truncated to `granularity_seconds` (Data
  Prepper's `metric_timestamp_source: span_end_time` with `metric_timestamp_granularity:
  minutes`), never arrival time: a backfill draws the map of its own time range. Documents are
  deduplicated per trace and given an id derived from their content, so the same edge in the same
  minute is one document however often it is written (the consumer writes it once per run:
  `tasks.consumer`).

How many documents that makes, against Data Prepper (`OTelApmServiceMapProcessorConfig`,
`processCurrentWindowSpans`): by default it evaluates a `window_duration` of 60 s, keeps one
`NodeOperationDetail` per distinct edge, operations and timestamp in that window (a HashSet) and
stamps each with the evaluation's arrival time truncated to seconds, so it writes one document per
edge and operation pair per minute of processing; its span-time stamps are truncated to seconds
(default) or minutes, never coarser. One document per edge and minute of span time is therefore
as coarse as Data Prepper gets while keeping span time, and per window we write what it writes:
one document per edge and operation pair (never per span), and a leaf node only for a SERVER span
with no CLIENT among its same-service descendants — nested SERVER spans included, as its
breadth-first `findClientDescendantsForServerThreeWindow` walks them (an X-Ray Lambda service
segment over its function segment is no leaf when the function calls anything). On B2's backlog
(11,401 segments of 4 accounts over 3 hours, ~1.4 traces per account per minute, each document
once per consumer run) that is 2,606 documents, 0.23 per segment (3,406 = 0.30 while the Lambda
service segments were leaves too), against 90 (0.008) for the legacy map; five-minute buckets
would be 0.11, hourly ones 0.012.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = [
    "GENERIC_ENVIRONMENT",
    "document_id",
    "environment",
    "java_hash",
    "node_operation_detail",
    "operation_name",
    "service_map_v2",
]

GENERIC_ENVIRONMENT = "generic:default"
SERVER, CLIENT = "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"

# ------------------------------------------------------------------ Java hash codes


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


@functools.lru_cache(maxsize=16384)  # service, environment and operation names repeat across traces
def _string_hash(text: str) -> int:
    """`String.hashCode()`: over UTF-16 code units."""
    h = 0
    data = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return _int32(h)


def java_hash(value: Any) -> int:
    """Java's `hashCode` of what the processor's model classes hold: null → 0, String, Map
    (sum of `key ^ value`), and a tuple for `Objects.hash(a, b, …)` (= `Arrays.hashCode`)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return _string_hash(value)
    if isinstance(value, Mapping):
        return _int32(sum(java_hash(k) ^ java_hash(v) for k, v in value.items()))
    if isinstance(value, tuple):
        h = 1
        for item in value:
            h = (31 * h + java_hash(item)) & 0xFFFFFFFF
        return _int32(h)
    raise TypeError(f"no Java hash for {type(value).__name__}")


def _node_hash(node: dict[str, Any] | None) -> int:
    """`Node.hashCode()` = Objects.hash(type, keyAttributes, groupByAttributes), with
    `KeyAttributes.hashCode()` = Objects.hash(environment, name)."""
    if node is None:
        return 0
    keys = node["keyAttributes"]
    key_hash = java_hash((keys.get("environment"), keys.get("name")))
    h = 1
    for part in (java_hash(node["type"]), key_hash, java_hash(node.get("groupByAttributes") or {})):
        h = (31 * h + part) & 0xFFFFFFFF
    return _int32(h)


def _objects_hash(*hashes: int) -> int:
    h = 1
    for part in hashes:
        h = (31 * h + part) & 0xFFFFFFFF
    return _int32(h)


def node_operation_detail(
    source: dict[str, Any],
    target: dict[str, Any] | None,
    source_operation: str | None,
    target_operation: str | None,
    timestamp: str,
) -> dict[str, Any]:
    """One `NodeOperationDetail` as Jackson serialises it (`NON_NULL`: absent fields omitted)."""
    doc: dict[str, Any] = {"sourceNode": source}
    if target is not None:
        doc["targetNode"] = target
    if source_operation is not None:
        doc["sourceOperation"] = {"name": source_operation, "attributes": {}}
    if target_operation is not None:
        doc["targetOperation"] = {"name": target_operation, "attributes": {}}
    source_hash, target_hash = _node_hash(source), _node_hash(target)
    doc["nodeConnectionHash"] = str(_objects_hash(source_hash, target_hash))
    if source_operation is not None or target_operation is not None:
        doc["operationConnectionHash"] = str(
            _objects_hash(source_hash, target_hash, java_hash(source_operation), java_hash(target_operation))
        )
    doc["timestamp"] = timestamp
    return doc


# ------------------------------------------------------------------ derivations

_PLATFORM_ENVIRONMENTS = {
    "aws_ec2": "ec2:default",
    "aws_eks": "eks:default",
    "aws_elastic_beanstalk": "elastic-beanstalk:default",
    "aws_lambda": "lambda:default",
}
# X-Ray segment origin → the OTel `cloud.platform` the awsxrayreceiver sets for it
_ORIGIN_PLATFORMS = {
    "AWS::EC2::Instance": "aws_ec2",
    "AWS::ECS::Container": "aws_ecs",
    "AWS::EKS::Container": "aws_eks",
    "AWS::ElasticBeanstalk::Environment": "aws_elastic_beanstalk",
    "AWS::Lambda::Function": "aws_lambda",
    "AWS::Lambda": "aws_lambda",
    "AWS::ApiGateway::Stage": "aws_api_gateway",
}


def _get(attributes: Mapping[str, Any], key: str) -> str | None:
    value = attributes.get(key)
    return None if value is None else str(value)


def environment(span: dict[str, Any]) -> str:
    """`OTelSpanDerivationUtil.computeEnvironment`, attributes of the span before the resource's."""
    attributes = span.get("attributes") or {}
    resource = (span.get("resource") or {}).get("attributes") or {}

    def lookup(key: str) -> str | None:
        value = _get(attributes, key)
        return value if value is not None else _get(resource, key)

    platform = lookup("cloud.platform") or _ORIGIN_PLATFORMS.get(lookup("aws.xray.origin") or "")
    if platform == "aws_api_gateway":
        stage = lookup("aws.api_gateway.stage")
        return f"api-gateway:{stage}" if stage else "api-gateway:default"
    if platform == "aws_ecs":
        launch = (lookup("aws.ecs.launchtype") or "").lower()
        return {"fargate": "ecs-fargate:default", "ec2": "ecs-ec2:default"}.get(launch, "ecs:default")
    if platform in _PLATFORM_ENVIRONMENTS:
        return _PLATFORM_ENVIRONMENTS[platform]
    for key in ("deployment.environment.name", "deployment.environment"):
        value = _get(resource, key)
        if value and value.strip():
            return value
    return GENERIC_ENVIRONMENT


def _first_path(url_or_path: str) -> str:
    path = url_or_path
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?")[0].split("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    second = path.find("/", 1)
    return path[:second] if second > 0 else path


def operation_name(span: dict[str, Any]) -> str:
    """`OTelSpanDerivationUtil.computeOperationName`."""
    attributes = span.get("attributes") or {}
    name = span.get("name")
    method = _get(attributes, "http.request.method") or _get(attributes, "http.method")
    path = None
    for key in ("http.path", "http.target", "http.url", "url.full"):
        path = _get(attributes, key)
        if path is not None:
            break
    if method and path and (name is None or name == "UnknownOperation" or name == method):
        return f"{method} {_first_path(path)}"
    if method and name == method:
        return "UnknownOperation"
    return name if name is not None else "UnknownOperation"


def _remote(span: dict[str, Any]) -> tuple[str, str, str] | None:
    """(node type, name, operation) of what a CLIENT span without a SERVER child calls."""
    attributes = span.get("attributes") or {}
    aws_service = _get(attributes, "aws.service") or _get(attributes, "rpc.service")
    if aws_service and (_get(attributes, "aws.xray.namespace") == "aws" or _get(attributes, "rpc.system") == "aws-api"):
        operation = _get(attributes, "aws.operation") or _get(attributes, "rpc.method") or "UnknownRemoteOperation"
        name = aws_service if aws_service.startswith("AWS::") else f"AWS::{aws_service}"
        return "aws_resource", name, operation
    db_system = _get(attributes, "db.system") or _get(attributes, "db.system.name")
    if db_system:
        statement = _get(attributes, "db.operation") or _get(attributes, "db.statement") or ""
        words = statement.split()
        return "database", db_system, words[0].upper() if words else "UnknownRemoteOperation"
    url = _get(attributes, "url.full") or _get(attributes, "http.url")
    if url:
        parts = urlsplit(url)
        if parts.hostname:
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, -1)
            method = _get(attributes, "http.request.method") or _get(attributes, "http.method")
            operation = f"{method} {_first_path(url)}" if method else url
            return "remote_host", f"{parts.hostname}:{port}", operation
    return None


def _inferred(span: dict[str, Any]) -> bool:
    """A SERVER span the transform inferred for a call to something not traced itself."""
    value = (span.get("attributes") or {}).get("aws.xray.inferred")
    return value is True or value == "true"


def _timestamp(span: dict[str, Any], granularity_seconds: int) -> str | None:
    text = span.get("endTime") or span.get("startTime")
    if not isinstance(text, str) or len(text) < 19:
        return None
    return _bucket(text[:19], granularity_seconds)


@functools.lru_cache(maxsize=4096)  # the spans of a trace, and of a consumer run, share few seconds
def _bucket(second: str, granularity_seconds: int) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS` → the start of its bucket, `YYYY-MM-DDTHH:MM:SSZ`."""
    try:
        moment = datetime.strptime(second, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    epoch = int(moment.timestamp())
    epoch -= epoch % granularity_seconds
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node(kind: str, env: str, name: str) -> dict[str, Any]:
    return {"type": kind, "keyAttributes": {"environment": env, "name": name}, "groupByAttributes": {}}


def document_id(doc: dict[str, Any]) -> str:
    """A stable id from the document's content (the same edge in the same period is one document)."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:40]


def service_map_v2(spans: list[dict[str, Any]], granularity_seconds: int = 60) -> list[tuple[str, dict[str, Any]]]:
    """One trace's standard spans (`tasks.spans_standard`) → its deduplicated v2 documents, each
    with its id (`document_id`)."""
    by_id = {span["spanId"]: span for span in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parentSpanId")
        if parent:
            children.setdefault(parent, []).append(span)
    env_cache: dict[str, str] = {}

    def env_of(span: dict[str, Any]) -> str:
        key = span["spanId"]
        found = env_cache.get(key)
        if found is None:
            found = env_cache[key] = environment(span)
        return found

    def server_ancestors(span: dict[str, Any]) -> list[dict[str, Any]]:
        """The SERVER ancestors in the span's own service, nearest first (the chain stays in the
        service): every one of them has this CLIENT among its descendants, as Data Prepper's
        `findClientDescendantsForServerThreeWindow` finds them (breadth-first through children of
        the same service, SERVER children included)."""
        service = span.get("serviceName")
        seen = set()
        found = []
        parent = by_id.get(span.get("parentSpanId") or "")
        while parent is not None and parent["spanId"] not in seen and parent.get("serviceName") == service:
            if parent.get("kind") == SERVER:
                found.append(parent)
            seen.add(parent["spanId"])
            parent = by_id.get(parent.get("parentSpanId") or "")
        return found

    docs: dict[str, dict[str, Any]] = {}
    servers_with_clients: set[str] = set()

    def add(doc: dict[str, Any]) -> None:
        docs.setdefault(document_id(doc), doc)

    for span in spans:
        if span.get("kind") != CLIENT or not span.get("serviceName"):
            continue
        stamp = _timestamp(span, granularity_seconds)
        if stamp is None:
            continue
        ancestors = server_ancestors(span)
        ancestor = ancestors[0] if ancestors else None
        servers_with_clients.update(server["spanId"] for server in ancestors)
        source = _node("service", env_of(span), span["serviceName"])
        source_operation = operation_name(ancestor) if ancestor is not None else None
        server = next((c for c in children.get(span["spanId"], []) if c.get("kind") == SERVER), None)
        if server is not None and server.get("serviceName") and not _inferred(server):
            target = _node("service", env_of(server), server["serviceName"])
            add(node_operation_detail(source, target, source_operation, operation_name(server), stamp))
            continue
        remote = _remote(span)
        if remote is not None:
            kind, name, operation = remote
            # the remote's own environment is unknown: Data Prepper's default for a remote
            target = _node(kind, GENERIC_ENVIRONMENT, name)
            add(node_operation_detail(source, target, source_operation, operation, stamp))
    for span in spans:
        if span.get("kind") != SERVER or not span.get("serviceName") or span["spanId"] in servers_with_clients:
            continue
        if _inferred(span):  # stands for the resource a client called: a target node, never a source
            continue
        stamp = _timestamp(span, granularity_seconds)
        if stamp is None:
            continue
        source = _node("service", env_of(span), span["serviceName"])
        add(node_operation_detail(source, None, operation_name(span), None, stamp))
    return list(docs.items())
