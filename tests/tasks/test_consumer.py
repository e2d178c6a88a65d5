"""The consumer (tasks/consumer.py) on the sandbox, without Prefect: a Transaction Search span
envelope (`xraylake.spans.v1`) goes to every sink like a classic one."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import boto3
import orjson
import pyarrow.parquet as pq

from blocks.config import Config
from tasks import archive, queue
from tasks import envelope as env
from tasks.consumer import BatchStats, Consumer
from tasks.index import client_for, ensure_templates
from tasks.mappings import index_templates
from tests.fixtures import fixture_path


def _drain(config: Config) -> BatchStats:
    consumer = Consumer(config, boto3.client("s3"), boto3.client("sqs"), describe_executions=False)
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    total = BatchStats()
    while messages := queue.receive(consumer.sqs, config.queue.queue_url, 10, 1, 60):
        total.merge(consumer.process(messages))
    return total


def test_a_span_envelope_is_indexed_archived_and_replayable(fresh_config: Config) -> None:
    """Fixture records (tests/fixtures/aws_spans) plus one malformed record: the others become span,
    segment and trace documents and Parquet rows, the bad one is counted, and the raw archive keeps
    the envelope verbatim, so replay reads back the same envelope."""
    records = fixture_path("aws_spans/adot_checkout_trace.jsonl").read_text().splitlines()
    account = fresh_config.roster.accounts[0].account_id
    trace_id = orjson.loads(records[0])["traceId"]
    envelope = env.build_envelope(
        source="sweep",
        account_id=account,
        region="us-east-1",
        traces=[{"Id": trace_id, "Spans": [*records, "{truncated"]}],
        collected_at=datetime(2026, 12, 1, 10, 20, tzinfo=UTC),
        schema="xraylake.spans.v1",
    )
    message = env.encode(envelope, fresh_config.signing_keys[0].get_secret_value(), fresh_config.archive.bucket)
    assert message.claim_check is None and message.attributes["schema"] == env.SCHEMA_SPANS_V1
    attributes = {k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()}
    boto3.client("sqs").send_message(
        QueueUrl=fresh_config.queue.queue_url,
        MessageBody=message.body,
        MessageAttributes=attributes,  # type: ignore[arg-type]
    )

    stats = _drain(fresh_config)

    assert (stats.deleted, dict(stats.dead_lettered), stats.documents_failed) == (1, {}, 0), stats.as_dict()
    # 7 spans of the records and the dependency nodes of its 4 calls with no SERVER span below them
    assert (stats.traces, stats.segments, stats.spans, stats.transform_problems) == (1, 7, 11, 1)
    assert stats.span_records_rejected == 1
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*,otel-v1-apm-span-*")
    (trace,) = [h["_source"] for h in client.search(index="xray-traces")["hits"]["hits"]]
    assert trace["trace_id"] == f"1-{trace_id[:8]}-{trace_id[8:]}" and trace["source_store"] == "spans"
    assert trace["services"] == ["checkout", "payments"] and trace["problem_count"] == 1
    assert client.count(index="xray-segments")["count"] == 7
    spans = client.search(index="otel-v1-apm-span-*", body={"size": 20})["hits"]["hits"]
    real = [h for h in spans if h["_source"].get("span.attributes.aws@xray@inferred") != "true"]
    assert {h["_id"] for h in real} == {f"{account}:{trace_id}{orjson.loads(r)['spanId']}" for r in records}
    assert len(spans) == 11
    s3 = boto3.client("s3")
    prefix = f"{fresh_config.archive.parquet_prefix}/segments/account_id={account}/"
    (key,) = [o["Key"] for o in archive.list_keys(s3, fresh_config.archive.bucket, prefix)]
    assert "/dt=2026-12-01/hour=10/" in key
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=fresh_config.archive.bucket, Key=key)["Body"].read()))
    assert table.num_rows == 7 and set(table.column("source_store").to_pylist()) == {"spans"}
    assert sorted(table.column("document").to_pylist()) == sorted(records)
    raw_key = archive.raw_key(fresh_config.archive, envelope)
    assert "/dt=2026-12-01/hour=10/" in raw_key
    replayed = env.parse_envelope(archive.get_raw(s3, fresh_config.archive.bucket, raw_key))
    assert replayed == envelope and replayed.traces[0]["Spans"][-1] == "{truncated"


def _scorekeep_envelope(account: str, *trace_ids: str) -> env.Envelope:
    """The public Scorekeep trace under other trace ids: the same services, so the same map edges."""
    (trace,) = orjson.loads(fixture_path("xray/scorekeep_batch_get_traces.json").read_bytes())["Traces"]
    original = trace["Id"]
    traces = [
        {
            **trace,
            "Id": tid,
            "Segments": [{**s, "Document": s["Document"].replace(original, tid)} for s in trace["Segments"]],
        }
        for tid in trace_ids
    ]
    return env.build_envelope(
        source="sweep",
        account_id=account,
        region="us-east-1",
        traces=traces,
        collected_at=datetime(2026, 12, 1, 10, 20, tzinfo=UTC),
    )


def _index_consumer(config: Config) -> Consumer:
    consumer = Consumer(config, boto3.client("s3"), boto3.client("sqs"), describe_executions=False)
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    return consumer


def _map_ids(config: Config) -> set[str]:
    client = client_for(config.opensearch)
    client.indices.refresh(index="otel-v1-apm-service-map")
    hits = client.search(index="otel-v1-apm-service-map", body={"size": 1000})["hits"]["hits"]
    return {h["_id"] for h in hits}


def test_service_map_documents_are_written_once_per_consumer(fresh_config: Config) -> None:
    """Two envelopes with the same edges in one bulk write each map document once; a later bulk of
    the same Consumer skips them; a new Consumer (a replay into a rebuilt index) writes them again."""
    account = fresh_config.roster.accounts[0].account_id
    first = _scorekeep_envelope(account, "1-59602603-000000000000000000000001")
    second = _scorekeep_envelope(account, "1-59602603-000000000000000000000002")
    third = _scorekeep_envelope(account, "1-59602603-000000000000000000000003")
    version = first.collected_at_ms
    consumer = _index_consumer(fresh_config)
    per_envelope = consumer._transform(first, BatchStats()).index_actions(version)
    map_ids = {a.doc_id for a in per_envelope if a.kind == "service-map"}
    others = len(per_envelope) - len(map_ids)
    assert map_ids and others > 0

    stats = BatchStats()
    index_only = frozenset({"index"})
    assert consumer.ingest([(first, first.to_json()), (second, second.to_json())], stats, index_only) == set()
    assert (stats.documents_indexed, stats.documents_deduplicated) == (2 * others + len(map_ids), len(map_ids))
    assert _map_ids(fresh_config) == map_ids
    # building the documents and the cluster's bulk are timed apart, and only the sinks asked for
    assert set(stats.stage_seconds) == {"transform", "index_documents", "index"}, stats.stage_seconds

    later = BatchStats()
    assert consumer.ingest([(third, third.to_json())], later, index_only) == set()
    assert (later.documents_indexed, later.documents_deduplicated, later.documents_failed) == (others, len(map_ids), 0)
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*")
    assert client.count(index="xray-traces")["count"] == 3

    client.indices.delete(index="otel-v1-apm-service-map")  # rebuilt: a new run writes the map again
    replay = BatchStats()
    assert _index_consumer(fresh_config).ingest([(third, third.to_json())], replay, index_only) == set()
    # external_gte: the same version is written again, not stale
    assert (replay.documents_indexed, replay.documents_deduplicated) == (others + len(map_ids), 0)
    assert _map_ids(fresh_config) == map_ids


def test_a_failed_service_map_document_is_not_remembered(fresh_config: Config) -> None:
    """Map documents the cluster refuses fail every envelope that carried them and are sent again
    by the next bulk, which writes them once the index takes them."""
    account = fresh_config.roster.accounts[0].account_id
    first = _scorekeep_envelope(account, "1-59602603-000000000000000000000011")
    second = _scorekeep_envelope(account, "1-59602603-000000000000000000000012")
    consumer = _index_consumer(fresh_config)
    client = client_for(fresh_config.opensearch)
    # a mapping that refuses every map document: serviceName as a number
    client.indices.create(
        index="otel-v1-apm-service-map", body={"mappings": {"properties": {"serviceName": {"type": "long"}}}}
    )
    stats = BatchStats()
    failed = consumer.ingest([(first, first.to_json()), (second, second.to_json())], stats, frozenset({"index"}))
    assert failed == {first.envelope_id, second.envelope_id}  # both carried the refused documents
    map_count = stats.documents_deduplicated
    assert map_count > 0 and stats.documents_failed == map_count
    assert len(consumer.service_map_written) == 0

    client.indices.delete(index="otel-v1-apm-service-map")  # the template's mapping again
    again = BatchStats()
    assert consumer.ingest([(second, second.to_json())], again, frozenset({"index"})) == set()
    assert (again.documents_deduplicated, again.documents_failed) == (0, 0)
    assert len(_map_ids(fresh_config)) == map_count == len(consumer.service_map_written)


def test_written_keys_forget_the_least_recently_seen() -> None:
    from tasks.consumer import WrittenKeys

    keys = WrittenKeys(capacity=2)
    keys.add(("i", "a"))
    keys.add(("i", "b"))
    assert ("i", "a") in keys  # seen: now the most recent
    keys.add(("i", "c"))
    assert ("i", "b") not in keys and ("i", "a") in keys and ("i", "c") in keys and len(keys) == 2


def test_the_target_s_service_map_bucket_reaches_the_v2_documents(fresh_config: Config) -> None:
    from tasks.index import target_templates

    opensearch = fresh_config.opensearch.model_copy(
        update={"span_generation": "standard", "index_profile": "trace-analytics", "service_map_bucket_seconds": 3600}
    )
    config = fresh_config.model_copy(update={"opensearch": opensearch})
    consumer = Consumer(config, boto3.client("s3"), boto3.client("sqs"), describe_executions=False)
    ensure_templates(consumer.opensearch, target_templates(opensearch))
    envelope = _scorekeep_envelope(config.roster.accounts[0].account_id, "1-59602603-000000000000000000000021")
    stats = BatchStats()
    assert consumer.ingest([(envelope, envelope.to_json())], stats, frozenset({"index"})) == set()
    client = client_for(opensearch)
    client.indices.refresh(index="otel-v2-apm-service-map-*")
    hits = client.search(index="otel-v2-apm-service-map-*", body={"size": 100})["hits"]["hits"]
    assert hits and {h["_source"]["timestamp"][13:] for h in hits} == {":00:00Z"}
