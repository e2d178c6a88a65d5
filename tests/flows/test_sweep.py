"""Sweep flow against the sandbox (moto over HTTP + the strict X-Ray front) under a real Prefect server."""

from __future__ import annotations

import time

import boto3
import orjson
import pytest

from blocks.config import Config
from flows.sweep import sweep
from tasks import archive, watermark
from tasks import envelope as env
from tasks.aws import MemberSessions

pytestmark = pytest.mark.usefixtures("prefect_harness")


def put_simple_traces(config: Config, account_id: str, count: int, age_seconds: float = 600) -> list[str]:
    xray = MemberSessions(config.roster).client(account_id, "us-east-1", "xray")
    now = time.time() - age_seconds
    ids = []
    docs = []
    for i in range(count):
        start = now - i * 7
        trace_id = f"1-{int(start):08x}-{account_id}{i:012d}"
        ids.append(trace_id)
        docs.append(
            orjson.dumps(
                {
                    "name": f"svc-{account_id[-3:]}",
                    "id": f"{i:016x}",
                    "trace_id": trace_id,
                    "start_time": start,
                    "end_time": start + 0.5,
                }
            ).decode()
        )
    for start in range(0, len(docs), 50):
        xray.put_trace_segments(TraceSegmentDocuments=docs[start : start + 50])
    return ids


