"""The poison corpus interleaved with good traffic over several batches: every poison message ends
in the DLQ with its reason, the consumer keeps going, and every good trace lands exactly once."""

from __future__ import annotations

import boto3
import pytest

from blocks.config import Config
from flows.sweep import sweep
from tasks import dlq
from tests.fault import corpus
from tests.fault import helpers as h

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_poison_corpus_interleaved_with_good_traffic(fresh_config: Config, config_file: str) -> None:
    items = corpus.build_corpus(fresh_config)
    half = len(items) // 2
    first = h.plant(fresh_config, 4, tag="good-1", age_seconds=3000, spacing=300)  # two hours: two envelopes each
    corpus.send_corpus(fresh_config, items[:half])
    assert sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True).is_completed()
    corpus.send_corpus(fresh_config, items[half:])
    second = h.plant(fresh_config, 3, tag="good-2", age_seconds=100, spacing=5)
    assert sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True).is_completed()

    stats = h.drain(fresh_config, batch_messages=4)
    assert stats.received >= len(items) + 6  # several batches of 4
    assert dict(stats.dead_lettered) == corpus.expected_reasons(items), (stats.as_dict(), stats.errors)
    assert stats.left_for_retry == 0 and stats.documents_failed == 0
    entries = [e for e, _ in dlq.peek(boto3.client("sqs"), fresh_config.queue.dlq_url, limit=100)]
    assert dlq.summarize(entries) == corpus.expected_reasons(items)
    assert all(e.detail for e in entries)  # every DLQ message says why

    expected = h.merge(first, second)
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)
