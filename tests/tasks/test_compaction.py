"""Compaction of the Iceberg tables: row logic pure, table operations on the moto S3 server with
the SQL catalog (a deduplicating overwrite per partition, concurrent-append safety, snapshot
expiry, orphan removal)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import boto3
import pyarrow as pa
import pytest

from blocks.config import Config
from tasks import catalog, committer
from tasks import compaction as c
from tests.tasks.test_committer import consumer_file, segment_rows

PARTITION = c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-20", "10")


def test_partition_filter_selects_exactly_one_partition() -> None:
    text = repr(c.partition_filter(PARTITION))
    for value in ("012345678901", "us-east-1", "2026-11-20", "'10'"):
        assert value in text
    assert PARTITION.label == "segments/012345678901/us-east-1/2026-11-20T10"


def test_select_partitions_by_account_and_inclusive_dates() -> None:
    keys = [
        c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-19", "23"),
        c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-20", "00"),
        c.PartitionKey("segments", "112345678901", "us-east-1", "2026-11-20", "00"),
        c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-21", "00"),
    ]
    chosen = c.select_partitions(keys, ["012345678901"], date(2026, 11, 20), date(2026, 11, 20))
    assert chosen == [keys[1]]
    assert c.select_partitions(keys) == keys
    # hot partitions (hour not yet ended by the cut-off) wait for a later run
    settled = c.select_partitions(keys, settled_before=datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    assert settled == keys[:3]


# ----------------------------------------------------------------------------- rows


def _segments(rows: list[tuple[str, str, int, str]]) -> pa.Table:
    return pa.table(
        {
            "trace_id": [r[0] for r in rows],
            "segment_id": [r[1] for r in rows],
            "collected_at": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
            "envelope_id": [r[3] for r in rows],
        }
    )


def test_dedupe_keeps_the_latest_collected_at_per_key_sorted_by_key() -> None:
    table = _segments(
        [
            ("t2", "s1", 5, "e1"),
            ("t1", "s1", 1, "e1"),
            ("t1", "s1", 3, "e2"),  # latest of (t1, s1)
            ("t1", "s2", 1, "e1"),
            ("t2", "s1", 9, "e3"),  # latest of (t2, s1)
            ("t1", "s1", 2, "e3"),
        ]
    )
    out, removed = c.dedupe(table, c.DEDUP_KEYS["segments"])
    assert removed == 3
    assert out.select(["trace_id", "segment_id", "envelope_id"]).to_pylist() == [
        {"trace_id": "t1", "segment_id": "s1", "envelope_id": "e2"},
        {"trace_id": "t1", "segment_id": "s2", "envelope_id": "e1"},
        {"trace_id": "t2", "segment_id": "s1", "envelope_id": "e3"},
    ]


def test_dedupe_traces_key_skips_the_partition_column_and_breaks_ties_deterministically() -> None:
    table = pa.table(
        {
            "trace_id": ["t1", "t1", "t2"],
            "collected_at": pa.array([7, 7, 1], pa.timestamp("us", tz="UTC")),
            "envelope_id": ["e1", "e9", "e1"],
        }
    )
    out, removed = c.dedupe(table, c.DEDUP_KEYS["traces"])  # account_id lives in the path
    assert removed == 1
    assert out.column("envelope_id").to_pylist() == ["e9", "e1"]
    empty, none = c.dedupe(table.slice(0, 0), c.DEDUP_KEYS["traces"])
    assert (empty.num_rows, none) == (0, 0)
    with pytest.raises(ValueError, match="key columns"):
        c.dedupe(pa.table({"x": [1]}), c.DEDUP_KEYS["segments"])


# ----------------------------------------------------------------------------- table operations


def _committed(config: Config, batches: list[pa.Table]) -> tuple[object, committer.CommitResult]:
    s3 = boto3.client("s3")
    for number, rows in enumerate(batches):
        consumer_file(s3, config, rows, f"b{number}")
    tbl = catalog.open_table(config, "segments")
    return tbl, committer.commit_table(s3, config.archive, tbl, "segments", max_files=1)  # one snapshot per file


def test_overwrite_deduplicates_a_partition_atomically_and_expiry_and_orphans_clean_up(fresh_config: Config) -> None:
    account = fresh_config.roster.accounts[0].account_id
    old = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    first = segment_rows(account, range(0, 6), old)
    again = segment_rows(account, range(3, 9), old + timedelta(minutes=5))  # segments 3-5 collected again
    tbl, _ = _committed(fresh_config, [first, again])
    [planned] = c.plan(tbl, "segments")  # type: ignore[arg-type]
    assert (planned.files, planned.rows, planned.uncompacted) == (2, 12, 2)
    before = tbl.metadata.current_snapshot_id  # type: ignore[attr-defined]

    result = c.compact_partition(tbl, planned)  # type: ignore[arg-type]
    assert (result.status, result.rows_in, result.rows_out, result.duplicates_removed) == ("compacted", 12, 9, 3)
    assert (result.files_before, result.files_after) == (2, 1)
    rows = tbl.scan().to_arrow().sort_by("segment_id")  # type: ignore[attr-defined]
    assert rows.column("segment_id").to_pylist() == [f"s{i:02d}" for i in range(9)]
    newest = old + timedelta(minutes=5)
    assert [r["collected_at"] == newest for r in rows.select(["collected_at"]).to_pylist()] == [False] * 3 + [True] * 6
    assert tbl.scan(snapshot_id=before).to_arrow().num_rows == 12  # type: ignore[attr-defined]  # time travel
    assert c.plan(tbl, "segments") == []  # type: ignore[arg-type]  # idempotent: nothing left to do

    s3 = boto3.client("s3")
    later = datetime.now(UTC) + timedelta(days=2)
    assert c.remove_orphans(s3, fresh_config.archive, tbl, timedelta(hours=24)) == []  # type: ignore[arg-type]
    assert c.expire_snapshots(tbl, timedelta(hours=24), now=later) >= 2  # type: ignore[arg-type]
    removed = c.remove_orphans(s3, fresh_config.archive, tbl, timedelta(hours=24), now=later)  # type: ignore[arg-type]
    assert sum(k.endswith(".parquet") for k in removed) == 2  # the two committed files compaction replaced
    assert tbl.scan().to_arrow().num_rows == 9  # type: ignore[attr-defined]
    assert c.remove_orphans(s3, fresh_config.archive, tbl, timedelta(hours=24), now=later) == []  # type: ignore[arg-type]


def test_an_append_during_compaction_fails_the_partition_and_loses_no_row(fresh_config: Config) -> None:
    account = fresh_config.roster.accounts[0].account_id
    at = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    tbl, _ = _committed(fresh_config, [segment_rows(account, range(0, 4), at), segment_rows(account, range(2, 6), at)])
    [planned] = c.plan(tbl, "segments")  # type: ignore[arg-type]
    # the committer (another process, its own table object) appends to the partition meanwhile
    s3 = boto3.client("s3")
    consumer_file(s3, fresh_config, segment_rows(account, range(10, 12), at), "late")
    other = catalog.open_table(fresh_config, "segments")
    assert committer.commit_table(s3, fresh_config.archive, other, "segments").committed_files == 1
    result = c.compact_partition(tbl, planned)  # type: ignore[arg-type]  # planned before the append
    assert result.status == "failed"
    assert "ValidationException" in (result.error or "") or "CommitFailed" in (result.error or ""), result.error
    other.refresh()
    assert other.scan().to_arrow().num_rows == 10  # nothing dropped
    [again] = c.plan(other, "segments")  # the next run compacts it
    assert c.compact_partition(other, again).rows_out == 8
