"""Compaction of the Iceberg tables with the table's own operations.

Per partition (account, region, trace hour) of `traces` / `segments`:
1. plan from the current snapshot's data files: a partition with more than one file (or, with
   `rewrite_single_files`, any partition) has work;
2. read the partition at that snapshot, keep one row per document key — (account_id, trace_id)
   or (account_id, trace_id, segment_id) — the one with the latest `collected_at` (ties: highest
   envelope_id), sorted by key;
3. `overwrite(rows, overwrite_filter=<the partition>)`: one atomic commit that drops the
   partition's files and adds the merged ones. pyiceberg validates it against concurrent commits
   (serializable isolation): if the committer appended to that partition meanwhile, the overwrite
   raises instead of dropping the new file, the partition is reported failed and the next run
   compacts it. No row is ever lost, readers see the partition before or after, never both.

Then maintenance: `expire_snapshots` older than the retention (the time-travel window; it only
edits metadata), and orphan removal: objects under the table location that no retained snapshot
or metadata file references, older than a safe delay (a writer may be about to commit them), are
deleted — among them the files that compaction replaced, once their snapshots have expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from blocks import ArchiveStore
from tasks import archive
from tasks.catalog import IDENTIFIER_FIELDS, PARTITION_FIELDS, arrow_schema
from tasks.errors import classify_aws_error

if TYPE_CHECKING:
    from pyiceberg.table import Table as IcebergTable

Table = Literal["traces", "segments"]
TABLES: tuple[Table, ...] = ("traces", "segments")
DEDUP_KEYS = IDENTIFIER_FIELDS
ORDER_COLUMN = "collected_at"
TIEBREAK_COLUMN = "envelope_id"
HOUR = timedelta(hours=1)
COMPACTION_PROPERTY = "xraylake.compaction"
DEFAULT_RETENTION = timedelta(hours=24)
MIN_RETENTION = timedelta(hours=1)  # committer ledgers are settled against retained snapshots
DEFAULT_ORPHAN_DELAY = timedelta(hours=24)
MIN_ORPHAN_DELAY = timedelta(minutes=10)


# ============================================================================ pure


@dataclass(frozen=True, order=True)
class PartitionKey:
    table: str
    account_id: str
    region: str
    dt: str
    hour: str

    @property
    def label(self) -> str:
        return f"{self.table}/{self.account_id}/{self.region}/{self.dt}T{self.hour}"

    def values(self) -> dict[str, str]:
        return {"account_id": self.account_id, "region": self.region, "dt": self.dt, "hour": self.hour}


@dataclass(frozen=True)
class PartitionFiles:
    partition: PartitionKey
    files: int
    rows: int
    bytes: int
    uncompacted: int = 0  # files added by a (retained) committer snapshot

    @property
    def has_work(self) -> bool:
        return self.files > 1 or self.uncompacted > 0


def partition_end(partition: PartitionKey) -> datetime | None:
    """When the partition's hour ends (None for a malformed dt/hour)."""
    try:
        return datetime.strptime(f"{partition.dt}T{partition.hour}", "%Y-%m-%dT%H").replace(tzinfo=UTC) + HOUR
    except ValueError:
        return None


