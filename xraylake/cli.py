"""`xraylake`: every command prints a Rich summary, or JSON with `--json`."""

from __future__ import annotations

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
