"""Scheduled incremental sweep: every roster account and region, from its watermark to now - lag.

Final state: Completed when every (account, region) succeeded or was idle. When some failed, the
others still complete and advance their watermarks; the run then ends Failed (so automations and
the UI show it) unless `fail_on_account_errors=False`. Each failure is also an
`xraylake.account.failed` event.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from blocks import MemberAccount
from blocks.config import Config
from blocks.roster import shard_of
from flows import children
from flows.observe import Progress, announce_roster, emit, human_bytes, run_logger, summary_artifact
from flows.parameters import MAX_ACCOUNT_THREADS, SweepParameters, takes
from tasks import collector as col
from tasks import monitoring, organizations, xray
from tasks.health import account_rows, write_health
from tasks.limits import SLOT_TIMEOUT_SECONDS, concurrency_name, limits_for, xray_slot
from tasks.organizations import RunConfig

_ACCOUNT = ["account_id", "account_name", "region", "status"]
_SENT = ["traces", "envelopes", "bytes", "throttles", "retries"]
# Each flow's table shows its own columns: a backfill has no watermark, a collect no windows of its own.
COLUMNS = {
    "sweep": [
        *_ACCOUNT,
        "windows",
        *_SENT,
        "watermark_after",
        "watermark_lag_seconds",
        "transaction_search",
        "seconds",
        "error",
    ],
    "backfill": [*_ACCOUNT, "windows", *_SENT, "error"],
    "collect": [*_ACCOUNT, "summaries", *_SENT, "error"],
}


@task(name="sweep-account", cache_policy=NO_CACHE)  # I/O timeouts: botocore (tasks/aws.py)
def sweep_account_task(
    collector: col.Collector,
    account: MemberAccount,
    region: str,
    now: datetime,
    options: dict[str, Any],
    slots: threading.BoundedSemaphore | None = None,
    x_ray_limit: bool = True,
    slot_timeout_seconds: float = SLOT_TIMEOUT_SECONDS,
) -> col.AccountResult:
    # `slots` bounds this run's accounts in flight; the per-(account, region) limit `serve` creates
    # bounds X-Ray work across runs and flows (no-op without it).
    # Only taking the slot can time out here: sweep_account reports its own errors in the result.
    with contextlib.ExitStack() as held:
        if slots is not None:
            held.enter_context(slots)
        try:
            if x_ray_limit:
                held.enter_context(xray_slot(account.account_id, region, timeout_seconds=slot_timeout_seconds))
        except TimeoutError as error:
            result = col.AccountResult(
                account.account_id,
                account.name,
                region,
                status="failed",
                error=f"X-Ray concurrency slot not free within {slot_timeout_seconds:g} s: {error}",
                error_kind="TimeoutError",
            )
        else:
            result = col.sweep_account(collector, account, region, now=now, **options)
    logger = run_logger()
    if result.status == "failed":
        logger.error("account %s (%s) region %s failed: %s", account.account_id, account.name, region, result.error)
    else:
        logger.info(
            "account %s (%s) region %s: %d traces in %d envelopes over %d windows, watermark %s",
            account.account_id,
            account.name,
            region,
            result.traces,
            result.envelopes,
            result.windows,
            result.watermark_after,
        )
    return result


@task(name="sweep-monitoring-account", cache_policy=NO_CACHE)
def sweep_monitoring_task(
    collector: col.Collector,
    roster: Any,
    region: str,
    accounts: list[MemberAccount],
    now: datetime,
    options: dict[str, Any],
) -> monitoring.MonitoringResult:
    """Every linked roster account of `region`, read once in the monitoring account (never raises)."""
    sessions = monitoring.monitoring_sessions(roster)
    return monitoring.sweep_region(collector, sessions, roster.monitoring, region, accounts, now=now, **options)


def _result_or_failure(future: Any, account: MemberAccount, region: str) -> col.AccountResult:
    """The task's AccountResult; a task that crashed counts as that account failing, so the
    other accounts' results, artifact and health documents are still written."""
    try:
        result: col.AccountResult = future.result()
    except Exception as error:
        return col.AccountResult(
            account.account_id,
            account.name,
            region,
            status="failed",
            error=f"{type(error).__name__}: {error}",
            error_kind=type(error).__name__,
        )
    return result


