"""Pacing, pure (no I/O): a token bucket, one bucket per (account, region), and the backoff function.

* `TokenBucket`      `rate` tokens per second, at most `burst` stored; thread-safe; clock and sleep
                     injectable. `acquire(n, debt=True)` lets a batch larger than the burst go at once
                     and makes the next caller wait for it (replay's messages-per-second limit).
* `LimiterRegistry`  one bucket per (account, region): X-Ray throttles per account and region.
* `full_jitter`      THE backoff function: delay(n) = uniform(0, min(cap, base·2ⁿ)) ("Exponential
                     Backoff and Jitter", AWS Architecture Blog). `Backoff` holds its parameters and
                     an attempt bound; `tasks.retrying` waits with it, and so does its loop
                     that counts and drains throttles (`throttled_call`, X-Ray and Logs).
* `CallCounters`     the counter mechanics of what paced calls cost (thread-safe `add`, `merge`,
                     `as_dict`, copy and pickle without the lock): `tasks.xray.XRayStats` and
                     `tasks.spans_reader.SpanStats` are dataclasses of counters on top of it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Self

Sleep = Callable[[float], None]
Clock = Callable[[], float]


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` + 1 (attempt 0 = after the first failure)."""
    return (rng or random).uniform(0.0, min(cap, base * (2 ** max(0, attempt))))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (`full_jitter`) and a bound on attempts.

    `max_attempts` counts calls, so max_attempts=6 means 5 retries after the first failure.
    """

    base: float = 0.2
    cap: float = 10.0
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must be >= 0")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** max(0, attempt)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return full_jitter(attempt, self.base, self.cap, rng)


DEFAULT_BACKOFF = Backoff()


class CallCounters:
    """Base of a `@dataclass` whose fields are counters: added to from many threads at once.

    The lock is not a field: equality, `as_dict`, copies and pickles see only the counters."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **increments: float) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def merge(self, other: Self) -> Self:
        """Add `other` into self (returns self)."""
        self.add(**other.as_dict())
        return self

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return type(self)(**self.as_dict())

    def __getstate__(self) -> dict[str, Any]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class TokenBucket:
    """Thread-safe token bucket: `rate` tokens per second, at most `burst` stored."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.rate = 0.0
        self.burst = 0.0
        self.configure(rate, burst)
        self._tokens = self.burst
        self._stamp = clock()

    def configure(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens/s, got {rate}")
        size = max(1.0, rate) if burst is None else float(burst)
        if size < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        with self._lock:
            self.rate, self.burst = float(rate), size
            if hasattr(self, "_tokens"):
                self._tokens = min(self._tokens, size)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens

    def try_acquire(self, tokens: float = 1.0) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def acquire(self, tokens: float = 1.0, timeout: float | None = None, *, debt: bool = False) -> float:
        """Take `tokens`, sleeping as needed; returns seconds waited (TimeoutError past `timeout`).

        More tokens than the burst raise ValueError, unless `debt`: then the caller waits for a
        full bucket, takes them all and leaves the bucket below zero, so whoever comes next
        waits until the batch is paid for (a batch of n at rate r holds the next one n/r seconds).
        """
        if tokens > self.burst and not debt:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.burst}")
        needed = min(tokens, self.burst)
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                if self._tokens >= needed:
                    self._tokens -= tokens
                    return waited
                wait = (needed - self._tokens) / self.rate
            if timeout is not None and waited + wait > timeout:
                raise TimeoutError(f"token bucket: no token within {timeout:.2f} s")
            self._sleep(wait)
            waited += wait

    def drain(self) -> None:
        """Empty the bucket (after a throttle: everyone sharing it slows down)."""
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens, 0.0)


def rate_limiter(rate: float | None, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> TokenBucket | None:
    """At most `rate` items per second, batches paid with `acquire(n, debt=True)`; None: unlimited."""
    return TokenBucket(rate, burst=1, clock=clock, sleep=sleep) if rate else None


class LimiterRegistry:
    """One `TokenBucket` per (account, region): X-Ray throttles per account and region."""

    def __init__(self, rate: float = 10.0, burst: float | None = None) -> None:
        TokenBucket(rate, burst)  # validate early
        self._rate, self._burst = rate, burst
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def get(self, account_id: str, region: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get((account_id, region))
            if bucket is None:
                bucket = self._buckets[(account_id, region)] = TokenBucket(self._rate, self._burst)
            return bucket

    def configure(self, rate: float, burst: float | None = None) -> None:
        """New defaults, applied to every existing bucket too."""
        TokenBucket(rate, burst)
        with self._lock:
            self._rate, self._burst = rate, burst
            for bucket in self._buckets.values():
                bucket.configure(rate, burst)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


DEFAULT_LIMITERS = LimiterRegistry()


def limiter_for(account_id: str, region: str) -> TokenBucket:
    return DEFAULT_LIMITERS.get(account_id, region)


__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_LIMITERS",
    "Backoff",
    "CallCounters",
    "LimiterRegistry",
    "Sleep",
    "TokenBucket",
    "full_jitter",
    "limiter_for",
    "rate_limiter",
]
