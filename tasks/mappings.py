"""OpenSearch index templates matching what `tasks.transform` emits.

Four composable index templates (`PUT _index_template/<name>` bodies):

- `<prefix>-traces`   → daily `<prefix>-traces-YYYY.MM.DD`, read alias `<prefix>-traces`
- `<prefix>-segments` → daily `<prefix>-segments-YYYY.MM.DD`, read alias `<prefix>-segments`
- `otel-v1-apm-span`  → daily `otel-v1-apm-span-YYYY.MM.DD`, read alias `otel-v1-apm-span`
- `otel-v1-apm-service-map` → the single `otel-v1-apm-service-map` index

and the pipeline-health template (`health_index_template()`, `xraylake-health`: one document per
run, written by `tasks.health`, read by the report), installed by `tasks.index.ensure_health_template`.

The xray templates are `dynamic: false` (an unknown field is kept in `_source`, never mapped, so
it can never conflict) except under `annotations` (every value a keyword) and `annotations_num`
(numeric annotation values, as double): whatever value types accounts send, no annotation can
cause a mapping conflict. Field names below are the transform's contract (tests check both ways).

The span and service-map mappings are Data Prepper's `otel-v1-apm-span-index-template.json` and
`otel-v1-apm-service-map-index-template.json` (opensearch-project/data-prepper,
data-prepper-plugins/opensearch/src/main/resources/), so OpenSearch Dashboards' Trace Analytics
reads them as if Data Prepper had written them; fields that the classic span template leaves to
dynamic mapping (`droppedAttributesCount`, `traceState`, event `name`/`attributes`, …) are typed
the way Data Prepper's `otel-v1-apm-span-index-standard-template.json` types them.
"""

from __future__ import annotations

import copy
from typing import Any

TEMPLATE_VERSION = 1
INDEX_PREFIX = "xray"  # `OpenSearchTarget.index_prefix` unless configured otherwise
SPAN_INDEX_PREFIX = "otel-v1-apm-span"
SERVICE_MAP_INDEX = "otel-v1-apm-service-map"

