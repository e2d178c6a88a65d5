"""End to end on the sandbox: sweep → queue → consume → OpenSearch + raw archive + Parquet."""

from __future__ import annotations

import gzip

import boto3
import pytest

from blocks.config import Config
from flows.consume import consume
from flows.sweep import sweep
from tasks import archive
from tasks.envelope import parse_envelope
from tasks.index import client_for
from tests.flows.test_sweep import put_simple_traces

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_every_trace_lands_once_in_index_raw_and_parquet(fresh_config: Config, config_file: str) -> None:
    expected: set[str] = set()
    for account in fresh_config.roster.accounts:
        expected |= set(put_simple_traces(fresh_config, account.account_id, 8))
    assert sweep(config_path=config_file, return_state=True).is_completed()
    state = consume(config_path=config_file, wait_seconds=1, return_state=True)
    assert state.is_completed(), state.message
    stats = state.result()
    assert stats["dead_lettered_total"] == 0, stats
    assert stats["traces"] == len(expected)

    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*")
    hits = client.search(index="xray-traces", body={"size": 1000, "query": {"match_all": {}}})["hits"]["hits"]
    assert sorted(h["_source"]["trace_id"] for h in hits) == sorted(expected)
    assert {h["_id"].split(":")[0] for h in hits} == {a.account_id for a in fresh_config.roster.accounts}
    segments = client.count(index="xray-segments")["count"]
    assert segments == len(expected)  # one segment per simple trace

    s3 = boto3.client("s3")
    raw_keys = [o["Key"] for o in archive.list_keys(s3, fresh_config.archive.bucket, "raw/")]
    assert len(raw_keys) == stats["envelopes"]
    archived = set()
    for key in raw_keys:
        body = s3.get_object(Bucket=fresh_config.archive.bucket, Key=key)["Body"].read()
        envelope = parse_envelope(gzip.decompress(body))
        assert envelope.to_json() == gzip.decompress(body)
        assert key.endswith(f"{envelope.envelope_id}.json.gz")
        archived |= {t["Id"] for t in envelope.traces}
    assert archived == expected

    dataset = archive.parquet_dataset(fresh_config.archive, "segments", fresh_config.aws_endpoint_url)
    table = dataset.to_table(columns=["trace_id", "account_id"])
    assert table.num_rows == len(expected)
    assert set(table.column("trace_id").to_pylist()) == expected
    assert all(a.startswith("0") for a in table.column("account_id").to_pylist())  # leading zero kept

    messages = boto3.client("sqs").get_queue_attributes(
        QueueUrl=fresh_config.queue.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert messages == "0"
