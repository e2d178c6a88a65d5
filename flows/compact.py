"""Compact the Parquet lake: merge small files per partition and drop duplicate rows.

The commit protocol (write outputs → one atomic marker PUT → delete inputs) is described in
`tasks/compaction.py`; this flow lists and plans once, then executes partitions in parallel tasks.
Only files present in the plan's listing are touched, so the consumer can keep writing. Running
it again with nothing new changes nothing. Deploy it with a concurrency limit of 1.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import ArchiveStore
from blocks.config import load_config
from flows.observe import emit, run_logger, summary_artifact
from flows.parameters import CompactParameters, takes
from tasks import compaction
from tasks.aws import log_client
from tasks.errors import is_transient
from tasks.health import run_row, write_health

MIB = 1024 * 1024
PARTITIONS_PER_TASK = 25


# A whole new plan, seconds later: only for transient errors (throttling, 5xx, the lake changing while listed).
@task(name="compact-plan", retries=2, retry_delay_seconds=5, retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def plan_task(
    store: ArchiveStore,
    tables: list[str],
    accounts: list[str] | None,
    start_date: date | None,
    end_date: date | None,
    target_bytes: int,
    orphan_grace: timedelta,
    rewrite_single_files: bool,
    skip_recent: timedelta,
) -> list[compaction.PartitionPlan]:
    s3 = log_client("s3", store.region)
    return compaction.plan(
        s3,
        store,
        tables,
        accounts,
        start_date,
        end_date,
        target_bytes=target_bytes,
        orphan_grace=orphan_grace,
        rewrite_single_files=rewrite_single_files,
        skip_recent=skip_recent,
    )


@task(name="compact-partitions", timeout_seconds=3600, cache_policy=NO_CACHE)
def execute_task(store: ArchiveStore, plans: list[compaction.PartitionPlan]) -> list[compaction.PartitionResult]:
    s3 = log_client("s3", store.region)
    return [compaction.execute(s3, store, p) for p in plans]


def totals(results: list[compaction.PartitionResult], planned: int) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    compacted = [r for r in results if r.status == "compacted"]
    return {
        "partitions_scanned": planned,
        "partitions_compacted": by_status.get("compacted", 0),
        "partitions_cleaned": by_status.get("cleaned", 0),
        "partitions_failed": by_status.get("failed", 0),
        "files_before": sum(r.files_before for r in compacted),
        "files_after": sum(r.files_after for r in compacted),
        "bytes_before": sum(r.bytes_before for r in compacted),
        "bytes_after": sum(r.bytes_after for r in compacted),
        "rows_in": sum(r.rows_in for r in compacted),
        "rows_out": sum(r.rows_out for r in compacted),
        "duplicates_removed": sum(r.duplicates_removed for r in compacted),
        "objects_deleted": sum(r.deleted for r in results),
    }


@flow(name="compact", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
@takes(CompactParameters)
def compact(params: CompactParameters, config_path: str | None) -> State:
    """Merge each partition's small Parquet files into ~`target_file_mb` files without duplicate rows.

    `accounts`, `start_date`/`end_date` (inclusive, by the `dt` partition) narrow the partitions;
    `skip_recent_hours` leaves partitions whose hour ended less than that long ago (still being
    written; a schedule would use 2); `rewrite_single_files` also rewrites a partition holding a
    single consumer file (duplicates inside one file); `dry_run` only plans.
    Completed unless some partition failed (failures are per partition: the others are still
    compacted; a failed one is left as it was, readers unaffected).
    """
    config = load_config(config_path)
    accounts = params.account_ids(config)  # unknown ids fail here
    store = config.archive
    plans = plan_task(
        store,
        params.chosen_tables,
        accounts,
        params.start_date,
        params.end_date,
        params.target_file_mb * MIB,
        timedelta(minutes=params.orphan_grace_minutes),
        params.rewrite_single_files,
        timedelta(hours=params.skip_recent_hours),
    )
    work = [p for p in plans if p.has_work]
    logger = run_logger()
    logger.info("compact: %d partitions listed, %d with work", len(plans), len(work))
    if params.dry_run:
        rows = [
            {
                "partition": p.partition.label,
                "reason": p.reason,
                "compaction_id": p.compaction_id,
                "inputs": len(p.inputs),
                "input_bytes": p.input_bytes,
                "cleanup": len(p.cleanup),
                "orphans": len(p.orphans),
                "dead_markers": len(p.dead_markers),
            }
            for p in work
        ]
        summary_artifact(
            "xraylake-compact", f"compact (dry run): {len(work)} of {len(plans)} partitions have work", rows
        )
        return Completed(
            message=f"dry run: {len(work)} of {len(plans)} partitions would change",
            data={
                "dry_run": True,
                "totals": {"partitions_scanned": len(plans), "partitions_with_work": len(work)},
                "partitions": rows,
            },
        )
    futures = [
        execute_task.with_options(task_run_name=f"compact-{i // PARTITIONS_PER_TASK}").submit(
            store, work[i : i + PARTITIONS_PER_TASK]
        )
        for i in range(0, len(work), PARTITIONS_PER_TASK)
    ]
    results = [r for f in futures for r in f.result()]
    summary = totals(results, len(plans))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        emit("xraylake.compaction.failed", f"s3.{store.bucket}.{r.partition}", {"error": r.error})
    summary_artifact(
        "xraylake-compact",
        f"compact: {summary['partitions_compacted']} partitions compacted "
        f"({summary['files_before']} → {summary['files_after']} files, "
        f"{summary['duplicates_removed']} duplicate rows removed), {len(failed)} failed",
        [r.as_row() for r in results] or [{"partition": "(none)", "status": "nothing to do"}],
        notes=[f"{r.partition}: {r.error}" for r in failed],
    )
    data = {"dry_run": False, "totals": summary, "partitions": [r.as_row() for r in results]}
    write_health(
        config,
        "compact",
        [
            run_row(
                status="failed" if failed else "ok",
                errors=len(failed),
                partitions_compacted=summary["partitions_compacted"],
                duplicates_removed=summary["duplicates_removed"],
            )
        ],
    )
    if failed:
        return Failed(message=f"{len(failed)} of {len(results)} partitions failed", data=data)
    return Completed(
        message=f"{summary['partitions_compacted']} partitions compacted, "
        f"{summary['duplicates_removed']} duplicates removed, "
        f"{summary['files_before']} → {summary['files_after']} files",
        data=data,
    )
