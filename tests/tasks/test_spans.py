"""Span records of `aws/spans` → documents (tasks/spans.py): every field of the fixtures, bad records
rejected one by one, and convergence with the classic X-Ray path for the same trace."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from blocks import MemberAccount
from tasks import mappings
from tasks.documents import transform_envelope
from tasks.envelope import SCHEMA_SPANS_V1, EnvelopeError, build_envelope, validate_envelope
from tasks.redact import RedactionPolicy
from tasks.spans import (
    AWS_ATTRIBUTES,
    SpanTrace,
    instrumentation_of,
    parse_span_records,
    transform_span_trace,
    xray_trace_id,
)
from tasks.tables import to_arrow
from tasks.trace_model import TraceContext, TraceDocuments
from tasks.tracetime import earliest_start_us, trace_partition
from tasks.transform import transform_trace
from tests.fixtures import fixture_path, load_fixture, mapping_errors

CTX = TraceContext(
    account_id="111111111111",
    account_name="shop-prod",
    environment="prod",
    region="eu-west-1",
    collected_at=datetime(2026, 12, 1, 10, 20, tzinfo=UTC),
    envelope_id="env-spans-1",
    source="sweep",
)
CHECKOUT_ID = "6b0e9e245e1c0a9d3b7f20c4e6a81d92"
SCOREKEEP_ID = "6b0e9e609f0e1d2c3b4a59687f6e5d4c"


def _records(name: str) -> list[str]:
    return fixture_path(f"aws_spans/{name}.jsonl").read_text(encoding="utf-8").splitlines()


def _span_trace(name: str) -> dict[str, Any]:
    records = _records(name)
    return {"Id": orjson.loads(records[0])["traceId"], "Spans": records}


def _transform(trace: dict[str, Any], ctx: TraceContext = CTX) -> tuple[TraceDocuments, SpanTrace]:
    parsed = parse_span_records(trace)
    assert isinstance(parsed, SpanTrace), parsed
    return transform_span_trace(parsed, ctx), parsed


def _well_formed(docs: TraceDocuments) -> None:
    assert set(docs.trace) == set(mappings.TRACE_FIELDS)
    errors = mapping_errors(docs.trace, mappings.xray_mapping(mappings.TRACE_FIELDS))
    for segment in docs.segments:
        assert set(segment) == set(mappings.SEGMENT_FIELDS)
        errors += mapping_errors(segment, mappings.xray_mapping(mappings.SEGMENT_FIELDS))
    for span in docs.spans:
        errors += mapping_errors(span, mappings.span_mapping())
    for relation in docs.service_map:
        errors += mapping_errors(relation, mappings.service_map_mapping())
    assert errors == []
    orjson.dumps([docs.trace, docs.segments, docs.spans])
    to_arrow([docs])


# ---------------------------------------------------------------------- ids and partition


def test_trace_ids_become_the_classic_form() -> None:
    assert xray_trace_id(CHECKOUT_ID) == "1-6b0e9e24-5e1c0a9d3b7f20c4e6a81d92"
    assert xray_trace_id("1-6B0E9E24-5E1C0A9D3B7F20C4E6A81D92") == "1-6b0e9e24-5e1c0a9d3b7f20c4e6a81d92"
    assert xray_trace_id("6b0e9e24") is None


def test_partition_of_a_span_trace_follows_the_segment_rule() -> None:
    trace = _span_trace("adot_checkout_trace")
    # the id epoch is credible: 2026-12-01 10:15 UTC, as for the same trace read from X-Ray
    assert trace_partition(trace, CTX.collected_at).hour_iso == "2026-12-01T10:00:00.000Z"
    assert trace_partition({"Id": xray_trace_id(CHECKOUT_ID), "Segments": []}, CTX.collected_at).hour == "10"
    # a random W3C id (not credible) is filed by its earliest startTimeUnixNano
    random_id = "0123456789abcdef0123456789abcdef"
    records = [r.replace(CHECKOUT_ID, random_id) for r in trace["Spans"]]
    moved = {"Id": random_id, "Spans": records}
    assert earliest_start_us(moved) == 1796120100 * 1_000_000
    assert trace_partition(moved, CTX.collected_at).hour_iso == "2026-12-01T10:00:00.000Z"


# ---------------------------------------------------------------------- every field of the fixtures


def test_adot_trace_maps_every_field() -> None:
    docs, parsed = _transform(_span_trace("adot_checkout_trace"))
    _well_formed(docs)
    assert parsed.rejected == [] and docs.problems == []
    assert docs.trace_id == "1-6b0e9e24-5e1c0a9d3b7f20c4e6a81d92"
    trace = docs.trace
    assert trace["source_store"] == "spans"
    assert trace["instrumentation"] == ["opentelemetry"]
    assert trace["root_segment_id"] == "a1b2c3d4e5f60718"
    assert trace["root_service_name"] == "checkout"
    assert trace["root_service_type"] == "AWS::EC2::Instance"
    assert trace["services"] == ["checkout", "payments"]
    assert trace["segment_count"] == 7
    assert trace["start"] == "2026-12-01T10:15:00.000Z" and trace["end"] == "2026-12-01T10:15:00.420Z"
    assert trace["duration"] == pytest.approx(0.42)
    assert trace["status"] == "fault"  # the 503s
    assert trace["has_throttle"] and trace["has_error"]
    assert (trace["http_method"], trace["http_status"]) == ("POST", 200)
    assert trace["http_url"] == "https://shop.example.com/orders?coupon=***"
    assert trace["annotations"] == {"order_id": "o-1001"}
    assert (docs.dt, docs.hour, docs.day) == ("2026-12-01", "10", "2026.12.01")

    segments = {s["segment_id"]: s for s in docs.segments}
    root = segments["a1b2c3d4e5f60718"]
    assert root["name"] == "checkout" and root["service_name"] == "checkout" and not root["is_subsegment"]
    assert root["instrumentation"] == "opentelemetry" and root["sdk"] == "opentelemetry for python 1.27.0"
    assert root["source_store"] == "spans"
    assert root["http_client_ip"] == "203.0.113.7" and root["http_user_agent"] == "Mozilla/5.0"
    ddb = segments["b1b2c3d4e5f60718"]
    assert ddb["is_subsegment"] and ddb["depth"] == 1 and ddb["parent_id"] == "a1b2c3d4e5f60718"
    assert ddb["top_segment_id"] == "a1b2c3d4e5f60718" and ddb["service_name"] == "checkout"
    assert (ddb["namespace"], ddb["aws_operation"], ddb["aws_region"]) == ("aws", "GetItem", "eu-west-1")
    assert (ddb["aws_resource_type"], ddb["aws_resource"]) == ("table_name", "orders")
    assert ddb["aws_request_id"].startswith("V4GNQ8L6")
    assert ddb["duration"] == pytest.approx(0.032) and ddb["status"] == "ok"
    sqs = segments["c1b2c3d4e5f60718"]
    assert (sqs["aws_operation"], sqs["aws_resource_type"]) == ("SendMessage", "queue_url")
    assert sqs["aws_resource"] == "https://sqs.eu-west-1.amazonaws.com/111111111111/orders-queue"
    sql = segments["d1b2c3d4e5f60718"]
    assert sql["namespace"] == "remote" and sql["sql_database_type"] == "postgresql"
    assert sql["sql_url"] == "postgresql://orders.cluster-abc.eu-west-1.rds.amazonaws.com:5432/orders"
    assert sql["sql_sanitized_query"] == "SELECT id, total FROM orders WHERE id = %s"
    call = segments["e1b2c3d4e5f60718"]
    assert (call["fault"], call["status"], call["http_status"]) == (True, "fault", 503)
    assert call["http_url"] == "https://payments.internal/charge?card=***"
    assert call["exception_type"] == "requests.exceptions.HTTPError" and call["exception_count"] == 1
    assert call["exception_message"].startswith("503 Server Error")
    payments = segments["f1b2c3d4e5f60718"]
    assert not payments["is_subsegment"] and payments["parent_id"] == "e1b2c3d4e5f60718"
    assert (payments["name"], payments["origin"], payments["resource_arn"]) == (
        "payments",
        "AWS::Lambda::Function",
        "arn:aws:lambda:eu-west-1:111111111111:function:payments",
    )
    assert payments["sdk"] == "opentelemetry for nodejs 1.26.0" and payments["fault"]
    sfn = segments["0718a1b2c3d4e5f6"]
    assert (sfn["throttle"], sfn["error"], sfn["status"], sfn["aws_operation"]) == (
        True,
        True,
        "throttle",
        "StartExecution",
    )
    assert (sfn["aws_resource_type"], sfn["aws_resource"]) == (
        "state_machine_arn",
        "arn:aws:states:eu-west-1:111111111111:stateMachine:fulfil",
    )
    # Parquet keeps each record verbatim beside its row
    assert docs.segment_documents == [
        next(r for r in _records("adot_checkout_trace") if s["segment_id"] in r) for s in docs.segments
    ]


def test_span_documents_are_a_direct_copy_keeping_every_attribute() -> None:
    docs, parsed = _transform(_span_trace("adot_checkout_trace"))
    spans = {s["spanId"]: s for s in docs.spans}
    inferred = [s for s in docs.spans if s.get("span.attributes.aws@xray@inferred") == "true"]
    assert len(spans) == 7 + len(inferred) == 11  # + the nodes of 4 calls (tests/tasks/test_dependencies.py)
    for record in parsed.records:
        span = spans[record.span_id]
        for key, value in record.attributes.items():
            copied = span[f"span.attributes.{key.replace('.', '@')}"]
            if key in ("url.full", "url.query"):
                assert "4111111111111111" not in copied and "SPRING" not in copied  # query values redacted
            elif isinstance(value, list):
                assert copied == [str(v) for v in value]
            else:
                assert copied == (str(value) if not isinstance(value, str) else value)
        for key, value in record.resource.items():
            assert span[f"resource.attributes.{key.replace('.', '@')}"] == value
    root = spans["a1b2c3d4e5f60718"]
    assert root["traceId"] == CHECKOUT_ID and root["parentSpanId"] == ""
    assert (root["name"], root["kind"], root["serviceName"]) == ("POST /orders", "SPAN_KIND_SERVER", "checkout")
    assert root["startTime"] == "2026-12-01T10:15:00.000000000Z" and root["durationInNanos"] == 420_000_000
    assert root["span.attributes.otel@scope@name"] == "opentelemetry.instrumentation.flask"
    assert root["resource.attributes.xraylake@account@name"] == "shop-prod"
    assert (root["traceGroup"], root["traceGroupFields.statusCode"]) == ("checkout", 0)
    call = spans["e1b2c3d4e5f60718"]
    assert (call["status.code"], call["status.message"]) == (2, "HTTPError: 503 Server Error")
    assert call["kind"] == "SPAN_KIND_CLIENT" and call["parentSpanId"] == "a1b2c3d4e5f60718"
    (event,) = call["events"]
    assert event["name"] == "exception" and event["time"] == "2026-12-01T10:15:00.299000000Z"
    assert event["attributes"]["exception@type"] == "requests.exceptions.HTTPError"
    assert event["attributes"]["exception@stacktrace"].startswith("Traceback")
    assert spans["c1b2c3d4e5f60718"]["kind"] == "SPAN_KIND_PRODUCER"
    assert spans["f1b2c3d4e5f60718"]["serviceName"] == "payments"
    # service map: checkout → payments, as Data Prepper derives it from parent/child services
    edges = {(r["serviceName"], (r["destination"] or {}).get("domain")) for r in docs.service_map}
    assert ("checkout", "payments") in edges
    # span document ids, as the classic path builds them
    ids = {r.doc_id for r in docs.index_requests() if r.kind == "spans"}
    assert f"111111111111:{CHECKOUT_ID}a1b2c3d4e5f60718" in ids


def test_xray_sdk_segments_say_so() -> None:
    docs, _ = _transform(_span_trace("xray_sdk_converted_trace"))
    _well_formed(docs)
    assert docs.trace["instrumentation"] == ["xray-sdk"]
    root, ddb = docs.segments
    assert (root["name"], root["origin"], root["sdk"]) == (
        "Scorekeep",
        "AWS::ElasticBeanstalk::Environment",
        "X-Ray for Java 2.18.1",
    )
    assert root["instrumentation"] == ddb["instrumentation"] == "xray-sdk"
    assert root["annotations"] == {"game_id": "SM7F2Y5A"}
    assert (ddb["namespace"], ddb["aws_resource"]) == ("aws", "scorekeep-game")
    assert instrumentation_of({"telemetry.sdk.name": "X-Ray for Go"}, {}) == ("xray-sdk", "X-Ray for Go")
    assert instrumentation_of({}, {}) == ("unknown", None)


# ---------------------------------------------------------------------- bad records


def test_malformed_records_are_rejected_one_by_one_with_a_reason() -> None:
    good = _records("adot_checkout_trace")
    root = orjson.loads(good[0])

    def variant(**changes: Any) -> str:
        record = {**root, "spanId": "9999999999999999", **changes}
        return orjson.dumps({k: v for k, v in record.items() if v is not None}).decode()

    bad = [
        "{not json",
        "[1, 2]",
        variant(spanId=None),
        variant(spanId="abc"),
        variant(traceId="6b0e9e24"),
        variant(traceId="00000000000000000000000000000001"),
        variant(parentSpanId="xyz"),
        variant(startTimeUnixNano="yesterday"),
        variant(endTimeUnixNano=root["startTimeUnixNano"] - 1),
        good[1],  # a duplicate of a good record
    ]
    trace = {"Id": CHECKOUT_ID, "Spans": [*good, *bad]}
    docs, parsed = _transform(trace)
    reasons = [r["reason"] for r in parsed.rejected]
    assert len(reasons) == len(bad)
    expected = [
        "is not JSON",
        "not an object",
        "no spanId",
        "spanId 'abc' is not 16 hex digits",
        "traceId '6b0e9e24' is not 32 hex digits",
        "is not the trace's id",
        "parentSpanId 'xyz' is not 16 hex digits",
        "startTimeUnixNano 'yesterday' is not a usable time",
        "endTimeUnixNano is before startTimeUnixNano",
        "duplicate spanId",
    ]
    for reason, part in zip(reasons, expected, strict=True):
        assert part in str(reason)
    assert len(docs.segments) == 7 and len(docs.spans) == 7 + 4  # the good records all mapped (+ 4 dependency nodes)


def test_odd_values_in_good_records_never_raise() -> None:
    """Kinds, status codes, events and attributes of unexpected JSON types are mapped or ignored,
    never an exception: the record still becomes its documents."""
    root = orjson.loads(_records("adot_checkout_trace")[0])
    odd = {
        **root,
        "kind": ["SERVER"],
        "status": {"code": {"x": 1}},
        "events": {"name": "exception"},
        "links": "none",
        "scope": 7,
        "resource": {"attributes": ["service.name"]},
        "attributes": {**root["attributes"], "http.response.status_code": "abc", "nested": {"a": [1, {"b": 2}]}},
        "startTimeUnixNano": float(root["startTimeUnixNano"]),
    }
    docs, parsed = _transform({"Id": CHECKOUT_ID, "Spans": [orjson.dumps(odd).decode()]})
    assert parsed.rejected == []
    _well_formed(docs)
    (span,) = docs.spans
    assert (span["kind"], span["status.code"], span["events"]) == ("SPAN_KIND_UNSPECIFIED", 0, [])
    assert span["span.attributes.nested"] == '{"a":[1,{"b":2}]}'
    assert docs.segments[0]["service_name"] == "checkout"


def test_span_envelopes_validate_their_form_and_count_rejections() -> None:
    records = _records("adot_checkout_trace")
    envelope = build_envelope(
        source="sweep",
        account_id="111111111111",
        region="eu-west-1",
        traces=[{"Id": CHECKOUT_ID, "Spans": records}],
        collected_at=CTX.collected_at,
        schema="xraylake.spans.v1",
    )
    data = orjson.loads(envelope.to_json())
    assert validate_envelope(data).schema_ == SCHEMA_SPANS_V1
    broken = {**data, "traces": [{"Id": CHECKOUT_ID, "Spans": [records[0], {"an": "object"}]}]}
    with pytest.raises(EnvelopeError, match=r"traces\[0\].Spans\[1\] is dict, not the log event's message string"):
        validate_envelope(broken)
    # a bad record inside a string is the consumer's per-record rejection, not the envelope's
    mixed = validate_envelope({**data, "traces": [{"Id": CHECKOUT_ID, "Spans": [*records, "{oops"]}]})
    account = MemberAccount(account_id="111111111111", name="shop-prod", environment="prod")
    result = transform_envelope(mixed, account, RedactionPolicy())
    assert len(result.documents) == 1 and len(result.spans) == 7 + 4  # + the calls' dependency nodes
    assert [p for p in result.problems if "Spans[7]" in str(p["reason"])]
    assert result.documents[0].trace["problem_count"] == 1 and result.records_rejected == 1
    # a trace whose Id is no trace id is refused whole (kept in the raw archive)
    refused = validate_envelope({**data, "traces": [{"Id": "nope", "Spans": records}]})
    assert transform_envelope(refused, account, RedactionPolicy()).rejected[0]["trace_id"] == "'nope'"


# ---------------------------------------------------------------------- convergence with the classic path


def _unflatten(doc: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :].replace("@", "."): v for k, v in doc.items() if k.startswith(prefix)}


def _nanos(iso: str) -> int:
    head, fraction = iso.rstrip("Z").split(".")
    return calendar.timegm(datetime.fromisoformat(head).timetuple()) * 1_000_000_000 + int(fraction.ljust(9, "0"))


AWS_NAMES = {key: names[0] for key, names in AWS_ATTRIBUTES}


def records_from_classic(docs: TraceDocuments) -> list[str]:
    """The classic path's span documents as aws/spans records (OTel attribute names, W3C ids)."""
    segments = {s["segment_id"]: s for s in docs.segments}
    records = []
    for span in docs.spans:
        if span["spanId"] not in segments:  # a dependency node the transform infers: so does the span path
            continue
        attributes = _unflatten(span, "span.attributes.")
        segment = segments[span["spanId"]]
        if segment["annotations"]:
            attributes["aws.xray.annotations"] = sorted(segment["annotations"])
        if segment["http_status"] is not None:
            attributes["http.status_code"] = segment["http_status"]
        if segment["aws_resource_type"] in AWS_NAMES:  # the resource the aws block named
            attributes[AWS_NAMES[segment["aws_resource_type"]]] = segment["aws_resource"]
        record = {
            "resource": {"attributes": _unflatten(span, "resource.attributes.")},
            "traceId": span["traceId"],
            "spanId": span["spanId"],
            "parentSpanId": span["parentSpanId"] or None,
            "name": span["name"],
            "kind": span["kind"].removeprefix("SPAN_KIND_"),
            "startTimeUnixNano": _nanos(span["startTime"]),
            "endTimeUnixNano": _nanos(span["endTime"]),
            "attributes": attributes,
            "status": {"code": ("UNSET", "OK", "ERROR")[span["status.code"]]},
            "events": [
                {
                    "name": e["name"],
                    "timeUnixNano": _nanos(e["time"]),
                    "attributes": {k.replace("@", "."): v for k, v in e["attributes"].items()},
                }
                for e in span["events"]
            ],
        }
        records.append(orjson.dumps({k: v for k, v in record.items() if v is not None}).decode())
    return records


