"""The report's data: pydantic models (also the `--json` output) and the `--since` parser."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from pydantic import BaseModel, Field

from tasks import mappings

FAILED_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
STATUS_ORDER = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "RUNNING", "PENDING_REDRIVE", "UNKNOWN")


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


XRAY_SDK_END_OF_SUPPORT = date(2027, 2, 25)  # AWS X-Ray developer guide, "SDK and daemon end of support"


class MigrationRow(BaseModel):
    """One (account, service): where its traces are read and what instruments its segments."""

    account_id: str
    account_name: str | None = None
    service: str
    segments: int = 0
    by_store: dict[str, int] = Field(default_factory=dict)  # xray (X-Ray API) | spans (aws/spans)
    by_instrumentation: dict[str, int] = Field(default_factory=dict)  # xray-sdk | opentelemetry | unknown
    sdks: list[str] = Field(default_factory=list)

    @property
    def store(self) -> str:
        return " + ".join(sorted(self.by_store)) or "xray"

    @property
    def instrumentation(self) -> str:
        return " + ".join(sorted(self.by_instrumentation)) or "unknown"

    @property
    def on_xray_sdk(self) -> bool:
        return self.by_instrumentation.get("xray-sdk", 0) > 0


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
    reader: str | None = None  # xray | spans | both: the last sweep's reader (tasks.span_records)
    reader_reason: str | None = None
    indexed_percentage: float | None = None


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
    migration: list[MigrationRow] = Field(default_factory=list, description="per account and service")
    xray_sdk_end_of_support: date = XRAY_SDK_END_OF_SUPPORT
    slowest_executions: list[ExecutionRow] = Field(default_factory=list)
    failed_executions: list[ExecutionRow] = Field(default_factory=list)
    failed_executions_total: int = 0
    health: HealthSummary | None = None
    notes: list[str] = Field(default_factory=list)
    traces_alias: str = Field(default=mappings.traces_alias(), description="where traces were read")
    segments_alias: str = Field(default=mappings.segments_alias(), description="where segments were read")


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
