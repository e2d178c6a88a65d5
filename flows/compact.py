"""Compact the Iceberg tables: a deduplicating overwrite per partition, then table maintenance.

`tasks/compaction.py` explains the operations. Per table: plan from the current snapshot, rewrite
each partition with work as one atomic overwrite (newest `collected_at` wins), expire snapshots
older than the retention, remove unreferenced files older than the orphan delay. Running it again
with nothing new changes nothing. A partition that the committer appended to meanwhile fails its
overwrite validation (no row is lost) and is compacted by the next run. Deploy it with a
concurrency limit of 1.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from blocks.config import Config
from flows.observe import emit, flow_failed, run_logger, summary_artifact
from flows.parameters import CompactParameters, takes
from tasks import catalog, compaction
from tasks.aws import log_client
from tasks.errors import is_transient, is_transient_or_commit_conflict
from tasks.health import run_row, write_health
from tasks.organizations import RunConfig


@task(name="compact-plan", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def plan_task(
    config: Config,
    table: str,
    accounts: list[str] | None,
    start_date: date | None,
    end_date: date | None,
    rewrite_single_files: bool,
    skip_recent: timedelta,
) -> list[compaction.PartitionFiles]:
    tbl = catalog.open_table(config, table)
    settled = datetime.now(UTC) - skip_recent if skip_recent else None
    return compaction.plan(
        tbl, table, accounts, start_date, end_date, rewrite_single_files=rewrite_single_files, settled_before=settled
    )


@task(name="compact-table", timeout_seconds=3600, cache_policy=NO_CACHE)
def compact_task(
    config: Config, table: str, plans: list[compaction.PartitionFiles]
) -> list[compaction.PartitionResult]:
    tbl = catalog.open_table(config, table)
    return [compaction.compact_partition(tbl, p) for p in plans]


# expiring snapshots commits to the table: a consumer's commit in between is worth one more try
@task(
    name="compact-maintenance",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=is_transient_or_commit_conflict,
    cache_policy=NO_CACHE,
)
def maintenance_task(config: Config, table: str, retention: timedelta, orphan_delay: timedelta) -> dict[str, int]:
    tbl = catalog.open_table(config, table)
    expired = compaction.expire_snapshots(tbl, retention)
    orphans = compaction.remove_orphans(log_client("s3", config.archive.region), config.archive, tbl, orphan_delay)
    return {"snapshots_expired": expired, "orphans_removed": len(orphans)}


def totals(results: list[compaction.PartitionResult], planned: int) -> dict[str, Any]:
    compacted = [r for r in results if r.status == "compacted"]
    return {
        "partitions_with_work": planned,
        "partitions_compacted": len(compacted),
        "partitions_failed": sum(r.status == "failed" for r in results),
        "files_before": sum(r.files_before for r in compacted),
        "files_after": sum(r.files_after for r in compacted),
        "bytes_before": sum(r.bytes_before for r in compacted),
        "bytes_after": sum(r.bytes_after for r in compacted),
        "rows_in": sum(r.rows_in for r in compacted),
        "rows_out": sum(r.rows_out for r in compacted),
        "duplicates_removed": sum(r.duplicates_removed for r in compacted),
    }


@flow(name="compact")  # type: ignore[arg-type]
@takes(CompactParameters)
def compact(params: CompactParameters, run: RunConfig) -> State:
    """Rewrite each partition with more than one file (or rows not yet deduplicated) as one file per
    partition without duplicate keys, then expire old snapshots and remove orphan files.

    `accounts`, `start_date`/`end_date` (inclusive, by `dt`) narrow the partitions;
    `skip_recent_hours` leaves partitions whose hour ended less than that long ago; `dry_run` only
    plans. Completed unless a partition or the maintenance failed (the others still ran).
    """
    config = run.config
    accounts = params.account_ids(config)  # unknown ids fail here
    logger = run_logger()
    plans = {
        table: plan_task(
            config,
            table,
            accounts,
            params.start_date,
            params.end_date,
            params.rewrite_single_files,
            timedelta(hours=params.skip_recent_hours),
        )
        for table in params.chosen_tables
    }
    planned = sum(len(p) for p in plans.values())
    logger.info("compact: %d partitions with work", planned)
    if params.dry_run:
        rows = [
            {"partition": p.partition.label, "files": p.files, "rows": p.rows, "bytes": p.bytes}
            for table_plans in plans.values()
            for p in table_plans
        ]
        summary_artifact("xraylake-compact", f"compact (dry run): {planned} partitions have work", rows)
        return Completed(
            message=f"dry run: {planned} partitions would change",
            data={"dry_run": True, "totals": {"partitions_with_work": planned}, "partitions": rows},
        )
    results: list[compaction.PartitionResult] = []
    maintenance: dict[str, dict[str, int]] = {}
    errors: list[str] = []
    for table, table_plans in plans.items():
        if table_plans:
            results += compact_task(config, table, table_plans)
        try:
            maintenance[table] = maintenance_task(
                config,
                table,
                timedelta(hours=params.snapshot_retention_hours),
                timedelta(minutes=params.orphan_delay_minutes),
            )
        except Exception as error:
            errors.append(f"{table} maintenance: {type(error).__name__}: {error}")
    summary = totals(results, planned) | {
        "snapshots_expired": sum(m["snapshots_expired"] for m in maintenance.values()),
        "orphans_removed": sum(m["orphans_removed"] for m in maintenance.values()),
    }
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        emit("xraylake.compaction.failed", f"s3.{config.archive.bucket}.{r.partition}", {"error": r.error})
    summary_artifact(
        "xraylake-compact",
        f"compact: {summary['partitions_compacted']} partitions compacted "
        f"({summary['files_before']} → {summary['files_after']} files, "
        f"{summary['duplicates_removed']} duplicate rows removed), {len(failed)} failed",
        [r.as_row() for r in results] or [{"partition": "(none)", "status": "nothing to do"}],
        notes=[f"{r.partition}: {r.error}" for r in failed] + errors,
    )
    data = {"dry_run": False, "totals": summary, "partitions": [r.as_row() for r in results], "errors": errors}
    write_health(
        config,
        "compact",
        [
            run_row(
                status="failed" if failed or errors else "ok",
                errors=len(failed) + len(errors),
                partitions_compacted=summary["partitions_compacted"],
                duplicates_removed=summary["duplicates_removed"],
            )
        ],
    )
    if errors:  # a failed partition has its own event (above)
        flow_failed("compact", "MaintenanceFailed", "; ".join(errors))
    if failed or errors:
        message = "; ".join([f"{len(failed)} of {len(results)} partitions failed", *errors])
        return Failed(message=" ".join(message.split())[:1000], data=data)
    return Completed(
        message=f"{summary['partitions_compacted']} partitions compacted, "
        f"{summary['duplicates_removed']} duplicates removed, "
        f"{summary['files_before']} → {summary['files_after']} files",
        data=data,
    )
