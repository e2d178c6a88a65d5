"""`xraylake demo`: the whole pipeline on synthetic multi-account traffic, in one command.

Resets the sandbox, writes realistic X-Ray traffic into three member accounts (through their own
roles), sweeps it into the org queue, consumes it into OpenSearch and the S3 archive, and prints
what happened at each step. The sandbox keeps running afterwards so the other commands work on
its data; `xraylake sandbox down` stops it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from xraylake.output import table


def _aggregate_per_account(client: Any, index_prefix: str) -> dict[str, dict[str, Any]]:
    from tasks.mappings import segments_alias, traces_alias

    client.indices.refresh(index=f"{index_prefix}-*")
    body = {
        "size": 0,
        "aggs": {
            "accounts": {
                "terms": {"field": "account_id", "size": 1000},
                "aggs": {
                    "status": {"terms": {"field": "status", "size": 10}},
                    "executions": {"terms": {"field": "execution_status", "size": 10}},
                },
            }
        },
    }
    result = client.search(index=traces_alias(index_prefix), body=body)
    out: dict[str, dict[str, Any]] = {}
    for bucket in result["aggregations"]["accounts"]["buckets"]:
        out[bucket["key"]] = {
            "traces": bucket["doc_count"],
            "status": {b["key"]: b["doc_count"] for b in bucket["status"]["buckets"]},
            "executions": {b["key"]: b["doc_count"] for b in bucket["executions"]["buckets"]},
        }
    segments = client.search(
        index=segments_alias(index_prefix),
        body={"size": 0, "aggs": {"accounts": {"terms": {"field": "account_id", "size": 1000}}}},
    )
    for bucket in segments["aggregations"]["accounts"]["buckets"]:
        out.setdefault(bucket["key"], {})["segments"] = bucket["doc_count"]
    return out


def _data(state: Any) -> dict[str, Any]:
    """A flow run's result data; a failed run (its exception) stops the demo with its message."""
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise RuntimeError(f"{state.name}: {data}") from data
    return dict(data)


def _demo_roster(home: Path, config: Any, monitoring_account: bool) -> tuple[str, list[dict[str, Any]]]:
    """The demo's configuration: the sandbox's with the roster read from Organizations (and, with
    `monitoring_account`, the sandbox's monitoring account, to which dev and qa are linked)."""
    from blocks import MonitoringAccount
    from sandbox import seed
    from tasks.organizations import resolve_for_run

    update: dict[str, Any] = {"source": "organizations"}
    if monitoring_account:
        update["monitoring"] = MonitoringAccount(account_id=seed.MONITORING_ACCOUNT_ID, role_name=seed.MONITORING_ROLE)
    demo_config = config.model_copy(update={"roster": config.roster.model_copy(update=update)})
    path = home / "demo-config.json"
    path.write_bytes(demo_config.to_json())
    path.chmod(0o600)
    resolution = resolve_for_run(demo_config, force=True)
    return str(path), resolution.rows()


