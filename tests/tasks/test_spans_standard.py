"""Legacy span documents → Data Prepper's standard (plain-raw) span documents."""

from __future__ import annotations

from datetime import UTC, datetime

from tasks.spans_standard import standard_span, standard_spans
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fixtures import load_fixture

CTX = TraceContext("012345678901", "acme", "prod", "eu-west-1", datetime(2024, 9, 22, 11, tzinfo=UTC), "e", "test")


def _spans() -> list[dict]:
    return transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX).spans


def test_attributes_become_objects_keyed_by_otel_names_with_numbers_typed() -> None:
    legacy = _spans()
    standard = standard_spans(legacy)
    root = next(s for s in standard if not s["parentSpanId"])
    assert root["attributes"]["http.method"] == "POST"
    assert root["attributes"]["http.status_code"] == 200  # a long in the standard template
    assert root["attributes"]["order_id"] == "4711"  # annotations stay strings: no type conflicts
    assert root["attributes"]["express"] == "false"
    assert root["resource"] == {
        "attributes": {
            "service.name": "checkout",
            "cloud.provider": "aws",
            "cloud.region": "eu-west-1",
            "cloud.account.id": "012345678901",
            "deployment.environment": "prod",
            "xraylake.account.name": "acme",
            "aws.xray.origin": "AWS::StepFunctions::StateMachine",
            "aws.xray.resource_arn": "arn:aws:states:eu-west-1:012345678901:stateMachine:checkout",
        },
        "droppedAttributesCount": 0,
        "schemaUrl": "",
    }
    assert root["status"] == {"code": 2, "message": "fault"}
    assert root["traceGroupFields"] == {
        "endTime": "2024-09-22T10:13:22.870000000Z",
        "durationInNanos": 2750000000,
        "statusCode": 2,
    }
    assert root["instrumentationScope"] == {"droppedAttributesCount": 0}
    assert root["startTime"] == "2024-09-22T10:13:20.120000000Z"
    assert "@timestamp" not in root  # Data Prepper's codec writes none (the template maps one)
    for key in ("traceId", "spanId", "parentSpanId", "name", "kind", "serviceName", "durationInNanos", "traceState"):
        assert root[key] == legacy[0][key]
    assert not [key for span in standard for key in span if "@" in key]
    assert not [key for span in standard for key in span if key.startswith(("span.", "resource.", "status."))]


def test_exception_events_keep_their_attributes_by_otel_name() -> None:
    failing = next(s for s in standard_spans(_spans()) if s["events"])
    event = failing["events"][0]
    assert event["name"] == "exception"
    assert set(event["attributes"]) >= {"exception.type", "exception.message"}
    assert event["droppedAttributesCount"] == 0


def test_fields_the_transform_adds_flow_through() -> None:
    span = {
        "traceId": "a" * 32,
        "spanId": "b" * 16,
        "parentSpanId": "",
        "name": "x",
        "startTime": "2024-09-22T10:13:20.120000000Z",
        "span.attributes.server@port": "8443",
        "span.attributes.peer@service": "billing",
        "instrumentationScope.name": "io.opentelemetry.aws-sdk-2.2",
        "flags": 1,
    }
    out = standard_span(span)
    assert out["attributes"] == {"server.port": 8443, "peer.service": "billing"}
    assert out["instrumentationScope"] == {"name": "io.opentelemetry.aws-sdk-2.2", "droppedAttributesCount": 0}
    assert out["flags"] == 1
    assert out["status"] == {"code": 0, "message": ""}
    assert out["events"] == [] and out["links"] == []
