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

Span schema generations (`OpenSearchTarget.span_generation`): `legacy` is the pair below;
`standard` is Data Prepper's `otel-v1-apm-span-index-standard-template.json` (same
`otel-v1-apm-span` alias, typed `attributes.*`, `instrumentationScope`, `@timestamp`) and
`otel-v2-apm-service-map-index-template.json` (daily `otel-v2-apm-service-map-YYYY.MM.DD` by span
time, read alias `otel-v2-apm-service-map`), both exactly as in Data Prepper's repository
(tests compare them with copies in tests/fixtures/opensearch). The two span mappings never share
the alias: `tasks.index.ensure_templates` refuses (`mapping_generation` tells them apart).
Index profiles (`OpenSearchTarget.index_profile`, `PROFILES`): `xray` (traces + segments),
`trace-analytics` (spans + service map) or `both`. `ism_policies` are the lifecycle policies per
index family (delete after N days).

The legacy span and service-map mappings are Data Prepper's `otel-v1-apm-span-index-template.json` and
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
SERVICE_MAP_V2_ALIAS = "otel-v2-apm-service-map"  # daily `otel-v2-apm-service-map-YYYY.MM.DD` by span time

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
    patterns: list[str],
    mappings: dict[str, Any],
    alias: str | None,
    settings: dict[str, Any],
    meta: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"settings": settings, "mappings": mappings}
    if alias:
        body["aliases"] = {alias: {}}
    return {
        "index_patterns": patterns,
        "priority": 200,
        "version": TEMPLATE_VERSION,
        "template": body,
        "_meta": {"managed_by": "xraylake", **(meta or {})},
    }


def index_templates(
    prefix: str = INDEX_PREFIX, generation: str = "legacy", profile: str = "both"
) -> dict[str, dict[str, Any]]:
    """Composable `_index_template` bodies by template name, for the families `profile` writes
    (`PROFILES`) in span schema `generation` (`GENERATIONS`)."""
    check_generation(generation)
    families = profile_families(profile)
    templates: dict[str, dict[str, Any]] = {}
    if "xray" in families:
        xray_settings = {"index.mapping.total_fields.limit": 2000}
        traces, segments = traces_alias(prefix), segments_alias(prefix)
        templates[traces] = _template([f"{traces}-*"], xray_mapping(TRACE_FIELDS), traces, xray_settings)
        templates[segments] = _template([f"{segments}-*"], xray_mapping(SEGMENT_FIELDS), segments, xray_settings)
    if "trace-analytics" in families:
        meta = {"generation": generation}
        if generation == "legacy":
            span = span_mapping()
            templates[SERVICE_MAP_INDEX] = _template([SERVICE_MAP_INDEX], service_map_mapping(), None, {}, meta)
        else:
            span = standard_span_mapping()
            templates[SERVICE_MAP_V2_ALIAS] = _template(
                [f"{SERVICE_MAP_V2_ALIAS}-*"], service_map_v2_mapping(), SERVICE_MAP_V2_ALIAS, {}, meta
            )
        templates[SPAN_INDEX_PREFIX] = _template([f"{SPAN_INDEX_PREFIX}-*"], span, SPAN_INDEX_PREFIX, {}, meta)
    return templates


# ---------------------------------------------------------------------- generations and profiles

GENERATIONS = ("legacy", "standard")
# index profile → the index families it writes; "xray" = traces + segments, "trace-analytics" =
# spans + service map. Parquet and the raw archive are written whatever the profile.
PROFILES: dict[str, frozenset[str]] = {
    "both": frozenset({"xray", "trace-analytics"}),
    "xray": frozenset({"xray"}),
    "trace-analytics": frozenset({"trace-analytics"}),
}
FAMILY_KINDS: dict[str, frozenset[str]] = {
    "xray": frozenset({"traces", "segments"}),
    "trace-analytics": frozenset({"spans", "service-map"}),
}


