"""Transaction Search spans, the reader's pure half: which reader an (account, region) gets, trace
ids normalised across X-Ray and W3C forms, and `aws/spans` log events grouped into span traces.

Reader choice (every run, per account and region) from GetTraceSegmentDestination, the
`Default` indexing rule and the reader the previous run used:

| destination / status        | reader  | why |
|---|---|---|
| `XRay` / `ACTIVE`           | `xray`  | segments are in X-Ray, as before |
| `CloudWatchLogs` / `ACTIVE` | `spans` | X-Ray indexes only the indexed share; every span is in `aws/spans` |
| any / `PENDING`             | `both`  | the switch is under way: each store may hold part of the traces |
| changed since the last run  | `both`  | the windows since the last run span the switch (once: the
                                          watermark records the destination's own reader) |
| unknown (API missing, denied) | `xray` | the classic reader, reported |

With `both`, a trace found by the X-Ray reader is not sent again from the spans (ids compared in
W3C form), so a switch loses nothing and duplicates nothing.

A span log event is passed through verbatim when a trace id can be read from it (its JSON
`traceId`, or, for a message that is not JSON, a `"traceId":"<32 hex>"` in its text): the
consumer validates the rest and rejects per record. Without a trace id it cannot be grouped or
sent: it is rejected here with a reason and counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tasks.ids import trace_id_problem
from tasks.redact import RedactionPolicy, redact_document

Reader = Literal["xray", "spans", "both"]
READERS: tuple[Reader, ...] = ("xray", "spans", "both")

_TRACE_ID_IN_TEXT = re.compile(rb'"traceId"\s*:\s*"([0-9a-fA-F]{32}|1-[0-9a-fA-F]{8}-[0-9a-fA-F]{24})"')


def w3c_trace_id(trace_id: str) -> str:
    """The one form trace ids are compared in: 32 lowercase hex (`1-5759e988-bd86…` → `5759e988bd86…`)."""
    if len(trace_id) == 35 and trace_id.startswith("1-"):
        return (trace_id[2:10] + trace_id[11:]).lower()
    return trace_id.lower()


@dataclass(frozen=True)
class ReaderChoice:
    reader: Reader
    reason: str
    destination: str | None = None
    status: str | None = None
    indexed_percentage: float | None = None
    steady: Reader | None = None  # what the destination alone asks for: recorded for the next run

    def as_dict(self) -> dict[str, Any]:
        return {
            "reader": self.reader,
            "reader_reason": self.reason,
            "destination": self.destination,
            "destination_status": self.status,
            "indexed_percentage": self.indexed_percentage,
        }


def choose_reader(
    destination: str | None,
    status: str | None,
    indexed_percentage: float | None = None,
    previous: str | None = None,
    detail: str = "",
) -> ReaderChoice:
    """Which reader one (account, region) gets this run (see the module's table)."""

    def chosen(reader: Reader, reason: str, steady: Reader | None = None) -> ReaderChoice:
        return ReaderChoice(reader, reason, destination, status, indexed_percentage, steady or reader)

    share = f"{indexed_percentage:g} %" if indexed_percentage is not None else "an unknown share"
    if destination not in ("XRay", "CloudWatchLogs"):
        why = f" ({detail})" if detail else ""
        return chosen("xray", f"segment destination unknown{why}: the classic X-Ray reader")
    if status == "PENDING":
        return chosen("both", f"switching to {destination} (PENDING): both stores read, de-duplicated by trace id")
    reader: Reader = "spans" if destination == "CloudWatchLogs" else "xray"
    if previous in READERS and previous != reader:
        return chosen("both", f"{destination} ACTIVE, but the last run read with {previous}: both, once", reader)
    if reader == "spans":
        return chosen("spans", f"Transaction Search ACTIVE: X-Ray indexes only {share}; every span is in aws/spans")
    return chosen("xray", "segments go to X-Ray")


# --------------------------------------------------------------------------- span log events


@dataclass
class SpanGroups:
    """Span log events grouped by trace (first-seen order), as `xraylake.spans.v1` traces."""

    traces: dict[str, list[str]] = field(default_factory=dict)
    rejected: list[dict[str, str]] = field(default_factory=list)
    events: int = 0
    redacted: int = 0

    def add(self, message: Any, redaction: RedactionPolicy | None = None) -> str | None:
        """Add one log event's message; its W3C trace id, or None when rejected (reason kept)."""
        self.events += 1
        trace_id, reason = span_trace_id(message)
        if trace_id is None:
            self.rejected.append({"reason": reason or "no trace id", "record": _shown(message)})
            return None
        text = str(message)
        if redaction is not None:
            masked = redact_document(text, redaction)
            if masked is not text:
                self.redacted += 1
                text = masked
        self.traces.setdefault(trace_id, []).append(text)
        return trace_id

    def extend(self, messages: Iterable[Any], redaction: RedactionPolicy | None = None) -> None:
        for message in messages:
            self.add(message, redaction)

    def envelope_traces(self, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
        """`{"Id", "Spans"}` per trace, leaving out W3C ids in `exclude` (read by the other reader)."""
        skip = {w3c_trace_id(t) for t in exclude}
        return [{"Id": t, "Spans": spans} for t, spans in self.traces.items() if t not in skip]


def span_trace_id(message: Any) -> tuple[str | None, str | None]:
    """(the W3C trace id of a span log event, None) or (None, why it has none)."""
    if not isinstance(message, str):
        return None, f"log event message is a {type(message).__name__}, not a string"
    raw = message.encode()
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        found = _TRACE_ID_IN_TEXT.search(raw)
        if found is None:
            return None, "not JSON and no traceId in it"
        return _checked(found.group(1).decode())
    if not isinstance(record, dict):
        return None, f"span record is a JSON {type(record).__name__}, not an object"
    if "traceId" not in record:
        return None, "span record has no traceId"
    return _checked(record["traceId"])


def _checked(value: Any) -> tuple[str | None, str | None]:
    problem = trace_id_problem(value)
    if problem is not None:
        return None, f"traceId: {problem}"
    return w3c_trace_id(value), None


def _shown(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- Insights chunks


def split_range(start: int, end: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Halves of [start, end) in whole seconds, or None when it cannot be split further."""
    if end - start < 2:
        return None
    middle = start + (end - start) // 2
    return (start, middle), (middle, end)


__all__ = [
    "READERS",
    "Reader",
    "ReaderChoice",
    "SpanGroups",
    "choose_reader",
    "span_trace_id",
    "split_range",
    "w3c_trace_id",
]
