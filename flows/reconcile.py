"""Reconcile X-Ray vs the raw archive vs Parquet vs the index; optionally repair and check again.

Per account, region and hour: how many trace ids each sink holds and which ids each one misses
(`tasks/reconcile.py` explains the rules). A mismatch emits `xraylake.reconcile.mismatch` per
(account, region). With `repair=True`, ids the raw archive lacks are re-collected through the
org queue — from X-Ray (within retention), or for an account read from Transaction Search from
`aws/spans` (span envelopes) — ids Parquet or the index lack are re-processed from
the raw envelope, the queue is drained (`consume_after_repair`), and the window is reconciled
again: the returned report is the one after repair, with the first pass in `before`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import MemberAccount
from blocks.config import Config
from flows.observe import emit, run_logger, summary_artifact
from flows.parameters import ReconcileParameters, takes
from tasks import collector as col
from tasks import reconcile as rec
from tasks import xray
from tasks.aws import log_client
from tasks.health import run_row, write_health
from tasks.index import client_for
from tasks.mappings import SPAN_INDEX_PREFIX, traces_alias
from tasks.organizations import RunConfig

# ----------------------------------------------------------------------------- observing (tasks)

PerTarget = dict[rec.Target, tuple[Any, str | None]]
TARGET_THREADS = 8


def _each(
    targets: list[tuple[MemberAccount, str]], read: Callable[[MemberAccount, str], Any], threads: int = TARGET_THREADS
) -> PerTarget:
    """`read` for every (account, region) in threads; an error is recorded, never raised."""

    def one(pair: tuple[MemberAccount, str]) -> tuple[Any, str | None]:
        try:
            return read(*pair), None
        except Exception as error:  # per account: one denied role never stops the others
            return None, f"{type(error).__name__}: {error}"[:300]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, targets))
    return {(a.account_id, r): result for (a, r), result in zip(targets, results, strict=True)}


@task(name="reconcile-xray", cache_policy=NO_CACHE)
def xray_task(
    collector: col.Collector,
    targets: list[tuple[MemberAccount, str]],
    start: datetime,
    end: datetime,
    hours: set[datetime],
    time_range_type: xray.TimeRangeType,
) -> PerTarget:
    return _each(targets, lambda a, r: rec.observe_xray(collector, a, r, start, end, hours, time_range_type))


@task(name="reconcile-raw", cache_policy=NO_CACHE)
def raw_task(config: Config, targets: list[tuple[MemberAccount, str]], start: datetime, end: datetime) -> PerTarget:
    s3 = log_client("s3", config.archive.region)
    return _each(targets, lambda a, r: rec.observe_raw(config, s3, a.account_id, r, start, end))


@task(name="reconcile-index", cache_policy=NO_CACHE)
def index_task(config: Config, targets: list[tuple[MemberAccount, str]], start: datetime, end: datetime) -> PerTarget:
    client = client_for(config.opensearch)
    target = config.opensearch
    if target.index_profile == "trace-analytics":  # no traces index: the spans stand for the index
        rec.refresh(client, SPAN_INDEX_PREFIX)
        return _each(
            targets,
            lambda a, r: rec.observe_span_index(client, a, r, start, end, target.span_generation),
            threads=1,
        )
    alias = traces_alias(target.index_prefix)
    rec.refresh(client, alias)
    # One thread: the client's connection pool holds one connection (searches are quick anyway).
    return _each(targets, lambda a, r: rec.observe_index(client, alias, a.account_id, r, start, end), threads=1)


@task(name="reconcile-parquet", cache_policy=NO_CACHE)
def parquet_task(config: Config, targets: list[tuple[MemberAccount, str]], start: datetime, end: datetime) -> PerTarget:
    """One scan of the traces table for every target (partition-pruned by account and date)."""
    pairs = [(a.account_id, r) for a, r in targets]
    try:
        s3 = log_client("s3", config.archive.region)
        found = rec.observe_parquet(
            config, s3, sorted({a for a, _ in pairs}), sorted({r for _, r in pairs}), start, end
        )
    except Exception as error:
        message = f"{type(error).__name__}: {error}"[:300]
        return {p: (None, message) for p in pairs}
    return {p: (found.get(p, {}), None) for p in pairs}


def observe(
    config: Config,
    collector: col.Collector,
    targets: list[tuple[MemberAccount, str]],
    start: datetime,
    end: datetime,
    now: datetime,
    time_range_type: xray.TimeRangeType,
) -> rec.Observation:
    """Read the four sinks concurrently (one task each) into one Observation."""
    observation = rec.Observation(start=start, end=end)
    observation.xray_hours = rec.xray_checkable(rec.hours_of(start, end), now)
    futures = {
        "raw": raw_task.submit(config, targets, start, end),
        "parquet": parquet_task.submit(config, targets, start, end),
        "index": index_task.submit(config, targets, start, end),
    }
    if observation.xray_hours:
        futures["xray"] = xray_task.submit(collector, targets, start, end, observation.xray_hours, time_range_type)
    for sink, future in futures.items():
        for target, (found, error) in future.result().items():
            if error:
                observation.errors[(sink, *target)] = error
            else:
                observation.record(sink, target, found)
    return observation


# ----------------------------------------------------------------------------- repairing


@task(name="reconcile-repair", cache_policy=NO_CACHE, timeout_seconds=3600)
def repair_task(config: Config, collector: col.Collector, plan: rec.RepairPlan) -> rec.RepairSummary:
    summary = rec.RepairSummary(unrepairable=dict(plan.unrepairable))
    repairer = rec.Repairer(config, collector.s3, collector.sqs)
    for raw_key, wanted in sorted(plan.reprocess.items()):
        try:
            repairer.reprocess(raw_key, wanted, summary)
        except Exception as error:
            summary.errors.append(f"reprocess {raw_key}: {type(error).__name__}: {error}"[:300])
    for (account_id, region), ids in sorted(plan.recollect.items()):
        try:
            rec.recollect(collector, account_id, region, ids, summary)
        except Exception as error:
            summary.errors.append(f"recollect {account_id}/{region}: {type(error).__name__}: {error}"[:300])
    for (account_id, region), ids in sorted(plan.recollect_spans.items()):
        try:
            rec.recollect_spans(collector, account_id, region, ids, summary)
        except Exception as error:
            message = f"recollect from aws/spans {account_id}/{region}: {type(error).__name__}: {error}"
            summary.errors.append(message[:300])
    return summary


def drain_queue(config: Config) -> dict[str, Any]:
    from flows.consume import run_consumer

    stats = run_consumer(config, until_empty=True, wait_seconds=1)
    return {k: v for k, v in stats.as_dict().items() if not isinstance(v, (dict, list))}


# ----------------------------------------------------------------------------- the flow


def emit_mismatches(report: rec.ReconcileReport, *, after_repair: bool, repair: bool) -> int:
    per_target: dict[rec.Target, dict[str, int]] = {}
    for row in report.rows:
        if row.mismatches or row.errors:
            counts = per_target.setdefault((row.account_id, row.region), {s: 0 for s in rec.SINKS} | {"errors": 0})
            for sink, n in row.missing.items():
                counts[sink] += n
            counts["errors"] += len(row.errors)
    for (account_id, region), counts in per_target.items():
        emit(
            "xraylake.reconcile.mismatch",
            f"aws.account.{account_id}",
            {
                "region": region,
                "start": report.start.isoformat(),
                "end": report.end.isoformat(),
                "missing": counts,
                "repair": repair,
                "after_repair": after_repair,
            },
            **{"xraylake.region": region},
        )
    return len(per_target)


@flow(name="reconcile", task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
@takes(ReconcileParameters)
def reconcile(params: ReconcileParameters, run: RunConfig) -> State:
    """Compare trace ids per account/region/hour across X-Ray, raw archive, Parquet and index.

    Without `start`/`end`: the last `lookback_hours` whole hours that ended `settle_minutes` ago.
    The state's data is the `ReconcileReport` (as JSON); `ok` is False on any mismatch or error.
    """
    now = datetime.now(UTC)
    start, end = params.window(now)
    config = run.config
    targets = params.targets(config)  # unknown accounts/regions fail here
    collector = col.Collector.from_config(config)
    pairs = [(a.account_id, r) for a, r in targets]
    logger = run_logger()

    observation = observe(config, collector, targets, start, end, now, params.time_range_type)
    report = rec.compare(observation, pairs, params.max_ids, now)
    logger.info("reconcile %s → %s: %s", start.isoformat(), end.isoformat(), report.message())
    if not report.ok:
        emit_mismatches(report, after_repair=False, repair=params.repair)

    if params.repair and not report.ok:
        plan = rec.plan_repair(observation, pairs)
        summary = repair_task(config, collector, plan)
        if summary.envelopes_sent and params.consume_after_repair:
            summary.consumed = drain_queue(config)
        observation = observe(config, collector, targets, start, end, datetime.now(UTC), params.time_range_type)
        after = rec.compare(observation, pairs, params.max_ids)
        after.before = report
        after.repair = summary
        report = after
        logger.info("after repair: %s", report.message())
        if not report.ok:
            emit_mismatches(report, after_repair=True, repair=True)

    title = f"reconcile {start:%Y-%m-%dT%H:%M}Z → {end:%Y-%m-%dT%H:%M}Z: {report.message()}"
    notes = [
        f"{r.account_id}/{r.region} {r.hour:%Y-%m-%dT%H}Z missing in {s}: {', '.join(ids[:5])}"
        for r in report.rows
        for s, ids in r.missing_ids.items()
    ][:20]
    if report.repair is not None:
        notes.insert(0, f"repair: {report.repair.model_dump(exclude={'errors', 'consumed'})}")
    summary_artifact("xraylake-reconcile", title, report.summary_rows(), notes=notes + report.errors[:10])
    data = report.model_dump(mode="json")
    write_health(config, "reconcile", [run_row(status="ok" if report.ok else "mismatch", errors=len(report.errors))])
    if params.fail_on_mismatch and not report.ok:
        return Failed(message=report.message(), data=data)
    return Completed(message=report.message(), data=data)
