"""`xraylake`: every command prints a Rich summary, or JSON with `--json`."""

from __future__ import annotations

import os

from xraylake.localapi import local_api_environment

# The CLI prints its own summaries: Prefect's console handler shows warnings and errors only,
# while runs still log at INFO to the Prefect API/UI (and the flow-run processes `serve` starts
# inherit INFO). Set before Prefect is imported (its settings are read at import). Override by
# exporting them.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Without PREFECT_API_URL flows run against a temporary local server; its 20 s start-up default
# is too short on a busy 2-core machine (first start migrates the database).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Every command's runs go to the server `xraylake serve --local` runs, so they show in its UI.
os.environ.update(local_api_environment(os.environ))

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.markup import escape

from blocks.config import sandbox_state_path, xraylake_home
from xraylake.output import console, err_console, print_json, table

if TYPE_CHECKING:
    from blocks.config import Config
    from flows.parameters import FlowParameters
    from tasks.organizations import RosterUse, RunConfig

P = TypeVar("P", bound="FlowParameters")


# opensearch-py logs every 404 at WARNING (e.g. an optional index not created yet); errors still show.
logging.getLogger("opensearch").setLevel(logging.ERROR)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
sandbox_app = typer.Typer(no_args_is_help=True, help="The embedded local stack (moto server + in-memory OpenSearch).")
app.add_typer(sandbox_app, name="sandbox")


class LakeTable(StrEnum):
    traces = "traces"
    segments = "segments"


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
HomeOption = Annotated[
    Path | None, typer.Option("--home", help="State directory (default $XRAYLAKE_HOME or ~/.xraylake).")
]


def _home(home: Path | None) -> Path:
    return home or xraylake_home()


def _sandbox_summary(state: dict[str, object]) -> dict[str, object]:
    config = state["config"]
    assert isinstance(config, dict)
    return {
        "pid": state["pid"],
        "aws_endpoint_url": state["aws_endpoint_url"],
        "xray_endpoint_url": config.get("service_endpoints", {}).get("xray"),
        "opensearch_url": state["opensearch_url"],
        "log_account_id": config["log_account_id"],
        "queue_url": config["queue"]["queue_url"],
        "dlq_url": config["queue"]["dlq_url"],
        "bucket": config["archive"]["bucket"],
        "accounts": [
            {k: a[k] for k in ("account_id", "name", "environment", "regions")} for a in config["roster"]["accounts"]
        ],
    }


def _print_sandbox(summary: dict[str, object]) -> None:
    rows = [(k, v) for k, v in summary.items() if k != "accounts"]
    console.print(table("sandbox", ["setting", "value"], rows))
    accounts = summary["accounts"]
    assert isinstance(accounts, list)
    console.print(
        table(
            "member accounts",
            ["account_id", "name", "environment", "regions"],
            [(a["account_id"], a["name"], a["environment"], ",".join(a["regions"])) for a in accounts],
        )
    )


@sandbox_app.command("up")
def sandbox_up(
    home: HomeOption = None,
    lenient_xray: Annotated[bool, typer.Option(help="Skip the strict X-Ray front (moto's own limits).")] = False,
    json: JsonOption = False,
) -> None:
    """Start the sandbox in the background (or show the one already running)."""
    from sandbox.stack import up

    state = up(_home(home), strict_xray=not lenient_xray)
    summary = _sandbox_summary(state)
    if json:
        print_json(summary)
    else:
        _print_sandbox(summary)
        console.print(f"state file: {_home(home) / 'sandbox.json'}; stop with `xraylake sandbox down`")


@sandbox_app.command("down")
def sandbox_down(home: HomeOption = None, json: JsonOption = False) -> None:
    """Stop the sandbox; no process or port is left behind."""
    from sandbox.stack import down

    stopped = down(_home(home))
    if json:
        print_json({"stopped": stopped})
    else:
        console.print("sandbox stopped" if stopped else "no sandbox was running")


@sandbox_app.command("status")
def sandbox_status(home: HomeOption = None, json: JsonOption = False) -> None:
    """Show endpoints and member accounts of the running sandbox."""
    from sandbox.stack import read_state

    state = read_state(_home(home))
    if not state:
        if json:
            print_json({"running": False})
        else:
            err_console.print("no sandbox running: `xraylake sandbox up`")
        raise typer.Exit(1)
    summary = {"running": True} | _sandbox_summary(state)
    if json:
        print_json(summary)
    else:
        _print_sandbox(summary)


def main() -> None:
    app()


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------- pipeline commands

ConfigOption = Annotated[
    str | None,
    typer.Option("--config", help="Config file for real AWS (default: $XRAYLAKE_CONFIG, else the sandbox)."),
]
AccountsOption = Annotated[list[str] | None, typer.Option("--account", "-a", help="Roster account id (repeatable).")]
RegionsOption = Annotated[list[str] | None, typer.Option("--region", "-r", help="Region (repeatable).")]


