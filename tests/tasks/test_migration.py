"""`xraylake lake migrate` on a lake written by the code before the Iceberg tables: consumer parts
plus the old compaction protocol's leftovers (an output and its `_compaction-<id>.json` marker
next to the files it replaced) become deduplicated table rows; a second run changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from blocks.config import Config
from sandbox.faults import FaultProxy, FaultRule
from tasks import archive, catalog, committer, compaction, lake
from tasks.migration import migrate, old_markers
from tests.tasks.test_committer import kill_committer_at
from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches, make_trace


def old_lake(config: Config) -> list[dict[str, Any]]:
    """A lake as the code before the tables left it: consumer parts (traces 1 and 2 twice) and, per
    table, an old compaction that crashed after its marker, before deleting its inputs. Returns the
    four traces (two segments each)."""
    account = config.roster.accounts[0].account_id
    traces = [make_trace(account, f"m{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(4)]
    ingest_batches(
        config,
        [[envelope(config, traces[:3])], [envelope(config, traces[1:])]],  # 1 and 2 twice
        commit=False,  # today's code: the consumer's Hive-partitioned files, no table yet
    )
    s3 = boto3.client("s3")
    bucket = config.archive.bucket
    for table in ("traces", "segments"):
        first = next(f for f in committer.list_pending(s3, config.archive, table) if f.name.startswith("part-"))
        folder = first.key.rsplit("/", 1)[0]
        output = f"{folder}/compacted-{'a' * 20}-0000.parquet"
        s3.copy_object(Bucket=bucket, Key=output, CopySource={"Bucket": bucket, "Key": first.key})
        marker = {"compaction_id": "a" * 20, "outputs": [output.rsplit("/", 1)[-1]], "replaces": [first.name]}
        s3.put_object(Bucket=bucket, Key=f"{folder}/_compaction-{'a' * 20}.json", Body=orjson.dumps(marker))
    return traces


def test_migrate_commits_an_old_lake_deduplicated_and_is_idempotent(fresh_config: Config) -> None:
    traces = old_lake(fresh_config)
    s3 = boto3.client("s3")
    bucket = fresh_config.archive.bucket

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


# ----------------------------------------------------------------------------- a migration killed

MIGRATION = (
    "import sys\n"
    "from blocks.config import load_config\n"
    "from tasks.aws import log_client\n"
    "from tasks.migration import migrate\n"
    "config = load_config(sys.argv[1])\n"
    "config.apply_environment()\n"
    "print('migration started', flush=True)\n"
    "migrate(log_client('s3', config.archive.region), config, ['traces', 'segments'])\n"
    "print('migration done', flush=True)\n"
)


@dataclass
class AfterFirst(FaultRule):
    """A rule that lets every request for the first `skip` objects it matches through untouched
    (a metadata file may be written in several requests: a multipart upload)."""

    skip: int = 1
    passed: set[str] = field(default_factory=set)

    def matches(self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bool:
        if not super().matches(method, path, body, headers):
            return False
        key = path.split("?", 1)[0]
        if key in self.passed or len(self.passed) < self.skip:
            self.passed.add(key)
            return False
        return True


def lake_rows(config: Config, table: str) -> tuple[int, int]:
    """(rows, distinct document keys) of a table's current snapshot."""
    rows = catalog.open_table(config, table).scan().to_arrow()
    keys = rows.select(list(compaction.DEDUP_KEYS[table])).to_pylist()
    return len(keys), len({tuple(k.values()) for k in keys})


@pytest.mark.slow  # a migration process (pyiceberg imports) killed on a loaded machine: ~25 s
def test_a_migration_killed_in_its_compaction_is_settled_by_the_next_run(fresh_config: Config, tmp_path: Path) -> None:
    traces = old_lake(fresh_config)
    s3 = boto3.client("s3")
    store = fresh_config.archive
    for table in ("traces", "segments"):  # created before: the held write below is the traces compaction's
        catalog.open_table(fresh_config, table)
    assert fresh_config.aws_endpoint_url

    # killed while the traces table's second metadata write (its compaction's overwrite) is in flight:
    # the first one, its commit, went through
    with FaultProxy(fresh_config.aws_endpoint_url) as proxy:
        held = proxy.add(
            AfterFirst(method="PUT|POST", path=r"/iceberg/traces/metadata/[^/?]*\.metadata\.json", delay_seconds=600)
        )
        output = kill_committer_at(fresh_config, proxy, held, tmp_path, "migration", script=MIGRATION)
    assert "migration started" in output and "migration done" not in output, output

    # what the kill left: traces committed with their duplicates (not compacted), markers deleted;
    # segments not started (pending files, marker); no ledger of a landed commit was lost
    assert lake_rows(fresh_config, "traces") == (3 + 3 + 3, 4)  # two parts and the old output copying one
    assert committer.list_pending(s3, store, "traces") == [] and old_markers(s3, fresh_config, "traces") == []
    assert len(committer.list_pending(s3, store, "segments")) == 3
    assert len(old_markers(s3, fresh_config, "segments")) == 1
    assert lake_rows(fresh_config, "segments") == (0, 0)

    # the next run settles it: the traces partition compacted, the segments committed and compacted
    results = {r.table: r.as_row() for r in migrate(s3, fresh_config, ["traces", "segments"])}
    assert (results["traces"]["files_committed"], results["traces"]["partitions_compacted"]) == (0, 1), results
    assert results["traces"]["duplicates_removed"] == 5
    assert (results["segments"]["files_committed"], results["segments"]["markers_deleted"]) == (3, 1), results
    assert results["segments"]["partitions_failed"] == results["traces"]["partitions_failed"] == 0

    # the tables hold the source exactly: every trace and segment once, nothing left behind
    assert lake_rows(fresh_config, "traces") == (4, 4)
    assert lake_rows(fresh_config, "segments") == (8, 8)
    lake_ids = lake.query(fresh_config, "SELECT trace_id FROM traces")["trace_id"]
    assert sorted(lake_ids) == sorted(t["Id"] for t in traces)
    for table in ("traces", "segments"):
        assert old_markers(s3, fresh_config, table) == []
        assert committer.list_pending(s3, store, table) == []
        assert list(archive.list_keys(s3, store.bucket, committer.ledger_prefix(store, table))) == []
    again = {r.table: r.as_row() for r in migrate(s3, fresh_config, ["traces", "segments"])}
    assert all(v == 0 for row in again.values() for k, v in row.items() if k != "table"), again
