"""Collecting one (account, region): X-Ray or Transaction Search spans → envelopes → the org queue
(plain functions; the flows wrap them in Prefect tasks).

Each sweep picks the reader per (account, region) (`tasks.span_records.choose_reader`): the X-Ray API,
the `aws/spans` log group, or both while a switch is under way — then a trace the X-Ray reader
sent is not sent again from its spans in the same run, nor the other way round.

The watermark of a sweep advances only after every envelope of the windows it passes was accepted
by SQS; a failure leaves it where the last complete send put it. A sweep sends the X-Ray reader's
traces of all its windows together (`tasks.overlap.Unsent`), so a sweep sends one envelope per
start hour it touches, not one per window and hour. A spans sweep reads the next window from
`aws/spans` while the current one is sent (`SpansAhead`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from blocks import MemberAccount
from blocks.config import Config
from tasks import archive, queue, spans_reader, watermark, windows, xray
from tasks.aws import MemberSessions, log_client
from tasks.envelope import (
    SCHEMA_SPANS_V1,
    SCHEMA_V1,
    Envelope,
    Source,
    TimeWindow,
    WireMessage,
    build_envelope,
    encode,
    pack,
)
from tasks.errors import TransientError
from tasks.ids import trace_id_problem
from tasks.overlap import FLUSH_BYTES, SentLedger, Unsent, revision_of
from tasks.redact import RedactionPolicy, redact_trace
from tasks.span_records import ReaderChoice, SpanGroups, w3c_trace_id


@dataclass
class Collector:
    """What every collection needs: config, member sessions, log-account clients."""

    config: Config
    sessions: MemberSessions
    s3: Any
    sqs: Any
    limiters: xray.LimiterRegistry = field(default_factory=lambda: xray.DEFAULT_LIMITERS)
    redaction: RedactionPolicy | None = field(default_factory=RedactionPolicy)
    logs_limiters: xray.LimiterRegistry = field(default_factory=lambda: spans_reader.LOGS_LIMITERS)
    spans_page_limit: int = spans_reader.FILTER_PAGE_LIMIT  # FilterLogEvents `limit` (events per page)
    insights_row_limit: int = spans_reader.INSIGHTS_ROW_LIMIT  # rows per Logs Insights query (backfill)
    spans_parallel: int = 4  # FilterLogEvents chains at most, while one leaves the quota unused (filter_spans)

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

    def logs_client(self, account_id: str, region: str) -> Any:
        return self.sessions.client(account_id, region, "logs")

    def span_callers(self, account_id: str, region: str) -> tuple[spans_reader.Caller, spans_reader.Caller]:
        """(X-Ray calls of the spans path on the X-Ray bucket, Logs calls on the Logs bucket), one SpanStats."""
        logs = spans_reader.Caller(account_id, region, self.logs_limiters.get(account_id, region))
        on_xray = spans_reader.Caller(account_id, region, self.limiters.get(account_id, region), stats=logs.stats)
        return on_xray, logs


@dataclass
class WindowResult:
    window: dict[str, str]
    summaries: int = 0
    traces: int = 0
    envelopes: int = 0
    bytes: int = 0
    claim_checks: int = 0
    traces_refused: int = 0
    unchanged: int = 0  # listed again with the revision already sent: not fetched
    spans: int = 0
    spans_rejected: int = 0
    deduplicated: int = 0
    envelope_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


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
    unchanged: int = 0  # overlap traces listed again with the revision already sent: not fetched
    throttles: int = 0
    retries: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    watermark_lag_seconds: float | None = None
    transaction_search: str = "unknown"
    reader: str = "xray"  # xray | spans | both (tasks.span_records.choose_reader)
    reader_reason: str = ""
    indexed_percentage: float | None = None
    spans: int = 0  # aws/spans log events read
    spans_rejected: int = 0  # without a readable trace id: counted, never sent
    deduplicated: int = 0  # traces both readers found, sent once
    path: str = "member-role"  # or monitoring-account (tasks/monitoring.py): how X-Ray was read
    seconds: float = 0.0
    envelope_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)

    def add_window(self, result: WindowResult, window: bool = True) -> None:
        """`window=False`: counts of a send that covered windows already counted."""
        self.windows += int(window)
        self.summaries += result.summaries
        self.traces += result.traces
        self.envelopes += result.envelopes
        self.bytes += result.bytes
        self.claim_checks += result.claim_checks
        self.traces_refused += result.traces_refused
        self.unchanged += result.unchanged
        self.spans += result.spans
        self.spans_rejected += result.spans_rejected
        self.deduplicated += result.deduplicated
        self.envelope_ids += result.envelope_ids
        self.trace_ids += result.trace_ids
        self.rejected += result.rejected[: max(0, 100 - len(self.rejected))]

    def choose(self, choice: ReaderChoice) -> None:
        self.reader = choice.reader
        self.reader_reason = choice.reason
        self.indexed_percentage = choice.indexed_percentage
        self.transaction_search = {"CloudWatchLogs": "cloudwatch_logs", "XRay": "xray"}.get(
            str(choice.destination), "unknown"
        )

    def count_calls(self, stats: xray.XRayStats) -> None:
        """Throttles and retries the same way for every flow (unprocessed trace ids asked again count)."""
        self.throttles = int(stats.throttles)
        self.retries = int(stats.retries + stats.unprocessed_retried)

    def count_span_calls(self, stats: spans_reader.SpanStats) -> None:
        self.throttles += int(stats.throttles)
        self.retries += int(stats.retries)

    def summary(self) -> dict[str, Any]:
        """Without the id lists (those are for tests and reconcile, not for tables)."""
        return {k: v for k, v in asdict(self).items() if k not in {"envelope_ids", "trace_ids", "rejected"}}


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
    schema: Literal["xraylake.envelope.v1", "xraylake.spans.v1"] = "xraylake.envelope.v1",
) -> list[Envelope]:
    """Pack traces by start hour and size into envelopes (pure); `redaction` masks secrets first.

    A trace whose id is neither an X-Ray nor a W3C trace id is left out and, when `refused` is
    given, reported there ({trace_id, reason}). `schema=SCHEMA_SPANS_V1`: traces are
    `{"Id", "Spans"}` whose span records were redacted as they were read (`tasks.span_records.SpanGroups`)."""
    if schema not in (SCHEMA_V1, SCHEMA_SPANS_V1):
        raise ValueError(f"schema must be {SCHEMA_V1} or {SCHEMA_SPANS_V1}, got {schema!r}")
    collected = collected_at or datetime.now(UTC)
    valid = []
    for trace in traces:
        reason = trace_id_problem(trace.get("Id"))
        if reason is None:
            valid.append(trace)
        elif refused is not None:
            refused.append({"trace_id": repr(trace.get("Id"))[:80], "reason": reason})
    traces = valid
    if redaction is not None and schema == SCHEMA_V1:
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
            schema=schema,
        )
        for group, serialised in pack(traces, collected)
    ]


def _sent(
    collector: Collector, result: WindowResult, envelopes: Sequence[Envelope], traces: int, refused: int
) -> WindowResult:
    """Send `envelopes` and count what went into `result` (`traces` read, `refused` of them not sent)."""
    messages, report = send_envelopes(collector, envelopes)
    result.traces = traces - refused
    result.traces_refused = refused
    result.envelopes = report.sent
    result.bytes = report.bytes
    result.claim_checks = sum(1 for m in messages if m.claim_check)
    result.envelope_ids = [e.envelope_id for e in envelopes]
    result.trace_ids = [t["Id"] for e in envelopes for t in e.traces]
    return result


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


@dataclass
class Fetched:
    """One window listed and fetched by the X-Ray reader, not sent yet."""

    result: WindowResult  # the listing's counts: summaries, unchanged, deduplicated
    traces: list[dict[str, Any]] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=dict)  # fetched trace id → listed revision


def fetch_window(
    collector: Collector,
    account: MemberAccount,
    region: str,
    window: windows.Window,
    *,
    stats: xray.XRayStats,
    time_range_type: xray.TimeRangeType = "Event",
    sent: SentLedger | None = None,
    skip: set[str] | None = None,
) -> Fetched:
    """List and fetch one window. `sent`: (trace id, revision) pairs already sent (a sweep's
    overlap): listed traces with the same revision are not fetched again. `skip` (W3C ids):
    traces the spans reader already sent in this run (reader `both`)."""
    client = collector.xray_client(account.account_id, region)
    limiter = collector.limiters.get(account.account_id, region)
    listing = xray.list_trace_ids(
        client, window, time_range_type, account_id=account.account_id, limiter=limiter, stats=stats
    )
    fetched = Fetched(WindowResult(window=window.as_dict(), summaries=len(listing.summaries)))
    unchanged = sent.unchanged(listing.summaries) if sent else set()
    wanted = [trace_id for trace_id in listing.trace_ids if trace_id not in unchanged]
    fetched.result.unchanged = len(unchanged)
    if skip:
        listed = len(wanted)
        wanted = [t for t in wanted if w3c_trace_id(t) not in skip]
        fetched.result.deduplicated = listed - len(wanted)
    if not wanted:
        return fetched
    batch = xray.batch_get_traces(client, wanted, account_id=account.account_id, limiter=limiter, stats=stats)
    if batch.unprocessed:
        # Never advance past traces we could not fetch: the caller's watermark stays put.
        raise TransientError(f"{len(batch.unprocessed)} trace ids stayed unprocessed in {account.account_id}/{region}")
    fetched.traces = batch.traces
    revision_by_id = {s.get("Id"): revision_of(s) for s in listing.summaries}
    ids = {t.get("Id") for t in batch.traces}
    fetched.revisions = {i: r for i, r in revision_by_id.items() if i in ids and isinstance(i, str) and r is not None}
    return fetched


def send_traces(
    collector: Collector,
    account: MemberAccount,
    region: str,
    traces: Sequence[dict[str, Any]],
    *,
    source: Source,
    window: TimeWindow | None,
    result: WindowResult,
) -> WindowResult:
    """Pack X-Ray traces into envelopes and send them; the counts go into `result`."""
    if not traces:
        return result
    refused: list[dict[str, str]] = []
    envelopes = envelopes_for(
        traces,
        source=source,
        account_id=account.account_id,
        region=region,
        window=window,
        redaction=collector.redaction,
        refused=refused,
    )
    return _sent(collector, result, envelopes, len(traces), len(refused))


def collect_window(
    collector: Collector,
    account: MemberAccount,
    region: str,
    window: windows.Window,
    *,
    source: Source,
    stats: xray.XRayStats,
    time_range_type: xray.TimeRangeType = "Event",
    sent: SentLedger | None = None,
    skip: set[str] | None = None,
) -> WindowResult:
    """List, fetch, pack and send one window (`fetch_window`'s `sent` and `skip`)."""
    fetched = fetch_window(
        collector, account, region, window, stats=stats, time_range_type=time_range_type, sent=sent, skip=skip
    )
    return send_traces(
        collector, account, region, fetched.traces,
        source=source, window=TimeWindow(start=window.start, end=window.end), result=fetched.result,
    )  # fmt: skip


def read_spans(
    collector: Collector,
    account_id: str,
    region: str,
    window: windows.Window,
    logs_call: spans_reader.Caller,
    *,
    through: Literal["filter", "insights"] = "filter",
    stop: threading.Event | None = None,
) -> SpanGroups:
    """The spans of `window` from `aws/spans`, grouped by trace: FilterLogEvents paging (sweeps), or
    Logs Insights chunked under the row limit (`through="insights"`: billed per GB scanned, so for
    backfill and reconcile, not for every sweep). `stop` ends a FilterLogEvents read early."""
    groups = SpanGroups()
    logs = collector.logs_client(account_id, region)
    if through == "insights":
        spans_reader.insights_spans(
            logs, logs_call, window.start, window.end, groups,
            redaction=collector.redaction, row_limit=collector.insights_row_limit,
        )  # fmt: skip
    else:
        spans_reader.filter_spans(
            logs, logs_call, window, groups, collector.redaction, collector.spans_page_limit,
            collector.spans_parallel, stop,
        )  # fmt: skip
    return groups


def collect_spans_range(
    collector: Collector,
    account: MemberAccount,
    region: str,
    window: windows.Window,
    *,
    source: Source,
    logs_call: spans_reader.Caller,
    sent_by_xray: set[str] | None = None,
) -> WindowResult:
    """Backfill's read of `aws/spans` (Logs Insights over `window`), grouped by trace into span
    envelopes; `sent_by_xray` (W3C ids, reader `both`): traces the X-Ray reader sent are left out."""
    groups = read_spans(collector, account.account_id, region, window, logs_call, through="insights")
    return send_span_groups(collector, account, region, groups, source=source, window=window, skip=sent_by_xray)


def send_span_groups(
    collector: Collector,
    account: MemberAccount,
    region: str,
    groups: SpanGroups,
    *,
    source: Source,
    window: windows.Window | None = None,
    skip: set[str] | None = None,
    execution: dict[str, Any] | None = None,
) -> WindowResult:
    traces = groups.envelope_traces(skip or ())
    result = WindowResult(
        window=window.as_dict() if window else {},
        spans=groups.events,
        spans_rejected=len(groups.rejected),
        deduplicated=len(groups.traces) - len(traces),
        rejected=groups.rejected[:100],
    )
    if not traces:
        return result
    refused: list[dict[str, str]] = []
    envelopes = envelopes_for(
        traces,
        source=source,
        account_id=account.account_id,
        region=region,
        window=TimeWindow(start=window.start, end=window.end) if window else None,
        execution=collector.redaction.redact_value(execution) if execution and collector.redaction else execution,
        refused=refused,
        schema="xraylake.spans.v1",  # SCHEMA_SPANS_V1
    )
    return _sent(collector, result, envelopes, len(traces), len(refused))


class SpansAhead:
    """The spans of a sweep's windows, each read (FilterLogEvents) while the one before it is sent.

    `groups(i)` returns window i's spans and starts reading window i + 1 in a background thread, so
    the account's Logs quota keeps being used while envelopes are packed, sent and the watermark
    advanced; at most two windows of spans are held at once. Leaving the `with` block early (a
    failure) stops the read in flight after its current page."""

    def __init__(
        self,
        collector: Collector,
        account_id: str,
        region: str,
        planned: Sequence[windows.Window],
        logs_call: spans_reader.Caller,
    ) -> None:
        self._read = functools.partial(read_spans, collector, account_id, region, logs_call=logs_call)
        self._planned = list(planned)
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._next: tuple[int, Future[SpanGroups]] | None = None

    def _submit(self, index: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="spans-ahead")
        self._next = (index, self._pool.submit(self._read, self._planned[index], stop=self._stop))

    def groups(self, index: int) -> SpanGroups:
        if self._next is None or self._next[0] != index:
            self._submit(index)
        assert self._next is not None
        found = self._next[1].result()
        self._next = None
        if index + 1 < len(self._planned):
            self._submit(index + 1)
        return found

    def __enter__(self) -> SpansAhead:
        if self._planned:
            self._submit(0)  # the first window is read while the X-Ray reader (reader `both`) lists it
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


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
    skip_unchanged: bool = True,
    flush_bytes: int = FLUSH_BYTES,
) -> AccountResult:
    """Incremental sweep of one (account, region) from its watermark; never raises for the
    account's own failures (they are reported in the result so other accounts go on).

    The X-Ray reader's traces of all the sweep's windows are packed and sent together at its end
    (earlier past `tasks.overlap.FLUSH_BYTES`), then the watermark moves; a window with nothing
    waiting moves it at once. `skip_unchanged`: traces of the overlap already sent with the same
    revision are not fetched again (`tasks/overlap.py`); the ledger is stored with the watermark.
    `flush_bytes=0` sends window by window (the packing before issue 18; B3 measures both)."""
    started = time.monotonic()
    result = AccountResult(account.account_id, account.name, region)
    stats = xray.XRayStats()
    store = collector.config.archive
    xray_call, logs_call = collector.span_callers(account.account_id, region)
    try:
        mark = watermark.read(collector.s3, store, account.account_id, region)
        result.watermark_before = mark.high_water.isoformat() if mark.high_water else None
        span = watermark.sweep_range(mark.high_water, now, lag, overlap, first_lookback)
        if span is None:
            result.status = "idle"
        else:
            client = collector.xray_client(account.account_id, region)
            choice = spans_reader.select_reader(client, xray_call, previous=mark.reader)
            result.choose(choice)
            sent_by_xray: set[str] = set()  # W3C ids, reader `both`: each trace sent by one reader
            sent_as_spans: set[str] = set()
            unsent = Unsent()  # X-Ray traces held until the sweep's end (one envelope per hour, not per window)
            planned = windows.plan_windows(span[0], span[1], max_window)
            reads_spans = choice.reader in ("spans", "both")
            ahead = SpansAhead(collector, account.account_id, region, planned if reads_spans else [], logs_call)
            with ahead:
                for number, window in enumerate(planned, start=1):
                    fetched = Fetched(WindowResult(window=window.as_dict()))
                    if choice.reader in ("xray", "both"):
                        fetched = fetch_window(
                            collector,
                            account,
                            region,
                            window,
                            stats=stats,
                            time_range_type=time_range_type,
                            sent=mark.sent if skip_unchanged else None,
                            skip=sent_as_spans if choice.reader == "both" else None,
                        )
                        result.add_window(fetched.result)
                        # to be sent at the end (a failed send keeps the watermark: both readers read again)
                        fetched_ids = (t.get("Id") for t in fetched.traces)
                        sent_by_xray.update(w3c_trace_id(str(i)) for i in fetched_ids if trace_id_problem(i) is None)
                    unsent.add(window.start, window.end, fetched.traces, fetched.revisions)
                    if reads_spans:
                        spans_result = send_span_groups(
                            collector,
                            account,
                            region,
                            ahead.groups(number - 1),  # read while the previous window was sent
                            source="sweep",
                            window=window,
                            skip=sent_by_xray if choice.reader == "both" else None,
                        )
                        if choice.reader == "both":
                            result.windows -= 1  # one window, two readers
                        result.add_window(spans_result)
                        sent_as_spans.update(spans_result.trace_ids)
                    if not unsent.due(last=number == len(planned), limit=flush_bytes):
                        continue
                    start, end = unsent.span()
                    sent = send_traces(
                        collector, account, region, unsent.traces,
                        source="sweep", window=TimeWindow(start=start, end=end), result=WindowResult(window={}),
                    )  # fmt: skip
                    result.add_window(sent, window=False)
                    ledger = unsent.ledger(mark.sent, sent.trace_ids, overlap) if skip_unchanged else None
                    if watermark.worth_writing(mark, end, sent_anything=result.traces > 0, reader=choice.steady):
                        mark = watermark.advance(
                            collector.s3, store, mark, end, run_id=run_id, sent=ledger, reader=choice.steady
                        )
                    unsent = Unsent()
        result.watermark_after = mark.high_water.isoformat() if mark.high_water else None
        if mark.high_water:
            result.watermark_lag_seconds = round((now - mark.high_water).total_seconds(), 3)
    except Exception as error:  # reported per account; one account never stops the others
        result.status = "failed"
        result.error = str(error)[:500]
        result.error_kind = type(error).__name__
    result.count_calls(stats)
    result.count_span_calls(logs_call.stats)
    result.seconds = round(time.monotonic() - started, 3)
    return result
