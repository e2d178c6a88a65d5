"""Competing consumers: two real consumers drain one backlog while both hold messages at once.

A consumer that takes 10 messages per receive can drain a small backlog alone before the other
one polls (a probe saw one consumer take all 45 messages), which proves nothing about competing.
Here each receive takes at most 2 messages (`batch_messages=2`) and every OpenSearch bulk request
waits in the fault proxy, so a batch is held long enough for the other consumer to receive too.
Each consumer's holds (from its receive returning to its next receive: process, sinks, delete)
are recorded, and the test demands that holds of the two consumers intersect in time, that SQS
never handed one message to both, and then the usual: every trace exactly once in raw, Parquet
and the index, nothing on the DLQ, the queue empty, reconcile ok.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.config import Config
from flows import consume as consume_flow
from flows.backfill import backfill
from sandbox.faults import FaultProxy, FaultRule
from tasks.consumer import BatchStats
from tests.fault import helpers as h
from tests.fault.test_sinks import through

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

CONSUMERS = ("consumer-a", "consumer-b")


@dataclass
class Hold:
    """Messages one consumer received, from the receive returning until its next receive starts."""

    start: float
    message_ids: list[str]
    end: float | None = None


@dataclass
class Ledger:
    holds: dict[str, list[Hold]] = field(default_factory=lambda: {name: [] for name in CONSUMERS})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def overlaps(self) -> list[tuple[Hold, Hold]]:
        first, second = (self.holds[name] for name in CONSUMERS)
        return [
            (a, b)
            for a in first
            for b in second
            if a.end is not None and b.end is not None and a.start < b.end and b.start < a.end
        ]


def recording_receives(ledger: Ledger) -> Any:
    """`flows.consume.receive_batch`, noting when each consumer thread starts and stops holding messages."""
    real = consume_flow.receive_batch

    def receive_batch(*args: Any, **kwargs: Any) -> Any:
        holds = ledger.holds[threading.current_thread().name]
        if holds and holds[-1].end is None:  # the previous batch is done: deleted (or left for retry)
            holds[-1].end = time.monotonic()
        messages = real(*args, **kwargs)
        if messages:
            holds.append(Hold(time.monotonic(), [m.message_id for m in messages]))
        return messages

    return receive_batch


def test_two_consumers_hold_messages_at_once_and_every_trace_lands_once(
    fresh_config: Config, config_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~one trace per one-minute chunk: one envelope, one message each (a backfill sends chunk by
    # chunk; a sweep packs all its windows' traces together)
    expected = h.plant(fresh_config, 8, tag="compete", age_seconds=300, spacing=70)
    now = datetime.now(UTC).replace(microsecond=0)
    options = {"start": (now - timedelta(minutes=20)).isoformat(), "end": now.isoformat(), "chunk_minutes": 1}
    state = backfill(config_path=config_file, **options, return_state=True)
    assert state.is_completed(), state.message
    backlog = h.queue_depth(fresh_config)["visible"]
    assert backlog >= 16, backlog

    ledger = Ledger()
    monkeypatch.setattr(consume_flow, "receive_batch", recording_receives(ledger))
    stats: dict[str, BatchStats] = {}
    failures: list[BaseException] = []
    with FaultProxy(fresh_config.opensearch.hosts[0]) as proxy:
        slow = proxy.add(FaultRule(path=r"/_bulk", method="POST", forward=True, delay_seconds=0.5))
        config = through(fresh_config, proxy)
        start = threading.Barrier(len(CONSUMERS))

        def consume(name: str) -> None:
            try:
                start.wait(timeout=30)
                stats[name] = consume_flow.run_consumer(
                    config, batch_messages=2, wait_seconds=2, visibility_timeout=120, use_tasks=False
                )
            except BaseException as error:  # reported by the main thread
                failures.append(error)

        threads = [threading.Thread(target=consume, args=(name,), name=name) for name in CONSUMERS]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        elapsed = h.seconds_since(started)
    assert not any(t.is_alive() for t in threads) and not failures, failures

    per_consumer = {name: (s.deleted, len(ledger.holds[name])) for name, s in stats.items()}
    overlapping = ledger.overlaps()
    print(
        f"backlog {backlog} messages; (deleted, batches) per consumer {per_consumer}; "
        f"{len(overlapping)} overlapping hold pairs; {slow.hits} slowed bulk requests; {elapsed} s"
    )
    assert all(s.deleted > 0 for s in stats.values()), per_consumer  # both consumers took part
    assert overlapping, ledger.holds  # ... and held messages at the same time
    received = Counter(m for holds in ledger.holds.values() for hold in holds for m in hold.message_ids)
    assert len(received) == backlog and set(received.values()) == {1}, received  # SQS gave each to one consumer
    assert sum(s.deleted for s in stats.values()) == backlog
    assert all(s.documents_failed == 0 and s.left_for_retry == 0 for s in stats.values())
    assert all(sum(s.dead_lettered.values()) == 0 for s in stats.values())
    assert sum(s.traces for s in stats.values()) == sum(len(ids) for ids in expected.values())

    assert h.dlq_reasons(fresh_config) == {}
    h.assert_exactly_once(fresh_config, expected)  # raw = Parquet = index = X-Ray, once each; queue empty
    h.reconcile_ok(config_file, expected)
