"""Delivery faults: duplicate delivery, replay of old envelopes over newer data, and SQS answering
a SendMessageBatch with some entries `Failed`. Each ends with an exact comparison of every sink
(and reconcile); Parquet duplicates that at-least-once delivery may leave are removed by compaction."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from blocks.config import Config
from flows.commit import commit
from flows.compact import compact
from flows.replay import replay
from flows.sweep import sweep
from sandbox.faults import FaultProxy, sqs_send_batch_partially_failed
from sandbox.stack import SandboxStack
from tasks import envelope as env
from tasks import queue, tracetime, watermark
from tests.fault import helpers as h
from tests.flows.test_sweep import drain

pytestmark = pytest.mark.usefixtures("prefect_harness")


def sweep_ok(config_file: str) -> None:
    state = sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True)
    assert state.is_completed(), state.message


def compacted_without_duplicates(config: Config, config_file: str) -> None:
    committed = commit(config_path=config_file, return_state=True)
    assert committed.is_completed(), committed.message
    state = compact(config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    after = h.Sinks()
    h.observe_parquet(config, after)
    assert after.parquet_duplicates == 0, after.summary()


def test_duplicate_delivery_lands_once(fresh_config: Config, config_file: str) -> None:
    expected = h.plant(fresh_config, 4, tag="dup")
    sweep_ok(config_file)
    sweep_ok(config_file)  # the overlap sends the same envelopes again
    sqs = boto3.client("sqs")
    url = fresh_config.queue.queue_url
    originals = queue.receive(sqs, url, 10, wait_seconds=0, visibility_timeout=30)
    originals += queue.receive(sqs, url, 10, wait_seconds=0, visibility_timeout=30)
    assert originals
    for message in originals:  # and every message is delivered twice more
        for _ in range(2):
            sqs.send_message(
                QueueUrl=url,
                MessageBody=message.body,
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()},
            )
    queue.change_visibility(sqs, url, originals, 0)

    stats = h.drain(fresh_config, batch_messages=3)
    assert stats.received >= 3 * len(originals) and stats.documents_failed == 0, stats.as_dict()
    assert stats.documents_stale + stats.duplicates > 0  # copies were recognised, not written twice
    sinks = h.assert_exactly_once(fresh_config, expected)
    assert sinks.raw_objects == len({m.attributes["envelope_id"] for m in originals})
    h.reconcile_ok(config_file, expected)
    compacted_without_duplicates(fresh_config, config_file)


@pytest.mark.parametrize("target", ["queue", "direct"])
def test_replay_of_old_envelopes_never_overwrites_newer_data(
    target: str, fresh_config: Config, config_file: str
) -> None:
    account = fresh_config.roster.accounts[0].account_id
    running = set(h.put_traces(fresh_config, account, 3, tag="evolving", in_progress=True))
    expected = h.merge(h.plant(fresh_config, 3, tag="steady"), {account: running})
    sweep_ok(config_file)
    h.drain(fresh_config)
    early = h.Sinks()
    h.observe_index(fresh_config, early)
    assert all(early.index_in_progress[(account, t)] for t in running)

    h.complete_traces(fresh_config, account, running)
    sweep_ok(config_file)
    h.drain(fresh_config)

    start, _ = h.window_of(expected)
    sinks = ["raw", "parquet", "index"]
    state = replay(
        start=start, end=datetime.now(UTC), target=target, sinks=sinks, config_path=config_file, return_state=True
    )
    assert state.is_completed(), state.message
    replayed: dict[str, Any] = state.result()  # type: ignore[assignment]
    assert replayed["objects"] >= 4 and replayed["traces"] > len(running)
    if target == "queue":
        stats = h.drain(fresh_config)
        assert stats.documents_stale > 0 and stats.documents_failed == 0, stats.as_dict()
    else:
        assert replayed["documents_stale"] > 0 and replayed["failed_envelopes"] == 0

    h.assert_exactly_once(fresh_config, expected, completed=running)
    h.reconcile_ok(config_file, expected)
    compacted_without_duplicates(fresh_config, config_file)
    h.assert_exactly_once(fresh_config, expected, completed=running)  # compaction kept the newest rows


def test_partially_failed_send_batches_are_retried_exactly(fresh_config: Config, stack: SandboxStack) -> None:
    """SendMessageBatch entries answered `Failed` (and really not sent) are sent again, the
    accepted ones are not: each envelope is in the queue exactly once."""
    envelopes = [
        env.build_envelope(
            source="replay", account_id=fresh_config.roster.accounts[0].account_id, region=h.REGION, traces=[trace]
        )
        for trace in (h.trace_documents(h.trace_id_for("send", "a", i, 1.8e9), "a")[0] for i in range(7))
        for trace in [{"Id": trace["trace_id"], "Segments": [{"Id": trace["id"], "Document": h.dumps(trace)}]}]
    ]
    messages = [env.encode(e, "k", fresh_config.archive.bucket) for e in envelopes]
    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy:
        rule = proxy.add(sqs_send_batch_partially_failed(fail_last=3, times=2))
        sqs = boto3.client("sqs", endpoint_url=proxy.url)
        report = queue.send_messages(sqs, fresh_config.queue.queue_url, messages)
    assert rule.hits == 2
    assert report.sent == 7 and report.entry_retries == 6, report
    assert Counter(e.envelope_id for e in drain(fresh_config)) == Counter(e.envelope_id for e in envelopes)


@pytest.mark.slow
def test_partial_send_failure_holds_the_watermark_until_everything_is_sent(
    fresh_config: Config, config_file: str, stack: SandboxStack, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    expected = h.plant(fresh_config, 4, tag="partial-send")
    s3 = boto3.client("s3")
    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy, monkeypatch.context() as environment:
        environment.setenv("AWS_ENDPOINT_URL_SQS", proxy.url)
        faulty = fresh_config.model_copy(
            update={"service_endpoints": fresh_config.service_endpoints | {"sqs": proxy.url}}
        )
        path = h.write_config(faulty, tmp_path / "faulty-sqs.json")
        always = proxy.add(sqs_send_batch_partially_failed(fail_last=1, times=None))
        failed = sweep(config_path=path, **h.sweep_config_kwargs(), return_state=True)
        assert failed.is_failed() and always.hits >= 6
        for account in fresh_config.roster.accounts:  # never past data SQS did not take
            mark = watermark.read(s3, fresh_config.archive, account.account_id, h.REGION).high_water
            oldest_unsent = min(tracetime.id_epoch(t) or 0 for t in expected[account.account_id])
            assert mark is None or mark.timestamp() <= oldest_unsent, (mark, oldest_unsent)
        proxy.clear()
        transient = proxy.add(sqs_send_batch_partially_failed(fail_last=1, times=2))
        state = sweep(config_path=path, **h.sweep_config_kwargs(), return_state=True)
        assert state.is_completed(), state.message
        assert transient.hits == 2
    for account in fresh_config.roster.accounts:
        assert watermark.read(s3, fresh_config.archive, account.account_id, h.REGION).high_water is not None
    h.drain(fresh_config)
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)
