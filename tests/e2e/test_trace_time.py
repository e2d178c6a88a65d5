"""One trace-time rule in every sink: traces whose ids carry no credible time land in the same hour
in the raw archive, Parquet and the index, and reconcile counts them there (sandbox servers)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import orjson
import pyarrow.parquet as pq
import pytest

from blocks.config import Config
from flows.consume import run_consumer
from tasks import archive, tracetime
from tasks import collector as col
from tasks import envelope as env
from tasks import reconcile as rec
from tasks.index import client_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

ODD_IDS = {
    "epoch 0": "1-00000000-000000000000000000000a01",
    "future": "1-f0000000-000000000000000000000a02",
    "w3c": "4bf92f3577b34da6a3ce929d0e0e4736",
}
MALFORMED = "1-zzzzzzzz-000000000000000000000a03"  # refused by id validation, kept in the raw archive


def odd_trace(trace_id: str, start: float) -> dict[str, Any]:
    document = {"id": f"{abs(hash(trace_id)) % 16**16:016x}", "trace_id": trace_id, "name": "odd"}
    document |= {"start_time": start, "end_time": start + 0.25}
    return {
        "Id": trace_id,
        "Duration": 0.25,
        "Segments": [{"Id": document["id"], "Document": orjson.dumps(document).decode()}],
    }


def test_odd_trace_ids_share_one_partition_in_every_sink_and_reconcile_counts_them(fresh_config: Config) -> None:
    account = fresh_config.roster.accounts[0]
    now = datetime.now(UTC)
    start = time.time() - 20 * 60  # 20 minutes ago
    hour = tracetime.hour_of(datetime.fromtimestamp(start, UTC))
    traces = [odd_trace(trace_id, start + i) for i, trace_id in enumerate([*ODD_IDS.values(), MALFORMED])]
    collector = col.Collector.from_config(fresh_config)
    refused: list[dict[str, str]] = []
    envelopes = col.envelopes_for(
        traces, source="sweep", account_id=account.account_id, region="us-east-1", refused=refused
    )
    assert [r["trace_id"] for r in refused] == [repr(MALFORMED)]  # the collector refuses it first
    # A member-run collector of an older version could still send it: the consumer refuses it too.
    envelopes = [
        env.build_envelope(
            source="sweep", account_id=account.account_id, region="us-east-1", traces=traces, collected_at=now
        )
    ]
    col.send_envelopes(collector, envelopes)
    stats = run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    assert stats.traces == len(ODD_IDS), stats.errors
    assert stats.traces_rejected == 1
    assert "neither 1-<8 hex>-<24 hex>" in stats.rejections[0]

    # raw: the envelope's key names the segments' hour, not 1970 or 2097
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket
    raw_keys = [o["Key"] for o in archive.list_keys(s3, bucket, f"raw/account_id={account.account_id}/")]
    assert raw_keys == [archive.raw_key(fresh_config.archive, envelopes[0])]
    assert f"/dt={hour:%Y-%m-%d}/hour={hour:%H}/" in raw_keys[0]

    # Parquet: every row in that partition, by path and by column
    parquet_keys = [o["Key"] for o in archive.list_keys(s3, bucket, "parquet/traces/") if o["Key"].endswith(".parquet")]
    assert parquet_keys and all(f"/dt={hour:%Y-%m-%d}/hour={hour:%H}/" in k for k in parquet_keys)
    rows = [r for k in parquet_keys for r in pq.read_table(f"{bucket}/{k}", filesystem=_s3fs()).to_pylist()]
    assert sorted(r["trace_id"] for r in rows) == sorted(ODD_IDS.values())

    # index: the daily index of that hour, with the partition hour on every trace document
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*")
    hits = client.search(index="xray-traces", body={"size": 100, "query": {"match_all": {}}})["hits"]["hits"]
    assert sorted(h["_source"]["trace_id"] for h in hits) == sorted(ODD_IDS.values())
    assert {h["_index"] for h in hits} == {f"xray-traces-{hour:%Y.%m.%d}"}
    assert {h["_source"]["partition_hour"] for h in hits} == {f"{hour:%Y-%m-%dT%H}:00:00.000Z"}
    segment_indices = {h["_index"] for h in client.search(index="xray-segments", body={"size": 100})["hits"]["hits"]}
    assert segment_indices == {f"xray-segments-{hour:%Y.%m.%d}"}

    # reconcile reads each sink by the same rule and finds all four in that hour in all three
    target = (account.account_id, "us-east-1")
    window_start, window_end = hour, now
    observation = rec.Observation(start=window_start, end=window_end)
    observation.add_raw(target, rec.observe_raw(fresh_config, s3, *target, window_start, window_end))
    parquet = rec.observe_parquet(fresh_config, s3, [target[0]], [target[1]], window_start, window_end)
    observation.add("parquet", target, parquet.get(target, {}))
    observation.add("index", target, rec.observe_index(client, "xray-traces", *target, window_start, window_end))
    report = rec.compare(observation, [target])
    assert report.ok, report.message()
    assert report.totals["raw"] == report.totals["parquet"] == report.totals["index"] == len(ODD_IDS)
    (row,) = [r for r in report.rows if r.hour == hour]
    assert (row.raw, row.parquet, row.index) == (len(ODD_IDS),) * 3

    # …and still notices when one sink lacks one of them
    victim = next(h for h in hits if h["_source"]["trace_id"] == ODD_IDS["epoch 0"])
    client.delete(index=victim["_index"], id=victim["_id"], refresh=True)
    observation.ids["index"] = {}
    observation.add("index", target, rec.observe_index(client, "xray-traces", *target, window_start, window_end))
    broken = rec.compare(observation, [target])
    assert broken.missing["index"] == 1
    assert [i for r in broken.rows for i in r.missing_ids.get("index", [])] == [ODD_IDS["epoch 0"]]
    assert window_end - window_start <= timedelta(hours=2)


def _s3fs() -> Any:
    import os

    from pyarrow import fs

    return fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
