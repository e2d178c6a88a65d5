"""Adversarial: one roster account cannot touch another account's documents, and malformed ids and
field types are refused or recorded as problems, never indexed silently (sandbox servers)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import orjson
import pytest

from blocks.config import Config
from flows.consume import run_consumer
from tasks import archive
from tasks import collector as col
from tasks.index import client_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

SEGMENT_ID = "70de5b6f19ff9a0a"


def one_segment_trace(trace_id: str, name: str, start: float, **extra: Any) -> dict[str, Any]:
    document = {"id": SEGMENT_ID, "trace_id": trace_id, "name": name, "start_time": start, "end_time": start + 0.5}
    document |= extra
    return {
        "Id": trace_id,
        "Duration": 0.5,
        "Segments": [{"Id": SEGMENT_ID, "Document": orjson.dumps(document).decode()}],
    }


def send(config: Config, account_id: str, traces: list[dict[str, Any]], collected_at: datetime) -> None:
    collector = col.Collector.from_config(config)
    envelopes = col.envelopes_for(
        traces, source="sweep", account_id=account_id, region="us-east-1", collected_at=collected_at
    )
    col.send_envelopes(collector, envelopes)


def test_an_account_reusing_another_accounts_ids_cannot_overwrite_its_documents(fresh_config: Config) -> None:
    victim, attacker = fresh_config.roster.accounts[0], fresh_config.roster.accounts[1]
    start = time.time() - 600
    trace_id = f"1-{int(start):08x}-{'ab' * 12}"
    now = datetime.now(UTC)
    send(fresh_config, victim.account_id, [one_segment_trace(trace_id, "checkout", start)], now - timedelta(minutes=5))
    assert run_consumer(fresh_config, wait_seconds=1, use_tasks=False).traces == 1
    # The attacker sends the same trace and segment ids later: a newer collected_at would win.
    send(fresh_config, attacker.account_id, [one_segment_trace(trace_id, "evil", start)], now)
    assert run_consumer(fresh_config, wait_seconds=1, use_tasks=False).traces == 1

    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*,otel-v1-apm-span-*")
    for alias in ("xray-traces", "xray-segments", "otel-v1-apm-span"):
        hits = client.search(index=alias, body={"size": 10, "query": {"match_all": {}}})["hits"]["hits"]
        owners = sorted(
            h["_source"].get("account_id") or h["_source"].get("resource.attributes.cloud@account@id") for h in hits
        )
        assert len(hits) == 2, (alias, hits)
        assert sorted({h["_id"].split(":")[0] for h in hits}) == sorted([victim.account_id, attacker.account_id])
        victims = [h for h in hits if h["_id"].startswith(victim.account_id)]
        source = victims[0]["_source"]
        if alias != "otel-v1-apm-span":
            assert source["account_id"] == victim.account_id, owners
            assert source["account_name"] == victim.name
        name = source.get("name") or source.get("root_service_name") or source.get("serviceName")
        assert name == "checkout", source

    # Parquet: each account's rows in its own partition, the victim's untouched
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket
    for account in (victim, attacker):
        keys = archive.list_keys(s3, bucket, f"parquet/segments/account_id={account.account_id}/")
        assert [k for k in keys if k["Key"].endswith(".parquet")], account.account_id
