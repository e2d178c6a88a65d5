"""tasks/retrying.py: what is retried (by error type), how often, how long it waits and what it logs;
plus the botocore setting of every client. Pure: injected sleep, no server."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.states import Completed, Failed

from tasks import aws, retrying
from tasks.errors import AccountAccessError, TerminalError, TransientError, is_transient, is_transient_error
from tasks.limits import _prefect_api_transient
from tasks.pacing import Backoff
from tasks.retrying import RetryPolicy, boto_config, reread


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def policy(slept: list[float]) -> RetryPolicy:
    return RetryPolicy(Backoff(base=0.2, cap=1.0, max_attempts=4)).with_sleep(slept.append)


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        client_error("ThrottlingException"),
        client_error("RequestThrottled"),  # SQS
        client_error("Whatever", 503),
        client_error("TooMany", 429),
        EndpointConnectionError(endpoint_url="http://nowhere"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_transient_errors_are_retried_until_the_call_succeeds(
    error: BaseException, policy: RetryPolicy, slept: list[float]
) -> None:
    flaky = Flaky(error, error)
    assert policy.run("op", flaky) == "ok"
    assert flaky.calls == 3
    assert len(slept) == 2 and 0 <= slept[0] <= 0.2 and 0 <= slept[1] <= 0.4  # full jitter, growing ceiling


@pytest.mark.parametrize(
    "error",
    [
        TerminalError("bad input"),
        AccountAccessError("denied"),
        client_error("AccessDenied", 403),
        client_error("QueueDoesNotExist"),
        ValueError("a bug"),
        KeyError("k"),
    ],
)
def test_other_errors_are_raised_at_once_unchanged(
    error: BaseException, policy: RetryPolicy, slept: list[float]
) -> None:
    flaky = Flaky(error)
    with pytest.raises(type(error)) as raised:
        policy.run("op", flaky)
    assert raised.value is error and flaky.calls == 1 and slept == []


def test_attempts_are_bounded_and_the_last_error_is_raised_as_it_was(policy: RetryPolicy, slept: list[float]) -> None:
    errors = [client_error("SlowDown", 503) for _ in range(10)]
    flaky = Flaky(*errors)
    with pytest.raises(ClientError) as raised:
        policy.run("op", flaky)
    assert flaky.calls == policy.attempts == 4
    assert raised.value is errors[3]
    assert len(slept) == 3 and all(0 <= s <= 1.0 for s in slept)


def test_each_retry_is_logged_in_one_line(policy: RetryPolicy, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tasks.retrying"):
        policy.run("SendMessageBatch", Flaky(TransientError("queue\nbusy"), TransientError("again")))
    lines = [r for r in caplog.records if r.name == "tasks.retrying"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING]
    first = lines[0].getMessage()
    assert first.startswith("SendMessageBatch: attempt 1/4 failed (TransientError: queue busy); retrying in ")
    assert "\n" not in first


def test_call_passes_arguments_and_names_the_function(policy: RetryPolicy, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[Any, ...]] = []

    def put(key: str, *, body: bytes) -> int:
        seen.append((key, body))
        if len(seen) == 1:
            raise TransientError("once")
        return len(body)

    with caplog.at_level(logging.WARNING, logger="tasks.retrying"):
        assert policy.call(put, "k", body=b"abc") == 3
    assert seen == [("k", b"abc"), ("k", b"abc")]
    assert "put: attempt 1/4" in caplog.text


def test_reread_retries_only_the_named_errors_and_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    policy = reread(FileNotFoundError, attempts=3).with_sleep(slept.append)
    with caplog.at_level(logging.INFO, logger="tasks.retrying"):
        assert policy.run("scan", Flaky(FileNotFoundError("gone"))) == "ok"
    assert [r.levelno for r in caplog.records if r.name == "tasks.retrying"] == [logging.INFO]
    with pytest.raises(TransientError):  # transient, but not what a re-read fixes
        policy.run("scan", Flaky(TransientError("x")))
    gone = Flaky(*(FileNotFoundError(str(n)) for n in range(5)))
    with pytest.raises(FileNotFoundError, match="2"):
        policy.run("scan", gone)
    assert gone.calls == 3 and all(s <= 0.5 for s in slept)


def test_is_transient_error_and_the_prefect_retry_condition_agree() -> None:
    for error, expected in [
        (TransientError("x"), True),
        (client_error("ThrottledException", 429), True),
        (TerminalError("x"), False),
        (client_error("AccessDeniedException", 403), False),
        (RuntimeError("x"), False),
    ]:
        assert is_transient_error(error) is expected
        assert is_transient(None, None, Failed(data=error)) is expected
    assert is_transient(None, None, Completed(data=1)) is False


def test_a_lost_iceberg_commit_race_is_retried_only_where_the_table_is_opened_again() -> None:
    from pyiceberg.exceptions import CommitFailedException

    from tasks.errors import is_transient_or_commit_conflict

    conflict = Failed(data=CommitFailedException("Requirement failed: branch main has changed"))
    assert is_transient_or_commit_conflict(None, None, conflict) is True
    assert is_transient(None, None, conflict) is False
    for error, expected in [
        (TransientError("x"), True),
        (FileNotFoundError("gone"), False),
        (TerminalError("x"), False),
    ]:
        assert is_transient_or_commit_conflict(None, None, Failed(data=error)) is expected
    assert is_transient_or_commit_conflict(None, None, Completed(data=1)) is False


def test_the_x_ray_slot_retries_only_an_unavailable_prefect_api() -> None:
    def wrapped(status: int) -> ConcurrencySlotAcquisitionError:
        request = httpx.Request("POST", "http://prefect/api/v2/concurrency_limits/increment-with-lease")
        cause = httpx.HTTPStatusError("x", request=request, response=httpx.Response(status, request=request))
        try:
            raise ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots") from cause
        except ConcurrencySlotAcquisitionError as error:
            return error

    assert _prefect_api_transient(wrapped(503)) and _prefect_api_transient(wrapped(429))
    assert not _prefect_api_transient(wrapped(422))
    assert _prefect_api_transient(httpx.ConnectError("refused"))
    assert not _prefect_api_transient(TimeoutError("slot stayed busy"))


@pytest.mark.parametrize(
    ("service", "calls"), [("sqs", 1), ("xray", 1), ("s3", 3), ("sts", 3), ("stepfunctions", 3), ("logs", 1)]
)
def test_every_client_gets_its_documented_botocore_attempts(service: str, calls: int) -> None:
    config = boto_config(service)
    assert config.retries == {"mode": "standard", "total_max_attempts": calls}
    assert boto_config(service) is config  # one object per setting: MemberSessions caches clients by it
    assert f"| {service}" in (retrying.__doc__ or "") or service in {"logs"}
    client = aws.log_client(service, "us-east-1")
    assert client.meta.config.retries["total_max_attempts"] == calls


def test_policies_of_the_table() -> None:
    assert (retrying.SQS_SEND.attempts, retrying.SQS_CALL.attempts, retrying.PREFECT_API.attempts) == (6, 3, 3)
    assert aws.DEFAULT_BOTO_CONFIG is boto_config("anything-else")


def test_throttled_call_retries_only_throttles_and_drains_the_account_bucket() -> None:
    """The loop the X-Ray and Logs readers share: a throttle code or a bare HTTP 429 is retried
    (bucket drained, backoff waited, counted); any other error propagates unchanged at once; a
    throttle that never stops ends as TransientError after `max_attempts` calls."""
    from dataclasses import dataclass

    from tasks.errors import TransientError
    from tasks.pacing import Backoff, CallCounters, TokenBucket
    from tasks.retrying import throttled_call

    @dataclass
    class Counters(CallCounters):
        calls: float = 0
        throttles: float = 0
        retries: float = 0
        wait_seconds: float = 0

    answers: list[Exception | dict[str, str]] = [client_error("Throttling"), client_error("Slow", 429), {"ok": "yes"}]

    def method(**params: str) -> dict[str, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {**answer, **params}

    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    # 1 call/s with 5 stored: undrained, three calls would not wait at all
    bucket = TokenBucket(rate=1, burst=5, clock=lambda: now[0], sleep=sleep)
    counters = Counters()
    options = {"throttle_codes": frozenset({"Throttling"}), "limiter": bucket, "counters": counters, "sleep": sleep}
    backoff = Backoff(base=0, cap=0, max_attempts=3)  # no backoff wait: every second slept is the bucket's
    assert throttled_call(method, {"p": "1"}, backoff=backoff, context="op", **options) == {"ok": "yes", "p": "1"}  # type: ignore[arg-type]
    assert (counters.calls, counters.throttles, counters.retries) == (3, 2, 2)
    assert sum(slept) == pytest.approx(2.0) and counters.wait_seconds == pytest.approx(2.0)

    answers[:] = [client_error("AccessDenied", 403)]
    with pytest.raises(ClientError) as raised:
        throttled_call(method, {}, backoff=backoff, context="op", **options)  # type: ignore[arg-type]
    assert raised.value.response["Error"]["Code"] == "AccessDenied" and counters.calls == 4

    answers[:] = [client_error("Throttling")] * 3
    with pytest.raises(TransientError, match="op: still throttled after 3 attempts"):
        throttled_call(method, {}, backoff=backoff, context="op", **options)  # type: ignore[arg-type]
    assert counters.calls == 7 and counters.throttles == 5