def finish(
    kind: str,
    results: list[col.AccountResult],
    fail_on_account_errors: bool,
    extra: dict[str, Any] | None = None,
    config: Config | None = None,
) -> State:
    """Artifact, events, health documents, and the run's final state from per-account results."""
    if config is not None:
        write_health(config, kind, account_rows(results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        emit(
            "xraylake.account.failed",
            f"aws.account.{r.account_id}",
            {"flow": kind, "region": r.region, "error": r.error, "error_kind": r.error_kind},
            **{"xraylake.account.name": r.account_name, "xraylake.region": r.region},
        )
    for r in results:
        if r.transaction_search == "cloudwatch_logs":
            emit(
                "xraylake.account.transaction-search",
                f"aws.account.{r.account_id}",
                {
                    "flow": kind,
                    "region": r.region,
                    "reader": r.reader,
                    "reason": r.reader_reason,
                    "indexed_percentage": r.indexed_percentage,
                },
                **{"xraylake.account.name": r.account_name, "xraylake.region": r.region},
            )
    totals = {
        "accounts": len({r.account_id for r in results}),
        "failed": len(failed),
        "traces": sum(r.traces for r in results),
        "unchanged": sum(r.unchanged for r in results),
        "envelopes": sum(r.envelopes for r in results),
        "bytes": sum(r.bytes for r in results),
        "throttles": sum(r.throttles for r in results),
    }
    lags = [r.watermark_lag_seconds for r in results if r.watermark_lag_seconds is not None]
    metrics: dict[str, Any] = {
        "accounts": totals["accounts"],
        "account/regions": len(results),
        "failed account/regions": len(failed),
        "traces": totals["traces"],
        "envelopes": totals["envelopes"],
        "bytes sent": human_bytes(totals["bytes"]),
        "throttles": totals["throttles"],
    }
    if lags:
        metrics["watermark lag (max)"] = f"{max(lags):,.0f} s"
    # roster_* are in the state's totals; the summary's own "roster" row already says them
    metrics |= {k.replace("_", " "): v for k, v in (extra or {}).items() if not k.startswith("roster_")}
    summary_artifact(
        f"xraylake-{kind}",
        f"{kind}: {totals['traces']} traces in {totals['envelopes']} envelopes from {totals['accounts']} accounts",
        [r.summary() for r in results],
        notes=[f"{r.account_id} ({r.account_name}) {r.region}: {r.error_kind or 'error'}: {r.error}" for r in failed],
        metrics=metrics,
        columns=COLUMNS.get(kind),
    )
    data = {"totals": totals | (extra or {}), "accounts": [r.summary() for r in results]}
    data["results"] = results
    if failed and fail_on_account_errors:
        names = ", ".join(f"{r.account_id}/{r.region}" for r in failed)
        return Failed(message=f"{len(failed)} of {len(results)} account/regions failed: {names}", data=data)
    return Completed(message=f"{totals['traces']} traces sent", data=data)


def sweep_shards(params: SweepParameters, run: RunConfig) -> State:
    """Submit one child run of `shard_deployment` per shard and wait for them all. Any number of
    workers share the shards; each child refreshes nothing (this run just resolved the roster, so
    the cache is fresh) and sweeps, advances and reports its own accounts."""
    logger = run_logger()
    shared = {k: v for k, v in params.flow_kwargs().items() if v is not None and k not in ("shard", "shard_deployment")}
    shared |= children.config_parameters(run.source)
    sizes = Counter(shard_of(a.account_id, params.shards) for a, _ in params.targets(run.config))
    tags = ["xraylake", "sweep", f"sweep-{flow_run.get_id() or 'local'}"]
    runs = {children.submit(params.shard_deployment, shared | {"shard": n}, tags): n for n in range(params.shards)}
    logger.info("sweep: %d shards submitted to %s (account/regions per shard: %s)",
                params.shards, params.shard_deployment, dict(sorted(sizes.items())))  # fmt: skip
    states = children.wait_for(runs)
    rows = [
        {
            "shard": shard,
            "account/regions": sizes.get(shard, 0),
            "state": states[run_id].name,
            "message": states[run_id].message or "",
            "flow_run_id": str(run_id),
        }
        for run_id, shard in sorted(runs.items(), key=lambda item: item[1])
    ]
    failed = [row for row in rows if row["state"] != "Completed"]
    summary_artifact(
        "xraylake-sweep",
        f"sweep: {params.shards} shards, {len(failed)} not completed",
        rows,
        metrics={
            "shards": params.shards,
            "account/regions": sum(sizes.values()),
            "shards not completed": len(failed),
            "roster source": run.roster.source,
        },
    )
    data = {"totals": {"shards": params.shards, "failed_shards": len(failed)}, "shards": rows}
    if failed:
        names = ", ".join(f"shard {row['shard']} {row['state']}: {row['message']}" for row in failed)
        return Failed(message=f"{len(failed)} of {params.shards} shards did not complete: {names}"[:500], data=data)
    return Completed(message=f"{params.shards} shards swept", data=data)


@flow(name="sweep", task_runner=ThreadPoolTaskRunner(max_workers=MAX_ACCOUNT_THREADS))  # type: ignore[arg-type]
@takes(SweepParameters)
def sweep(params: SweepParameters, run: RunConfig) -> State:
    """Collect new traces of every roster account (or `accounts`) and send them to the org queue."""
    if params.fans_out:  # the shards must agree on the roster: refreshed before any child starts
        return sweep_shards(params, _announced(organizations.refreshed(run)) if run.roster.cached else run)
    # A cached Organizations roster is swept while it is refreshed beside the sweep (discovery is
    # paced calls, mostly waiting): accounts it adds are swept once it is in, accounts it retires
    # are not failures. Monitoring-account mode waits for it: one read per region attributes every
    # linked account's traces and drops the others, so its roster must be current.
    pending = organizations.refresh_beside(run)
    if pending is not None and run.config.roster.monitoring:
        run, pending = _announced(pending.result()), None
    config = run.config
    limiters = xray.LimiterRegistry(rate=params.xray_rate_per_second) if params.xray_rate_per_second else None
    collector = col.Collector.from_config(config, limiters)
    now = datetime.now(UTC)
    options = {
        "lag": timedelta(seconds=params.lag_seconds),
        "overlap": timedelta(seconds=params.overlap_seconds),
        "max_window": timedelta(minutes=params.max_window_minutes),
        "first_lookback": timedelta(minutes=params.first_lookback_minutes),
        "time_range_type": params.time_range_type,
        "run_id": str(flow_run.get_id() or ""),
    }
    routing = _route(params, config)
    targets = routing.member_targets
    # Every account is submitted at once and a slot frees as soon as one finishes: no batch waits
    # for its slowest account (bench B3b: 86 s → 68 s per 200-account cycle before shared models).
    slots = threading.BoundedSemaphore(params.concurrency)
    submit = functools.partial(_submit_accounts, collector, now=now, options=options, slots=slots)
    futures = submit(targets)
    regional = [
        sweep_monitoring_task.with_options(task_run_name=f"sweep-monitoring-{region}").submit(
            collector, config.roster, region, accounts, now, options
        )
        for region, accounts in routing.groups.items()
    ]
    retired: dict[str, str] = {}
    if pending is not None:
        fresh = _announced(pending.result(), {a.account_id for a, _ in targets})
        known = {(a.account_id, r) for a, r in targets}
        added = [(a, r) for a, r in params.targets(fresh.config) if (a.account_id, r) not in known]
        if added:
            run_logger().info("roster: %d account/regions joined during the sweep, swept now", len(added))
            targets, futures = targets + added, futures + submit(added)
        retired = {gone.account_id: gone.reason for gone in fresh.roster.retired}
        run, config = fresh, fresh.config
    progress = Progress("xraylake-sweep-progress", len(targets), f"sweep: {len(targets)} account/regions")
    results = []
    for f, (account, region) in zip(futures, targets, strict=True):
        results.append(_retired_or(_result_or_failure(f, account, region), retired))
        progress.done(len(results))
    extra: dict[str, Any] = {"roster_source": run.roster.source, "roster_accounts": len(config.roster.accounts)}
    for future in regional:
        outcome: monitoring.MonitoringResult = future.result()
        results += outcome.results
        extra["dropped_outside_roster"] = extra.get("dropped_outside_roster", 0) + outcome.dropped_traces
        extra["orphan_segments"] = extra.get("orphan_segments", 0) + outcome.orphan_segments
    if routing.notes:
        extra["routing"] = routing.notes
    return finish("sweep", results, params.fail_on_account_errors, extra=extra, config=config)


def _announced(fresh: RunConfig, swept: Collection[str] = ()) -> RunConfig:
    """The refreshed roster, announced (log, events, health rows) when it is not the cached one
    again; the `swept` accounts' health rows come with their results."""
    if fresh.roster.source != "cache":
        announce_roster("sweep", fresh, reported=swept)
    return fresh


def _route(params: SweepParameters, config: Config) -> monitoring.Route:
    """This run's member-role targets and monitoring-account reads. Linked accounts are read once
    per region in the monitoring account; the others (and regions without a sink) keep their member
    roles; no sink at all is an error here. When sharded, shard 0 reads the monitoring account for
    every linked account (one watermark per monitoring account and region); each shard keeps its
    own fallbacks."""
    targets = params.targets(config)  # this shard's, when sharded
    if not config.roster.monitoring:
        return monitoring.Route(list(targets), {})
    everyone = config.roster.targets(params.accounts, params.regions) if params.shard == 0 else targets
    routing = monitoring.route(config.roster, everyone, monitoring.monitoring_sessions(config.roster))
    mine = {(a.account_id, r) for a, r in targets}
    fallbacks = [(a, r) for a, r in routing.member_targets if (a.account_id, r) in mine]
    return monitoring.Route(fallbacks, routing.groups if params.shard in (None, 0) else {}, routing.notes)


def _submit_accounts(
    collector: col.Collector,
    targets: list[tuple[MemberAccount, str]],
    *,
    now: datetime,
    options: dict[str, Any],
    slots: threading.BoundedSemaphore,
) -> list[Any]:
    """One sweep-account task per (account, region), all submitted at once (futures, in order)."""
    # One listing instead of a slot request per account for limits that do not exist (B3b: a
    # 200-account cycle took 25 s instead of 69 s on a local server); None: ask per account. An
    # account that joined the roster since `serve` created the limits gets its own here.
    names = [concurrency_name(account.account_id, region) for account, region in targets]
    limited = limits_for([(account.account_id, region) for account, region in targets])
    return [
        sweep_account_task.with_options(task_run_name=f"sweep-{account.account_id}-{region}").submit(
            collector, account, region, now, options, slots, limited is None or name in limited
        )
        for (account, region), name in zip(targets, names, strict=True)
    ]


def _retired_or(result: col.AccountResult, retired: dict[str, str]) -> col.AccountResult:
    """An account the refresh retired while it was swept (its last sweep) is reported retired,
    never failed: its role may already be gone."""
    if result.account_id in retired:
        result.status, result.error, result.error_kind = "retired", retired[result.account_id], None
    return result
