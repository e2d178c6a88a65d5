"""The spans reader's pure half: reader choice, trace ids, span grouping and rejection, redaction."""

from __future__ import annotations

import json

import pytest

from tasks.redact import RedactionPolicy
from tasks.span_records import SpanGroups, choose_reader, span_trace_id, split_range, w3c_trace_id

TRACE = "5759e988bd862e3fe1be46a994272793"


def span(trace_id: object = TRACE, span_id: str = "53995c3f42cd8ad8", **extra: object) -> str:
    return json.dumps({"traceId": trace_id, "spanId": span_id, "name": "GET /", **extra})


@pytest.mark.parametrize(
    ("destination", "status", "previous", "reader", "words"),
    [
        ("XRay", "ACTIVE", None, "xray", "segments go to X-Ray"),
        ("CloudWatchLogs", "ACTIVE", None, "spans", "indexes only 1 %"),
        ("CloudWatchLogs", "ACTIVE", "spans", "spans", "Transaction Search ACTIVE"),
        ("CloudWatchLogs", "PENDING", "xray", "both", "PENDING"),
        ("XRay", "PENDING", "spans", "both", "PENDING"),
        ("CloudWatchLogs", "ACTIVE", "xray", "both", "last run read with xray"),
        ("CloudWatchLogs", "ACTIVE", "both", "both", "last run read with both"),
        ("XRay", "ACTIVE", "spans", "both", "last run read with spans"),
        (None, None, "spans", "xray", "segment destination unknown"),
    ],
)
def test_choose_reader(
    destination: str | None, status: str | None, previous: str | None, reader: str, words: str
) -> None:
    choice = choose_reader(destination, status, 1.0, previous)
    assert choice.reader == reader
    steady = "both" if status == "PENDING" else "spans" if destination == "CloudWatchLogs" else "xray"
    assert choice.steady == steady  # what the next run compares with
    assert words in choice.reason
    assert choice.as_dict()["indexed_percentage"] == 1.0


def test_w3c_trace_id_is_the_one_form_ids_are_compared_in() -> None:
    assert w3c_trace_id("1-5759E988-bd862e3fe1be46a994272793") == TRACE
    assert w3c_trace_id(TRACE.upper()) == TRACE


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json at all", "not JSON and no traceId in it"),
        ("[1, 2]", "JSON list, not an object"),
        (json.dumps({"spanId": "53995c3f42cd8ad8"}), "no traceId"),
        (span("abc"), "neither 1-<8 hex>-<24 hex> (X-Ray) nor 32 hex digits"),
        (span("0" * 32), "neither"),
        (span(12), "is a int, not a string"),
        (None, "NoneType, not a string"),
    ],
)
def test_span_without_a_trace_id_is_rejected_with_a_reason(message: object, reason: str) -> None:
    trace_id, why = span_trace_id(message)
    assert trace_id is None
    assert why is not None and reason in why


def test_malformed_span_with_a_trace_id_passes_verbatim() -> None:
    broken = '{"traceId":"' + TRACE + '","spanId":"53995c3f42cd8ad8","endTimeUnixNano":'  # cut short
    groups = SpanGroups()
    groups.extend([broken, span(), "garbage", span("1-5759e988-bd862e3fe1be46a994272793", "1111111111111111")])
    assert groups.events == 4
    assert list(groups.traces) == [TRACE]
    assert groups.traces[TRACE][0] is broken  # verbatim: the consumer decides what is wrong with it
    assert len(groups.traces[TRACE]) == 3
    assert groups.rejected == [{"reason": "not JSON and no traceId in it", "record": "garbage"}]


def test_envelope_traces_leave_out_what_the_other_reader_sent() -> None:
    groups = SpanGroups()
    other = "00000000000000000000000000000abc"
    groups.extend([span(), span(other)])
    assert groups.envelope_traces() == [{"Id": TRACE, "Spans": [span()]}, {"Id": other, "Spans": [span(other)]}]
    assert groups.envelope_traces(exclude=["1-5759e988-bd862e3fe1be46a994272793"]) == [
        {"Id": other, "Spans": [span(other)]}
    ]


def test_redaction_reserialises_only_changed_records() -> None:
    clean = span(attributes={"http.request.method": "GET"})
    secret = span(span_id="2222222222222222", attributes={"password": "hunter2"})
    groups = SpanGroups()
    groups.extend([clean, secret], RedactionPolicy())
    kept = groups.traces[TRACE]
    assert kept[0] is clean
    assert "hunter2" not in kept[1] and json.loads(kept[1])["attributes"]["password"] != "hunter2"
    assert groups.redacted == 1


def test_split_range() -> None:
    assert split_range(0, 10) == ((0, 5), (5, 10))
    assert split_range(0, 3) == ((0, 1), (1, 3))
    assert split_range(4, 5) is None