def run_demo(
    home: Path,
    *,
    seed: int = 7,
    traces_per_account: int = 40,
    hours_back: float = 3.0,
    console: Console | None = None,
    report_path: Path | None = None,
    monitoring_account: bool = False,
) -> dict[str, Any]:
    """Run the demo; prints Rich tables to `console` (None: quiet) and returns everything as data."""
    from blocks.config import load_config, sandbox_state_path
    from flows.consume import consume
    from flows.sweep import sweep
    from sandbox.stack import down, up
    from sandbox.traffic import complete_in_progress, generate_traffic, write_traffic
    from tasks.index import client_for
    from tasks.mappings import SERVICE_MAP_INDEX, SPAN_INDEX_PREFIX, segments_alias, traces_alias

    say: Callable[..., None] = console.print if console else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {}

    tick = time.monotonic()
    down(home)
    sandbox_state = up(home, transaction_search=True)  # prod/eu-west-1: Transaction Search
    config = load_config(sandbox_state_path(home))
    config_path, roster_rows = _demo_roster(home, config, monitoring_account)
    timings["sandbox"] = time.monotonic() - tick
    say(
        f"[bold]1. sandbox[/bold] moto server {sandbox_state['aws_endpoint_url']}, "
        f"OpenSearch {sandbox_state['opensearch_url']}"
    )
    result["roster"] = roster_rows
    mode = "monitoring account + member roles" if monitoring_account else "member roles"
    say(
        table(
            f"roster from AWS Organizations (the workloads OU); X-Ray read through: {mode}",
            ["account_id", "name", "environment", "regions", "origin"],
            [[r["account_id"], r["name"], r["environment"], ",".join(r["regions"]), r["origin"]] for r in roster_rows],
        )
    )

    tick = time.monotonic()
    traffic = generate_traffic(seed, config.roster.accounts, traces_per_account, hours_back, now=time.time())
    written = write_traffic(traffic, config.roster)
    timings["traffic"] = time.monotonic() - tick
    result["generated"] = [
        {
            "account_id": r.account_id,
            "account": r.account_name,
            "region": r.region,
            "traces": r.traces,
            "segments": r.segments,
            "in_progress": r.in_progress,
            "executions": dict(r.executions),
        }
        for r in written.regions
    ]
    say(
        table(
            "2. synthetic X-Ray traffic written into each member account (PutTraceSegments, own role)",
            ["account_id", "account", "region", "traces", "segments", "in_progress", "executions"],
            [
                [
                    g["account_id"],
                    g["account"],
                    g["region"],
                    g["traces"],
                    g["segments"],
                    g["in_progress"],
                    ", ".join(f"{k} {v}" for k, v in sorted(g["executions"].items())) or "-",
                ]
                for g in result["generated"]
            ],
        )
    )

    tick = time.monotonic()
    first = sweep(
        config_path=config_path,
        first_lookback_minutes=int(hours_back * 60) + 60,
        lag_seconds=0,
        return_state=True,
    )
    completion = complete_in_progress(traffic, config.roster)
    second = sweep(config_path=config_path, lag_seconds=0, return_state=True)
    timings["sweep"] = time.monotonic() - tick
    sweeps = [_data(first), _data(second)]
    per_account: dict[tuple[str, str], Counter[str]] = {}
    readers: dict[tuple[str, str], str] = {}
    arrived: dict[tuple[str, str], set[str]] = {}
    paths: dict[tuple[str, str], str] = {}
    for run in sweeps:
        for found in run.get("results") or []:  # trace ids in one form (W3C) whichever reader sent them
            key = (found.account_id, found.region)
            arrived.setdefault(key, set()).update(
                t[2:10] + t[11:] if t.startswith("1-") else t for t in found.trace_ids
            )
        for row in run["accounts"]:
            readers[(row["account_id"], row["region"])] = row.get("reader", "xray")
            counter = per_account.setdefault((row["account_id"], row["region"]), Counter())
            counter.update({k: row[k] for k in ("traces", "envelopes", "bytes", "claim_checks", "throttles")})
            counter["failed"] += row["status"] == "failed"
            paths[(row["account_id"], row["region"])] = row.get("path", "member-role")
    generated = {(r.account_id, r.region): {t[2:10] + t[11:] for t in r.trace_ids} for r in written.regions}
    result["swept"] = [
        {"account_id": a, "region": r, "reader": readers.get((a, r)), "path": paths.get((a, r), "member-role")}
        | {"generated": len(generated.get((a, r), ()))}
        | {"arrived": len(generated.get((a, r), set()) & arrived.get((a, r), set()))}
        | dict(c)
        for (a, r), c in per_account.items()
    ]
    say(
        table(
            f"3. sweep (twice: {sum(completion.completed.values())} in-progress segments completed in between) "
            "→ envelopes on the org queue",
            [
                "account_id",
                "region",
                "path",
                "reader",
                "arrived",
                "traces",
                "envelopes",
                "bytes",
                "claim_checks",
                "throttles",
                "failed",
            ],
            [
                [
                    s["account_id"],
                    s["region"],
                    s["path"],
                    s["reader"],
                    f"{s['arrived']}/{s['generated']}",
                    s["traces"],
                    s["envelopes"],
                    s["bytes"],
                    s["claim_checks"],
                    s["throttles"],
                    s["failed"],
                ]
                for s in result["swept"]
            ],
        )
    )

    tick = time.monotonic()
    consumed = _data(consume(config_path=config_path, wait_seconds=1, return_state=True))
    timings["consume"] = time.monotonic() - tick
    result["consumed"] = {
        k: consumed[k]
        for k in (
            "deleted",
            "envelopes",
            "traces",
            "segments",
            "spans",
            "documents_indexed",
            "documents_stale",
            "raw_objects",
            "parquet_files",
            "dead_lettered_total",
        )
    }
    indexed = _aggregate_per_account(client_for(config.opensearch), config.opensearch.index_prefix)
    names = {a.account_id: a.name for a in config.roster.accounts}
    result["indexed"] = [{"account_id": a, "account": names.get(a, "?")} | v for a, v in sorted(indexed.items())]
    say(
        table(
            "4. consume → OpenSearch (trace, segment, span indices) + S3 archive (raw JSON.gz, Parquet)",
            [
                "account_id",
                "account",
                "traces",
                "segments",
                "ok",
                "error",
                "fault",
                "throttle",
                "step functions",
            ],
            [
                [
                    i["account_id"],
                    i["account"],
                    i.get("traces", 0),
                    i.get("segments", 0),
                    i.get("status", {}).get("ok", 0),
                    i.get("status", {}).get("error", 0),
                    i.get("status", {}).get("fault", 0),
                    i.get("status", {}).get("throttle", 0),
                    ", ".join(f"{k} {v}" for k, v in sorted(i.get("executions", {}).items())) or "-",
                ]
                for i in result["indexed"]
            ],
        )
    )
    say(
        f"consumed {consumed['deleted']} messages, {consumed['envelopes']} envelopes: "
        f"{consumed['documents_indexed']} documents indexed ({consumed['documents_stale']} stale versions kept "
        f"newer data), {consumed['raw_objects']} raw objects, {consumed['parquet_files']} Parquet files, "
        f"{consumed['dead_lettered_total']} dead-lettered"
    )

    tick = time.monotonic()
    from flows.commit import commit

    committed = _data(commit(config_path=config_path, return_state=True))
    timings["commit"] = time.monotonic() - tick
    result["commit"] = committed["totals"]
    say(
        f"   commit → Iceberg tables {config.lake.namespace}.traces / .segments ({config.lake.kind} catalog): "
        f"{committed['totals']['committed_files']} files, {committed['totals']['committed_rows']} rows "
        "(`xraylake query` reads them)"
    )

    tick = time.monotonic()
    from flows.reconcile import reconcile
    from tasks.reconcile import ReconcileReport

    checked = ReconcileReport.model_validate(
        _data(
            reconcile(
                config_path=config_path,
                start=datetime.now(UTC) - timedelta(hours=hours_back + 1),
                end=datetime.now(UTC),
                return_state=True,
            )
        )
    )
    timings["reconcile"] = time.monotonic() - tick
    result["reconcile"] = {
        "ok": checked.ok,
        "totals": checked.totals,
        "missing": checked.missing,
        "message": checked.message(),
    }
    say(
        f"5. reconcile (X-Ray vs raw archive vs Parquet vs index, per account and hour): "
        f"[bold]{'all accounts match' if checked.ok else 'MISMATCH'}[/bold] — {checked.message()}"
    )

    tick = time.monotonic()
    from tasks.report import run_report

    out = report_path or (home / "report.html")
    report = run_report(config, f"{int(hours_back) + 2}h", out)
    timings["report"] = time.monotonic() - tick
    result["report"] = str(out.resolve())
    head = report.headline
    result["report_headline"] = head.model_dump()
    say(
        f"6. report: {head.traces} traces, {head.executions} Step Functions executions "
        f"({head.failed_executions} failed, {head.execution_seconds:.1f} s in total), {head.services} services "
        f"→ [bold]{out.resolve()}[/bold] (opens offline in any browser)"
    )

    result["where"] = {
        "opensearch": sandbox_state["opensearch_url"],
        "read_aliases": [
            traces_alias(config.opensearch.index_prefix),
            segments_alias(config.opensearch.index_prefix),
            SPAN_INDEX_PREFIX,
            SERVICE_MAP_INDEX,
        ],
        "raw_archive": f"s3://{config.archive.bucket}/{config.archive.raw_prefix}/account_id=…/region=…/dt=…/hour=…/",
        "parquet": f"s3://{config.archive.bucket}/{config.archive.parquet_prefix}/{{traces,segments}}/…",
        "queue": config.queue.queue_url,
        "dlq": config.queue.dlq_url,
        "aws_endpoint_url": sandbox_state["aws_endpoint_url"],
    }
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    say(
        table(
            "7. where to look",
            ["what", "where"],
            [[k, ", ".join(v) if isinstance(v, list) else v] for k, v in result["where"].items()],
        )
    )
    say(
        f"timings (s): {result['seconds']}. The sandbox keeps running: try `xraylake sandbox status`, "
        "`xraylake consume`, `xraylake sweep`; stop it with `xraylake sandbox down`."
    )
    return result
