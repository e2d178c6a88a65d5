"""tasks/pacing.py: the token bucket, its debt mode (replay), the registry and the backoff function,
on an injected clock (no real waiting)."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks import pacing, xray
from tasks.pacing import Backoff, LimiterRegistry, TokenBucket, full_jitter, rate_limiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
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


# ------------------------------------------------------------ (moved here from test_xray.py)


def test_token_bucket_burst_then_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire() == pytest.approx(0.5)
    assert bucket.acquire() == pytest.approx(0.5)
    assert not bucket.try_acquire()
    clock.now += 10
    assert bucket.tokens == pytest.approx(3.0)  # capped at burst
    bucket.drain()
    assert not bucket.try_acquire()
    with pytest.raises(TimeoutError):
        bucket.acquire(timeout=0.1)
    with pytest.raises(ValueError, match="cannot take"):
        bucket.acquire(tokens=5)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1, burst=0.5)


def test_token_bucket_is_thread_safe_and_paces_real_time() -> None:
    bucket = TokenBucket(rate=100.0, burst=1)
    taken: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            bucket.acquire()
            with lock:
                taken.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 40
    assert time.monotonic() - started >= 0.36  # 39 tokens after the first at 100/s


def test_limiter_registry_one_bucket_per_account_and_region() -> None:
    registry = LimiterRegistry(rate=5, burst=2)
    assert registry.get("011111111111", "us-east-1") is registry.get("011111111111", "us-east-1")
    assert registry.get("011111111111", "us-east-1") is not registry.get("011111111111", "eu-west-1")
    assert registry.get("011111111111", "us-east-1") is not registry.get("022222222222", "us-east-1")
    registry.configure(rate=50, burst=7)
    assert registry.get("011111111111", "us-east-1").rate == 50
    assert registry.get("011111111111", "us-east-1").burst == 7


@given(attempt=st.integers(min_value=0, max_value=60), seed=st.integers())
def test_backoff_full_jitter_bounds(attempt: int, seed: int) -> None:
    backoff = Backoff(base=0.1, cap=3.0, max_attempts=5)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(3.0, 0.1 * 2**attempt)
    assert backoff.ceiling(attempt) <= 3.0


def test_backoff_validates() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)
