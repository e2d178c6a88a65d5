"""Retries decided by error type, in one place: the retry policy and every client's botocore setting.

`RetryPolicy` (tenacity) retries only what `tasks.errors.is_transient_error` calls transient
(`TransientError`, and raw botocore/network errors that `classify_aws_error` translates to it),
waits `tasks.pacing.full_jitter` between attempts, stops after a bounded number of attempts,
logs each retry in one line (WARNING; INFO for consistency re-reads) and then re-raises the last
error unchanged, so callers see the same error types as without it. A site may narrow what is
retried (`retry_if`) to the errors its retry can actually fix. Where a Prefect task is the unit,
Prefect `retries` + `retry_condition_fn=tasks.errors.is_transient` decides by the same rule.

Two layers could retry one AWS call: botocore inside the client call, and us around it. Every
client gets one deliberate botocore setting here (`boto_config(service)`, used by
`tasks.aws.log_client`, `MemberSessions.client` and its STS client), so attempts never multiply
unless this table says so:

| client (built by)                          | botocore calls | our attempts                   | HTTP calls at most* |
|--------------------------------------------|---------------:|--------------------------------|---------------------|
| sqs  log_client: queue, DLQ, replay        | 1              | SendMessageBatch 6, else 3     | 6 per batch; else 3 |
| s3   log_client: archive, watermark, lake  | 3              | 1                              | 3                   |
| sts  MemberSessions: AssumeRole            | 3              | 1                              | 3                   |
| xray MemberSessions via xray.xray_client   | 1              | 8, throttles (throttled_call)  | 8                   |
| logs MemberSessions (spans reader)         | 1              | 8, throttles (throttled_call)  | 8                   |
| organizations assumed_client: roster       | 1              | 8, transient (Pacer.call)      | 8                   |
| stepfunctions MemberSessions: Describe…    | 3              | 1                              | 3                   |
| any other service                          | 3              | 1                              | 3                   |

*for one operation that keeps failing (tests/fault/test_retry_bounds.py counts them).

SQS is ours rather than botocore's because SendMessageBatch fails per entry inside a 200 answer
(botocore cannot see that) and both kinds of failure should share one bound. X-Ray is ours
because throttles must reach the (account, region) token bucket to be counted and paced; so are
CloudWatch Logs reads of `aws/spans` (`tasks.spans_reader`), and Organizations discovery
(`tasks.organizations.Pacer`: one bucket per discovery, its throttles counted in the roster report).
botocore standard mode retries throttling codes, 5xx, 429 and connection errors; so does
`is_transient_error`.

On top of these, and not transport retries: re-reads when the lake changes under a reader
(lake queries when orphan removal deleted a planned snapshot's file, reconcile's Parquet scan
when the committer moved a pending file into the table between listing and scan: 3 listings
each, every listing call itself ≤ 3 HTTP calls); the `commit-table` and `compact-plan` Prefect
tasks (2 retries of the whole plan, transient errors only); the Prefect API
slot of `tasks.limits.xray_slot` (3 attempts, then the account works without the slot);
opensearch-py's own retries for OpenSearch (`tasks.index`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ParamSpec, TypeVar

import tenacity
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from tasks.errors import TransientError, aws_error_code, is_transient_error
from tasks.pacing import Backoff, CallCounters, Sleep, TokenBucket

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- botocore, per client

BOTOCORE_ATTEMPTS: dict[str, int] = {"sqs": 1, "xray": 1, "logs": 1, "organizations": 1}
DEFAULT_BOTOCORE_ATTEMPTS = 3


def _config(total_max_attempts: int) -> BotoConfig:
    # botocore's `max_attempts` counts retries, not calls; `total_max_attempts` counts calls.
    return BotoConfig(
        retries={"mode": "standard", "total_max_attempts": total_max_attempts},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,
    )


_CONFIGS: dict[int, BotoConfig] = {}


def boto_config(service: str) -> BotoConfig:
    """The botocore Config of every client of `service` (one object per setting: clients cache by it)."""
    attempts = BOTOCORE_ATTEMPTS.get(service, DEFAULT_BOTOCORE_ATTEMPTS)
    config = _CONFIGS.get(attempts)
    if config is None:
        config = _CONFIGS.setdefault(attempts, _config(attempts))
    return config


# ---------------------------------------------------------------- our retries


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:limit]}"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of transient errors with full-jitter backoff (`backoff.max_attempts` calls).

    `call(fn, *args, what=…)` runs `fn` until it returns, raises an error `retry_if` rejects, or
    has used every attempt; the last error is re-raised as it was.
    """

    backoff: Backoff
    retry_if: Callable[[BaseException], bool] = is_transient_error
    level: int = logging.WARNING
    sleep: Sleep | None = field(default=None, compare=False)  # None: time.sleep, looked up per call

    @property
    def attempts(self) -> int:
        return self.backoff.max_attempts

    def with_sleep(self, sleep: Sleep) -> RetryPolicy:
        """The same policy waiting with `sleep` (tests: no real waiting)."""
        return replace(self, sleep=sleep)

    def _log(self, what: str) -> Callable[[tenacity.RetryCallState], None]:
        def log(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            logger.log(
                self.level,
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                what,
                state.attempt_number,
                self.attempts,
                _one_line(error) if error else "?",
                delay,
            )

        return log

    def retrying(self, what: str) -> tenacity.Retrying:
        """A tenacity `Retrying` for this policy (`for attempt in policy.retrying(…): with attempt: …`)."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=lambda state: self.backoff.delay(state.attempt_number - 1),
            retry=tenacity.retry_if_exception(self.retry_if),
            before_sleep=self._log(what),
            sleep=self.sleep or time.sleep,
            reraise=True,
        )

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` under this policy; the log names the call after `fn`."""
        return self.retrying(getattr(fn, "__qualname__", repr(fn)))(fn, *args, **kwargs)

    def run(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()` under this policy; `what` names it in the log line of each retry."""
        return self.retrying(what)(fn)


# The policies of the table above (attempts = calls, not retries).
SQS_SEND = RetryPolicy(Backoff(base=0.2, cap=5.0, max_attempts=6))
SQS_CALL = RetryPolicy(Backoff(base=0.2, cap=5.0, max_attempts=3))
PREFECT_API = RetryPolicy(Backoff(base=1.0, cap=4.0, max_attempts=3))


def reread(*errors: type[BaseException], attempts: int = 3) -> RetryPolicy:
    """Re-reads of data that changed under the reader: only `errors` retried, short waits, INFO."""

    def changed(error: BaseException) -> bool:
        return isinstance(error, errors)

    return RetryPolicy(Backoff(base=0.05, cap=0.5, max_attempts=attempts), retry_if=changed, level=logging.INFO)


__all__ = [
    "BOTOCORE_ATTEMPTS",
    "PREFECT_API",
    "SQS_CALL",
    "SQS_SEND",
    "RetryPolicy",
    "boto_config",
    "reread",
]


def throttled_call(
    method: Callable[..., dict[str, Any]],
    params: dict[str, Any],
    *,
    throttle_codes: frozenset[str],
    limiter: TokenBucket,
    backoff: Backoff,
    counters: CallCounters,
    context: str,
    sleep: Sleep = time.sleep,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """One AWS call paced by the account's `limiter`, retried only when throttled (an error code of
    `throttle_codes`, or HTTP 429): a throttle drains the bucket (the account's rate is spent, so
    the other threads of that account slow down too) and waits `backoff`; after
    `backoff.max_attempts` calls it raises TransientError. Any other error propagates unchanged for
    the caller to translate. `counters` gets calls, throttles, retries and wait_seconds. The X-Ray
    reader (`tasks.xray`) and the Transaction Search reader (`tasks.spans_reader`) both call AWS
    through it (the table above)."""
    for attempt in range(backoff.max_attempts):
        counters.add(wait_seconds=limiter.acquire(), calls=1)
        try:
            return method(**params)
        except ClientError as error:
            code = aws_error_code(error)
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code not in throttle_codes and status != 429:
                raise
            counters.add(throttles=1)
            limiter.drain()
            if attempt + 1 >= backoff.max_attempts:
                raise TransientError(
                    f"{context}: still throttled after {backoff.max_attempts} attempts ({code})"
                ) from error
            delay = backoff.delay(attempt, rng)
            counters.add(retries=1, wait_seconds=delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
