"""`xraylake lake migrate` on a lake written by the code before the Iceberg tables: consumer parts
plus the old compaction protocol's leftovers (an output and its `_compaction-<id>.json` marker
next to the files it replaced) become deduplicated table rows; a second run changes nothing."""

from __future__ import annotations

from datetime import timedelta

import boto3
import orjson

from blocks.config import Config
from tasks import archive, catalog, committer, lake
from tasks.migration import migrate, old_markers
from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches, make_trace


def test_migrate_commits_an_old_lake_deduplicated_and_is_idempotent(fresh_config: Config) -> None:
    account = fresh_config.roster.accounts[0].account_id
    traces = [make_trace(account, f"m{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(4)]
    ingest_batches(
        fresh_config,
        [[envelope(fresh_config, traces[:3])], [envelope(fresh_config, traces[1:])]],  # 1 and 2 twice
        commit=False,  # today's code: the consumer's Hive-partitioned files, no table yet
    )
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket
    for table in ("traces", "segments"):  # an old compaction that crashed after its marker, before deleting inputs
        first = next(f for f in committer.list_pending(s3, fresh_config.archive, table) if f.name.startswith("part-"))
        folder = first.key.rsplit("/", 1)[0]
        output = f"{folder}/compacted-{'a' * 20}-0000.parquet"
        s3.copy_object(Bucket=bucket, Key=output, CopySource={"Bucket": bucket, "Key": first.key})
        marker = {"compaction_id": "a" * 20, "outputs": [output.rsplit("/", 1)[-1]], "replaces": [first.name]}
        s3.put_object(Bucket=bucket, Key=f"{folder}/_compaction-{'a' * 20}.json", Body=orjson.dumps(marker))

    results = {r.table: r.as_row() for r in migrate(s3, fresh_config, ["traces", "segments"])}
    assert results["segments"]["files_committed"] == 3 and results["traces"]["files_committed"] == 3
    assert results["segments"]["markers_deleted"] == 1
    assert results["segments"]["partitions_compacted"] == 1
    assert results["segments"]["duplicates_removed"] == 2 * 2 + 3 * 2  # traces 1, 2 twice; the output copies a part
    rows = lake.query(fresh_config, "SELECT trace_id, segment_id, count(*) AS n FROM segments GROUP BY ALL")
    assert len(rows) == 8 and set(rows["n"]) == {1}
    assert sorted(lake.query(fresh_config, "SELECT trace_id FROM traces")["trace_id"]) == sorted(
        t["Id"] for t in traces
    )
    assert old_markers(s3, fresh_config, "segments") == []
    assert [o["Key"] for o in archive.list_keys(s3, bucket, "parquet/segments/")] == []

    again = {r.table: r.as_row() for r in migrate(s3, fresh_config, ["traces", "segments"])}
    assert all(v == 0 for row in again.values() for k, v in row.items() if k != "table"), again
    assert catalog.open_table(fresh_config, "segments").scan().to_arrow().num_rows == 8
