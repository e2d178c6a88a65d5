"""Consumer behaviour on the sandbox: poison messages, duplicates, stale replays, OpenSearch outages."""

from __future__ import annotations

import base64
import gzip
import hashlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import orjson
import pytest

from blocks import OpenSearchTarget
from blocks.config import Config
from flows.consume import receive_batch, run_consumer
from tasks import archive, dlq
from tasks import envelope as env
from tasks.consumer import BatchStats, Consumer
from tasks.index import client_for, ensure_templates
from tasks.mappings import index_templates

pytestmark = pytest.mark.usefixtures("prefect_harness")


def make_trace(seed: str, in_progress: bool = False, start: float | None = None) -> dict[str, object]:
    start = start or time.time() - 3600
    digest = hashlib.sha256(seed.encode()).hexdigest()
    trace_id = f"1-{int(start):08x}-{digest[:24]}"
    doc: dict[str, object] = {
        "name": f"svc-{seed}",
        "id": digest[24:40],
        "trace_id": trace_id,
        "start_time": start,
    }
    if in_progress:
        doc["in_progress"] = True
    else:
        doc["end_time"] = start + 0.25
    return {
        "Id": trace_id,
        "Duration": 0.25,
        "LimitExceeded": False,
        "Segments": [{"Id": doc["id"], "Document": orjson.dumps(doc).decode()}],
    }


def envelope_for(
    config: Config, traces: list[dict[str, object]], account: int = 0, collected_at: datetime | None = None
) -> env.Envelope:
    return env.build_envelope(
        source="sweep",
        account_id=config.roster.accounts[account].account_id,
        region="us-east-1",
        traces=traces,
        collected_at=collected_at,
    )


def send(config: Config, body: str, attributes: dict[str, str] | None = None) -> None:
    attrs = {k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()}
    boto3.client("sqs").send_message(QueueUrl=config.queue.queue_url, MessageBody=body, MessageAttributes=attrs)


def send_envelope(config: Config, envelope: env.Envelope, key: str | None = "default") -> None:
    signing_key = config.signing_keys[0].get_secret_value() if key == "default" else key
    message = env.encode(envelope, signing_key, config.archive.bucket)
    if message.claim_check:
        ref, payload = message.claim_check
        boto3.client("s3").put_object(Bucket=ref.bucket, Key=ref.key, Body=payload)
    send(config, message.body, message.attributes)


def signed_raw(config: Config, data: dict[str, object]) -> tuple[str, dict[str, str]]:
    raw = orjson.dumps(data)
    return raw.decode(), {"signature": env.sign(raw, config.signing_keys[0].get_secret_value())}


def signed_pointer(config: Config, data: dict[str, object]) -> tuple[str, dict[str, str]]:
    body = orjson.dumps(data)
    return body.decode(), {"pointer_signature": env.sign_pointer(body, config.signing_keys[0].get_secret_value())}


def indexed_trace_ids(config: Config) -> set[str]:
    client = client_for(config.opensearch)
    client.indices.refresh(index="xray-*")
    hits = client.search(index="xray-traces", body={"size": 1000})["hits"]["hits"]
    return {h["_source"]["trace_id"] for h in hits}


