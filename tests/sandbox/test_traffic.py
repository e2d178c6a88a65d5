"""Synthetic X-Ray traffic: the pure generator (no server) and the writes into moto (real HTTP)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
import pytest

from blocks import MemberAccount, Roster
from sandbox import seed
from sandbox.traffic import (
    END_MARGIN_SECONDS,
    MACHINES,
    MAX_SEGMENT_BYTES,
    ExecutionFacts,
    Traffic,
    align_executions,
    complete_in_progress,
    document_json,
    document_size,
    generate_traffic,
    write_traffic,
)
from tasks import windows
from tasks import xray as xray_tasks
from tasks.aws import MemberSessions

NOW = 1_780_000_000.0  # fixed clock for the pure tests
TRACE_ID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")
SEGMENT_ID = re.compile(r"^[0-9a-f]{16}$")


def _walk(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield doc
    for sub in doc.get("subsegments", []):
        yield from _walk(sub)


def _all_documents(traffic: Traffic) -> list[dict[str, Any]]:
    return [*traffic.documents(), *traffic.completions()]


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate_traffic(11, list(seed.MEMBERS), traces_per_account=30, hours_back=3.0, now=NOW)


def test_every_document_has_the_required_fields(traffic: Traffic) -> None:
    documents = _all_documents(traffic)
    assert len(documents) > 100
    for doc in documents:
        for key in ("name", "id", "trace_id", "start_time"):
            assert key in doc, (key, doc.get("id"))
        assert ("end_time" in doc) != (doc.get("in_progress") is True), doc["id"]
        assert TRACE_ID.match(doc["trace_id"]), doc["trace_id"]
        for node in _walk(doc):
            assert SEGMENT_ID.match(node["id"]), node["id"]
            assert node["name"]
            assert "start_time" in node
            if "end_time" in node:
                assert node["end_time"] >= node["start_time"], node["id"]
        assert document_size(doc) <= MAX_SEGMENT_BYTES


def test_trace_ids_carry_the_start_epoch_and_segment_ids_are_unique(traffic: Traffic) -> None:
    for record in traffic.traces:
        starts = [d["start_time"] for d in record.documents]
        if record.scenario != "cross_account_callee":
            assert int(record.trace_id.split("-")[1], 16) == int(min(starts)), record.trace_id
        ids = [node["id"] for doc in record.documents for node in _walk(doc)]
        assert len(ids) == len(set(ids)), record.trace_id


def test_same_seed_same_bytes_different_seed_different() -> None:
    accounts = list(seed.MEMBERS)
    first = generate_traffic(5, accounts, 25, 3.0, now=NOW)
    again = generate_traffic(5, accounts, 25, 3.0, now=NOW)
    other = generate_traffic(6, accounts, 25, 3.0, now=NOW)
    as_bytes = lambda t: [document_json(d) for d in _all_documents(t)]  # noqa: E731
    assert as_bytes(first) == as_bytes(again)
    assert [e.name for e in first.executions] == [e.name for e in again.executions]
    assert as_bytes(first) != as_bytes(other)
    assert not {r.trace_id for r in first.traces} & {r.trace_id for r in other.traces}


def test_times_spread_over_the_window_and_across_an_hour_boundary(traffic: Traffic) -> None:
    earliest = NOW - 3 * 3600
    latest_end = NOW - END_MARGIN_SECONDS
    straddles = 0
    hours = set()
    for record in traffic.traces:
        for doc in record.documents + record.completions:
            for node in _walk(doc):
                assert earliest <= node["start_time"] <= latest_end
                assert node.get("end_time", 0) <= latest_end
        root = record.documents[0]
        hours.add(int(root["start_time"] // 3600))
        if "end_time" in root and int(root["start_time"] // 3600) != int(root["end_time"] // 3600):
            straddles += 1
    assert len(hours) >= 3
    assert straddles >= 1


def test_one_trace_is_over_one_mebibyte(traffic: Traffic) -> None:
    big = [r for r in traffic.traces if r.trace_id == traffic.big_trace_id]
    assert len(big) == 1
    sizes = [document_size(d) for d in big[0].documents]
    assert sum(sizes) > 1024 * 1024
    assert max(sizes) <= MAX_SEGMENT_BYTES
    assert {d.get("parent_id") for d in big[0].documents[1:]} == {big[0].documents[0]["id"]}


def test_cross_account_trace_lives_in_two_accounts(traffic: Traffic) -> None:
    trace_id = traffic.cross_account_trace_id
    assert trace_id is not None
    owners = {r.account_id for r in traffic.regions if trace_id in r.trace_ids}
    assert len(owners) == 2
    caller = next(r for r in traffic.traces if r.scenario == "cross_account_caller")
    callee = next(r for r in traffic.traces if r.scenario == "cross_account_callee")
    call = next(s for s in caller.documents[0]["subsegments"] if s.get("namespace") == "remote" and "http" in s)
    assert call["http"]["request"]["traced"] is True
    assert callee.documents[0]["parent_id"] == call["id"]
    assert callee.account_id != caller.account_id


def test_scenario_and_status_mix(traffic: Traffic) -> None:
    nodes = [node for doc in _all_documents(traffic) for node in _walk(doc)]
    origins = {n.get("origin") for n in nodes}
    assert {
        "AWS::StepFunctions::StateMachine",
        "AWS::Lambda",
        "AWS::Lambda::Function",
        "AWS::ApiGateway::Stage",
        "AWS::EC2::Instance",
        "AWS::ECS::Container",
    } <= origins
    assert {n.get("namespace") for n in nodes} >= {"aws", "remote"}
    operations = {(n["name"], n["aws"].get("operation")) for n in nodes if n.get("namespace") == "aws"}
    assert {
        ("DynamoDB", "GetItem"),
        ("DynamoDB", "PutItem"),
        ("SNS", "Publish"),
        ("SQS", "SendMessage"),
    } <= operations
    assert ("Lambda", "Invoke") in operations
    assert any(n.get("aws", {}).get("table_name") for n in nodes)
    assert any(n.get("aws", {}).get("queue_url") for n in nodes)
    assert any(n.get("aws", {}).get("function_name") for n in nodes)
    sql = [n["sql"] for n in nodes if "sql" in n]
    assert sql
    assert all({"url", "database_type", "sanitized_query"} <= set(s) for s in sql)
    statuses = {n.get("http", {}).get("response", {}).get("status") for n in nodes}
    assert {200, 404, 429, 500, 502} <= statuses
    assert any(n.get("throttle") and n.get("error") for n in nodes)
    assert any(n.get("fault") for n in nodes)
    assert {r.status for r in traffic.traces} == {"ok", "error", "fault", "throttle"}
    causes = [n["cause"] for n in nodes if "cause" in n]
    exception_ids = {e["id"] for c in causes if isinstance(c, dict) for e in c.get("exceptions", [])}
    by_id = [c for c in causes if isinstance(c, str)]
    assert by_id
    assert set(by_id) <= exception_ids
    stacks = [e for c in causes if isinstance(c, dict) for e in c["exceptions"] if e.get("stack")]
    assert stacks
    assert {"path", "line", "label"} <= set(stacks[0]["stack"][0])
    assert any(isinstance(c, dict) and c.get("working_directory") for c in causes)
    annotation_types = {type(v) for n in nodes for v in n.get("annotations", {}).values()}
    assert {str, int, float, bool} <= annotation_types
    assert any(isinstance(v, dict) for n in nodes for ns in n.get("metadata", {}).values() for v in ns.values())
    assert {e.planned_status for e in traffic.executions} == {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


def test_lambda_segments_hang_off_the_invoke_subsegment(traffic: Traffic) -> None:
    record = next(r for r in traffic.traces if r.scenario == "step_functions")
    plan = record.execution
    assert plan is not None
    machine = record.documents[0]
    assert machine["aws"]["execution_arn"] == plan.execution_arn
    assert machine["resource_arn"] == plan.state_machine_arn
    visited = [state for state, _, _ in MACHINES[plan.state_machine].visited(plan.planned_status)]
    assert [s["name"] for s in machine["subsegments"]] == visited
    invokes = {n["id"] for n in _walk(machine) if n["name"] == "Lambda"}
    services = [d for d in record.documents if d.get("origin") == "AWS::Lambda"]
    functions = [d for d in record.documents if d.get("origin") == "AWS::Lambda::Function"]
    assert services
    assert {s["parent_id"] for s in services} == invokes
    assert {f["parent_id"] for f in functions} == {s["id"] for s in services}


def test_in_progress_documents_complete_with_the_same_id(traffic: Traffic) -> None:
    records = [r for r in traffic.traces if r.completions]
    assert records
    for record in records:
        pending = [d for d in record.documents if d.get("in_progress")]
        assert [d["id"] for d in pending] == [d["id"] for d in record.completions]
        assert all("end_time" not in d for d in pending)
        assert all("end_time" in d and "in_progress" not in d for d in record.completions)
        # a later, finished piece of the same trace: the trace shows up (as partial) meanwhile
        assert any(d.get("type") == "subsegment" and "end_time" in d for d in record.documents)


def test_align_rebuilds_step_functions_traces_from_describe_results(traffic: Traffic) -> None:
    plan = traffic.executions[0]
    fact = ExecutionFacts(
        execution_arn=plan.execution_arn,
        state_machine_arn=plan.state_machine_arn,
        name=plan.name,
        status=plan.planned_status,
        start=NOW - 30.0,
        stop=NOW - 28.5,
    )
    aligned = align_executions(traffic, {plan.execution_arn: fact})
    before = next(r for r in traffic.traces if r.execution == plan)
    after = next(r for r in aligned.traces if r.execution == plan)
    assert after.trace_id == f"1-{int(NOW - 30):08x}-{plan.trace_suffix}"
    assert after.documents[0]["start_time"] == NOW - 30.0
    assert after.documents[0]["end_time"] == NOW - 28.5
    assert [n["id"] for d in after.documents for n in _walk(d)] == [n["id"] for d in before.documents for n in _walk(d)]
    others = [document_json(d) for r in aligned.traces if r.execution != plan for d in r.documents]
    assert others == [document_json(d) for r in traffic.traces if r.execution != plan for d in r.documents]


def test_generating_a_thousand_traces_across_two_regions() -> None:
    # how fast is a benchmark's business (the generator feeds B1-B4), not a timed test's
    accounts = [MemberAccount(account_id="011122223333", name="load", regions=["us-east-1", "eu-west-1"])]
    generated = generate_traffic(1, accounts, traces_per_account=1000, hours_back=6.0, now=NOW)
    assert sum(len(r.trace_ids) for r in generated.regions) == 1000
    assert {r.region for r in generated.regions} == {"us-east-1", "eu-west-1"}


# ------------------------------------------------------------------------------ against moto


def _summaries(client: Any, start: float, end: float) -> set[str]:
    """Every trace id in [start, end) through the strict X-Ray front (pages, ≤ 1 h windows)."""
    planned = windows.plan_windows(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
    return {i for w in planned for i in xray_tasks.list_trace_ids(client, w).trace_ids}


def test_write_traffic_into_member_accounts(stack: Any, fresh_roster: Roster) -> None:
    now = time.time()
    accounts = fresh_roster.accounts
    planned = generate_traffic(21, accounts, traces_per_account=16, hours_back=2.0, now=now)
    report = write_traffic(planned, fresh_roster)

    assert report.big_trace_id == planned.big_trace_id
    assert report.cross_account_trace_id == planned.cross_account_trace_id
    assert {r.account_id for r in report.regions} == {a.account_id for a in accounts}
    assert all(r.documents_put == r.segments for r in report.regions)

    sessions = MemberSessions(fresh_roster)
    window = (now - 2.0 * 3600 - 60, time.time() + 60)
    seen: dict[str, set[str]] = {}
    for region in report.regions:
        xray = sessions.client(region.account_id, region.region, "xray")
        ids = _summaries(xray, *window)
        assert ids == set(region.trace_ids), region.account_id
        batch = xray_tasks.batch_get_traces(xray, sorted(ids))
        assert batch.complete
        assert {t["Id"] for t in batch.traces} == ids
        segment_ids = {s["Id"] for t in batch.traces for s in t["Segments"]}
        assert len(segment_ids) == region.segments
        seen[region.account_id] = ids
    cross = report.cross_account_trace_id
    assert cross is not None
    assert sum(cross in ids for ids in seen.values()) == 2

    # the log account's own credentials see none of it
    log_xray = boto3.Session(region_name="us-east-1").client("xray")
    assert not _summaries(log_xray, *window) & set().union(*seen.values())

    # the executions are real and ended as planned
    assert {e.planned_status for e in report.executions} == {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}
    assert not report.execution_mismatches
    for result in report.executions:
        states = sessions.client(result.account_id, result.region, "stepfunctions")
        described = states.describe_execution(executionArn=result.execution_arn)
        assert described["status"] == result.planned_status
        assert described["name"] == result.name
        xray = sessions.client(result.account_id, result.region, "xray")
        trace = xray.batch_get_traces(TraceIds=[result.trace_id])["Traces"][0]
        machine = next(
            orjson.loads(s["Document"])
            for s in trace["Segments"]
            if orjson.loads(s["Document"]).get("origin") == "AWS::StepFunctions::StateMachine"
        )
        assert machine["aws"]["execution_arn"] == result.execution_arn
        assert machine["start_time"] == pytest.approx(described["startDate"].timestamp(), abs=1e-3)
        if "stopDate" in described:
            assert machine["end_time"] == pytest.approx(described["stopDate"].timestamp(), abs=1e-3)
        if result.status == "FAILED":
            assert machine["fault"] is True
            failing = machine["subsegments"][-1]["cause"]["exceptions"][0]
            assert (failing["type"], failing["message"]) == (described["error"], described["cause"])

    # in-progress segments get their completed version (same id, now with end_time)
    completion = complete_in_progress(planned, fresh_roster)
    assert sum(completion.completed.values()) == len(list(planned.completions()))
    record = next(r for r in planned.traces if r.completions)
    xray = sessions.client(record.account_id, record.region, "xray")
    trace = xray.batch_get_traces(TraceIds=[record.trace_id])["Traces"][0]
    versions = [orjson.loads(s["Document"]) for s in trace["Segments"] if s["Id"] == record.completions[0]["id"]]
    assert any("end_time" in v for v in versions)


def test_write_refuses_accounts_outside_the_roster(stack: Any, fresh_roster: Roster) -> None:
    stranger = MemberAccount(account_id="099999999999", name="stranger", regions=["us-east-1"])
    planned = generate_traffic(2, [stranger], traces_per_account=3, hours_back=1.0, now=time.time())
    with pytest.raises(Exception, match="not in the roster"):
        write_traffic(planned, Roster(accounts=list(fresh_roster.accounts), role_name=seed.READER_ROLE))
