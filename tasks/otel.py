"""X-Ray → OpenTelemetry, as Data Prepper stores it (pure): span and trace ids, resource
attributes, the awsxrayreceiver's exception stack traces and SQL URLs, and the service-map
relationships with `hashId` as Data Prepper computes it (base64 MD5 of the relationship).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from tasks.coerce import MAX_TEXT, digest_hex, safe_json, to_text
from tasks.trace_model import TraceContext

__all__ = [
    "XRAY_TRACE_ID",
    "add_resource_attributes",
    "context_resource",
    "exception_stacktrace",
    "go_json",
    "otel_span_id",
    "otel_trace_id",
    "resource_attributes",
    "sdk_language",
    "service_map_hash",
    "service_map_relations",
    "split_sql_url",
]

XRAY_TRACE_ID = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")


def otel_trace_id(xray_trace_id: str) -> str:
    """`1-5759e988-bd862e3fe1be46a994272793` → `5759e988bd862e3fe1be46a994272793`.

    A malformed id maps to a stable 32-hex digest of itself (so it still groups its spans).
    """
    match = XRAY_TRACE_ID.fullmatch(xray_trace_id)
    if match:
        return (match.group(1) + match.group(2)).lower()
    return digest_hex(xray_trace_id, 16)


def otel_span_id(segment_id: str) -> str:
    """X-Ray ids already are 16 hex digits; anything else maps to a stable 16-hex digest."""
    if len(segment_id) == 16 and _SPAN_ID.fullmatch(segment_id):
        return segment_id
    lowered = segment_id.lower()
    if len(lowered) == 16 and _SPAN_ID.fullmatch(lowered):
        return lowered
    return digest_hex(segment_id, 8)


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


# The receiver's order (translator/aws.go `addAWSToResource`): later blocks overwrite earlier ones
# (an `eks.container_id` wins over an `ecs.container_id`).
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
            ("availability_zone", "resource.attributes.cloud@availability_zone"),
            ("container_id", "resource.attributes.container@id"),
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
            ("container_id", "resource.attributes.container@id"),
            ("cluster_name", "resource.attributes.k8s@cluster@name"),
            ("pod", "resource.attributes.k8s@pod@name"),
        ),
    ),
)


def sdk_language(sdk: str, has_exceptions: bool) -> str | None:
    """translator/sdk.go: `java` when the segment's cause holds exceptions (the X-Ray exporter only
    renders Java stack traces), else what follows `for ` in the SDK name (`X-Ray for Go` → `Go`)."""
    if has_exceptions:
        return "java"
    at = sdk.find("for ")
    return sdk[at + 4 :] if at != -1 else None


def resource_attributes(
    ctx: TraceContext,
    node: dict[str, Any],
    name: str,
    aws: dict[str, Any] | None,
    resource_arn: str | None,
    problem: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The OTel resource of a top-level segment's spans, as the awsxrayreceiver builds it
    (translator.go `populateResource`, aws.go, sdk.go), plus what xraylake knows from the envelope:
    the account (`cloud.account.id` unless the segment names its own), `cloud.region`,
    `deployment.environment`, the roster's account name and the segment's origin."""
    resource = context_resource(ctx)
    resource["resource.attributes.service@name"] = name
    if aws is not None:
        # aws.go: no `aws` block → the receiver cannot know the provider ("unknown")
        resource["resource.attributes.cloud@provider"] = "aws"
    add_resource_attributes(resource, node, aws, resource_arn, problem)
    return resource


def context_resource(ctx: TraceContext) -> dict[str, Any]:
    """The first six resource attributes, in `resource_attributes`' order, as a segment without an
    `aws` block and an empty name has them (the service name and provider are the segment's)."""
    return {
        "resource.attributes.service@name": "",
        "resource.attributes.cloud@provider": "unknown",
        "resource.attributes.cloud@region": ctx.region,
        "resource.attributes.cloud@account@id": ctx.account_id,
        "resource.attributes.deployment@environment": ctx.environment,
        "resource.attributes.xraylake@account@name": ctx.account_name,
    }


