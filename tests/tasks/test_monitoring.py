"""Monitoring-account mode against the sandbox (moto + the strict X-Ray front with its OAM emulation):
both modes give the same documents, unlinked accounts fall back to their roles, accounts outside
the roster are dropped and counted, and a monitoring account without a sink is a clear error."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
import pyarrow as pa
import pytest

from blocks import MonitoringAccount
from blocks.config import Config
from sandbox import seed
from tasks import collector as col
from tasks import monitoring
from tasks.aws import MemberSessions
from tasks.tables import to_arrow
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.conftest import new_account_id
from tests.flows.test_sweep import drain

REGION = "us-east-1"
COLLECTED = datetime(2030, 1, 1, tzinfo=UTC)
RUN_FIELDS = {"collected_at", "envelope_id", "version"}  # what differs between any two runs


def segment(trace_id: str, name: str, segment_id: str, start: float, parent: str | None = None) -> str:
    document: dict[str, Any] = {
        "name": name,
        "id": segment_id,
        "trace_id": trace_id,
        "start_time": start,
        "end_time": start + 0.25,
        "origin": "AWS::EC2::Instance",
        "http": {"request": {"method": "GET", "url": f"https://{name}.example/"}, "response": {"status": 200}},
    }
    if parent:
        document["parent_id"] = parent
    return orjson.dumps(document).decode()


def put_traffic(sessions: MemberSessions, accounts: list[str], start: float) -> dict[str, list[str]]:
    """Three traces per account, and one request chain dev → qa (one trace per account, one id)."""
    written: dict[str, list[str]] = {}
    for n, account in enumerate(accounts):
        docs, ids = [], []
        for i in range(3):
            trace_id = f"1-{int(start) + i:08x}-{uuid.uuid4().hex[:24]}"
            docs.append(segment(trace_id, f"svc-{account[-4:]}", f"{n:04x}{i:012x}", start + i))
            ids.append(trace_id)
        sessions.client(account, REGION, "xray").put_trace_segments(TraceSegmentDocuments=docs)
        written[account] = ids
    chain = f"1-{int(start):08x}-{uuid.uuid4().hex[:24]}"
    caller, callee = accounts[0], accounts[1]
    sessions.client(caller, REGION, "xray").put_trace_segments(
        TraceSegmentDocuments=[segment(chain, "frontend", "a000000000000001", start + 5)]
    )
    sessions.client(callee, REGION, "xray").put_trace_segments(
        TraceSegmentDocuments=[segment(chain, "backend", "b000000000000002", start + 5.05, parent="a000000000000001")]
    )
    written[caller].append(chain)
    written[callee].append(chain)
    return written


def second_config(stack: Any, config: Config) -> Config:
    suffix = uuid.uuid4().hex[:10]
    session = boto3.Session(region_name=REGION)
    return config.model_copy(
        update={
            "queue": seed.seed_queue(session, "o-sandbox", name=f"xraylake-m-{suffix}"),
            "archive": seed.seed_bucket(session, bucket=f"xraylake-m-{suffix}"),
        }
    )


def link(sessions: MemberSessions, monitoring_account: str, sources: list[str]) -> None:
    sink = sessions.client(monitoring_account, REGION, "oam").create_sink(Name="xraylake-test")["Arn"]
    for source in sources:
        sessions.client(source, REGION, "oam").create_link(
            LabelTemplate="$AccountName", ResourceTypes=["AWS::XRay::Trace"], SinkIdentifier=sink
        )


def contents(config: Config) -> dict[str, Any]:
    """Per account: the traces as sent, and what the consumer's transform makes of them."""
    by_account: dict[str, dict[str, Any]] = {}
    for envelope in drain(config):
        account = config.roster.get(envelope.account_id)
        ctx = TraceContext(
            account.account_id, account.name, account.environment, envelope.region, COLLECTED, "e", "sweep"
        )
        for trace in envelope.traces:
            entry = by_account.setdefault(envelope.account_id, {"traces": {}, "documents": []})
            ordered = dict(trace, Segments=sorted(trace["Segments"], key=lambda s: s["Id"]))
            entry["traces"][trace["Id"]] = ordered
            entry["documents"].append(transform_trace(ordered, ctx))
    return by_account


def comparable(documents: list[Any]) -> tuple[list[tuple[str, str, str]], pa.Table, pa.Table]:
    requests = sorted(
        (
            r.kind,
            r.doc_id,
            orjson.dumps(
                {k: v for k, v in r.source.items() if k not in RUN_FIELDS}, option=orjson.OPT_SORT_KEYS
            ).decode(),
        )
        for d in documents
        for r in d.index_requests()
    )
    traces, segments = to_arrow(sorted(documents, key=lambda d: d.trace_id))
    return (
        requests,
        traces.sort_by("trace_id"),
        segments.sort_by([("trace_id", "ascending"), ("segment_id", "ascending")]),
    )


