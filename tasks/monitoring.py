"""Monitoring-account mode (CloudWatch cross-account observability): X-Ray read once per region in
the monitoring account, each trace attributed to its source account.

What the real API reports (X-Ray and OAM API references, X-Ray developer guide "Cross-account
tracing"): source accounts linked to the monitoring account's sink with `AWS::XRay::Trace` have
their traces copied there (the first copy free); a sampled request that crosses accounts is
recorded as one trace per account, all with the same trace id. `TraceSummary.ServiceIds[]` carries
`AccountId` per service; a segment document's `aws.account_id` is optional. `ListAttachedLinks`
gives each link's ARN, whose account field is the source account. Not confirmed by any document
found: that GetTraceSummaries / BatchGetTraces in a monitoring account return the copies merged
into one summary / one trace per id (what the console shows); the sandbox serves them that way.

So the attribution here: a segment belongs to the `aws.account_id` it names when that is a linked
account, else to the account whose `ServiceIds` entry has its name (and origin type); a trace is
split into one trace per account holding that account's segments, exactly what that account's own
BatchGetTraces returns, so both modes produce the same documents (`{account}:{trace}` per account;
the span index holds the whole request once). Traces of accounts outside the roster are dropped
and counted, never indexed. Roster accounts that are not linked (or regions without a sink)
are swept through their member roles as before.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from blocks import MemberAccount, MonitoringAccount, Roster
from tasks import watermark, windows, xray
from tasks.aws import MemberSessions
from tasks.collector import AccountResult, Collector, envelopes_for, send_envelopes
from tasks.envelope import Envelope, TimeWindow
from tasks.errors import TerminalError, TransientError, aws_error_code, classify_aws_error

XRAY_TRACE = "AWS::XRay::Trace"
MEMBER_ROLE = "member-role"
MONITORING = "monitoring-account"
FETCH_THREADS = 4
FETCH_CHUNK = 8 * xray.MAX_BATCH_IDS


class MonitoringError(TerminalError):
    """The monitoring account cannot serve as configured (no sink, no access)."""


@dataclass
class Route:
    """Which path each (account, region) takes this sweep."""

    member_targets: list[tuple[MemberAccount, str]]
    groups: dict[str, list[MemberAccount]]  # region → accounts read in the monitoring account
    notes: list[str] = field(default_factory=list)

    def path(self, account_id: str, region: str) -> str:
        return MONITORING if any(a.account_id == account_id for a in self.groups.get(region, [])) else MEMBER_ROLE


def monitoring_sessions(roster: Roster) -> MemberSessions:
    """Sessions in the monitoring account through its reader role (same ExternalId as member roles)."""
    monitoring = roster.monitoring
    if monitoring is None:
        raise MonitoringError("roster.monitoring is not configured")
    return MemberSessions(roster.model_copy(update={"role_name": monitoring.role_name}))


def linked_accounts(oam: Any, monitoring: MonitoringAccount, region: str) -> set[str] | None:
    """Source accounts sharing X-Ray traces with the monitoring account's sink; None: no sink here."""
    try:
        sinks = oam.list_sinks().get("Items") or []
        if not sinks:
            return None
        linked: set[str] = set()
        for sink in sinks:
            token = None
            while True:
                page = oam.list_attached_links(SinkIdentifier=sink["Arn"], **({"NextToken": token} if token else {}))
                for item in page.get("Items") or []:
                    if XRAY_TRACE in (item.get("ResourceTypes") or []):
                        linked.add(str(item["LinkArn"]).split(":")[4])
                token = page.get("NextToken")
                if not token:
                    break
        return linked
    except Exception as error:
        code = aws_error_code(error)
        raise MonitoringError(
            f"cannot list the OAM sink and links of monitoring account {monitoring.account_id} in {region}: "
            f"{code or type(error).__name__}: {classify_aws_error(error)}"
        ) from error


def route(roster: Roster, targets: Sequence[tuple[MemberAccount, str]], sessions: MemberSessions) -> Route:
    """Split the sweep's targets between the monitoring account and member roles.

    A monitoring account with no sink in any of its regions is a configuration error (raised before
    any account is swept); a region without a sink, or an account without a trace link, falls back.
    """
    monitoring = roster.monitoring
    if monitoring is None:
        return Route(list(targets), {})
    linked_by_region: dict[str, set[str]] = {}
    missing: list[str] = []
    for region in monitoring.regions:
        oam = sessions.client(monitoring.account_id, region, "oam")
        linked = linked_accounts(oam, monitoring, region)
        if linked is None:
            missing.append(region)
        else:
            linked_by_region[region] = linked
    if not linked_by_region:
        raise MonitoringError(
            f"monitoring account {monitoring.account_id} is not an OAM sink in {', '.join(missing)}: "
            "oam:ListSinks returned no sink, so no source account can link to it; create a sink there "
            "(oam:CreateSink) and link the source accounts with AWS::XRay::Trace (oam:CreateLink), "
            "or remove roster.monitoring"
        )
    member_targets: list[tuple[MemberAccount, str]] = []
    groups: dict[str, list[MemberAccount]] = {}
    notes = [f"{region}: no OAM sink in monitoring account {monitoring.account_id}" for region in missing]
    for account, region in targets:
        if account.account_id in linked_by_region.get(region, set()):
            groups.setdefault(region, []).append(account)
        else:
            member_targets.append((account, region))
    return Route(member_targets, groups, notes)