def add_resource_attributes(
    resource: dict[str, Any],
    node: dict[str, Any],
    aws: dict[str, Any] | None,
    resource_arn: str | None,
    problem: Callable[[str], None] | None = None,
) -> None:
    """What `resource_attributes` adds after the context's six attributes, written into `resource`
    (which holds those six already, e.g. a span template made with `context_resource`)."""
    if aws is not None:
        account = aws.get("account_id")
        if account is not None:
            if type(account) is not str and problem is not None:
                problem(f"aws.account_id {to_text(account, 40)!r} is not a string")
            resource["resource.attributes.cloud@account@id"] = to_text(account, 64)
        logs = aws.get("cloudwatch_logs")
        if logs is not None:
            if type(logs) is list:
                arns = [to_text(g.get("arn"), 512) for g in logs if type(g) is dict and g.get("arn") is not None]
                groups = [
                    to_text(g.get("log_group"), 512) for g in logs if type(g) is dict and g.get("log_group") is not None
                ]
                if arns:
                    resource["resource.attributes.aws@log@group@arns"] = arns
                if groups:
                    resource["resource.attributes.aws@log@group@names"] = groups
            elif problem is not None:
                problem(f"aws.cloudwatch_logs is {type(logs).__name__}, not a list")
        for block, pairs in _RESOURCE_BLOCKS:
            section = aws.get(block)
            if section is None:
                continue
            if type(section) is not dict:
                if problem is not None:
                    problem(f"aws.{block} is {type(section).__name__}, not an object")
                continue
            for source_key, target in pairs:
                value = section.get(source_key)
                if value is not None:
                    if type(value) is not str and problem is not None and source_key != "deployment_id":
                        problem(f"aws.{block}.{source_key} {to_text(value, 40)!r} is not a string")
                    resource[target] = to_text(value, 256) or ""
        xray = aws.get("xray")
        if type(xray) is dict:
            version = xray.get("sdk_version")
            if version is not None:
                resource["resource.attributes.telemetry@sdk@version"] = to_text(version, 256) or ""
            sdk = xray.get("sdk")
            if sdk is not None:
                sdk = to_text(sdk, 256) or ""
                resource["resource.attributes.telemetry@sdk@name"] = sdk
                cause = node.get("cause")
                has_exceptions = type(cause) is dict and bool(cause.get("exceptions"))
                language = sdk_language(sdk, has_exceptions)
                if language is not None:
                    resource["resource.attributes.telemetry@sdk@language"] = language
        elif xray is not None and problem is not None:
            problem(f"aws.xray is {type(xray).__name__}, not an object")
    origin = node.get("origin")
    if type(origin) is str:
        resource["resource.attributes.aws@xray@origin"] = origin[:256]
    service = node.get("service")
    if type(service) is dict and service.get("version") is not None:
        resource["resource.attributes.service@version"] = to_text(service.get("version"), 256) or ""
    if resource_arn is not None:
        resource["resource.attributes.aws@xray@resource_arn"] = resource_arn


def exception_stacktrace(
    ex_type: str | None, message: str | None, stack: list[Any], odd: list[str] | None = None
) -> str:
    """Like the awsxrayreceiver (cause.go): `Type: message\n\tat label(path: line)\n…`.

    Frames the receiver could not read (not an object, a `line` that is not an integer, a `label`
    or `path` that is not a string) are still rendered; `odd` receives what was wrong with them."""
    frames = stack[:64]
    lines = [f"{ex_type or ''}: {message or ''}"]
    for frame in frames:
        if type(frame) is dict:
            line, label, path = frame.get("line"), frame.get("label"), frame.get("path")
            if odd is not None and (
                (line is not None and type(line) is not int)
                or (label is not None and type(label) is not str)
                or (path is not None and type(path) is not str)
            ):
                odd.append(f"stack frame {to_text(frame, 80)!r} has a line, label or path of the wrong type")
            # to_text(label, 256) and to_text(path, 512), without the calls for the usual strings
            label = (label if len(label) <= 256 else label[:256]) if type(label) is str else to_text(label, 256)
            path = (path if len(path) <= 512 else path[:512]) if type(path) is str else to_text(path, 512)
            lines.append(f"\tat {label or ''}({path or ''}: {line if type(line) is int else '<unknown>'})")
        elif odd is not None:
            odd.append(f"stack frame {to_text(frame, 40)!r} is not an object")
    text = "\n".join(lines) + "\n"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


