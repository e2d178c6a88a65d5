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
