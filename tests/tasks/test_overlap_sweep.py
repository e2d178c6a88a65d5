"""Sweeps across an hour boundary with late revisions, against moto behind the strict front: each
sweep sends one envelope per start hour (not per window), skips what it already sent, delivers
every new revision, and a failed watermark write after the send re-sends rather than loses."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import orjson
import pytest

from blocks.config import Config
from sandbox.faults import FaultProxy, FaultRule
from sandbox.stack import SandboxStack
from tasks import collector as col
from tasks import envelope as env
from tasks import watermark
from tasks.aws import MemberSessions
from tests.tasks.test_spans_reader import REGION, drain

OPTIONS = {"lag": timedelta(seconds=60), "overlap": timedelta(minutes=5), "first_lookback": timedelta(minutes=10)}


def put_segment(config: Config, account_id: str, trace_id: str, name: str, start: float, end: float) -> None:
    document = {"name": name, "id": f"{abs(hash((trace_id, name))):016x}"[:16], "trace_id": trace_id}
    document |= {"start_time": start, "end_time": end}
    xray = MemberSessions(config.roster).client(account_id, REGION, "xray")
    assert (
        xray.put_trace_segments(TraceSegmentDocuments=[orjson.dumps(document).decode()])["UnprocessedTraceSegments"]
        == []
    )


def sweep(collector: col.Collector, config: Config, at: float) -> col.AccountResult:
    account = config.roster.accounts[0]
    return col.sweep_account(collector, account, REGION, now=datetime.fromtimestamp(at, UTC), **OPTIONS)  # type: ignore[arg-type]


def segments_by_trace(envelopes: list[env.Envelope]) -> Counter[str]:
    return Counter({t["Id"]: len(t["Segments"]) for e in envelopes for t in e.traces})


@pytest.mark.slow  # six sweeps: ~30 s on a loaded 2-core machine
def test_sweeps_across_an_hour_send_one_envelope_per_hour_and_every_revision(
    fresh_config: Config, stack: SandboxStack
) -> None:
    account_id = fresh_config.roster.accounts[0].account_id
    hour = (int(time.time()) // 3600 - 2) * 3600  # an hour boundary two hours back
    ids = {name: f"1-{hour + offset:08x}-{account_id}{n:012d}" for n, (name, offset) in enumerate(
        {"a": -200, "b": -100, "c": 60, "d": 250, "e": 330}.items()
    )}  # fmt: skip
    put_segment(fresh_config, account_id, ids["a"], "root", hour - 200, hour - 199)
    put_segment(fresh_config, account_id, ids["b"], "root", hour - 100, hour - 99)
    put_segment(fresh_config, account_id, ids["b"], "late", hour - 90, hour + 30)  # listed after the hour
    put_segment(fresh_config, account_id, ids["c"], "root", hour + 60, hour + 61)
    collector = col.Collector.from_config(fresh_config)

    # [hour - 7 min, hour + 3 min): two windows; b (started before the hour) is listed in the second
    first = sweep(collector, fresh_config, hour + 240)
    assert first.status == "ok", first.error
    assert (first.windows, first.traces, first.envelopes) == (2, 3, 2)  # per window and hour it was 3
    envelopes = drain(fresh_config)
    assert sorted(len(e.traces) for e in envelopes) == [1, 2]  # hour - 1: a and b; hour: c
    covered = env.TimeWindow(start=datetime.fromtimestamp(hour - 420, UTC), end=datetime.fromtimestamp(hour + 180, UTC))
    assert {e.window for e in envelopes} == {covered}  # the listing range the traces came from
    assert segments_by_trace(envelopes) == {ids["a"]: 1, ids["b"]: 2, ids["c"]: 1}

    # a gains a late segment (a new revision), d is new; b and c are listed again unchanged
    put_segment(fresh_config, account_id, ids["a"], "late", hour - 150, hour + 200)
    put_segment(fresh_config, account_id, ids["d"], "root", hour + 250, hour + 251)
    second = sweep(collector, fresh_config, hour + 360)
    assert second.status == "ok", second.error
    assert (second.unchanged, second.traces, second.envelopes) == (2, 2, 2)
    envelopes = drain(fresh_config)
    assert segments_by_trace(envelopes) == {ids["a"]: 2, ids["d"]: 1}
    # [hour - 2 min, hour) listed nothing: the watermark passed it at once, the envelopes cover the rest
    assert {e.window.start for e in envelopes} == {datetime.fromtimestamp(hour, UTC)}

    # SQS takes e, then the watermark write fails: the watermark and the ledger stay, so the next
    # sweep sends e again (at least once), and nothing already sent comes back
    put_segment(fresh_config, account_id, ids["e"], "root", hour + 330, hour + 331)
    s3 = boto3.client("s3")
    before = watermark.read(s3, fresh_config.archive, account_id, REGION)
    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy:
        denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"  # not retried
        xml = "application/xml"
        proxy.add(FaultRule(path="watermarks", method="PUT", status=403, response=denied, content_type=xml))
        broken = dataclasses.replace(collector, s3=boto3.client("s3", endpoint_url=proxy.url))
        crashed = sweep(broken, fresh_config, hour + 480)
    assert crashed.status == "failed" and crashed.traces == 1
    assert watermark.read(s3, fresh_config.archive, account_id, REGION).high_water == before.high_water
    assert segments_by_trace(drain(fresh_config)) == {ids["e"]: 1}
    again = sweep(collector, fresh_config, hour + 480)
    assert again.status == "ok", again.error
    assert segments_by_trace(drain(fresh_config)) == {ids["e"]: 1}  # re-sent, never lost
    assert again.unchanged == 4  # a, b, c and d (their ledger entries were written before)
    last = sweep(collector, fresh_config, hour + 600)
    assert (last.status, last.traces, last.envelopes) == ("ok", 0, 0)
    assert drain(fresh_config) == []


def test_an_idle_account_keeps_its_watermark_object_and_the_next_busy_sweep_misses_nothing(
    stack: SandboxStack, fresh_config: Config
) -> None:
    collector = col.Collector.from_config(fresh_config)
    account = fresh_config.roster.accounts[0]
    s3 = boto3.client("s3")
    key = watermark.watermark_key(fresh_config.archive, account.account_id, REGION)
    base = time.time() - 3600

    def etag() -> str:
        return str(s3.head_object(Bucket=fresh_config.archive.bucket, Key=key)["ETag"])

    assert sweep(collector, fresh_config, base).status == "ok"  # first sweep: written
    first = etag()
    idle = sweep(collector, fresh_config, base + 300)  # nothing new, 5 minutes later
    assert idle.traces == 0 and etag() == first  # no S3 write
    assert (
        idle.watermark_after
        == watermark.read(s3, fresh_config.archive, account.account_id, REGION).high_water.isoformat()
    )  # type: ignore[union-attr]
    # a trace of those idle minutes arrives late: the next sweep lists them again and sends it
    trace_id = f"1-{int(base + 200):08x}-{account.account_id}abcdef123456"
    put_segment(fresh_config, account.account_id, trace_id, "late", base + 200, base + 201)
    busy = sweep(collector, fresh_config, base + 600)
    assert busy.traces == 1 and etag() != first
    assert [t["Id"] for e in drain(fresh_config) for t in e.traces] == [trace_id]
    assert sweep(collector, fresh_config, base + 600 + 60 * 16).traces == 0 and etag() != first  # 16 idle min: written
