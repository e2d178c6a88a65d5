"""The xraylake report: OpenSearch aggregations → `ReportData` → one self-contained HTML file.

`build_report(client, since, now)` asks the read aliases (`xray-traces`, `xray-segments`, and the
pipeline-health index when it exists) for:

- Step Functions executions by status per state machine, summed / average / p50 / p95 / max
  execution duration per state machine, and sum / p50 / p95 over time per state machine
- traces per account (and environment) over time, per-account status counts
- error / fault / throttle rates and latency percentiles per service (service segments only:
  `is_subsegment: false`)
- top exceptions (segments carrying an exception, and the traces they touch)
- the slowest executions and the failed ones (FAILED, TIMED_OUT, ABORTED)
- pipeline health (latest watermark lag per account, dead-lettered messages per run kind)

The time range applies to the trace start (`start`; `timestamp` for health documents).
`render_html(data)` draws every chart as inline SVG generated here (no script, no external font,
style or image: the file opens offline and can be mailed), `report_tables(data)` gives Rich tables
for the terminal, `data.model_dump(mode="json")` is the `--json` output. `run_report(config, since,
out_path)` is what `xraylake report` calls.

Execution statuses come from DescribeExecution when the trace was collected by the `collect`
flow, otherwise from the trace itself (`execution_status_source: trace`), where Step Functions
only tells success (SUCCEEDED) from failure (FAILED — TIMED_OUT and ABORTED included); the report
says how many statuses were inferred that way.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.mappings import HEALTH_INDEX

__all__ = [
    "ReportData",
    "build_report",
    "parse_since",
    "render_html",
    "report_tables",
    "run_report",
]

TRACES_ALIAS = "xray-traces"
SEGMENTS_ALIAS = "xray-segments"
FAILED_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
STATUS_ORDER = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "RUNNING", "PENDING_REDRIVE", "UNKNOWN")
MAX_ROWS = 25
DASH = "\u2013"  # shown for a missing value
MAX_BUCKETS = 48

# --------------------------------------------------------------------------------------- models


class TimeRange(BaseModel):
    start: datetime
    end: datetime
    since_seconds: float
    interval_seconds: int = Field(description="bucket width of every over-time series")


class Headline(BaseModel):
    traces: int = 0
    accounts: int = 0
    environments: int = 0
    error_traces: int = 0
    fault_traces: int = 0
    throttle_traces: int = 0
    in_progress_traces: int = 0
    executions: int = 0
    failed_executions: int = 0
    execution_seconds: float = 0.0
    state_machines: int = 0
    service_segments: int = 0
    services: int = 0
    exception_segments: int = 0

    @property
    def ok_traces(self) -> int:
        return self.traces - self.error_traces - self.fault_traces - self.throttle_traces


class TimeSeries(BaseModel):
    """Aligned buckets: `series[name][i]` is the value of bucket `times[i]` (None: no data)."""

    times: list[datetime] = Field(default_factory=list)
    series: dict[str, list[float | None]] = Field(default_factory=dict)


class StateMachineStats(BaseModel):
    state_machine: str
    executions: int
    by_status: dict[str, int]
    status_sources: dict[str, int] = Field(default_factory=dict)
    duration_sum: float = 0.0
    duration_avg: float | None = None
    duration_p50: float | None = None
    duration_p95: float | None = None
    duration_max: float | None = None
    accounts: list[str] = Field(default_factory=list)


class AccountStats(BaseModel):
    account_id: str
    account_name: str | None = None
    environment: str | None = None
    traces: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    executions: int = 0

    @property
    def label(self) -> str:
        name = self.account_name or self.account_id
        return f"{name} ({self.environment})" if self.environment and self.environment != name else name


class ServiceStats(BaseModel):
    service: str
    segments: int
    errors: int = 0
    faults: int = 0
    throttles: int = 0
    traces: int = 0
    error_rate: float = 0.0
    fault_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_avg: float | None = None
    latency_p50: float | None = None
    latency_p90: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None


class ExceptionStats(BaseModel):
    exception_type: str
    occurrences: int
    traces: int
    services: list[str] = Field(default_factory=list)
    sample_message: str | None = None


class ExecutionRow(BaseModel):
    execution_arn: str | None = None
    execution_name: str | None = None
    state_machine: str | None = None
    status: str | None = None
    status_source: str | None = None
    account_id: str | None = None
    account_name: str | None = None
    environment: str | None = None
    region: str | None = None
    start: datetime | None = None
    stop: datetime | None = None
    duration_seconds: float | None = None
    error: str | None = None
    cause: str | None = None
    trace_id: str | None = None


class AccountHealth(BaseModel):
    account_id: str
    account_name: str | None = None
    watermark_lag_seconds: float | None = None
    last_run_at: datetime | None = None
    max_watermark_lag_seconds: float | None = None


class RunKindHealth(BaseModel):
    kind: str
    runs: int
    dead_lettered: int = 0
    traces: int = 0
    last_run_at: datetime | None = None


class HealthSummary(BaseModel):
    documents: int = 0
    accounts: list[AccountHealth] = Field(default_factory=list)
    kinds: list[RunKindHealth] = Field(default_factory=list)
    watermark_lag: TimeSeries = Field(default_factory=TimeSeries)


class ReportData(BaseModel):
    title: str = "xraylake report"
    generated_at: datetime
    range: TimeRange
    headline: Headline
    executions_by_status: dict[str, int] = Field(default_factory=dict)
    execution_status_sources: dict[str, int] = Field(default_factory=dict)
    state_machines: list[StateMachineStats] = Field(default_factory=list)
    execution_duration_sum: TimeSeries = Field(default_factory=TimeSeries)
    execution_duration_p50: TimeSeries = Field(default_factory=TimeSeries)
    execution_duration_p95: TimeSeries = Field(default_factory=TimeSeries)
    traces_by_status: dict[str, int] = Field(default_factory=dict)
    traces_by_environment: dict[str, int] = Field(default_factory=dict)
    accounts: list[AccountStats] = Field(default_factory=list)
    traces_over_time: TimeSeries = Field(default_factory=TimeSeries, description="series keyed by account_id")
    services: list[ServiceStats] = Field(default_factory=list)
    top_exceptions: list[ExceptionStats] = Field(default_factory=list)
    slowest_executions: list[ExecutionRow] = Field(default_factory=list)
    failed_executions: list[ExecutionRow] = Field(default_factory=list)
    failed_executions_total: int = 0
    health: HealthSummary | None = None
    notes: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------- --since

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """`"90m"`, `"24h"`, `"7d"` (also `s` and `w`) → timedelta; ValueError with the accepted forms."""
    match = _SINCE.match(text or "")
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number followed by s, m, h, d or w, e.g. 90m, 24h, 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    if seconds > 400 * 86400:
        raise ValueError(f"invalid duration {text!r}: at most 400 days")
    return timedelta(seconds=seconds)


# ------------------------------------------------------------------------------------- queries

_INTERVALS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def choose_interval(span: timedelta, max_buckets: int = MAX_BUCKETS) -> int:
    seconds = max(span.total_seconds(), 1.0)
    for interval in _INTERVALS:
        if math.ceil(seconds / interval) <= max_buckets:
            return interval
    return _INTERVALS[-1]


def _interval_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def _percentile(agg: dict[str, Any] | None, percent: float) -> float | None:
    values = (agg or {}).get("values") or {}
    for key in (f"{percent:.1f}", str(percent), f"{percent:g}"):
        if key in values:
            return _num(values[key])
    return None


def _buckets(agg: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((agg or {}).get("buckets") or [])


def _search(client: Any, index: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """None when the index/alias does not exist yet (an empty cluster yields an empty report)."""
    from opensearchpy.exceptions import NotFoundError

    try:
        result: dict[str, Any] = client.search(index=index, body=body)
    except NotFoundError:
        return None
    return result


def _total(result: dict[str, Any] | None) -> int:
    if not result:
        return 0
    total = result.get("hits", {}).get("total", 0)
    return int(total.get("value", 0) if isinstance(total, dict) else total)


def _range_filter(field: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"range": {field: {"gte": _iso(start), "lte": _iso(end)}}}


def _bool_query(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": list(filters)}}


def _histogram(field: str, tr: TimeRange, **sub: Any) -> dict[str, Any]:
    agg: dict[str, Any] = {
        "date_histogram": {
            "field": field,
            "fixed_interval": _interval_text(tr.interval_seconds),
            "min_doc_count": 0,
            "extended_bounds": {"min": _iso(tr.start), "max": _iso(tr.end)},
        }
    }
    if sub:
        agg["aggs"] = sub
    return agg


def _time_axis(tr: TimeRange) -> list[datetime]:
    step = tr.interval_seconds
    first = math.floor(tr.start.timestamp() / step) * step
    last = math.floor(tr.end.timestamp() / step) * step
    return [datetime.fromtimestamp(t, UTC) for t in range(int(first), int(last) + 1, step)]


def _series_from_histogram(
    axis: list[datetime], buckets: list[dict[str, Any]], values: Iterable[tuple[int, str, float | None]]
) -> TimeSeries:
    """`values` yields (bucket key ms, series name, value); absent points stay None."""
    index = {int(t.timestamp() * 1000): i for i, t in enumerate(axis)}
    series: dict[str, list[float | None]] = {}
    for key, name, value in values:
        position = index.get(int(key))
        if position is None:
            continue
        series.setdefault(name, [None] * len(axis))[position] = value
    return TimeSeries(times=axis, series=dict(sorted(series.items())))


_EXECUTION_SOURCE = [
    "execution_arn",
    "execution_name",
    "state_machine_name",
    "execution_status",
    "execution_status_source",
    "account_id",
    "account_name",
    "environment",
    "region",
    "execution_start",
    "execution_stop",
    "execution_duration_seconds",
    "execution_error",
    "execution_cause",
    "trace_id",
    "start",
]


def _execution_row(source: dict[str, Any]) -> ExecutionRow:
    cause = source.get("execution_cause")
    return ExecutionRow(
        execution_arn=source.get("execution_arn"),
        execution_name=source.get("execution_name"),
        state_machine=source.get("state_machine_name"),
        status=source.get("execution_status"),
        status_source=source.get("execution_status_source"),
        account_id=source.get("account_id"),
        account_name=source.get("account_name"),
        environment=source.get("environment"),
        region=source.get("region"),
        start=_parse_time(source.get("execution_start") or source.get("start")),
        stop=_parse_time(source.get("execution_stop")),
        duration_seconds=_num(source.get("execution_duration_seconds")),
        error=source.get("execution_error"),
        cause=cause[:500] if isinstance(cause, str) else None,
        trace_id=source.get("trace_id"),
    )


def _status_sorted(counts: dict[str, int]) -> dict[str, int]:
    rank = {status: i for i, status in enumerate(STATUS_ORDER)}
    return dict(sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def build_report(client: Any, since: timedelta, now: datetime | None = None) -> ReportData:
    """Everything the report shows, from OpenSearch aggregations over [now - since, now]."""
    if since.total_seconds() <= 0:
        raise ValueError("since must be a positive duration")
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - since
    tr = TimeRange(start=start, end=end, since_seconds=since.total_seconds(), interval_seconds=choose_interval(since))
    axis = _time_axis(tr)
    in_range = _range_filter("start", start, end)
    data = ReportData(generated_at=datetime.now(UTC), range=tr, headline=Headline())
    _traffic(client, data, tr, axis, in_range)
    _executions(client, data, tr, axis, in_range)
    _services(client, data, in_range)
    _exceptions(client, data, in_range)
    _health(client, data, tr, axis)
    sources = data.execution_status_sources
    inferred = sources.get("trace", 0)
    if inferred:
        data.notes.append(
            f"{inferred} of {data.headline.executions} execution statuses come from the traces alone, "
            "where TIMED_OUT and ABORTED show as FAILED; the collect flow (DescribeExecution) "
            "gives the exact status."
        )
    if data.headline.traces == 0:
        data.notes.append("No traces in this time range (or the xray-traces alias does not exist yet).")
    return data


def _traffic(client: Any, data: ReportData, tr: TimeRange, axis: list[datetime], in_range: dict[str, Any]) -> None:
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": _bool_query(in_range),
        "aggs": {
            "accounts": {
                "terms": {"field": "account_id", "size": 1000},
                "aggs": {
                    "name": {"terms": {"field": "account_name", "size": 1}},
                    "environment": {"terms": {"field": "environment", "size": 1}},
                    "status": {"terms": {"field": "status", "size": 10}},
                    "executions": {"filter": {"term": {"step_functions": True}}},
                },
            },
            "status": {"terms": {"field": "status", "size": 10}},
            "environments": {"terms": {"field": "environment", "size": 100, "missing": "(none)"}},
            "in_progress": {"filter": {"term": {"in_progress": True}}},
            "over_time": _histogram("start", tr, accounts={"terms": {"field": "account_id", "size": 1000}}),
        },
    }
    result = _search(client, TRACES_ALIAS, body)
    if result is None:
        return
    aggs = result.get("aggregations", {})
    head = data.headline
    head.traces = _total(result)
    by_status = {b["key"]: int(b["doc_count"]) for b in _buckets(aggs.get("status"))}
    data.traces_by_status = by_status
    head.error_traces = by_status.get("error", 0)
    head.fault_traces = by_status.get("fault", 0)
    head.throttle_traces = by_status.get("throttle", 0)
    head.in_progress_traces = int(aggs.get("in_progress", {}).get("doc_count", 0))
    data.traces_by_environment = {b["key"]: int(b["doc_count"]) for b in _buckets(aggs.get("environments"))}
    head.environments = len([k for k in data.traces_by_environment if k != "(none)"])
    for bucket in _buckets(aggs.get("accounts")):
        names = _buckets(bucket.get("name"))
        envs = _buckets(bucket.get("environment"))
        data.accounts.append(
            AccountStats(
                account_id=str(bucket["key"]),
                account_name=names[0]["key"] if names else None,
                environment=envs[0]["key"] if envs else None,
                traces=int(bucket["doc_count"]),
                by_status={b["key"]: int(b["doc_count"]) for b in _buckets(bucket.get("status"))},
                executions=int(bucket.get("executions", {}).get("doc_count", 0)),
            )
        )
    data.accounts.sort(key=lambda a: (-a.traces, a.account_id))
    head.accounts = len(data.accounts)
    data.traces_over_time = _series_from_histogram(
        axis,
        _buckets(aggs.get("over_time")),
        (
            (b["key"], str(a["key"]), float(a["doc_count"]))
            for b in _buckets(aggs.get("over_time"))
            for a in _buckets(b.get("accounts"))
        ),
    )


def _executions(client: Any, data: ReportData, tr: TimeRange, axis: list[datetime], in_range: dict[str, Any]) -> None:
    sfn = {"term": {"step_functions": True}}
    duration = "execution_duration_seconds"
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": _bool_query(in_range, sfn),
        "aggs": {
            "machines": {
                "terms": {"field": "state_machine_name", "size": 500, "missing": "(unknown)"},
                "aggs": {
                    "status": {"terms": {"field": "execution_status", "size": 20, "missing": "UNKNOWN"}},
                    "sources": {"terms": {"field": "execution_status_source", "size": 5}},
                    "sum": {"sum": {"field": duration}},
                    "avg": {"avg": {"field": duration}},
                    "max": {"max": {"field": duration}},
                    "pct": {"percentiles": {"field": duration, "percents": [50, 95]}},
                    "accounts": {"terms": {"field": "account_id", "size": 100}},
                },
            },
            "status": {"terms": {"field": "execution_status", "size": 20, "missing": "UNKNOWN"}},
            "sources": {"terms": {"field": "execution_status_source", "size": 5}},
            "sum": {"sum": {"field": duration}},
            "over_time": _histogram(
                "start",
                tr,
                machines={
                    "terms": {"field": "state_machine_name", "size": 50},
                    "aggs": {
                        "sum": {"sum": {"field": duration}},
                        "pct": {"percentiles": {"field": duration, "percents": [50, 95]}},
                    },
                },
            ),
        },
    }
    result = _search(client, TRACES_ALIAS, body)
    if result is None:
        return
    aggs = result.get("aggregations", {})
    head = data.headline
    head.executions = _total(result)
    head.execution_seconds = _num(aggs.get("sum", {}).get("value")) or 0.0
    data.executions_by_status = _status_sorted({b["key"]: int(b["doc_count"]) for b in _buckets(aggs.get("status"))})
    data.execution_status_sources = {b["key"]: int(b["doc_count"]) for b in _buckets(aggs.get("sources"))}
    head.failed_executions = sum(data.executions_by_status.get(s, 0) for s in FAILED_STATUSES)
    for bucket in _buckets(aggs.get("machines")):
        data.state_machines.append(
            StateMachineStats(
                state_machine=str(bucket["key"]),
                executions=int(bucket["doc_count"]),
                by_status=_status_sorted({b["key"]: int(b["doc_count"]) for b in _buckets(bucket.get("status"))}),
                status_sources={b["key"]: int(b["doc_count"]) for b in _buckets(bucket.get("sources"))},
                duration_sum=_num(bucket.get("sum", {}).get("value")) or 0.0,
                duration_avg=_num(bucket.get("avg", {}).get("value")),
                duration_max=_num(bucket.get("max", {}).get("value")),
                duration_p50=_percentile(bucket.get("pct"), 50),
                duration_p95=_percentile(bucket.get("pct"), 95),
                accounts=sorted(str(b["key"]) for b in _buckets(bucket.get("accounts"))),
            )
        )
    data.state_machines.sort(key=lambda m: (-m.executions, m.state_machine))
    head.state_machines = len(data.state_machines)
    over_time = _buckets(aggs.get("over_time"))
    points = [(b["key"], m) for b in over_time for m in _buckets(b.get("machines"))]
    data.execution_duration_sum = _series_from_histogram(
        axis, over_time, ((k, str(m["key"]), _num(m.get("sum", {}).get("value"))) for k, m in points)
    )
    data.execution_duration_p50 = _series_from_histogram(
        axis, over_time, ((k, str(m["key"]), _percentile(m.get("pct"), 50)) for k, m in points)
    )
    data.execution_duration_p95 = _series_from_histogram(
        axis, over_time, ((k, str(m["key"]), _percentile(m.get("pct"), 95)) for k, m in points)
    )

    slowest = _search(
        client,
        TRACES_ALIAS,
        {
            "size": MAX_ROWS,
            "query": _bool_query(in_range, sfn, {"exists": {"field": duration}}),
            "sort": [{duration: {"order": "desc"}}],
            "_source": _EXECUTION_SOURCE,
        },
    )
    data.slowest_executions = [_execution_row(h["_source"]) for h in (slowest or {}).get("hits", {}).get("hits", [])]
    failed = _search(
        client,
        TRACES_ALIAS,
        {
            "size": MAX_ROWS * 2,
            "track_total_hits": True,
            "query": _bool_query(in_range, sfn, {"terms": {"execution_status": list(FAILED_STATUSES)}}),
            "sort": [{"start": {"order": "desc"}}],
            "_source": _EXECUTION_SOURCE,
        },
    )
    data.failed_executions = [_execution_row(h["_source"]) for h in (failed or {}).get("hits", {}).get("hits", [])]
    data.failed_executions_total = _total(failed)
    _fill_errors_from_segments(client, data.failed_executions)


def _fill_errors_from_segments(client: Any, rows: list[ExecutionRow]) -> None:
    """Executions collected by the sweep carry no DescribeExecution error: use the state machine
    segment's exception (the Fail state's error / States.Timeout) instead."""
    missing = {row.trace_id for row in rows if not row.error and row.trace_id}
    if not missing:
        return
    result = _search(
        client,
        SEGMENTS_ALIAS,
        {
            "size": len(missing) * 4,
            "query": _bool_query(
                {"terms": {"trace_id": sorted(missing)}},
                {"term": {"origin": "AWS::StepFunctions::StateMachine"}},
                {"exists": {"field": "exception_type"}},
            ),
            "_source": ["trace_id", "exception_type", "exception_message", "is_subsegment"],
        },
    )
    found: dict[str, tuple[str, str | None]] = {}
    for hit in (result or {}).get("hits", {}).get("hits", []):
        source = hit["_source"]
        if source.get("is_subsegment") and source["trace_id"] in found:
            continue
        found[source["trace_id"]] = (source["exception_type"], source.get("exception_message"))
    for row in rows:
        if not row.error and row.trace_id in found:
            row.error, message = found[row.trace_id]
            row.cause = row.cause or message


def _services(client: Any, data: ReportData, in_range: dict[str, Any]) -> None:
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": _bool_query(in_range, {"term": {"is_subsegment": False}}),
        "aggs": {
            "services": {
                "terms": {"field": "service_name", "size": 200},
                "aggs": {
                    "flags": {
                        "filters": {
                            "filters": {
                                "error": {"term": {"error": True}},
                                "fault": {"term": {"fault": True}},
                                "throttle": {"term": {"throttle": True}},
                            }
                        }
                    },
                    "traces": {"cardinality": {"field": "trace_id"}},
                    "avg": {"avg": {"field": "duration"}},
                    "pct": {"percentiles": {"field": "duration", "percents": [50, 90, 95, 99]}},
                },
            }
        },
    }
    result = _search(client, SEGMENTS_ALIAS, body)
    if result is None:
        return
    data.headline.service_segments = _total(result)
    for bucket in _buckets(result.get("aggregations", {}).get("services")):
        flags = bucket.get("flags", {}).get("buckets", {})
        count = int(bucket["doc_count"])
        errors = int(flags.get("error", {}).get("doc_count", 0))
        faults = int(flags.get("fault", {}).get("doc_count", 0))
        throttles = int(flags.get("throttle", {}).get("doc_count", 0))
        pct = bucket.get("pct")
        data.services.append(
            ServiceStats(
                service=str(bucket["key"]),
                segments=count,
                errors=errors,
                faults=faults,
                throttles=throttles,
                traces=int(bucket.get("traces", {}).get("value") or 0),
                error_rate=errors / count if count else 0.0,
                fault_rate=faults / count if count else 0.0,
                throttle_rate=throttles / count if count else 0.0,
                latency_avg=_num(bucket.get("avg", {}).get("value")),
                latency_p50=_percentile(pct, 50),
                latency_p90=_percentile(pct, 90),
                latency_p95=_percentile(pct, 95),
                latency_p99=_percentile(pct, 99),
            )
        )
    data.services.sort(key=lambda s: (-(s.fault_rate + s.error_rate), -s.segments, s.service))
    data.headline.services = len(data.services)


def _exceptions(client: Any, data: ReportData, in_range: dict[str, Any]) -> None:
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": _bool_query(in_range, {"exists": {"field": "exception_type"}}),
        "aggs": {
            "types": {
                "terms": {"field": "exception_type", "size": 15},
                "aggs": {
                    "traces": {"cardinality": {"field": "trace_id"}},
                    "services": {"terms": {"field": "service_name", "size": 5}},
                    "sample": {"top_hits": {"size": 1, "_source": {"includes": ["exception_message"]}}},
                },
            }
        },
    }
    result = _search(client, SEGMENTS_ALIAS, body)
    if result is None:
        return
    data.headline.exception_segments = _total(result)
    for bucket in _buckets(result.get("aggregations", {}).get("types")):
        hits = bucket.get("sample", {}).get("hits", {}).get("hits", [])
        message = hits[0].get("_source", {}).get("exception_message") if hits else None
        data.top_exceptions.append(
            ExceptionStats(
                exception_type=str(bucket["key"]),
                occurrences=int(bucket["doc_count"]),
                traces=int(bucket.get("traces", {}).get("value") or 0),
                services=[str(b["key"]) for b in _buckets(bucket.get("services"))],
                sample_message=message[:300] if isinstance(message, str) else None,
            )
        )


def _health(client: Any, data: ReportData, tr: TimeRange, axis: list[datetime]) -> None:
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": _bool_query(_range_filter("timestamp", tr.start, tr.end)),
        "aggs": {
            "accounts": {
                "terms": {"field": "account_id", "size": 1000},
                "aggs": {
                    "latest": {
                        "top_hits": {
                            "size": 1,
                            "sort": [{"timestamp": {"order": "desc"}}],
                            "_source": {"includes": ["watermark_lag_seconds", "timestamp", "account_name"]},
                        }
                    },
                    "max_lag": {"max": {"field": "watermark_lag_seconds"}},
                },
            },
            "kinds": {
                "terms": {"field": "kind", "size": 20},
                "aggs": {
                    "runs": {"cardinality": {"field": "flow_run_id"}},
                    "dead_lettered": {"sum": {"field": "dead_lettered"}},
                    "traces": {"sum": {"field": "traces"}},
                    "last": {"max": {"field": "timestamp"}},
                },
            },
            "lag": _histogram(
                "timestamp",
                tr,
                accounts={
                    "terms": {"field": "account_id", "size": 1000},
                    "aggs": {"lag": {"max": {"field": "watermark_lag_seconds"}}},
                },
            ),
        },
    }
    result = _search(client, HEALTH_INDEX, body)
    if result is None:
        return
    aggs = result.get("aggregations", {})
    health = HealthSummary(documents=_total(result))
    for bucket in _buckets(aggs.get("accounts")):
        hits = bucket.get("latest", {}).get("hits", {}).get("hits", [])
        source = hits[0].get("_source", {}) if hits else {}
        health.accounts.append(
            AccountHealth(
                account_id=str(bucket["key"]),
                account_name=source.get("account_name"),
                watermark_lag_seconds=_num(source.get("watermark_lag_seconds")),
                last_run_at=_parse_time(source.get("timestamp")),
                max_watermark_lag_seconds=_num(bucket.get("max_lag", {}).get("value")),
            )
        )
    for bucket in _buckets(aggs.get("kinds")):
        health.kinds.append(
            RunKindHealth(
                kind=str(bucket["key"]),
                runs=int(bucket.get("runs", {}).get("value") or 0),
                dead_lettered=int(_num(bucket.get("dead_lettered", {}).get("value")) or 0),
                traces=int(_num(bucket.get("traces", {}).get("value")) or 0),
                last_run_at=_parse_time(bucket.get("last", {}).get("value")),
            )
        )
    lag_buckets = _buckets(aggs.get("lag"))
    health.watermark_lag = _series_from_histogram(
        axis,
        lag_buckets,
        (
            (b["key"], str(a["key"]), _num(a.get("lag", {}).get("value")))
            for b in lag_buckets
            for a in _buckets(b.get("accounts"))
        ),
    )
    data.health = health if health.documents else None


# -------------------------------------------------------------------------------- formatting


def fmt_int(value: int | float) -> str:
    return f"{int(value):,}"


def fmt_seconds(value: float | None) -> str:
    """Human duration: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.001 else f"{value * 1000:.2f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds:02d} s"
    hours, rest = divmod(round(value), 3600)
    return f"{hours} h {rest // 60:02d} min"


