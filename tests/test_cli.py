"""The CLI against the sandbox: JSON output, exit codes and clear errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from blocks.config import Config
from tests.flows.test_consume import envelope_for, make_trace, send, send_envelope
from xraylake.cli import app

pytestmark = pytest.mark.usefixtures("prefect_harness")
FIXTURES = Path(__file__).parent / "fixtures" / "xray"


@pytest.fixture
def cli(config_file: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XRAYLAKE_CONFIG", config_file)
    return CliRunner()


def run(cli: CliRunner, *args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    result = cli.invoke(app, [*args])
    assert result.exit_code == code, result.output
    if "--json" in args and code == 0:
        return json.loads(result.stdout)
    return {"output": result.output}


def test_import_direct_indexes_any_layout_and_reports_each_rejection_once_per_file(
    cli: CliRunner, fresh_config: Config, tmp_path: Path
) -> None:
    import gzip

    from tasks.index import client_for

    account = fresh_config.roster.accounts[0].account_id
    ddb_text = (FIXTURES / "otel_ddb_sample.json").read_text()  # pretty-printed: 483 "not JSON" lines before
    daemon = tmp_path / "daemon.json"
    daemon.write_text(
        '{"format": "json", "version": 1}\n' + ddb_text + "not json at all\nstill not json\n"
        '{"name": "no-trace-id", "id": "1", "start_time": 1}\n'
    )
    batch = tmp_path / "batch.out"  # gzip, found by its magic bytes
    batch.write_bytes(gzip.compress((FIXTURES / "scorekeep_batch_get_traces.json").read_bytes()))
    result = cli.invoke(app, ["import", str(daemon), str(batch), "--account-id", account, "--direct", "--json"])
    assert result.exit_code == 1, result.output  # the good traces are imported, but something was rejected
    data = json.loads(result.stdout)
    lines = ddb_text.count("\n") + 2
    assert data["files"] == [
        {
            "file": str(daemon),
            "documents_read": 3,
            "segments_read": 1,
            "indexed": 1,
            "rejected": 2,
            "rejections": [
                {
                    "file": str(daemon),
                    "line": lines,
                    "where": f"{daemon}:{lines}",
                    "reason": "not JSON: starts with b'not json at all'",
                },
                {
                    "file": str(daemon),
                    "line": lines + 2,
                    "where": f"{daemon}:{lines + 2}",
                    "reason": "segment document lacks 'trace_id'",
                },
            ],
        },
        {"file": str(batch), "documents_read": 5, "segments_read": 5, "indexed": 5, "rejected": 0, "rejections": []},
    ]
    assert (data["segments_read"], data["segments_indexed"], data["rejected"], data["traces"]) == (6, 6, 2, 2)
    assert data["documents_failed"] == 0
    client = client_for(fresh_config.opensearch)
    client.indices.refresh(index="xray-*")
    hits = client.search(index="xray-traces", body={"size": 10})["hits"]["hits"]
    ddb = json.loads(ddb_text)
    assert sorted(h["_source"]["trace_id"] for h in hits) == sorted(
        [ddb["trace_id"], "1-59602603-23fc5b688855d396af79b496"]
    )
    subsegments = client.count(index="xray-segments", body={"query": {"term": {"trace_id": ddb["trace_id"]}}})
    assert subsegments["count"] > 1  # the DynamoDB segment and its subsegments

    queued = cli.invoke(app, ["import", str(batch), "--account-id", account])  # to the queue, as tables
    assert queued.exit_code == 0, queued.output
    assert re.search(r"segments_sent\s*│\s*5\s*│", queued.output), queued.output
    assert re.search(r"messages_sent\s*│\s*1\s*│", queued.output), queued.output
    assert "per file" in queued.output
    attributes = boto3.client("sqs", region_name=fresh_config.queue.region).get_queue_attributes(
        QueueUrl=fresh_config.queue.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_import_refuses_unknown_account_and_missing_file(cli: CliRunner, fresh_config: Config) -> None:
    out = run(cli, "import", str(FIXTURES / "scorekeep_batch_get_traces.json"), "--account-id", "999999999999", code=2)
    assert "not in the roster" in out["output"]
    account = fresh_config.roster.accounts[0].account_id
    out = run(cli, "import", "/nonexistent.json", "--account-id", account, code=2)
    assert "no such file" in out["output"]


def test_dlq_list_inspect_and_redrive_by_reason(cli: CliRunner, fresh_config: Config) -> None:
    from flows.consume import run_consumer

    send(fresh_config, "{not json")
    send_envelope(fresh_config, envelope_for(fresh_config, [make_trace("dlq-unsigned")]), key=None)
    run_consumer(fresh_config, wait_seconds=1, use_tasks=False)
    listed = run(cli, "dlq", "list", "--json")
    assert listed["by_reason"] == {"bad-json": 1, "signature": 1}
    unsigned = next(m for m in listed["messages"] if m["reason"] == "signature")
    inspected = run(cli, "dlq", "inspect", unsigned["message_id"], "--json")
    assert inspected["decodes_now"] is False
    assert inspected["decode_error"].startswith("signature")
    moved = run(cli, "dlq", "redrive", "--reason", "signature", "--json")
    assert moved["moved"] == 1
    assert moved["by_reason"] == {"signature": 1}
    assert run(cli, "dlq", "list", "--json")["by_reason"] == {"bad-json": 1}
    depth = boto3.client("sqs").get_queue_attributes(
        QueueUrl=fresh_config.queue.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert depth == "1"


def test_bad_parameters_exit_2_with_a_clear_message(cli: CliRunner) -> None:
    assert "not in the roster" in run(cli, "sweep", "--account", "999999999999", code=2)["output"]
    assert "malformed" in run(cli, "collect", "arn:aws:states:nope", code=2)["output"]
    assert (
        "not after start"
        in run(cli, "backfill", "--start", "2026-11-26T10:00:00+00:00", "--end", "2026-11-26T09:00:00+00:00", code=2)[
            "output"
        ]
    )
    assert "invalid duration" in run(cli, "report", "--since", "yesterday", code=2)["output"]
    assert (
        "empty range"
        in run(cli, "replay", "--start", "2026-11-26T10:00:00+00:00", "--end", "2026-11-26T10:00:00+00:00", code=2)[
            "output"
        ]
    )


def test_a_range_the_flow_would_refuse_is_refused_before_any_flow_run(cli: CliRunner) -> None:
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    def runs() -> int:
        with get_client(sync_client=True) as client:
            flows = FlowFilter(name=FlowFilterName(any_=["backfill", "replay"]))
            return len(client.read_flow_runs(flow_filter=flows))

    before = runs()
    now = datetime.now(UTC)
    old, older = (now - timedelta(days=40)).isoformat(), (now - timedelta(days=41)).isoformat()
    ancient, ancienter = (now - timedelta(days=3700)).isoformat(), (now - timedelta(days=3701)).isoformat()
    assert "10 years" in run(cli, "backfill", "--start", ancienter, "--end", ancient, code=2)["output"]
    future = (now + timedelta(hours=2)).isoformat()
    assert "in the future" in run(cli, "backfill", "--start", now.isoformat(), "--end", future, code=2)["output"]
    naive = run(cli, "replay", "--start", "2026-11-20T00:00:00", "--end", "2026-11-21T00:00:00Z", code=2)
    assert "need a time zone" in naive["output"]
    assert "rate_per_second" in run(cli, "replay", "--start", older, "--end", old, "--rate", "0", code=2)["output"]
    assert runs() == before


def test_setup_and_report_json(cli: CliRunner, tmp_path: Path) -> None:
    setup = run(cli, "setup", "--json")
    assert {"xray-traces", "xray-segments", "otel-v1-apm-span", "xraylake-health"} <= set(setup["templates"])
    assert (setup["span_generation"], setup["index_profile"]) == ("legacy", "both")
    assert setup["ism"]["installed"] == []
    assert setup["ism"]["skipped"].startswith("the cluster has no ISM: _cat/plugins lists no index-management")
    out = tmp_path / "r.html"
    report = run(cli, "report", "--since", "2h", "--out", str(out), "--json")
    assert report["headline"]["traces"] == 0
    assert out.read_text().startswith("<!DOCTYPE html>") or "<html" in out.read_text()


def test_reconcile_compact_and_query_after_the_pipeline(cli: CliRunner, fresh_config: Config) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.flows.test_sweep import put_simple_traces

    for account in fresh_config.roster.accounts:
        put_simple_traces(fresh_config, account.account_id, 5)
    run(cli, "sweep", "--json")
    run(cli, "consume", "--wait-seconds", "1", "--json")
    run(cli, "sweep", "--overlap-seconds", "3600", "--json")  # overlap: the same traces again
    run(cli, "consume", "--wait-seconds", "1", "--json")
    start = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    end = datetime.now(UTC).isoformat()
    checked = run(cli, "reconcile", "--start", start, "--end", end, "--json")
    assert checked["ok"] is True
    assert checked["totals"]["index"] == 15
    committed = run(cli, "lake", "commit", "--json")  # what the commit deployment does every 5 minutes
    assert committed["state"] == "COMPLETED" and committed["totals"]["committed_files"] > 0
    counted = run(
        cli, "query", "SELECT account_id, count(DISTINCT trace_id) AS traces FROM segments GROUP BY 1", "--json"
    )
    assert sorted(r["account_id"] for r in counted) == sorted(a.account_id for a in fresh_config.roster.accounts)
    assert {r["traces"] for r in counted} == {5}
    compacted = run(cli, "compact", "--rewrite-single-files", "--json")
    assert compacted["state"] == "COMPLETED"
    assert compacted["totals"]["rows_out"] == compacted["totals"]["rows_in"] - compacted["totals"]["duplicates_removed"]
    assert compacted["totals"]["files_after"] <= compacted["totals"]["files_before"]
    assert run(cli, "lake", "migrate", "--json")[0]["files_committed"] == 0  # nothing left in the old layout
    rows = run(cli, "query", "SELECT count(*) AS n FROM segments", "--json")
    assert rows == [{"n": 15}]
    assert "Parser Error" in run(cli, "query", "SELEC nonsense", code=2)["output"]


# ------------------------------------------------------------ refused before any flow run (issue 15)


def flow_runs() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


def refused(cli: CliRunner, *args: str) -> str:
    """Exit code 2 and one line naming what is wrong, no traceback, and no flow run created."""
    before = flow_runs()
    result = cli.invoke(app, list(args))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1, result.output
    assert flow_runs() == before, f"{args} started a flow run"
    return lines[0]


def future(hours: int = 2) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "--config", "/nonexistent.json"], "no configuration at /nonexistent.json"),
        (["consume", "--config", "/nonexistent.json"], "no configuration at /nonexistent.json"),
        (["reconcile", "--config", "/nonexistent.json"], "no configuration at /nonexistent.json"),
        (["compact", "--config", "/nonexistent.json"], "no configuration at /nonexistent.json"),
        (["sweep", "--account", "999999999999"], "not in the roster"),
        (["sweep", "--account", "12345"], "12 digits"),
        (["sweep", "--region", "mars-1"], "mars-1"),
        (["sweep", "--concurrency", "0"], "concurrency"),
        (["sweep", "--shards", "2", "--shard", "2"], "shard 2 is not below shards 2"),
        (["sweep", "--shards", "65"], "shards"),
        (["collect", "not-an-arn"], "malformed"),
        (["collect", "arn:aws:states:us-east-1:123456789012:stateMachine:sm"], "malformed"),
        (["collect", "arn:aws:states:us-east-1:999999999999:execution:sm:run-1"], "not in the roster"),
        (["reconcile", "--end", future()], "in the future"),
        (["reconcile", "--account", "999999999999"], "not in the roster"),
        (["consume", "--wait-seconds", "60"], "wait_seconds"),
        (["compact", "--orphan-delay-minutes", "5"], "orphan_delay_minutes"),
        (["compact", "--start-date", "2026-11-02", "--end-date", "2026-11-01"], "before start_date"),
    ],
)
def test_bad_configuration_or_parameters_exit_2_before_any_flow_run(
    cli: CliRunner, args: list[str], message: str
) -> None:
    assert message in refused(cli, *args)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"log_account_id": "123456789012"}', "roster"),
        ('{"roster": 1, "opensearch": []}', "roster"),
    ],
)
def test_invalid_or_incomplete_config_files_exit_2_before_any_flow_run(
    cli: CliRunner, tmp_path: Path, content: str, message: str, fresh_config: Config
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for command in (["sweep"], ["consume"], ["reconcile"]):
        assert message in refused(cli, *command, "--config", str(bad))
    account = fresh_config.roster.accounts[0].account_id
    imported = refused(
        cli, "import", str(FIXTURES / "scorekeep_batch_get_traces.json"), "--account-id", account, "--config", str(bad)
    )
    assert message in imported


def test_replay_again_says_why_nothing_was_sent_and_force_replays(cli: CliRunner, fresh_config: Config) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.flows.test_sweep import put_simple_traces

    put_simple_traces(fresh_config, fresh_config.roster.accounts[0].account_id, 3)
    run(cli, "sweep", "--json")
    run(cli, "consume", "--wait-seconds", "1", "--json")
    now = datetime.now(UTC)
    window = ["--start", (now - timedelta(hours=2)).isoformat(), "--end", (now + timedelta(minutes=1)).isoformat()]
    first = run(cli, "replay", *window, "--json")
    assert first["sent"] >= 1
    assert first["partitions_skipped"] == 0
    again = run(cli, "replay", *window)["output"]
    assert "0 envelopes replayed" in again
    assert "already replayed them (a replay resumes); `--force` replays them again" in again
    forced = run(cli, "replay", *window, "--force", "--json")
    assert forced["sent"] == first["sent"]
    assert forced["partitions_skipped"] == 0
    assert forced["force"] is True


def test_query_refusals_and_limits_are_one_line_errors(cli: CliRunner, fresh_config: Config) -> None:
    from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches
    from tests.tasks.test_lake import make_trace as lake_trace

    trace = lake_trace(fresh_config.roster.accounts[0].account_id, "cli", HOUR_START)
    ingest_batches(fresh_config, [[envelope(fresh_config, [trace])]])

    def refused(*args: str) -> str:
        result = cli.invoke(app, ["query", *args])
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        return lines[0]

    copy = refused("COPY segments TO '/tmp/NoSuchKey/xraylake.csv'")
    assert copy.startswith("error: refused: COPY"), copy
    assert "/tmp/NoSuchKey/xraylake.csv" in copy and "enable_external_access" in copy
    assert "changed" not in copy
    slow = "SELECT count(*), sum(hash(a.i + b.i)) FROM segments, range(200000) a(i), range(200000) b(i)"
    assert "time limit of 1 s" in refused("--timeout", "1", slow)
    assert "memory limit of 16MB" in refused(
        "--memory-limit", "16MB", "--threads", "1", "SELECT list(md5(i::VARCHAR)) FROM range(5000000) t(i)"
    )
    assert "--memory-limit" in refused("--memory-limit", "lots", "SELECT 1")
    settings = run(
        cli,
        "query",
        "--memory-limit",
        "64MB",
        "--threads",
        "1",
        "--timeout",
        "30",
        "SELECT current_setting('memory_limit') AS memory, current_setting('threads') AS threads",
        "--json",
    )
    assert settings == [{"memory": "61.0 MiB", "threads": 1}]


@pytest.mark.slow  # saves six blocks: ~30 s on a loaded machine
def test_setup_from_config_saves_the_blocks_every_flow_can_load(
    cli: CliRunner, fresh_config: Config, config_file: str
) -> None:
    import uuid

    from blocks.config import load_config_block

    name = f"cli-{uuid.uuid4().hex[:8]}"
    out = run(cli, "setup", "--from-config", config_file, "--block-name", name, "--json")
    assert f"xraylake-config/{name}" in out["blocks"] and f"xraylake-roster/{name}" in out["blocks"]
    assert load_config_block(name).roster.accounts == fresh_config.roster.accounts
    assert run(cli, "setup", "--no-blocks", "--json")["blocks"] == []  # the JSON file alone, no server needed


def test_roster_shows_the_resolved_roster_and_where_each_entry_came_from(
    cli: CliRunner, stack, fresh_config, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    with_org = fresh_config.roster.model_copy(update={"organizations": stack.config.roster.organizations})
    fresh_config = fresh_config.model_copy(update={"roster": with_org})
    (tmp_path / "org.json").write_bytes(fresh_config.to_json())
    monkeypatch.setenv("XRAYLAKE_CONFIG", str(tmp_path / "org.json"))
    static = run(cli, "roster", "--json")
    assert static["source"] == "static"
    assert {a["origin"] for a in static["accounts"]} == {"static"}
    assert [a["account_id"] for a in static["accounts"]] == [a.account_id for a in fresh_config.roster.accounts]

    discovered = run(cli, "roster", "--source", "organizations", "--refresh", "--json")
    assert discovered["source"] == "organizations"
    by_name = {a["name"]: a for a in discovered["accounts"]}
    assert set(by_name) == {"dev", "qa", "prod"}  # the sandbox's workloads OU
    assert by_name["prod"]["regions"] == ["us-east-1", "eu-west-1"]
    assert by_name["prod"]["origin"].startswith("organizations: ou-") and "(prod)" in by_name["prod"]["origin"]
    table_output = run(cli, "roster", "--source", "organizations")["output"]
    assert "origin" in table_output and "012345678901" in table_output

    source = fresh_config.roster.organizations.model_copy(update={"parents": ["ou-zzzz-zzzzzzzz"]})
    broken = fresh_config.model_copy(
        update={"roster": fresh_config.roster.model_copy(update={"source": "organizations", "organizations": source})}
    )
    path = tmp_path / "broken.json"
    path.write_bytes(broken.to_json())
    monkeypatch.setenv("XRAYLAKE_CONFIG", str(path))
    assert "OU ou-zzzz-zzzzzzzz does not exist in the organization" in run(cli, "roster", code=2)["output"]