def _refuse(message: str) -> NoReturn:
    """Exit 2 with one line naming what is wrong (before any flow run)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def _config(path: str | None) -> Config:
    """The configuration, or exit 2 naming why there is none (missing, not JSON, invalid)."""
    from blocks.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as error:
        _refuse(str(error))


def _run_config(path: str | None, roster: RosterUse = "cached") -> RunConfig:
    """The configuration with its roster resolved as a run resolves it (an Organizations roster from
    its cache, discovered only when there is none), or exit 2 naming why there is none."""
    from blocks.config import ConfigError
    from tasks.organizations import RosterError, load_run_config

    try:
        return load_run_config(path, roster=roster)
    except (ConfigError, RosterError) as error:
        _refuse(str(error))


def _parameters(model: type[P], **values: Any) -> P:
    """The flow's parameter model from the command's options, or exit 2 naming the bad value."""
    from pydantic import ValidationError

    from blocks.config import problems

    try:
        return model.model_validate(values)
    except ValidationError as error:
        _refuse(problems(error))


def _run_flow(flow_fn, params: FlowParameters, config_path: str | None):  # type: ignore[no-untyped-def]
    """Run a flow with validated parameters, returning (state, data).

    The configuration and what the parameters need from it (accounts in the resolved roster,
    regions enabled) are checked first: a problem exits 2 with one line before a flow run exists."""
    from prefect.states import State

    from blocks import UnknownAccountError
    from flows.parameters import check_run

    # the sweep refreshes the roster itself, in the run: here its cached accounts are checked
    run = _run_config(config_path, "none" if type(params).roster_use == "none" else "cached")
    try:
        check_run(params, run)
    except UnknownAccountError as error:
        # A sweep naming an account its cached Organizations roster lacks refreshes it first: it may be new.
        if not (type(params).roster_use == "beside" and run.config.roster.source == "organizations"):
            _refuse(str(error))
    except (ValueError, LookupError) as error:
        _refuse(str(error))
    state: State = flow_fn(return_state=True, config_path=config_path, **params.flow_kwargs())
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        err_console.print(f"[red]error:[/red] {escape(str(data))}", soft_wrap=True)
        raise typer.Exit(2 if isinstance(data, (ValueError, LookupError)) else 1)
    return state, data


def _account_table(title: str, accounts: list[dict[str, object]]) -> None:
    columns = [
        "account_id",
        "account_name",
        "region",
        "status",
        "windows",
        "traces",
        "envelopes",
        "bytes",
        "throttles",
        "watermark_lag_seconds",
        "reader",
        "error",
    ]
    console.print(table(title, columns, [[a.get(c) for c in columns] for a in accounts]))


def _finish(state, data, json: bool, title: str) -> None:  # type: ignore[no-untyped-def]
    public = {k: v for k, v in data.items() if k != "results"} if isinstance(data, dict) else data
    if json:
        print_json({"state": state.type.value, "message": state.message} | (public or {}))
    else:
        if isinstance(public, dict) and "accounts" in public:
            _account_table(title, public["accounts"])
        if isinstance(public, dict) and "shards" in public:  # a sharded sweep: one row per child run
            columns = ["shard", "account/regions", "state", "message", "flow_run_id"]
            console.print(table(f"{title} shards", columns, [[r.get(c) for c in columns] for r in public["shards"]]))
        console.print(f"{state.type.value}: {state.message}")
    if not state.is_completed():
        raise typer.Exit(1)


@app.command()
def sweep(
    accounts: AccountsOption = None,
    regions: RegionsOption = None,
    lag_seconds: int = 120,
    overlap_seconds: int = 300,
    first_lookback_minutes: int = 60,
    concurrency: int = 32,
    shards: Annotated[
        int,
        typer.Option(
            help="Split the accounts into this many shards, each a child run of the sweep-shard "
            "deployment on the Prefect server's workers (see README 'Sharded sweeps')."
        ),
    ] = 1,
    shard: Annotated[
        int | None, typer.Option(help="Sweep only this shard (0 to shards - 1) here, in this process.")
    ] = None,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Incremental sweep: new traces of every account since its watermark → the org queue."""
    from flows.parameters import SweepParameters
    from flows.sweep import sweep as sweep_flow

    params = _parameters(
        SweepParameters,
        accounts=accounts,
        regions=regions,
        lag_seconds=lag_seconds,
        overlap_seconds=overlap_seconds,
        first_lookback_minutes=first_lookback_minutes,
        concurrency=concurrency,
        shards=shards,
        shard=shard,
    )
    state, data = _run_flow(sweep_flow, params, config)
    _finish(state, data, json, "sweep")