def go_json(value: Any) -> str:
    """JSON as Go's `json.Marshal` writes it for the receiver's metadata: compact, object keys
    sorted, and `<`, `>`, `&`, U+2028, U+2029 escaped (they can only occur inside strings)."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = safe_json(value)
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return text


_SQL_URL = re.compile(r"^(.+//.+)/([^?]+)\??.*$")


def split_sql_url(url: str) -> tuple[str, str | None]:
    """`proto://host:port/db?x` → (`proto://host:port`, `db`), as the awsxrayreceiver splits it."""
    match = _SQL_URL.match(url)
    if match is None:
        return url, None
    return match.group(1), match.group(2)


_HASH_CACHE: dict[tuple[Any, ...], str] = {}


def _relation_hash(
    service: str,
    kind: str | None,
    group: str | None,
    target: tuple[str, str] | None,
    destination: tuple[str, str] | None,
) -> str:
    """`service_map_hash`, cached (a consumer sees the same edges over and over)."""
    key = (service, kind, group, target, destination)
    hash_id = _HASH_CACHE.get(key)
    if hash_id is None:
        hash_id = service_map_hash(service, kind, group, target, destination)
        if len(_HASH_CACHE) > 100_000:
            _HASH_CACHE.clear()
        _HASH_CACHE[key] = hash_id
    return hash_id


# (service, trace group) → its isolated-service relationship (returned as copies; bounded)
_ISOLATED: dict[tuple[str, str | None], dict[str, Any]] = {}


def _isolated(service: str, group: str | None) -> dict[str, Any]:
    """The relationship document of a service without edges (a new dict, from a cached one)."""
    found = _ISOLATED.get((service, group))
    if found is None:
        found = _relation(service, None, group, None, None, _relation_hash(service, None, group, None, None))
        if len(_ISOLATED) >= 4096:
            _ISOLATED.clear()
        _ISOLATED[(service, group)] = found
    return found.copy()


def _relation(
    service: str,
    kind: str | None,
    group: str | None,
    target: tuple[str, str] | None,
    destination: tuple[str, str] | None,
    hash_id: str,
) -> dict[str, Any]:
    """The relationship document of one service-map edge (or isolated service)."""
    return {
        "serviceName": service,
        "kind": kind,
        "destination": {"resource": destination[0], "domain": destination[1]} if destination else None,
        "target": {"resource": target[0], "domain": target[1]} if target else None,
        "traceGroupName": group,
        "hashId": hash_id,
    }


def service_map_relations(spans: Sequence[dict[str, Any]], group: str | None) -> list[dict[str, Any]]:
    """Data Prepper service-map relationships: for each parent→child span pair crossing services a
    destination edge (parent service → child) and a target edge (child service), plus isolated
    services for services without any edge."""
    if len(spans) == 1:
        return [_isolated(spans[0]["serviceName"], group)]
    services = {span["serviceName"] for span in spans}
    if len(services) < 2:  # no parent → child pair can cross services: the isolated service only
        return [_isolated(service, group) for service in services]
    relations: dict[str, dict[str, Any]] = {}
    connected: set[str] = set()

    def add(
        service: str, kind: str | None, target: tuple[str, str] | None, destination: tuple[str, str] | None
    ) -> None:
        hash_id = _HASH_CACHE.get((service, kind, group, target, destination))
        if hash_id is None:
            hash_id = _relation_hash(service, kind, group, target, destination)
        if hash_id not in relations:
            relations[hash_id] = _relation(service, kind, group, target, destination, hash_id)

    by_span = {span["spanId"]: span for span in spans}
    for child in spans:
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
