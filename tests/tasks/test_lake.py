"""SQL over the Iceberg tables (DuckDB over the snapshot's files on the moto S3 server, SQL catalog)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
import pytest

from blocks.config import Config
from tasks import catalog, committer, compaction, lake
from tasks import envelope as env
from tasks.aws import log_client
from tasks.consumer import BatchStats, Consumer
from tasks.index import ensure_templates
from tasks.mappings import index_templates

HOUR_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def make_trace(account_id: str, seed: str, start: datetime, segments: int = 1) -> dict[str, Any]:
    """A trace as BatchGetTraces returns it: `segments` top-level segments, Documents as strings."""
    digest = hashlib.sha256(f"{account_id}:{seed}".encode()).hexdigest()
    epoch = start.timestamp()
    trace_id = f"1-{int(epoch):08x}-{digest[:24]}"
    docs = []
    for n in range(segments):
        segment_id = hashlib.sha256(f"{digest}:{n}".encode()).hexdigest()[:16]
        docs.append(
            {
                "Id": segment_id,
                "Document": orjson.dumps(
                    {
                        "name": f"svc-{n}",
                        "id": segment_id,
                        "trace_id": trace_id,
                        "start_time": epoch + n,
                        "end_time": epoch + n + 0.25,
                    }
                ).decode(),
            }
        )
    return {"Id": trace_id, "Duration": 0.25 + segments - 1, "LimitExceeded": False, "Segments": docs}


def envelope(
    config: Config, traces: Sequence[dict[str, Any]], account: int = 0, collected_at: datetime | None = None
) -> env.Envelope:
    return env.build_envelope(
        source="sweep",
        account_id=config.roster.accounts[account].account_id,
        region="us-east-1",
        traces=list(traces),
        collected_at=collected_at,
    )


def commit_lake(config: Config) -> dict[str, committer.CommitResult]:
    """What the commit flow does: the consumers' pending Parquet files into the Iceberg tables."""
    s3 = log_client("s3", config.archive.region)
    return {
        table: committer.commit_table(s3, config.archive, catalog.open_table(config, table), table)
        for table in ("traces", "segments")
    }


def ingest_batches(config: Config, batches: Sequence[Sequence[env.Envelope]], commit: bool = True) -> BatchStats:
    """Each batch through the consumer's sinks (raw, Parquet, index) as one consumer batch would,
    then (`commit`) the committer's run."""
    consumer = Consumer(config, log_client("s3", config.archive.region), log_client("sqs", config.queue.region))
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    total = BatchStats()
    for batch in batches:
        stats = BatchStats()
        failed = consumer.ingest([(e, e.to_json()) for e in batch], stats)
        assert not failed, stats.errors
        total.merge(stats)
    if commit:
        commit_lake(config)
    return total


