"""Index templates: shape, Data Prepper compatibility, and field-for-field agreement with the transform."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks import mappings
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import load_fixture, resolve_field, segment_trace

# Data Prepper's classic otel-v1-apm-span-index-template.json properties
# (opensearch-project/data-prepper, data-prepper-plugins/opensearch/src/main/resources/).
DATA_PREPPER_SPAN_PROPERTIES = {
    "traceId": {"ignore_above": 256, "type": "keyword"},
    "spanId": {"ignore_above": 256, "type": "keyword"},
    "parentSpanId": {"ignore_above": 256, "type": "keyword"},
    "name": {"ignore_above": 1024, "type": "keyword"},
    "traceGroup": {"ignore_above": 1024, "type": "keyword"},
    "traceGroupFields": {
        "properties": {
            "endTime": {"type": "date_nanos"},
            "durationInNanos": {"type": "long"},
            "statusCode": {"type": "integer"},
        }
    },
    "kind": {"ignore_above": 128, "type": "keyword"},
    "startTime": {"type": "date_nanos"},
    "endTime": {"type": "date_nanos"},
    "status": {"properties": {"code": {"type": "integer"}, "message": {"type": "keyword"}}},
    "serviceName": {"type": "keyword"},
    "durationInNanos": {"type": "long"},
    "links": {"type": "nested"},
}
DATA_PREPPER_SPAN_TEMPLATES = [
    {"resource_attributes_map": {"mapping": {"type": "keyword"}, "path_match": "resource.attributes.*"}},
    {"span_attributes_map": {"mapping": {"type": "keyword"}, "path_match": "span.attributes.*"}},
]
# otel-v1-apm-service-map-index-template.json
DATA_PREPPER_SERVICE_MAP = {
    "date_detection": False,
    "dynamic_templates": [
        {
            "strings_as_keyword": {
                "mapping": {"ignore_above": 1024, "type": "keyword"},
                "match_mapping_type": "string",
            }
        }
    ],
    "_source": {"enabled": True},
    "properties": {
        "hashId": {"ignore_above": 1024, "type": "keyword"},
        "serviceName": {"ignore_above": 1024, "type": "keyword"},
        "kind": {"ignore_above": 1024, "type": "keyword"},
        "destination": {
            "properties": {
                "domain": {"ignore_above": 1024, "type": "keyword"},
                "resource": {"ignore_above": 1024, "type": "keyword"},
            }
        },
        "target": {
            "properties": {
                "domain": {"ignore_above": 1024, "type": "keyword"},
                "resource": {"ignore_above": 1024, "type": "keyword"},
            }
        },
        "traceGroupName": {"ignore_above": 1024, "type": "keyword"},
    },
}

CTX = TraceContext(
    account_id="012345678901",
    account_name="prod",
    environment="prod",
    region="us-west-2",
    collected_at=datetime(2024, 9, 22, 11, 0, tzinfo=UTC),
    envelope_id="env-1",
    source="sweep",
    execution=load_fixture("xray/synthesized_describe_execution_failed"),
)


def _sample_traces() -> list[dict]:
    return [
        load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0],
        load_fixture("xray/synthesized_stepfunctions_trace"),
        segment_trace("xray/otel_ddb_sample"),
        segment_trace("xray/awsdocs_annotations_segment", "xray/awsdocs_segment_with_embedded_subsegment"),
    ]


def test_template_names_patterns_and_aliases() -> None:
    templates = mappings.index_templates()
    assert set(templates) == {"xray-traces", "xray-segments", "otel-v1-apm-span", "otel-v1-apm-service-map"}
    assert templates["xray-traces"]["index_patterns"] == ["xray-traces-*"]
    assert templates["xray-traces"]["template"]["aliases"] == {"xray-traces": {}}
    assert templates["xray-segments"]["index_patterns"] == ["xray-segments-*"]
    assert templates["xray-segments"]["template"]["aliases"] == {"xray-segments": {}}
    assert templates["otel-v1-apm-span"]["index_patterns"] == ["otel-v1-apm-span-*"]
    assert templates["otel-v1-apm-span"]["template"]["aliases"] == {"otel-v1-apm-span": {}}
    assert templates["otel-v1-apm-service-map"]["index_patterns"] == ["otel-v1-apm-service-map"]
    for body in templates.values():
        assert body["priority"] > 0
        assert body["version"] == mappings.TEMPLATE_VERSION
        assert set(body) == {"index_patterns", "priority", "version", "template", "_meta"}


def test_prefix_is_applied_to_xray_templates_only() -> None:
    templates = mappings.index_templates(prefix="acme")
    assert {"acme-traces", "acme-segments", "otel-v1-apm-span", "otel-v1-apm-service-map"} == set(templates)
    assert templates["acme-segments"]["template"]["aliases"] == {"acme-segments": {}}
    assert mappings.traces_index("2024.09.22", "acme") == "acme-traces-2024.09.22"
    assert mappings.segments_index("2024.09.22") == "xray-segments-2024.09.22"
    assert mappings.spans_index("2024.09.22") == "otel-v1-apm-span-2024.09.22"


def test_xray_mappings_are_conflict_proof() -> None:
    for name in ("xray-traces", "xray-segments"):
        mapping = mappings.index_templates()[name]["template"]["mappings"]
        assert mapping["dynamic"] is False
        assert mapping["date_detection"] is False
        assert mapping["properties"]["account_id"]["type"] == "keyword"  # 12 digits, leading zeros
        assert mapping["properties"]["trace_id"]["type"] == "keyword"
        assert mapping["properties"]["annotations"] == {"type": "object", "dynamic": True}
        assert resolve_field(mapping, "annotations.anything") == {"type": "keyword", "ignore_above": 1024}
        assert resolve_field(mapping, "annotations_num.anything") == {"type": "double"}
        for field, spec in mapping["properties"].items():
            if spec.get("type") == "keyword":
                assert spec.get("ignore_above"), f"{field}: keyword without ignore_above risks immense terms"


def test_span_template_is_data_preppers() -> None:
    mapping = mappings.span_mapping()
    for field, spec in DATA_PREPPER_SPAN_PROPERTIES.items():
        assert mapping["properties"][field] == spec, field
    assert mapping["properties"]["events"]["type"] == "nested"
    assert mapping["properties"]["events"]["properties"]["time"] == {"type": "date_nanos"}
    for template in DATA_PREPPER_SPAN_TEMPLATES:
        assert template in mapping["dynamic_templates"]
    assert mapping["date_detection"] is False


def test_service_map_template_is_data_preppers() -> None:
    assert mappings.service_map_mapping() == DATA_PREPPER_SERVICE_MAP


@pytest.mark.parametrize(("kind", "fields"), [("trace", mappings.TRACE_FIELDS), ("segment", mappings.SEGMENT_FIELDS)])
def test_transform_emits_exactly_the_mapped_fields(kind: str, fields: dict[str, str]) -> None:
    emitted: set[str] = set()
    for trace in _sample_traces():
        docs = transform_trace(trace, CTX)
        documents = [docs.trace] if kind == "trace" else docs.segments
        for document in documents:
            assert set(document) == set(fields), set(document) ^ set(fields)
            emitted |= set(document)
    assert emitted == set(fields)


def test_every_mapping_field_name_has_a_known_kind() -> None:
    for fields in (mappings.TRACE_FIELDS, mappings.SEGMENT_FIELDS):
        for name, kind in fields.items():
            assert kind in mappings._KINDS, (name, kind)
            assert "." not in name
