"""What the transform takes and gives (pure): `TraceContext` in, `TraceDocuments` out, and the
`IndexRequest`s those documents become (field names are the contract in `tasks.mappings`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks import mappings
from tasks.servicemap_v2 import service_map_v2
from tasks.spans_standard import standard_spans

__all__ = ["IndexRequest", "TraceContext", "TraceDocuments"]


@dataclass(frozen=True, slots=True)
class TraceContext:
    """Where a trace came from (the envelope plus the roster's names for the account)."""

    account_id: str
    account_name: str
    environment: str
    region: str
    collected_at: datetime
    envelope_id: str
    source: str
    execution: dict[str, Any] | None = None  # Step Functions DescribeExecution output


@dataclass(frozen=True, slots=True)
class IndexRequest:
    index: str
    doc_id: str
    source: dict[str, Any]
    kind: str  # traces | segments | spans | service-map


@dataclass(slots=True)
class TraceDocuments:
    """Everything one trace becomes. `problems` lists what could not be mapped."""

    trace_id: str
    account_id: str
    region: str
    day: str  # YYYY.MM.DD: daily index suffix
    dt: str  # YYYY-MM-DD: Parquet partition
    hour: str  # HH: Parquet partition
    version: int  # collected_at in epoch ms (external versioning)
    trace: dict[str, Any]
    segments: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    service_map: list[dict[str, Any]]
    problems: list[dict[str, str | None]]
    # Parquet-only columns, parallel to `segments`: the original Document string (top-level
    # segments only; subsegments live inside it), the typed annotations and the links as JSON.
    segment_documents: list[str | None] = field(default_factory=list)
    segment_annotations: list[str | None] = field(default_factory=list)
    segment_links: list[str | None] = field(default_factory=list)  # the (sub)segment's `links` as JSON
    trace_annotations: str | None = None

    # Every id a member account can influence starts with the account: trace and segment ids
    # travel in request headers, so without it one roster account could overwrite another's
    # documents by reusing its ids (a newer collected_at wins the external version).
    @property
    def trace_doc_id(self) -> str:
        return f"{self.account_id}:{self.trace_id}"

    def segment_doc_id(self, segment: dict[str, Any]) -> str:
        return f"{self.account_id}:{self.trace_id}:{segment['segment_id']}"

    def span_doc_id(self, span: dict[str, Any]) -> str:
        return f"{self.account_id}:{span['traceId']}{span['spanId']}"

    def index_requests(
        self,
        prefix: str = "xray",
        generation: str = "legacy",
        profile: str = "both",
        service_map_bucket_seconds: int = 60,
    ) -> Iterator[IndexRequest]:
        """Every document with its index and id (version them all with `self.version`), for the
        index families of `profile` and the span schema `generation` (`tasks.mappings`); v2
        service-map documents in buckets of `service_map_bucket_seconds` of span time."""
        families = mappings.profile_families(profile)
        if "xray" in families:
            yield IndexRequest(mappings.traces_index(self.day, prefix), self.trace_doc_id, self.trace, "traces")
            segment_index = mappings.segments_index(self.day, prefix)
            segment_prefix = f"{self.account_id}:{self.trace_id}:"
            for segment in self.segments:
                yield IndexRequest(segment_index, segment_prefix + segment["segment_id"], segment, "segments")
        if "trace-analytics" not in families:
            return
        span_index = mappings.spans_index(self.day)
        span_prefix = f"{self.account_id}:"
        if mappings.check_generation(generation) == "standard":
            spans = standard_spans(self.spans)
            for span in spans:
                yield IndexRequest(span_index, f"{span_prefix}{span['traceId']}{span['spanId']}", span, "spans")
            for doc_id, doc in service_map_v2(spans, granularity_seconds=service_map_bucket_seconds):
                day = doc["timestamp"][:10].replace("-", ".")  # span time, not the trace's day
                yield IndexRequest(mappings.service_map_v2_index(day), doc_id, doc, "service-map")
            return
        for span in self.spans:
            yield IndexRequest(span_index, f"{span_prefix}{span['traceId']}{span['spanId']}", span, "spans")
        for relation in self.service_map:
            yield IndexRequest(mappings.SERVICE_MAP_INDEX, relation["hashId"], relation, "service-map")
