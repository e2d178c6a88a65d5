"""Backfill: collect a past range, chunked and resumable.

The reader is chosen per (account, region) as in the sweep (`tasks.span_records`): Transaction Search
accounts are read from `aws/spans` through Logs Insights. Each reader is read back to its own
horizon, known only here (the parameters check only what holds for every account: zoned, not
empty, not in the future, ≤ 10 years): X-Ray keeps traces 30 days; `aws/spans` keeps them for its
retention (DescribeLogGroups `retentionInDays`; none = never expires). Chunks wholly before every
horizon of the account are not read and get no checkpoint (a rerun says the same again); a chunk
that straddles a horizon is read from the horizon on. An account with nothing readable in the
range fails with one clear line (for X-Ray: older traces can only be replayed from the archive) —
a user asked for traces that are gone, so the run must not look successful; an account whose
range is only partly readable is collected where it can be, and the `error` column of the
artifact and the log say how many chunks lay beyond which retention.

Each finished (account, region, chunk) leaves a checkpoint object under
`state/backfill/<backfill_id>/…` ({"traces", "envelopes"}); running the same backfill again (same
accounts, regions, range and chunk size ⇒ same id) skips finished chunks. A backfill never moves
the sweep watermark.

Two ways to run the chunks. In process (default): one thread per (account, region), as many as
the task runner has. Fanned out (`fan_out`): the parent submits one child flow run of the
`backfill-chunk` deployment per group of `chunks_per_run` chunks of one (account, region), with
`run_deployment`; any number of workers on that deployment's work pool share them, the
deployment's concurrency limit bounds how many run at once, and the per-account X-Ray limits
pace each account across all of them. The checkpoints are the contract between parent and
children: a child skips finished chunks whoever finished them, the parent does not submit groups
that are already complete, and its progress and totals are summed from the checkpoints.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import MemberAccount
from flows import children
from flows.observe import run_logger
from flows.parameters import XRAY_RETENTION, BackfillChunkParameters, BackfillParameters, takes
from flows.sweep import finish
from tasks import archive, spans_reader, xray
from tasks import collector as col
from tasks.errors import aws_error_code
from tasks.organizations import RunConfig
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


def chunk_marker(window: Window) -> str:
    return f"{window.start:%Y%m%dT%H%M%S}.done"


def finished_chunks(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, int]]:
    """Checkpoint name → its counts (markers from before the counts hold only the traces)."""
    done: dict[str, dict[str, int]] = {}
    for listed in archive.list_keys(s3, bucket, prefix):
        body = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, int):
            data = {"traces": data}
        counts = data if isinstance(data, dict) else {}
        done[listed["Key"].rsplit("/", 1)[-1]] = {k: int(counts.get(k) or 0) for k in ("traces", "envelopes")}
    return done


def readable(window: Window, horizon: datetime | None) -> Window | None:
    """The part of `window` a store whose oldest data is at `horizon` still holds (None: nothing)."""
    if horizon is None or window.start >= horizon:
        return window
    if window.end <= horizon:
        return None
    return Window(horizon, window.end)


def horizons(
    collector: col.Collector, account_id: str, region: str, reader: str, logs_call: Any, now: datetime
) -> dict[str, tuple[datetime | None, str]]:
    """Per store the reader uses: (the oldest time it holds, None = no limit; how it says so)."""
    out: dict[str, tuple[datetime | None, str]] = {}
    if reader in ("xray", "both"):
        out["xray"] = (now - XRAY_RETENTION, f"X-Ray keeps traces {XRAY_RETENTION.days} days")
    if reader in ("spans", "both"):
        days = spans_reader.spans_retention_days(collector.logs_client(account_id, region), logs_call)
        if days is None:
            out["spans"] = (None, "aws/spans never expires")
        else:
            out["spans"] = (now - timedelta(days=days), f"aws/spans keeps spans {days} days (retentionInDays)")
    return out


def beyond_message(
    limits: dict[str, tuple[datetime | None, str]], beyond: list[Window], total: int, nothing_read: bool
) -> str:
    """One line: which chunks lay before which store's retention."""
    told = "; ".join(
        f"{why}, the oldest it holds is {horizon:%Y-%m-%dT%H:%M}Z" for horizon, why in limits.values() if horizon
    )
    what = (
        f"[{beyond[0].start:%Y-%m-%dT%H:%M}Z, {beyond[-1].end:%Y-%m-%dT%H:%M}Z) lies before the retention of "
        "every store this account is read from"
        if nothing_read
        else f"{len(beyond)} of {total} chunks lie before the retention of every store this account is read from "
        "and were not read"
    )
    hint = "; older traces can only be replayed from the archive (xraylake replay)" if "xray" in limits else ""
    return f"{what} ({told}){hint}"