# --------------------------------------------------------------------------- attribution


def _documents(trace: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for segment in trace.get("Segments") or []:
        try:
            document = orjson.loads(segment.get("Document") or "{}")
        except orjson.JSONDecodeError:
            document = {}
        out.append((segment, document if isinstance(document, dict) else {}))
    return out


def split_by_account(
    trace: dict[str, Any], summary: dict[str, Any] | None, candidates: set[str]
) -> tuple[dict[str, dict[str, Any]], int]:
    """{account: the trace as that account recorded it} and the number of segments nobody owns."""
    by_name: dict[tuple[str, str], set[str]] = {}
    by_plain_name: dict[str, set[str]] = {}
    for service in (summary or {}).get("ServiceIds") or []:
        account = service.get("AccountId")
        if not account:
            continue
        for name in {service.get("Name"), *(service.get("Names") or [])} - {None}:
            by_name.setdefault((str(name), str(service.get("Type") or "")), set()).add(str(account))
            by_plain_name.setdefault(str(name), set()).add(str(account))
    segments: dict[str, list[dict[str, Any]]] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    orphans = 0
    for segment, document in _documents(trace):
        aws: dict[str, Any] = document["aws"] if isinstance(document.get("aws"), dict) else {}
        named = str(aws.get("account_id") or "")
        owners = {named} if named else set()
        if not owners:
            name = str(document.get("name") or "")
            owners = by_name.get((name, str(document.get("origin") or ""))) or by_plain_name.get(name) or set()
        if len(owners) != 1:
            orphans += 1
            continue
        (owner,) = owners
        segments.setdefault(owner, []).append(segment)
        start, end = document.get("start_time"), document.get("end_time")
        if isinstance(start, (int, float)):
            spans.setdefault(owner, []).append(
                (float(start), float(end) if isinstance(end, (int, float)) else float(start))
            )
    parts: dict[str, dict[str, Any]] = {}
    for owner, owned in segments.items():
        part = {k: v for k, v in trace.items() if k != "Segments"}
        part["Segments"] = owned
        if len(segments) > 1 and spans.get(owner):  # X-Ray's Duration of this account's own trace
            times = spans[owner]
            part["Duration"] = max(e for _, e in times) - min(s for s, _ in times)
        parts[owner] = part
    return parts, orphans


# --------------------------------------------------------------------------- the sweep


def fetch_traces(
    client: Any, trace_ids: Sequence[str], account_id: str, limiter: Any, stats: xray.XRayStats
) -> xray.TraceBatch:
    """BatchGetTraces for every listed id with up to `FETCH_THREADS` calls in flight.

    The monitoring account fetches what every linked account recorded (1,000 accounts × 3 traces:
    600 calls a window), so its rate bucket should bound the read, not one call's latency after
    another. Chunks of `FETCH_CHUNK` ids share the bucket and the stats; traces keep list order."""
    chunks = [trace_ids[i : i + FETCH_CHUNK] for i in range(0, len(trace_ids), FETCH_CHUNK)]

    def fetch(chunk: Sequence[str]) -> xray.TraceBatch:
        return xray.batch_get_traces(client, chunk, account_id=account_id, limiter=limiter, stats=stats)

    if len(chunks) <= 1:
        return fetch(trace_ids)
    with ThreadPoolExecutor(min(FETCH_THREADS, len(chunks))) as pool:
        parts = list(pool.map(fetch, chunks))
    return xray.TraceBatch(
        traces=[t for p in parts for t in p.traces],
        unprocessed=[t for p in parts for t in p.unprocessed],
        limit_exceeded=[t for p in parts for t in p.limit_exceeded],
        missing=[t for p in parts for t in p.missing],
    )


@dataclass
class MonitoringResult:
    region: str
    results: list[AccountResult]
    dropped_traces: int = 0  # traces of accounts outside the roster: not indexed
    orphan_segments: int = 0
    status: str = "ok"
    error: str | None = None


def sweep_region(
    collector: Collector,
    sessions: MemberSessions,
    monitoring: MonitoringAccount,
    region: str,
    accounts: Sequence[MemberAccount],
    *,
    now: datetime,
    lag: timedelta = watermark.DEFAULT_LAG,
    overlap: timedelta = watermark.DEFAULT_OVERLAP,
    max_window: timedelta = windows.HOUR,
    first_lookback: timedelta = watermark.DEFAULT_FIRST_LOOKBACK,
    time_range_type: xray.TimeRangeType = "Event",
    run_id: str = "",
) -> MonitoringResult:
    """One read of the monitoring account in `region` for every linked roster account; never raises.

    The watermark is the monitoring account's own (account id = the monitoring account): one
    window list for the whole region. Each roster account gets an AccountResult (path
    `monitoring-account`) so the artifact and health rows read as in member-role mode."""
    started = time.monotonic()
    by_id = {a.account_id: a for a in accounts}
    results = {a.account_id: AccountResult(a.account_id, a.name, region, path=MONITORING) for a in accounts}
    outcome = MonitoringResult(region, list(results.values()))
    stats = xray.XRayStats()
    store = collector.config.archive
    try:
        client = xray.xray_client(sessions, monitoring.account_id, region)
        limiter = collector.limiters.get(monitoring.account_id, region)
        mark = watermark.read(collector.s3, store, monitoring.account_id, region)
        span = watermark.sweep_range(mark.high_water, now, lag, overlap, first_lookback)
        for result in results.values():
            result.watermark_before = mark.high_water.isoformat() if mark.high_water else None
        if span is None:
            for result in results.values():
                result.status = "idle"
        else:
            for window in windows.plan_windows(span[0], span[1], max_window):
                listing = xray.list_trace_ids(
                    client, window, time_range_type, account_id=monitoring.account_id, limiter=limiter, stats=stats
                )
                summaries = {str(s.get("Id")): s for s in listing.summaries}
                batch = fetch_traces(client, listing.trace_ids, monitoring.account_id, limiter, stats)
                if batch.unprocessed:
                    raise TransientError(
                        f"{len(batch.unprocessed)} trace ids stayed unprocessed in monitoring account "
                        f"{monitoring.account_id}/{region}"
                    )
                per_account: dict[str, list[dict[str, Any]]] = {}
                for trace in batch.traces:
                    summary = summaries.get(str(trace.get("Id")))
                    accounts_in_summary = {str(s.get("AccountId")) for s in (summary or {}).get("ServiceIds") or []}
                    parts, orphans = split_by_account(trace, summary, accounts_in_summary)
                    outcome.orphan_segments += orphans
                    for owner, part in parts.items():
                        if owner in by_id:
                            per_account.setdefault(owner, []).append(part)
                        else:
                            outcome.dropped_traces += 1
                # Every owner's envelopes go out together: SendMessageBatch packs 10 of any accounts,
                # not one call per account (1,000 linked accounts: ~100 calls a window, not 1,000).
                owned: list[tuple[str, list[Envelope]]] = []
                for owner, traces in sorted(per_account.items()):
                    refused: list[dict[str, str]] = []
                    envelopes = envelopes_for(
                        traces,
                        source="sweep",
                        account_id=owner,
                        region=region,
                        window=TimeWindow(start=window.start, end=window.end),
                        redaction=collector.redaction,
                        refused=refused,
                    )
                    owned.append((owner, envelopes))
                    results[owner].traces += len(traces) - len(refused)
                    results[owner].traces_refused += len(refused)
                messages, _ = send_envelopes(collector, [e for _, envelopes in owned for e in envelopes])
                by_envelope = {m.envelope_id: m for m in messages}
                for owner, envelopes in owned:
                    result = results[owner]
                    sent = [by_envelope[e.envelope_id] for e in envelopes]
                    result.envelopes += len(sent)
                    result.bytes += sum(m.size for m in sent)
                    result.claim_checks += sum(1 for m in sent if m.claim_check)
                    result.envelope_ids += [e.envelope_id for e in envelopes]
                    result.trace_ids += [t["Id"] for e in envelopes for t in e.traces]
                listed: Counter[str] = Counter()
                for summary in listing.summaries:
                    listed.update({str(x.get("AccountId")) for x in summary.get("ServiceIds") or []})
                for result in results.values():
                    result.windows += 1
                    result.summaries += listed[result.account_id]
                mark = watermark.advance(collector.s3, store, mark, window.end, run_id=run_id)
        for result in results.values():
            result.watermark_after = mark.high_water.isoformat() if mark.high_water else None
            if mark.high_water:
                result.watermark_lag_seconds = round((now - mark.high_water).total_seconds(), 3)
    except Exception as error:  # reported per account, as in member-role mode
        outcome.status = "failed"
        outcome.error = str(error)[:500]
        for result in results.values():
            result.status = "failed"
            result.error = f"monitoring account {monitoring.account_id}/{region}: {outcome.error}"
            result.error_kind = type(error).__name__
    seconds = round(time.monotonic() - started, 3)
    for result in results.values():
        result.count_calls(stats)
        result.seconds = seconds
    return outcome
