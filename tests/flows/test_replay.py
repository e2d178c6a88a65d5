"""Replay from the S3 archive and DLQ redrive, on the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from blocks.config import Config
from flows.consume import run_consumer
from flows.replay import replay
from flows.sweep import sweep
from tasks import dlq
from tasks.aws import log_client
from tasks.index import client_for
from tests.flows.test_consume import envelope_for, make_trace, send_envelope
from tests.flows.test_sweep import put_simple_traces

pytestmark = pytest.mark.usefixtures("prefect_harness")


def documents(config: Config, alias: str) -> dict[str, dict]:  # type: ignore[type-arg]
    client = client_for(config.opensearch)
    client.indices.refresh(index="*")
    hits = client.search(index=alias, body={"size": 5000, "query": {"match_all": {}}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def window(hours: int = 3) -> dict[str, datetime]:
    now = datetime.now(UTC)
    return {"start": now - timedelta(hours=hours), "end": now + timedelta(minutes=1)}


@pytest.fixture
def ingested(fresh_config: Config, config_file: str) -> Config:
    for account in fresh_config.roster.accounts:
        put_simple_traces(fresh_config, account.account_id, 6)
    assert sweep(config_path=config_file, return_state=True).is_completed()
    run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    return fresh_config


def test_wiped_indices_come_back_identical_from_a_direct_replay(ingested: Config, config_file: str) -> None:
    before = {alias: documents(ingested, alias) for alias in ("xray-traces", "xray-segments", "otel-v1-apm-span")}
    assert len(before["xray-traces"]) == 18
    client = client_for(ingested.opensearch)
    client.indices.delete(index="xray-traces-*,xray-segments-*,otel-v1-apm-span-*")
    assert not client.indices.exists_alias(name="xray-traces")
    state = replay(**window(), target="direct", config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    data = state.result()
    assert data["traces"] == 18
    for alias, docs in before.items():
        assert documents(ingested, alias) == docs, alias


def test_dry_run_counts_and_queue_replay_reingests_without_duplicates(ingested: Config, config_file: str) -> None:
    before = documents(ingested, "xray-traces")
    dry_state = replay(**window(), dry_run=True, config_path=config_file, return_state=True)
    dry = dry_state.result()
    assert dry["traces"] == 18
    assert dry["sent"] == 0
    assert dry["objects"] >= 3
    # the state says what a real run would do, as the summary artifact does
    assert dry_state.message == f"would replay {dry['objects']} envelopes (18 traces) to queue"
    params = {**window(), "rate_per_second": 50}
    sent = replay(**params, config_path=config_file, return_state=True)
    assert sent.result()["sent"] == dry["objects"]
    stats = run_consumer(ingested, wait_seconds=1, use_tasks=False)
    assert stats.deleted == dry["objects"]
    assert stats.documents_failed == 0, stats.errors
    assert documents(ingested, "xray-traces") == before
    # the same replay again is resumable: every partition is already checkpointed
    again = replay(**params, config_path=config_file, return_state=True)
    assert again.result()["sent"] == 0
    assert again.result()["partitions_skipped"] == again.result()["partitions"]
    assert "force=True replays them again" in str(again.message)
    # force: the same range again, every partition (same envelope ids: the index stays the same)
    forced = replay(**params, force=True, config_path=config_file, return_state=True).result()
    assert forced["sent"] == dry["objects"]
    assert forced["partitions_skipped"] == 0
    assert forced["replay_id"] == again.result()["replay_id"]  # force is not part of the replay's identity
    assert run_consumer(ingested, wait_seconds=1, use_tasks=False).deleted == dry["objects"]
    assert documents(ingested, "xray-traces") == before


def test_reindex_into_a_new_prefix_and_refuse_a_colliding_one(ingested: Config, config_file: str) -> None:
    state = replay(**window(), target="direct", index_prefix="xray-v2", config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    assert len(documents(ingested, "xray-v2-traces")) == 18
    client = client_for(ingested.opensearch)
    client.indices.put_alias(index="xray-traces-*", name="taken-traces")
    with pytest.raises(ValueError, match="collides"):
        replay(**window(), target="direct", index_prefix="taken", config_path=config_file)


def test_redrive_after_the_cause_was_fixed_indexes_the_messages(fresh_config: Config) -> None:
    # signed with a key the consumer does not know yet → DLQ; then the key is rotated in → redrive works
    trace = make_trace("redrive")
    send_envelope(fresh_config, envelope_for(fresh_config, [trace]), key="next-key")
    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    assert dict(stats.dead_lettered) == {"signature": 1}
    rotated = fresh_config.model_copy(update={"signing_keys": [*fresh_config.signing_keys, SecretStr("next-key")]})
    moved = dlq.redrive(log_client("sqs", "us-east-1"), fresh_config.queue.dlq_url, fresh_config.queue.queue_url)
    assert moved.moved == 1
    assert run_consumer(rotated, wait_seconds=1, use_tasks=False).deleted == 1
    assert {d["trace_id"] for d in documents(fresh_config, "xray-traces").values()} == {trace["Id"]}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"start": datetime(2026, 11, 26, 10, tzinfo=UTC), "end": datetime(2026, 11, 26, 10, tzinfo=UTC)},
            "empty range",
        ),
        (
            {"start": datetime(2026, 11, 26, 10, tzinfo=UTC), "end": datetime(2026, 11, 26, 9, tzinfo=UTC)},
            "not after start",
        ),
        ({**window(), "accounts": ["999999999999"]}, "not in the roster"),
        (window(), "is empty or does not exist"),
    ],
)
def test_bad_input_is_refused_before_any_work(params: dict, message: str, config_file: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        replay(**params, config_path=config_file)
