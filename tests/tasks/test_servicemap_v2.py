"""`otel-v2-apm-service-map` documents: Data Prepper's edges, hashes and operations, typed
dependency nodes, span-time timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tasks.servicemap_v2 import (
    environment,
    java_hash,
    node_operation_detail,
    operation_name,
    service_map_v2,
)
from tasks.spans_standard import standard_spans
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import load_fixture

CTX = TraceContext("012345678901", "acme", "prod", "eu-west-1", datetime(2024, 9, 22, 11, tzinfo=UTC), "e", "test")


def _edges(docs: list[tuple[str, dict[str, Any]]]) -> set[tuple[Any, ...]]:
    return {
        (
            d["sourceNode"]["keyAttributes"]["name"],
            d.get("sourceOperation", {}).get("name"),
            d["targetNode"]["type"] if "targetNode" in d else None,
            d["targetNode"]["keyAttributes"]["name"] if "targetNode" in d else None,
            d.get("targetOperation", {}).get("name"),
        )
        for _, d in docs
    }


def test_java_hash_codes_match_java() -> None:
    assert java_hash("hello") == 99162322  # "hello".hashCode()
    assert java_hash("") == 0
    assert java_hash("\U0001d11e") == 1772394  # over UTF-16 code units (a surrogate pair)
    assert java_hash(("a", "b")) == 4066  # Objects.hash("a", "b")
    assert java_hash((None,)) == 31  # Objects.hash((Object) null)
    assert java_hash({"a": "b"}) == 3  # Map.of("a", "b").hashCode() = "a".hashCode() ^ "b".hashCode()
    assert java_hash("polygenelubricants") == -(2**31)  # the well-known Integer.MIN_VALUE string: int overflow


def test_node_operation_detail_shape_and_hashes() -> None:
    source = {"type": "service", "keyAttributes": {"environment": "e", "name": "a"}, "groupByAttributes": {}}
    lone = node_operation_detail(source, None, "GET /", None, "2024-09-22T10:13:00Z")
    assert set(lone) == {"sourceNode", "sourceOperation", "nodeConnectionHash", "operationConnectionHash", "timestamp"}
    # Node.hashCode = Objects.hash(type, Objects.hash(environment, name), groupByAttributes)
    key_hash = java_hash(("e", "a"))
    h = 1
    for part in (java_hash("service"), key_hash, 0):
        h = (31 * h + part) & 0xFFFFFFFF
    node_hash = h - (1 << 32) if h & 0x80000000 else h
    expected = (31 * (31 + node_hash)) & 0xFFFFFFFF  # Objects.hash(sourceNode, null)
    assert lone["nodeConnectionHash"] == str(expected - (1 << 32) if expected & 0x80000000 else expected)
    bare = node_operation_detail(source, source, None, None, "2024-09-22T10:13:00Z")
    assert "operationConnectionHash" not in bare and "sourceOperation" not in bare  # Jackson NON_NULL


def test_edges_of_a_trace_with_typed_dependency_nodes() -> None:
    spans = standard_spans(transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX).spans)
    docs = service_map_v2(spans)
    assert _edges(docs) == {
        ("checkout", "checkout", "service", "validate-order", "validate-order"),
        ("checkout", "checkout", "aws_resource", "AWS::Lambda", "Invoke"),
        # the DynamoDB call has an inferred SERVER span: still a typed node, never a service
        ("validate-order", "validate-order", "aws_resource", "AWS::DynamoDB", "GetItem"),
        # no leaf node for the outer Lambda server span (AWS::Lambda): the DynamoDB call under its
        # function segment (a nested SERVER span of the same service) is its descendant too
    }
    by_target = {d.get("targetNode", {}).get("keyAttributes", {}).get("name"): d for _, d in docs}
    assert by_target["validate-order"]["targetNode"]["keyAttributes"]["environment"] == "lambda:default"
    assert by_target["validate-order"]["sourceNode"]["keyAttributes"]["environment"] == "prod"
    assert by_target["AWS::DynamoDB"]["targetNode"]["keyAttributes"]["environment"] == "generic:default"
    # span time (the trace ran 2024-09-22 10:13), never the time of writing
    assert {d["timestamp"] for _, d in docs} == {"2024-09-22T10:13:00Z"}
    assert service_map_v2(spans) == docs  # ids from content: writing twice is idempotent
    assert {d["timestamp"] for _, d in service_map_v2(spans, granularity_seconds=1)} >= {"2024-09-22T10:13:20Z"}


def _span(span_id: str, kind: str, service: str, parent: str = "", **attributes: Any) -> dict[str, Any]:
    return {
        "traceId": "5759e988bd862e3fe1be46a994272793",
        "spanId": span_id,
        "parentSpanId": parent,
        "name": attributes.pop("name", service),
        "kind": kind,
        "serviceName": service,
        "startTime": "2026-01-05T08:59:59.000000000Z",
        "endTime": "2026-01-05T09:00:01.500000000Z",
        "attributes": attributes,
        "resource": {"attributes": {"deployment.environment": "qa", "aws.xray.origin": "AWS::EC2::Instance"}},
    }


def test_databases_and_remote_hosts_without_a_server_span_are_typed_nodes() -> None:
    spans = [
        _span("a" * 16, "SPAN_KIND_SERVER", "web", **{"http.method": "GET", "http.url": "https://w/orders/7?x=1"}),
        _span("b" * 16, "SPAN_KIND_CLIENT", "web", "a" * 16, **{"db.system": "postgresql", "db.statement": "select 1"}),
        _span(
            "c" * 16,
            "SPAN_KIND_CLIENT",
            "web",
            "a" * 16,
            **{"http.method": "POST", "http.url": "https://api.example.com/v1/pay"},
        ),
    ]
    docs = service_map_v2(spans)
    assert _edges(docs) == {
        ("web", "web", "database", "postgresql", "SELECT"),
        ("web", "web", "remote_host", "api.example.com:443", "POST /v1"),
    }
    assert {d["sourceNode"]["keyAttributes"]["environment"] for _, d in docs} == {"ec2:default"}
    assert {d["timestamp"] for _, d in docs} == {"2026-01-05T09:00:00Z"}  # the end time's minute


def test_leaf_nodes_only_for_server_spans_without_a_client_descendant_in_their_service() -> None:
    """Data Prepper's `findClientDescendantsForServerThreeWindow` walks through every child of the
    same service, nested SERVER spans included (an X-Ray Lambda service segment over its function
    segment): neither server of such a chain is a leaf once a CLIENT lies below both."""
    outer, inner, call, lone = "a" * 16, "b" * 16, "c" * 16, "d" * 16
    spans = [
        _span(outer, "SPAN_KIND_SERVER", "fn", **{"aws.xray.origin": "AWS::Lambda"}),
        _span(inner, "SPAN_KIND_SERVER", "fn", outer),
        _span(call, "SPAN_KIND_CLIENT", "fn", inner, **{"db.system": "postgresql", "db.statement": "select 1"}),
        _span(lone, "SPAN_KIND_SERVER", "other", call, name="other"),  # another service, no call: a leaf
    ]
    assert _edges(service_map_v2(spans)) == {
        ("fn", "fn", "service", "other", "other"),
        ("other", "other", None, None, None),
    }
    spans[2]["kind"] = "SPAN_KIND_INTERNAL"  # no call at all: both servers of fn are leaves
    assert _edges(service_map_v2(spans)) == {("fn", "fn", None, None, None), ("other", "other", None, None, None)}


def test_operation_names_and_environments_as_data_prepper_derives_them() -> None:
    assert operation_name({"name": "GET", "attributes": {"http.method": "GET", "http.url": "https://h/a/b?c"}}) == (
        "GET /a"
    )
    assert operation_name({"name": "GET", "attributes": {"http.method": "GET"}}) == "UnknownOperation"
    assert operation_name({"name": "checkout", "attributes": {"http.method": "GET", "http.url": "/a"}}) == "checkout"
    assert environment({"resource": {"attributes": {"deployment.environment": "prod"}}}) == "prod"
    assert environment({"resource": {"attributes": {"deployment.environment.name": "p2"}}}) == "p2"
    assert environment(
        {"resource": {"attributes": {"cloud.platform": "aws_ecs", "aws.ecs.launchtype": "FARGATE"}}}
    ) == ("ecs-fargate:default")
    assert environment({}) == "generic:default"