@app.command()
def collect(
    execution_arn: Annotated[str, typer.Argument(help="Step Functions execution ARN")],
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Collect the traces of one Step Functions execution (the per-execution trigger path)."""
    from flows.collect import collect as collect_flow
    from flows.parameters import CollectParameters

    params = _parameters(CollectParameters, execution_arn=execution_arn)
    state, data = _run_flow(collect_flow, params, config)
    public = {k: v for k, v in data.items() if k != "result"}
    if json:
        print_json({"state": state.type.value, "message": state.message} | public)
    else:
        _account_table(f"collect {execution_arn}", [public["account"]])
        console.print(f"{state.type.value}: {state.message} (execution status {public.get('execution_status')})")
    if not state.is_completed():
        raise typer.Exit(1)


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="RFC 3339 start, e.g. 2026-11-20T00:00:00Z")],
    end: Annotated[str, typer.Option(help="RFC 3339 end")],
    accounts: AccountsOption = None,
    regions: RegionsOption = None,
    chunk_minutes: int = 60,
    max_chunks: int | None = None,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Collect a past range (X-Ray: ≤ 30 days back; Transaction Search: its aws/spans retention), chunked;
    the same backfill again resumes."""
    from flows.backfill import backfill as backfill_flow
    from flows.parameters import BackfillParameters

    params = _parameters(
        BackfillParameters,
        start=start,
        end=end,
        accounts=accounts,
        regions=regions,
        chunk_minutes=chunk_minutes,
        max_chunks=max_chunks,
    )
    state, data = _run_flow(backfill_flow, params, config)
    _finish(state, data, json, "backfill")


@app.command()
def consume(
    until_empty: Annotated[bool, typer.Option(help="Stop after an empty poll.")] = True,
    max_messages: int | None = None,
    max_seconds: float | None = None,
    wait_seconds: int = 20,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Drain the org queue into the archive (raw JSON + Parquet) and OpenSearch."""
    from flows.consume import consume as consume_flow
    from flows.parameters import ConsumeParameters

    params = _parameters(
        ConsumeParameters,
        until_empty=until_empty,
        max_messages=max_messages,
        max_seconds=max_seconds,
        wait_seconds=wait_seconds,
    )
    state, data = _run_flow(consume_flow, params, config)
    if json:
        print_json({"state": state.type.value} | data)
    else:
        rows = [(k, v) for k, v in data.items() if k not in {"errors"}]
        console.print(table("consume", ["metric", "value"], rows))
        for error in data.get("errors", [])[:5]:
            err_console.print(f"[yellow]{error}[/yellow]")


@app.command()
def setup(
    dashboards: Annotated[
        str | None, typer.Option(help="OpenSearch Dashboards URL: import the saved objects there too.")
    ] = None,
    config: ConfigOption = None,
    from_config: Annotated[
        Path | None,
        typer.Option(
            "--from-config",
            help="Config file to save as Prefect blocks (created or updated); implies --blocks.",
        ),
    ] = None,
    blocks: Annotated[
        bool | None,
        typer.Option(
            "--blocks/--no-blocks",
            help="Register the block types and save the configuration as named blocks "
            "(default: when a Prefect server is configured, PREFECT_API_URL).",
        ),
    ] = None,
    block_name: Annotated[str, typer.Option("--block-name", help="Name of the saved blocks.")] = "xraylake",
    json: JsonOption = False,
) -> None:
    """Create the index templates of the target's profile and span generation (idempotent), save the
    configuration as Prefect blocks, install ISM policies where the cluster has ISM, report cluster
    capabilities, optionally import dashboards."""
    from blocks.config import save_config_blocks
    from tasks.index import (
        GenerationConflict,
        capabilities,
        client_for,
        ensure_health_template,
        ensure_ism_policies,
        ensure_templates,
        target_ism_policies,
        target_templates,
    )

    cfg = _config(str(from_config) if from_config else config)
    target = cfg.opensearch
    client = client_for(target)
    try:
        names = ensure_templates(client, target_templates(target))
    except GenerationConflict as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    ensure_health_template(client)
    names.append("xraylake-health")
    caps = capabilities(client)
    ism = ensure_ism_policies(client, target_ism_policies(target), caps, target.retention_days)
    saved: dict[str, str] = {}
    if blocks or (blocks is None and (from_config is not None or "PREFECT_API_URL" in os.environ)):
        saved = save_config_blocks(cfg, block_name)
    imported: object = None
    if dashboards:
        from tasks.dashboards import import_dashboards

        imported = import_dashboards(dashboards, index_prefix=cfg.opensearch.index_prefix)
    if json:
        print_json(
            {
                "templates": names,
                "span_generation": target.span_generation,
                "index_profile": target.index_profile,
                "capabilities": caps,
                "ism": ism,
                "blocks": list(saved),
                "dashboards": imported,
            }
        )
    else:
        console.print(table("index templates", ["template"], [[n] for n in names]))
        console.print(f"span generation: {target.span_generation}; index profile: {target.index_profile}")
        if saved:
            console.print(table("Prefect blocks (Blocks page)", ["block"], [[b] for b in saved]))
        console.print(f"capabilities: {caps}")
        if ism["skipped"]:
            console.print(f"ISM policies: skipped: {ism['skipped']}")
        else:
            console.print(f"ISM policies installed: {', '.join(ism['installed'])}")
        if dashboards:
            console.print(f"dashboards imported into {dashboards}: {imported}")


@app.command()
def demo(
    home: HomeOption = None,
    seed: int = 7,
    traces_per_account: int = 40,
    hours_back: float = 3.0,
    stop: Annotated[bool, typer.Option(help="Stop the sandbox at the end.")] = False,
    monitoring_account: Annotated[
        bool,
        typer.Option(
            "--monitoring-account",
            help="Read linked accounts' X-Ray once in the sandbox's monitoring account (OAM); others by role.",
        ),
    ] = False,
    json: JsonOption = False,
) -> None:
    """The whole pipeline on synthetic multi-account traffic: sandbox → traffic → sweep → consume."""
    from xraylake.demo import run_demo

    try:
        result = run_demo(
            _home(home),
            seed=seed,
            traces_per_account=traces_per_account,
            hours_back=hours_back,
            console=None if json else console,
            monitoring_account=monitoring_account,
        )
    finally:
        if stop:
            from sandbox.stack import down

            down(_home(home))
    if json:
        print_json(result)


@app.command("import")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Exported X-Ray data in any layout: segment documents (one per file or line, pretty-printed, "
            "concatenated, in an array, daemon packets) or batch-get-traces output; gzip or not."
        ),
    ],
    account_id: Annotated[str, typer.Option("--account-id", help="Roster account the traces belong to.")],
    region: Annotated[str, typer.Option("--region")] = "us-east-1",
    direct: Annotated[bool, typer.Option(help="Write the sinks in-process instead of sending to the queue.")] = False,
    max_document_bytes: Annotated[
        int,
        typer.Option(
            min=1024,
            help="Refuse a document (a segment, or a batch-get-traces Trace) larger than this; 4 MiB is the "
            "consumer's own default, past which it archives a document raw without indexing it.",
        ),
    ] = 4 * 1024 * 1024,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Import exported X-Ray traces or raw segment documents for one roster account (streaming)."""
    from blocks import UnknownAccountError
    from tasks import collector as col
    from tasks.aws import log_client
    from tasks.consumer import BatchStats, Consumer
    from tasks.importer import Importer
    from tasks.redact import RedactionPolicy

    run = _run_config(config)
    cfg = run.config
    try:
        account = cfg.roster.get(account_id)
    except UnknownAccountError as error:
        err_console.print(
            f"[red]error:[/red] {run.roster.explain(error)} (`xraylake roster` lists the roster's accounts)"
        )
        raise typer.Exit(2) from None
    if region not in account.regions:
        err_console.print(f"[red]error:[/red] region {region} is not enabled for {account_id}: {account.regions}")
        raise typer.Exit(2)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        err_console.print(f"[red]error:[/red] no such file: {', '.join(missing)}")
        raise typer.Exit(2)
    importer = Importer(max_document_bytes=max_document_bytes)
    for path in files:
        importer.read(path)
    imported = [0] * len(files)  # segments indexed (direct) or sent (queue), per file
    totals = {"traces": 0, "envelopes": 0, "envelopes_failed": 0, "sent": 0}
    stats = BatchStats()
    consumer = collector = None
    if direct:
        from tasks.index import ensure_templates, target_templates

        consumer = Consumer(cfg, log_client("s3", cfg.archive.region), log_client("sqs", cfg.queue.region))
        ensure_templates(consumer.opensearch, target_templates(cfg.opensearch))
    else:
        collector = col.Collector.from_config(cfg)
    for batch in importer.batches():
        by_id = {trace["Id"]: counts for trace, counts in batch}
        envelopes = col.envelopes_for(
            [trace for trace, _ in batch],
            source="import",
            account_id=account_id,
            region=region,
            redaction=RedactionPolicy() if cfg.redact_at_source else None,
        )
        totals["traces"] += len(batch)
        totals["envelopes"] += len(envelopes)
        if consumer is not None:
            failed = consumer.ingest([(e, e.to_json()) for e in envelopes], stats)
            totals["envelopes_failed"] += len(failed)
            done = [e for e in envelopes if e.envelope_id not in failed]
        else:
            _, report = col.send_envelopes(collector, envelopes)  # type: ignore[arg-type]
            totals["sent"] += report.sent
            done = envelopes
        for envelope in done:
            for trace in envelope.traces:
                for number, count in by_id.get(trace["Id"], {}).items():
                    imported[number] += count
    column = "indexed" if direct else "sent"
    per_file = [
        {
            "file": report.file,
            "documents_read": report.documents_read,
            "segments_read": report.segments_read,
            column: imported[number],
            "rejected": report.rejected,
            "rejections": report.rejections,
        }
        for number, report in enumerate(importer.files)
    ]
    rejected = sum(report.rejected for report in importer.files)
    summary: dict[str, object] = {
        "documents_read": sum(report.documents_read for report in importer.files),
        "segments_read": sum(report.segments_read for report in importer.files),
        f"segments_{column}": sum(imported),
        "rejected": rejected,
        "traces": totals["traces"],
        "envelopes": totals["envelopes"],
        "mode": "direct" if direct else "queue",
    }
    if direct:
        summary |= {
            "documents_indexed": stats.documents_indexed,
            "documents_failed": stats.documents_failed,
            "envelopes_failed": totals["envelopes_failed"],
            "transform_problems": stats.transform_problems,
        }
    else:
        summary["messages_sent"] = totals["sent"]
    summary["files"] = per_file
    if json:
        print_json(summary)
    else:
        rows = [(k, v) for k, v in summary.items() if k != "files"]
        console.print(table(f"import into {account_id}/{region}", ["metric", "value"], rows))
        console.print(
            table(
                "per file",
                ["file", "documents read", column, "rejected"],
                [(f["file"], f["documents_read"], f[column], f["rejected"]) for f in per_file],
            )
        )
        shown = [r for f in per_file for r in f["rejections"]][:20]  # type: ignore[attr-defined]
        for rejection in shown:
            err_console.print(f"[yellow]rejected[/yellow] {escape(rejection['where'])}: {escape(rejection['reason'])}")
        if rejected > len(shown):
            err_console.print(f"… {rejected - len(shown)} more rejections (`--json` lists them)")
        if not direct:
            console.print("sent to the org queue: `xraylake consume` indexes them")
    if rejected or totals["envelopes_failed"]:
        raise typer.Exit(1)


@app.command()
def replay(
    start: Annotated[str, typer.Option(help="Trace start from (RFC 3339)")],
    end: Annotated[str, typer.Option(help="Trace start until (RFC 3339, exclusive)")],
    accounts: AccountsOption = None,
    regions: RegionsOption = None,
    target: Annotated[str, typer.Option(help="queue | direct")] = "queue",
    sink: Annotated[list[str] | None, typer.Option(help="direct: index | parquet | raw (repeatable)")] = None,
    index_prefix: Annotated[str | None, typer.Option(help="direct: write into <prefix>-traces-* etc.")] = None,
    dry_run: bool = False,
    rate: Annotated[float | None, typer.Option(help="Max messages per second.")] = None,
    force: Annotated[
        bool, typer.Option(help="Replay partitions an earlier run of the same replay finished (default: resume).")
    ] = False,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Re-send archived envelopes to the queue, or re-ingest them directly (e.g. into a new index)."""
    from flows.parameters import ReplayParameters
    from flows.replay import replay as replay_flow

    params = _parameters(
        ReplayParameters,
        start=start,
        end=end,
        accounts=accounts,
        regions=regions,
        target=target,
        sinks=sink or ["index"],
        index_prefix=index_prefix,
        dry_run=dry_run,
        rate_per_second=rate,
        force=force,
    )
    state, data = _run_flow(replay_flow, params, config)
    if json:
        print_json({"state": state.type.value, "message": state.message} | data)
    else:
        console.print(table("replay", ["metric", "value"], list(data.items())))
        console.print(f"{state.type.value}: {state.message}", soft_wrap=True)
        if data.get("partitions_skipped"):
            console.print(
                f"{data['partitions_skipped']} of {data['partitions']} partitions were skipped: an earlier run of "
                "this replay already replayed them (a replay resumes); `--force` replays them again",
                soft_wrap=True,
            )
    if not state.is_completed():
        raise typer.Exit(1)


dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter queue: what was rejected, why, and redrive.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(limit: int = 100, config: ConfigOption = None, json: JsonOption = False) -> None:
    """DLQ messages with their reasons (they stay in the DLQ)."""
    from dataclasses import asdict

    from tasks import dlq
    from tasks.aws import log_client

    cfg = _config(config)
    entries = [e for e, _ in dlq.peek(log_client("sqs", cfg.queue.region), cfg.queue.dlq_url, limit)]
    if json:
        print_json(
            {"count": len(entries), "by_reason": dlq.summarize(entries), "messages": [asdict(e) for e in entries]}
        )
        return
    console.print(table("dead-lettered by reason", ["reason", "messages"], sorted(dlq.summarize(entries).items())))
    columns = ["message_id", "reason", "account_id", "envelope_id", "receive_count", "detail"]
    console.print(table("messages", columns, [[getattr(e, c) for c in columns] for e in entries]))


@dlq_app.command("inspect")
def dlq_inspect(message_id: str, config: ConfigOption = None, json: JsonOption = False) -> None:
    """One DLQ message: attributes, reason and what its body decodes to."""
    from dataclasses import asdict

    from tasks import dlq
    from tasks.aws import log_client
    from tasks.consumer import Consumer
    from tasks.envelope import EnvelopeError

    cfg = _run_config(config).config  # decodes against the roster the consumer uses
    sqs = log_client("sqs", cfg.queue.region)
    found = [(e, m) for e, m in dlq.peek(sqs, cfg.queue.dlq_url, 1000) if e.message_id == message_id]
    if not found:
        err_console.print(f"[red]error:[/red] message {message_id} is not in the DLQ")
        raise typer.Exit(2)
    entry, message = found[0]
    detail: dict[str, object] = asdict(entry) | {"attributes": message.attributes, "body_head": message.body[:500]}
    try:
        decoded = Consumer(cfg, log_client("s3", cfg.archive.region), sqs).decode(message)
        detail["decodes_now"] = True
        detail["traces"] = [t.get("Id") for t in decoded.envelope.traces]
    except EnvelopeError as error:
        detail["decodes_now"] = False
        detail["decode_error"] = f"{error.reason}: {error.detail}"
    if json:
        print_json(detail)
    else:
        console.print(table(f"DLQ message {message_id}", ["field", "value"], list(detail.items())))


@dlq_app.command("redrive")
def dlq_redrive(
    reason: Annotated[str | None, typer.Option(help="Only messages with this reason.")] = None,
    limit: int | None = None,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Move DLQ messages back to the queue (after the cause was fixed)."""
    from dataclasses import asdict

    from tasks import dlq
    from tasks.aws import log_client

    cfg = _config(config)
    report = dlq.redrive(log_client("sqs", cfg.queue.region), cfg.queue.dlq_url, cfg.queue.queue_url, reason, limit)
    if json:
        print_json(asdict(report))
    else:
        console.print(
            f"redrive ({report.method}): moved {report.moved}, kept {report.kept}, by reason {report.by_reason}"
        )


@app.command()
def roster(
    config: ConfigOption = None,
    source: Annotated[
        str | None, typer.Option(help="Override roster.source for this view: static or organizations.")
    ] = None,
    refresh: Annotated[bool, typer.Option(help="Read Organizations now instead of the cached roster.")] = False,
    json: JsonOption = False,
) -> None:
    """The resolved roster (what the next sweep collects) and where each entry came from."""
    from tasks.organizations import RosterError, resolve_for_run

    cfg = _config(config)
    if source is not None:
        if source not in ("static", "organizations"):
            raise typer.BadParameter("must be static or organizations", param_hint="--source")
        if source == "organizations" and cfg.roster.organizations is None:
            _refuse("roster.organizations is not configured: no Organizations roster to show")
        cfg = cfg.model_copy(update={"roster": cfg.roster.model_copy(update={"source": source})})
    try:
        resolution = resolve_for_run(cfg, force=refresh)
    except RosterError as error:
        _refuse(str(error))
    rows = resolution.rows()
    summary = {
        "source": resolution.source,
        "fetched_at": resolution.fetched_at.isoformat() if resolution.fetched_at else None,
        "stale": resolution.stale,
        "retired": [r.as_json() for r in resolution.all_retired.values()],
        "accounts": rows,
    }
    if json:
        print_json(summary)
        return
    console.print(
        table(
            f"roster ({resolution.source}, {len(rows)} accounts)",
            ["account_id", "name", "environment", "regions", "origin"],
            [(r["account_id"], r["name"], r["environment"], ",".join(r["regions"]), r["origin"]) for r in rows],
        )
    )
    if resolution.stale:
        console.print(f"[yellow]last good roster of {resolution.fetched_at} used:[/yellow] {escape(resolution.stale)}")
    for gone in resolution.all_retired.values():
        since = f" since {gone.since:%Y-%m-%d %H:%M} UTC" if gone.since else ""
        console.print(f"retired{since}: {gone.account_id} ({gone.name}): {gone.reason}; its watermark is kept")


@app.command()
def report(
    since: Annotated[str, typer.Option(help="Look back this far: 90m, 24h, 7d")] = "24h",
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path("report.html"),
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Headline numbers and a self-contained HTML report (Step Functions, services, accounts, health)."""
    from tasks.report import parse_since, report_tables, run_report

    try:
        window = parse_since(since)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from None
    data = run_report(_config(config), window, out)
    if json:
        print_json(data.model_dump(mode="json"))
        return
    for rich_table in report_tables(data):
        console.print(rich_table)
    console.print(f"report written to {out.resolve()}")


@app.command()
def compact(
    accounts: AccountsOption = None,
    start_date: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD).")] = None,
    end_date: Annotated[str | None, typer.Option(help="Last day (YYYY-MM-DD).")] = None,
    tables: Annotated[list[LakeTable] | None, typer.Option("--table", help="traces | segments")] = None,
    skip_recent_hours: int = 0,
    rewrite_single_files: bool = False,
    snapshot_retention_hours: int = 24,
    orphan_delay_minutes: int = 1440,
    dry_run: bool = False,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Rewrite each Iceberg partition without duplicate rows (latest collected_at wins); expire
    snapshots; remove orphan files."""
    from flows.compact import compact as compact_flow
    from flows.parameters import CompactParameters

    params = _parameters(
        CompactParameters,
        accounts=accounts,
        start_date=start_date,
        end_date=end_date,
        tables=[t.value for t in tables] if tables else None,
        skip_recent_hours=skip_recent_hours,
        rewrite_single_files=rewrite_single_files,
        snapshot_retention_hours=snapshot_retention_hours,
        orphan_delay_minutes=orphan_delay_minutes,
        dry_run=dry_run,
    )
    state, data = _run_flow(compact_flow, params, config)
    if json:
        print_json({"state": state.type.value, "message": state.message} | data)
    else:
        console.print(table("compact", ["metric", "value"], list(data["totals"].items())))
        rows = [r for r in data["partitions"] if r.get("status") != "skipped"]
        if rows:
            columns = list(rows[0].keys())
            console.print(table("partitions", columns, [[r.get(c) for c in columns] for r in rows]))
        console.print(f"{state.type.value}: {state.message}")
    if not state.is_completed():
        raise typer.Exit(1)


lake_app = typer.Typer(no_args_is_help=True, help="The Iceberg tables traces and segments: commit, migrate.")
app.add_typer(lake_app, name="lake")


@lake_app.command("commit")
def lake_commit(
    tables: Annotated[list[LakeTable] | None, typer.Option("--table", help="traces | segments")] = None,
    max_batches: Annotated[int | None, typer.Option(help="At most this many snapshots per table.")] = None,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Commit the consumers' pending Parquet files to the Iceberg tables (what the commit flow does)."""
    from flows.commit import commit as commit_flow
    from flows.parameters import CommitParameters

    params = _parameters(
        CommitParameters, tables=[t.value for t in tables] if tables else None, max_batches=max_batches
    )
    state, data = _run_flow(commit_flow, params, config)
    if json:
        print_json({"state": state.type.value, "message": state.message} | data)
    else:
        console.print(table("commit", ["metric", "value"], list(data["totals"].items())))
        for item in data["refused"]:
            console.print(f"refused {item['key']}: {item['reason']}")
        console.print(f"{state.type.value}: {state.message}")
    if not state.is_completed():
        raise typer.Exit(1)


@lake_app.command("migrate")
def lake_migrate(
    tables: Annotated[list[LakeTable] | None, typer.Option("--table", help="traces | segments")] = None,
    compact_after: Annotated[bool, typer.Option("--compact/--no-compact", help="Compact what was committed.")] = True,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Bring a lake written before the Iceberg tables into them (idempotent; run it again to resume)."""
    from rich.markup import escape

    from tasks.aws import log_client
    from tasks.catalog import CatalogError
    from tasks.migration import migrate

    cfg = _config(config)
    chosen = [t.value for t in tables] if tables else ["traces", "segments"]
    try:
        results = migrate(log_client("s3", cfg.archive.region), cfg, chosen, compact=compact_after)
    except CatalogError as error:
        err_console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    rows = [r.as_row() for r in results]
    if json:
        print_json(rows)
        return
    columns = list(rows[0].keys())
    console.print(table("lake migrate", columns, [[r[c] for c in columns] for r in rows]))


@app.command()
def reconcile(
    start: Annotated[str | None, typer.Option(help="From (RFC 3339); default: end - lookback.")] = None,
    end: Annotated[str | None, typer.Option(help="Until (RFC 3339); default: now - settle.")] = None,
    accounts: AccountsOption = None,
    regions: RegionsOption = None,
    lookback_hours: int = 24,
    settle_minutes: int = 30,
    repair: Annotated[bool, typer.Option(help="Re-collect or replay what is missing, then check again.")] = False,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Prove nothing was lost: X-Ray vs raw archive vs Parquet vs index, per account and hour."""
    from flows.parameters import ReconcileParameters
    from flows.reconcile import reconcile as reconcile_flow
    from tasks.reconcile import ReconcileReport

    params = _parameters(
        ReconcileParameters,
        start=start,
        end=end,
        accounts=accounts,
        regions=regions,
        lookback_hours=lookback_hours,
        settle_minutes=settle_minutes,
        repair=repair,
    )
    state, data = _run_flow(reconcile_flow, params, config)
    result = ReconcileReport.model_validate(data)
    if json:
        print_json({"state": state.type.value} | data)
    else:
        rows = result.summary_rows()
        if rows:
            columns = list(rows[0].keys())
            console.print(table("reconcile", columns, [[r[c] for c in columns] for r in rows]))
        for row in result.rows:
            for sink, ids in row.missing_ids.items():
                if ids:
                    console.print(f"missing in {sink} ({row.account_id} {row.hour:%Y-%m-%dT%H}): {', '.join(ids[:5])}")
        if result.repair and result.before:
            console.print(f"before repair: {result.before.message()}; repair: {result.repair.model_dump()}")
        console.print(result.message())
    if not result.ok or not state.is_completed():
        raise typer.Exit(1)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the Iceberg tables: FROM traces / FROM segments")],
    max_rows: int = 1000,
    memory_limit: Annotated[
        str | None,
        typer.Option("--memory-limit", help="DuckDB memory limit, e.g. 512MB or 2GB (default 1GB); no disk spill."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="DuckDB threads (default 2).")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds until the query is interrupted, listing included (default 120).")
    ] = None,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Ad-hoc SQL with DuckDB over the Iceberg tables' current snapshot (no OpenSearch needed), within
    memory and time limits."""
    from rich.markup import escape

    from tasks.lake import LakeChangedError, LakeError, QueryLimits
    from tasks.lake import query as lake_query

    cfg = _config(config)
    try:
        chosen = {"memory_limit": memory_limit, "threads": threads, "timeout_seconds": timeout}
        limits = QueryLimits(**{k: v for k, v in chosen.items() if v is not None})  # type: ignore[arg-type]
        frame = lake_query(cfg, sql, max_rows=max_rows, limits=limits)
    except (LakeError, ValueError, LookupError) as error:
        err_console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1 if isinstance(error, LakeChangedError) else 2) from None
    if json:
        print_json(frame.to_dict(orient="records"))
        return
    console.print(table(f"{len(frame)} rows", [str(c) for c in frame.columns], frame.itertuples(index=False)))


@app.command()
def serve(
    local: Annotated[
        bool, typer.Option("--local", help="Also start a local Prefect server + UI (127.0.0.1) and the sandbox.")
    ] = False,
    port: Annotated[int, typer.Option(help="Local Prefect server port (with --local).")] = 4200,
    home: HomeOption = None,
    config: ConfigOption = None,
    config_block: Annotated[
        str, typer.Option("--config-block", help="Name of the config blocks every deployment loads.")
    ] = "xraylake",
    traffic: Annotated[
        bool,
        typer.Option("--traffic", help="With --local: keep writing a trickle of synthetic traffic into the sandbox."),
    ] = False,
    traffic_every: Annotated[
        float, typer.Option("--traffic-every", help="Seconds between traffic rounds (with --traffic).")
    ] = 60.0,
    notify: Annotated[
        str | None, typer.Option(help="Alert notification block: <block-type-slug>/<block-name>.")
    ] = None,
    schedules_off: Annotated[bool, typer.Option("--schedules-off", help="Register schedules inactive.")] = False,
    only: Annotated[list[str] | None, typer.Option(help="Serve only these deployments (repeatable).")] = None,
    trigger_delay: Annotated[
        float | None,
        typer.Option("--trigger-delay", help="Seconds from a Step Functions event to its collect run (default 60)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Flow runs this process executes at once.")] = None,
    no_limits: Annotated[
        bool, typer.Option("--no-limits", help="Do not create the per-account X-Ray concurrency limits.")
    ] = False,
    no_automations: Annotated[
        bool, typer.Option("--no-automations", help="Do not create the alert automations.")
    ] = False,
    run_log_level: Annotated[
        str, typer.Option("--run-log-level", help="Log level of the flow runs (their logs in the UI).")
    ] = "INFO",
) -> None:
    """Serve every deployment of prefect.yaml (schedules, UI forms, the collect trigger) until Ctrl-C."""
    from deployments.serve import serve_all

    if traffic and not local:
        _refuse("--traffic needs --local (it writes into the sandbox)")

    def start_sandbox(sandbox_home: Path) -> str:
        from sandbox.stack import up

        up(sandbox_home)
        return str(sandbox_state_path(sandbox_home))

    def start_traffic(config_path: str):  # type: ignore[no-untyped-def]
        from sandbox.trickle import start_trickle

        return start_trickle(config_path, every_seconds=traffic_every)

    # the runs' console lines are this process's output: show them at the runs' level
    os.environ.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)
    serve_all(
        local,
        start_stack=start_sandbox,
        start_traffic=start_traffic if traffic else None,
        port=port,
        home=home,
        config_path=config,
        config_block=config_block,
        notify=notify,
        schedules_active=not schedules_off,
        only=only,
        trigger_delay=trigger_delay,
        limit=limit,
        create_limits=not no_limits,
        create_automations=not no_automations,
        run_log_level=run_log_level,
    )
