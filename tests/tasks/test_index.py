"""OpenSearch setup against the in-memory server: the mixed-generation refusal, span documents of
each generation indexed under their own template, ISM skipped with its reason, and the Trace
Analytics UI's own queries answering on the legacy generation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opensearchpy import OpenSearch

from blocks import OpenSearchTarget
from tasks.index import (
    GenerationConflict,
    IndexAction,
    bulk_index,
    capabilities,
    client_for,
    ensure_ism_policies,
    ensure_templates,
    existing_span_generations,
    target_ism_policies,
    target_templates,
)
from tasks.mappings import index_templates
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import load_fixture

CTX = TraceContext("012345678901", "acme", "prod", "eu-west-1", datetime(2024, 9, 22, 11, tzinfo=UTC), "e", "test")


@pytest.fixture
def cluster(stack) -> Iterator[OpenSearch]:  # type: ignore[no-untyped-def]
    """A clone of the sandbox's in-memory OpenSearch of this test's own."""
    clone = stack.opensearch.clone()
    yield client_for(OpenSearchTarget(hosts=[clone.url], verify_certs=False))
    clone.close()


def _write_spans(client: OpenSearch, generation: str) -> int:
    docs = transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX)
    actions = [
        IndexAction(r.index, r.doc_id, docs.version, r.source, r.kind, versioned=r.kind != "service-map")
        for r in docs.index_requests(generation=generation, profile="trace-analytics")
    ]
    report = bulk_index(client, actions)
    assert report.ok, report.errors
    client.indices.refresh(index="otel-v1-apm-span")
    return report.indexed


@pytest.mark.parametrize(("first", "second"), [("legacy", "standard"), ("standard", "legacy")])
def test_setup_refuses_a_span_template_of_the_other_generation(cluster: OpenSearch, first: str, second: str) -> None:
    ensure_templates(cluster, index_templates(generation=first))
    _write_spans(cluster, first)
    assert existing_span_generations(cluster) == {"otel-v1-apm-span-2024.09.22": first}
    ensure_templates(cluster, index_templates(generation=first))  # the same generation again: fine
    with pytest.raises(GenerationConflict) as refused:
        ensure_templates(cluster, index_templates(generation=second))
    message = str(refused.value)
    assert f"refusing to install the {second!r} span template" in message
    assert f"hold the {first!r} span schema (otel-v1-apm-span-2024.09.22)" in message
    assert f"keep the target's span_generation at {first!r}" in message
    assert "DELETE otel-v1-apm-span-*" in message
    # the template of the first generation is still the one installed
    installed = cluster.indices.get_index_template(name="otel-v1-apm-span")["index_templates"][0]
    assert ("instrumentationScope" in installed["index_template"]["template"]["mappings"]["properties"]) == (
        first == "standard"
    )
    # the xray-only profile installs no span template, so it is never refused
    assert set(ensure_templates(cluster, index_templates(generation=second, profile="xray"))) == {
        "xray-traces",
        "xray-segments",
    }
    # once the indices are gone, the other generation installs
    cluster.indices.delete(index="otel-v1-apm-span-*")
    assert "otel-v1-apm-span" in ensure_templates(cluster, index_templates(generation=second))


def test_standard_documents_index_under_the_standard_template(cluster: OpenSearch) -> None:
    ensure_templates(cluster, index_templates(generation="standard", profile="trace-analytics"))
    # 9 spans + 1 inferred Lambda node, 3 service-map v2 documents (no leaf node for the Lambda
    # service segment over its function segment: tests/tasks/test_servicemap_v2.py)
    assert _write_spans(cluster, "standard") == 10 + 3
    cluster.indices.refresh(index="otel-v2-apm-service-map")
    mapping = cluster.indices.get_mapping(index="otel-v1-apm-span")["otel-v1-apm-span-2024.09.22"]["mappings"]
    attributes = mapping["properties"]["attributes"]["properties"]
    assert attributes["http"]["properties"]["status_code"]["type"] == "long"
    assert attributes["aws"]["properties"]["operation"]["type"] == "keyword"
    assert mapping["properties"]["@timestamp"] == {"type": "date_nanos"}
    edges = cluster.search(
        index="otel-v2-apm-service-map",
        body={"query": {"term": {"targetNode.type": "aws_resource"}}, "size": 10},
    )["hits"]["hits"]
    assert sorted(hit["_source"]["targetNode"]["keyAttributes"]["name"] for hit in edges) == [
        "AWS::DynamoDB",
        "AWS::Lambda",
    ]
    assert {hit["_index"] for hit in edges} == {"otel-v2-apm-service-map-2024.09.22"}  # by span time


def test_ism_is_skipped_with_its_reason_on_the_sandbox(cluster: OpenSearch) -> None:
    caps = capabilities(cluster)
    assert caps["ism"] is False
    assert "_cat/plugins lists no index-management plugin" in caps["ism_reason"]
    assert "GET /_plugins/_ism/policies answered 400" in caps["ism_reason"]
    target = OpenSearchTarget(retention_days=30, span_generation="standard")
    policies = target_ism_policies(target)
    assert set(policies) == {"xraylake-xray-traces", "xraylake-xray-segments", "xraylake-spans", "xraylake-service-map"}
    outcome = ensure_ism_policies(cluster, policies, caps, target.retention_days)
    assert outcome["installed"] == []
    assert outcome["skipped"].startswith("the cluster has no ISM: _cat/plugins lists no index-management plugin")
    # a cluster with ISM but no retention configured installs nothing either, and says so
    assert ensure_ism_policies(cluster, {}, {"ism": True}, None) == {
        "installed": [],
        "skipped": "no retention configured (opensearch.retention_days)",
    }
    assert target_ism_policies(OpenSearchTarget()) == {}
    assert set(target_templates(OpenSearchTarget(index_profile="trace-analytics"))) == {
        "otel-v1-apm-span",
        "otel-v1-apm-service-map",
    }


# The Trace Analytics UI's own requests (dashboards-observability
# public/components/trace_analytics/requests/queries/services_queries.ts, Data Prepper mode):
# getServiceValidQuery and getServiceMapQuery on the service-map index, getServicesQuery and
# getServiceMetricsQuery (bucket scripts included) on the span indices. SERVICE_MAP_MAX_NODES/EDGES
# are 500/1000 there.
_NODES, _EDGES = 500, 1000
_BOOL: dict[str, list[object]] = {"must": [], "filter": [], "should": [], "must_not": []}


def _terms(field: str, size: int, **aggs: object) -> dict[str, object]:
    return {"terms": {"field": field, "size": size}, **({"aggs": aggs} if aggs else {})}


SERVICE_VALID_QUERY = {"size": 0, "query": {"bool": _BOOL}, "aggs": {"service_name": _terms("serviceName", _NODES)}}
SERVICE_MAP_QUERY = {
    "size": 0,
    "query": {"bool": _BOOL},
    "aggs": {
        "service_name": _terms(
            "serviceName",
            _NODES,
            target_resource=_terms("target.resource", _EDGES),
            target_edges=_terms(
                "target.resource",
                _EDGES,
                service=_terms("target.serviceName", _EDGES),
                domain=_terms("target.domain", _EDGES),
            ),
            destination_edges=_terms(
                "destination.resource",
                _EDGES,
                service=_terms("destination.serviceName", _EDGES),
                domain=_terms("destination.domain", _EDGES),
            ),
        )
    },
}
SERVICES_QUERY = {
    "size": 0,
    "query": {"bool": _BOOL},
    "aggs": {
        "service": {
            "terms": {"field": "serviceName", "size": 10000},
            "aggs": {"trace_count": {"cardinality": {"field": "traceId"}}},
        }
    },
}


def _service_metrics_query(services: list[str], target_resources: list[str]) -> dict[str, object]:
    roots = {"bool": {"must": {"term": {"parentSpanId": {"value": ""}}}}}
    targets = {
        "bool": {
            "filter": [
                {"bool": {"must_not": {"term": {"parentSpanId": {"value": ""}}}}},
                {"terms": {"name": target_resources}},
            ]
        }
    }
    return {
        "size": 0,
        "query": {
            "bool": {
                "must": [],
                "should": [],
                "must_not": [],
                "filter": [
                    {"terms": {"serviceName": services}},
                    {"bool": {"should": [targets, roots], "adjust_pure_negative": True, "boost": 1}},
                ],
            }
        },
        "aggregations": {
            "service_name": {
                "terms": {"field": "serviceName", "size": _NODES, "min_doc_count": 1},
                "aggregations": {
                    "average_latency_nanos": {"avg": {"field": "durationInNanos"}},
                    "average_latency": {
                        "bucket_script": {
                            "buckets_path": {"count": "_count", "latency": "average_latency_nanos.value"},
                            "script": "Math.round(params.latency / 10000) / 100.0",
                        }
                    },
                    "error_count": {"filter": {"term": {"status.code": "2"}}},
                    "error_rate": {
                        "bucket_script": {
                            "buckets_path": {"total": "_count", "errors": "error_count._count"},
                            "script": "params.errors / params.total * 100",
                        }
                    },
                },
            }
        },
    }


def test_trace_analytics_ui_queries_answer_on_legacy(cluster: OpenSearch) -> None:
    """The legacy generation still serves OpenSearch Dashboards' Trace Analytics: its service
    list, its service map (edges as the UI joins them) and its per-service metrics."""
    ensure_templates(cluster, index_templates(generation="legacy"))
    docs = transform_trace(load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0], CTX)
    actions = [
        IndexAction(r.index, r.doc_id, docs.version, r.source, r.kind, versioned=r.kind != "service-map")
        for r in docs.index_requests(generation="legacy", profile="trace-analytics")
    ]
    assert bulk_index(cluster, actions).ok
    cluster.indices.refresh(index="otel-v1-apm-span-*,otel-v1-apm-service-map")

    valid = cluster.search(index="otel-v1-apm-service-map", body=SERVICE_VALID_QUERY)
    services = {b["key"] for b in valid["aggregations"]["service_name"]["buckets"]}
    assert {"Scorekeep", "random-name", "DynamoDB", "SNS"} <= services

    answer = cluster.search(index="otel-v1-apm-service-map", body=SERVICE_MAP_QUERY)
    buckets = answer["aggregations"]["service_name"]["buckets"]
    target_resources = {b["key"]: {t["key"] for t in b["target_resource"]["buckets"]} for b in buckets}
    edges = set()
    for bucket in buckets:  # the UI draws an edge to destination.domain when it lists the resource
        for destination in bucket["destination_edges"]["buckets"]:
            for domain in destination["domain"]["buckets"]:
                if destination["key"] in target_resources.get(domain["key"], set()):
                    edges.add((bucket["key"], domain["key"]))
    assert {("Scorekeep", "random-name"), ("Scorekeep", "DynamoDB"), ("random-name", "SNS")} <= edges

    listed = cluster.search(index="otel-v1-apm-span-*", body=SERVICES_QUERY)
    trace_counts = {b["key"]: b["trace_count"]["value"] for b in listed["aggregations"]["service"]["buckets"]}
    assert trace_counts["Scorekeep"] == 1 and trace_counts["random-name"] == 1

    all_targets = sorted(set().union(*target_resources.values()))
    metrics = cluster.search(index="otel-v1-apm-span-*", body=_service_metrics_query(sorted(services), all_targets))
    rows = {b["key"]: b for b in metrics["aggregations"]["service_name"]["buckets"]}
    assert rows["Scorekeep"]["doc_count"] >= 1  # its root span at least
    assert rows["Scorekeep"]["average_latency_nanos"]["value"] > 0
    expected_errors = sum(
        1
        for s in docs.spans
        if s["serviceName"] == "Scorekeep"
        and s["status.code"] == 2
        and (s["parentSpanId"] == "" or s["name"] in all_targets)
    )
    assert rows["Scorekeep"]["error_count"]["doc_count"] == expected_errors
    for row in rows.values():  # the UI's bucket scripts: average latency in ms, error rate in %
        assert row["average_latency"]["value"] == round(row["average_latency_nanos"]["value"] / 10000) / 100.0
        assert row["error_rate"]["value"] == row["error_count"]["doc_count"] / row["doc_count"] * 100
