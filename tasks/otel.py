"""X-Ray → OpenTelemetry, as Data Prepper stores it (pure): span and trace ids, resource
attributes, the awsxrayreceiver's exception stack traces and SQL URLs, and the service-map
relationships with `hashId` as Data Prepper computes it (base64 MD5 of the relationship).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from tasks.coerce import MAX_TEXT, digest_hex, to_text
from tasks.trace_model import TraceContext

__all__ = [
    "XRAY_TRACE_ID",
    "exception_stacktrace",
    "otel_span_id",
    "otel_trace_id",
    "resource_attributes",
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


def resource_attributes(
    ctx: TraceContext, node: dict[str, Any], name: str, aws: dict[str, Any] | None, resource_arn: str | None
) -> dict[str, str]:
    """The OTel resource of a top-level segment's spans: the account, then its `aws` blocks."""
    resource = {
        "resource.attributes.service@name": name,
        "resource.attributes.cloud@provider": "aws",
        "resource.attributes.cloud@region": ctx.region,
        "resource.attributes.cloud@account@id": ctx.account_id,
        "resource.attributes.deployment@environment": ctx.environment,
        "resource.attributes.xraylake@account@name": ctx.account_name,
    }
    if aws is not None:
        account = to_text(aws.get("account_id"), 64)
        if account:
            resource["resource.attributes.cloud@account@id"] = account
        for block, section in aws.items():
            pairs = _RESOURCE_BLOCK_MAP.get(block)
            if pairs is not None and type(section) is dict:
                for source_key, target in pairs:
                    value = section.get(source_key)
                    if value is not None:
                        resource[target] = to_text(value, 256) or ""
    origin = node.get("origin")
    if type(origin) is str:
        resource["resource.attributes.aws@xray@origin"] = origin[:256]
    service = node.get("service")
    if type(service) is dict and service.get("version") is not None:
        resource["resource.attributes.service@version"] = to_text(service.get("version"), 256) or ""
    if resource_arn is not None:
        resource["resource.attributes.aws@xray@resource_arn"] = resource_arn
    return resource


def exception_stacktrace(ex_type: str | None, message: str | None, stack: list[Any]) -> str:
    """Like the awsxrayreceiver: `Type: message\\n\\tat label(path: line)\\n…`."""
    lines = [f"{ex_type or ''}: {message or ''}"]
    for frame in stack[:64]:
        if type(frame) is dict:
            line = frame.get("line")
            lines.append(
                f"\tat {to_text(frame.get('label'), 256) or ''}({to_text(frame.get('path'), 512) or ''}: "
                f"{line if type(line) is int else '<unknown>'})"
            )
    text = "\n".join(lines) + "\n"
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]


_SQL_URL = re.compile(r"^(.+//.+)/([^?]+)\??.*$")


def split_sql_url(url: str) -> tuple[str, str | None]:
    """`proto://host:port/db?x` → (`proto://host:port`, `db`), as the awsxrayreceiver splits it."""
    match = _SQL_URL.match(url)
    if match is None:
        return url, None
    return match.group(1), match.group(2)


_HASH_CACHE: dict[tuple[Any, ...], str] = {}


def service_map_relations(spans: Sequence[dict[str, Any]], group: str | None) -> list[dict[str, Any]]:
    """Data Prepper service-map relationships: for each parent→child span pair crossing services a
    destination edge (parent service → child) and a target edge (child service), plus isolated
    services for services without any edge."""
    by_span = {span["spanId"]: span for span in spans}
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

    for child in spans:
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
