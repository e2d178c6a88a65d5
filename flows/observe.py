"""Artifacts and events: what a run shows in the Prefect UI and what automations react to.

`summary_artifact` writes two artifacts per run: a table with the flow's own columns and a
markdown summary a person reads first (the headline, the numbers that matter, the failures and
their causes, the run's duration). `emit` sends the `xraylake.*` events the automations of
deployments/automations.yaml alert on. Neither ever fails a run (observability only).

`announce_roster` says, once per run, which roster the run uses (source: static, organizations,
cache or stale-cache, and its size) in the run's log and in every summary artifact of the run,
and sends the events (and health rows) for a stale roster and for accounts a refresh retired.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event

from tasks.health import KINDS, write_health
from tasks.organizations import RunConfig

log = logging.getLogger("xraylake")
_started: contextvars.ContextVar[float | None] = contextvars.ContextVar("xraylake_run_started", default=None)
_roster: contextvars.ContextVar[str | None] = contextvars.ContextVar("xraylake_run_roster", default=None)


def mark_started() -> None:
    """Remember when this run's work began (`flows.parameters.takes` calls it)."""
    _started.set(time.monotonic())


def elapsed() -> float | None:
    """Seconds since `mark_started` in this run, None outside one."""
    started = _started.get()
    return None if started is None else time.monotonic() - started


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, (list, dict)):
        return str(value)
    return value


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value).replace("|", "/")


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} GB"  # pragma: no cover - the loop returns


def summary_markdown(
    title: str,
    metrics: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    seconds: float | None = None,
    roster: str | None = None,
) -> str:
    """`## title`, a two-column table of the numbers, the notes (failures and causes) as bullets."""
    lines = [f"## {title}", ""]
    numbers = dict(metrics or {})
    if seconds is not None:
        numbers.setdefault("duration", f"{seconds:,.1f} s")
    if roster is not None:
        numbers.setdefault("roster", roster)
    if numbers:
        lines += ["| | |", "|---|---|", *[f"| {name} | {_number(value)} |" for name, value in numbers.items()], ""]
    if notes:
        lines += ["**Problems**", "", *[f"- {' '.join(str(n).split())}" for n in notes]]
    else:
        lines.append("No problems.")
    return "\n".join(lines)


def markdown_artifact(key: str, markdown: str, description: str) -> None:
    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception as error:  # the data path must not depend on the artifact API
        log.warning("could not write artifact %s: %s", key, error)


def summary_artifact(
    key: str,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    notes: Sequence[str] = (),
    *,
    metrics: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
) -> None:
    """A table artifact (only `columns`, in that order, when given) plus the markdown summary."""
    try:
        table = [{c: _cell(row.get(c)) for c in (columns or list(row))} for row in rows]
        create_table_artifact(key=key, table=table, description=title)
    except Exception as error:
        log.warning("could not write artifact %s: %s", key, error)
    markdown_artifact(f"{key}-summary", summary_markdown(title, metrics, notes, elapsed(), _roster.get()), title)


class Progress:
    """A progress artifact for a long run, updated at most every 5 % (one API call each)."""

    def __init__(self, key: str, total: int, description: str) -> None:
        self.total = max(1, total)
        self.shown = 0.0
        self.artifact_id: Any = None
        try:
            self.artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
        except Exception as error:
            log.warning("could not write progress artifact %s: %s", key, error)

    def done(self, count: int) -> None:
        percent = 100.0 * min(count, self.total) / self.total
        if self.artifact_id is None or (percent - self.shown < 5.0 and percent < 100.0):
            return
        try:
            update_progress_artifact(self.artifact_id, progress=percent)
            self.shown = percent
        except Exception as error:
            log.warning("could not update progress: %s", error)


def emit(event: str, resource_id: str, payload: Mapping[str, Any] | None = None, **labels: str) -> None:
    """A Prefect event (`xraylake.*`); automations in deployments/automations.yaml react to them."""
    try:
        emit_event(
            event=event,
            resource={"prefect.resource.id": resource_id, **labels},
            payload=dict(payload or {}),
        )
    except Exception as error:
        log.warning("could not emit %s for %s: %s", event, resource_id, error)


def flow_failed(flow: str, error_kind: str, error: str) -> None:
    """`xraylake.flow.failed` for a run that ends Failed without raising (the alert
    `xraylake-run-failed` reacts to it), with the same payload as a raised failure."""
    emit(
        "xraylake.flow.failed",
        f"xraylake.flow.{flow}",
        {"flow": flow, "error": " ".join(error.split())[:500], "error_kind": error_kind},
    )


def run_logger() -> Any:
    """The Prefect run logger (its lines reach the UI), or this module's logger when a flow or
    task body runs as a plain function (tests, library use)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("xraylake.flows")


def announce_roster(flow: str, run: RunConfig, reported: Collection[str] = ()) -> None:
    """The roster this run uses, in its log and its summary artifacts; events (and health rows)
    for a stale roster and for the accounts this run's refresh retired (except the `reported`
    ones: the run's own results carry their rows)."""
    roster = run.roster
    _roster.set(roster.describe())
    logger = run_logger()
    logger.info("roster: %s", roster.describe())
    if roster.stale:
        logger.warning("roster: using the last good roster (%s): %s", roster.fetched_at, roster.stale)
        emit(
            "xraylake.roster.stale",
            "xraylake.roster",
            {"error": roster.stale, "fetched_at": str(roster.fetched_at), "accounts": len(roster.roster.accounts)},
        )
    for gone in roster.retired:
        emit(
            "xraylake.account.retired",
            f"aws.account.{gone.account_id}",
            {"reason": gone.reason, "watermark": "kept"},
            **{"xraylake.account.name": gone.name},
        )
    unreported = [g for g in roster.retired if g.account_id not in reported]
    if unreported and flow in KINDS:
        rows = [
            {"account_id": g.account_id, "account_name": g.name, "status": "retired", "error": g.reason}
            for g in unreported
        ]
        write_health(run.config, flow, rows)
