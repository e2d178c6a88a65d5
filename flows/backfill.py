"""Backfill: collect a past range (within X-Ray's 30-day retention), chunked and resumable.

Each finished (account, region, chunk) leaves a checkpoint object under
`state/backfill/<backfill_id>/…`; running the same backfill again (same accounts, regions, range
and chunk size ⇒ same id) skips finished chunks. A backfill never moves the sweep watermark.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import MemberAccount
from blocks.config import load_config
from flows.sweep import finish, select_targets
from tasks import archive, xray
from tasks import collector as col
from tasks.errors import aws_error_code
from tasks.windows import Window, plan_windows

XRAY_RETENTION = timedelta(days=30)


def validate_range(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a time zone (e.g. 2026-11-20T00:00:00Z)")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    oldest = now - XRAY_RETENTION
    if start < oldest:
        raise ValueError(
            f"start {start.isoformat()} is older than X-Ray's 30-day retention (oldest: {oldest.isoformat()}); "
            "older traces can only be replayed from the archive (`xraylake replay`)"
        )
    if end > now:
        raise ValueError(f"end {end.isoformat()} is in the future")
    return start, end


def backfill_id(accounts: list[str], regions: list[str], start: datetime, end: datetime, chunk: timedelta) -> str:
    key = "|".join(
        [
            ",".join(sorted(accounts)),
            ",".join(sorted(regions)),
            start.isoformat(),
            end.isoformat(),
            str(int(chunk.total_seconds())),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ChunkBudget:
    """How many chunks this run may still collect (shared by the account tasks' threads)."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self.remaining = limit
        self.finished = 0
        self.skipped = 0

    def take(self) -> bool:
        with self._lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True

    def count(self, finished: int = 0, skipped: int = 0) -> int:
        with self._lock:
            self.finished += finished
            self.skipped += skipped
            return self.finished + self.skipped


def checkpoint_prefix(state_prefix: str, run_key: str, account_id: str, region: str) -> str:
    return f"{state_prefix}/backfill/{run_key}/account_id={account_id}/region={region}/"


@task(name="backfill-account", cache_policy=NO_CACHE)  # I/O timeouts: botocore (tasks/aws.py)
def backfill_account_task(
    collector: col.Collector,
    account: MemberAccount,
    region: str,
    windows: list[Window],
    run_key: str,
    budget: ChunkBudget,
    progress_id: Any,
    total_chunks: int,
) -> col.AccountResult:
    result = col.AccountResult(account.account_id, account.name, region)
    stats = xray.XRayStats()
    store = collector.config.archive
    prefix = checkpoint_prefix(store.state_prefix, run_key, account.account_id, region)
    try:
        done = {o["Key"].rsplit("/", 1)[-1] for o in archive.list_keys(collector.s3, store.bucket, prefix)}
        for window in windows:
            marker = f"{window.start:%Y%m%dT%H%M%S}.done"
            if marker in done:
                budget.count(skipped=1)
                continue
            if not budget.take():
                result.status = "partial"
                break
            window_result = col.collect_window(collector, account, region, window, source="backfill", stats=stats)
            result.add_window(window_result)
            collector.s3.put_object(Bucket=store.bucket, Key=prefix + marker, Body=str(window_result.traces).encode())
            done_count = budget.count(finished=1)
            if progress_id is not None:
                update_progress_artifact(progress_id, progress=100.0 * done_count / max(1, total_chunks))
    except Exception as error:
        result.status = "failed"
        result.error = f"{aws_error_code(error) or type(error).__name__}: {error}"[:500]
        result.error_kind = type(error).__name__
    result.throttles = int(stats.throttles)
    result.retries = int(stats.retries)
    return result


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def backfill(
    start: datetime,
    end: datetime,
    accounts: list[str] | None = None,
    regions: list[str] | None = None,
    chunk_minutes: int = 60,
    max_chunks: int | None = None,
    fail_on_account_errors: bool = True,
    config_path: str | None = None,
) -> State:
    """Collect [start, end) for the accounts; `max_chunks` bounds one run (the next run resumes).

    Args:
        start: Trace time from (UTC), at most 30 days back (X-Ray's retention).
        end: Trace time until (exclusive), not in the future.
        accounts: Roster account ids (12 digits); empty = every roster account.
        regions: Regions; empty = each account's enabled regions.
        chunk_minutes: Window per chunk and checkpoint, 1-60 minutes.
        max_chunks: Collect at most this many chunks in this run; the same backfill again resumes.
        fail_on_account_errors: End the run Failed when an account failed (the others still finish).
        config_path: Config file; default $XRAYLAKE_CONFIG or the running sandbox.
    """
    if not 1 <= chunk_minutes <= 60:
        raise ValueError("chunk_minutes must be between 1 and 60 (X-Ray windows stay ≤ 1 h)")
    start, end = validate_range(start, end, datetime.now(UTC))
    config = load_config(config_path)
    targets = select_targets(config, accounts, regions)
    chunk = timedelta(minutes=chunk_minutes)
    windows = plan_windows(start, end, chunk)
    run_key = backfill_id([a.account_id for a, _ in targets], sorted({r for _, r in targets}), start, end, chunk)
    collector = col.Collector.from_config(config)
    total = len(windows) * len(targets)
    budget = ChunkBudget(max_chunks if max_chunks is not None else total)
    progress_id = None
    try:
        progress_id = create_progress_artifact(
            progress=0.0, key="xraylake-backfill-progress", description=f"backfill {run_key}: {total} chunks"
        )
    except Exception:  # observability only
        progress_id = None
    futures = [
        backfill_account_task.with_options(task_run_name=f"backfill-{account.account_id}-{region}").submit(
            collector, account, region, windows, run_key, budget, progress_id, total
        )
        for account, region in targets
    ]
    results = [f.result() for f in futures]
    extra = {
        "backfill_id": run_key,
        "chunks": total,
        "chunks_finished": budget.finished,
        "chunks_skipped": budget.skipped,
        "complete": budget.finished + budget.skipped == total,
    }
    return finish("backfill", results, fail_on_account_errors, extra, config=config)
