"""tasks/xray.py: pure window planning without servers (pacing: test_pacing.py), then the reads over real HTTP
(moto behind the strict X-Ray front)."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks import Roster
from sandbox.stack import SandboxStack
from sandbox.strict_xray import StrictXRayFront
from tasks import xray
from tasks.aws import MemberSessions
from tasks.errors import AccountAccessError, TerminalError, TransientError
from tasks.windows import HOUR, Window, plan_windows
from tasks.xray import (
    XRAY_BOTO_CONFIG,
    Backoff,
    TokenBucket,
    TransactionSearchStatus,
    XRayStats,
    batch_get_traces,
    detect_transaction_search,
    list_trace_ids,
)

REGION = "us-east-1"
FAST = Backoff(base=0.02, cap=0.2, max_attempts=30)


def no_sleep(_: float) -> None:
    return None


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# =========================================================================== plan_windows


def test_plan_windows_splits_at_hour_boundaries() -> None:
    windows = plan_windows(utc(2026, 3, 1, 10, 30), utc(2026, 3, 1, 12, 15))
    assert [(w.start, w.end) for w in windows] == [
        (utc(2026, 3, 1, 10, 30), utc(2026, 3, 1, 11)),
        (utc(2026, 3, 1, 11), utc(2026, 3, 1, 12)),
        (utc(2026, 3, 1, 12), utc(2026, 3, 1, 12, 15)),
    ]
    assert [w.hour.hour for w in windows] == [10, 11, 12]


def test_plan_windows_smaller_max_window_sits_on_a_grid() -> None:
    windows = plan_windows(utc(2026, 3, 1, 10, 30), utc(2026, 3, 1, 11, 30), timedelta(minutes=20))
    assert [(w.start.strftime("%H:%M"), w.end.strftime("%H:%M")) for w in windows] == [
        ("10:30", "10:40"),
        ("10:40", "11:00"),
        ("11:00", "11:20"),
        ("11:20", "11:30"),
    ]


def test_plan_windows_converts_other_timezones_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    windows = plan_windows(datetime(2026, 3, 1, 12, 30, tzinfo=plus2), datetime(2026, 3, 1, 13, 30, tzinfo=plus2))
    assert windows[0].start == utc(2026, 3, 1, 10, 30)
    assert windows[0].start.tzinfo is UTC
    assert len(windows) == 2


def test_plan_windows_max_window_above_an_hour_still_splits_hourly() -> None:
    windows = plan_windows(utc(2026, 3, 1, 0), utc(2026, 3, 1, 3), timedelta(hours=6))
    assert len(windows) == 3


@pytest.mark.parametrize(
    ("start", "end", "max_window", "message"),
    [
        (utc(2026, 1, 1, 2), utc(2026, 1, 1, 1), HOUR, "must be before"),
        (utc(2026, 1, 1, 2), utc(2026, 1, 1, 2), HOUR, "must be before"),
        (datetime(2026, 1, 1, 1), utc(2026, 1, 1, 2), HOUR, "timezone-aware"),
        (utc(2026, 1, 1, 1), datetime(2026, 1, 1, 2), HOUR, "timezone-aware"),
        (utc(2026, 1, 1, 1), utc(2026, 1, 1, 2), timedelta(0), "positive"),
    ],
)
def test_plan_windows_rejects_bad_input(start: datetime, end: datetime, max_window: timedelta, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_windows(start, end, max_window)


def test_window_validates_itself() -> None:
    with pytest.raises(ValueError, match="before"):
        Window(utc(2026, 1, 1, 2), utc(2026, 1, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 1, 1, 1), utc(2026, 1, 1, 2))
    assert Window(utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)).as_dict() == {
        "start": "2026-01-01T01:00:00+00:00",
        "end": "2026-01-01T02:00:00+00:00",
    }


_instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(
    start=_instants,
    length=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(hours=30)),
    max_window=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(hours=3)),
)
def test_plan_windows_properties(start: datetime, length: timedelta, max_window: timedelta) -> None:
    end = start + length
    windows = plan_windows(start, end, max_window)
    assert windows[0].start == start
    assert windows[-1].end == end
    for previous, following in itertools.pairwise(windows):
        assert previous.end == following.start  # no gap, no overlap
    for window in windows:
        assert window.start < window.end
        assert window.duration <= min(max_window, HOUR)
        assert window.end <= window.hour + HOUR  # never crosses an hour boundary
    assert plan_windows(start, end, max_window) == windows  # deterministic
    if max_window >= HOUR:
        hours = {w.hour for w in windows}
        assert len(hours) == len(windows)


def test_stats_merge_and_copy() -> None:
    import copy
    import pickle

    total = XRayStats()
    total.merge(XRayStats(calls=3, throttles=1, wait_seconds=0.5)).merge(XRayStats(calls=2, pages=4))
    assert (total.calls, total.pages, total.throttles, total.wait_seconds) == (5, 4, 1, 0.5)
    assert "_lock" not in total.as_dict()
    assert copy.deepcopy(total).as_dict() == total.as_dict()
    assert pickle.loads(pickle.dumps(total)).as_dict() == total.as_dict()


# =========================================================================== over HTTP


def trace_id(epoch: float) -> str:
    return f"1-{int(epoch):08x}-{secrets.token_hex(12)}"


def put_traces(client: Any, count: int, base: float, segments: int = 1) -> dict[str, list[str]]:
    """`count` traces 1 s apart; returns {trace id: [its segment documents as sent]}."""
    docs: dict[str, list[str]] = {}
    for i in range(count):
        tid = trace_id(base + i)
        docs[tid] = [
            json.dumps(
                {
                    "id": secrets.token_hex(8),
                    "name": f"svc-{n}",
                    "trace_id": tid,
                    "start_time": base + i + 0.1 + n / 100,
                    "end_time": base + i + 0.6,
                    "annotations": {"n": n},
                }
            )
            for n in range(segments)
        ]
    flat = [d for group in docs.values() for d in group]
    for offset in range(0, len(flat), 50):
        assert (
            client.put_trace_segments(TraceSegmentDocuments=flat[offset : offset + 50])["UnprocessedTraceSegments"]
            == []
        )
    return docs


def last_hour() -> Window:
    now = datetime.now(UTC)
    return Window(now - timedelta(hours=1), now)


@pytest.fixture
def front(stack: SandboxStack) -> Iterator[StrictXRayFront]:
    assert stack.config.aws_endpoint_url
    with StrictXRayFront(upstream=stack.config.aws_endpoint_url, page_size=3, rate_per_second=None) as running:
        yield running


@pytest.fixture
def sessions(fresh_roster: Roster, front: StrictXRayFront, monkeypatch: pytest.MonkeyPatch) -> MemberSessions:
    monkeypatch.setenv("AWS_ENDPOINT_URL_XRAY", front.url)
    return MemberSessions(fresh_roster)


@pytest.fixture
def account(fresh_roster: Roster) -> str:
    return fresh_roster.accounts[0].account_id


@pytest.fixture
def client(sessions: MemberSessions, account: str) -> Any:
    return xray.xray_client(sessions, account, REGION)


def fast_limiter() -> TokenBucket:
    return TokenBucket(rate=1000, burst=1000)


def test_xray_client_has_botocore_retries_off(client: Any, front: StrictXRayFront) -> None:
    assert client.meta.endpoint_url == front.url
    front.configure(rate_per_second=0.1, burst=1)
    client.get_trace_segment_destination()
    with pytest.raises(ClientError):
        client.get_trace_segment_destination()
    assert front.stats()["throttled"] == 1  # one call, no hidden botocore retry


def test_list_trace_ids_reads_every_page(client: Any, account: str, front: StrictXRayFront) -> None:
    put = put_traces(client, 11, time.time() - 1500)
    stats = XRayStats()
    listing = list_trace_ids(client, last_hour(), account_id=account, limiter=fast_limiter(), stats=stats)
    assert sorted(listing.trace_ids) == sorted(put)
    assert listing.trace_ids == list(reversed(put))  # order as served: newest first, stable
    assert listing.pages == 4
    assert (stats.pages, stats.calls, stats.summaries, stats.trace_ids) == (4, 4, 11, 11)
    assert [s["Id"] for s in listing.summaries] == listing.trace_ids
    assert listing.client_side_filter_needed is False
    assert front.account_stats(account)["pages_served"] == 4


def test_batch_get_traces_returns_traces_as_aws_sent_them(client: Any, account: str, front: StrictXRayFront) -> None:
    put = put_traces(client, 7, time.time() - 900, segments=2)
    stats = XRayStats()
    ids = list(put)
    batch = batch_get_traces(client, [*ids, ids[0]], account_id=account, limiter=fast_limiter(), stats=stats)
    assert [t["Id"] for t in batch.traces] == ids  # request order, duplicates dropped
    assert batch.complete
    assert stats.batches == 2  # 5 + 2
    for trace in batch.traces:
        assert set(trace) == {"Id", "Duration", "LimitExceeded", "Segments"}
        assert sorted(s["Document"] for s in trace["Segments"]) == sorted(put[trace["Id"]])
        assert all(isinstance(s["Document"], str) for s in trace["Segments"])
    assert front.stats()["operations"]["BatchGetTraces"] == 2


def test_unprocessed_ids_are_retried(client: Any, account: str, front: StrictXRayFront) -> None:
    put = put_traces(client, 10, time.time() - 800)
    front.configure(unprocessed_every=2, unprocessed_times=2)
    stats = XRayStats()
    batch = batch_get_traces(client, list(put), account_id=account, limiter=fast_limiter(), stats=stats, sleep=no_sleep)
    assert sorted(t["Id"] for t in batch.traces) == sorted(put)
    assert batch.complete
    injected = front.stats()["unprocessed_injected"]
    assert injected > 0
    assert stats.unprocessed_retried == injected
    assert stats.unprocessed_failed == 0


def test_unprocessed_ids_reported_when_retries_run_out(client: Any, account: str, front: StrictXRayFront) -> None:
    put = put_traces(client, 3, time.time() - 700)
    front.configure(unprocessed_every=1, unprocessed_times=100)
    stats = XRayStats()
    batch = batch_get_traces(
        client, list(put), account_id=account, limiter=fast_limiter(), stats=stats, max_unprocessed_rounds=2,
        sleep=no_sleep,
    )  # fmt: skip
    assert batch.traces == []
    assert sorted(batch.unprocessed) == sorted(put)
    assert not batch.complete
    assert stats.unprocessed_failed == 3
    assert stats.unprocessed_retried == 6
    assert stats.batches == 3


def test_limit_exceeded_traces_kept_and_flagged(client: Any, account: str, front: StrictXRayFront) -> None:
    put = put_traces(client, 2, time.time() - 600, segments=4)
    front.trace_size_limit = 300
    stats = XRayStats()
    batch = batch_get_traces(client, list(put), account_id=account, limiter=fast_limiter(), stats=stats)
    assert sorted(batch.limit_exceeded) == sorted(put)
    assert len(batch.traces) == 2
    assert stats.limit_exceeded == 2


def test_throttling_raw_client_fails_but_reader_misses_nothing(
    client: Any, account: str, front: StrictXRayFront
) -> None:
    put = put_traces(client, 12, time.time() - 1000)
    front.configure(rate_per_second=0.5, burst=2)
    client.get_trace_summaries(StartTime=last_hour().start, EndTime=last_hour().end)
    client.get_trace_summaries(StartTime=last_hour().start, EndTime=last_hour().end)
    with pytest.raises(ClientError) as caught:
        client.get_trace_summaries(StartTime=last_hour().start, EndTime=last_hour().end)
    assert caught.value.response["Error"]["Code"] == "ThrottledException"

    front.configure(rate_per_second=4, burst=2)  # 7 calls (4 pages + 3 batches) need ~1.3 s
    stats = XRayStats()
    limiter = fast_limiter()  # the client side does not pace: the front must throttle
    listing = list_trace_ids(client, last_hour(), account_id=account, limiter=limiter, stats=stats, backoff=FAST)
    batch = batch_get_traces(client, listing.trace_ids, account_id=account, limiter=limiter, stats=stats, backoff=FAST)
    assert sorted(t["Id"] for t in batch.traces) == sorted(put)  # zero missed
    assert stats.throttles > 0
    assert stats.retries == stats.throttles
    assert stats.calls == listing.pages + stats.batches + stats.throttles
    assert front.account_stats(account)["throttled"] >= stats.throttles


def test_client_bucket_paces_below_the_front_limit(client: Any, account: str, front: StrictXRayFront) -> None:
    put = put_traces(client, 9, time.time() - 1000)
    # a bucket at half the front's rate: calls leave >= 0.5 s apart, so the bucket waits unless a call
    # itself takes 0.5 s (at 15/s a loaded machine's slow calls never had to wait), and the front
    # (one call per 0.25 s) would throttle calls that were not paced
    front.configure(rate_per_second=4, burst=1)
    stats = XRayStats()
    limiter = TokenBucket(rate=2, burst=1)
    listing = list_trace_ids(client, last_hour(), account_id=account, limiter=limiter, stats=stats, backoff=FAST)
    batch = batch_get_traces(client, listing.trace_ids, account_id=account, limiter=limiter, stats=stats, backoff=FAST)
    assert len(batch.traces) == len(put)
    assert stats.throttles == 0
    assert stats.wait_seconds > 0


def test_exhausted_throttling_is_transient(client: Any, account: str, front: StrictXRayFront) -> None:
    front.configure(rate_per_second=0.01, burst=1)
    client.get_trace_segment_destination()  # spend the only token
    stats = XRayStats()
    with pytest.raises(TransientError, match="throttled after 3 attempts"):
        list_trace_ids(
            client, last_hour(), account_id=account, limiter=fast_limiter(), stats=stats,
            backoff=Backoff(base=0.01, cap=0.01, max_attempts=3), sleep=no_sleep,
        )  # fmt: skip
    assert (stats.calls, stats.throttles, stats.retries) == (3, 3, 2)


def test_filter_expression_sent_stripped_or_fallen_back(
    client: Any, account: str, front: StrictXRayFront, stack: SandboxStack, sessions: MemberSessions
) -> None:
    put = put_traces(client, 4, time.time() - 500)
    listing = list_trace_ids(client, last_hour(), filter_expression="fault", limiter=fast_limiter())
    assert front.stats()["filter_expressions"] == ["fault"]
    assert listing.filter_expression == "fault"
    assert not listing.client_side_filter_needed

    front.filter_mode = "reject"
    stats = XRayStats()
    listing = list_trace_ids(client, last_hour(), filter_expression="fault", limiter=fast_limiter(), stats=stats)
    assert listing.client_side_filter_needed
    assert sorted(listing.trace_ids) == sorted(put)
    assert stats.filter_fallbacks == 1

    # moto itself answers any FilterExpression with InternalFailure (HTTP 500)
    found = sessions.session(account, REGION).get_credentials()
    assert found is not None
    credentials = found.get_frozen_credentials()
    direct = boto3.client(
        "xray",
        region_name=REGION,
        endpoint_url=stack.config.aws_endpoint_url,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.token,
        config=XRAY_BOTO_CONFIG,
    )
    listing = list_trace_ids(direct, last_hour(), filter_expression="fault", limiter=fast_limiter())
    assert listing.client_side_filter_needed
    assert sorted(listing.trace_ids) == sorted(put)


def test_time_range_type_trace_id_is_sent(client: Any, account: str) -> None:
    now = time.time()
    tid = trace_id(now - 600)
    client.put_trace_segments(
        TraceSegmentDocuments=[
            json.dumps({"id": secrets.token_hex(8), "name": "s", "trace_id": tid, "start_time": now - 599.5,
                        "end_time": now - 60})
        ]
    )  # fmt: skip
    window = Window(datetime.fromtimestamp(now - 900, UTC), datetime.fromtimestamp(now - 300, UTC))
    assert list_trace_ids(client, window, limiter=fast_limiter()).trace_ids == []
    assert list_trace_ids(client, window, "TraceId", limiter=fast_limiter()).trace_ids == [tid]


def test_member_role_sees_only_its_own_account(sessions: MemberSessions, fresh_roster: Roster) -> None:
    dev, qa = (a.account_id for a in fresh_roster.accounts[:2])
    dev_client, qa_client = xray.xray_client(sessions, dev, REGION), xray.xray_client(sessions, qa, REGION)
    dev_put = put_traces(dev_client, 3, time.time() - 400)
    qa_put = put_traces(qa_client, 4, time.time() - 400)
    dev_ids = list_trace_ids(dev_client, last_hour(), account_id=dev).trace_ids
    qa_ids = list_trace_ids(qa_client, last_hour(), account_id=qa).trace_ids
    assert sorted(dev_ids) == sorted(dev_put)
    assert sorted(qa_ids) == sorted(qa_put)
    foreign = batch_get_traces(qa_client, dev_ids, account_id=qa, max_unprocessed_rounds=0)
    assert foreign.traces == []
    assert set(foreign.unprocessed) | set(foreign.missing) == set(dev_ids)


def test_transaction_search_detection(client: Any, account: str, front: StrictXRayFront, stack: SandboxStack) -> None:
    state = detect_transaction_search(client, account_id=account, limiter=fast_limiter())
    assert state.status is TransactionSearchStatus.XRAY
    assert not state.xray_reads_empty
    front.set_segment_destination(account, REGION, "CloudWatchLogs")
    state = detect_transaction_search(client, account_id=account, limiter=fast_limiter())
    assert state.status is TransactionSearchStatus.CLOUDWATCH_LOGS
    assert state.xray_reads_empty
    assert list_trace_ids(client, last_hour(), limiter=fast_limiter()).trace_ids == []

    direct = boto3.client(
        "xray", region_name=REGION, endpoint_url=stack.config.aws_endpoint_url, config=XRAY_BOTO_CONFIG
    )
    state = detect_transaction_search(direct, limiter=fast_limiter())
    assert state.status is TransactionSearchStatus.UNKNOWN  # moto 5.2.5 has no such API
    assert "not implemented" in state.detail


class _Denied(BaseHTTPRequestHandler):
    """A real HTTP endpoint that denies everything, as AWS does for a role without permission."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": "AccessDeniedException", "message": "not authorized"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "AccessDeniedException")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def denying_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Denied)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_access_denied_becomes_account_access_error(denying_endpoint: str) -> None:
    denied = boto3.client("xray", region_name=REGION, endpoint_url=denying_endpoint, config=XRAY_BOTO_CONFIG)
    with pytest.raises(AccountAccessError, match="AccessDeniedException"):
        list_trace_ids(denied, last_hour(), account_id="011111111111", limiter=fast_limiter())
    with pytest.raises(AccountAccessError):
        batch_get_traces(denied, ["1-00000000-000000000000000000000000"], limiter=fast_limiter())
    state = detect_transaction_search(denied, limiter=fast_limiter())
    assert state.status is TransactionSearchStatus.UNKNOWN
    assert "AccessDenied" in state.detail


def test_batch_size_validated(client: Any) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        batch_get_traces(client, ["x"], batch_size=6)
    assert issubclass(AccountAccessError, TerminalError)