SEGMENT_KEYS = (
    "segment_id",
    "parent_id",
    "top_segment_id",
    "is_subsegment",
    "depth",
    "name",
    "service_name",
    "origin",
    "namespace",
    "start",
    "end",
    "duration",
    "status",
    "http_method",
    "http_url",
    "http_status",
    "aws_operation",
    "aws_resource",
    "exception_type",
    "exception_message",
    "instrumentation",
    "sdk",
    "annotations",
)
TRACE_KEYS = (
    "trace_id",
    "partition_hour",
    "start",
    "end",
    "duration",
    "root_segment_id",
    "root_service_name",
    "root_service_type",
    "status",
    "services",
    "segment_count",
    "instrumentation",
    "http_method",
    "http_url",
    "http_status",
    "annotations",
)


@pytest.mark.parametrize("fixture", ["xray/synthesized_stepfunctions_trace", "scorekeep"])
def test_classic_and_span_reads_of_one_trace_converge(fixture: str) -> None:
    if fixture == "scorekeep":  # the Elastic Beanstalk segment with its embedded subsegments
        trace = load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0]
        trace = {**trace, "Segments": [s for s in trace["Segments"] if '"Scorekeep"' in s["Document"]]}
        ctx = TraceContext(
            "111111111111", "shop-prod", "prod", "eu-west-1", datetime(2017, 5, 8, tzinfo=UTC), "e", "sweep"
        )
    else:
        trace = load_fixture(fixture)
        ctx = TraceContext(
            "111111111111", "shop-prod", "prod", "eu-west-1", datetime(2024, 9, 22, 11, tzinfo=UTC), "e", "sweep"
        )
    classic = transform_trace(trace, ctx)
    records = records_from_classic(classic)
    spans, parsed = _transform({"Id": classic.spans[0]["traceId"], "Spans": records}, ctx)
    assert parsed.rejected == []
    assert spans.trace_id == classic.trace_id
    assert (spans.dt, spans.hour, spans.day) == (classic.dt, classic.hour, classic.day)

    def ids(docs: TraceDocuments) -> set[tuple[str, str]]:
        return {(r.kind, r.doc_id) for r in docs.index_requests() if r.kind != "service-map"}

    assert ids(spans) == ids(classic)  # the dependency nodes too: each path infers them from its own calls
    assert {r.doc_id for r in spans.index_requests() if r.kind == "service-map"} == {
        r.doc_id for r in classic.index_requests() if r.kind == "service-map"
    }
    for key in TRACE_KEYS:
        assert spans.trace[key] == classic.trace[key], key
    assert spans.trace["source_store"] == "spans" and classic.trace["source_store"] == "xray"
    classic_segments = {s["segment_id"]: s for s in classic.segments}
    for segment in spans.segments:
        original = classic_segments[segment["segment_id"]]
        for key in SEGMENT_KEYS:
            if key.startswith("exception_") and original["cause_exception_id"] is not None:
                # an X-Ray `cause` naming another segment's exception id has no span-event form
                assert segment[key] is None
                continue
            assert segment[key] == original[key], (segment["segment_id"], key)
    if fixture != "scorekeep":
        for key in ("step_functions", "execution_arn", "state_machine_name", "execution_status"):
            assert spans.trace[key] == classic.trace[key], key
        assert classic.trace["step_functions"]
