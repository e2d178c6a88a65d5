"""SQL over the Parquet lake (DuckDB over pyarrow datasets on the moto S3 server)."""

from __future__ import annotations

import hashlib
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
    with pytest.raises(lake.QueryError, match=r"(?i)permission|disabled"):  # no local file access
        lake.query(fresh_config, "COPY (SELECT 1) TO '/tmp/xraylake-lake-test.csv'")


def test_empty_lake_is_a_clear_error(fresh_config: Config) -> None:
    with pytest.raises(lake.EmptyLakeError, match="no Parquet files yet"):
        lake.query(fresh_config, "SELECT count(*) FROM traces")
