"""One envelope → all its documents (pure): the transform per trace, Arrow tables, index actions.

Memory bound: the documents of a trace take many times the JSON they come from (bench B4: a
50 MB segment document took the consumer to ~940 MB), so `transform_envelope` transforms a
segment document only when it is at most `max_document_bytes` long (default 4 MiB; X-Ray's own
limit is 64 kB) and fits in what is left of the envelope's `document_budget_bytes` (default 8 MiB,
counted over the documents in envelope order). A document that does not is not parsed — not even
to redact it — and so not indexed or written to Parquet: it stays whole, only in the raw archive,
which is always written from the envelope's bytes (replay with larger limits recovers it). Its
trace says so: `partial` is true, and a problem per document is counted in `problem_count` and
listed in the problems. Truncation, not streaming: one trace's segments refer to each other, so a
trace is transformed whole or its oversize documents are left out. Sizes are counted in characters
of the Document string; the consumer's own parse (`envelope.load_json(omit_strings_over=…)`)
never even materialises a string over the limit (counted there in bytes as sent, escapes
included) and leaves a marker that is read here (`envelope.omitted_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import pyarrow as pa

from blocks import MemberAccount
from tasks.envelope import SCHEMA_SPANS_V1, Envelope, omitted_size
from tasks.ids import trace_id_problem
from tasks.index import IndexAction
from tasks.redact import RedactionPolicy, redact_trace
from tasks.spans import SpanTrace, parse_span_records, transform_span_trace
from tasks.tables import to_arrow
from tasks.trace_model import TraceContext, TraceDocuments
from tasks.transform import transform_trace

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
DOCUMENT_BUDGET_BYTES = 8 * 1024 * 1024


@dataclass
class EnvelopeDocuments:
    envelope_id: str
    documents: list[TraceDocuments]
    problems: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)  # traces refused whole: {trace_id, reason}
    records_rejected: int = 0  # span records refused alone (also among `problems`)

    @property
    def traces(self) -> list[dict[str, Any]]:
        return [d.trace for d in self.documents]

    @property
    def segments(self) -> list[dict[str, Any]]:
        return [s for d in self.documents for s in d.segments]

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [s for d in self.documents for s in d.spans]

    @cached_property
    def _tables(self) -> tuple[pa.Table, pa.Table]:
        return to_arrow(self.documents)

    def arrow(self, table: str) -> pa.Table:
        traces, segments = self._tables
        return traces if table == "traces" else segments

    def index_actions(
        self,
        version: int,
        prefix: str = "xray",
        generation: str = "legacy",
        profile: str = "both",
        service_map_bucket_seconds: int = 60,
    ) -> list[IndexAction]:
        actions = []
        service_map: set[tuple[str, str]] = set()
        for docs in self.documents:
            for request in docs.index_requests(prefix, generation, profile, service_map_bucket_seconds):
                kind = request.kind
                if kind == "service-map":
                    # ids come from the content (hashId, or the v2 document's hash): the same
                    # relationship from several traces of the envelope is one write
                    key = (request.index, request.doc_id)
                    if key in service_map:
                        continue
                    service_map.add(key)
                # The service map is an aggregate across traces: last writer wins, no versioning.
                actions.append(
                    IndexAction(
                        request.index,
                        request.doc_id,
                        version,
                        request.source,
                        kind,
                        versioned=kind != "service-map",
                    )
                )
        return actions


def context_for(envelope: Envelope, account: MemberAccount) -> TraceContext:
    return TraceContext(
        account_id=envelope.account_id,
        account_name=account.name,
        environment=account.environment,
        region=envelope.region,
        collected_at=envelope.collected_at,
        envelope_id=envelope.envelope_id,
        source=envelope.source,
        execution=envelope.execution,
    )


def transform_envelope(
    envelope: Envelope,
    account: MemberAccount,
    redaction: RedactionPolicy,
    execution_for: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    *,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
    document_budget_bytes: int = DOCUMENT_BUDGET_BYTES,
) -> EnvelopeDocuments:
    """`execution_for(trace)` supplies Step Functions details when the envelope has none.
    Documents past the limits stay in the raw archive only (module docstring)."""
    ctx = context_for(envelope, account)
    if envelope.schema_ == SCHEMA_SPANS_V1:
        return _transform_spans(envelope, ctx, redaction, execution_for, max_document_bytes)
    documents = []
    rejected = []
    budget = document_budget_bytes
    for trace in envelope.traces:
        refused = trace_id_problem(trace.get("Id"))
        if refused is not None:  # kept in the raw archive (lossless), never indexed
            rejected.append({"trace_id": repr(trace.get("Id"))[:80], "reason": refused})
            continue
        trace, left_out, budget = _within_limits(trace, max_document_bytes, budget)
        # Defence in depth: envelopes from older or member-run collectors may carry secrets.
        trace = redact_trace(trace, redaction)
        trace_ctx = ctx
        if ctx.execution is None and execution_for is not None:
            details = execution_for(trace)
            if details:
                trace_ctx = replace(ctx, execution=details)
        result = transform_trace(trace, trace_ctx, redaction)
        if left_out:
            result.problems.extend(left_out)
            result.trace["problem_count"] = int(result.trace.get("problem_count") or 0) + len(left_out)
            result.trace["partial"] = True
        documents.append(result)
    problems = [{"trace_id": d.trace_id, **problem} for d in documents for problem in d.problems]
    return EnvelopeDocuments(envelope.envelope_id, documents, problems, rejected)


def _within_limits(
    trace: dict[str, Any], max_document_bytes: int, budget: int
) -> tuple[dict[str, Any], list[dict[str, str | None]], int]:
    """The trace without the segment documents past the limits, a problem for each one left out,
    and the budget that remains."""
    segments = trace.get("Segments")
    if not isinstance(segments, list):
        return trace, [], budget
    kept: list[Any] = []
    left_out: list[dict[str, str | None]] = []
    for segment in segments:
        document = segment.get("Document") if isinstance(segment, dict) else None
        omitted = omitted_size(document)  # left out by the consumer's parse already
        size = omitted if omitted is not None else len(document) if isinstance(document, str) else 0
        if omitted is not None or size > max_document_bytes or size > budget:
            segment_id = segment.get("Id")
            limit = (
                f"the limit of {max_document_bytes}"
                if omitted is not None or size > max_document_bytes
                else f"what is left of the envelope's document budget ({budget})"
            )
            left_out.append(
                {
                    "segment_id": segment_id[:1024] if isinstance(segment_id, str) else None,
                    "reason": f"segment document of {size} characters exceeds {limit}: "
                    "kept in the raw archive only (not parsed, indexed or in Parquet)",
                }
            )
            continue
        budget -= size
        kept.append(segment)
    if not left_out:
        return trace, [], budget
    return {**trace, "Segments": kept}, left_out, budget


def _transform_spans(
    envelope: Envelope,
    ctx: TraceContext,
    redaction: RedactionPolicy,
    execution_for: Callable[[dict[str, Any]], dict[str, Any] | None] | None,
    max_record_bytes: int,
) -> EnvelopeDocuments:
    """A `xraylake.spans.v1` envelope (tasks.spans): a trace whose Id is no trace id is refused
    whole; a malformed or oversize span record alone, as a problem of its trace (counted in the
    trace's `problem_count`); the raw archive keeps every record as read."""
    documents = []
    rejected = []
    records_rejected = 0
    for trace in envelope.traces:
        spans = trace.get("Spans")
        left_out: list[dict[str, str | None]] = []
        if isinstance(spans, list):
            kept = []
            for index, record in enumerate(spans):
                omitted = omitted_size(record)
                size = omitted if omitted is not None else len(record) if isinstance(record, str) else 0
                if omitted is not None or size > max_record_bytes:
                    left_out.append(
                        {
                            "span_id": None,
                            "reason": f"Spans[{index}]: span record of {size} characters exceeds the limit of "
                            f"{max_record_bytes}: kept in the raw archive only",
                        }
                    )
                    continue
                kept.append(record)
            trace = {**trace, "Spans": kept}
        parsed = parse_span_records(trace)
        if not isinstance(parsed, SpanTrace):  # kept in the raw archive (lossless), never indexed
            rejected.append({"trace_id": repr(trace.get("Id"))[:80], "reason": parsed})
            continue
        trace_ctx = ctx
        if ctx.execution is None and execution_for is not None:
            # executions are found by their ARN in the documents: the records are searched the same way
            records = [{"Id": record.span_id, "Document": record.raw} for record in parsed.records]
            details = execution_for({"Id": parsed.trace_id, "Segments": records})
            if details:
                trace_ctx = replace(ctx, execution=details)
        result = transform_span_trace(parsed, trace_ctx, redaction)
        problems = [
            {"segment_id": r["span_id"], "reason": f"span record rejected: {r['reason']}"} for r in parsed.rejected
        ] + left_out
        records_rejected += len(parsed.rejected)
        if problems:
            result.problems.extend(problems)
            result.trace["problem_count"] = int(result.trace.get("problem_count") or 0) + len(problems)
            result.trace["partial"] = True
        documents.append(result)
    problems = [{"trace_id": d.trace_id, **problem} for d in documents for problem in d.problems]
    return EnvelopeDocuments(envelope.envelope_id, documents, problems, rejected, records_rejected)
