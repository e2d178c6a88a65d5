"""One envelope → all its documents (pure): the transform per trace, Arrow tables, index actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import pyarrow as pa

from blocks import MemberAccount
from tasks.envelope import Envelope
from tasks.ids import trace_id_problem
from tasks.index import IndexAction
from tasks.redact import RedactionPolicy, redact_trace
from tasks.tables import to_arrow
from tasks.trace_model import TraceContext, TraceDocuments
from tasks.transform import transform_trace

_KIND_BY_INDEX_PART = (("-traces-", "traces"), ("-segments-", "segments"), ("otel-v1-apm-span", "spans"))


def _kind(index: str) -> str:
    for marker, kind in _KIND_BY_INDEX_PART:
        if marker in index:
            return kind
    return "service-map"


@dataclass
class EnvelopeDocuments:
    envelope_id: str
    documents: list[TraceDocuments]
    problems: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)  # traces refused whole: {trace_id, reason}

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

    def index_actions(self, version: int, prefix: str = "xray") -> list[IndexAction]:
        actions = []
        for docs in self.documents:
            for request in docs.index_requests(prefix):
                kind = _kind(request.index)
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
) -> EnvelopeDocuments:
    """`execution_for(trace)` supplies Step Functions details when the envelope has none."""
    ctx = context_for(envelope, account)
    documents = []
    rejected = []
    for trace in envelope.traces:
        refused = trace_id_problem(trace.get("Id"))
        if refused is not None:  # kept in the raw archive (lossless), never indexed
            rejected.append({"trace_id": repr(trace.get("Id"))[:80], "reason": refused})
            continue
        # Defence in depth: envelopes from older or member-run collectors may carry secrets.
        trace = redact_trace(trace, redaction)
        trace_ctx = ctx
        if ctx.execution is None and execution_for is not None:
            details = execution_for(trace)
            if details:
                trace_ctx = replace(ctx, execution=details)
        documents.append(transform_trace(trace, trace_ctx, redaction))
    problems = [{"trace_id": d.trace_id, **problem} for d in documents for problem in d.problems]
    return EnvelopeDocuments(envelope.envelope_id, documents, problems, rejected)
