"""Collecting one (account, region): X-Ray → envelopes → the org queue (plain functions; the flows
wrap them in Prefect tasks).

The watermark of a sweep advances window by window, each time only after every envelope of that
window was accepted by SQS; a failure leaves it where the last complete window put it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from blocks import MemberAccount
from blocks.config import Config
from tasks import archive, queue, watermark, windows, xray
from tasks.aws import MemberSessions, log_client
from tasks.envelope import Envelope, Source, TimeWindow, WireMessage, build_envelope, encode, pack
from tasks.errors import TransientError
from tasks.ids import trace_id_problem
from tasks.redact import RedactionPolicy, redact_trace


@dataclass
class Collector:
    """What every collection needs: config, member sessions, log-account clients."""

    config: Config
    sessions: MemberSessions
    s3: Any
    sqs: Any
    limiters: xray.LimiterRegistry = field(default_factory=lambda: xray.DEFAULT_LIMITERS)
    redaction: RedactionPolicy | None = field(default_factory=RedactionPolicy)

    @classmethod
    def from_config(cls, config: Config, limiters: xray.LimiterRegistry | None = None) -> Collector:
        return cls(
            config=config,
            sessions=MemberSessions(config.roster),
            s3=log_client("s3", config.archive.region),
            sqs=log_client("sqs", config.queue.region),
            limiters=limiters or xray.DEFAULT_LIMITERS,
            redaction=RedactionPolicy() if config.redact_at_source else None,
        )

    @property
    def signing_key(self) -> str | None:
        return self.config.signing_keys[0].get_secret_value() if self.config.signing_keys else None

    def xray_client(self, account_id: str, region: str) -> Any:
        return xray.xray_client(self.sessions, account_id, region)


@dataclass
class WindowResult:
    window: dict[str, str]
    summaries: int = 0
    traces: int = 0
    envelopes: int = 0
    bytes: int = 0
    claim_checks: int = 0
    traces_refused: int = 0
    envelope_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)


@dataclass
class AccountResult:
    """One (account, region) of a sweep, backfill or collect; what the run artifact shows."""

    account_id: str
    account_name: str
    region: str
    status: str = "ok"  # ok | failed | idle | partial (a backfill's max_chunks ran out first)
    error: str | None = None
    error_kind: str | None = None
    windows: int = 0
    summaries: int = 0
    traces: int = 0
    envelopes: int = 0
    bytes: int = 0
    claim_checks: int = 0
    traces_refused: int = 0  # trace ids outside X-Ray's and W3C's formats: never sent
    throttles: int = 0
    retries: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    watermark_lag_seconds: float | None = None
    transaction_search: str = "unknown"
    path: str = "member-role"  # or monitoring-account (tasks/monitoring.py): how X-Ray was read
    seconds: float = 0.0
    envelope_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)

    def add_window(self, result: WindowResult) -> None:
        self.windows += 1
        self.summaries += result.summaries
        self.traces += result.traces
        self.envelopes += result.envelopes
        self.bytes += result.bytes
        self.claim_checks += result.claim_checks
        self.traces_refused += result.traces_refused
        self.envelope_ids += result.envelope_ids
        self.trace_ids += result.trace_ids

    def count_calls(self, stats: xray.XRayStats) -> None:
        """Throttles and retries the same way for every flow (unprocessed trace ids asked again count)."""
        self.throttles = int(stats.throttles)
        self.retries = int(stats.retries + stats.unprocessed_retried)

    def summary(self) -> dict[str, Any]:
        """Without the id lists (those are for tests and reconcile, not for tables)."""
        return {k: v for k, v in asdict(self).items() if k not in {"envelope_ids", "trace_ids"}}


def envelopes_for(
    traces: Sequence[dict[str, Any]],
    *,
    source: Source,
    account_id: str,
    region: str,
    window: TimeWindow | None = None,
    execution: dict[str, Any] | None = None,
    collected_at: datetime | None = None,
    redaction: RedactionPolicy | None = None,
    refused: list[dict[str, str]] | None = None,
) -> list[Envelope]:
    """Pack traces by start hour and size into envelopes (pure); `redaction` masks secrets first.

    A trace whose id is neither an X-Ray nor a W3C trace id is left out and, when `refused` is
    given, reported there ({trace_id, reason})."""
    collected = collected_at or datetime.now(UTC)
    valid = []
    for trace in traces:
        reason = trace_id_problem(trace.get("Id"))
        if reason is None:
            valid.append(trace)
        elif refused is not None:
            refused.append({"trace_id": repr(trace.get("Id"))[:80], "reason": reason})
    traces = valid
    if redaction is not None:
        traces = [redact_trace(t, redaction) for t in traces]
        if execution is not None:
            execution = redaction.redact_value(execution)
    return [
        build_envelope(
            source=source,
            account_id=account_id,
            region=region,
            traces=group,
            window=window,
            execution=execution,
            collected_at=collected,
            serialised=serialised,
        )
        for group, serialised in pack(traces, collected)
    ]


def send_envelopes(collector: Collector, envelopes: Sequence[Envelope]) -> tuple[list[WireMessage], queue.SendReport]:
    """Encode, upload claim-check payloads first, then send; raises if SQS did not take them all."""
    config = collector.config
    messages = [
        encode(e, collector.signing_key, config.archive.bucket, config.archive.payload_prefix) for e in envelopes
    ]
    for message in messages:
        if message.claim_check:
            ref, payload = message.claim_check
            archive.put_claim_check(collector.s3, ref, payload)
    report = queue.send_messages(collector.sqs, config.queue.queue_url, messages)
    return messages, report


def collect_window(
    collector: Collector,
    account: MemberAccount,
    region: str,
    window: windows.Window,
    *,
    source: Source,
    stats: xray.XRayStats,
    time_range_type: xray.TimeRangeType = "Event",
) -> WindowResult:
    client = collector.xray_client(account.account_id, region)
    limiter = collector.limiters.get(account.account_id, region)
    listing = xray.list_trace_ids(
        client, window, time_range_type, account_id=account.account_id, limiter=limiter, stats=stats
    )
    result = WindowResult(window=window.as_dict(), summaries=len(listing.summaries))
    if not listing.trace_ids:
        return result
    batch = xray.batch_get_traces(
        client, listing.trace_ids, account_id=account.account_id, limiter=limiter, stats=stats
    )
    if batch.unprocessed:
        # Never advance past traces we could not fetch: the caller's watermark stays put.
        raise TransientError(f"{len(batch.unprocessed)} trace ids stayed unprocessed in {account.account_id}/{region}")
    refused: list[dict[str, str]] = []
    envelopes = envelopes_for(
        batch.traces,
        source=source,
        account_id=account.account_id,
        region=region,
        window=TimeWindow(start=window.start, end=window.end),
        redaction=collector.redaction,
        refused=refused,
    )
    messages, report = send_envelopes(collector, envelopes)
    result.traces = len(batch.traces) - len(refused)
    result.traces_refused = len(refused)
    result.envelopes = report.sent
    result.bytes = report.bytes
    result.claim_checks = sum(1 for m in messages if m.claim_check)
    result.envelope_ids = [e.envelope_id for e in envelopes]
    result.trace_ids = [t["Id"] for e in envelopes for t in e.traces]
    return result


def sweep_account(
    collector: Collector,
    account: MemberAccount,
    region: str,
    *,
    now: datetime,
    lag: timedelta = watermark.DEFAULT_LAG,
    overlap: timedelta = watermark.DEFAULT_OVERLAP,
    max_window: timedelta = windows.HOUR,
    first_lookback: timedelta = watermark.DEFAULT_FIRST_LOOKBACK,
    time_range_type: xray.TimeRangeType = "Event",
    run_id: str = "",
) -> AccountResult:
    """Incremental sweep of one (account, region) from its watermark; never raises for the
    account's own failures (they are reported in the result so other accounts go on)."""
    started = time.monotonic()
    result = AccountResult(account.account_id, account.name, region)
    stats = xray.XRayStats()
    store = collector.config.archive
    try:
        mark = watermark.read(collector.s3, store, account.account_id, region)
        result.watermark_before = mark.high_water.isoformat() if mark.high_water else None
        span = watermark.sweep_range(mark.high_water, now, lag, overlap, first_lookback)
        if span is None:
            result.status = "idle"
        else:
            client = collector.xray_client(account.account_id, region)
            state = xray.detect_transaction_search(
                client,
                account_id=account.account_id,
                limiter=collector.limiters.get(account.account_id, region),
            )
            result.transaction_search = state.status.value
            for window in windows.plan_windows(span[0], span[1], max_window):
                window_result = collect_window(
                    collector,
                    account,
                    region,
                    window,
                    source="sweep",
                    stats=stats,
                    time_range_type=time_range_type,
                )
                result.add_window(window_result)
                mark = watermark.advance(collector.s3, store, mark, window.end, run_id=run_id)
            if state.xray_reads_empty and result.traces == 0:
                result.error = "CloudWatch Transaction Search is enabled: X-Ray APIs return no traces"
        result.watermark_after = mark.high_water.isoformat() if mark.high_water else None
        if mark.high_water:
            result.watermark_lag_seconds = round((now - mark.high_water).total_seconds(), 3)
    except Exception as error:  # reported per account; one account never stops the others
        result.status = "failed"
        result.error = str(error)[:500]
        result.error_kind = type(error).__name__
    result.count_calls(stats)
    result.seconds = round(time.monotonic() - started, 3)
    return result
