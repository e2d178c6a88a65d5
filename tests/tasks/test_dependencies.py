"""Dependency nodes like X-Ray's: raw segments get the downstream nodes X-Ray infers, raw + inferred
segments count each node once, and the Trace Analytics service map draws every edge.

The service-map checks evaluate what OpenSearch Dashboards' Trace Analytics asks of the
`otel-v1-apm-service-map` documents (dashboards-observability
public/components/trace_analytics/requests/queries/services_queries.ts, `getServiceMapQuery`:
per `serviceName` the `target.resource` terms and the `destination.{resource,domain}` edges; an
edge is drawn to the service named by `destination.domain` whose target resources hold
`destination.resource`; `getServiceMetricsQuery` counts a service's spans whose `name` is one of
the map's target resources, or that have no parent).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from tasks import mappings
from tasks.dependencies import dependency_node, inferred_span_id
from tasks.spans import SpanTrace, parse_span_records, transform_span_trace
from tasks.trace_model import TraceDocuments
from tasks.transform import transform_trace
from tests.fixtures import load_fixture, load_fixture_text, mapping_errors, segment_trace
from tests.tasks.test_transform import CTX

SPAN_MAPPING = mappings.span_mapping()


def _scorekeep(*, inferred: bool) -> dict[str, Any]:
    trace = copy.deepcopy(load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0])
    if not inferred:
        trace["Segments"] = [s for s in trace["Segments"] if not orjson.loads(s["Document"]).get("inferred")]
    return trace


def service_map_graph(docs: TraceDocuments) -> tuple[set[str], set[tuple[str, str]], list[str]]:
    """(nodes, edges, broken) the way Trace Analytics builds its map from the relationship documents."""
    targets: dict[str, set[str]] = {}
    nodes: set[str] = set()
    for relation in docs.service_map:
        nodes.add(relation["serviceName"])
        if relation["target"]:
            targets.setdefault(relation["serviceName"], set()).add(relation["target"]["resource"])
    edges: set[tuple[str, str]] = set()
    broken: list[str] = []
    for relation in docs.service_map:
        destination = relation["destination"]
        if not destination:
            continue
        resource, domain = destination["resource"], destination["domain"]
        if domain not in nodes:
            broken.append(f"{relation['serviceName']} → {domain}: no such service")
        elif resource not in targets.get(domain, set()):
            broken.append(f"{relation['serviceName']} → {domain}: {resource!r} is not one of its targets")
        else:
            edges.add((relation["serviceName"], domain))
    return nodes, edges, broken


def _metric_spans(docs: TraceDocuments) -> dict[str, int]:
    """getServiceMetricsQuery: per service, spans that are roots or whose name is a target resource."""
    target_resources = {r["target"]["resource"] for r in docs.service_map if r["target"]}
    counts: dict[str, int] = {}
    for span in docs.spans:
        if span["parentSpanId"] == "" or span["name"] in target_resources:
            counts[span["serviceName"]] = counts.get(span["serviceName"], 0) + 1
    return counts


SCOREKEEP_EDGES = {("Scorekeep", "random-name"), ("Scorekeep", "DynamoDB"), ("random-name", "SNS")}


def test_raw_segments_get_the_nodes_x_ray_infers() -> None:
    raw = transform_trace(_scorekeep(inferred=False), CTX)
    assert raw.problems == []
    assert len(raw.segments) == 9  # no segment document is invented: only spans
    inferred = [span for span in raw.spans if span.get("span.attributes.aws@xray@inferred") == "true"]
    by_parent = {span["parentSpanId"]: span for span in inferred}
    assert set(by_parent) == {"4cd3f10b76c624b4", "b29b548af4d54a0f"}  # the DynamoDB and SNS calls
    dynamo, sns = by_parent["4cd3f10b76c624b4"], by_parent["b29b548af4d54a0f"]
    # the names and types of the inferred segments X-Ray itself returned for these calls
    documents = [orjson.loads(s["Document"]) for s in _scorekeep(inferred=True)["Segments"]]
    real = {d["parent_id"]: d for d in documents if d.get("inferred")}
    for call_id, span in by_parent.items():
        assert (span["name"], span["span.attributes.aws@xray@origin"]) == (
            real[call_id]["name"],
            real[call_id]["origin"],
        )
        assert span["kind"] == "SPAN_KIND_SERVER"
        assert span["serviceName"] == span["resource.attributes.service@name"] == span["name"]
        assert span["spanId"] == inferred_span_id(call_id)
        assert span["traceGroup"] == "Scorekeep"
        assert not mapping_errors(span, SPAN_MAPPING)
    assert dynamo["span.attributes.aws@table_name"] == "scorekeep-user"
    assert dynamo["span.attributes.aws@operation"] == "UpdateItem"
    assert (dynamo["startTime"], dynamo["endTime"]) == (
        _span(raw, "4cd3f10b76c624b4")["startTime"],
        _span(raw, "4cd3f10b76c624b4")["endTime"],
    )
    assert sns["span.attributes.aws@operation"] == "Publish"
    assert sns["resource.attributes.cloud@provider"] == "aws"

    nodes, edges, broken = service_map_graph(raw)
    assert broken == []
    assert nodes == {"Scorekeep", "random-name", "DynamoDB", "SNS"}
    assert edges == SCOREKEEP_EDGES
    assert _metric_spans(raw)["DynamoDB"] == 1


def test_raw_and_inferred_segments_count_each_node_once() -> None:
    both = transform_trace(_scorekeep(inferred=True), CTX)
    raw = transform_trace(_scorekeep(inferred=False), CTX)
    assert len(both.spans) == len(both.segments) == 11  # X-Ray's inferred segments, no second node
    assert [s for s in both.spans if s["spanId"] in {inferred_span_id("4cd3f10b76c624b4")}] == []
    _, edges, broken = service_map_graph(both)
    assert broken == []
    assert edges == SCOREKEEP_EDGES
    assert {r["hashId"] for r in both.service_map} == {r["hashId"] for r in raw.service_map}
    assert _metric_spans(both) == _metric_spans(raw)


def test_lambda_call_with_its_function_segment_gets_no_node() -> None:
    # the Lambda invoke subsegment (0c544c1b1bbff948) has the function's own segment below it
    raw = transform_trace(_scorekeep(inferred=False), CTX)
    assert not [s for s in raw.spans if s["parentSpanId"] == "0c544c1b1bbff948" and s["serviceName"] == "Lambda"]


def test_database_node_from_sql_fields() -> None:
    # the AWS docs' SQL subsegment, embedded in the segment of the service that ran the query
    segment = {
        "trace_id": "1-581cf771-a006649127e371903a2de979",
        "id": "defdfd9912dc5a56",
        "name": "customers-api",
        "start_time": 1484872218.69,
        "end_time": 1484872218.70,
        "subsegments": [load_fixture("xray/awsdocs_sql_subsegment")],
    }
    trace = {"Id": segment["trace_id"], "Segments": [{"Id": segment["id"], "Document": orjson.dumps(segment).decode()}]}
    docs = transform_trace(trace, CTX)
    (node,) = [s for s in docs.spans if s["parentSpanId"] == "3fd8634e78ca9560"]
    assert node["name"] == "ebdb@aawijb5u25wdoy.cpamxznpdoq8.us-west-2.rds.amazonaws.com"
    assert node["span.attributes.aws@xray@origin"] == "Database::SQL"
    assert node["span.attributes.db@system"] == "PostgreSQL"
    assert node["resource.attributes.cloud@provider"] == "unknown"
    _, edges, broken = service_map_graph(docs)
    assert broken == []
    assert edges == {("customers-api", node["name"])}


def test_remote_host_node_from_the_url() -> None:
    docs = transform_trace(segment_trace("xray/otel_indep_subsegment_content_length_string"), CTX)
    (node,) = [s for s in docs.spans if s["parentSpanId"] == "53995c3f42cd8ad8"]
    assert (node["name"], node["span.attributes.aws@xray@origin"]) == ("api.example.com", "remote")
    assert node["span.attributes.http@url"] == "https://api.example.com/health"


def test_failed_call_makes_a_failed_node() -> None:
    docs = transform_trace(segment_trace("xray/otel_ddb_sample"), CTX)
    nodes = [s for s in docs.spans if s.get("span.attributes.aws@xray@inferred") == "true"]
    by_parent = {s["parentSpanId"]: s for s in nodes}
    assert set(by_parent) == {"7318c46a385557f5", "71631df3f58bdfc5"}  # DescribeTable, PutItem
    assert {s["name"] for s in nodes} == {"DynamoDB"}  # the Go SDK's `dynamodb`, as X-Ray draws it
    assert by_parent["71631df3f58bdfc5"]["status.code"] == 2
    assert by_parent["7318c46a385557f5"]["status.code"] == 0
    _, edges, broken = service_map_graph(docs)
    assert broken == [] and edges == {("DDB", "DynamoDB")}


def test_re_collection_gives_the_same_node_ids() -> None:
    first = transform_trace(_scorekeep(inferred=False), CTX)
    second = transform_trace(_scorekeep(inferred=False), CTX)
    assert [s["spanId"] for s in first.spans] == [s["spanId"] for s in second.spans]
    assert len({s["spanId"] for s in first.spans}) == len(first.spans)


def test_dependency_node_naming() -> None:
    assert dependency_node({"namespace": "aws", "name": "S3"}, {}) == ("S3", "AWS::S3::Bucket")
    assert dependency_node({"namespace": "aws", "name": "sqs"}, {}) == ("SQS", "AWS::SQS::Queue")
    assert dependency_node({"namespace": "aws", "name": "Textract"}, {}) == ("Textract", "AWS::Textract")
    call = {"namespace": "remote", "name": "orders-db", "sql_url": "mysql://db.internal:3306/orders", "http_url": None}
    assert dependency_node(call, {"sql": {}}) == ("orders@db.internal", "Database::SQL")
    call = {"namespace": "remote", "name": "orders-db", "sql_url": None, "http_url": None}
    assert dependency_node(call, {"sql": {"database_type": "MySQL"}}) == ("orders-db", "Database::SQL")
    call = {"namespace": "remote", "name": "GET", "sql_url": None, "http_url": "https://pay.example.com:8443/v1?x=1"}
    assert dependency_node(call, {}) == ("pay.example.com", "remote")
    assert dependency_node({"namespace": "remote", "name": "queue", "sql_url": None, "http_url": None}, {}) == (
        "queue",
        "remote",
    )
    assert dependency_node({"namespace": None, "name": "work"}, {}) is None


def _span(docs: TraceDocuments, span_id: str) -> dict[str, Any]:
    return next(span for span in docs.spans if span["spanId"] == span_id)


def test_span_records_get_the_nodes_x_ray_draws_for_their_calls() -> None:
    """The Transaction Search path (an ADOT trace from aws/spans): each call with no SERVER span below
    it gets its node, named by the AWS service (`aws.remote.service`, not the span name
    `DynamoDB.GetItem`), the database or the host; the call answered by `payments` gets none."""
    records = load_fixture_text("aws_spans/adot_checkout_trace.jsonl").splitlines()
    parsed = parse_span_records({"Id": "6b0e9e245e1c0a9d3b7f20c4e6a81d92", "Spans": records})
    assert isinstance(parsed, SpanTrace)
    docs = transform_span_trace(parsed, CTX)
    nodes = {
        s["parentSpanId"]: (s["name"], s["span.attributes.aws@xray@origin"], s["kind"])
        for s in docs.spans
        if s.get("span.attributes.aws@xray@inferred") == "true"
    }
    database = "orders@orders.cluster-abc.eu-west-1.rds.amazonaws.com"
    assert nodes == {
        "b1b2c3d4e5f60718": ("DynamoDB", "AWS::DynamoDB::Table", "SPAN_KIND_SERVER"),
        "c1b2c3d4e5f60718": ("SQS", "AWS::SQS::Queue", "SPAN_KIND_SERVER"),
        "d1b2c3d4e5f60718": (database, "Database::SQL", "SPAN_KIND_SERVER"),
        "0718a1b2c3d4e5f6": ("StepFunctions", "AWS::StepFunctions::StateMachine", "SPAN_KIND_SERVER"),
    }
    assert all(s["spanId"] == inferred_span_id(s["parentSpanId"]) for s in docs.spans if s["parentSpanId"] in nodes)
    assert len(docs.segments) == 7  # spans only: no segment document is invented
    for span in docs.spans:
        assert not mapping_errors(span, SPAN_MAPPING)
    _, edges, broken = service_map_graph(docs)
    assert broken == []
    root = docs.trace["root_service_name"]
    assert edges == {
        (root, "DynamoDB"),
        (root, "SQS"),
        (root, database),
        (root, "StepFunctions"),
        (root, "payments"),
    }