def select_partitions(
    partitions: Iterable[PartitionKey],
    accounts: Sequence[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    settled_before: datetime | None = None,
) -> list[PartitionKey]:
    """Partitions of the given accounts whose dt lies in [start_date, end_date] (inclusive) and,
    with `settled_before`, whose hour ended by then (hot partitions are left to a later run)."""
    wanted = set(accounts or [])
    low = start_date.isoformat() if start_date else None
    high = end_date.isoformat() if end_date else None
    chosen = []
    for p in partitions:
        if wanted and p.account_id not in wanted:
            continue
        if (low is not None and p.dt < low) or (high is not None and p.dt > high):
            continue
        if settled_before is not None:
            ends = partition_end(p)
            if ends is None or ends > settled_before:
                continue
        chosen.append(p)
    return chosen


def dedupe(table: pa.Table, keys: Sequence[str]) -> tuple[pa.Table, int]:
    """One row per key: the latest `collected_at` (ties: highest envelope_id, then input order).

    Key columns absent from the table are skipped. The result is sorted by the key. Returns
    (table, rows removed).
    """
    names = set(table.column_names)
    present = [k for k in keys if k in names]
    if not present:
        raise ValueError(f"none of the key columns {list(keys)} is in the table")
    if table.num_rows == 0:
        return table, 0
    sort_keys: list[tuple[str, str]] = [(k, "ascending") for k in present]
    if ORDER_COLUMN in names:
        sort_keys.append((ORDER_COLUMN, "descending"))
    if TIEBREAK_COLUMN in names:
        sort_keys.append((TIEBREAK_COLUMN, "descending"))
    ordered = table.take(pc.sort_indices(table, sort_keys=sort_keys))  # stable sort
    rows = ordered.num_rows
    if rows == 1:
        return ordered, 0
    first = None
    for key in present:
        column = ordered.column(key).combine_chunks()
        differs = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, rows - 1)), True)
        first = differs if first is None else pc.or_(first, differs)
    assert first is not None
    mask = pa.concat_arrays([pa.array([True]), first])
    kept = ordered.filter(mask)
    return kept, rows - kept.num_rows


def partition_filter(partition: PartitionKey) -> Any:
    """The Iceberg row filter selecting exactly one partition."""
    from pyiceberg.expressions import And, EqualTo

    values = partition.values()
    return And(*(EqualTo(name, values[name]) for name in PARTITION_FIELDS))  # type: ignore[call-arg]


# ============================================================================ I/O


def partition_files(tbl: IcebergTable, table: str, snapshot_id: int | None = None) -> list[PartitionFiles]:
    """Live data files per partition in a snapshot (default: the current one), and how many of
    them a committer snapshot still retained added (rows not yet deduplicated by a compaction)."""
    from tasks.committer import BATCH_PROPERTY

    if tbl.metadata.current_snapshot_id is None and snapshot_id is None:
        return []
    committed = {s.snapshot_id for s in tbl.metadata.snapshots if s.summary is not None and s.summary[BATCH_PROPERTY]}
    entries = tbl.inspect.entries(snapshot_id) if snapshot_id is not None else tbl.inspect.entries()
    counts: dict[PartitionKey, list[int]] = {}
    for entry in entries.select(["status", "snapshot_id", "data_file"]).to_pylist():
        if entry["status"] == 2:  # DELETED in this snapshot
            continue
        data_file = entry["data_file"]
        key = PartitionKey(table, **{name: str(data_file["partition"][name]) for name in PARTITION_FIELDS})
        row = counts.setdefault(key, [0, 0, 0, 0])
        row[0] += 1
        row[1] += data_file["record_count"]
        row[2] += data_file["file_size_in_bytes"]
        row[3] += entry["snapshot_id"] in committed
    return [PartitionFiles(k, *v) for k, v in sorted(counts.items())]


@dataclass
class PartitionResult:
    partition: str
    status: str  # compacted | skipped | failed
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duplicates_removed: int = 0
    error: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "status": self.status,
            "files": f"{self.files_before} → {self.files_after}",
            "rows": f"{self.rows_in} → {self.rows_out}",
            "duplicates_removed": self.duplicates_removed,
            "error": self.error,
        }