def drain(config: Config) -> list[env.Envelope]:
    sqs = boto3.client("sqs")
    out: list[env.Envelope] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=config.queue.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return out
        for m in messages:
            pointer = env.parse_pointer(m["Body"])
            if pointer:
                raw = env.gunzip_capped(archive.fetch_claim_check(boto3.client("s3"), pointer))
            else:
                raw = env.body_to_raw(m["Body"])
            out.append(env.parse_envelope(raw))
            sqs.delete_message(QueueUrl=config.queue.queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_sweep_sends_exactly_the_traces_and_a_second_sweep_adds_only_overlap(
    fresh_config: Config, config_file: str
) -> None:
    expected = set()
    for account in fresh_config.roster.accounts:
        # inside the next sweep's overlap (watermark - 5 min) and older than the lag (2 min)
        expected |= set(put_simple_traces(fresh_config, account.account_id, 12, age_seconds=200))
    state = sweep(config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    data = state.result()
    assert data["totals"]["failed"] == 0
    envelopes = drain(fresh_config)
    sent = [t["Id"] for e in envelopes for t in e.traces]
    assert set(sent) == expected
    assert len(sent) == len(expected)
    first_ids = {e.envelope_id for e in envelopes}
    for account in fresh_config.roster.accounts:
        mark = watermark.read(boto3.client("s3"), fresh_config.archive, account.account_id, "us-east-1")
        assert mark.high_water is not None

    again = sweep(config_path=config_file, return_state=True)
    assert again.is_completed()
    overlap = drain(fresh_config)
    # Nothing new: the overlap lists the traces again with the revisions already sent, so none is
    # fetched or sent twice (tasks/overlap.py); whatever would come is a same-id duplicate.
    assert {e.envelope_id for e in overlap} <= first_ids
    assert overlap == []
    assert again.result()["totals"]["unchanged"] == len(expected)


def test_unknown_account_fails_before_any_work(config_file: str) -> None:
    with pytest.raises(ValueError, match="not in the roster"):
        sweep(accounts=["999999999999"], config_path=config_file)


def test_a_prefect_api_that_fails_the_x_ray_slots_does_not_fail_any_account(
    fresh_config: Config, config_file: str
) -> None:
    """503s on acquiring and releasing the per-account limits (seen from a busy Prefect server
    with 200 accounts in flight): the sweep retries, works without the slot when it must, and
    every account still completes."""
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from sandbox.faults import FaultProxy, FaultRule
    from tasks.limits import ensure_limits

    ensure_limits(fresh_config.roster)  # real limits: acquiring and releasing both reach the API
    expected = set()
    for account in fresh_config.roster.accounts:
        expected |= set(put_simple_traces(fresh_config, account.account_id, 3))
    api = PREFECT_API_URL.value()
    with FaultProxy(api) as proxy:
        unavailable = b'{"exception_message": "Service Unavailable"}'
        acquire = proxy.add(FaultRule(path="increment-with-lease", status=503, response=unavailable, times=4))
        release = proxy.add(FaultRule(path="decrement-with-lease", status=503, response=unavailable, times=2))
        # No client-side retries: each 503 reaches xray_slot (Prefect's client retries 503s itself).
        with temporary_settings({PREFECT_API_URL: proxy.url + urlsplit(api).path, PREFECT_CLIENT_MAX_RETRIES: 0}):
            state = sweep(config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    data = state.result()
    assert data["totals"]["failed"] == 0
    assert acquire.hits == 4 and release.hits >= 1
    assert {t["Id"] for e in drain(fresh_config) for t in e.traces} == expected


def test_existing_limits_lists_only_the_limits_that_exist(fresh_config: Config) -> None:
    from tasks.limits import concurrency_name, ensure_limits, existing_limits

    first, second = fresh_config.roster.accounts[:2]
    ensure_limits(fresh_config.roster.model_copy(update={"accounts": [first]}))
    names = [concurrency_name(a.account_id, "us-east-1") for a in (first, second)]
    assert existing_limits(names, page=1) == {names[0]}  # paged: one limit per request


def _delete_xray_limits() -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for limit in client.read_global_concurrency_limits(limit=200):
            if limit.name.startswith("xray-"):
                client.delete_global_concurrency_limit_by_name(limit.name)


def test_an_account_that_joined_after_serve_gets_its_x_ray_limits_at_the_next_sweep(
    fresh_config: Config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """`serve` created the limits for the roster it read; an account the roster gained since has
    none, so its collectors would run unbounded: the sweep creates its pair before sweeping it."""
    from prefect.client.orchestration import get_client

    from blocks import MemberAccount
    from tasks.limits import concurrency_name, ensure_limits, rate_name

    _delete_xray_limits()
    first = fresh_config.roster.accounts[0]
    joined = MemberAccount(account_id=f"7{int(time.time() * 1000) % 10**11:011d}", name="joined", regions=["us-east-1"])
    ensure_limits(fresh_config.roster.model_copy(update={"accounts": [first]}), collectors=3)  # what serve made
    put_simple_traces(fresh_config, joined.account_id, 2)
    config = fresh_config.model_copy(
        update={"roster": fresh_config.roster.model_copy(update={"accounts": [first, joined]})}
    )
    path = tmp_path / "joined.json"
    path.write_bytes(config.to_json())
    state = sweep(config_path=str(path), return_state=True)
    assert state.is_completed(), state.message
    assert {r["account_id"]: r["traces"] for r in state.result()["accounts"]}[joined.account_id] == 2
    with get_client(sync_client=True) as client:
        slot = client.read_global_concurrency_limit_by_name(concurrency_name(joined.account_id, "us-east-1"))
        rate = client.read_global_concurrency_limit_by_name(rate_name(joined.account_id, "us-east-1"))
    assert (slot.limit, rate.slot_decay_per_second) == (2, 10.0)  # the defaults serve uses


def test_a_sweep_creates_no_x_ray_limits_where_serve_created_none(config_file: str) -> None:
    """Without any `xray-…` limit (`serve --no-limits`, the CLI on an ephemeral server) the sweep
    leaves the Concurrency page alone."""
    from prefect.client.orchestration import get_client

    _delete_xray_limits()
    state = sweep(config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        names = [limit.name for limit in client.read_global_concurrency_limits(limit=200)]
    assert not [name for name in names if name.startswith("xray-")]


def test_an_account_whose_x_ray_slot_stays_busy_fails_alone_without_calling_x_ray(fresh_config: Config) -> None:
    """Another run holds the account's `xray-*` slot: this run's task gives up after the slot
    timeout, reports that account as failed for that reason and leaves its watermark alone."""
    from datetime import UTC, datetime

    from prefect import flow
    from prefect.concurrency.sync import concurrency

    from flows.sweep import sweep_account_task
    from tasks import collector as col
    from tasks.limits import concurrency_name, ensure_limits

    account = fresh_config.roster.accounts[0]
    ensure_limits(fresh_config.roster.model_copy(update={"accounts": [account]}), collectors=1)
    put_simple_traces(fresh_config, account.account_id, 3)
    collector = col.Collector.from_config(fresh_config)

    @flow
    def sweep_one(slot_timeout_seconds: float) -> col.AccountResult:  # the task logs through its run's logger
        return sweep_account_task.fn(
            collector, account, "us-east-1", datetime.now(UTC), {}, slot_timeout_seconds=slot_timeout_seconds
        )

    with concurrency(concurrency_name(account.account_id, "us-east-1"), occupy=1):  # the other run
        result = sweep_one(1.0)
    assert result.status == "failed" and result.error_kind == "TimeoutError"
    assert "slot not free within 1 s" in (result.error or "")
    assert result.traces == 0
    mark = watermark.read(boto3.client("s3"), fresh_config.archive, account.account_id, "us-east-1")
    assert mark.high_water is None
    assert drain(fresh_config) == []

    # the release reaches the server asynchronously: on a loaded machine 1 s can pass before it does
    freed = sweep_one(60.0)
    assert freed.status != "failed", freed.error
    assert freed.traces == 3


def test_an_organizations_roster_sweeps_new_accounts_and_retires_closed_ones_without_config_changes(
    fresh_config: Config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import uuid

    from blocks import OrganizationsSource
    from sandbox import seed
    from tasks.index import client_for
    from tasks.mappings import HEALTH_INDEX

    org = boto3.client("organizations")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name=f"s-{uuid.uuid4().hex[:8]}")["OrganizationalUnit"]["Id"]

    def create(name: str) -> str:
        status = org.create_account(Email=f"{name}-{uuid.uuid4().hex[:6]}@example.com", AccountName=name)
        account_id = str(status["CreateAccountStatus"]["AccountId"])
        org.move_account(AccountId=account_id, SourceParentId=root, DestinationParentId=ou)
        return account_id

    kept, closed = create("kept"), create("closing")
    source = OrganizationsSource(
        role_arn=f"arn:aws:iam::{seed.LOG_ACCOUNT_ID}:role/{seed.ORGANIZATIONS_READER_ROLE}",
        parents=[ou],
        cache_ttl_seconds=0,
    )
    roster = fresh_config.roster.model_copy(update={"source": "organizations", "organizations": source, "accounts": []})
    config = fresh_config.model_copy(update={"roster": roster})
    path = tmp_path / "org-config.json"
    path.write_bytes(config.to_json())
    put_simple_traces(config, kept, 3)

    first = sweep(config_path=str(path), return_state=True)
    assert first.is_completed(), first.message
    assert {r["account_id"] for r in first.result()["accounts"]} == {kept, closed}
    assert first.result()["totals"]["roster_source"] == "organizations"
    assert first.result()["totals"]["traces"] == 3

    org.close_account(AccountId=closed)
    added = create("added")
    put_simple_traces(config, added, 2)
    second = sweep(config_path=str(path), return_state=True)
    assert second.is_completed(), second.message  # a closed account is retired, not failed
    assert second.result()["totals"]["roster_source"] == "organizations"  # refreshed beside the sweep
    rows = {r["account_id"]: r for r in second.result()["accounts"]}
    # the cached roster was swept while Organizations was read again: the closed account had its
    # last sweep and is reported retired; the new one was swept once the refresh was in
    assert set(rows) == {kept, added, closed}
    assert (rows[closed]["status"], rows[closed]["error"]) == ("retired", "status SUSPENDED")
    assert rows[added]["watermark_before"] is None and rows[added]["traces"] == 2  # swept from first_lookback
    s3 = boto3.client("s3")
    assert watermark.read(s3, config.archive, closed, "us-east-1").high_water is not None  # kept
    search = client_for(config.opensearch)
    search.indices.refresh(index=HEALTH_INDEX)
    hits = search.search(index=HEALTH_INDEX, body={"query": {"term": {"status": "retired"}}})["hits"]["hits"]
    assert [(h["_source"]["account_id"], h["_source"]["error"]) for h in hits] == [(closed, "status SUSPENDED")]


def test_a_sweep_with_a_monitoring_account_reads_linked_accounts_there_and_says_which_path_each_took(
    fresh_config: Config, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from blocks import MonitoringAccount
    from tests.conftest import new_account_id

    dev, qa, prod = (a.account_id for a in fresh_config.roster.accounts)
    monitor = new_account_id()
    sessions = MemberSessions(fresh_config.roster)
    sink = sessions.client(monitor, "us-east-1", "oam").create_sink(Name="flow-test")["Arn"]
    sessions.client(dev, "us-east-1", "oam").create_link(
        LabelTemplate="$AccountName", ResourceTypes=["AWS::XRay::Trace"], SinkIdentifier=sink
    )
    for account in (dev, prod):
        put_simple_traces(fresh_config, account, 2)
    roster = fresh_config.roster.model_copy(update={"monitoring": MonitoringAccount(account_id=monitor)})
    path = tmp_path / "monitoring.json"
    path.write_bytes(fresh_config.model_copy(update={"roster": roster}).to_json())
    state = sweep(config_path=str(path), return_state=True)
    assert state.is_completed(), state.message
    rows = {r["account_id"]: r for r in state.result()["accounts"]}
    assert {k: (v["path"], v["traces"]) for k, v in rows.items()} == {
        dev: ("monitoring-account", 2),
        qa: ("member-role", 0),
        prod: ("member-role", 2),
    }
    assert {e.account_id for e in drain(fresh_config)} == {dev, prod}