def test_query_groups_by_account_keeping_leading_zeros(fresh_config: Config) -> None:
    accounts = [a.account_id for a in fresh_config.roster.accounts]
    first = [make_trace(accounts[0], f"a{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(3)]
    second = [make_trace(accounts[1], f"b{i}", HOUR_START + timedelta(hours=1, minutes=i)) for i in range(4)]
    ingest_batches(fresh_config, [[envelope(fresh_config, first, 0)], [envelope(fresh_config, second, 1)]])

    frame = lake.query(fresh_config, "SELECT account_id, count(*) AS n FROM segments GROUP BY 1 ORDER BY 1")
    assert frame.to_dict("records") == [
        {"account_id": accounts[0], "n": 6},
        {"account_id": accounts[1], "n": 4},
    ]
    assert all(a.startswith("0") for a in frame["account_id"])

    traces = lake.query(
        fresh_config,
        "SELECT t.trace_id, t.dt, t.hour, count(s.segment_id) AS segments FROM traces t "
        "JOIN segments s USING (trace_id) GROUP BY ALL ORDER BY 1",
    )
    assert sorted(traces["trace_id"]) == sorted(t["Id"] for t in first + second)
    assert set(traces["hour"]) == {f"{HOUR_START:%H}", f"{HOUR_START + timedelta(hours=1):%H}"}
    assert traces["segments"].sum() == 10

    typed = lake.query(fresh_config, "SELECT collected_at FROM traces LIMIT 1")
    assert str(typed["collected_at"].dtype).endswith("UTC]")
    assert len(lake.query(fresh_config, "SELECT * FROM segments", max_rows=3)) == 3


def test_bad_sql_gives_duckdbs_message(fresh_config: Config) -> None:
    trace = make_trace(fresh_config.roster.accounts[0].account_id, "x", HOUR_START)
    ingest_batches(fresh_config, [[envelope(fresh_config, [trace])]])
    with pytest.raises(lake.QueryError, match="syntax error"):
        lake.query(fresh_config, "SELEC account_id FROM segments")
    with pytest.raises(lake.QueryError, match="no_such_column"):
        lake.query(fresh_config, "SELECT no_such_column FROM segments")
    with pytest.raises(lake.QueryError, match="nowhere"):
        lake.query(fresh_config, "SELECT * FROM nowhere")
    with pytest.raises(lake.QueryError, match="empty SQL"):
        lake.query(fresh_config, "   ")


def test_empty_lake_is_a_clear_error(fresh_config: Config) -> None:
    with pytest.raises(lake.EmptyLakeError, match="hold no rows yet"):
        lake.query(fresh_config, "SELECT count(*) FROM traces")
    trace = make_trace(fresh_config.roster.accounts[0].account_id, "x", HOUR_START)
    ingest_batches(fresh_config, [[envelope(fresh_config, [trace])]], commit=False)
    with pytest.raises(lake.EmptyLakeError, match="xraylake lake commit"):  # consumed, not committed yet
        lake.query(fresh_config, "SELECT count(*) FROM traces")
    commit_lake(fresh_config)
    assert lake.query(fresh_config, "SELECT count(*) AS n FROM traces")["n"].tolist() == [1]


def test_duckdbs_refusals_name_what_was_refused_and_why(fresh_config: Config) -> None:
    trace = make_trace(fresh_config.roster.accounts[0].account_id, "x", HOUR_START)
    ingest_batches(fresh_config, [[envelope(fresh_config, [trace])]])
    refused = {
        # a path DuckDB echoes in its message must not read as a file that vanished mid-scan
        "COPY segments TO '/tmp/NoSuchKey/out.csv'": ("COPY", "/tmp/NoSuchKey/out.csv", "enable_external_access"),
        "COPY (SELECT 1) TO '/tmp/xraylake-lake-test.csv'": ("COPY", "/tmp/xraylake-lake-test.csv", "local files"),
        "SELECT * FROM read_csv('/etc/passwd')": ("SELECT", "/etc/passwd", "local files"),
        "SET memory_limit = '64GB'": ("memory_limit", "locked", "--memory-limit"),
        "LOAD httpfs": ("LOAD", "extension", "enable_external_access"),
    }
    for sql, words in refused.items():
        with pytest.raises(lake.QueryRefused) as caught:
            lake.query(fresh_config, sql)
        message = str(caught.value)
        assert message.startswith("refused: "), message
        assert "\n" not in message, message
        assert "lake changed" not in message, message
        for word in words:
            assert word in message, (word, message)
        assert isinstance(caught.value, lake.QueryError)


def test_a_query_past_its_time_limit_is_interrupted(fresh_config: Config) -> None:
    trace = make_trace(fresh_config.roster.accounts[0].account_id, "x", HOUR_START)
    ingest_batches(fresh_config, [[envelope(fresh_config, [trace])]])
    slow = (
        "SELECT count(*), sum(hash(a.i + b.i + length(s.segment_id))) "
        "FROM segments s, range(200000) a(i), range(200000) b(i)"
    )
    started = time.monotonic()
    with pytest.raises(lake.QueryTimeout, match=r"time limit of 1 s.*--timeout") as caught:
        lake.query(fresh_config, slow, limits=lake.QueryLimits(timeout_seconds=1))
    elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed  # listing + 1 s, not the minutes the query would take
    assert "\n" not in str(caught.value)
    fast = lake.query(fresh_config, "SELECT count(*) AS n FROM segments", limits=lake.QueryLimits(timeout_seconds=30))
    assert fast["n"].tolist() == [1]


def test_memory_and_thread_limits_are_applied(fresh_config: Config) -> None:
    trace = make_trace(fresh_config.roster.accounts[0].account_id, "x", HOUR_START)
    ingest_batches(fresh_config, [[envelope(fresh_config, [trace])]])
    settings = "SELECT current_setting('memory_limit') AS memory, current_setting('threads') AS threads"
    assert lake.query(fresh_config, settings).to_dict("records") == [{"memory": "953.6 MiB", "threads": 2}]  # defaults
    small = lake.QueryLimits(memory_limit="64MB", threads=1)
    assert lake.query(fresh_config, settings, limits=small).to_dict("records") == [{"memory": "61.0 MiB", "threads": 1}]
    with pytest.raises(lake.QueryMemoryError, match=r"memory limit of 16MB.*--memory-limit") as caught:
        lake.query(
            fresh_config,
            "SELECT list(md5(i::VARCHAR)) FROM range(5000000) t(i)",
            limits=lake.QueryLimits(memory_limit="16MB", threads=1),
        )
    assert "\n" not in str(caught.value)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"memory_limit": "lots"}, "--memory-limit"),
        ({"memory_limit": "1GB'; SET threads=64; --"}, "--memory-limit"),
        ({"threads": 0}, "--threads"),
        ({"timeout_seconds": 0}, "--timeout"),
    ]
    for kwargs, option in bad:
        with pytest.raises(ValueError, match=option):
            lake.QueryLimits(**kwargs)