# kind → mapping; `text` is full-text with a `.keyword` sub-field, `blob` is full-text only.
_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_KINDS: dict[str, dict[str, Any]] = {
    "keyword": _KEYWORD,
    "url": {"type": "keyword", "ignore_above": 4096},
    "date": {"type": "date"},
    "double": {"type": "double"},
    "long": {"type": "long"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "text": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
    "blob": {"type": "text"},
    "annotations": {"type": "object", "dynamic": True},
    "annotations_num": {"type": "object", "dynamic": True},
}

CONTEXT_FIELDS: dict[str, str] = {
    "account_id": "keyword",
    "account_name": "keyword",
    "environment": "keyword",
    "region": "keyword",
    "collected_at": "date",
    "envelope_id": "keyword",
    "source": "keyword",
}

TRACE_FIELDS: dict[str, str] = {
    **CONTEXT_FIELDS,
    "trace_id": "keyword",
    "partition_hour": "date",  # the hour every sink files the trace under (tasks.tracetime)
    "start": "date",
    "end": "date",
    "duration": "double",
    "xray_duration": "double",
    "root_segment_id": "keyword",
    "root_service_name": "keyword",
    "root_service_type": "keyword",
    "status": "keyword",
    "has_error": "boolean",
    "has_fault": "boolean",
    "has_throttle": "boolean",
    "http_method": "keyword",
    "http_url": "url",
    "http_status": "long",
    "services": "keyword",
    "source_store": "keyword",  # where the trace was read: xray (the X-Ray API) | spans (aws/spans)
    "instrumentation": "keyword",  # of its segments: xray-sdk | opentelemetry | unknown
    "segment_count": "long",
    "in_progress": "boolean",
    "partial": "boolean",
    "limit_exceeded": "boolean",
    "problem_count": "long",
    "annotations": "annotations",
    "annotations_num": "annotations_num",
    "step_functions": "boolean",
    "execution_arn": "keyword",
    "execution_name": "keyword",
    "state_machine_name": "keyword",
    "state_machine_arn": "keyword",
    "execution_status": "keyword",
    "execution_status_source": "keyword",
    "execution_start": "date",
    "execution_stop": "date",
    "execution_duration_seconds": "double",
    "execution_input": "blob",
    "execution_input_truncated": "boolean",
    "execution_output": "blob",
    "execution_output_truncated": "boolean",
    "execution_error": "keyword",
    "execution_cause": "blob",
}

SEGMENT_FIELDS: dict[str, str] = {
    **CONTEXT_FIELDS,
    "trace_id": "keyword",
    "segment_id": "keyword",
    "parent_id": "keyword",
    "top_segment_id": "keyword",
    "is_subsegment": "boolean",
    "depth": "integer",
    "name": "keyword",
    "service_name": "keyword",
    "source_store": "keyword",
    "instrumentation": "keyword",  # xray-sdk (aws.xray.sdk) | opentelemetry (telemetry.sdk.*) | unknown
    "sdk": "keyword",  # "<name> <version>" of the SDK that made the segment
    "origin": "keyword",
    "namespace": "keyword",
    "inferred": "boolean",
    "start": "date",
    "end": "date",
    "duration": "double",
    "in_progress": "boolean",
    "error": "boolean",
    "fault": "boolean",
    "throttle": "boolean",
    "status": "keyword",
    "http_method": "keyword",
    "http_url": "url",
    "http_status": "long",
    "http_content_length": "long",
    "http_client_ip": "keyword",
    "http_user_agent": "keyword",
    "aws_operation": "keyword",
    "aws_region": "keyword",
    "aws_account_id": "keyword",
    "aws_request_id": "keyword",
    "aws_resource_type": "keyword",
    "aws_resource": "keyword",
    "sql_url": "url",
    "sql_database_type": "keyword",
    "sql_sanitized_query": "text",
    "exception_type": "keyword",
    "exception_message": "text",
    "exception_count": "integer",
    "cause_exception_id": "keyword",
    "user": "keyword",
    "resource_arn": "keyword",
    "annotations": "annotations",
    "annotations_num": "annotations_num",
}

_ANNOTATION_TEMPLATES: list[dict[str, Any]] = [
    {"annotations_as_keyword": {"path_match": "annotations.*", "mapping": dict(_KEYWORD)}},
    {"annotations_num_as_double": {"path_match": "annotations_num.*", "mapping": {"type": "double"}}},
]


def _properties(fields: dict[str, str]) -> dict[str, Any]:
    return {name: copy.deepcopy(_KINDS[kind]) for name, kind in fields.items()}


def xray_mapping(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "dynamic": False,
        "date_detection": False,
        "dynamic_templates": copy.deepcopy(_ANNOTATION_TEMPLATES),
        "properties": _properties(fields),
    }


def span_mapping() -> dict[str, Any]:
    """Data Prepper's classic span mapping (+ the standard template's types for the extra fields)."""
    return {
        "date_detection": False,
        "dynamic_templates": [
            {
                "resource_attributes_map": {
                    "mapping": {"type": "keyword"},
                    "path_match": "resource.attributes.*",
                }
            },
            {"span_attributes_map": {"mapping": {"type": "keyword"}, "path_match": "span.attributes.*"}},
            {"event_attributes_map": {"mapping": {"type": "keyword"}, "path_match": "events.attributes.*"}},
        ],
        "_source": {"enabled": True},
        "properties": {
            "traceId": {"ignore_above": 256, "type": "keyword"},
            "spanId": {"ignore_above": 256, "type": "keyword"},
            "parentSpanId": {"ignore_above": 256, "type": "keyword"},
            "traceState": {"ignore_above": 1024, "type": "keyword"},
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
            "droppedAttributesCount": {"type": "integer"},
            "droppedEventsCount": {"type": "integer"},
            "droppedLinksCount": {"type": "integer"},
            "events": {
                "type": "nested",
                "properties": {
                    "name": {"type": "keyword", "ignore_above": 256},
                    "time": {"type": "date_nanos"},
                    "attributes": {"type": "object"},
                    "droppedAttributesCount": {"type": "integer"},
                },
            },
            "links": {"type": "nested"},
        },
    }


def service_map_mapping() -> dict[str, Any]:
    """Data Prepper's `otel-v1-apm-service-map-index-template.json` mapping."""
    keyword = {"ignore_above": 1024, "type": "keyword"}
    endpoint = {"properties": {"domain": dict(keyword), "resource": dict(keyword)}}
    return {
        "date_detection": False,
        "dynamic_templates": [
            {"strings_as_keyword": {"mapping": dict(keyword), "match_mapping_type": "string"}},
        ],
        "_source": {"enabled": True},
        "properties": {
            "hashId": dict(keyword),
            "serviceName": dict(keyword),
            "kind": dict(keyword),
            "destination": copy.deepcopy(endpoint),
            "target": copy.deepcopy(endpoint),
            "traceGroupName": dict(keyword),
        },
    }


def _template(
    patterns: list[str], mappings: dict[str, Any], alias: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"settings": settings, "mappings": mappings}
    if alias:
        body["aliases"] = {alias: {}}
    return {
        "index_patterns": patterns,
        "priority": 200,
        "version": TEMPLATE_VERSION,
        "template": body,
        "_meta": {"managed_by": "xraylake"},
    }


def index_templates(prefix: str = INDEX_PREFIX) -> dict[str, dict[str, Any]]:
    """Composable `_index_template` bodies by template name."""
    xray_settings = {"index.mapping.total_fields.limit": 2000}
    traces, segments = traces_alias(prefix), segments_alias(prefix)
    return {
        traces: _template([f"{traces}-*"], xray_mapping(TRACE_FIELDS), traces, xray_settings),
        segments: _template([f"{segments}-*"], xray_mapping(SEGMENT_FIELDS), segments, xray_settings),
        SPAN_INDEX_PREFIX: _template([f"{SPAN_INDEX_PREFIX}-*"], span_mapping(), SPAN_INDEX_PREFIX, {}),
        SERVICE_MAP_INDEX: _template([SERVICE_MAP_INDEX], service_map_mapping(), None, {}),
    }


# ---------------------------------------------------------------------- pipeline health

HEALTH_INDEX = "xraylake-health"
HEALTH_FIELDS: dict[str, str] = {
    "kind": "keyword",  # sweep | consume | backfill | replay | collect | reconcile | compact
    "flow_run_id": "keyword",
    "flow_run_name": "keyword",
    "timestamp": "date",
    "account_id": "keyword",
    "account_name": "keyword",
    "region": "keyword",
    "status": "keyword",
    "watermark_lag_seconds": "double",
    "dead_lettered": "long",
    "traces": "long",
    "envelopes": "long",
    "errors": "long",
    "seconds": "double",
}


def health_index_template() -> dict[str, Any]:
    """`PUT _index_template/xraylake-health`: one document per run (and per account for sweeps).

    Unknown fields are mapped dynamically, strings as keywords, so a later field never conflicts.
    """
    mapping = {
        "dynamic": True,
        "date_detection": False,
        "dynamic_templates": [{"strings_as_keyword": {"match_mapping_type": "string", "mapping": dict(_KEYWORD)}}],
        "properties": _properties(HEALTH_FIELDS),
    }
    return _template([HEALTH_INDEX, f"{HEALTH_INDEX}-*"], mapping, None, {})


# ---------------------------------------------------------------------- index names


def traces_alias(prefix: str = INDEX_PREFIX) -> str:
    """The read alias over every daily traces index (and the traces template's name)."""
    return f"{prefix}-traces"


def segments_alias(prefix: str = INDEX_PREFIX) -> str:
    """The read alias over every daily segments index (and the segments template's name)."""
    return f"{prefix}-segments"


def traces_index(day: str, prefix: str = INDEX_PREFIX) -> str:
    """`day` is `YYYY.MM.DD` (TraceDocuments.day)."""
    return f"{traces_alias(prefix)}-{day}"


def segments_index(day: str, prefix: str = INDEX_PREFIX) -> str:
    return f"{segments_alias(prefix)}-{day}"


def spans_index(day: str) -> str:
    return f"{SPAN_INDEX_PREFIX}-{day}"
