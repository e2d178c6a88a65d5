"""OpenSearch aggregations → `ReportData` (`build_report`); an absent index or alias reads as no data."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks import mappings
from tasks.mappings import HEALTH_INDEX
from tasks.report.model import (
    FAILED_STATUSES,
    STATUS_ORDER,
    AccountHealth,
    AccountStats,
    ExceptionStats,
    ExecutionRow,
    Headline,
    HealthSummary,
    MigrationRow,
    ReportData,
    RunKindHealth,
    ServiceStats,
    StateMachineStats,
    TimeRange,
    TimeSeries,
)

MAX_ROWS = 25
MAX_BUCKETS = 48

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


def build_report(
    client: Any, since: timedelta, now: datetime | None = None, *, index_prefix: str = mappings.INDEX_PREFIX
) -> ReportData:
    """Everything the report shows, from OpenSearch aggregations over [now - since, now].

    `index_prefix` is the target's (`OpenSearchTarget.index_prefix`): it names the read aliases.
    """
    if since.total_seconds() <= 0:
        raise ValueError("since must be a positive duration")
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - since
    tr = TimeRange(start=start, end=end, since_seconds=since.total_seconds(), interval_seconds=choose_interval(since))
    axis = _time_axis(tr)
    in_range = _range_filter("start", start, end)
    data = ReportData(
        generated_at=datetime.now(UTC),
        range=tr,
        headline=Headline(),
        traces_alias=mappings.traces_alias(index_prefix),
        segments_alias=mappings.segments_alias(index_prefix),
    )
    _traffic(client, data, tr, axis, in_range)
    _executions(client, data, tr, axis, in_range)
    _services(client, data, in_range)
    _exceptions(client, data, in_range)
    _migration(client, data, in_range)
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
        data.notes.append(f"No traces in this time range (or the {data.traces_alias} alias does not exist yet).")
        if _only_spans(client, data.traces_alias):
            data.notes.append(
                f"This cluster holds Trace Analytics spans ({mappings.SPAN_INDEX_PREFIX}) but no "
                f"{data.traces_alias} index: its target's index profile is 'trace-analytics'. The report "
                "reads the X-Ray-shaped indices; see the spans in Trace Analytics, or query the Parquet lake."
            )
    return data


def _only_spans(client: Any, traces_alias: str) -> bool:
    """Whether the span alias exists and the traces alias does not (a `trace-analytics` target)."""
    from opensearchpy.exceptions import TransportError

    try:
        return bool(client.indices.exists(index=mappings.SPAN_INDEX_PREFIX)) and not client.indices.exists(
            index=traces_alias
        )
    except TransportError:
        return False


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
    result = _search(client, data.traces_alias, body)
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
    result = _search(client, data.traces_alias, body)
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
        data.traces_alias,
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
        data.traces_alias,
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
    _fill_errors_from_segments(client, data.segments_alias, data.failed_executions)


def _fill_errors_from_segments(client: Any, segments_alias: str, rows: list[ExecutionRow]) -> None:
    """Executions collected by the sweep carry no DescribeExecution error: use the state machine
    segment's exception (the Fail state's error / States.Timeout) instead."""
    missing = {row.trace_id for row in rows if not row.error and row.trace_id}
    if not missing:
        return
    result = _search(
        client,
        segments_alias,
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


def _migration(client: Any, data: ReportData, in_range: dict[str, Any]) -> None:
    """Per account and service (service segments): which store the traces came from and whether
    an X-Ray SDK or OpenTelemetry made the segments — the plan for the X-Ray SDK end of support.
    Documents from before these fields existed count as the X-Ray API and `unknown`."""
    body = {
        "size": 0,
        "query": _bool_query(in_range, {"term": {"is_subsegment": False}}),
        "aggs": {
            "accounts": {
                "terms": {"field": "account_id", "size": 1000},
                "aggs": {
                    "name": {"terms": {"field": "account_name", "size": 1}},
                    "services": {
                        "terms": {"field": "service_name", "size": 200},
                        "aggs": {
                            "stores": {"terms": {"field": "source_store", "size": 5, "missing": "xray"}},
                            "kinds": {"terms": {"field": "instrumentation", "size": 5, "missing": "unknown"}},
                            "sdks": {"terms": {"field": "sdk", "size": 5}},
                        },
                    },
                },
            }
        },
    }
    result = _search(client, data.segments_alias, body)
    if result is None:
        return
    for account in _buckets(result.get("aggregations", {}).get("accounts")):
        names = _buckets(account.get("name"))
        for service in _buckets(account.get("services")):
            data.migration.append(
                MigrationRow(
                    account_id=str(account["key"]),
                    account_name=names[0]["key"] if names else None,
                    service=str(service["key"]),
                    segments=int(service["doc_count"]),
                    by_store={b["key"]: int(b["doc_count"]) for b in _buckets(service.get("stores"))},
                    by_instrumentation={b["key"]: int(b["doc_count"]) for b in _buckets(service.get("kinds"))},
                    sdks=[str(b["key"]) for b in _buckets(service.get("sdks"))],
                )
            )
    data.migration.sort(key=lambda r: (not r.on_xray_sdk, r.account_name or r.account_id, r.service))
    on_sdk = [row for row in data.migration if row.on_xray_sdk]
    if on_sdk:
        days = (data.xray_sdk_end_of_support - data.generated_at.date()).days
        when = f"in {days} days" if days > 0 else f"{-days} days ago"
        data.notes.append(
            f"{len(on_sdk)} service(s) in {len({r.account_id for r in on_sdk})} account(s) still send segments "
            f"from an X-Ray SDK, which reaches end of support on {data.xray_sdk_end_of_support.isoformat()} "
            f"({when}): see Migration."
        )


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
    result = _search(client, data.segments_alias, body)
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
    result = _search(client, data.segments_alias, body)
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
                            "_source": {
                                "includes": [
                                    "watermark_lag_seconds",
                                    "timestamp",
                                    "account_name",
                                    "reader",
                                    "reader_reason",
                                    "indexed_percentage",
                                ]
                            },
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
                reader=source.get("reader"),
                reader_reason=source.get("reader_reason"),
                indexed_percentage=_num(source.get("indexed_percentage")),
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
