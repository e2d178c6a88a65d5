"""sweep_account with the reader chosen per (account, region): a span-mode account and an account
switched mid-run (XRay → PENDING → CloudWatchLogs), against moto behind the strict front."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from blocks.config import Config
from sandbox.transaction_search import TransactionSearch, indexed
from tasks import collector as col
from tasks import envelope as env
from tasks.aws import MemberSessions
from tasks.span_records import w3c_trace_id
from tasks.windows import Window
from tests.tasks.test_spans_reader import REGION, drain, put_at, w3c

NO_OVERLAP = {"lag": timedelta(0), "overlap": timedelta(0)}


def sweep(
    collector: col.Collector, config: Config, account_index: int, now: float, **options: object
) -> col.AccountResult:
    account = config.roster.accounts[account_index]
    when = datetime.fromtimestamp(now, UTC)
    result = col.sweep_account(collector, account, REGION, now=when, **(NO_OVERLAP | options))  # type: ignore[arg-type]
    assert result.status == "ok", result.error
    return result


def test_span_mode_account_sends_every_trace_though_xray_lists_about_one_percent(
    fresh_config: Config, search: TransactionSearch
) -> None:
    account_id = fresh_config.roster.accounts[0].account_id
    search.set_destination(account_id, REGION, "CloudWatchLogs")
    base = time.time() - 2400
    ids = put_at(fresh_config, account_id, [base + i * 3 for i in range(100)], segments=2)
    xray = MemberSessions(fresh_config.roster).client(account_id, REGION, "xray")
    listed = xray.get_trace_summaries(
        StartTime=datetime.fromtimestamp(base - 60, UTC), EndTime=datetime.fromtimestamp(base + 400, UTC)
    )
    share = {t for t in ids if indexed(t, 1.0)}
    assert {s["Id"] for s in listed["TraceSummaries"]} == share  # ~1 %
    collector = col.Collector.from_config(fresh_config)
    result = sweep(  # windows of 2 minutes: each read while the one before it is sent
        collector, fresh_config, 0, base + 400, first_lookback=timedelta(minutes=10), max_window=timedelta(minutes=2)
    )
    assert result.windows >= 5 and result.watermark_after == datetime.fromtimestamp(base + 400, UTC).isoformat()
    assert (result.reader, result.transaction_search) == ("spans", "cloudwatch_logs")
    assert result.indexed_percentage == round(100 * len(share) / 100, 3)
    assert f"indexes only {result.indexed_percentage:g} %" in result.reader_reason
    assert result.traces == 100 and result.spans == 200 and result.spans_rejected == 0
    envelopes = drain(fresh_config)
    assert {e.schema_ for e in envelopes} == {env.SCHEMA_SPANS_V1}
    sent = [t["Id"] for e in envelopes for t in e.traces]
    assert sorted(sent) == sorted(w3c(ids))  # every trace, each once
    assert all(len(t["Spans"]) == 2 for e in envelopes for t in e.traces)


def test_switch_mid_run_loses_and_duplicates_nothing(fresh_config: Config, search: TransactionSearch) -> None:
    account_id = fresh_config.roster.accounts[1].account_id
    search.pending_seconds = None  # PENDING until activate()
    rule = {"Name": "Default", "Rule": {"Probabilistic": {"DesiredSamplingPercentage": 30}}}
    search.update_indexing_rule(account_id, REGION, rule)
    collector = col.Collector.from_config(fresh_config)
    base = time.time() - 3000
    readers: list[str] = []
    generated: list[str] = []
    sent: Counter[str] = Counter()

    def run(now: float, **options: object) -> col.AccountResult:
        result = sweep(collector, fresh_config, 1, now, **options)
        readers.append(result.reader)
        for envelope in drain(fresh_config):
            sent.update(w3c_trace_id(t["Id"]) for t in envelope.traces)
        return result

    generated += put_at(fresh_config, account_id, [base + i for i in range(20)])  # XRay
    run(base + 100, first_lookback=timedelta(minutes=10))
    search.update_destination(account_id, REGION, "CloudWatchLogs")  # → PENDING: both stores
    generated += put_at(fresh_config, account_id, [base + 200 + i for i in range(20)])
    pending = run(base + 300)
    assert pending.deduplicated == 20  # both readers found them: sent once, by X-Ray
    search.activate(account_id, REGION)  # → ACTIVE: X-Ray keeps 30 %, aws/spans all
    generated += put_at(fresh_config, account_id, [base + 400 + i for i in range(20)])
    run(base + 500)
    generated += put_at(fresh_config, account_id, [base + 600 + i for i in range(20)])
    last = run(base + 700)
    assert readers == ["xray", "both", "both", "spans"]
    assert "PENDING" in pending.reader_reason and "last run read with both" not in last.reader_reason
    assert set(sent) == w3c(generated)  # nothing lost …
    assert all(count == 1 for count in sent.values())  # … nothing twice


def test_backfill_reads_a_span_account_through_insights_chunked_under_the_row_limit(
    fresh_config: Config, search: TransactionSearch
) -> None:
    account = fresh_config.roster.accounts[2]
    search.set_destination(account.account_id, REGION, "CloudWatchLogs")
    base = float(int(time.time()) - 5000)
    ids = put_at(fresh_config, account.account_id, [base + i * 3 for i in range(30)], segments=2)
    collector = col.Collector.from_config(fresh_config)
    collector.insights_row_limit = 12  # 60 spans: the first query hits the limit and is split
    _, logs_call = collector.span_callers(account.account_id, REGION)
    window = Window(datetime.fromtimestamp(base - 60, UTC), datetime.fromtimestamp(base + 120, UTC))
    result = col.collect_spans_range(collector, account, REGION, window, source="backfill", logs_call=logs_call)
    assert logs_call.stats.query_splits > 0
    assert result.traces == 30 and result.spans == 60
    envelopes = drain(fresh_config)
    assert {e.source for e in envelopes} == {"backfill"}
    assert sorted(t["Id"] for e in envelopes for t in e.traces) == sorted(w3c(ids))
    assert all(len(t["Spans"]) == 2 for e in envelopes for t in e.traces)


def test_a_span_account_whose_role_lacks_the_logs_actions_fails_alone_keeping_its_watermark(
    fresh_config: Config, search: TransactionSearch
) -> None:
    denied, fine = fresh_config.roster.accounts[0], fresh_config.roster.accounts[1]
    for account in (denied, fine):
        search.set_destination(account.account_id, REGION, "CloudWatchLogs")
    search.deny_logs.add(denied.account_id)
    base = time.time() - 900
    ids = put_at(fresh_config, fine.account_id, [base + i for i in range(5)])
    collector = col.Collector.from_config(fresh_config)
    options = {"first_lookback": timedelta(minutes=20), "max_window": timedelta(minutes=5)}
    failed = col.sweep_account(collector, denied, REGION, now=datetime.now(UTC), **options)  # type: ignore[arg-type]
    assert failed.status == "failed" and "lacks logs:FilterLogEvents" in str(failed.error)
    assert failed.watermark_after is None and failed.envelopes == 0  # no window read: nothing advanced
    swept = col.sweep_account(collector, fine, REGION, now=datetime.now(UTC), **options)  # type: ignore[arg-type]
    assert swept.status == "ok" and swept.windows >= 4
    assert sorted(t["Id"] for e in drain(fresh_config) for t in e.traces) == sorted(w3c(ids))
