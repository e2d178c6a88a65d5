"""How many HTTP calls one operation that keeps failing makes, counted at a fault proxy in front of
the real moto server: the bounds tasks/retrying.py documents (botocore calls × our attempts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blocks.config import Config
from sandbox.faults import FaultProxy, FaultRule, s3_error
from sandbox.stack import SandboxStack
from tasks import archive, queue
from tasks import envelope as env
from tasks.aws import log_client
from tasks.errors import TransientError
from tasks.retrying import BOTOCORE_ATTEMPTS, DEFAULT_BOTOCORE_ATTEMPTS, SQS_CALL, SQS_SEND

SQS_INTERNAL_ERROR = b'{"__type": "com.amazonaws.sqs#InternalError", "message": "injected by the fault proxy"}'


def sqs_fails(operation: str) -> FaultRule:
    """Every `operation` call (SQS JSON protocol) answers 500 InternalError, never reaching SQS."""
    return FaultRule(
        method="POST",
        request_headers={"x-amz-target": rf"AmazonSQS\.{operation}$"},
        status=500,
        response=SQS_INTERNAL_ERROR,
        content_type="application/x-amz-json-1.0",
    )


def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def proxy(stack: SandboxStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The moto server behind a fault proxy, for the SQS and S3 clients `log_client` builds."""
    with FaultProxy(stack.config.aws_endpoint_url or "") as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", running.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", running.url)
        yield running


def an_envelope(config: Config) -> env.Envelope:
    trace = {"Id": "1-6b8d0000-000000000000000000000001", "Segments": []}
    return env.build_envelope(
        source="replay", account_id=config.roster.accounts[0].account_id, region="us-east-1", traces=[trace]
    )


def test_one_failing_sqs_send_makes_six_calls_not_eighteen(fresh_config: Config, proxy: FaultProxy) -> None:
    """SendMessageBatch answering 500 every time: botocore does not retry SQS (1 call per
    attempt), SQS_SEND makes 6 attempts: 6 calls, where botocore's 3 × our 6 made 18 before."""
    rule = proxy.add(sqs_fails("SendMessageBatch"))
    message = env.encode(an_envelope(fresh_config), "k", fresh_config.archive.bucket)
    sqs = log_client("sqs", fresh_config.queue.region)
    with pytest.raises(TransientError, match="InternalError"):
        queue.send_messages(sqs, fresh_config.queue.queue_url, [message], policy=SQS_SEND.with_sleep(no_sleep))
    assert rule.hits == BOTOCORE_ATTEMPTS["sqs"] * SQS_SEND.attempts == 6


def test_one_failing_sqs_receive_makes_three_calls(fresh_config: Config, proxy: FaultProxy) -> None:
    rule = proxy.add(sqs_fails("ReceiveMessage"))
    sqs = log_client("sqs", fresh_config.queue.region)
    with pytest.raises(TransientError, match="ReceiveMessage"):
        queue.receive(sqs, fresh_config.queue.queue_url, wait_seconds=0)
    assert rule.hits == BOTOCORE_ATTEMPTS["sqs"] * SQS_CALL.attempts == 3


def test_one_failing_s3_put_makes_three_calls(fresh_config: Config, proxy: FaultProxy) -> None:
    """S3 retries are botocore's (3 calls) and ours are off: a put that keeps failing is 3 calls."""
    rule = proxy.add(s3_error(rf"/{fresh_config.archive.bucket}/raw/", times=None))
    s3 = log_client("s3", fresh_config.archive.region)
    with pytest.raises(TransientError, match="InternalError"):
        archive.put_raw(s3, fresh_config.archive, an_envelope(fresh_config), b"{}")
    assert rule.hits == DEFAULT_BOTOCORE_ATTEMPTS == 3