def collect_chunks(
    collector: col.Collector,
    account: MemberAccount,
    region: str,
    windows: list[Window],
    run_key: str,
    budget: ChunkBudget | None = None,
    on_chunk: Callable[[], None] | None = None,
) -> col.AccountResult:
    """Collect the windows of one (account, region) that have no checkpoint yet, leaving one per
    finished window; never raises for the account's own failures."""
    result = col.AccountResult(account.account_id, account.name, region)
    stats = xray.XRayStats()
    store = collector.config.archive
    prefix = checkpoint_prefix(store.state_prefix, run_key, account.account_id, region)
    xray_call, logs_call = collector.span_callers(account.account_id, region)
    try:
        done = {o["Key"].rsplit("/", 1)[-1] for o in archive.list_keys(collector.s3, store.bucket, prefix)}
        choice = spans_reader.select_reader(collector.xray_client(account.account_id, region), xray_call)
        result.choose(choice)
        limits = horizons(collector, account.account_id, region, choice.reader, logs_call, datetime.now(UTC))
        beyond: list[Window] = []
        pending = 0
        for window in windows:
            marker = chunk_marker(window)
            if marker in done:
                if budget is not None:
                    budget.count(skipped=1)
                continue
            pending += 1
            parts = {store: readable(window, horizon) for store, (horizon, _) in limits.items()}
            if all(part is None for part in parts.values()):
                beyond.append(window)  # no store holds it any more: no checkpoint, a rerun says so again
                if budget is not None:
                    budget.count(skipped=1)
                continue
            if budget is not None and not budget.take():
                result.status = "partial"
                break
            window_result = col.WindowResult(window=window.as_dict())
            sent_by_xray: set[str] = set()
            xray_part, spans_part = parts.get("xray"), parts.get("spans")
            if xray_part is not None:
                window_result = col.collect_window(
                    collector, account, region, xray_part, source="backfill", stats=stats
                )
                result.add_window(window_result)
                sent_by_xray = {col.w3c_trace_id(t) for t in window_result.trace_ids}
            if spans_part is not None:
                spans_result = col.collect_spans_range(
                    collector, account, region, spans_part,
                    source="backfill", logs_call=logs_call, sent_by_xray=sent_by_xray,
                )  # fmt: skip
                if xray_part is not None:
                    result.windows -= 1  # one chunk, two readers
                result.add_window(spans_result)
                window_result.traces += spans_result.traces
                window_result.envelopes += spans_result.envelopes
            counts = {"traces": window_result.traces, "envelopes": window_result.envelopes}
            collector.s3.put_object(Bucket=store.bucket, Key=prefix + marker, Body=orjson.dumps(counts))
            if budget is not None:
                budget.count(finished=1)
            if on_chunk is not None:
                on_chunk()
        if beyond:
            nothing_read = len(beyond) == pending
            result.error = beyond_message(limits, beyond, pending, nothing_read)
            if nothing_read:
                result.status = "failed"
                result.error_kind = "BeyondRetention"
    except Exception as error:
        result.status = "failed"
        result.error = f"{aws_error_code(error) or type(error).__name__}: {error}"[:500]
        result.error_kind = type(error).__name__
    result.count_calls(stats)
    result.count_span_calls(logs_call.stats)
    logger = run_logger()
    if result.status == "failed":
        logger.error("account %s (%s) region %s failed: %s", account.account_id, account.name, region, result.error)
    else:
        logger.info(
            "account %s (%s) region %s: %d chunks collected, %d traces in %d envelopes (%s)",
            account.account_id, account.name, region, result.windows, result.traces, result.envelopes, result.status,
        )  # fmt: skip
        if result.error:
            logger.warning("account %s (%s) region %s: %s", account.account_id, account.name, region, result.error)
    return result


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
    def progress() -> None:
        if progress_id is not None:
            update_progress_artifact(progress_id, progress=100.0 * budget.count() / max(1, total_chunks))

    return collect_chunks(collector, account, region, windows, run_key, budget, progress)


@flow(name="backfill-chunk")  # type: ignore[arg-type]
@takes(BackfillChunkParameters)
def backfill_chunk(params: BackfillChunkParameters, run: RunConfig) -> State:
    """One group of a fanned-out backfill (the parent submits it): consecutive chunks of one
    account and region, each skipped when its checkpoint exists."""
    config = run.config
    account = config.roster.get(params.account_id)
    windows = plan_windows(params.start, params.end, timedelta(minutes=params.chunk_minutes))
    collector = col.Collector.from_config(config)
    run_logger().info(
        "backfill %s: %d chunks of %s/%s from %s",
        params.backfill_id, len(windows), params.account_id, params.region, params.start.isoformat(),
    )  # fmt: skip
    result = collect_chunks(collector, account, params.region, windows, params.backfill_id)
    return finish("backfill-chunk", [result], True, {"backfill_id": params.backfill_id})


@dataclass(frozen=True)
class ChunkGroup:
    """What one child flow run collects."""

    account: MemberAccount
    region: str
    windows: list[Window]


