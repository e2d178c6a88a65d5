"""Index templates: shape, Data Prepper compatibility, and field-for-field agreement with the transform."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tasks import mappings
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import _value_error, load_fixture, resolve_field, segment_trace

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


# ---------------------------------------------------------------------- generations and profiles
# tests/fixtures/opensearch/ holds Data Prepper's own template files (source and commit in its
# README.md): what xraylake installs is compared with them field by field.


def _leaves(node: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a mapping, by dotted path (`properties.traceId.type` → `keyword`)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{path}.{key}" if path else key))
        return out
    if isinstance(node, list):
        out = {}
        for index, value in enumerate(node):
            out.update(_leaves(value, f"{path}[{index}]"))
        return out
    return {path: node}


@pytest.mark.parametrize(
    ("fixture", "ours"),
    [
        ("otel-v1-apm-span-index-standard-template", mappings.standard_span_mapping),
        ("otel-v2-apm-service-map-index-template", mappings.service_map_v2_mapping),
        ("otel-v1-apm-service-map-index-template", mappings.service_map_mapping),
    ],
)
def test_generation_templates_match_data_preppers_files_field_by_field(fixture: str, ours: Any) -> None:
    theirs = _leaves(load_fixture(f"opensearch/{fixture}")["mappings"])
    mine = _leaves(ours())
    assert theirs  # the fixture was read
    missing = {path: value for path, value in theirs.items() if mine.get(path) != value}
    extra = {path: value for path, value in mine.items() if path not in theirs}
    assert not missing, f"differs from Data Prepper's {fixture}: {missing}"
    assert not extra, f"not in Data Prepper's {fixture}: {extra}"


def test_legacy_span_template_keeps_every_field_of_data_preppers_file() -> None:
    """The legacy span mapping is Data Prepper's classic file plus types for fields it leaves to
    dynamic mapping: every leaf of the file is there with the same value."""
    theirs = _leaves(load_fixture("opensearch/otel-v1-apm-span-index-template")["mappings"])
    mine = _leaves(mappings.span_mapping())
    assert {path: value for path, value in theirs.items() if mine.get(path) != value} == {}


def test_generation_chooses_span_and_service_map_templates() -> None:
    legacy = mappings.index_templates(generation="legacy")
    standard = mappings.index_templates(generation="standard")
    assert set(legacy) == {"xray-traces", "xray-segments", "otel-v1-apm-span", "otel-v1-apm-service-map"}
    assert set(standard) == {"xray-traces", "xray-segments", "otel-v1-apm-span", "otel-v2-apm-service-map"}
    assert standard["otel-v1-apm-span"]["template"]["mappings"] == mappings.standard_span_mapping()
    assert standard["otel-v1-apm-span"]["template"]["aliases"] == {"otel-v1-apm-span": {}}
    assert standard["otel-v1-apm-span"]["_meta"]["generation"] == "standard"
    assert legacy["otel-v1-apm-span"]["_meta"]["generation"] == "legacy"
    v2 = standard["otel-v2-apm-service-map"]
    assert v2["index_patterns"] == ["otel-v2-apm-service-map-*"]
    assert v2["template"]["aliases"] == {"otel-v2-apm-service-map": {}}
    assert mappings.service_map_v2_index("2024.09.22") == "otel-v2-apm-service-map-2024.09.22"


def test_profiles_choose_index_families() -> None:
    assert set(mappings.index_templates(profile="xray")) == {"xray-traces", "xray-segments"}
    assert set(mappings.index_templates(profile="trace-analytics", generation="standard")) == {
        "otel-v1-apm-span",
        "otel-v2-apm-service-map",
    }
    assert mappings.profile_kinds("both") == {"traces", "segments", "spans", "service-map"}
    assert mappings.profile_kinds("xray") == {"traces", "segments"}
    assert mappings.profile_kinds("trace-analytics") == {"spans", "service-map"}


def test_unknown_generation_or_profile_is_named() -> None:
    with pytest.raises(ValueError, match="unknown span schema generation 'v3': expected one of legacy, standard"):
        mappings.index_templates(generation="v3")
    with pytest.raises(ValueError, match="unknown index profile 'spans': expected one of both, xray, trace-analytics"):
        mappings.index_templates(profile="spans")


def test_mapping_generation_recognises_both_templates() -> None:
    assert mappings.mapping_generation(mappings.span_mapping()) == "legacy"
    assert mappings.mapping_generation(mappings.standard_span_mapping()) == "standard"
    standard_file = load_fixture("opensearch/otel-v1-apm-span-index-standard-template")["mappings"]
    legacy_file = load_fixture("opensearch/otel-v1-apm-span-index-template")["mappings"]
    assert mappings.mapping_generation(standard_file) == "standard"
    assert mappings.mapping_generation(legacy_file) == "legacy"


def _under_dynamic_object(mapping: dict[str, Any], path: str) -> bool:
    """Whether `path` lies in an object the template declares without properties (`events.attributes`):
    OpenSearch maps what is inside by its default dynamic mapping."""
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        spec = resolve_field(mapping, ".".join(parts[:end]))
        if spec is not None and spec.get("type") == "object" and "properties" not in spec:
            return True
    return False


def _leaf_errors(doc: dict[str, Any], mapping: dict[str, Any], prefix: str = "") -> list[str]:
    """Like `mapping_errors`, for documents whose objects are left to dynamic mapping (the
    standard template declares no `attributes` object: its typed dynamic templates map each leaf)."""
    errors: list[str] = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        spec = resolve_field(mapping, path, None if isinstance(value, dict | list) else value)
        if isinstance(value, dict):
            errors += _leaf_errors(value, mapping, f"{path}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            if spec is None or spec.get("type") != "nested":
                errors.append(f"{path}: a list of objects that is not nested")
            for item in value:
                errors += _leaf_errors(item, mapping, f"{path}.")
        elif spec is None:
            if not _under_dynamic_object(mapping, path):
                errors.append(f"{path}: not in the mapping")
        elif value is not None and not isinstance(value, list):
            kind = spec.get("type", "object")
            if kind == "keyword" and "ignore_above" not in spec and not isinstance(value, str):
                errors.append(f"{path}: {value!r} is not a keyword")
            elif kind != "date":
                errors += [e for e in [_value_error(path, value, kind)] if e]
    return errors


def test_standard_documents_fit_data_preppers_standard_template() -> None:
    """Every field of every standard span and v2 service-map document the sample traces become is
    mapped by Data Prepper's own file (explicitly or by a typed dynamic template) with its type."""
    span_mapping = load_fixture("opensearch/otel-v1-apm-span-index-standard-template")["mappings"]
    map_mapping = load_fixture("opensearch/otel-v2-apm-service-map-index-template")["mappings"]
    spans = service_map = 0
    for trace in _sample_traces():
        requests = list(transform_trace(trace, CTX).index_requests(generation="standard", profile="trace-analytics"))
        for request in requests:
            if request.kind == "spans":
                spans += 1
                assert _leaf_errors(request.source, span_mapping) == [], request.source
            else:
                assert request.kind == "service-map"
                service_map += 1
                doc = dict(request.source)
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", doc.pop("timestamp"))  # ISO_INSTANT
                assert _leaf_errors(doc, map_mapping) == [], doc
    assert spans > 20 and service_map > 3


def test_ism_policies_one_per_family_of_the_profile() -> None:
    both = mappings.ism_policies(14, generation="standard")
    assert set(both) == {
        "xraylake-xray-traces",
        "xraylake-xray-segments",
        "xraylake-spans",
        "xraylake-service-map",
    }
    policy = both["xraylake-spans"]["policy"]
    assert policy["ism_template"] == [{"index_patterns": ["otel-v1-apm-span-*"], "priority": 100}]
    assert policy["states"][0]["transitions"] == [{"state_name": "delete", "conditions": {"min_index_age": "14d"}}]
    assert policy["states"][1]["actions"] == [{"delete": {}}]
    # the legacy service map is one aggregate index: nothing to delete by age
    assert set(mappings.ism_policies(14, profile="trace-analytics")) == {"xraylake-spans"}
    assert set(mappings.ism_policies(14, prefix="acme", profile="xray")) == {
        "xraylake-acme-traces",
        "xraylake-acme-segments",
    }
    with pytest.raises(ValueError, match="delete_after_days must be at least 1, got 0"):
        mappings.ism_policies(0)
