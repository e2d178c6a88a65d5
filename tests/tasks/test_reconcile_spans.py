"""Re-reading given traces from `aws/spans` (reconcile's repair, collect by execution) on the moto
server behind the strict front's Transaction Search emulation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blocks.config import Config
from sandbox.transaction_search import TransactionSearch
from tasks import collector as col
from tasks import reconcile as rec
from tasks import span_retrieval, tracetime
from tasks.errors import TransientError
from tasks.span_records import w3c_trace_id
from tasks.windows import Window
from tests.flows.test_sweep import put_simple_traces

REGION = "us-east-1"


def span_traces(config: Config, search: TransactionSearch, index: int, count: int) -> tuple[str, list[str]]:
    """`count` traces put while roster account `index` sends to aws/spans: (account id, trace ids)."""
    account = config.roster.accounts[index].account_id
    search.set_destination(account, REGION, "CloudWatchLogs")
    try:
        return account, put_simple_traces(config, account, count)
    finally:
        search.set_destination(account, REGION, "XRay")


def test_read_traces_by_trace_id_and_by_hour_find_the_same_whole_traces(
    fresh_config: Config, search: TransactionSearch
) -> None:
    account, ids = span_traces(fresh_config, search, 0, 12)
    collector = col.Collector.from_config(fresh_config)
    _, call = collector.span_callers(account, REGION)
    logs = collector.logs_client(account, REGION)

    by_id = span_retrieval.read_traces(logs, call, ids[:3])
    assert (by_id.filtered_reads, by_id.hour_reads) == (3, 0)
    assert set(by_id.groups.traces) == {w3c_trace_id(t) for t in ids[:3]}
    assert all(len(spans) == 1 for spans in by_id.groups.traces.values())

    epoch = tracetime.id_epoch(ids[0])
    assert epoch is not None
    absent = f"1-{epoch:08x}-{'f' * 24}"
    by_hour = span_retrieval.read_traces(logs, call, [*ids, absent], filter_ids_max=0)
    hours = {tracetime.Partition.of(tracetime.id_epoch(t) or 0).second for t in ids}
    assert (by_hour.filtered_reads, by_hour.hour_reads) == (0, len(hours))
    assert set(by_hour.groups.traces) == {w3c_trace_id(t) for t in ids}
    assert by_hour.missing([*ids, absent]) == [absent]
    for trace_id, spans in by_id.groups.traces.items():
        assert by_hour.groups.traces[trace_id] == spans  # the same records, verbatim


def test_execution_spans_retrieve_by_trace_header_and_time_out_in_one_line(
    fresh_config: Config, search: TransactionSearch
) -> None:
    assert span_retrieval.header_trace_id("Root=1-5759E988-BD862E3FE1BE46A994272793;Sampled=1") == (
        "1-5759e988-bd862e3fe1be46a994272793"
    )
    assert span_retrieval.header_trace_id("Sampled=1") is None
    assert span_retrieval.header_trace_id(None) is None
    account, ids = span_traces(fresh_config, search, 1, 2)
    collector = col.Collector.from_config(fresh_config)
    xray_call, logs_call = collector.span_callers(account, REGION)
    xray, logs = collector.xray_client(account, REGION), collector.logs_client(account, REGION)
    now = datetime.now(UTC)
    window = Window(now - timedelta(minutes=30), now)
    arn = f"arn:aws:states:{REGION}:{account}:execution:orders:none-of-these"

    read = span_retrieval.execution_spans(
        xray, logs, xray_call, logs_call, arn, window, trace_header=f"Root={ids[0]};Sampled=1", poll_seconds=0.05
    )
    assert read.candidates == [w3c_trace_id(ids[0])]  # no span names the ARN: the header alone
    assert read.retrieved == 1 and read.reread == 0
    assert set(read.groups.traces) == {w3c_trace_id(ids[0])}

    polls = search.retrieval_polls
    search.retrieval_polls = 10**6  # the retrieval never completes
    try:
        with pytest.raises(TransientError) as raised:
            span_retrieval.execution_spans(
                xray, logs, xray_call, logs_call, arn, window,
                trace_header=f"Root={ids[1]}", wait_seconds=0.2, poll_seconds=0.05,
            )  # fmt: skip
    finally:
        search.retrieval_polls = polls
    message = str(raised.value)
    assert "\n" not in message
    assert f"trace retrieval of 1 trace ids in {account}/{REGION} not COMPLETE after 4 polls" in message
    assert "RUNNING" in message


def test_plan_repair_takes_ids_found_in_aws_spans_from_there_and_the_rest_from_xray() -> None:
    start = datetime(2026, 11, 20, 10, tzinfo=UTC)
    epoch = int(start.timestamp())
    t = [f"1-{epoch + i:08x}-{i:024x}" for i in range(4)]
    target = ("012345678901", "us-east-1")
    observation = rec.Observation(start=start, end=start + timedelta(hours=1), xray_hours={start})
    # reader `both`: X-Ray lists t0 and t1, aws/spans holds t1, t2 and t3; the raw archive only t3
    listing = rec.SourceListing(rec.xray_positions(t), "both", {t[1], t[2], t[3]})
    observation.record("xray", target, listing)
    observation.record("raw", target, {t[3]: ("raw/k", epoch + 3)})
    for sink in ("parquet", "index"):
        observation.record(sink, target, rec.xray_positions(t[3:]))
    plan = rec.plan_repair(observation, [target])
    assert plan.recollect == {target: [t[0]]}
    assert plan.recollect_spans == {target: [t[1], t[2]]}
    assert observation.readers == {target: "both"} and not plan.empty
