"""`xraylake`: every command prints a Rich summary, or JSON with `--json`."""

from __future__ import annotations

import os

# The CLI prints its own summaries; Prefect's per-run INFO lines still reach the Prefect API/UI.
# Set before Prefect is imported (its settings are read at import). Override by exporting it.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pathlib import Path
from typing import Annotated

import typer

from xraylake.config import xraylake_home
from xraylake.output import console, err_console, print_json, table

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
sandbox_app = typer.Typer(no_args_is_help=True, help="The embedded local stack (moto server + in-memory OpenSearch).")
app.add_typer(sandbox_app, name="sandbox")

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


def _run_flow(flow_fn, **parameters):  # type: ignore[no-untyped-def]
    """Run a flow, returning (state, data); a parameter error is printed without a traceback."""
    from prefect.states import State

    try:
        state: State = flow_fn(return_state=True, **parameters)
    except (ValueError, LookupError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        err_console.print(f"[red]error:[/red] {data}")
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
    concurrency: int = 8,
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Incremental sweep: new traces of every account since its watermark → the org queue."""
    from flows.sweep import sweep as sweep_flow

    state, data = _run_flow(
        sweep_flow,
        accounts=accounts,
        regions=regions,
        lag_seconds=lag_seconds,
        overlap_seconds=overlap_seconds,
        first_lookback_minutes=first_lookback_minutes,
        concurrency=concurrency,
        config_path=config,
    )
    _finish(state, data, json, "sweep")


@app.command()
def collect(
    execution_arn: Annotated[str, typer.Argument(help="Step Functions execution ARN")],
    config: ConfigOption = None,
    json: JsonOption = False,
) -> None:
    """Collect the traces of one Step Functions execution (the per-execution trigger path)."""
    from flows.collect import collect as collect_flow

    state, data = _run_flow(collect_flow, execution_arn=execution_arn, config_path=config)
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
    """Collect a past range (≤ 30 days back), chunked; the same backfill again resumes."""
    from datetime import datetime

    from flows.backfill import backfill as backfill_flow

    try:
        start_at, end_at = datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    state, data = _run_flow(
        backfill_flow,
        start=start_at,
        end=end_at,
        accounts=accounts,
        regions=regions,
        chunk_minutes=chunk_minutes,
        max_chunks=max_chunks,
        config_path=config,
    )
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

    state, data = _run_flow(
        consume_flow,
        until_empty=until_empty,
        max_messages=max_messages,
        max_seconds=max_seconds,
        wait_seconds=wait_seconds,
        config_path=config,
    )
    if json:
        print_json({"state": state.type.value} | data)
    else:
        rows = [(k, v) for k, v in data.items() if k not in {"errors"}]
        console.print(table("consume", ["metric", "value"], rows))
        for error in data.get("errors", [])[:5]:
            err_console.print(f"[yellow]{error}[/yellow]")


@app.command()
def setup(config: ConfigOption = None, json: JsonOption = False) -> None:
    """Create the index templates (idempotent) and report cluster capabilities."""
    from tasks.index import capabilities, client_for, ensure_templates
    from tasks.mappings import index_templates
    from xraylake.config import load_config

    cfg = load_config(config)
    client = client_for(cfg.opensearch)
    names = ensure_templates(client, index_templates(cfg.opensearch.index_prefix))
    caps = capabilities(client)
    if json:
        print_json({"templates": names, "capabilities": caps})
    else:
        console.print(table("index templates", ["template"], [[n] for n in names]))
        console.print(f"capabilities: {caps}")


@app.command()
def demo(
    home: HomeOption = None,
    seed: int = 7,
    traces_per_account: int = 40,
    hours_back: float = 3.0,
    stop: Annotated[bool, typer.Option(help="Stop the sandbox at the end.")] = False,
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
        )
    finally:
        if stop:
            from sandbox.stack import down

            down(_home(home))
    if json:
        print_json(result)