def fmt_pct(value: float) -> str:
    if value == 0:
        return "0%"
    if value < 0.001:
        return "<0.1%"
    return f"{value * 100:.1f}%"


def fmt_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else DASH


def fmt_span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return fmt_seconds(seconds)


# ------------------------------------------------------------------------------- rich tables


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


# ------------------------------------------------------------------------------------ SVG charts

PALETTE = (
    "#3f7fbf",
    "#54b399",
    "#d36086",
    "#9170b8",
    "#d6bf57",
    "#da8b45",
    "#6dccb1",
    "#aa6556",
    "#e7664c",
    "#7b8794",
    "#b9a888",
    "#5a9e6f",
)
STATUS_COLORS = {
    "SUCCEEDED": "#3a9e7a",
    "FAILED": "#d9483b",
    "TIMED_OUT": "#e8913a",
    "ABORTED": "#8e7cc3",
    "RUNNING": "#3f7fbf",
    "PENDING_REDRIVE": "#7b8794",
    "UNKNOWN": "#b8c0cc",
    "ok": "#3a9e7a",
    "error": "#e2b53e",
    "throttle": "#e8913a",
    "fault": "#d9483b",
}
_FONT = 12
_AXIS = "#8a94a6"
_GRID = "#e6e9ef"
_TEXT = "#344054"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _el(tag: str, body: str | None = None, /, **attrs: Any) -> str:
    """One SVG element; attribute names use `_` for `-` (`class_` → `class`); body is markup."""
    rendered = []
    for key, value in attrs.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        rendered.append(f'{key.rstrip("_").replace("_", "-")}="{_esc(text)}"')
    head = f"<{tag} {' '.join(rendered)}"
    return f"{head}/>" if body is None else f"{head}>{body}</{tag}>"


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


