"""Commit the consumers' Parquet files to the Iceberg tables `traces` and `segments`.

The one writer of appends (`tasks/committer.py` explains the protocol): deploy it on a short
schedule (every 5 minutes by default, so a consumed trace is in the tables within about that
long) with a concurrency limit of 1. A catalog that cannot be reached fails this run and nothing
else: the consumers keep writing their files, and the next run commits them.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from blocks.config import Config
from flows.observe import emit, flow_failed, summary_artifact
from flows.parameters import CommitParameters, takes
from tasks import catalog, committer
from tasks.aws import log_client
from tasks.errors import is_transient
from tasks.health import run_row, write_health
from tasks.organizations import RunConfig


@task(name="commit-table", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient, cache_policy=NO_CACHE)
def commit_table_task(config: Config, table: str, max_batches: int | None) -> committer.CommitResult:
    tbl = catalog.open_table(config, table)
    s3 = log_client("s3", config.archive.region)
    return committer.commit_table(s3, config.archive, tbl, table, max_batches=max_batches)


def totals(results: list[committer.CommitResult]) -> dict[str, Any]:
    return {
        "committed_files": sum(r.committed_files for r in results),
        "committed_rows": sum(r.committed_rows for r in results),
        "snapshots": sum(r.snapshots for r in results),
        "recovered_batches": sum(r.recovered_batches for r in results),
        "abandoned_batches": sum(r.abandoned_batches for r in results),
        "refused_files": sum(len(r.refused) for r in results),
        "pending_left": sum(r.pending_left for r in results),
    }


@flow(name="commit")  # type: ignore[arg-type]
@takes(CommitParameters)
def commit(params: CommitParameters, run: RunConfig) -> State:
    """Append every pending consumer file to its table (one snapshot per batch of files); settle
    what an interrupted run left; refuse (and set aside) files that are not lake Parquet.
    Failed when the catalog cannot be reached or a commit fails; the files then stay pending."""
    config = run.config
    logger = get_run_logger()
    results: list[committer.CommitResult] = []
    errors: list[str] = []
    for table in params.chosen_tables:
        try:
            results.append(commit_table_task(config, table, params.max_batches))
        except Exception as error:
            errors.append(f"{table}: {error}")
            logger.error("commit %s failed: %s", table, error)
    summary = totals(results)
    refused = [r for result in results for r in result.refused]
    for item in refused:
        emit("xraylake.lake.file-refused", f"s3.{config.archive.bucket}.{item['key']}", {"reason": item["reason"]})
    summary_artifact(
        "xraylake-commit",
        f"commit: {summary['committed_files']} files ({summary['committed_rows']} rows) in "
        f"{summary['snapshots']} snapshots, {summary['refused_files']} refused, {len(errors)} tables failed",
        [r.as_row() for r in results] or [{"table": "(none)"}],
        notes=[f"refused {r['key']}: {r['reason']}" for r in refused] + errors,
    )
    data = {"totals": summary, "tables": [r.as_row() for r in results], "refused": refused, "errors": errors}
    write_health(
        config,
        "commit",
        [run_row(status="failed" if errors else "ok", errors=len(errors), committed_files=summary["committed_files"])],
    )
    if errors:
        flow_failed("commit", "CommitFailed", "; ".join(errors))
        return Failed(message="; ".join(errors), data=data)
    return Completed(
        message=f"{summary['committed_files']} files committed in {summary['snapshots']} snapshots, "
        f"{summary['refused_files']} refused",
        data=data,
    )
