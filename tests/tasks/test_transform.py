"""The pure transform: real X-Ray documents in, trace/segment/span/service-map documents and Arrow out.

Fixtures are real public X-Ray documents (tests/fixtures/xray/SOURCES.md). Messy input must never
raise: it yields documents plus reported problems.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import mappings
from tasks.otel import otel_span_id, otel_trace_id, service_map_hash
from tasks.redact import RedactionPolicy
from tasks.tables import SEGMENT_SCHEMA, TRACE_SCHEMA, to_arrow
from tasks.trace_model import TraceContext, TraceDocuments
from tasks.transform import transform_trace
from tests.fixtures import load_fixture, load_fixture_text, mapping_errors, segment_trace
from tests.fuzzing import LONG, LONG_TIMEOUT_SECONDS

CTX = TraceContext(
    account_id="012345678901",
    account_name="payments-prod",
    environment="prod",
    region="us-west-2",
    collected_at=datetime(2024, 9, 22, 11, 0, 0, 123000, tzinfo=UTC),
    envelope_id="env-0001",
    source="sweep",
)
SPAN_MAPPING = mappings.span_mapping()
SERVICE_MAP_MAPPING = mappings.service_map_mapping()
TRACE_MAPPING = mappings.xray_mapping(mappings.TRACE_FIELDS)
SEGMENT_MAPPING = mappings.xray_mapping(mappings.SEGMENT_FIELDS)


def _by_id(docs: TraceDocuments) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    return {s["segment_id"]: s for s in docs.segments}, {s["spanId"]: s for s in docs.spans}


def _reasons(docs: TraceDocuments) -> list[str]:
    return [p["reason"] or "" for p in docs.problems]


def _assert_well_formed(docs: TraceDocuments) -> None:
    """Every document serialises, matches its mapping, and the Arrow tables build."""
    orjson.dumps(docs.trace)
    for segment in docs.segments:
        assert set(segment) == set(mappings.SEGMENT_FIELDS)
    assert set(docs.trace) == set(mappings.TRACE_FIELDS)
    errors = mapping_errors(docs.trace, TRACE_MAPPING)
    for segment in docs.segments:
        errors += mapping_errors(segment, SEGMENT_MAPPING)
    for span in docs.spans:
        errors += mapping_errors(span, SPAN_MAPPING)
    for relation in docs.service_map:
        errors += mapping_errors(relation, SERVICE_MAP_MAPPING)
    assert not errors, errors[:10]
    orjson.dumps([docs.segments, docs.spans, docs.service_map, docs.problems])
    traces, segments = to_arrow([docs])
    assert traces.num_rows == 1
    assert segments.num_rows == len(docs.segments)
    for problem in docs.problems:
        assert set(problem) == {"segment_id", "reason"}


# ====================================================================== real traces, exact values


@pytest.fixture(scope="module")
def scorekeep() -> TraceDocuments:
    return transform_trace(load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0], CTX)


def test_scorekeep_trace_document(scorekeep: TraceDocuments) -> None:
    trace = scorekeep.trace
    assert scorekeep.problems == []
    assert scorekeep.trace_doc_id == "012345678901:1-59602603-23fc5b688855d396af79b496"
    assert (scorekeep.day, scorekeep.dt, scorekeep.hour) == ("2017.07.08", "2017-07-08", "00")
    assert scorekeep.version == 1727002800123
    assert trace["account_id"] == "012345678901"
    assert trace["account_name"] == "payments-prod"
    assert trace["environment"] == "prod"
    assert trace["region"] == "us-west-2"
    assert trace["trace_id"] == "1-59602603-23fc5b688855d396af79b496"
    assert trace["start"] == "2017-07-08T00:23:31.562Z"
    assert trace["end"] == "2017-07-08T00:23:34.794Z"
    assert trace["duration"] == 3.232
    assert trace["xray_duration"] == 3.232
    assert trace["root_segment_id"] == "194fcc8747581230"
    assert trace["root_service_name"] == "Scorekeep"
    assert trace["root_service_type"] == "AWS::ElasticBeanstalk::Environment"
    assert trace["status"] == "ok"
    assert (trace["has_error"], trace["has_fault"], trace["has_throttle"]) == (False, False, False)
    assert trace["http_method"] == "POST"
    assert trace["http_url"] == "http://scorekeep.elasticbeanstalk.com/api/user"
    assert trace["http_status"] == 200
    assert trace["services"] == ["DynamoDB", "SNS", "Scorekeep", "random-name"]
    assert trace["segment_count"] == 11
    assert (trace["in_progress"], trace["partial"], trace["limit_exceeded"]) == (False, False, False)
    assert trace["annotations"] == {"UserID": "5M388M1E", "Name": "Ola"}
    assert trace["annotations_num"] is None
    assert trace["step_functions"] is False
    assert trace["execution_arn"] is None
    assert trace["collected_at"] == "2024-09-22T11:00:00.123Z"
    assert (trace["envelope_id"], trace["source"]) == ("env-0001", "sweep")
    assert trace["problem_count"] == 0


def test_scorekeep_segment_documents(scorekeep: TraceDocuments) -> None:
    segments, _ = _by_id(scorekeep)
    assert len(segments) == 11
    inferred = segments["17ba309b32c7fbaf"]
    assert inferred["inferred"] is True
    assert inferred["parent_id"] == "4cd3f10b76c624b4"
    assert inferred["is_subsegment"] is False
    assert inferred["depth"] == 0
    assert inferred["origin"] == "AWS::DynamoDB::Table"
    assert inferred["service_name"] == "DynamoDB"
    dynamo_call = segments["4cd3f10b76c624b4"]
    assert dynamo_call["parent_id"] == "071684f2e555e571"
    assert dynamo_call["top_segment_id"] == "194fcc8747581230"
    assert dynamo_call["is_subsegment"] is True
    assert dynamo_call["depth"] == 2
    assert dynamo_call["namespace"] == "aws"
    assert dynamo_call["service_name"] == "Scorekeep"
    assert dynamo_call["aws_operation"] == "UpdateItem"
    assert (dynamo_call["aws_resource_type"], dynamo_call["aws_resource"]) == ("table_name", "scorekeep-user")
    assert dynamo_call["aws_request_id"] == "MFQ8CGJ3JTDDVVVASUAAJGQ6NJ82F738BOB4KQNSO5AEMVJF66Q9"
    assert (dynamo_call["http_status"], dynamo_call["http_content_length"]) == (200, 57)
    assert dynamo_call["start"] == "2017-07-08T00:23:34.690Z"
    assert dynamo_call["duration"] == 0.079
    lambda_call = segments["0c544c1b1bbff948"]
    assert (lambda_call["aws_resource_type"], lambda_call["aws_resource"]) == ("function_name", "random-name")
    root = segments["194fcc8747581230"]
    assert root["parent_id"] is None
    assert root["user"] == "5M388M1E"
    assert root["http_client_ip"] == "205.251.233.183"
    assert root["http_method"] == "POST"
    assert root["http_user_agent"].startswith("Mozilla/5.0 (Windows NT 6.1; Win64; x64)")
    function = segments["00f91aa01f4984fd"]
    assert function["aws_account_id"] == "123456789012"
    assert function["parent_id"] == "1fb07842d944e714"
    annotated = segments["e6d2fe619f827804"]
    assert annotated["annotations"] == {"UserID": "5M388M1E", "Name": "Ola"}
    assert annotated["service_name"] == "random-name"
    for segment in segments.values():
        assert segment["trace_id"] == "1-59602603-23fc5b688855d396af79b496"
        assert segment["account_id"] == "012345678901"
        assert segment["status"] == "ok"


def test_scorekeep_spans(scorekeep: TraceDocuments) -> None:
    _, spans = _by_id(scorekeep)
    assert {s["traceId"] for s in spans.values()} == {"5960260323fc5b688855d396af79b496"}
    kinds = {span_id: span["kind"] for span_id, span in spans.items()}
    assert kinds == {
        "194fcc8747581230": "SPAN_KIND_SERVER",
        "0c544c1b1bbff948": "SPAN_KIND_CLIENT",
        "071684f2e555e571": "SPAN_KIND_INTERNAL",
        "4cd3f10b76c624b4": "SPAN_KIND_CLIENT",
        "1fb07842d944e714": "SPAN_KIND_SERVER",
        "00f91aa01f4984fd": "SPAN_KIND_SERVER",
        "e6d2fe619f827804": "SPAN_KIND_INTERNAL",
        "b29b548af4d54a0f": "SPAN_KIND_CLIENT",
        "2279c0030c955e52": "SPAN_KIND_INTERNAL",
        "17ba309b32c7fbaf": "SPAN_KIND_SERVER",
        "1ee3c4a523f89ca5": "SPAN_KIND_SERVER",
    }
    root = spans["194fcc8747581230"]
    assert root["parentSpanId"] == ""
    assert root["name"] == "Scorekeep"
    assert root["serviceName"] == "Scorekeep"
    assert root["startTime"] == "2017-07-08T00:23:31.562000000Z"
    assert root["endTime"] == "2017-07-08T00:23:34.794000000Z"
    assert root["durationInNanos"] == 3_232_000_000
    assert root["status.code"] == 0
    assert "status.message" not in root
    assert root["span.attributes.http@method"] == "POST"
    assert root["span.attributes.http@status_code"] == "200"
    assert root["span.attributes.enduser@id"] == "5M388M1E"
    assert root["resource.attributes.service@name"] == "Scorekeep"
    assert root["resource.attributes.cloud@account@id"] == "012345678901"
    assert root["resource.attributes.host@id"] == "i-0cd9e448944061b4a"
    assert root["resource.attributes.service@version"] == "app-abb9-170708_002045"
    assert root["resource.attributes.telemetry@sdk@name"] == "X-Ray for Java"
    assert (root["droppedAttributesCount"], root["droppedEventsCount"], root["droppedLinksCount"]) == (
        0,
        0,
        0,
    )
    assert root["events"] == []
    assert root["links"] == []
    assert root["traceState"] == ""
    for span in spans.values():
        assert span["traceGroup"] == "Scorekeep"
        assert span["traceGroupFields.endTime"] == "2017-07-08T00:23:34.794000000Z"
        assert span["traceGroupFields.durationInNanos"] == 3_232_000_000
        assert span["traceGroupFields.statusCode"] == 0
    dynamo_call = spans["4cd3f10b76c624b4"]
    assert dynamo_call["parentSpanId"] == "071684f2e555e571"
    assert dynamo_call["serviceName"] == "Scorekeep"
    assert dynamo_call["span.attributes.aws@service"] == "DynamoDB"
    assert dynamo_call["span.attributes.aws@table_name"] == "scorekeep-user"
    assert dynamo_call["span.attributes.http@response_content_length"] == "57"
    function = spans["00f91aa01f4984fd"]
    assert function["resource.attributes.cloud@account@id"] == "123456789012"  # the segment's own account
    assert function["resource.attributes.xraylake@account@name"] == "payments-prod"
    assert spans["e6d2fe619f827804"]["span.attributes.UserID"] == "5M388M1E"
    assert spans["17ba309b32c7fbaf"]["span.attributes.aws@xray@inferred"] == "true"


def test_scorekeep_service_map(scorekeep: TraceDocuments) -> None:
    edges = {
        (
            r["serviceName"],
            r["kind"],
            (r["destination"] or {}).get("domain"),
            (r["target"] or {}).get("domain"),
        )
        for r in scorekeep.service_map
    }
    assert edges == {
        ("Scorekeep", "SPAN_KIND_CLIENT", "random-name", None),
        ("random-name", "SPAN_KIND_SERVER", None, "random-name"),
        ("Scorekeep", "SPAN_KIND_CLIENT", "DynamoDB", None),
        ("DynamoDB", "SPAN_KIND_SERVER", None, "DynamoDB"),
        ("random-name", "SPAN_KIND_CLIENT", "SNS", None),
        ("SNS", "SPAN_KIND_SERVER", None, "SNS"),
    }
    for relation in scorekeep.service_map:
        assert relation["traceGroupName"] == "Scorekeep"
        target = relation["target"] and (relation["target"]["resource"], relation["target"]["domain"])
        destination = relation["destination"] and (
            relation["destination"]["resource"],
            relation["destination"]["domain"],
        )
        assert relation["hashId"] == service_map_hash(
            relation["serviceName"], relation["kind"], "Scorekeep", target or None, destination or None
        )
    assert len({r["hashId"] for r in scorekeep.service_map}) == 6


def test_service_map_hash_matches_data_prepper() -> None:
    # ServiceMapRelationshipTest in opensearch-project/data-prepper (static known values).
    assert service_map_hash("ServiceName", "Kind", "TraceGroupName", None, ("r1", "d1")) == "r7rZwbptLFxOLPUlg/x2nA=="
    assert service_map_hash("ServiceName", "Kind", "TraceGroupName", ("r1", "d1"), None) == "lJtcAzLqaaeyhym6a99CcA=="


def test_scorekeep_index_requests(scorekeep: TraceDocuments) -> None:
    requests = list(scorekeep.index_requests())
    kinds = [r.kind for r in requests]
    assert kinds.count("traces") == 1
    assert kinds.count("segments") == 11
    assert kinds.count("spans") == 11
    assert kinds.count("service-map") == 6
    first = requests[0]
    assert (first.index, first.doc_id) == ("xray-traces-2017.07.08", scorekeep.trace_doc_id)
    segment = next(r for r in requests if r.kind == "segments")
    assert segment.index == "xray-segments-2017.07.08"
    assert segment.doc_id == f"012345678901:1-59602603-23fc5b688855d396af79b496:{segment.source['segment_id']}"
    assert segment.doc_id == scorekeep.segment_doc_id(segment.source)
    span = next(r for r in requests if r.kind == "spans")
    assert span.index == "otel-v1-apm-span-2017.07.08"
    assert span.doc_id == f"012345678901:5960260323fc5b688855d396af79b496{span.source['spanId']}"
    assert span.doc_id == scorekeep.span_doc_id(span.source)
    relation = next(r for r in requests if r.kind == "service-map")
    assert relation.index == "otel-v1-apm-service-map"
    assert relation.doc_id == relation.source["hashId"]
    assert len({(r.index, r.doc_id) for r in requests}) == len(requests)
    _assert_well_formed(scorekeep)


def test_otel_ids_and_times_from_the_segment_documents_page() -> None:
    docs = transform_trace(segment_trace("xray/awsdocs_segment_with_embedded_subsegment"), CTX)
    assert docs.problems == []
    _, spans = _by_id(docs)
    server, client = spans["defdfd9912dc5a56"], spans["53995c3f42cd8ad8"]
    assert server["traceId"] == client["traceId"] == "5759e988bd862e3fe1be46a994272793"
    assert (server["kind"], server["parentSpanId"]) == ("SPAN_KIND_SERVER", "")
    assert (client["kind"], client["parentSpanId"]) == ("SPAN_KIND_CLIENT", "defdfd9912dc5a56")
    assert server["startTime"] == "2016-04-19T20:00:53.375180000Z"
    assert server["endTime"] == "2016-04-19T20:00:53.404200000Z"
    assert server["durationInNanos"] == 29_020_000
    assert client["durationInNanos"] == 26_100_000
    assert client["serviceName"] == "www.example.com"
    assert client["name"] == "api.example.com"
    assert client["span.attributes.aws@xray@traced"] == "true"
    assert client["span.attributes.http@response_content_length"] == "861"
    assert client["traceGroup"] == "www.example.com"
    assert docs.trace["http_url"] == "https://www.example.com/health"
    assert docs.trace["services"] == ["www.example.com"]
    assert otel_trace_id("1-5759e988-bd862e3fe1be46a994272793") == "5759e988bd862e3fe1be46a994272793"
    assert otel_span_id("defdfd9912dc5a56") == "defdfd9912dc5a56"
    assert len(otel_span_id("not-an-id")) == 16


def test_go_sdk_capture_with_faults_and_stacks() -> None:
    docs = transform_trace(segment_trace("xray/otel_ddb_sample"), CTX)
    assert docs.problems == []
    segments, spans = _by_id(docs)
    assert len(segments) == 18
    assert docs.trace["segment_count"] == 18
    assert (docs.day, docs.hour) == ("2020.08.04", "18")
    assert docs.trace["status"] == "fault"
    assert docs.trace["has_fault"] is True
    assert docs.trace["services"] == ["DDB"]
    assert segments["0cab02b318413eb1"]["depth"] == 5  # DDB > call > dynamodb > attempt > connect > dns
    assert segments["0cab02b318413eb1"]["parent_id"] == "417b81b977b9563b"
    put = segments["71631df3f58bdfc5"]
    assert (put["status"], put["fault"], put["http_status"], put["http_content_length"]) == (
        "fault",
        True,
        400,
        112,
    )
    assert (put["aws_operation"], put["aws_region"], put["aws_resource"]) == (
        "PutItem",
        "us-west-2",
        "does_not_exist",
    )
    assert put["exception_type"] == "dynamodb.ResourceNotFoundException"
    assert put["exception_message"] == "ResourceNotFoundException: Requested resource not found"
    assert put["exception_count"] == 1
    described = segments["7318c46a385557f5"]
    assert described["status"] == "ok"
    assert described["aws_resource"] == "xray_sample_table"
    call = segments["7df694142c905d8d"]
    assert call["annotations"] == {"DDB_DescribeExistingTableAndPutToMissingTable_Annotation": "anno"}
    # the span keeps the receiver's key (annotations.go), dots written as `@` like Data Prepper's
    assert spans["7df694142c905d8d"]["span.attributes.DDB@DescribeExistingTableAndPutToMissingTable@Annotation"] == (
        "anno"
    )
    assert docs.trace["annotations"] == {"DDB_DescribeExistingTableAndPutToMissingTable_Annotation": "anno"}

    root = spans["88ad1df59cd7a7be"]
    assert root["kind"] == "SPAN_KIND_SERVER"
    assert root["status.code"] == 2
    assert root["status.message"] == (
        "dynamodb.ResourceNotFoundException: ResourceNotFoundException: Requested resource not found"
    )
    assert root["span.attributes.enduser@id"] == "xraysegmentdump"
    assert root["resource.attributes.telemetry@sdk@name"] == "X-Ray for Go"
    (event,) = root["events"]
    assert event["name"] == "exception"
    assert event["time"] == root["endTime"]
    assert event["attributes"]["exception@type"] == "dynamodb.ResourceNotFoundException"
    assert event["attributes"]["aws@xray@exception@id"] == "3e9e11e3ab3fba60"
    assert event["attributes"]["aws@xray@exception@remote"] == "true"
    assert event["attributes"]["exception@stacktrace"] == (
        "dynamodb.ResourceNotFoundException: ResourceNotFoundException: Requested resource not found\n"
        "\tat main(runtime/proc.go: 203)\n"
        "\tat goexit(runtime/asm_amd64.s: 1373)\n"
    )
    assert spans["7318c46a385557f5"]["kind"] == "SPAN_KIND_CLIENT"
    assert spans["0239834271dbee25"]["kind"] == "SPAN_KIND_INTERNAL"
    assert spans["0239834271dbee25"]["status.code"] == 0
    for span in spans.values():
        assert span["traceGroup"] == "DDB"
        assert span["traceGroupFields.statusCode"] == 2
        inferred = span.get("span.attributes.aws@xray@inferred") == "true"
        assert span["serviceName"] == ("DynamoDB" if inferred else "DDB")
    # the two DynamoDB calls draw the node X-Ray infers for them (tests/tasks/test_dependencies.py)
    edges = {(r["serviceName"], r["kind"], (r["destination"] or r["target"])["domain"]) for r in docs.service_map}
    assert edges == {("DDB", "SPAN_KIND_CLIENT", "DynamoDB"), ("DynamoDB", "SPAN_KIND_SERVER", "DynamoDB")}
    _assert_well_formed(docs)


def test_sql_subsegment_redacts_url_and_splits_database() -> None:
    docs = transform_trace(segment_trace("xray/otel_indep_subsegment_with_sql"), CTX)
    (segment,) = docs.segments
    assert segment["sql_url"] == (
        "jdbc:postgresql://aawijb5u25wdoy.cpamxznpdoq8.us-west-2.rds.amazonaws.com:5432/ebdb?myInterceptor=***"
    )
    assert (segment["sql_database_type"], segment["sql_sanitized_query"]) == (
        "PostgreSQL",
        "SELECT  *  FROM  customers  WHERE  customer_id=?;",
    )
    assert segment["is_subsegment"] is True
    assert segment["parent_id"] == "defdfd9912dc5a56"
    span, database = docs.spans  # the call, and the database node it stands for
    assert database["span.attributes.aws@xray@origin"] == "Database::SQL"
    assert span["kind"] == "SPAN_KIND_CLIENT"
    assert span["span.attributes.db@connection_string"] == (
        "jdbc:postgresql://aawijb5u25wdoy.cpamxznpdoq8.us-west-2.rds.amazonaws.com:5432"
    )
    assert span["span.attributes.db@name"] == "ebdb"
    assert span["span.attributes.db@system"] == "PostgreSQL"
    assert docs.trace["partial"] is True  # its parent segment is not in this trace
    assert docs.trace["root_segment_id"] == "3fd8634e78ca9560"
    _assert_well_formed(docs)


def test_resource_blocks_from_a_segment() -> None:
    docs = transform_trace(segment_trace("xray/otel_aws_valid_fields"), CTX)
    (span,) = docs.spans
    assert span["resource.attributes.cloud@account@id"] == "000000000000"
    assert span["resource.attributes.cloud@availability_zone"] == "us-west-2c"
    assert span["resource.attributes.host@id"] == "i-075ad396f12bc325a"
    assert span["resource.attributes.host@type"] == "m5.xlarge"
    assert span["resource.attributes.host@image@id"] == "ami-003634241a8fcdec0"
    assert span["resource.attributes.container@name"] == "containerId1234"
    assert span["resource.attributes.container@id"] == "d8453812a556"
    assert span["resource.attributes.service@namespace"] == "scorekeep"
    assert span["resource.attributes.service@instance@id"] == "32"
    assert span["span.attributes.aws@xray@x_forwarded_for"] == "true"
    assert span["span.attributes.http@client_ip"] == "127.0.0.1"
    assert docs.segments[0]["aws_account_id"] == "000000000000"
    _assert_well_formed(docs)


# ====================================================================== Step Functions


def test_step_functions_from_the_trace_alone() -> None:
    docs = transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), CTX)
    trace = docs.trace
    assert trace["step_functions"] is True
    assert trace["execution_arn"] == "arn:aws:states:eu-west-1:012345678901:execution:checkout:order-4711"
    assert trace["state_machine_arn"] == "arn:aws:states:eu-west-1:012345678901:stateMachine:checkout"
    assert (trace["state_machine_name"], trace["execution_name"]) == ("checkout", "order-4711")
    assert (trace["execution_status"], trace["execution_status_source"]) == ("FAILED", "trace")
    assert (trace["execution_start"], trace["execution_stop"]) == (
        "2024-09-22T10:13:20.120Z",
        "2024-09-22T10:13:22.870Z",
    )
    assert trace["execution_duration_seconds"] == 2.75
    assert trace["execution_input"] is None
    assert trace["execution_error"] is None
    assert trace["root_service_type"] == "AWS::StepFunctions::StateMachine"
    assert trace["status"] == "fault"
    assert trace["services"] == ["DynamoDB", "checkout", "validate-order"]
    # query string of the root URL and a denied annotation are redacted
    assert trace["http_url"] == "https://states.eu-west-1.amazonaws.com/?Action=***&X-Amz-Security-Token=***"
    assert trace["annotations"] == {
        "order_id": "4711",
        "amount": "19.99",
        "express": "false",
        "session_token": "***",
    }
    assert trace["annotations_num"] == {"amount": 19.99}
    segments, spans = _by_id(docs)
    # `cause` given as an exception id resolves to the exception recorded in another subsegment
    charge = segments["7777000088889999"]
    assert charge["cause_exception_id"] == "0a0b0c0d0e0f1011"
    assert (charge["exception_type"], charge["exception_message"]) == ("States.TaskFailed", "card declined")
    assert spans["7777000088889999"]["status.message"] == "States.TaskFailed: card declined"
    assert charge["http_content_length"] == 96
    assert _reasons(docs) == ["http.response.content_length '96' coerced"]
    assert docs.trace_annotations is not None
    assert orjson.loads(docs.trace_annotations) == {
        "order_id": "4711",
        "amount": 19.99,
        "express": False,
        "session_token": "***",
    }
    _assert_well_formed(docs)


def test_step_functions_describe_execution_wins_and_is_redacted() -> None:
    execution = load_fixture("xray/synthesized_describe_execution_failed")
    ctx = TraceContext(**_ctx_fields(), execution=execution)
    docs = transform_trace(load_fixture("xray/synthesized_stepfunctions_trace"), ctx)
    trace = docs.trace
    assert (trace["execution_status"], trace["execution_status_source"]) == ("FAILED", "describe_execution")
    assert (trace["execution_start"], trace["execution_stop"]) == (
        "2024-09-22T10:13:20.100Z",
        "2024-09-22T10:13:22.880Z",
    )
    assert trace["execution_duration_seconds"] == 2.78
    assert orjson.loads(trace["execution_input"]) == {
        "orderId": "4711",
        "card": {"cardNumber": "***", "cvv": "***"},
        "customer": {"email": "a@example.com", "password": "***"},
    }
    assert trace["execution_input_truncated"] is False
    assert trace["execution_output"] is None
    assert trace["execution_error"] == "States.TaskFailed"
    assert orjson.loads(trace["execution_cause"]) == {
        "errorMessage": "card declined",
        "errorType": "CardError",
        "apiKey": "***",
    }


def test_describe_execution_of_another_execution_is_ignored() -> None:
    execution = {**load_fixture("xray/synthesized_describe_execution_failed")}
    execution["executionArn"] = "arn:aws:states:eu-west-1:012345678901:execution:checkout:order-9999"
    docs = transform_trace(
        load_fixture("xray/synthesized_stepfunctions_trace"), TraceContext(**_ctx_fields(), execution=execution)
    )
    assert docs.trace["execution_arn"] == "arn:aws:states:eu-west-1:012345678901:execution:checkout:order-4711"
    assert docs.trace["execution_status_source"] == "trace"
    assert docs.trace["execution_input"] is None
    assert any(r.startswith("execution details are for ") for r in _reasons(docs))


def test_describe_execution_without_any_step_functions_segment() -> None:
    execution = {
        "executionArn": "arn:aws:states:us-east-1:012345678901:execution:nightly:run-1",
        "status": "SUCCEEDED",
        "startDate": datetime(2020, 7, 22, 17, 7, 31, tzinfo=UTC),
        "stopDate": datetime(2020, 7, 22, 17, 9, 1, 500000, tzinfo=UTC),
        "input": "{}",
        "output": orjson.dumps({"rows": 3, "blob": "x" * 20000}).decode(),
    }
    docs = transform_trace(
        segment_trace("xray/awsdocs_minimal_segment"),
        TraceContext(**_ctx_fields(), execution=execution),
        RedactionPolicy(max_payload_bytes=1024),
    )
    trace = docs.trace
    assert trace["step_functions"] is True
    assert trace["state_machine_arn"] == "arn:aws:states:us-east-1:012345678901:stateMachine:nightly"
    assert (trace["state_machine_name"], trace["execution_name"]) == ("nightly", "run-1")
    assert trace["execution_duration_seconds"] == 90.5
    assert trace["execution_input"] == "{}"
    assert trace["execution_input_truncated"] is False
    assert trace["execution_output_truncated"] is True
    assert len(trace["execution_output"].encode()) <= 1024


def _ctx_fields() -> dict[str, Any]:
    return {
        "account_id": CTX.account_id,
        "account_name": CTX.account_name,
        "environment": CTX.environment,
        "region": CTX.region,
        "collected_at": CTX.collected_at,
        "envelope_id": CTX.envelope_id,
        "source": "collect",
    }


# ====================================================================== real-world mess


def test_in_progress_without_end_time() -> None:
    docs = transform_trace(segment_trace("xray/otel_min_in_progress"), CTX)
    assert docs.problems == []  # legitimate X-Ray
    (segment,) = docs.segments
    assert segment["in_progress"] is True
    assert segment["end"] is None
    assert segment["duration"] is None
    assert docs.trace["in_progress"] is True
    assert docs.trace["end"] is None
    assert docs.trace["duration"] is None
    (span,) = docs.spans
    assert span["endTime"] == span["startTime"]
    assert span["durationInNanos"] == 0
    assert span["span.attributes.aws@xray@inprogress"] == "true"
    assert span["traceGroupFields.endTime"] is None
    assert span["traceGroupFields.durationInNanos"] is None
    _assert_well_formed(docs)


def test_in_progress_and_complete_copies_keep_the_complete_one() -> None:
    trace = segment_trace("xray/awsdocs_in_progress_segment", "xray/awsdocs_minimal_segment")
    trace["Segments"].append(copy.deepcopy(trace["Segments"][0]))  # the in-progress copy again
    for wrapper in trace["Segments"]:
        wrapper["Document"] = wrapper["Document"].replace("70de5b6f19ff9a0b", "70de5b6f19ff9a0a")
    docs = transform_trace(trace, CTX)
    (segment,) = docs.segments
    assert segment["in_progress"] is False
    assert segment["end"] == "2016-11-04T21:02:41.449Z"
    assert _reasons(docs).count("duplicate segment id; one copy kept") == 2
    assert len(docs.spans) == 1
    assert docs.trace["segment_count"] == 1
    _assert_well_formed(docs)


def test_content_length_as_a_string_and_times_out_of_range() -> None:
    docs = transform_trace(segment_trace("xray/otel_indep_subsegment_content_length_string"), CTX)
    (segment,) = docs.segments
    assert segment["http_content_length"] == 861
    assert segment["start"] == "2016-11-04T21:02:41.000Z"  # no usable start: the trace's anchor, said below
    assert segment["end"] is None
    assert docs.trace["duration"] is None
    reasons = _reasons(docs)
    assert "http.response.content_length '861' coerced" in reasons
    assert "invalid start_time '14782323361.271'" in reasons
    assert "invalid end_time '14789232374.449'" in reasons
    span, host = docs.spans  # the call, and the remote host node it stands for
    assert host["name"] == "api.example.com"
    # still placed in time (the trace id's epoch), so Trace Analytics can show it
    assert span["startTime"] == span["endTime"] == "2016-11-04T21:02:41.000000000Z"
    assert span["kind"] == "SPAN_KIND_CLIENT"
    _assert_well_formed(docs)


def test_cause_as_an_unknown_exception_id() -> None:
    docs = transform_trace(segment_trace("xray/otel_min_cause_is_exception_id"), CTX)
    (segment,) = docs.segments
    assert segment["cause_exception_id"] == "abcdefghijklmnop"
    assert segment["fault"] is True
    assert segment["exception_type"] is None
    assert _reasons(docs) == [
        "cause 'abcdefghijklmnop' is not a 16-hex exception id",
        "cause references unknown exception id 'abcdefghijklmnop'",
    ]
    (span,) = docs.spans
    assert span["status.code"] == 2
    assert span["status.message"] == "abcdefghijklmnop"
    _assert_well_formed(docs)


def test_cause_of_a_wrong_type() -> None:
    docs = transform_trace(segment_trace("xray/otel_min_cause_is_invalid"), CTX)
    (segment,) = docs.segments
    assert segment["status"] == "fault"
    assert segment["cause_exception_id"] is None
    assert _reasons(docs) == ["cause is int, neither an exception id nor an object"]
    assert docs.spans[0]["status.code"] == 2
    _assert_well_formed(docs)


def test_independent_subsegment_with_throttle_and_missing_parent() -> None:
    docs = transform_trace(segment_trace("xray/otel_min_other_fields"), CTX)
    (segment,) = docs.segments
    assert segment["status"] == "throttle"
    assert segment["throttle"] is True
    assert segment["error"] is False
    assert segment["is_subsegment"] is True
    assert segment["origin"] == "AWS::EC2::Instance"
    assert segment["resource_arn"] == "chicken"
    assert docs.trace["status"] == "throttle"
    assert docs.trace["partial"] is True
    assert docs.trace["services"] == []  # a lone subsegment is not a service
    assert _reasons(docs) == ["parent defdfd9912dc5a56 is not in the trace"]
    (span,) = docs.spans
    assert span["kind"] == "SPAN_KIND_INTERNAL"
    assert span["status.code"] == 2
    _assert_well_formed(docs)


def test_independent_subsegment_joins_its_parents_service() -> None:
    parent = orjson.loads(load_fixture_text("xray/awsdocs_segment_with_embedded_subsegment"))
    parent["trace_id"] = "1-581cf771-a006649127e371903a2de979"
    parent["subsegments"] = []
    trace = segment_trace("xray/otel_indep_subsegment_local_namespace")
    trace["Segments"].append({"Id": parent["id"], "Document": orjson.dumps(parent).decode()})
    docs = transform_trace(trace, CTX)
    segments, spans = _by_id(docs)
    local = segments["53995c3f42cd8ad8"]
    assert local["service_name"] == "www.example.com"
    assert local["namespace"] == "local"
    assert spans["53995c3f42cd8ad8"]["kind"] == "SPAN_KIND_INTERNAL"  # unknown namespace: kept, INTERNAL
    assert spans["53995c3f42cd8ad8"]["serviceName"] == "www.example.com"
    assert spans["53995c3f42cd8ad8"]["parentSpanId"] == "defdfd9912dc5a56"
    assert docs.trace["partial"] is False
    assert docs.trace["root_segment_id"] == "defdfd9912dc5a56"
    assert docs.trace["services"] == ["www.example.com"]
    _assert_well_formed(docs)


def test_no_end_time_and_not_in_progress() -> None:
    docs = transform_trace(segment_trace("xray/otel_segment_with_parent_id"), CTX)
    assert _reasons(docs) == [
        "no end_time and not in_progress",
        "parent bda182a644eee9b3 is not in the trace",
    ]
    assert docs.trace["root_segment_id"] == "5cc4a447f5d4d696"  # an orphan becomes the root
    _assert_well_formed(docs)


def test_missing_aws_block_and_unknown_fields() -> None:
    docs = transform_trace(segment_trace("xray/otel_aws_missing_aws_field"), CTX)
    assert docs.problems == []
    (segment,) = docs.segments
    assert segment["aws_operation"] is None
    assert segment["http_status"] == 200
    assert docs.spans[0]["resource.attributes.cloud@account@id"] == "012345678901"
    _assert_well_formed(docs)


def test_annotations_of_every_type_never_conflict() -> None:
    docs = transform_trace(segment_trace("xray/awsdocs_annotations_segment"), CTX)
    (segment,) = docs.segments
    assert segment["annotations"] == {
        "customer_category": "124",
        "zip_code": "98101",
        "country": "United States",
        "internal": "false",
    }
    assert segment["annotations_num"] == {"customer_category": 124.0, "zip_code": 98101.0}
    assert "trace id '1-5880168b-fd515828bs07678a3bb5a78c' is not 1-<8 hex>-<24 hex>" in _reasons(docs)
    # the malformed trace id still yields a stable 32-hex OTel id
    assert len(docs.spans[0]["traceId"]) == 32
    assert int(docs.spans[0]["traceId"], 16) >= 0
    _assert_well_formed(docs)


def _trace(*documents: Any, **fields: Any) -> dict[str, Any]:
    segments = [
        {
            "Id": d.get("id") if isinstance(d, dict) else None,
            "Document": d if isinstance(d, str) else json.dumps(d),
        }
        for d in documents
    ]
    return {"Id": "1-5f187253-6a106696d56b1f4ef9eba2ed", "Duration": 1.0, "Segments": segments, **fields}


BASE: dict[str, Any] = {
    "trace_id": "1-5f187253-6a106696d56b1f4ef9eba2ed",
    "start_time": 1595437651.680097,
    "end_time": 1595437652.5,
}


def test_odd_values_are_coerced_and_reported() -> None:
    root = {
        **BASE,
        "id": "5cc4a447f5d4d696",
        "name": "odd",
        "start_time": "1.595437651680097E9",  # a string in scientific notation
        "end_time": "2020-07-22T17:07:32.500Z",  # an ISO string
        "error": "true",
        "http": {
            "request": {"method": 42, "url": ["not", "a", "url"], "client_ip": None},
            "response": {"status": "503", "content_length": "lots"},
        },
        "aws": {"operation": {"nested": True}, "retries": "2", "queue_url": "https://sqs/q?sig=1"},
        "annotations": {
            "ok": 1,
            "obj": {"a": 1},
            "list": [1, 2],
            "nothing": None,
            "big": 10**30,
            "a.b": "dot",
        },
        "metadata": ["not", "an", "object"],
        "subsegments": [
            1,
            "two",
            None,
            {"id": "0000000000000001", "name": "fine", **{k: BASE[k] for k in ("start_time", "end_time")}},
        ],
        "unknown": {"anything": ["goes"]},
    }
    docs = transform_trace(_trace(root), CTX)
    segments, spans = _by_id(docs)
    segment = segments["5cc4a447f5d4d696"]
    assert segment["start"] == "2020-07-22T17:07:31.680Z"
    assert segment["end"] == "2020-07-22T17:07:32.500Z"
    assert segment["error"] is True
    assert segment["status"] == "error"
    assert segment["http_method"] == "42"
    assert segment["http_url"] == '["not","a","url"]'
    assert segment["http_status"] == 503
    assert segment["http_content_length"] is None
    assert segment["aws_operation"] == '{"nested":true}'
    assert (segment["aws_resource_type"], segment["aws_resource"]) == ("queue_url", "https://sqs/q?sig=1")
    assert segment["annotations"] == {
        "ok": "1",
        "obj": '{"a":1}',
        "list": "[1,2]",
        "big": "1e+30",  # orjson reads integers beyond 64 bits as floats
        "a_b": "dot",
    }
    assert segment["annotations_num"] == {"ok": 1.0, "big": 1e30}
    assert segments["0000000000000001"]["parent_id"] == "5cc4a447f5d4d696"
    reasons = _reasons(docs)
    for expected in (
        "start_time given as a string",
        "end_time given as a string",
        "http.response.status '503' coerced",
        "http.response.content_length 'lots' coerced",
        "annotation 'obj' is dict; stored as JSON text",
        "annotation 'list' is list; stored as JSON text",
        "metadata is not an object (kept in the raw document only)",
        "subsegments[0] is int, not an object",
        "subsegments[1] is str, not an object",
        "subsegments[2] is NoneType, not an object",
    ):
        assert expected in reasons, (expected, reasons)
    assert spans["5cc4a447f5d4d696"]["span.attributes.aws@xray@retries"] == "2"
    _assert_well_formed(docs)


def test_bad_documents_are_skipped_and_the_rest_continues() -> None:
    good = {**BASE, "id": "5cc4a447f5d4d696", "name": "good"}
    trace = _trace(good, "{not json", "[1, 2]", '"just a string"')
    trace["Segments"] += [{"Id": "x", "Document": None}, "not-a-wrapper", {"Id": "y"}]
    docs = transform_trace(trace, CTX)
    assert [s["segment_id"] for s in docs.segments] == ["5cc4a447f5d4d696"]
    reasons = _reasons(docs)
    assert any(r.startswith("Document is not JSON") for r in reasons)
    assert "Document is JSON list, not an object; skipped" in reasons
    assert "Document is JSON str, not an object; skipped" in reasons
    assert "Document missing or not a string (NoneType); skipped" in reasons
    assert "Segments[5] is not an object (str)" in reasons
    _assert_well_formed(docs)


def test_limit_exceeded_marks_partial() -> None:
    docs = transform_trace(_trace({**BASE, "id": "5cc4a447f5d4d696", "name": "big"}, LimitExceeded=True), CTX)
    assert docs.trace["partial"] is True
    assert docs.trace["limit_exceeded"] is True
    assert "LimitExceeded: X-Ray truncated this trace" in _reasons(docs)


def test_a_missing_segment_id_comes_from_the_wrapper_and_an_id_less_subsegment_is_refused() -> None:
    trace = _trace({**BASE, "subsegments": [{"start_time": BASE["start_time"], "end_time": BASE["end_time"]}]})
    trace["Segments"][0]["Id"] = "00000000000000aa"
    first, second = transform_trace(trace, CTX), transform_trace(copy.deepcopy(trace), CTX)
    assert [s["segment_id"] for s in first.segments] == [s["segment_id"] for s in second.segments]
    assert [s["segment_id"] for s in first.segments] == ["00000000000000aa"]  # the wrapper's Id
    assert first.segments[0]["name"] == "unknown"
    reasons = _reasons(first)
    assert "segment id None is a NoneType, not a string; using the segment's Id 00000000000000aa" in reasons
    assert "segment id None is a NoneType, not a string: (sub)segment and its subsegments not indexed" in reasons
    _assert_well_formed(first)


def test_several_parentless_segments_pick_the_earliest_root() -> None:
    late = {**BASE, "id": "00000000000000b2", "name": "late", "start_time": BASE["start_time"] + 0.5}
    early = {**BASE, "id": "00000000000000b1", "name": "early"}
    docs = transform_trace(_trace(late, early), CTX)
    assert docs.trace["root_segment_id"] == "00000000000000b1"
    assert docs.trace["root_service_name"] == "early"
    assert {s["traceGroup"] for s in docs.spans} == {"early"}


def test_only_inferred_and_orphans_prefer_a_real_segment() -> None:
    inferred = {
        **BASE,
        "id": "00000000000000c1",
        "name": "DynamoDB",
        "parent_id": "ffffffffffffffff",
        "inferred": True,
    }
    orphan = {
        **BASE,
        "id": "00000000000000c2",
        "name": "svc",
        "parent_id": "eeeeeeeeeeeeeeee",
        "start_time": BASE["start_time"] + 0.1,
    }
    docs = transform_trace(_trace(inferred, orphan), CTX)
    assert docs.trace["root_segment_id"] == "00000000000000c2"
    assert docs.trace["partial"] is True


def test_garbage_traces_never_raise() -> None:
    trace: Any
    for trace in (
        None,
        [],
        "trace",
        {},
        {"Id": 5, "Segments": "nope"},
        {"Segments": [None]},
        {"Id": "", "Segments": []},
    ):
        docs = transform_trace(trace, CTX)  # type: ignore[arg-type]
        assert docs.problems
        assert docs.segments == []
        assert docs.spans == []
        _assert_well_formed(docs)


def test_trace_id_taken_from_the_documents_when_the_trace_has_none() -> None:
    trace = _trace({**BASE, "id": "5cc4a447f5d4d696", "name": "x"})
    del trace["Id"]
    docs = transform_trace(trace, CTX)
    assert docs.trace_id == "1-5f187253-6a106696d56b1f4ef9eba2ed"
    assert docs.trace["problem_count"] == 1


def test_deep_nesting_is_cut_and_reported() -> None:
    node: dict[str, Any] = {
        "id": "00000000000000ff",
        "name": "leaf",
        **{k: BASE[k] for k in ("start_time", "end_time")},
    }
    for depth in range(100):
        node = {
            "id": f"{depth:016x}",
            "name": f"n{depth}",
            "start_time": BASE["start_time"],
            "end_time": BASE["end_time"],
            "subsegments": [node],
        }
    docs = transform_trace(_trace({**node, "trace_id": BASE["trace_id"]}), CTX)
    assert len(docs.segments) == 65
    assert any("nested deeper than 64" in r for r in _reasons(docs))
    _assert_well_formed(docs)


def test_problem_list_is_bounded() -> None:
    root = {**BASE, "id": "5cc4a447f5d4d696", "name": "noisy", "subsegments": list(range(500))}
    docs = transform_trace(_trace(root), CTX)
    assert len(docs.problems) == 201
    assert docs.problems[-1]["reason"] == "300 more problems not listed"
    assert docs.trace["problem_count"] == 500


def test_input_is_not_mutated() -> None:
    trace = load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0]
    before = orjson.dumps(trace)
    transform_trace(trace, CTX)
    assert orjson.dumps(trace) == before


# ====================================================================== Arrow


def test_to_arrow_tables() -> None:
    docs_list = [
        transform_trace(load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0], CTX),
        transform_trace(segment_trace("xray/otel_ddb_sample"), CTX),
        transform_trace(segment_trace("xray/otel_min_in_progress"), CTX),
    ]
    traces, segments = to_arrow(docs_list)
    assert traces.schema == TRACE_SCHEMA
    assert segments.schema == SEGMENT_SCHEMA
    assert traces.num_rows == 3
    assert segments.num_rows == 11 + 18 + 1
    rows = traces.to_pylist()
    assert rows[0]["account_id"] == "012345678901"  # leading zero kept: a string
    assert rows[0]["start"] == datetime(2017, 7, 8, 0, 23, 31, 562000, tzinfo=UTC)
    assert (rows[0]["dt"], rows[0]["hour"]) == ("2017-07-08", "00")
    assert rows[0]["services"] == ["DynamoDB", "SNS", "Scorekeep", "random-name"]
    assert orjson.loads(rows[0]["annotations"]) == {"UserID": "5M388M1E", "Name": "Ola"}
    assert rows[2]["end"] is None
    assert rows[2]["in_progress"] is True
    assert traces.schema.field("start").type == pa.timestamp("us", tz="UTC")
    segment_rows = segments.to_pylist()
    top = next(r for r in segment_rows if r["segment_id"] == "194fcc8747581230")
    original = load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0]["Segments"][1]["Document"]
    assert top["document"] == original  # lossless: the original string
    sub = next(r for r in segment_rows if r["segment_id"] == "4cd3f10b76c624b4")
    assert sub["document"] is None
    assert sub["http_content_length"] == 57
    assert sub["depth"] == 2
    annotated = next(r for r in segment_rows if r["segment_id"] == "e6d2fe619f827804")
    assert orjson.loads(annotated["annotations"]) == {"UserID": "5M388M1E", "Name": "Ola"}
    assert {r["dt"] for r in segment_rows} == {"2017-07-08", "2020-08-04", "2020-07-22"}


def test_to_arrow_empty_and_schema_matches_documents() -> None:
    traces, segments = to_arrow([])
    assert traces.num_rows == 0
    assert segments.num_rows == 0
    only_in_docs = {"annotations_num"}
    arrow_only = {"dt", "hour"}
    assert set(TRACE_SCHEMA.names) == (set(mappings.TRACE_FIELDS) - only_in_docs - {"partition_hour"}) | arrow_only
    parquet_only = {"document", "links"}
    assert set(SEGMENT_SCHEMA.names) == (set(mappings.SEGMENT_FIELDS) - only_in_docs) | arrow_only | parquet_only


# ====================================================================== property: never raise

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["1.478293361271E9", "2016-11-04T21:02:41Z", "true", "", "aws", "remote", "subsegment"])
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ids = st.sampled_from(["53995c3f42cd8ad8", "defdfd9912dc5a56", "70de5b6f19ff9a0a", "abcdefghijklmnop"]) | _json
_times = st.floats(min_value=1.4e9, max_value=1.8e9) | _json
_segment: st.SearchStrategy[dict[str, Any]] = st.deferred(
    lambda: st.fixed_dictionaries(
        {},
        optional={
            "id": _ids,
            "name": st.text(max_size=12) | _json,
            "trace_id": st.just("1-581cf771-a006649127e371903a2de979") | _json,
            "parent_id": _ids,
            "type": st.just("subsegment") | _json,
            "start_time": _times,
            "end_time": _times,
            "in_progress": _json,
            "error": _json,
            "fault": _json,
            "throttle": _json,
            "origin": st.just("AWS::StepFunctions::StateMachine") | _json,
            "namespace": st.sampled_from(["aws", "remote", "local"]) | _json,
            "inferred": _json,
            "http": st.fixed_dictionaries(
                {},
                optional={
                    "request": st.fixed_dictionaries({}, optional={"url": _json, "method": _json, "client_ip": _json})
                    | _json,
                    "response": st.fixed_dictionaries({}, optional={"status": _json, "content_length": _json}) | _json,
                },
            )
            | _json,
            "aws": st.dictionaries(
                st.sampled_from(["operation", "table_name", "queue_url", "execution_arn", "ec2", "xray", "retries"]),
                _json,
            )
            | _json,
            "sql": st.dictionaries(st.sampled_from(["url", "database_type", "sanitized_query"]), _json) | _json,
            "cause": st.fixed_dictionaries(
                {},
                optional={
                    "exceptions": st.lists(
                        _json | st.dictionaries(st.sampled_from(["id", "type", "message", "stack", "remote"]), _json),
                        max_size=3,
                    )
                },
            )
            | _json,
            "annotations": st.dictionaries(st.text(max_size=10), _json, max_size=5) | _json,
            "metadata": _json,
            "subsegments": st.lists(_segment | _json, max_size=3) | _json,
        },
    )
)
_document = (
    _segment.map(lambda d: orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS).decode() if _dumpable(d) else "{")
    | st.text(max_size=30)
    | _json
)
_trace_strategy = st.fixed_dictionaries(
    {
        "Id": st.just("1-581cf771-a006649127e371903a2de979") | _json,
        "Segments": st.lists(st.fixed_dictionaries({"Id": _ids, "Document": _document}) | _json, max_size=5) | _json,
    },
    optional={"Duration": _json, "LimitExceeded": _json},
)
_execution = st.none() | st.dictionaries(
    st.sampled_from(
        [
            "executionArn",
            "stateMachineArn",
            "name",
            "status",
            "startDate",
            "stopDate",
            "input",
            "output",
            "error",
            "cause",
        ]
    ),
    _json,
)


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


def _never_raises(trace: Any, execution: Any) -> None:
    ctx = TraceContext(**_ctx_fields(), execution=execution)
    docs = transform_trace(trace, ctx)
    internal = [p for p in docs.problems if (p["reason"] or "").startswith(("trace not mapped", "segment not mapped"))]
    assert not internal, internal  # data problems are reported; internal errors would be bugs
    _assert_well_formed(docs)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=_trace_strategy, execution=_execution)
def test_arbitrary_documents_never_raise(trace: Any, execution: Any) -> None:
    _never_raises(trace, execution)


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.timeout(LONG_TIMEOUT_SECONDS)
@LONG
@given(trace=_trace_strategy, execution=_execution)
def test_arbitrary_documents_never_raise_long(trace: Any, execution: Any) -> None:
    _never_raises(trace, execution)


def test_a_finished_execution_described_without_stop_date_keeps_the_segment_end() -> None:
    execution = {**load_fixture("xray/synthesized_describe_execution_failed"), "status": "TIMED_OUT"}
    del execution["stopDate"]
    docs = transform_trace(
        load_fixture("xray/synthesized_stepfunctions_trace"), TraceContext(**_ctx_fields(), execution=execution)
    )
    trace = docs.trace
    assert trace["execution_status"] == "TIMED_OUT"
    assert trace["execution_start"] == "2024-09-22T10:13:20.100Z"
    assert trace["execution_stop"] is not None and trace["execution_stop"] > trace["execution_start"]
    assert trace["execution_duration_seconds"] and trace["execution_duration_seconds"] > 0

    running = {**execution, "status": "RUNNING"}
    docs = transform_trace(
        load_fixture("xray/synthesized_stepfunctions_trace"), TraceContext(**_ctx_fields(), execution=running)
    )
    assert docs.trace["execution_stop"] is None and docs.trace["execution_duration_seconds"] is None


def test_the_iso_second_cache_stays_bounded_and_correct() -> None:
    from datetime import UTC, datetime

    from tasks import coerce, transform

    assert transform._second_cache is coerce.second_cache  # the walker's fast path reads the one cache
    start = 1_767_225_600  # 2026-01-01T00:00:00Z
    for second in range(start, start + coerce.SECOND_CACHE_ENTRIES + 5_000):
        text = coerce.iso_ms(second * 1_000_000 + 123_000)
        assert len(coerce.second_cache) <= coerce.SECOND_CACHE_ENTRIES
    expected = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".123Z"
    assert text == expected


def test_segments_without_a_sixteen_hex_id_are_refused_with_their_subsegments() -> None:
    trace_id = "1-5759e988-bd862e3fe1be46a994272793"
    start = 1465510280.0
    good = {"id": "70de5b6f19ff9a0a", "trace_id": trace_id, "name": "api", "start_time": start, "end_time": start + 1}
    child = {"id": "1111111111111111", "name": "inner", "start_time": start, "end_time": start + 0.1}
    bad = {"id": "../etc", "trace_id": trace_id, "name": "evil", "start_time": start, "end_time": start + 1}
    bad_sub = {"id": "x", "name": "db", "start_time": start, "end_time": start + 0.2, "subsegments": [child]}
    good["subsegments"] = [bad_sub]
    trace = {
        "Id": trace_id,
        "Segments": [{"Id": "a", "Document": orjson.dumps(d).decode()} for d in (good, bad)],
    }
    docs = transform_trace(trace, CTX)
    assert [s["segment_id"] for s in docs.segments] == ["70de5b6f19ff9a0a"]
    assert [s["spanId"] for s in docs.spans] == ["70de5b6f19ff9a0a"]
    reasons = [p["reason"] for p in docs.problems]
    assert any("segment id '../etc' is not 16 hex digits" in r for r in reasons), reasons
    assert any("segment id 'x' is not 16 hex digits" in r for r in reasons), reasons


def test_a_trace_without_any_usable_start_is_placed_at_its_anchor_and_says_so() -> None:
    trace_id = "1-5759e988-bd862e3fe1be46a994272793"
    document = {"id": "70de5b6f19ff9a0a", "trace_id": trace_id, "name": "api", "start_time": "yesterday"}
    document["end_time"] = 1465510281.0
    docs = transform_trace(
        {"Id": trace_id, "Segments": [{"Id": "a", "Document": orjson.dumps(document).decode()}]}, CTX
    )
    assert docs.trace["start"] == docs.segments[0]["start"] == "2016-06-09T22:11:20.000Z"  # the id's epoch
    assert docs.trace["duration"] is None  # not measured: never made up
    reasons = [p["reason"] for p in docs.problems]
    assert "invalid start_time 'yesterday'" in reasons
    assert "no segment has a usable start_time: start is the trace's anchor time" in reasons


# ====================================================================== links (issue 16 item 3)

LINKED_TRACE_ID = "1-5f2aebcc-b475d14618c51eaa28753d37"
LINK = {
    "trace_id": "1-5f2aebcb-0123456789abcdef01234567",
    "id": "a1b2c3d4e5f60718",
    "attributes": {"aws.xray.link.type": "follows_from", "batch.size": 10},
}


def _single(segment: dict[str, Any]) -> TraceDocuments:
    trace = {"Id": segment["trace_id"], "Segments": [{"Id": segment["id"], "Document": orjson.dumps(segment).decode()}]}
    return transform_trace(trace, CTX)


def test_segment_links_become_span_links_and_a_parquet_column() -> None:
    consumer = {"id": "2222222222222222", "name": "SQS.ReceiveMessage", "start_time": 1596648396.5}
    consumer.update(end_time=1596648396.6, links=[LINK])
    segment = {"trace_id": LINKED_TRACE_ID, "id": "1111111111111111", "name": "worker", "start_time": 1596648396.4}
    segment.update(end_time=1596648396.9, links=[LINK], subsegments=[consumer])
    docs = _single(segment)
    assert docs.problems == []
    expected = {
        "traceId": "5f2aebcb0123456789abcdef01234567",
        "spanId": "a1b2c3d4e5f60718",
        "traceState": "",
        "attributes": {"aws@xray@link@type": "follows_from", "batch@size": "10"},
        "droppedAttributesCount": 0,
    }
    assert [span["links"] for span in docs.spans] == [[expected], [expected]]
    _, segments = to_arrow([docs])
    rows = {row["segment_id"]: row for row in segments.to_pylist()}
    assert orjson.loads(rows["1111111111111111"]["links"]) == [LINK]
    assert orjson.loads(rows["2222222222222222"]["links"]) == [LINK]
    without = transform_trace(load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0], CTX)
    assert to_arrow([without, docs])[1].column("links").null_count == len(without.segments)


def test_malformed_links_are_flagged_and_kept_in_the_document() -> None:
    links = [LINK, "a1b2c3d4e5f60718", {"trace_id": "not-a-trace", "id": 7, "attributes": [1]}]
    segment = {"trace_id": LINKED_TRACE_ID, "id": "1111111111111111", "name": "worker", "start_time": 1596648396.4}
    segment.update(end_time=1596648396.9, links=links)
    docs = _single(segment)
    reasons = _reasons(docs)
    assert "links[1] is str, not an object; skipped" in reasons
    assert "links[2].trace_id 'not-a-trace' is not an X-Ray trace id" in reasons
    assert "links[2].id '7' is not a 16-hex segment id" in reasons
    assert "links[2].attributes is not an object" in reasons
    assert len(docs.spans[0]["links"]) == 2
    _, segments = to_arrow([docs])
    assert orjson.loads(segments.column("document")[0].as_py())["links"] == links


# ====================================================================== silent fallbacks (issue 16 item 5)


def test_every_fallback_is_flagged_and_the_original_kept() -> None:
    call = {
        "id": "2222222222222222",
        "name": "DynamoDB",
        "namespace": "aws",
        "start_time": 1596648396.5,
        "end_time": 1596648396.6,
        "traced": "yes",
        "aws": {"operation": 42, "retries": "3", "table_name": "orders"},
        "http": {"request": {"method": 1, "x_forwarded_for": "true"}, "response": {"status": "503"}},
        "cause": {
            "exceptions": [
                {"id": 1234, "type": ["Boom"], "message": "m", "remote": "1", "truncated": "2"},
                "0123456789abcdef",
                {"id": "0123456789abcdef", "stack": [{"label": "f", "path": "a.py", "line": "12"}, "frame"]},
            ]
        },
    }
    db = {"id": "3333333333333333", "name": "orders-db", "namespace": "remote", "start_time": 1596648396.5}
    db.update(end_time=1596648396.6, sql={"url": "postgresql://db:5432/orders", "user": 5})
    segment = {
        "trace_id": LINKED_TRACE_ID,
        "id": "1111111111111111",
        "name": "orders",
        "start_time": 1596648396.4,
        "end_time": 1596648396.9,
        "error": "true",
        "in_progress": 0,
        "user": {"id": 1},
        "cause": 12,
        "metadata": {"default": "not an object"},
        "aws": {"ec2": "i-123", "xray": {"sdk": "X-Ray for Go"}},
        "subsegments": [call, db, {"id": "4444444444444444", "name": "x", "start_time": 1, "cause": "zz"}],
    }
    docs = _single(segment)
    reasons = set(_reasons(docs))
    for expected in (
        "error 'true' is not a boolean; read as True",
        "in_progress '0' is not a boolean; read as False",
        "user is dict, not a string; stored as text",
        "cause is int, neither an exception id nor an object",
        "metadata 'default' is str, not an object",
        "aws.ec2 is str, not an object",
        "traced 'yes' is not a boolean; read as False",
        "aws.operation is int, not a string; stored as text",
        "aws.retries '3' is not an integer; read as 3",
        "http.request.method is int, not a string; stored as text",
        "http.request.x_forwarded_for 'true' is not a boolean; read as True",
        "http.response.status '503' coerced",
        "cause.exceptions[].id '1234' is not a string",
        "cause.exceptions[].type is list, not a string; stored as text",
        "cause.exceptions[].remote '1' is not a boolean; read as True",
        "cause.exceptions[].truncated '2' is not an integer",
        "cause.exceptions holds a non-object",
        "sql.user is int, not a string; stored as text",
        "cause 'zz' is not a 16-hex exception id",
    ):
        assert expected in reasons, (expected, sorted(reasons))
    assert any(r.startswith("cause.exceptions[].stack frame") and "wrong type" in r for r in reasons)
    assert any(r.startswith("cause.exceptions[].stack frame 'frame' is not an object") for r in reasons)
    # what was read is still indexed, and the lossless `document` column holds every original value
    call_span = next(span for span in docs.spans if span["spanId"] == call["id"])
    assert call_span["span.attributes.aws@xray@retries"] == "3"
    assert call_span["span.attributes.http@method"] == "1"
    _, segments = to_arrow([docs])
    original = orjson.loads(segments.column("document")[0].as_py())
    assert original == segment
    assert docs.trace["problem_count"] == len(docs.problems)


def test_partition_from_the_walk_equals_the_one_rule() -> None:
    # The transform hands tracetime the earliest start its walk saw instead of walking again: the
    # partition must stay what `tracetime.trace_partition` (reconcile, replay) computes, also for
    # ids that are not credible (old documents), refused (sub)segments and deep nesting.
    from tasks import tracetime

    ctx = TraceContext(
        account_id=CTX.account_id,
        account_name=CTX.account_name,
        environment=CTX.environment,
        region=CTX.region,
        collected_at=datetime(2031, 1, 1, tzinfo=UTC),  # every fixture id epoch is far from credible
        envelope_id=CTX.envelope_id,
        source=CTX.source,
    )
    refused = {"id": "not-hex", "name": "x", "start_time": 1000000000.0, "end_time": 1000000001.0}
    early_refused = {
        "trace_id": "1-5f2aebcc-b475d14618c51eaa28753d37",
        "id": "1111111111111111",
        "name": "svc",
        "start_time": 1596648396.4,
        "end_time": 1596648396.9,
        "subsegments": [refused],
    }
    traces = [
        load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0],
        load_fixture("xray/synthesized_stepfunctions_trace"),
        segment_trace("xray/otel_ddb_sample"),
        segment_trace("xray/awsdocs_minimal_segment"),
        segment_trace("xray/otel_indep_subsegment_content_length_string"),
        {
            "Id": early_refused["trace_id"],
            "Segments": [{"Id": "1111111111111111", "Document": orjson.dumps(early_refused).decode()}],
        },
    ]
    for trace in traces:
        docs = transform_trace(trace, ctx)
        expected = tracetime.trace_partition(trace, ctx.collected_at)
        assert (docs.dt, docs.hour, docs.day) == (expected.dt, expected.hour, expected.day), trace["Id"]


def test_each_context_gets_its_own_fields_when_contexts_alternate() -> None:
    """The per-context parts are built once per context: alternating contexts never leak fields."""
    trace = load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0]
    other = TraceContext(
        "098765432109", "beta", "qa", "us-west-2", datetime(2024, 9, 23, 8, tzinfo=UTC), "e2", "replay"
    )
    for ctx in (CTX, other, CTX, other):
        docs = transform_trace(trace, ctx)
        for doc in (docs.trace, *docs.segments):
            assert (doc["account_id"], doc["account_name"], doc["environment"], doc["region"], doc["source"]) == (
                ctx.account_id,
                ctx.account_name,
                ctx.environment,
                ctx.region,
                ctx.source,
            )
            assert doc["collected_at"] == ctx.collected_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert {d["trace_id"] for d in docs.segments} == {docs.trace_id}
        assert docs.version == round(ctx.collected_at.timestamp() * 1000)
    docs.segments[0]["account_id"] = "mutated"  # a caller editing its documents changes no later trace
    assert transform_trace(trace, other).segments[0]["account_id"] == other.account_id
