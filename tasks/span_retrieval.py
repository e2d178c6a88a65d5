"""Given traces (or one Step Functions execution's) back from `aws/spans`, whole.

Two callers, two read paths, both without Logs Insights (billed per GB scanned):

* `read_traces` (reconcile `--repair`): the spans of trace ids a sink lacks, re-read with
  FilterLogEvents — the API reconcile counted them with, so repair sees what reconcile saw. Per
  trace-id hour: up to `FILTER_IDS_MAX` ids are each read with the id as the filter pattern (the
  service filters; only that trace's events come back), more are read as one unfiltered pass over
  the hour (as a sweep reads it) keeping only the wanted ids. Not trace retrieval: a retrieved
  trace carries at most 100 spans (`ListRetrievedTraces`' `SpanList`, max 100), and a repair must
  restore whole traces.
* `execution_spans` (collect by execution): the execution's trace ids from DescribeExecution's
  `traceHeader` (`Root=…`, when the starter passed one) and from the spans that name the execution
  ARN (FilterLogEvents with the ARN as the filter pattern over the execution's time, so only those
  events come back), then StartTraceRetrieval → ListRetrievedTraces for the whole traces, polled
  until COMPLETE within `wait_seconds`. A trace that comes back with exactly 100 spans (the cap)
  is read again with `read_traces`.

A span's log event is stamped with its end, so a trace is read from its id time (its start) to
`SPANS_READ_PAST` after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks import spans_reader, tracetime
from tasks.redact import RedactionPolicy
from tasks.span_records import SpanGroups, span_trace_id, w3c_trace_id
from tasks.windows import Window

SPANS_READ_PAST = timedelta(hours=1)
FILTER_IDS_MAX = 10  # per hour: more ids than this are read as one pass over the hour
RETRIEVED_SPANS_CAP = 100  # ListRetrievedTraces: at most 100 spans per trace
RETRIEVAL_WAIT_SECONDS = 300.0
_ROOT = re.compile(r"Root=(1-[0-9a-fA-F]{8}-[0-9a-fA-F]{24})")


@dataclass
class SpanRead:
    """What one re-read found: the grouped spans and how it read them."""

    groups: SpanGroups = field(default_factory=SpanGroups)
    filtered_reads: int = 0  # FilterLogEvents passes with a trace id or ARN as the pattern
    hour_reads: int = 0  # unfiltered passes over an hour
    retrieved: int = 0  # traces StartTraceRetrieval/ListRetrievedTraces returned
    reread: int = 0  # retrieved traces at the span cap, read again in full
    candidates: list[str] = field(default_factory=list)  # W3C ids an execution led to

    def missing(self, trace_ids: Iterable[str]) -> list[str]:
        """The ids (any form) no span was found for."""
        return [t for t in trace_ids if w3c_trace_id(t) not in self.groups.traces]


def _keep(messages: Iterable[Any], wanted: set[str], groups: SpanGroups, redaction: RedactionPolicy | None) -> None:
    for message in messages:
        trace_id, _ = span_trace_id(message)
        if trace_id in wanted:
            groups.add(message, redaction)


def read_traces(
    logs: Any,
    call: spans_reader.Caller,
    trace_ids: Iterable[str],
    *,
    now: datetime | None = None,
    redaction: RedactionPolicy | None = None,
    filter_ids_max: int = FILTER_IDS_MAX,
    page_limit: int = spans_reader.FILTER_PAGE_LIMIT,
    read: SpanRead | None = None,
) -> SpanRead:
    """Every span of `trace_ids` (X-Ray or W3C form) in `aws/spans`, grouped by trace."""
    read = read or SpanRead()
    until = now or datetime.now(UTC)
    by_hour: dict[int, set[str]] = {}
    for trace_id in trace_ids:
        epoch = tracetime.id_epoch(trace_id)
        if epoch is not None:
            by_hour.setdefault(tracetime.Partition.of(epoch).second, set()).add(w3c_trace_id(trace_id))
    for hour, wanted in sorted(by_hour.items()):
        if len(wanted) <= filter_ids_max:
            for trace_id in sorted(wanted):
                start = datetime.fromtimestamp(int(trace_id[:8], 16), UTC)
                window = Window(start, min(start + SPANS_READ_PAST, until))
                if window.end <= window.start:
                    continue
                events = spans_reader.filter_events(
                    logs, call, window, page_limit=page_limit, filter_pattern=f'"{trace_id}"'
                )
                _keep(events, {trace_id}, read.groups, redaction)
                read.filtered_reads += 1
        else:
            start = datetime.fromtimestamp(hour, UTC)
            window = Window(start, min(start + timedelta(hours=1) + SPANS_READ_PAST, until))
            if window.end > window.start:
                events = spans_reader.filter_events(logs, call, window, page_limit=page_limit)
                _keep(events, wanted, read.groups, redaction)
                read.hour_reads += 1
    return read


def header_trace_id(trace_header: Any) -> str | None:
    """The X-Ray trace id of a `traceHeader` (`Root=1-…;Parent=…;Sampled=1`), if any."""
    found = _ROOT.search(trace_header) if isinstance(trace_header, str) else None
    return found.group(1).lower() if found else None


def execution_spans(
    xray: Any,
    logs: Any,
    xray_call: spans_reader.Caller,
    logs_call: spans_reader.Caller,
    execution_arn: str,
    window: Window,
    *,
    trace_header: str | None = None,
    skip: Iterable[str] = (),
    redaction: RedactionPolicy | None = None,
    wait_seconds: float = RETRIEVAL_WAIT_SECONDS,
    poll_seconds: float = 1.0,
    now: datetime | None = None,
) -> SpanRead:
    """The whole traces of one execution from `aws/spans` (see the module docstring); `skip`:
    trace ids (any form) another reader already sent, not fetched again."""
    read = SpanRead()
    candidates: dict[str, None] = {}
    from_header = header_trace_id(trace_header)
    if from_header:
        candidates[w3c_trace_id(from_header)] = None
    until = min(window.end + SPANS_READ_PAST, now or datetime.now(UTC))
    if until > window.start:
        pattern = f'"{execution_arn}"'
        for message in spans_reader.filter_events(logs, logs_call, Window(window.start, until), filter_pattern=pattern):
            trace_id, _ = span_trace_id(message)
            if trace_id is not None:
                candidates[trace_id] = None
        read.filtered_reads += 1
    skipped = {w3c_trace_id(t) for t in skip}
    read.candidates = [t for t in candidates if t not in skipped]
    if not read.candidates:
        return read
    groups = SpanGroups()
    read.retrieved = spans_reader.retrieve_spans(
        xray, xray_call, [f"1-{t[:8]}-{t[8:]}" for t in read.candidates], window.start, until, groups,
        redaction=redaction, poll_seconds=poll_seconds, max_polls=max(1, int(wait_seconds / max(poll_seconds, 0.001))),
    )  # fmt: skip
    capped = [t for t, spans in groups.traces.items() if len(spans) >= RETRIEVED_SPANS_CAP]
    for trace_id, spans in groups.traces.items():
        if trace_id not in capped:
            read.groups.traces[trace_id] = spans
    read.groups.events, read.groups.rejected, read.groups.redacted = groups.events, groups.rejected, groups.redacted
    if capped:
        read_traces(logs, logs_call, capped, now=until, redaction=redaction, read=read)
        read.reread = len(capped)
    return read


__all__ = [
    "FILTER_IDS_MAX",
    "RETRIEVAL_WAIT_SECONDS",
    "SPANS_READ_PAST",
    "SpanRead",
    "execution_spans",
    "header_trace_id",
    "read_traces",
]
