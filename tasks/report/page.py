"""The HTML page: `render_html(data)` fills `templates/report.html.j2` (Jinja2, autoescaped).

This module only prepares values: headline cards, the SVG charts (from `charts`), the rows the
tables show. The markup lives in the template and the style in `templates/report.css`, inlined
into the page: one self-contained file with no script and nothing fetched, so it opens offline
and can be mailed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from tasks.mappings import HEALTH_INDEX
from tasks.report.charts import STATUS_COLORS, color, svg_hbar, svg_latency, svg_time_chart
from tasks.report.format import DASH, fmt_int, fmt_pct, fmt_seconds, fmt_span, fmt_time
from tasks.report.model import STATUS_ORDER, ExecutionRow, ReportData, TimeSeries

TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"


@dataclass(frozen=True)
class Card:
    label: str
    value: str
    sub: str = ""
    tone: str = ""  # "" | good | warn | bad


@dataclass(frozen=True)
class ExecutionLine:
    row: ExecutionRow
    account: str  # the account's label (name and environment) when the report knows the account


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tasks.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt_int=fmt_int, fmt_pct=fmt_pct, fmt_seconds=fmt_seconds, fmt_span=fmt_span, fmt_time=fmt_time)
    env.filters["short_name"] = short_name
    env.globals["STATUS_COLORS"] = STATUS_COLORS
    return env


def stylesheet() -> str:
    """The page's CSS, read from the package (works from a wheel as from a checkout)."""
    return resources.files("tasks.report").joinpath("templates", STYLESHEET).read_text(encoding="utf-8")