def test_files_that_vanish_between_listing_and_scan_are_listed_again(
    fresh_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query planned on a snapshot whose files orphan removal deletes before the scan (a query
    older than the retention) plans again on the current snapshot."""
    accounts = [a.account_id for a in fresh_config.roster.accounts]
    first = [make_trace(accounts[0], f"v{i}", HOUR_START) for i in range(2)]
    second = [make_trace(accounts[0], f"w{i}", HOUR_START) for i in range(3)]
    ingest_batches(fresh_config, [[envelope(fresh_config, first, 0)]])
    ingest_batches(fresh_config, [[envelope(fresh_config, second, 0)]])
    s3 = log_client("s3", fresh_config.archive.region)
    listings: list[str] = []
    real = lake.lake_dataset

    def plan_then_compact(config: Config, table: str, *args: Any, **kwargs: Any) -> Any:
        dataset = real(config, table, *args, **kwargs)
        listings.append(table)
        if table == "segments" and listings.count("segments") == 1:  # compaction + maintenance in between
            tbl = catalog.open_table(config, table)
            [planned] = compaction.plan(tbl, table)
            assert compaction.compact_partition(tbl, planned).status == "compacted"
            later = datetime.now(UTC) + timedelta(days=3)
            assert compaction.expire_snapshots(tbl, timedelta(hours=1), now=later) > 0
            assert compaction.remove_orphans(s3, config.archive, tbl, timedelta(minutes=10), now=later)
        return dataset

    monkeypatch.setattr(lake, "lake_dataset", plan_then_compact)
    frame = lake.query(fresh_config, "SELECT account_id, count(*) AS n FROM segments GROUP BY 1")
    assert frame.to_dict("records") == [{"account_id": accounts[0], "n": 5}]
    assert listings.count("segments") == 2


@pytest.mark.slow  # ~45 s on a loaded 2-core machine: reads repeat until the compaction commits
def test_duckdb_and_pyiceberg_read_identical_rows_of_one_snapshot_while_a_compaction_runs(
    fresh_config: Config,
) -> None:
    account = fresh_config.roster.accounts[0].account_id
    traces = [make_trace(account, f"c{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(6)]
    collected = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    batches = [[envelope(fresh_config, traces[:4], 0, collected)]]
    batches.append([envelope(fresh_config, traces[2:], 0, collected + timedelta(minutes=1))])
    ingest_batches(fresh_config, batches)
    tbl = catalog.open_table(fresh_config, "segments")
    [planned] = compaction.plan(tbl, "segments")
    columns = ["trace_id", "segment_id", "collected_at"]

    def both(snapshot_id: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        by_iceberg = tbl.scan(snapshot_id=snapshot_id, selected_fields=tuple(columns)).to_arrow()
        dataset = lake.lake_dataset(fresh_config, "segments", snapshot_id=snapshot_id, iceberg_table=tbl)
        connection = duckdb.connect()
        connection.register("segments", dataset)
        by_duckdb = connection.sql(f"SELECT {', '.join(columns)} FROM segments").fetch_arrow_table()
        return sorted(zip(*by_iceberg.to_pydict().values(), strict=True)), sorted(
            zip(*by_duckdb.to_pydict().values(), strict=True)
        )

    before = tbl.metadata.current_snapshot_id
    assert before is not None
    results: list[compaction.PartitionResult] = []
    worker = threading.Thread(
        target=lambda: results.append(
            compaction.compact_partition(catalog.open_table(fresh_config, "segments"), planned)
        )
    )
    worker.start()
    reads = 0
    while worker.is_alive() or reads < 2:
        iceberg_rows, duckdb_rows = both(before)
        assert iceberg_rows == duckdb_rows
        assert len(duckdb_rows) == 16  # 4 + 4 traces of 2 segments, 2 traces twice: not yet deduplicated
        reads += 1
    worker.join()
    assert results[0].status == "compacted", results[0].error
    tbl.refresh()
    after = tbl.metadata.current_snapshot_id
    assert after != before
    iceberg_rows, duckdb_rows = both(after)
    assert iceberg_rows == duckdb_rows
    assert len(duckdb_rows) == 12  # one row per segment, the newer collection of traces 2 and 3
    newer = {r[0] for r in duckdb_rows if r[2] == collected + timedelta(minutes=1)}
    assert newer == {t["Id"] for t in traces[2:]}
    assert both(before)[1] != duckdb_rows  # the old snapshot still reads as it was


def test_reconcile_sees_committed_rows_and_files_still_pending_the_query_only_committed_ones(
    fresh_config: Config,
) -> None:
    from tasks import reconcile

    account = fresh_config.roster.accounts[0].account_id
    committed = [make_trace(account, f"r{i}", HOUR_START + timedelta(minutes=i)) for i in range(3)]
    pending = [make_trace(account, f"p{i}", HOUR_START + timedelta(minutes=10 + i)) for i in range(2)]
    ingest_batches(fresh_config, [[envelope(fresh_config, committed)]])
    ingest_batches(fresh_config, [[envelope(fresh_config, pending)]], commit=False)
    s3 = log_client("s3", fresh_config.archive.region)
    assert len(committer.list_pending(s3, fresh_config.archive, "traces")) == 1

    found = reconcile.observe_parquet(
        fresh_config, s3, [account], ["us-east-1"], HOUR_START, HOUR_START + timedelta(hours=1)
    )
    assert set(found[(account, "us-east-1")]) == {t["Id"] for t in committed + pending}
    queried = lake.query(fresh_config, "SELECT trace_id FROM traces")
    assert sorted(queried["trace_id"]) == sorted(t["Id"] for t in committed)  # the tables: committed rows only
