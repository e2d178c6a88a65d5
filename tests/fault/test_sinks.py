"""Sink failures during consume: OpenSearch down or rejecting bulk writes, S3 put errors, and a
consumer process killed (SIGKILL) between the archive and the delete. Each scenario ends with an
exact comparison of every sink (and reconcile): zero lost, zero duplicated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from blocks import OpenSearchTarget
from blocks.config import Config
from flows.consume import run_consumer
from flows.sweep import sweep
from sandbox.faults import (
    FaultProxy,
    FaultRule,
    hang,
    opensearch_bulk_items_rejected,
    opensearch_bulk_rejected,
    s3_error,
)
from sandbox.stack import SandboxStack
from tests.fault import helpers as h

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def opensearch_proxy(fresh_config: Config) -> Iterator[FaultProxy]:
    with FaultProxy(fresh_config.opensearch.hosts[0]) as proxy:
        yield proxy


def through(config: Config, proxy: FaultProxy) -> Config:
    return config.model_copy(
        update={"opensearch": OpenSearchTarget(hosts=[proxy.url], verify_certs=False, timeout_seconds=5)}
    )


def swept(config: Config, config_file: str, per_account: int, tag: str) -> dict[str, set[str]]:
    expected = h.plant(config, per_account, tag=tag)
    state = sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True)
    assert state.is_completed(), state.message
    return expected


def test_opensearch_down_mid_run_then_back(fresh_config: Config, config_file: str, opensearch_proxy) -> None:  # type: ignore[no-untyped-def]
    expected = swept(fresh_config, config_file, 6, "os-down")
    sent = h.queue_depth(fresh_config)["visible"]
    opensearch_proxy.add(FaultRule(path=r"/_bulk", method="POST", drop_connection=True))  # every bulk: no answer
    down = run_consumer(through(fresh_config, opensearch_proxy), wait_seconds=1, visibility_timeout=2, use_tasks=False)
    # a slow machine's bulk retries outlast the 2 s visibility: a message may be received twice
    assert down.deleted == 0 and down.left_for_retry == down.received >= sent > 0, down.as_dict()
    assert down.raw_objects == down.envelopes  # the archive took them; only the index failed
    depth = h.queue_depth(fresh_config)  # in flight, or visible again once the 2 s visibility ran out
    assert depth["in_flight"] + depth["visible"] == sent, depth  # nothing deleted, nothing lost

    opensearch_proxy.clear()
    h.wait_for(lambda: h.queue_depth(fresh_config)["visible"] == sent, 30, "the visibility timeout")
    back = run_consumer(through(fresh_config, opensearch_proxy), wait_seconds=1, use_tasks=False)
    assert back.deleted == sent and back.documents_failed == 0, back.as_dict()
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)


@pytest.mark.parametrize("rule", ["whole-request", "per-item"])
def test_bulk_429_is_retried_and_nothing_is_lost(
    rule: str, fresh_config: Config, config_file: str, opensearch_proxy
) -> None:  # type: ignore[no-untyped-def]
    expected = swept(fresh_config, config_file, 5, f"bulk-429-{rule}")
    fault = (
        opensearch_bulk_rejected(times=2)
        if rule == "whole-request"
        else opensearch_bulk_items_rejected(every=3, times=2)
    )
    opensearch_proxy.add(fault)
    stats = run_consumer(through(fresh_config, opensearch_proxy), wait_seconds=1, use_tasks=False)
    assert fault.hits == 2
    assert stats.documents_failed == 0 and stats.deleted == stats.received, stats.as_dict()
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)


@pytest.mark.parametrize("sink", ["raw", "parquet"])
def test_s3_put_failures_leave_the_message_for_retry(
    sink: str, fresh_config: Config, config_file: str, stack: SandboxStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = swept(fresh_config, config_file, 5, f"s3-{sink}")
    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy, monkeypatch.context() as env:
        # botocore retries a 500 twice (3 attempts): 3 failures = one put that really fails
        fault = proxy.add(s3_error(rf"/{fresh_config.archive.bucket}/{sink}/", times=3))
        env.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        stats = h.drain(fresh_config, visibility_timeout=2)
        assert fault.hits == 3
    # the envelope whose put failed was left for retry, not deleted, and came back
    assert stats.left_for_retry == 1 and any(f"/{sink}/" in e for e in stats.errors), stats.as_dict()
    assert stats.deleted == stats.received - 1
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)


@pytest.mark.slow
@pytest.mark.parametrize("blocked", ["bulk", "delete"])
def test_consumer_killed_between_archive_and_delete(
    blocked: str, fresh_config: Config, config_file: str, stack: SandboxStack, tmp_path: Path, opensearch_proxy
) -> None:  # type: ignore[no-untyped-def]
    """A real consumer process hangs on the index write (raw + Parquet done) or on the delete (all
    sinks done), is SIGKILLed there, and a fresh consumer finishes after the visibility timeout."""
    expected = swept(fresh_config, config_file, 5, f"kill-{blocked}")
    with FaultProxy(stack.config.aws_endpoint_url or "") as sqs_proxy:
        if blocked == "bulk":
            rule = opensearch_proxy.add(hang(r"/_bulk", "POST"))
            crashing = through(fresh_config, opensearch_proxy)
        else:
            rule = sqs_proxy.add(hang(".*", "POST", request_headers={"x-amz-target": r"DeleteMessageBatch$"}))
            crashing = fresh_config.model_copy(
                update={"service_endpoints": fresh_config.service_endpoints | {"sqs": sqs_proxy.url}}
            )
        path = h.write_config(crashing, tmp_path / "crashing.json")
        log = tmp_path / "consumer.log"
        process = h.start_consumer_process(path, log, wait_seconds=1, visibility_timeout=6)
        try:
            h.wait_for(lambda: rule.hits > 0 or process.poll() is not None, 90, f"the consumer to hang on {blocked}")
            assert process.poll() is None, log.read_text()
            code = h.kill(process)
        finally:
            if process.poll() is None:
                h.kill(process)
            rule.release()
        assert code == -9
    s3 = boto3.client("s3")
    raw = list(h.archive.list_keys(s3, fresh_config.archive.bucket, "raw/"))
    assert raw, "the killed consumer had archived nothing"
    depth = h.queue_depth(fresh_config)
    assert depth["in_flight"] + depth["visible"] > 0, "the killed consumer deleted messages"
    partial = h.Sinks()
    h.observe_index(fresh_config, partial)
    if blocked == "bulk":
        assert not partial.index, "documents indexed although the bulk call never reached the cluster"

    h.wait_for(lambda: h.queue_depth(fresh_config)["visible"] > 0, 30, "the visibility timeout")
    stats = run_consumer(fresh_config, wait_seconds=2, use_tasks=False)
    assert stats.deleted > 0 and not stats.errors, stats.as_dict()
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)
