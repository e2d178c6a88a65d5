"""OpenSearch setup against the in-memory server: the mixed-generation refusal, span documents of
each generation indexed under their own template, and ISM skipped with its reason."""

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
    assert _write_spans(cluster, "standard") == 10 + 4  # 9 spans + 1 inferred Lambda node, 4 service-map v2 documents
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
