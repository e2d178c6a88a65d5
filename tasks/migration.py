"""Migration of a lake written before the Iceberg tables (Hive-partitioned Parquet + the old
`_compaction-<id>.json` commit markers) into the tables.

The old layout *is* the committer's intake: every `*.parquet` under `parquet/<table>/account_id=…/
region=…/dt=…/hour=…/` (consumer parts, repair parts, old compaction outputs, committed or not) is
committed by `tasks.committer` (partition columns from the path, schema checked, one snapshot per
batch, ledgered), the old markers are deleted, and each partition touched is compacted with the
table's overwrite, which removes the duplicates the old protocol's leftovers hold (an uncommitted
output or a replaced input still present repeats rows; newest `collected_at` wins, so no row comes
back older). Idempotent: a second run finds nothing pending and nothing to compact. Resumable: an
interrupted run leaves pending files and ledgers that the next run (or the commit flow) settles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blocks.config import Config
from tasks import archive, catalog, committer, compaction

OLD_MARKER_PREFIX = "_compaction-"


@dataclass
class MigrationResult:
    table: str
    markers_deleted: int = 0
    commit: committer.CommitResult | None = None
    compacted: list[compaction.PartitionResult] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        commit = self.commit.as_row() if self.commit else {}
        return {
            "table": self.table,
            "markers_deleted": self.markers_deleted,
            "files_committed": commit.get("committed_files", 0),
            "rows_committed": commit.get("committed_rows", 0),
            "files_refused": commit.get("refused_files", 0),
            "partitions_compacted": sum(r.status == "compacted" for r in self.compacted),
            "partitions_failed": sum(r.status == "failed" for r in self.compacted),
            "duplicates_removed": sum(r.duplicates_removed for r in self.compacted),
        }


def old_markers(s3: Any, config: Config, table: str) -> list[str]:
    prefix = f"{config.archive.parquet_prefix}/{table}/"
    return [
        o["Key"]
        for o in archive.list_keys(s3, config.archive.bucket, prefix)
        if o["Key"].rsplit("/", 1)[-1].startswith(OLD_MARKER_PREFIX) and o["Key"].endswith(".json")
    ]


def migrate(s3: Any, config: Config, tables: list[str], *, compact: bool = True) -> list[MigrationResult]:
    """Commit the old layout's files into the tables, delete the old markers, compact."""
    results = []
    for table in tables:
        result = MigrationResult(table)
        tbl = catalog.open_table(config, table)
        result.commit = committer.commit_table(s3, config.archive, tbl, table)
        markers = old_markers(s3, config, table)
        if markers:  # after the commit: the files they governed are in the table now
            committer.delete_keys(s3, config.archive.bucket, markers)
        result.markers_deleted = len(markers)
        if compact:
            result.compacted = [compaction.compact_partition(tbl, p) for p in compaction.plan(tbl, table)]
        results.append(result)
    return results


__all__ = ["MigrationResult", "migrate", "old_markers"]