_DURATION_STEPS = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _nice_ticks(maximum: float, count: int = 5, unit: str = "") -> list[float]:
    """0 … ≥ maximum in round steps (whole minutes / hours for durations of a minute or more)."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    if unit == "s" and raw > 30:
        step: float = next((d for d in _DURATION_STEPS if d >= raw), 86400 * math.ceil(raw / 86400))
    else:
        magnitude = 10 ** math.floor(math.log10(raw))
        multipliers = (1, 2, 5, 10) if unit == "" else (1, 2, 2.5, 5, 10)  # counts: whole numbers
        step = next(m * magnitude for m in multipliers if m * magnitude >= max(raw, 1 if unit == "" else raw))
    top = math.ceil(maximum / step - 1e-9) * step
    return [round(i * step, 10) for i in range(round(top / step) + 1)]


def _tick_label(value: float, unit: str) -> str:
    if unit == "s":
        if not value:
            return "0"
        if value < 1:
            return f"{value * 1000:g} ms"
        if value < 60 or value % 60:
            return f"{value:g} s"
        if value < 7200 or value % 3600:
            return f"{value / 60:g} min"
        return f"{value / 3600:g} h"
    if unit == "%":
        return f"{value:.0f}%"
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _bar_label(value: float, unit: str) -> str:
    if unit == "s":
        return fmt_seconds(value)
    if unit == "%":
        return f"{value:.0f}%" if value >= 1 or value == 0 else "<1%"
    return fmt_int(value) if float(value).is_integer() else f"{value:.2f}"


def _text_width(text: str, size: int = _FONT) -> float:
    return len(text) * size * 0.58


def _svg_open(name: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{_esc(name)}" role="img" aria-label="{_esc(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="inherit" font-size="{_FONT}">'
    )


def _legend(items: Sequence[tuple[str, str, str]], x: float, y: float, width: float) -> tuple[str, float]:
    """(svg, height). items: (label, color, style) with style 'box' | 'line' | 'dash'."""
    parts: list[str] = ['<g class="legend">']
    cx, cy = x, y
    for label, color, style in items:
        item_width = 22 + _text_width(label) + 16
        if cx + item_width > x + width and cx > x:
            cx, cy = x, cy + 18
        if style == "box":
            parts.append(f'<rect x="{cx:.1f}" y="{cy - 9:.1f}" width="12" height="12" rx="2" fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="5 3"' if style == "dash" else ""
            parts.append(
                f'<line x1="{cx:.1f}" y1="{cy - 3:.1f}" x2="{cx + 14:.1f}" y2="{cy - 3:.1f}" '
                f'stroke="{color}" stroke-width="2.5"{dash}/>'
            )
        parts.append(f'<text x="{cx + 18:.1f}" y="{cy + 1:.1f}" fill="{_TEXT}">{_esc(label)}</text>')
        cx += item_width
    parts.append("</g>")
    return "".join(parts), (cy - y) + 22


def _empty_chart(name: str, message: str, width: int = 640, height: int = 120) -> str:
    return (
        _svg_open(name, width, height, message)
        + _el("rect", x=0.5, y=0.5, width=width - 1, height=height - 1, rx=6, fill="#fafbfc", stroke=_GRID)
        + _el("text", _esc(message), x=width / 2, y=height / 2 + 4, text_anchor="middle", fill=_AXIS)
        + "</svg>"
    )


def svg_hbar(
    name: str,
    rows: Sequence[tuple[str, dict[str, float]]],
    keys: Sequence[str],
    colors: dict[str, str],
    *,
    unit: str = "",
    x_title: str = "",
    width: int = 600,
) -> str:
    """Horizontal (stacked) bars: one row per label, one segment per key; legend when >1 key."""
    if not rows:
        return _empty_chart(name, "no data")
    label_width = min(220, max(_text_width(label) for label, _ in rows) + 14)
    totals = [sum(values.get(k, 0) for k in keys) for _, values in rows]
    ticks = _nice_ticks(max(totals) if totals else 1, unit=unit)
    total_width = max(_text_width(_bar_label(t, unit)) for t in totals) + 14
    plot_left, plot_right = label_width + 8, width - max(24, total_width)
    legend_svg, legend_height = ("", 0.0)
    if len(keys) > 1:
        legend_svg, legend_height = _legend(
            [(k, colors[k], "box") for k in keys], plot_left, 16, plot_right - plot_left
        )
    top = 10 + legend_height
    bar, gap = 22, 10
    plot_height = len(rows) * (bar + gap)
    height = int(top + plot_height + 46)
    scale = (plot_right - plot_left) / ticks[-1]
    parts = [_svg_open(name, width, height, f"{name} chart"), legend_svg]
    for tick in ticks:
        x = plot_left + tick * scale
        parts.append(_el("line", x1=x, y1=top - 4, x2=x, y2=top + plot_height, stroke=_GRID))
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_height + 16:.1f}" text-anchor="middle" fill="{_AXIS}">'
            f"{_esc(_tick_label(tick, unit))}</text>"
        )
    for i, (label, values) in enumerate(rows):
        y = top + i * (bar + gap) + gap / 2
        shown = (
            label
            if _text_width(label) <= label_width - 10
            else label[: int((label_width - 10) / (_FONT * 0.58)) - 1] + "…"
        )
        parts.append(
            f'<text x="{plot_left - 8:.1f}" y="{y + bar / 2 + 4:.1f}" text-anchor="end" fill="{_TEXT}">'
            f"<title>{_esc(label)}</title>{_esc(shown)}</text>"
        )
        x = plot_left
        for key in keys:
            value = values.get(key, 0)
            if not value:
                continue
            w = value * scale
            text_value = _bar_label(value, unit)
            tip = f"<title>{_esc(label)} · {_esc(key)}: {_esc(text_value)}</title>"
            parts.append(_el("rect", tip, class_="bar", x=x, y=y, width=max(w, 1), height=bar, fill=colors[key]))
            if len(keys) > 1 and w > _text_width(text_value, 11) + 8:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + bar / 2 + 4:.1f}" text-anchor="middle" fill="#fff" '
                    f'font-size="11" font-weight="600">{_esc(text_value)}</text>'
                )
            x += w
        total = totals[i]
        total_text = _bar_label(total, unit)
        if total:
            parts.append(_el("text", _esc(total_text), x=x + 6, y=y + bar / 2 + 4, fill=_TEXT, font_weight=600))
    parts.append(_el("line", x1=plot_left, y1=top - 4, x2=plot_left, y2=top + plot_height, stroke=_AXIS))
    if x_title:
        middle = (plot_left + plot_right) / 2
        parts.append(_el("text", _esc(x_title), x=middle, y=height - 8, text_anchor="middle", fill=_AXIS))
    parts.append("</svg>")
    return "".join(parts)


def _time_labels(times: Sequence[datetime], interval: int) -> list[str]:
    span_days = (times[-1] - times[0]).total_seconds() / 86400 if len(times) > 1 else 0
    labels = []
    for t in times:
        if interval >= 86400:
            labels.append(t.strftime("%m-%d"))
        elif span_days >= 1 or (t.hour == 0 and t.minute == 0):
            labels.append(t.strftime("%m-%d %H:%M"))
        else:
            labels.append(t.strftime("%H:%M"))
    return labels


def svg_time_chart(
    name: str,
    ts: TimeSeries,
    *,
    interval: int,
    kind: str = "stacked",  # stacked (columns) | lines
    labels: dict[str, str] | None = None,
    colors: dict[str, str] | None = None,
    styles: dict[str, str] | None = None,  # series → 'line' | 'dash'
    unit: str = "",
    y_title: str = "",
    width: int = 960,
    height: int = 300,
) -> str:
    """Columns (stacked) or lines over a UTC time axis, with y ticks, x labels, legend."""
    names = [n for n, values in ts.series.items() if any(v is not None for v in values)]
    if not ts.times or not names:
        return _empty_chart(name, "no data in this time range", width)
    labels = labels or {}
    colors = colors or {n: _color(i) for i, n in enumerate(names)}
    styles = styles or {}
    legend_items = [(labels.get(n, n), colors[n], "box" if kind == "stacked" else styles.get(n, "line")) for n in names]
    n = len(ts.times)
    if kind == "stacked":
        peak = max(sum(ts.series[s][i] or 0 for s in names) for i in range(n))
    else:
        peak = max(v for s in names for v in ts.series[s] if v is not None)
    ticks = _nice_ticks(peak, unit=unit)
    left = int(max(_text_width(_tick_label(t, unit)) for t in ticks) + (34 if y_title else 14))
    legend_svg, legend_height = _legend(legend_items, left, 16, width - left - 16)
    top, right = 18 + legend_height, width - 16
    bottom = height + legend_height - 40
    y_scale = (bottom - top) / ticks[-1]
    slot = (right - left) / n
    total_height = int(bottom + 40)
    parts = [_svg_open(name, width, total_height, f"{name} chart"), legend_svg]
    for tick in ticks:
        y = bottom - tick * y_scale
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{_GRID}"/>')
        label = _esc(_tick_label(tick, unit))
        parts.append(_el("text", label, x=left - 6, y=y + 4, text_anchor="end", fill=_AXIS))
    if y_title:
        turn = f"translate(13 {(top + bottom) / 2:.1f}) rotate(-90)"
        parts.append(_el("text", _esc(y_title), transform=turn, text_anchor="middle", fill=_AXIS))
    tick_labels = _time_labels(ts.times, interval)
    every = max(1, math.ceil(n / max(1, int((right - left) / (_text_width(max(tick_labels, key=len)) + 14)))))
    for i, text in enumerate(tick_labels):
        x = left + slot * (i + 0.5)
        if i % every == 0:
            parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="{_AXIS}"/>')
            parts.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" fill="{_AXIS}">{_esc(text)}</text>')
    if kind == "stacked":
        bar = max(1.0, slot * 0.72)
        for i, t in enumerate(ts.times):
            y = float(bottom)
            x = left + slot * i + (slot - bar) / 2
            for s in names:
                value = ts.series[s][i] or 0
                if not value:
                    continue
                h = value * y_scale
                y -= h
                tip = (
                    f"<title>{_esc(t.strftime('%Y-%m-%d %H:%M'))} UTC · {_esc(labels.get(s, s))}: "
                    f"{_esc(_tick_label(value, unit))}</title>"
                )
                parts.append(_el("rect", tip, class_="bar", x=x, y=y, width=bar, height=max(h, 0.5), fill=colors[s]))
    else:
        for s in names:
            dash = ' stroke-dasharray="6 4"' if styles.get(s) == "dash" else ""
            # Empty buckets are skipped, not drawn as zero: the line joins the buckets with data.
            run = [(left + slot * (i + 0.5), bottom - v * y_scale) for i, v in enumerate(ts.series[s]) if v is not None]
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(
                    f'<polyline class="series" points="{points}" fill="none" stroke="{colors[s]}" '
                    f'stroke-width="2" stroke-linejoin="round" opacity="0.9"{dash}/>'
                )
            for i, point in enumerate(ts.series[s]):
                if point is None:
                    continue
                x, y = left + slot * (i + 0.5), bottom - point * y_scale
                parts.append(
                    f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colors[s]}">'
                    f"<title>{_esc(ts.times[i].strftime('%Y-%m-%d %H:%M'))} UTC · {_esc(labels.get(s, s))}: "
                    f"{_esc(_tick_label(point, unit))}</title></circle>"
                )
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_AXIS}"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{_AXIS}"/>')
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{total_height - 6}" text-anchor="middle" fill="{_AXIS}">'
        f"time (UTC, {_esc(fmt_span(interval))} buckets)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _decade(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def svg_latency(name: str, services: Sequence[ServiceStats], width: int = 960) -> str:
    """Per service: a p50→p99 range on a log axis with p50/p90/p95/p99 markers."""
    rows = [s for s in services if s.latency_p50 is not None][:20]
    if not rows:
        return _empty_chart(name, "no service latencies in this time range", width)
    markers = (("p50", "#3f7fbf"), ("p90", "#54b399"), ("p95", "#e8913a"), ("p99", "#d9483b"))
    values = [
        v for s in rows for v in (s.latency_p50, s.latency_p90, s.latency_p95, s.latency_p99) if v is not None and v > 0
    ]
    low = 10 ** math.floor(math.log10(min(values))) if values else 0.001
    high = 10 ** math.ceil(math.log10(max(values))) if values else 1.0
    if high <= low:
        high = low * 10
    label_width = min(260, max(_text_width(s.service) for s in rows) + 14)
    left, right = label_width + 8, width - 24
    legend_svg, legend_height = _legend([(m, c, "box") for m, c in markers], left, 16, right - left)
    top = 10 + legend_height
    row_h = 24
    bottom = top + row_h * len(rows)
    height = int(bottom + 44)

    def x_of(v: float) -> float:
        v = max(v, low)
        return left + (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low)) * (right - left)

    parts = [_svg_open(name, width, height, "latency percentiles per service"), legend_svg]
    decade = low
    while decade <= high * 1.0001:
        x = x_of(decade)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="{_GRID}"/>')
        parts.append(_el("text", _esc(_decade(decade)), x=x, y=bottom + 16, text_anchor="middle", fill=_AXIS))
        decade *= 10
    for i, s in enumerate(rows):
        y = top + i * row_h + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{_TEXT}">{_esc(s.service)}</text>')
        p50, p99 = s.latency_p50 or low, s.latency_p99 or s.latency_p50 or low
        parts.append(
            _el(
                "line",
                x1=x_of(p50),
                y1=y,
                x2=x_of(p99),
                y2=y,
                stroke="#c9d3e3",
                stroke_width=8,
                stroke_linecap="round",
            )
        )
        for (label, color), value in zip(
            markers, (s.latency_p50, s.latency_p90, s.latency_p95, s.latency_p99), strict=True
        ):
            if value is None:
                continue
            tip = f"<title>{_esc(s.service)} {label}: {_esc(fmt_seconds(value))}</title>"
            parts.append(
                _el(
                    "circle",
                    tip,
                    class_="point",
                    cx=x_of(value),
                    cy=y,
                    r=5,
                    fill=color,
                    stroke="#fff",
                    stroke_width=1.5,
                )
            )
    parts.append(f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{bottom}" stroke="{_AXIS}"/>')
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="{_AXIS}">'
        "segment duration (log scale)</text></svg>"
    )
    return "".join(parts)


# ----------------------------------------------------------------------------------------- HTML

_CSS = """
:root { --ink:#1d2939; --muted:#667085; --line:#e4e7ec; --bg:#f5f7fa; --card:#fff; --accent:#3f7fbf;
  --bad:#d9483b; --warn:#e8913a; --good:#3a9e7a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#17233a; color:#fff; padding:28px 40px 24px; }
header h1 { margin:0 0 6px; font-size:26px; font-weight:650; letter-spacing:.2px; }
header .meta { color:#c5cfdf; font-size:13px; display:flex; flex-wrap:wrap; gap:6px 22px; }
header .meta b { color:#fff; font-weight:600; }
main { max-width:1280px; margin:0 auto; padding:24px 40px 48px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(138px, 1fr)); gap:14px;
  margin:4px 0 22px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
.card .value { font-size:26px; font-weight:650; margin-top:2px; font-variant-numeric:tabular-nums; }
.card .sub { color:var(--muted); font-size:12px; }
.card.bad .value { color:var(--bad); }
.card.warn .value { color:var(--warn); }
.card.good .value { color:var(--good); }
section { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:20px 24px 22px;
  margin:0 0 22px; }
section h2 { font-size:18px; margin:0 0 4px; }
section p.lead { color:var(--muted); margin:0 0 14px; }
h3 { font-size:14px; margin:18px 0 8px; color:#344054; }
.grid2 { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:24px; }
.grid21 { display:grid; grid-template-columns:minmax(0,2fr) minmax(0,1fr); gap:24px; }
@media (max-width: 1000px) {
  .grid2, .grid21 { grid-template-columns:1fr; }
  main, header { padding-left:16px; padding-right:16px; }
}
figure { margin:0; }
figcaption { font-weight:600; font-size:13px; color:#344054; margin:6px 0 4px; }
svg.chart { display:block; max-width:100%; height:auto; }
table { width:100%; border-collapse:collapse; font-size:13px; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.4px;
  background:#fafbfc; }
td.num, th.num { text-align:right; white-space:nowrap; }
td .time { white-space:nowrap; }
tr:hover td { background:#f8fafc; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:11.5px; font-weight:600;
  color:#fff; white-space:nowrap; }
.rate { display:inline-flex; align-items:center; gap:6px; justify-content:flex-end; }
.rate .track { width:64px; height:6px; background:#eef1f5; border-radius:3px; overflow:hidden; }
.rate .fill { height:6px; border-radius:3px; }
.muted { color:var(--muted); }
.notes { color:#7a5b00; background:#fff8e1; border:1px solid #f5e3a3; border-radius:8px; padding:10px 14px;
  margin:0 0 22px; }
.notes li { margin:2px 0; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 0 32px; }
.wrap { overflow-x:auto; }
"""


def _card(label: str, value: str, sub: str = "", tone: str = "") -> str:
    sub_html = f'<div class="sub">{_esc(sub)}</div>' if sub else ""
    return (
        f'<div class="card {tone}"><div class="label">{_esc(label)}</div>'
        f'<div class="value">{_esc(value)}</div>{sub_html}</div>'
    )


def _pill(status: str | None) -> str:
    if not status:
        return ""
    color = STATUS_COLORS.get(status, "#7b8794")
    return f'<span class="pill" style="background:{color}">{_esc(status)}</span>'


def _rate(value: float, color: str) -> str:
    width = min(100.0, value * 100)
    return (
        f'<span class="rate">{_esc(fmt_pct(value))}<span class="track">'
        f'<span class="fill" style="display:block;width:{width:.1f}%;background:{color}">'
        "</span></span></span>"
    )


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]], empty: str) -> str:
    """headers: (title, numeric); cells are already-escaped HTML."""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if num else f"<td>{c}</td>" for c, (_, num) in zip(row, headers, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    if not body:
        return f'<p class="muted">{_esc(empty)}</p>'
    head = "".join(f'<th class="num">{_esc(h)}</th>' if num else f"<th>{_esc(h)}</th>" for h, num in headers)
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _short_arn(arn: str | None, name: str | None) -> str:
    if not arn and not name:
        return ""
    shown = name or (arn or "").rsplit(":", 1)[-1]
    if len(shown) > 40:
        shown = shown[:18] + "…" + shown[-18:]
    return f'<span class="mono" title="{_esc(arn or name)}">{_esc(shown)}</span>'


def _execution_rows(rows: Sequence[ExecutionRow], accounts: dict[str, AccountStats]) -> list[list[str]]:
    out = []
    for r in rows:
        account = accounts.get(r.account_id or "")
        account_label = account.label if account else (r.account_name or r.account_id or "")
        error = r.error or ""
        cause = f'<div class="muted">{_esc(r.cause[:160])}</div>' if r.cause else ""
        out.append(
            [
                '<span class="time">' + _esc(fmt_time(r.start)) + "</span>",
                f'{_esc(account_label)}<div class="muted mono">{_esc(r.account_id or "")}</div>',
                _esc(r.state_machine or ""),
                _pill(r.status)
                + (
                    ' <span class="muted" title="status inferred from the trace">*</span>'
                    if r.status_source == "trace"
                    else ""
                ),
                _esc(fmt_seconds(r.duration_seconds)),
                f"<code>{_esc(error)}</code>{cause}" if error else cause,
                _short_arn(r.execution_arn, r.execution_name),
            ]
        )
    return out


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document (inline CSS and SVG, no script, nothing fetched)."""
    head = data.headline
    tr = data.range
    accounts = {a.account_id: a for a in data.accounts}
    machines = data.state_machines
    machine_colors = {m.state_machine: _color(i) for i, m in enumerate(sorted(machines, key=lambda m: m.state_machine))}
    statuses = [s for s in STATUS_ORDER if s in data.executions_by_status] + [
        s for s in data.executions_by_status if s not in STATUS_ORDER
    ]

    cards = [
        _card("Traces", fmt_int(head.traces), f"{head.accounts} accounts · {head.environments} environments"),
        _card(
            "Problem traces",
            fmt_pct((head.traces - head.ok_traces) / head.traces) if head.traces else DASH,
            f"{head.error_traces} error · {head.fault_traces} fault · {head.throttle_traces} throttle",
            "warn" if head.traces and head.ok_traces < head.traces else "",
        ),
        _card("Executions", fmt_int(head.executions), f"{head.state_machines} state machines"),
        _card(
            "Failed executions",
            fmt_int(head.failed_executions),
            fmt_pct(head.failed_executions / head.executions) + " of executions" if head.executions else "",
            "bad" if head.failed_executions else "good",
        ),
        _card(
            "Execution time",
            fmt_seconds(head.execution_seconds) if head.executions else DASH,
            "sum of all executions",
        ),
        _card("Services", fmt_int(head.services), f"{fmt_int(head.service_segments)} service segments"),
        _card("Exceptions", fmt_int(head.exception_segments), f"{len(data.top_exceptions)} distinct types"),
    ]
    if data.health and data.health.accounts:
        lags = [a.watermark_lag_seconds for a in data.health.accounts if a.watermark_lag_seconds is not None]
        dead = sum(k.dead_lettered for k in data.health.kinds)
        cards.append(
            _card(
                "Max watermark lag",
                fmt_seconds(max(lags)) if lags else DASH,
                f"{dead} dead-lettered",
                "bad" if dead else "",
            )
        )

    # ---- Step Functions
    status_chart = svg_hbar(
        "execution-status",
        [(m.state_machine, {k: float(v) for k, v in m.by_status.items()}) for m in machines],
        statuses,
        {s: STATUS_COLORS.get(s, "#7b8794") for s in statuses},
        x_title="executions",
    )
    sum_chart = svg_hbar(
        "execution-duration-sum",
        [(m.state_machine, {"duration": m.duration_sum}) for m in sorted(machines, key=lambda m: -m.duration_sum)],
        ["duration"],
        {"duration": "#3f7fbf"},
        unit="s",
        x_title="summed execution duration",
    )
    pct_series: dict[str, list[float | None]] = {}
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
                pct_series[name] = source.series[machine]
                styles[name], colors[name], labels[name] = (
                    style,
                    machine_colors.get(machine, "#7b8794"),
                    f"{machine} · {key}",
                )
    pct_chart = svg_time_chart(
        "execution-duration-percentiles",
        TimeSeries(times=data.execution_duration_p50.times or data.execution_duration_p95.times, series=pct_series),
        interval=tr.interval_seconds,
        kind="lines",
        colors=colors,
        styles=styles,
        labels=labels,
        unit="s",
        y_title="execution duration",
    )
    sum_time_chart = svg_time_chart(
        "execution-duration-sum-over-time",
        data.execution_duration_sum,
        interval=tr.interval_seconds,
        kind="stacked",
        colors={m: machine_colors.get(m, "#7b8794") for m in data.execution_duration_sum.series},
        unit="s",
        y_title="summed duration",
        height=240,
    )
    machine_rows = [
        [
            _esc(m.state_machine),
            _esc(fmt_int(m.executions)),
            " ".join(f"{_pill(k)} {v}" for k, v in m.by_status.items()),
            _esc(fmt_seconds(m.duration_sum)),
            _esc(fmt_seconds(m.duration_avg)),
            _esc(fmt_seconds(m.duration_p50)),
            _esc(fmt_seconds(m.duration_p95)),
            _esc(fmt_seconds(m.duration_max)),
        ]
        for m in machines
    ]
    machine_table = _table(
        [
            ("State machine", False),
            ("Executions", True),
            ("By status", False),
            ("Total", True),
            ("Average", True),
            ("p50", True),
            ("p95", True),
            ("Max", True),
        ],
        machine_rows,
        "No Step Functions executions in this time range.",
    )

    # ---- traffic
    account_labels = {a.account_id: a.label for a in data.accounts}
    traffic_chart = svg_time_chart(
        "traces-per-account",
        data.traces_over_time,
        interval=tr.interval_seconds,
        kind="stacked",
        labels=account_labels,
        colors={a.account_id: _color(i) for i, a in enumerate(sorted(data.accounts, key=lambda a: a.label))},
        y_title="traces",
    )
    account_rows = [
        [
            f'{_esc(a.account_name or "")}<div class="muted mono">{_esc(a.account_id)}</div>',
            _esc(a.environment or ""),
            _esc(fmt_int(a.traces)),
            _esc(fmt_int(a.by_status.get("ok", 0))),
            _esc(fmt_int(a.by_status.get("error", 0))),
            _esc(fmt_int(a.by_status.get("fault", 0))),
            _esc(fmt_int(a.by_status.get("throttle", 0))),
            _esc(fmt_int(a.executions)),
        ]
        for a in data.accounts
    ]
    account_table = _table(
        [
            ("Account", False),
            ("Environment", False),
            ("Traces", True),
            ("OK", True),
            ("Error", True),
            ("Fault", True),
            ("Throttle", True),
            ("Executions", True),
        ],
        account_rows,
        "No traces in this time range.",
    )
    env_chart = svg_hbar(
        "traces-per-environment",
        [(env, {"traces": float(n)}) for env, n in sorted(data.traces_by_environment.items(), key=lambda kv: -kv[1])],
        ["traces"],
        {"traces": "#54b399"},
        x_title="traces",
        width=380,
    )

    # ---- services
    service_chart = svg_hbar(
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
    )
    service_rows = [
        [
            _esc(s.service),
            _esc(fmt_int(s.segments)),
            _rate(s.error_rate, STATUS_COLORS["error"]),
            _rate(s.fault_rate, STATUS_COLORS["fault"]),
            _rate(s.throttle_rate, STATUS_COLORS["throttle"]),
            _esc(fmt_seconds(s.latency_p50)),
            _esc(fmt_seconds(s.latency_p90)),
            _esc(fmt_seconds(s.latency_p95)),
            _esc(fmt_seconds(s.latency_p99)),
        ]
        for s in data.services
    ]
    service_table = _table(
        [
            ("Service", False),
            ("Segments", True),
            ("Error", True),
            ("Fault", True),
            ("Throttle", True),
            ("p50", True),
            ("p90", True),
            ("p95", True),
            ("p99", True),
        ],
        service_rows,
        "No service segments in this time range.",
    )
    latency_chart = svg_latency("service-latency", data.services)

    # ---- exceptions, executions
    exception_rows = [
        [
            f"<code>{_esc(e.exception_type)}</code>",
            _esc(fmt_int(e.occurrences)),
            _esc(fmt_int(e.traces)),
            _esc(", ".join(e.services)),
            _esc((e.sample_message or "")[:200]),
        ]
        for e in data.top_exceptions
    ]
    exception_table = _table(
        [
            ("Exception", False),
            ("Segments", True),
            ("Traces", True),
            ("Services", False),
            ("Example message", False),
        ],
        exception_rows,
        "No exceptions recorded in this time range.",
    )
    execution_headers = [
        ("Start", False),
        ("Account", False),
        ("State machine", False),
        ("Status", False),
        ("Duration", True),
        ("Error", False),
        ("Execution", False),
    ]
    slow_table = _table(execution_headers, _execution_rows(data.slowest_executions[:15], accounts), "No executions.")
    failed_table = _table(execution_headers, _execution_rows(data.failed_executions, accounts), "No failed executions.")
    failed_more = (
        f'<p class="muted">Showing the latest {len(data.failed_executions)} of {data.failed_executions_total}.</p>'
        if data.failed_executions_total > len(data.failed_executions)
        else ""
    )

    # ---- health
    health_html = ""
    if data.health:
        health = data.health
        lag_chart = svg_time_chart(
            "watermark-lag",
            health.watermark_lag,
            interval=tr.interval_seconds,
            kind="lines",
            labels=account_labels,
            unit="s",
            y_title="watermark lag",
            height=220,
        )
        health_rows = [
            [
                _esc(k.kind),
                _esc(fmt_int(k.runs)),
                _esc(fmt_int(k.traces)),
                f'<b style="color:var(--bad)">{k.dead_lettered}</b>' if k.dead_lettered else "0",
                '<span class="time">' + _esc(fmt_time(k.last_run_at)) + "</span>",
            ]
            for k in health.kinds
        ]
        lag_rows = [
            [
                _esc(account_labels.get(a.account_id, a.account_name or a.account_id)),
                f'<span class="mono">{_esc(a.account_id)}</span>',
                _esc(fmt_seconds(a.watermark_lag_seconds)),
                _esc(fmt_seconds(a.max_watermark_lag_seconds)),
                '<span class="time">' + _esc(fmt_time(a.last_run_at)) + "</span>",
            ]
            for a in health.accounts
        ]
        health_html = f"""
<section id="health"><h2>Pipeline health</h2>
<p class="lead">From the per-run documents in <code>{HEALTH_INDEX}</code> ({health.documents} in range).</p>
<figure><figcaption>Watermark lag per account</figcaption>{lag_chart}</figure>
<div class="grid2"><div><h3>Runs by kind</h3>{
            _table(
                [
                    ("Kind", False),
                    ("Runs", True),
                    ("Traces", True),
                    ("Dead-lettered", True),
                    ("Last run", False),
                ],
                health_rows,
                "No runs.",
            )
        }</div>
<div><h3>Watermarks</h3>{
            _table(
                [
                    ("Account", False),
                    ("Id", False),
                    ("Latest lag", True),
                    ("Max lag", True),
                    ("Last sweep", False),
                ],
                lag_rows,
                "No sweeps.",
            )
        }</div></div></section>"""

    notes = "".join(f"<li>{_esc(n)}</li>" for n in data.notes)
    notes_html = f'<ul class="notes">{notes}</ul>' if notes else ""
    trace_note = (
        '<p class="muted">* status inferred from the trace (the sweep); the collect flow records the exact '
        "DescribeExecution status.</p>"
        if any(r.status_source == "trace" for r in [*data.failed_executions, *data.slowest_executions])
        else ""
    )
    title = _esc(data.title)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} · {_esc(fmt_time(tr.start))} → {_esc(fmt_time(tr.end))}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>{title}</h1><div class="meta">
<span>Time range <b>{_esc(fmt_time(tr.start))}</b> → <b>{_esc(fmt_time(tr.end))}</b>
 (last {_esc(fmt_span(tr.since_seconds))})</span>
<span>Generated <b>{_esc(fmt_time(data.generated_at))}</b></span>
<span>Accounts <b>{head.accounts}</b></span></div></header>
<main>
<div class="cards" id="headline">{"".join(cards)}</div>
{notes_html}
<section id="step-functions"><h2>Step Functions</h2>
<p class="lead">Executions whose trace started in the time range, by state machine.</p>
<div class="grid2">
<figure><figcaption>Execution status of a step function</figcaption>{status_chart}</figure>
<figure><figcaption>Sum of step function execution duration</figcaption>{sum_chart}</figure>
</div>
<figure><figcaption>Execution duration over time: p50 (solid) and p95 (dashed) per state machine</figcaption>
{pct_chart}</figure>
<figure><figcaption>Summed execution duration over time per state machine</figcaption>
{sum_time_chart}</figure>
<h3>State machines</h3>{machine_table}
</section>
<section id="traffic"><h2>Traffic</h2>
<p class="lead">Traces per account and environment.</p>
<figure><figcaption>Traces per account over time</figcaption>{traffic_chart}</figure>
<div class="grid21"><div><h3>Accounts</h3>{account_table}</div>
<figure><figcaption>Traces per environment</figcaption>{env_chart}</figure></div>
</section>
<section id="services"><h2>Services</h2>
<p class="lead">Service segments (not subsegments): X-Ray error = 4xx, throttle = 429, fault = 5xx.</p>
<figure><figcaption>Error, fault and throttle rate per service</figcaption>{service_chart}</figure>
<figure><figcaption>Latency percentiles per service</figcaption>{latency_chart}</figure>
<h3>Services</h3>{service_table}
</section>
<section id="exceptions"><h2>Top exceptions</h2>{exception_table}</section>
<section id="failed"><h2>Failed executions</h2>{failed_table}{failed_more}{trace_note}</section>
<section id="slowest"><h2>Slowest executions</h2>{slow_table}</section>
{health_html}
</main>
<footer>xraylake · generated from the OpenSearch aliases <code>{TRACES_ALIAS}</code> and
 <code>{SEGMENTS_ALIAS}</code> · all times UTC · {_esc(fmt_span(tr.interval_seconds))} buckets</footer>
</body></html>
"""


# ------------------------------------------------------------------------------------ entry point


def run_report(config: Any, since: timedelta | str, out_path: str | Path | None = "report.html") -> ReportData:
    """Build the report against the configured OpenSearch and write the HTML file (if `out_path`)."""
    from tasks.index import client_for

    window = parse_since(since) if isinstance(since, str) else since
    client = client_for(config.opensearch)
    data = build_report(client, window)
    if out_path is not None:
        path = Path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(data), encoding="utf-8")
    return data
