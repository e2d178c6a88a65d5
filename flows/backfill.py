"""Backfill: collect a past range (within X-Ray's 30-day retention), chunked and resumable.

The reader is chosen per (account, region) as in the sweep (`tasks.span_records`): Transaction Search
accounts are read from `aws/spans` through Logs Insights, and only back to the log group's
retention (DescribeLogGroups `retentionInDays`); older chunks are counted as `beyond_retention`.

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
from flows.parameters import BackfillParameters, takes
from flows.sweep import finish
from tasks import archive, spans_reader, xray
from tasks import collector as col
from tasks.errors import aws_error_code
from tasks.windows import Window, plan_windows


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
    xray_call, logs_call = collector.span_callers(account.account_id, region)
    try:
        done = {o["Key"].rsplit("/", 1)[-1] for o in archive.list_keys(collector.s3, store.bucket, prefix)}
        choice = spans_reader.select_reader(collector.xray_client(account.account_id, region), xray_call)
        result.choose(choice)
        horizon: datetime | None = None
        if choice.reader != "xray":
            logs = collector.logs_client(account.account_id, region)
            days = spans_reader.spans_retention_days(logs, logs_call)
            horizon = datetime.now(UTC) - timedelta(days=days) if days is not None else None
        beyond = 0
        for window in windows:
            marker = f"{window.start:%Y%m%dT%H%M%S}.done"
            if marker in done:
                budget.count(skipped=1)
                continue
            if not budget.take():
                result.status = "partial"
                break
            window_result = col.WindowResult(window=window.as_dict())
            sent_by_xray: set[str] = set()
            if choice.reader in ("xray", "both"):
                window_result = col.collect_window(collector, account, region, window, source="backfill", stats=stats)
                result.add_window(window_result)
                sent_by_xray = {col.w3c_trace_id(t) for t in window_result.trace_ids}
            if choice.reader in ("spans", "both"):
                if horizon is not None and window.end <= horizon:
                    beyond += 1  # aws/spans no longer holds it
                else:
                    spans_result = col.collect_spans_range(
                        collector, account, region, window,
                        source="backfill", logs_call=logs_call, sent_by_xray=sent_by_xray,
                    )  # fmt: skip
                    result.add_window(spans_result)
                    window_result.traces += spans_result.traces
            collector.s3.put_object(Bucket=store.bucket, Key=prefix + marker, Body=str(window_result.traces).encode())
            done_count = budget.count(finished=1)
            if progress_id is not None:
                update_progress_artifact(progress_id, progress=100.0 * done_count / max(1, total_chunks))
        if beyond:
            result.error = f"{beyond} chunks older than aws/spans' retention were not read"
    except Exception as error:
        result.status = "failed"
        result.error = f"{aws_error_code(error) or type(error).__name__}: {error}"[:500]
        result.error_kind = type(error).__name__
    result.count_calls(stats)
    result.count_span_calls(logs_call.stats)
    return result


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
@takes(BackfillParameters)
def backfill(params: BackfillParameters, config_path: str | None) -> State:
    """Collect [start, end) for the accounts; `max_chunks` bounds one run (the next run resumes).

    An account whose chunks this run's `max_chunks` did not reach ends with status `partial`."""
    start, end = params.start, params.end  # checked and made UTC by BackfillParameters
    config = load_config(config_path)
    targets = params.targets(config)
    chunk = timedelta(minutes=params.chunk_minutes)
    windows = plan_windows(start, end, chunk)
    run_key = backfill_id([a.account_id for a, _ in targets], sorted({r for _, r in targets}), start, end, chunk)
    collector = col.Collector.from_config(config)
    total = len(windows) * len(targets)
    budget = ChunkBudget(params.max_chunks if params.max_chunks is not None else total)
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
    return finish("backfill", results, params.fail_on_account_errors, extra, config=config)