def compact_partition(tbl: IcebergTable, planned: PartitionFiles) -> PartitionResult:
    """Rewrite one partition deduplicated, as one atomic overwrite against the planned snapshot."""
    partition = planned.partition
    result = PartitionResult(partition.label, "compacted", files_before=planned.files, bytes_before=planned.bytes)
    row_filter = partition_filter(partition)
    try:
        rows = tbl.scan(row_filter=row_filter).to_arrow()
        result.rows_in = rows.num_rows
        kept, removed = dedupe(rows, DEDUP_KEYS[partition.table])
        kept = kept.cast(arrow_schema(tbl, partition.table))
        tbl.overwrite(kept, overwrite_filter=row_filter, snapshot_properties={COMPACTION_PROPERTY: partition.label})
    except Exception as error:  # a concurrent append to this partition (ValidationException), the catalog, S3
        result.status, result.error = "failed", f"{type(error).__name__}: {error}"
        return result
    result.rows_out, result.duplicates_removed = kept.num_rows, removed
    after = [p for p in partition_files(tbl, partition.table) if p.partition == partition]
    result.files_after = after[0].files if after else 0
    result.bytes_after = after[0].bytes if after else 0
    return result


def plan(
    tbl: IcebergTable,
    table: str,
    accounts: Sequence[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    *,
    rewrite_single_files: bool = False,
    settled_before: datetime | None = None,
) -> list[PartitionFiles]:
    """The partitions of the current snapshot that compaction would rewrite."""
    listed = partition_files(tbl, table)
    chosen = set(select_partitions([p.partition for p in listed], accounts, start_date, end_date, settled_before))
    return [p for p in listed if p.partition in chosen and (p.has_work or rewrite_single_files)]


def expire_snapshots(tbl: IcebergTable, retention: timedelta, now: datetime | None = None) -> int:
    """Expire snapshots older than `retention` (never less than `MIN_RETENTION`); returns how many."""
    cutoff = (now or datetime.now(UTC)) - max(retention, MIN_RETENTION)
    expire = tbl.maintenance.expire_snapshots().older_than(cutoff)
    count = len(expire._snapshot_ids_to_expire)
    if count:
        expire.commit()
    return count


def referenced_keys(tbl: IcebergTable) -> set[str]:
    """Every object the table's metadata references: data files of retained snapshots, manifests,
    manifest lists, and the current and logged metadata files (as s3 URIs)."""
    metadata = tbl.metadata
    keep = {tbl.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    for snapshot in metadata.snapshots:
        keep.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(tbl.io):
            keep.add(manifest.manifest_path)
    files = tbl.inspect.all_files()
    keep.update(files.column("file_path").to_pylist())
    for stats in metadata.statistics:
        keep.add(stats.statistics_path)
    return keep


def remove_orphans(
    s3: Any,
    store: ArchiveStore,
    tbl: IcebergTable,
    delay: timedelta,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Delete objects under the table location that nothing references and that are older than
    `delay` (never less than `MIN_ORPHAN_DELAY`: a writer may be between writing and committing)."""
    location = tbl.metadata.location.rstrip("/")
    bucket, _, prefix = location.removeprefix("s3://").removeprefix("s3a://").partition("/")
    if bucket != store.bucket:
        raise ValueError(f"table location {location} is not in the archive bucket {store.bucket}")
    keep = {uri.removeprefix("s3://").removeprefix("s3a://") for uri in referenced_keys(tbl)}
    cutoff = (now or datetime.now(UTC)) - max(delay, MIN_ORPHAN_DELAY)
    orphans = [
        o["Key"]
        for o in archive.list_keys(s3, bucket, prefix + "/")
        if f"{bucket}/{o['Key']}" not in keep and o["LastModified"] < cutoff
    ]
    if orphans and not dry_run:
        for start in range(0, len(orphans), 1000):
            chunk = orphans[start : start + 1000]
            try:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            except Exception as error:
                raise classify_aws_error(error, f"delete orphans in s3://{bucket}/{prefix}") from error
    return orphans


__all__ = [
    "DEDUP_KEYS",
    "TABLES",
    "PartitionFiles",
    "PartitionKey",
    "PartitionResult",
    "compact_partition",
    "dedupe",
    "expire_snapshots",
    "partition_files",
    "partition_filter",
    "plan",
    "referenced_keys",
    "remove_orphans",
    "select_partitions",
]
