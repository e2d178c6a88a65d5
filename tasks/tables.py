"""Trace documents → Arrow (pure): `to_arrow([...])` → (traces, segments) tables with
`TRACE_SCHEMA` / `SEGMENT_SCHEMA`, built column by column (the Parquet layout of the lake)."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import pyarrow as pa

from tasks.trace_model import TraceDocuments

__all__ = ["SEGMENT_SCHEMA", "TRACE_SCHEMA", "to_arrow"]

_TS = pa.timestamp("us", tz="UTC")

TRACE_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("account_name", pa.string()),
        pa.field("environment", pa.string()),
        pa.field("region", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("start", _TS),
        pa.field("end", _TS),
        pa.field("duration", pa.float64()),
        pa.field("xray_duration", pa.float64()),
        pa.field("root_segment_id", pa.string()),
        pa.field("root_service_name", pa.string()),
        pa.field("root_service_type", pa.string()),
        pa.field("status", pa.string()),
        pa.field("has_error", pa.bool_()),
        pa.field("has_fault", pa.bool_()),
        pa.field("has_throttle", pa.bool_()),
        pa.field("http_method", pa.string()),
        pa.field("http_url", pa.string()),
        pa.field("http_status", pa.int64()),
        pa.field("services", pa.list_(pa.string())),
        pa.field("source_store", pa.string()),
        pa.field("instrumentation", pa.list_(pa.string())),
        pa.field("segment_count", pa.int64()),
        pa.field("in_progress", pa.bool_()),
        pa.field("partial", pa.bool_()),
        pa.field("limit_exceeded", pa.bool_()),
        pa.field("problem_count", pa.int64()),
        pa.field("annotations", pa.string()),  # JSON, typed values; several values → a list
        pa.field("step_functions", pa.bool_()),
        pa.field("execution_arn", pa.string()),
        pa.field("execution_name", pa.string()),
        pa.field("state_machine_name", pa.string()),
        pa.field("state_machine_arn", pa.string()),
        pa.field("execution_status", pa.string()),
        pa.field("execution_status_source", pa.string()),
        pa.field("execution_start", _TS),
        pa.field("execution_stop", _TS),
        pa.field("execution_duration_seconds", pa.float64()),
        pa.field("execution_input", pa.string()),
        pa.field("execution_input_truncated", pa.bool_()),
        pa.field("execution_output", pa.string()),
        pa.field("execution_output_truncated", pa.bool_()),
        pa.field("execution_error", pa.string()),
        pa.field("execution_cause", pa.string()),
        pa.field("collected_at", _TS, nullable=False),
        pa.field("envelope_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("dt", pa.string(), nullable=False),
        pa.field("hour", pa.string(), nullable=False),
    ]
)

SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("account_name", pa.string()),
        pa.field("environment", pa.string()),
        pa.field("region", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("parent_id", pa.string()),
        pa.field("top_segment_id", pa.string()),
        pa.field("is_subsegment", pa.bool_()),
        pa.field("depth", pa.int32()),
        pa.field("name", pa.string()),
        pa.field("service_name", pa.string()),
        pa.field("source_store", pa.string()),
        pa.field("instrumentation", pa.string()),
        pa.field("sdk", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("inferred", pa.bool_()),
        pa.field("start", _TS),
        pa.field("end", _TS),
        pa.field("duration", pa.float64()),
        pa.field("in_progress", pa.bool_()),
        pa.field("error", pa.bool_()),
        pa.field("fault", pa.bool_()),
        pa.field("throttle", pa.bool_()),
        pa.field("status", pa.string()),
        pa.field("http_method", pa.string()),
        pa.field("http_url", pa.string()),
        pa.field("http_status", pa.int64()),
        pa.field("http_content_length", pa.int64()),
        pa.field("http_client_ip", pa.string()),
        pa.field("http_user_agent", pa.string()),
        pa.field("aws_operation", pa.string()),
        pa.field("aws_region", pa.string()),
        pa.field("aws_account_id", pa.string()),
        pa.field("aws_request_id", pa.string()),
        pa.field("aws_resource_type", pa.string()),
        pa.field("aws_resource", pa.string()),
        pa.field("sql_url", pa.string()),
        pa.field("sql_database_type", pa.string()),
        pa.field("sql_sanitized_query", pa.string()),
        pa.field("exception_type", pa.string()),
        pa.field("exception_message", pa.string()),
        pa.field("exception_count", pa.int32()),
        pa.field("cause_exception_id", pa.string()),
        pa.field("user", pa.string()),
        pa.field("resource_arn", pa.string()),
        pa.field("annotations", pa.string()),  # JSON, typed values
        # JSON, the segment's `links` as sent ([{trace_id, id, attributes}]); files written before
        # this column existed read it as null (by-name reads, `concat_tables(promote_options=…)`)
        pa.field("links", pa.string()),
        pa.field("collected_at", _TS, nullable=False),
        pa.field("envelope_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("document", pa.string()),  # the original segment Document (top-level rows only)
        pa.field("dt", pa.string(), nullable=False),
        pa.field("hour", pa.string(), nullable=False),
    ]
)

# Columns that do not come straight from the OpenSearch document of the same name.
_ARROW_SPECIAL = frozenset({"annotations", "document", "dt", "hour", "links"})


def _values(docs: list[dict[str, Any]], name: str) -> list[Any]:
    """One column's values: documents are built from complete templates, so `itemgetter` over
    `map` (no Python frame per row) works; any document lacking the key falls back to `.get`."""
    try:
        return list(map(itemgetter(name), docs))
    except KeyError:
        return [doc.get(name) for doc in docs]


def _column(values: list[Any], data_type: pa.DataType) -> pa.Array:
    if data_type == _TS:  # ISO strings → timestamps, vectorised
        return pa.array(values, pa.string()).cast(_TS)
    return pa.array(values, data_type)


def to_arrow(docs_list: Sequence[TraceDocuments]) -> tuple[pa.Table, pa.Table]:
    """(traces, segments) tables with TRACE_SCHEMA / SEGMENT_SCHEMA, built column by column."""
    traces = [docs.trace for docs in docs_list]
    trace_columns: list[pa.Array] = []
    for schema_field in TRACE_SCHEMA:
        name = schema_field.name
        if name == "annotations":
            values: list[Any] = [docs.trace_annotations for docs in docs_list]
        elif name == "dt":
            values = [docs.dt for docs in docs_list]
        elif name == "hour":
            values = [docs.hour for docs in docs_list]
        else:
            values = _values(traces, name)
        trace_columns.append(_column(values, schema_field.type))
    traces_table = pa.Table.from_arrays(trace_columns, schema=TRACE_SCHEMA)

    segments = [segment for docs in docs_list for segment in docs.segments]
    segment_columns: list[pa.Array] = []
    for schema_field in SEGMENT_SCHEMA:
        name = schema_field.name
        if name == "annotations":
            values = [value for docs in docs_list for value in _padded(docs.segment_annotations, docs.segments)]
        elif name == "links":
            values = [value for docs in docs_list for value in _padded(docs.segment_links, docs.segments)]
        elif name == "document":
            values = [value for docs in docs_list for value in _padded(docs.segment_documents, docs.segments)]
        elif name == "dt":
            values = [docs.dt for docs in docs_list for _ in docs.segments]
        elif name == "hour":
            values = [docs.hour for docs in docs_list for _ in docs.segments]
        else:
            values = _values(segments, name)
        segment_columns.append(_column(values, schema_field.type))
    segments_table = pa.Table.from_arrays(segment_columns, schema=SEGMENT_SCHEMA)
    return traces_table, segments_table


def _padded(values: list[str | None], segments: list[dict[str, Any]]) -> list[str | None]:
    if len(values) == len(segments):
        return values
    return (values + [None] * len(segments))[: len(segments)]