def short_name(row: ExecutionRow) -> str:
    """The execution's name (else the ARN's last part), middle-truncated beyond 40 characters."""
    shown = row.execution_name or (row.execution_arn or "").rsplit(":", 1)[-1]
    return shown[:18] + "…" + shown[-18:] if len(shown) > 40 else shown


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document (inline CSS and SVG, no script, nothing fetched)."""
    accounts = {a.account_id: a for a in data.accounts}

    def lines(rows: list[ExecutionRow]) -> list[ExecutionLine]:
        out = []
        for r in rows:
            account = accounts.get(r.account_id or "")
            out.append(ExecutionLine(r, account.label if account else (r.account_name or r.account_id or "")))
        return out

    executions = [*data.failed_executions, *data.slowest_executions]
    template = _environment().get_template(TEMPLATE)
    return template.render(
        data=data,
        head=data.headline,
        tr=data.range,
        css=Markup(stylesheet()),
        cards=cards(data),
        charts=charts(data),
        account_labels={a.account_id: a.label for a in data.accounts},
        failed=lines(data.failed_executions),
        slowest=lines(data.slowest_executions[:15]),
        trace_note=any(r.status_source == "trace" for r in executions),
        health_index=HEALTH_INDEX,
    )


def cards(data: ReportData) -> list[Card]:
    """The headline numbers at the top of the page."""
    head = data.headline
    out = [
        Card("Traces", fmt_int(head.traces), f"{head.accounts} accounts · {head.environments} environments"),
        Card(
            "Problem traces",
            fmt_pct((head.traces - head.ok_traces) / head.traces) if head.traces else DASH,
            f"{head.error_traces} error · {head.fault_traces} fault · {head.throttle_traces} throttle",
            "warn" if head.traces and head.ok_traces < head.traces else "",
        ),
        Card("Executions", fmt_int(head.executions), f"{head.state_machines} state machines"),
        Card(
            "Failed executions",
            fmt_int(head.failed_executions),
            fmt_pct(head.failed_executions / head.executions) + " of executions" if head.executions else "",
            "bad" if head.failed_executions else "good",
        ),
        Card(
            "Execution time",
            fmt_seconds(head.execution_seconds) if head.executions else DASH,
            "sum of all executions",
        ),
        Card("Services", fmt_int(head.services), f"{fmt_int(head.service_segments)} service segments"),
        Card("Exceptions", fmt_int(head.exception_segments), f"{len(data.top_exceptions)} distinct types"),
    ]
    if data.health and data.health.accounts:
        lags = [a.watermark_lag_seconds for a in data.health.accounts if a.watermark_lag_seconds is not None]
        dead = sum(k.dead_lettered for k in data.health.kinds)
        out.append(
            Card(
                "Max watermark lag",
                fmt_seconds(max(lags)) if lags else DASH,
                f"{dead} dead-lettered",
                "bad" if dead else "",
            )
        )
    return out


def charts(data: ReportData) -> dict[str, Markup]:
    """Every chart of the page as inline SVG, by the name the template places it under."""
    tr = data.range
    machines = data.state_machines
    machine_colors = {m.state_machine: color(i) for i, m in enumerate(sorted(machines, key=lambda m: m.state_machine))}
    statuses = [s for s in STATUS_ORDER if s in data.executions_by_status] + [
        s for s in data.executions_by_status if s not in STATUS_ORDER
    ]
    svg = {
        "status": svg_hbar(
            "execution-status",
            [(m.state_machine, {k: float(v) for k, v in m.by_status.items()}) for m in machines],
            statuses,
            {s: STATUS_COLORS.get(s, "#7b8794") for s in statuses},
            x_title="executions",
        ),
        "duration_sum": svg_hbar(
            "execution-duration-sum",
            [(m.state_machine, {"duration": m.duration_sum}) for m in sorted(machines, key=lambda m: -m.duration_sum)],
            ["duration"],
            {"duration": "#3f7fbf"},
            unit="s",
            x_title="summed execution duration",
        ),
        "duration_percentiles": _percentile_chart(data, machine_colors),
        "duration_sum_over_time": svg_time_chart(
            "execution-duration-sum-over-time",
            data.execution_duration_sum,
            interval=tr.interval_seconds,
            kind="stacked",
            colors={m: machine_colors.get(m, "#7b8794") for m in data.execution_duration_sum.series},
            unit="s",
            y_title="summed duration",
            height=240,
        ),
        "traffic": svg_time_chart(
            "traces-per-account",
            data.traces_over_time,
            interval=tr.interval_seconds,
            kind="stacked",
            labels={a.account_id: a.label for a in data.accounts},
            colors={a.account_id: color(i) for i, a in enumerate(sorted(data.accounts, key=lambda a: a.label))},
            y_title="traces",
        ),
        "environments": svg_hbar(
            "traces-per-environment",
            [
                (env, {"traces": float(n)})
                for env, n in sorted(data.traces_by_environment.items(), key=lambda kv: -kv[1])
            ],
            ["traces"],
            {"traces": "#54b399"},
            x_title="traces",
            width=380,
        ),
        "services": svg_hbar(
            "service-status",
            [
                (
                    s.service,
                    {
                        "fault": s.fault_rate * 100,
                        "throttle": s.throttle_rate * 100,
                        "error": max(0.0, s.error_rate - s.throttle_rate) * 100,
                    },
                )
                for s in data.services
                if s.errors or s.faults or s.throttles
            ][:15],
            ["fault", "throttle", "error"],
            {k: STATUS_COLORS[k] for k in ("fault", "throttle", "error")},
            unit="%",
            x_title="share of the service's segments (error excludes throttles)",
            width=960,
        ),
        "latency": svg_latency("service-latency", data.services),
    }
    if data.health:
        svg["watermark_lag"] = svg_time_chart(
            "watermark-lag",
            data.health.watermark_lag,
            interval=tr.interval_seconds,
            kind="lines",
            labels={a.account_id: a.label for a in data.accounts},
            unit="s",
            y_title="watermark lag",
            height=220,
        )
    return {name: Markup(chart) for name, chart in svg.items()}  # the chart kit escapes its text


def _percentile_chart(data: ReportData, machine_colors: dict[str, str]) -> str:
    """p50 (solid) and p95 (dashed) execution duration over time, one colour per state machine."""
    series: dict[str, list[float | None]] = {}
    styles: dict[str, str] = {}
    colors: dict[str, str] = {}
    labels: dict[str, str] = {}
    for machine in sorted(set(data.execution_duration_p50.series) | set(data.execution_duration_p95.series)):
        for key, source, style in (
            ("p50", data.execution_duration_p50, "line"),
            ("p95", data.execution_duration_p95, "dash"),
        ):
            if machine in source.series:
                name = f"{machine} {key}"
                series[name] = source.series[machine]
                styles[name], colors[name], labels[name] = (
                    style,
                    machine_colors.get(machine, "#7b8794"),
                    f"{machine} · {key}",
                )
    return svg_time_chart(
        "execution-duration-percentiles",
        TimeSeries(times=data.execution_duration_p50.times or data.execution_duration_p95.times, series=series),
        interval=data.range.interval_seconds,
        kind="lines",
        colors=colors,
        styles=styles,
        labels=labels,
        unit="s",
        y_title="execution duration",
    )