def check_generation(generation: str) -> str:
    if generation not in GENERATIONS:
        raise ValueError(f"unknown span schema generation {generation!r}: expected one of {', '.join(GENERATIONS)}")
    return generation


def profile_families(profile: str) -> frozenset[str]:
    families = PROFILES.get(profile)
    if families is None:
        raise ValueError(f"unknown index profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return families


def profile_kinds(profile: str) -> frozenset[str]:
    """The document kinds (`IndexRequest.kind`) a profile writes."""
    return frozenset(kind for family in profile_families(profile) for kind in FAMILY_KINDS[family])


def mapping_generation(mapping: dict[str, Any]) -> str:
    """Which span schema an existing span index has, from its mapping: the standard template maps
    `instrumentationScope` (and typed `attributes.*`), the legacy one keywords `span.attributes.*`."""
    properties = mapping.get("properties") or {}
    if "instrumentationScope" in properties or "@timestamp" in properties:
        return "standard"
    for entry in mapping.get("dynamic_templates") or []:
        for rule in entry.values():
            if isinstance(rule, dict) and str(rule.get("path_match", "")).startswith("attributes."):
                return "standard"
    return "legacy"


def standard_span_mapping() -> dict[str, Any]:
    """Data Prepper's `otel-v1-apm-span-index-standard-template.json` mapping, as it is."""

    def typed(scope: str, prefix: str) -> list[dict[str, Any]]:
        return [
            {f"long_{scope}": {"mapping": {"type": "long"}, "path_match": prefix, "match_mapping_type": "long"}},
            {
                f"double_{scope}": {
                    "mapping": {"type": "double"},
                    "path_match": prefix,
                    "match_mapping_type": "double",
                }
            },
            {
                f"string_{scope}": {
                    "mapping": {"type": "keyword", "ignore_above": 256},
                    "path_match": prefix,
                    "match_mapping_type": "string",
                }
            },
        ]

    def kw(limit: int) -> dict[str, Any]:
        return {"type": "keyword", "ignore_above": limit}

    nanos = {"type": "date_nanos"}
    integer = {"type": "integer"}
    return {
        "date_detection": False,
        "_source": {"enabled": True},
        "dynamic_templates": [
            *typed("resource_attributes", "resource.attributes.*"),
            *typed("scope_attributes", "instrumentationScope.attributes.*"),
            *typed("attributes", "attributes.*"),
        ],
        "properties": {
            "droppedAttributesCount": dict(integer),
            "instrumentationScope": {
                "properties": {
                    "droppedAttributesCount": dict(integer),
                    "schemaUrl": kw(256),
                    "name": kw(128),
                    "version": kw(64),
                }
            },
            "resource": {"properties": {"droppedAttributesCount": dict(integer), "schemaUrl": kw(256)}},
            "traceId": kw(32),
            "spanId": kw(16),
            "parentSpanId": kw(16),
            "name": kw(1024),
            "traceState": kw(1024),
            "traceGroup": kw(1024),
            "traceGroupFields": {
                "properties": {"endTime": dict(nanos), "durationInNanos": {"type": "long"}, "statusCode": dict(integer)}
            },
            "kind": kw(32),
            "serviceName": kw(256),
            "startTime": dict(nanos),
            "endTime": dict(nanos),
            "@timestamp": dict(nanos),
            "time": dict(nanos),
            "status": {"properties": {"code": dict(integer), "message": kw(2048)}},
            "durationInNanos": {"type": "long"},
            "events": {
                "type": "nested",
                "properties": {
                    "name": kw(256),
                    "attributes": {"type": "object"},
                    "droppedAttributesCount": dict(integer),
                    "time": dict(nanos),
                },
            },
            "droppedEventsCount": dict(integer),
            "links": {
                "type": "nested",
                "properties": {
                    "traceId": kw(32),
                    "spanId": kw(16),
                    "traceState": kw(1024),
                    "attributes": {"type": "object"},
                    "droppedAttributesCount": dict(integer),
                },
            },
            "droppedLinksCount": dict(integer),
        },
    }


def service_map_v2_mapping() -> dict[str, Any]:
    """Data Prepper's `otel-v2-apm-service-map-index-template.json` mapping, as it is."""

    def typed(scope: str, path: str) -> list[dict[str, Any]]:
        return [
            {f"{kind}_{scope}": {"path_match": path, "match_mapping_type": kind, "mapping": {"type": mapped}}}
            for kind, mapped in (("long", "long"), ("double", "double"), ("string", "keyword"))
        ]

    def node() -> dict[str, Any]:
        return {
            "properties": {
                "type": {"type": "keyword"},
                "keyAttributes": {"properties": {"environment": {"type": "keyword"}, "name": {"type": "keyword"}}},
                "groupByAttributes": {"type": "object", "dynamic": "true"},
            }
        }

    def operation() -> dict[str, Any]:
        return {"properties": {"name": {"type": "keyword"}, "attributes": {"type": "object", "dynamic": "true"}}}

    return {
        "date_detection": False,
        "dynamic_templates": [
            *typed("group_by_attributes", "*.groupByAttributes.*"),
            *typed("operation_attributes", "*.attributes.*"),
        ],
        "_source": {"enabled": True},
        "properties": {
            "sourceNode": node(),
            "targetNode": node(),
            "sourceOperation": operation(),
            "targetOperation": operation(),
            "nodeConnectionHash": {"type": "keyword"},
            "operationConnectionHash": {"type": "keyword"},
            "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
        },
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


def service_map_v2_index(day: str) -> str:
    return f"{SERVICE_MAP_V2_ALIAS}-{day}"


# ---------------------------------------------------------------------- index lifecycle (ISM)


def family_patterns(prefix: str = INDEX_PREFIX, generation: str = "legacy", profile: str = "both") -> dict[str, str]:
    """Index family → the pattern of its dated indices, for the families a profile writes.

    The legacy service map is one aggregate index (`otel-v1-apm-service-map`), not dated: no
    age-based lifecycle applies to it.
    """
    families = profile_families(profile)
    patterns: dict[str, str] = {}
    if "xray" in families:
        patterns["traces"] = f"{traces_alias(prefix)}-*"
        patterns["segments"] = f"{segments_alias(prefix)}-*"
    if "trace-analytics" in families:
        patterns["spans"] = f"{SPAN_INDEX_PREFIX}-*"
        if check_generation(generation) == "standard":
            patterns["service-map"] = f"{SERVICE_MAP_V2_ALIAS}-*"
    return patterns


def ism_policies(
    delete_after_days: int, prefix: str = INDEX_PREFIX, generation: str = "legacy", profile: str = "both"
) -> dict[str, dict[str, Any]]:
    """One ISM policy per index family (`PUT _plugins/_ism/policies/<id>` bodies by policy id):
    `hot` → `delete` once the index is `delete_after_days` old. The indices are daily (named by
    trace/span time), not rollover-managed, so there is no rollover state; `ism_template` attaches
    the policy to every new index of the family. The age ISM counts is the index's creation time:
    a backfill into an old day's index keeps it `delete_after_days` from the backfill."""
    if delete_after_days < 1:
        raise ValueError(f"delete_after_days must be at least 1, got {delete_after_days}")
    policies: dict[str, dict[str, Any]] = {}
    for family, pattern in family_patterns(prefix, generation, profile).items():
        policy_id = f"xraylake-{prefix}-{family}" if family in ("traces", "segments") else f"xraylake-{family}"
        policies[policy_id] = {
            "policy": {
                "description": f"xraylake {family} ({pattern}): delete after {delete_after_days} days",
                "default_state": "hot",
                "states": [
                    {
                        "name": "hot",
                        "actions": [],
                        "transitions": [
                            {"state_name": "delete", "conditions": {"min_index_age": f"{delete_after_days}d"}}
                        ],
                    },
                    {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
                ],
                "ism_template": [{"index_patterns": [pattern], "priority": 100}],
            }
        }
    return policies
