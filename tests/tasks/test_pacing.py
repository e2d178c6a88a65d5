"""tasks/pacing.py: the token bucket, its debt mode (replay), the registry and the backoff function,
on an injected clock (no real waiting)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks import pacing, xray
from tasks.pacing import Backoff, LimiterRegistry, TokenBucket, full_jitter, rate_limiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@given(attempt=st.integers(min_value=-3, max_value=80), seed=st.integers())
def test_full_jitter_stays_between_zero_and_the_capped_exponential(attempt: int, seed: int) -> None:
    delay = full_jitter(attempt, 0.2, 5.0, random.Random(seed))
    assert 0.0 <= delay <= min(5.0, 0.2 * 2 ** max(0, attempt))


def test_backoff_delay_is_the_full_jitter_function() -> None:
    backoff = Backoff(base=0.5, cap=4.0, max_attempts=3)
    for attempt in range(6):
        assert backoff.delay(attempt, random.Random(attempt)) == full_jitter(attempt, 0.5, 4.0, random.Random(attempt))
    assert [backoff.ceiling(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert full_jitter(3, 0.0, 10.0) == 0.0
    with pytest.raises(ValueError, match="base and cap"):
        Backoff(base=-1)


def test_rate_limiter_spaces_single_items_at_the_rate() -> None:
    clock = FakeClock()
    limiter = rate_limiter(4.0, clock=clock, sleep=clock.sleep)
    assert limiter is not None and limiter.burst == 1
    waits = [limiter.acquire(1, debt=True) for _ in range(4)]
    assert waits == [0.0, pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25)]
    assert rate_limiter(None) is None


def test_a_batch_larger_than_the_burst_goes_at_once_and_the_next_caller_pays_for_it() -> None:
    """Replay paces SQS batches of up to 10 at e.g. 2 messages/s: a batch of 4 leaves, the next
    one waits 4 / 2 = 2 s (what replay's own RateLimiter did before it moved here)."""
    clock = FakeClock()
    limiter = rate_limiter(2.0, clock=clock, sleep=clock.sleep)
    assert limiter is not None
    assert limiter.acquire(4, debt=True) == 0.0
    assert limiter.tokens == pytest.approx(-3.0)
    assert limiter.acquire(1, debt=True) == pytest.approx(2.0)
    clock.now += 100
    assert limiter.tokens == pytest.approx(1.0)  # debt repaid, capped at the burst again


def test_without_debt_a_request_larger_than_the_burst_is_refused() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    with pytest.raises(ValueError, match="cannot take"):
        bucket.acquire(3)


def test_drain_keeps_a_debt_and_empties_a_credit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=5, clock=clock, sleep=clock.sleep)
    bucket.drain()
    assert bucket.tokens == 0.0
    clock.now += 10
    bucket.acquire(8, debt=True)
    bucket.drain()
    assert bucket.tokens == pytest.approx(-3.0)


def test_timeout_is_checked_before_sleeping() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    with pytest.raises(TimeoutError):
        bucket.acquire(timeout=0.5)
    assert clock.slept == []


def test_x_ray_paces_with_the_same_classes() -> None:
    assert xray.TokenBucket is TokenBucket and xray.Backoff is Backoff and xray.LimiterRegistry is LimiterRegistry
    assert xray.DEFAULT_LIMITERS is pacing.DEFAULT_LIMITERS and xray.DEFAULT_BACKOFF is pacing.DEFAULT_BACKOFF
    assert pacing.limiter_for("011111111111", "us-east-1") is pacing.DEFAULT_LIMITERS.get("011111111111", "us-east-1")
