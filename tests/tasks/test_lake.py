"""SQL over the Parquet lake (DuckDB over pyarrow datasets on the moto S3 server)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from blocks.config import Config
from tasks import envelope as env
from tasks import lake
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


def ingest_batches(config: Config, batches: Sequence[Sequence[env.Envelope]]) -> BatchStats:
    """Each batch through the consumer's sinks (raw, Parquet, index) as one consumer batch would."""
    consumer = Consumer(config, log_client("s3", config.archive.region), log_client("sqs", config.queue.region))
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    total = BatchStats()
    for batch in batches:
        stats = BatchStats()
        failed = consumer.ingest([(e, e.to_json()) for e in batch], stats)
        assert not failed, stats.errors
        total.merge(stats)
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
    with pytest.raises(lake.EmptyLakeError, match="no Parquet files yet"):
        lake.query(fresh_config, "SELECT count(*) FROM traces")


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
    accounts = [a.account_id for a in fresh_config.roster.accounts]
    first = [make_trace(accounts[0], f"v{i}", HOUR_START) for i in range(2)]
    second = [make_trace(accounts[1], f"w{i}", HOUR_START) for i in range(3)]
    ingest_batches(fresh_config, [[envelope(fresh_config, first, 0)], [envelope(fresh_config, second, 1)]])
    s3 = log_client("s3", fresh_config.archive.region)
    listings: list[str] = []
    real = lake.lake_dataset

    def list_then_delete(config: Config, table: str, *args: Any, **kwargs: Any) -> Any:
        dataset = real(config, table, *args, **kwargs)
        listings.append(table)
        if table == "segments" and listings.count("segments") == 1:  # a compaction swaps a file away
            doomed = next(f for f in dataset.files if f"account_id={accounts[0]}" in f)
            bucket, key = doomed.split("/", 1)
            s3.delete_object(Bucket=bucket, Key=key)
        return dataset

    monkeypatch.setattr(lake, "lake_dataset", list_then_delete)
    frame = lake.query(fresh_config, "SELECT account_id, count(*) AS n FROM segments GROUP BY 1")
    assert frame.to_dict("records") == [{"account_id": accounts[1], "n": 3}]
    assert listings.count("segments") == 2