def test_poison_messages_go_to_the_dlq_with_reasons_and_the_rest_is_indexed(fresh_config: Config) -> None:
    good = [make_trace(f"good-{i}") for i in range(3)]
    send_envelope(fresh_config, envelope_for(fresh_config, good))
    send(fresh_config, "{not json")
    send(fresh_config, "!!!not-base64!!!")
    send(fresh_config, base64.b64encode(b"not gzip").decode())
    send(fresh_config, base64.b64encode(gzip.compress(b"\0" * (80 * 1024 * 1024))).decode())  # 80 MiB bomb
    valid = orjson.loads(envelope_for(fresh_config, [make_trace("x")]).to_json())
    send(fresh_config, *signed_raw(fresh_config, valid | {"schema": "xraylake.envelope.v0"}))
    send(fresh_config, *signed_raw(fresh_config, valid | {"account_id": "999999999999"}))
    spoof_body, spoof_attrs = signed_raw(fresh_config, valid)
    send(fresh_config, spoof_body, spoof_attrs | {"account_id": fresh_config.roster.accounts[1].account_id})
    send_envelope(fresh_config, envelope_for(fresh_config, [make_trace("forged")]), key="not-the-key")
    send_envelope(fresh_config, envelope_for(fresh_config, [make_trace("unsigned")]), key=None)
    pointer = {
        "schema": env.SCHEMA_V1,
        "envelope_id": "e",
        "account_id": valid["account_id"],
        "region": "us-east-1",
    }
    ref = {
        "bucket": fresh_config.archive.bucket,
        "key": "payloads/missing.json.gz",
        "sha256": "0" * 64,
        "bytes": 10,
    }
    send(fresh_config, *signed_pointer(fresh_config, pointer | {"payload_ref": ref}))
    boto3.client("s3").put_object(Bucket=fresh_config.archive.bucket, Key="payloads/tampered.json.gz", Body=b"x" * 10)
    tampered = pointer | {"payload_ref": ref | {"key": "payloads/tampered.json.gz"}}
    send(fresh_config, *signed_pointer(fresh_config, tampered))
    send(fresh_config, orjson.dumps(pointer | {"payload_ref": ref | {"bytes": 10**12}}).decode())
    send(fresh_config, orjson.dumps(pointer | {"payload_ref": ref}).decode())  # not signed: never fetched

    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)

    assert stats.traces == 3
    assert indexed_trace_ids(fresh_config) == {t["Id"] for t in good}
    assert dict(stats.dead_lettered) == {
        "bad-json": 1,
        "bad-base64": 1,
        "bad-gzip": 1,
        "decompressed-too-large": 1,
        "unknown-schema": 1,
        "unknown-account": 1,
        "spoofed-sender": 1,
        "signature": 3,
        "claim-check-missing": 1,
        "claim-check-mismatch": 1,
        "oversize": 1,
    }
    sqs = boto3.client("sqs")
    entries = [e for e, _ in dlq.peek(sqs, fresh_config.queue.dlq_url)]
    assert dlq.summarize(entries) == dict(stats.dead_lettered)
    depth = sqs.get_queue_attributes(QueueUrl=fresh_config.queue.queue_url, AttributeNames=["All"])["Attributes"]
    assert depth["ApproximateNumberOfMessages"] == "0"
    assert depth["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_duplicate_delivery_and_stale_replay_keep_one_newest_document(fresh_config: Config) -> None:
    completed = make_trace("evolving")
    in_progress = make_trace("evolving", in_progress=True)
    old = envelope_for(fresh_config, [in_progress], collected_at=datetime.now(UTC) - timedelta(minutes=10))
    new = envelope_for(fresh_config, [completed], collected_at=datetime.now(UTC))
    send_envelope(fresh_config, new)
    send_envelope(fresh_config, new)  # duplicate delivery
    run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    send_envelope(fresh_config, old)  # an older collection replayed after the newer one
    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    assert stats.documents_stale >= 1 and stats.documents_failed == 0
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*")
    hits = client.search(index="xray-traces", body={"size": 10})["hits"]["hits"]
    assert len(hits) == 1
    assert hits[0]["_source"]["in_progress"] is False
    assert client.count(index="xray-segments")["count"] == 1


def test_opensearch_down_deletes_nothing_and_loses_nothing(fresh_config: Config) -> None:
    traces = [make_trace(f"outage-{i}") for i in range(4)]
    send_envelope(fresh_config, envelope_for(fresh_config, traces[:2]))
    send_envelope(fresh_config, envelope_for(fresh_config, traces[2:]))
    dead = fresh_config.model_copy(
        update={"opensearch": OpenSearchTarget(hosts=["http://127.0.0.1:9"], timeout_seconds=1)}
    )
    with pytest.raises(Exception, match="(?i)connection"):
        run_consumer(dead, wait_seconds=1, visibility_timeout=1, use_tasks=False)  # cannot even put templates
    time.sleep(1.5)
    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    assert stats.deleted == 2
    assert indexed_trace_ids(fresh_config) == {t["Id"] for t in traces}


def test_a_batch_is_ingested_in_byte_bounded_chunks_and_each_chunk_deleted_when_done(fresh_config: Config) -> None:
    envelopes = [envelope_for(fresh_config, [make_trace(f"chunk-{i}-{j}") for j in range(3)]) for i in range(5)]
    for envelope in envelopes:
        send_envelope(fresh_config, envelope)
    send_envelope(fresh_config, envelopes[0])  # a duplicate delivery of an envelope ingested in an earlier chunk
    consumer = Consumer(fresh_config, boto3.client("s3"), boto3.client("sqs"), chunk_bytes=1)  # one per chunk
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    messages = receive_batch(consumer, batch_messages=10, wait_seconds=1, visibility_timeout=60)
    assert len(messages) == 6
    reported: list[list[str]] = []

    stats = consumer.process(messages, on_done=lambda done: reported.append([m.message_id for m in done]))

    assert (stats.envelopes, stats.duplicates, stats.deleted, stats.left_for_retry) == (5, 1, 6, 0)
    assert stats.raw_objects == 5
    assert stats.parquet_files >= 10  # traces + segments, one file per chunk and partition
    assert sorted(m for done in reported for m in done) == sorted(m.message_id for m in messages)
    assert len(reported) >= 5  # heard after each chunk, not once at the end
    assert indexed_trace_ids(fresh_config) == {t["Id"] for e in envelopes for t in e.traces}
    depth = boto3.client("sqs").get_queue_attributes(QueueUrl=fresh_config.queue.queue_url, AttributeNames=["All"])
    assert depth["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert depth["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_the_consumer_does_not_load_pandas() -> None:
    """pandas (pulled in by pyarrow.dataset) costs ~60 MB of a consumer's ~300 MB budget (bench B4)."""
    import subprocess
    import sys

    probe = "import sys, flows.consume, tasks.replay; print([m for m in ('pandas', 'duckdb') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_consumer_returns_arrow_memory_to_the_system(config_file: str) -> None:
    """Arrow's default pool (mimalloc) keeps freed pages: peak RSS climbed with volume (bench B4)."""
    import subprocess
    import sys

    probe = (
        "import pyarrow as pa; from blocks.config import load_config; from tasks.consumer import Consumer; "
        f"before = pa.default_memory_pool().backend_name; Consumer(load_config({config_file!r}), None, None); "
        "print(before, pa.default_memory_pool().backend_name)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    assert after == "system", f"the consumer kept Arrow's {before} pool"


def _consumer(config: Config, **options: object) -> Consumer:
    consumer = Consumer(config, boto3.client("s3"), boto3.client("sqs"), describe_executions=False, **options)  # type: ignore[arg-type]
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    return consumer


def _drain(consumer: Consumer) -> BatchStats:
    total = BatchStats()
    while messages := receive_batch(consumer, batch_messages=10, wait_seconds=1, visibility_timeout=60):
        total.merge(consumer.process(messages))
    return total


def test_the_dlq_reason_is_the_first_check_that_fails(fresh_config: Config) -> None:
    """Cheap checks first, in the documented order (tasks/consumer.py): each message below is wrong
    in several ways and must be dead-lettered with the reason of the earliest check."""
    cap = 64 * 1024
    valid = orjson.loads(envelope_for(fresh_config, [make_trace("order")]).to_json())
    stranger = valid | {"account_id": "999999999999"}
    pointer = {"schema": env.SCHEMA_V1, "envelope_id": "e", "account_id": valid["account_id"], "region": "us-east-1"}
    ref = {"bucket": "not-our-bucket", "key": "elsewhere/x.json.gz", "sha256": "0" * 64, "bytes": 100}
    padded = stranger | {"traces": [make_trace("pad") | {"Pad": "p" * cap}]}

    def to(**changes: object) -> str:
        return orjson.dumps(pointer | {"payload_ref": ref | changes}).decode()

    ours = fresh_config.archive.bucket
    body, attributes = signed_raw(fresh_config, stranger)
    spoofed = attributes | {"account_id": valid["account_id"]}
    v0 = stranger | {"schema": "v0"}
    cases = [
        ("unsigned pointer elsewhere, declaring a terabyte", to(bytes=10**12), {}, "oversize"),
        ("unsigned pointer to another bucket", to(), {}, "claim-check-location"),
        ("unsigned pointer to a key outside payloads/", to(bucket=ours), {}, "claim-check-location"),
        ("unsigned pointer, negative size, elsewhere", to(bytes=-1), {}, "bad-pointer"),
        ("unsigned plain JSON past the cap, unknown account", orjson.dumps(padded).decode(), {}, "oversize"),
        ("unsigned gzip bomb", base64.b64encode(gzip.compress(b" " * cap * 4)).decode(), {}, "decompressed-too-large"),
        ("unsigned, not JSON", "{not json", {}, "bad-json"),
        ("unsigned, wrong schema, unknown account", orjson.dumps(v0).decode(), {}, "signature"),
        ("signed, wrong schema, unknown account", *signed_raw(fresh_config, v0), "unknown-schema"),
        ("signed, unknown account, spoofed attribute", body, spoofed, "unknown-account"),
    ]  # fmt: skip
    for _, text, attrs, _ in cases:
        send(fresh_config, text, attrs)

    stats = _drain(_consumer(fresh_config, max_decompressed_bytes=cap))

    assert stats.left_for_retry == 0 and not stats.errors, stats.as_dict()
    entries = [(e.reason, e.detail) for e, _ in dlq.peek(boto3.client("sqs"), fresh_config.queue.dlq_url)]
    got = Counter(reason for reason, _ in entries)
    assert dict(stats.dead_lettered) == dict(got) == dict(Counter(reason for *_, reason in cases)), entries


def test_a_segment_document_past_the_limit_is_archived_raw_only(fresh_config: Config) -> None:
    """A document larger than `max_document_bytes` is neither parsed nor indexed nor in Parquet: it
    stays in the raw archive (byte for byte), its trace is flagged partial with a problem, and the
    rest of the envelope — other segments of the same trace included — is ingested as usual."""
    small = make_trace("small-doc")
    mixed = make_trace("big-doc")
    trace_id = mixed["Id"]
    start = time.time() - 3600
    big = {
        "name": "huge",
        "id": "b" * 16,
        "trace_id": trace_id,
        "start_time": start,
        "end_time": start + 1,
        "subsegments": [
            {"id": f"{i:016x}", "name": f"call-{i}", "start_time": start, "end_time": start + 0.5} for i in range(3000)
        ],
    }
    mixed["Segments"].append({"Id": big["id"], "Document": orjson.dumps(big).decode()})  # type: ignore[attr-defined]
    envelope = envelope_for(fresh_config, [small, mixed])
    send_envelope(fresh_config, envelope)

    stats = _drain(_consumer(fresh_config, max_document_bytes=64 * 1024))

    assert (stats.deleted, dict(stats.dead_lettered), stats.documents_failed) == (1, {}, 0), stats.as_dict()
    assert stats.segments == 2 and stats.transform_problems >= 1
    s3 = boto3.client("s3")
    raw_key = archive.raw_key(fresh_config.archive, envelope)
    stored = s3.get_object(Bucket=fresh_config.archive.bucket, Key=raw_key)["Body"].read()
    assert stored == gzip.compress(envelope.to_json(), compresslevel=6, mtime=0)
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*")
    docs = {h["_source"]["trace_id"]: h["_source"] for h in client.search(index="xray-traces")["hits"]["hits"]}
    assert docs[trace_id]["partial"] is True and docs[trace_id]["problem_count"] >= 1
    assert docs[small["Id"]]["partial"] is False
    assert client.count(index="xray-segments")["count"] == 2


def test_raw_archive_bytes_are_the_same_whatever_the_wire_encoding(fresh_config: Config) -> None:
    """Plain JSON, gzip+base64 and claim-check messages all archive gzip(canonical bytes) exactly
    as the consumer always wrote it (replay and dedup depend on it), reusing the wire's gzip."""
    key = fresh_config.signing_keys[0].get_secret_value()
    random_doc = base64.b64encode(b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(200))).decode()
    plain = envelope_for(fresh_config, [make_trace("wire-plain") | {"Pad": random_doc}])
    repetitive = envelope_for(fresh_config, [make_trace(f"wire-gzip-{i}") for i in range(20)])
    claim = envelope_for(fresh_config, [make_trace(f"wire-claim-{i}") for i in range(5)])
    messages = [
        env.encode(plain, key, fresh_config.archive.bucket),
        env.encode(repetitive, key, fresh_config.archive.bucket),
        env.encode(claim, key, fresh_config.archive.bucket, threshold=1),
    ]
    assert [m.encoding for m in messages] == [env.ENCODING_JSON, env.ENCODING_GZIP, env.ENCODING_CLAIM_CHECK]
    for message in messages:
        if message.claim_check:
            archive.put_claim_check(boto3.client("s3"), *message.claim_check)
        send(fresh_config, message.body, message.attributes)

    stats = _drain(_consumer(fresh_config))

    assert stats.deleted == 3 and stats.raw_objects == 3, stats.as_dict()
    s3 = boto3.client("s3")
    for envelope in (plain, repetitive, claim):
        stored = s3.get_object(Bucket=fresh_config.archive.bucket, Key=archive.raw_key(fresh_config.archive, envelope))
        assert stored["Body"].read() == gzip.compress(envelope.to_json(), compresslevel=6, mtime=0)


def test_a_redriven_claim_check_message_keeps_both_signatures(fresh_config: Config) -> None:
    """Dead-lettering copies at most 10 attributes (the SQS limit): the signatures must survive, or
    a claim-check message redriven once its object is back would fail with `signature` for good."""
    key = fresh_config.signing_keys[0].get_secret_value()
    envelope = envelope_for(fresh_config, [make_trace("redrive")])
    message = env.encode(envelope, key, fresh_config.archive.bucket, threshold=1)
    assert message.claim_check and len(message.attributes) == 8
    send(fresh_config, message.body, message.attributes)  # its object is not there yet
    first = _drain(_consumer(fresh_config))
    assert dict(first.dead_lettered) == {"claim-check-missing": 1}

    archive.put_claim_check(boto3.client("s3"), *message.claim_check)
    sqs = boto3.client("sqs")
    moved = dlq.redrive(sqs, fresh_config.queue.dlq_url, fresh_config.queue.queue_url, reason="claim-check-missing")
    assert moved.moved == 1
    second = _drain(_consumer(fresh_config))
    assert (second.deleted, dict(second.dead_lettered)) == (1, {}), second.as_dict()
    assert indexed_trace_ids(fresh_config) == {t["Id"] for t in envelope.traces}