def plan_groups(targets: list[tuple[MemberAccount, str]], windows: list[Window], size: int) -> list[ChunkGroup]:
    """Consecutive windows of each (account, region), `size` at a time (the child re-plans the
    same windows from its range: windows sit on a fixed grid)."""
    return [
        ChunkGroup(account, region, windows[i : i + size])
        for account, region in targets
        for i in range(0, len(windows), size)
    ]


def fan_out(
    params: BackfillParameters,
    config_path: str | None,
    collector: col.Collector,
    targets: list[tuple[MemberAccount, str]],
    windows: list[Window],
    run_key: str,
    progress_id: Any,
) -> tuple[list[col.AccountResult], int, int]:
    """Submit the groups without checkpoints to the chunk deployment, wait for every child run,
    and sum the results from the checkpoints. Returns (results, chunks finished, skipped)."""
    logger = run_logger()
    store = collector.config.archive
    total = len(windows) * len(targets)

    def checkpoints() -> dict[tuple[str, str], dict[str, dict[str, int]]]:
        return {
            (a.account_id, r): finished_chunks(
                collector.s3, store.bucket, checkpoint_prefix(store.state_prefix, run_key, a.account_id, r)
            )
            for a, r in targets
        }

    before = checkpoints()
    skipped = sum(len(done) for done in before.values())
    groups = plan_groups(targets, windows, params.chunks_per_run)
    if params.max_chunks is not None:  # whole groups, in order, up to the budget
        budget, kept = params.max_chunks, []
        for group in groups:
            missing = [
                w for w in group.windows if chunk_marker(w) not in before[(group.account.account_id, group.region)]
            ]
            if missing and budget > 0:
                kept.append(group)
                budget -= len(missing)
        groups = kept
    runs: dict[UUID, ChunkGroup] = {}
    for group in groups:
        done = before[(group.account.account_id, group.region)]
        if all(chunk_marker(w) in done for w in group.windows):
            continue
        parameters: dict[str, Any] = {
            "backfill_id": run_key,
            "account_id": group.account.account_id,
            "region": group.region,
            "start": group.windows[0].start.isoformat(),
            "end": group.windows[-1].end.isoformat(),
            "chunk_minutes": params.chunk_minutes,
            **children.config_parameters(config_path),
        }
        tags = ["xraylake", "backfill", f"backfill-{run_key}"]
        runs[children.submit(params.chunk_deployment, parameters, tags)] = group
    logger.info("backfill %s: %d child runs submitted to %s", run_key, len(runs), params.chunk_deployment)

    def progress() -> None:
        if progress_id is not None:
            finished = sum(len(done) for done in checkpoints().values())
            update_progress_artifact(progress_id, progress=100.0 * finished / max(1, total))

    states = children.wait_for(runs, progress)
    after = checkpoints()
    results: dict[tuple[str, str], col.AccountResult] = {}
    for account, region in targets:
        result = col.AccountResult(account.account_id, account.name, region)
        fresh = {
            k: v
            for k, v in after[(account.account_id, region)].items()
            if k not in before[(account.account_id, region)]
        }
        result.windows = len(fresh)
        result.traces = sum(c["traces"] for c in fresh.values())
        result.envelopes = sum(c["envelopes"] for c in fresh.values())
        if len(after[(account.account_id, region)]) < len(windows):
            result.status = "partial"
        results[(account.account_id, region)] = result
    for run_id, group in runs.items():
        state = states[run_id]
        if not state.is_completed():
            result = results[(group.account.account_id, group.region)]
            result.status = "failed"
            result.error = f"child run {run_id} {state.name}: {state.message or ''}"[:500]
            result.error_kind = "ChildRunFailed"
    finished = sum(len(done) for done in after.values()) - skipped
    return list(results.values()), finished, skipped


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
@takes(BackfillParameters)
def backfill(params: BackfillParameters, run: RunConfig) -> State:
    """Collect [start, end) for the accounts; `max_chunks` bounds one run (the next run resumes).

    An account whose chunks this run's `max_chunks` did not reach ends with status `partial`."""
    start, end = params.start, params.end  # checked and made UTC by BackfillParameters
    config = run.config
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
    if params.fan_out:
        results, finished, skipped = fan_out(params, run.source, collector, targets, windows, run_key, progress_id)
    else:
        futures = [
            backfill_account_task.with_options(task_run_name=f"backfill-{account.account_id}-{region}").submit(
                collector, account, region, windows, run_key, budget, progress_id, total
            )
            for account, region in targets
        ]
        results = [f.result() for f in futures]
        finished, skipped = budget.finished, budget.skipped
    extra = {
        "backfill_id": run_key,
        "chunks": total,
        "chunks_finished": finished,
        "chunks_skipped": skipped,
        "complete": finished + skipped == total,
        "fan_out": params.fan_out,
    }
    return finish("backfill", results, params.fail_on_account_errors, extra, config=config)
