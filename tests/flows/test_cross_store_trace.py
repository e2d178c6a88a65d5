"""One request chain across a classic account and a Transaction Search account: its first segment
is read from X-Ray, the rest from `aws/spans`; after sweep and consume the span index holds every
span of the trace exactly once, and each account keeps its own trace document."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from blocks.config import Config
from flows.consume import run_consumer
from sandbox.stack import SandboxStack
from sandbox.traffic import generate_traffic, write_traffic
from tasks import collector as col
from tasks.index import client_for
from tasks.span_records import w3c_trace_id

REGION = "us-east-1"


def segment_ids(document: dict[str, Any]) -> Iterator[str]:
    yield str(document["id"])
    for child in document.get("subsegments") or []:
        yield from segment_ids(child)


def test_a_trace_across_a_classic_and_a_span_account_is_whole_in_the_span_index(
    fresh_config: Config, stack: SandboxStack
) -> None:
    caller, callee = fresh_config.roster.accounts[:2]
    front = next(c for c in stack.extra if type(c).__name__ == "StrictXRayFront")
    front.set_segment_destination(callee.account_id, REGION, "CloudWatchLogs")
    try:
        planned = generate_traffic(17, [caller, callee], traces_per_account=2, hours_back=0.5, now=time.time())
        write_traffic(planned, fresh_config.roster)
        collector = col.Collector.from_config(fresh_config)
        readers = {}
        for account in (caller, callee):
            result = col.sweep_account(
                collector, account, REGION, now=datetime.now(UTC), lag=timedelta(0), first_lookback=timedelta(hours=1)
            )
            assert result.status == "ok", result.error
            readers[account.account_id] = result.reader
    finally:
        front.set_segment_destination(callee.account_id, REGION, "XRay")
    assert readers == {caller.account_id: "xray", callee.account_id: "spans"}
    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    assert stats.documents_failed == 0, stats.errors

    trace_id = planned.cross_account_trace_id
    assert trace_id is not None
    parts = {
        record.account_id: [s for document in record.documents for s in segment_ids(document)]
        for item in planned.regions
        for record in item.traces
        if record.trace_id == trace_id
    }
    assert set(parts) == {caller.account_id, callee.account_id}  # the caller's segments, the callee's
    expected = sorted(s for ids in parts.values() for s in ids)

    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="_all")
    hits = client.search(
        index="otel-v1-apm-span", body={"query": {"term": {"traceId": w3c_trace_id(trace_id)}}, "size": 1000}
    )["hits"]["hits"]
    real = [h["_source"] for h in hits if h["_source"].get("span.attributes.aws@xray@inferred") != "true"]
    assert sorted(s["spanId"] for s in real) == expected  # every span of both accounts, each once
    callee_root = next(s for s in real if s["spanId"] == parts[callee.account_id][0])
    assert callee_root["parentSpanId"] == parts[caller.account_id][-1]  # the caller's traced call
    by_account = {s["spanId"]: s["resource.attributes.cloud@account@id"] for s in real}
    assert {by_account[s] for s in parts[caller.account_id]} == {caller.account_id}
    assert {by_account[s] for s in parts[callee.account_id]} == {callee.account_id}
    # Beside them, only X-Ray-style inferred nodes (`aws.xray.inferred`), as X-Ray draws them in each
    # account: the caller's database, and the traced call whose answering segment lives in the other
    # account (not in the caller's envelope); the callee's DynamoDB table and SNS topic, inferred on
    # the span path too. They are marked, so a count of real spans is exact.
    nodes = [s for s in (h["_source"] for h in hits) if s not in real]
    assert {n["span.attributes.aws@xray@inferred"] for n in nodes} == {"true"}
    assert {n["parentSpanId"] for n in nodes} <= set(expected)
    assert all(n["resource.attributes.cloud@account@id"] == by_account[n["parentSpanId"]] for n in nodes)
    assert {n["name"] for n in nodes if by_account[n["parentSpanId"]] == callee.account_id} == {"DynamoDB", "SNS"}
    traces = client.search(index="xray-traces", body={"query": {"term": {"trace_id": trace_id}}})["hits"]["hits"]
    assert sorted(h["_source"]["account_id"] for h in traces) == sorted([caller.account_id, callee.account_id])
