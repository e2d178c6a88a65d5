"""Rich tables for the terminal: headline numbers, state machines, services, failed executions."""

from __future__ import annotations

from typing import Any

from tasks.report.format import DASH, fmt_int, fmt_pct, fmt_seconds, fmt_time
from tasks.report.model import ReportData


def report_tables(data: ReportData) -> list[Any]:
    """Rich tables for the terminal: headline numbers, state machines, services, failures."""
    from rich.table import Table

    head = data.headline
    tables: list[Any] = []
    headline = Table(
        title=f"xraylake report · {fmt_time(data.range.start)} → {fmt_time(data.range.end)}",
        show_header=True,
    )
    headline.add_column("metric")
    headline.add_column("value", justify="right")
    rows = [
        ("traces", fmt_int(head.traces)),
        ("accounts", fmt_int(head.accounts)),
        (
            "error / fault / throttle traces",
            f"{head.error_traces} / {head.fault_traces} / {head.throttle_traces}",
        ),
        ("in-progress traces", fmt_int(head.in_progress_traces)),
        ("Step Functions executions", fmt_int(head.executions)),
        ("failed executions", fmt_int(head.failed_executions)),
        ("total execution time", fmt_seconds(head.execution_seconds) if head.executions else DASH),
        ("services", fmt_int(head.services)),
    ]
    rows += [(f"executions {status}", fmt_int(count)) for status, count in data.executions_by_status.items()]
    for name, value in rows:
        headline.add_row(name, value)
    tables.append(headline)

    if data.state_machines:
        machines = Table(title="Step Functions by state machine")
        for column, justify in (
            ("state machine", "left"),
            ("executions", "right"),
            ("by status", "left"),
            ("total", "right"),
            ("p50", "right"),
            ("p95", "right"),
            ("max", "right"),
        ):
            machines.add_column(column, justify=justify)  # type: ignore[arg-type]
        for m in data.state_machines:
            machines.add_row(
                m.state_machine,
                fmt_int(m.executions),
                ", ".join(f"{k} {v}" for k, v in m.by_status.items()),
                fmt_seconds(m.duration_sum),
                fmt_seconds(m.duration_p50),
                fmt_seconds(m.duration_p95),
                fmt_seconds(m.duration_max),
            )
        tables.append(machines)

    if data.services:
        services = Table(title="Services")
        for column in ("service", "segments", "error", "fault", "throttle", "p50", "p95", "p99"):
            services.add_column(column, justify="left" if column == "service" else "right")
        for s in data.services[:15]:
            services.add_row(
                s.service,
                fmt_int(s.segments),
                fmt_pct(s.error_rate),
                fmt_pct(s.fault_rate),
                fmt_pct(s.throttle_rate),
                fmt_seconds(s.latency_p50),
                fmt_seconds(s.latency_p95),
                fmt_seconds(s.latency_p99),
            )
        tables.append(services)

    if data.migration:
        migration = Table(title=f"Migration (X-Ray SDK end of support {data.xray_sdk_end_of_support.isoformat()})")
        for column in ("account", "service", "segments", "store", "instrumentation", "sdk"):
            migration.add_column(column, justify="right" if column == "segments" else "left")
        for line in data.migration[:25]:
            migration.add_row(
                line.account_name or line.account_id,
                line.service,
                fmt_int(line.segments),
                line.store,
                line.instrumentation,
                ", ".join(line.sdks),
            )
        tables.append(migration)

    if data.failed_executions:
        failed = Table(title=f"Failed executions ({data.failed_executions_total})")
        for column in ("start", "account", "state machine", "status", "duration", "error", "execution"):
            failed.add_column(column)
        for row in data.failed_executions[:10]:
            failed.add_row(
                fmt_time(row.start),
                row.account_name or row.account_id or "",
                row.state_machine or "",
                row.status or "",
                fmt_seconds(row.duration_seconds),
                row.error or "",
                row.execution_name or "",
            )
        tables.append(failed)
    return tables