@pytest.mark.slow  # ~15 s: two sweeps of four accounts and both drains
def test_both_modes_give_identical_documents_and_unlinked_accounts_keep_their_roles(
    stack: Any, fresh_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "FETCH_CHUNK", 2)  # BatchGetTraces of 2 ids, several in flight
    roster = fresh_config.roster
    dev, qa, prod = (a.account_id for a in roster.accounts)
    monitor, outsider = new_account_id(), new_account_id()
    sessions = MemberSessions(roster)
    written = put_traffic(sessions, [dev, qa, prod, outsider], time.time() - 900)
    link(sessions, monitor, [dev, qa, outsider])  # prod is not linked: its own role collects it
    now = datetime.now(UTC)

    member_mode = col.Collector.from_config(fresh_config)
    for account in roster.accounts:
        assert col.sweep_account(member_mode, account, REGION, now=now).status == "ok"

    with_monitoring = roster.model_copy(update={"monitoring": MonitoringAccount(account_id=monitor, regions=[REGION])})
    config_b = second_config(stack, fresh_config).model_copy(update={"roster": with_monitoring})
    collector_b = col.Collector.from_config(config_b)
    mon_sessions = monitoring.monitoring_sessions(with_monitoring)
    routing = monitoring.route(with_monitoring, [(a, REGION) for a in roster.accounts], mon_sessions)
    assert [(a.account_id, r) for a, r in routing.member_targets] == [(prod, REGION)]
    assert {a.account_id for a in routing.groups[REGION]} == {dev, qa}
    outcome = monitoring.sweep_region(
        collector_b, mon_sessions, with_monitoring.monitoring, REGION, routing.groups[REGION], now=now
    )
    assert outcome.status == "ok", outcome.error
    assert outcome.dropped_traces == 3 and outcome.orphan_segments == 0  # the outsider's, never sent
    assert {r.account_id: r.path for r in outcome.results} == {dev: "monitoring-account", qa: "monitoring-account"}
    # one send for both accounts' envelopes, each result still counts its own
    assert {r.account_id: r.traces for r in outcome.results} == {dev: len(written[dev]), qa: len(written[qa])}
    assert all(r.envelopes >= 1 and r.bytes > 0 and r.summaries == len(written[r.account_id]) for r in outcome.results)
    fallback = col.sweep_account(collector_b, routing.member_targets[0][0], REGION, now=now)
    assert fallback.status == "ok" and fallback.path == "member-role" and fallback.traces == 3

    a, b = contents(fresh_config), contents(config_b)
    assert set(a) == set(b) == {dev, qa, prod}
    for account in (dev, qa, prod):
        assert set(a[account]["traces"]) == set(b[account]["traces"]) == set(written[account])
        assert a[account]["traces"] == b[account]["traces"]  # ids, segments, every field as sent
        requests_a, traces_a, segments_a = comparable(a[account]["documents"])
        requests_b, traces_b, segments_b = comparable(b[account]["documents"])
        assert requests_a == requests_b  # trace, segment and span documents with their ids
        assert traces_a.equals(traces_b) and segments_a.equals(segments_b)  # the Parquet tables
    chain = written[dev][-1]
    hex_id = chain.split("-")[1] + chain.split("-")[2]
    spans = {
        r.doc_id
        for d in a[dev]["documents"] + a[qa]["documents"]
        if d.trace_id == chain
        for r in d.index_requests()
        if r.kind == "spans"
    }
    # one trace per account with the same id; the span index holds the whole request once
    assert spans == {f"{dev}:{hex_id}a000000000000001", f"{qa}:{hex_id}b000000000000002"}


def test_a_monitoring_account_that_is_not_a_sink_is_a_clear_error_naming_the_missing_link(
    fresh_config: Config,
) -> None:
    monitor = new_account_id()
    roster = fresh_config.roster.model_copy(
        update={"monitoring": MonitoringAccount(account_id=monitor, regions=[REGION])}
    )
    with pytest.raises(
        monitoring.MonitoringError, match=f"monitoring account {monitor} is not an OAM sink in {REGION}.*oam:CreateLink"
    ):
        monitoring.route(roster, [(a, REGION) for a in roster.accounts], monitoring.monitoring_sessions(roster))


def test_segments_are_attributed_by_service_ids_and_split_per_account() -> None:
    trace = {
        "Id": "1-5f000000-000000000000000000000001",
        "Duration": 1.0,
        "LimitExceeded": False,
        "Segments": [
            {
                "Id": "a1",
                "Document": orjson.dumps(
                    {"name": "web", "origin": "AWS::EC2::Instance", "start_time": 1, "end_time": 2}
                ).decode(),
            },
            {"Id": "b1", "Document": orjson.dumps({"name": "api", "start_time": 1.5, "end_time": 1.75}).decode()},
            {
                "Id": "c1",
                "Document": orjson.dumps(
                    {"name": "x", "aws": {"account_id": "333333333333"}, "start_time": 1}
                ).decode(),
            },
            {"Id": "d1", "Document": orjson.dumps({"name": "nobody-knows"}).decode()},
        ],
    }
    summary = {
        "ServiceIds": [
            {"Name": "web", "Names": ["web"], "AccountId": "111111111111", "Type": "AWS::EC2::Instance"},
            {"Name": "api", "Names": ["api"], "AccountId": "222222222222", "Type": ""},
        ]
    }
    parts, orphans = monitoring.split_by_account(trace, summary, {"111111111111", "222222222222"})
    assert orphans == 1
    assert {k: [s["Id"] for s in v["Segments"]] for k, v in parts.items()} == {
        "111111111111": ["a1"],
        "222222222222": ["b1"],
        "333333333333": ["c1"],
    }
    assert parts["222222222222"]["Duration"] == 0.25 and parts["111111111111"]["Id"] == trace["Id"]
