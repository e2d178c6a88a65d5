"""The committer: consumers' Parquet files → Iceberg appends. Pure checks of what a pending file
must be, then real runs on the moto S3 server with the SQL catalog, including runs interrupted
between writing and committing and between committing and cleaning up."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blocks import ArchiveStore
from blocks.config import Config
from sandbox.faults import FaultProxy, FaultRule
from tasks import archive, catalog, committer
from tasks.tables import SEGMENT_SCHEMA

STORE = ArchiveStore(bucket="lake")
PARTITION = {"account_id": "012345678901", "region": "us-east-1", "dt": "2026-11-20", "hour": "10"}
KEY = "parquet/segments/account_id=012345678901/region=us-east-1/dt=2026-11-20/hour=10/part-abc.parquet"
AT = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)


def segment_rows(account_id: str, numbers: Iterable[int], collected_at: datetime) -> pa.Table:
    """Segment rows as the consumer's transform builds them (SEGMENT_SCHEMA, partition columns set)."""
    numbers = list(numbers)
    columns: dict[str, list[Any]] = {f.name: [None] * len(numbers) for f in SEGMENT_SCHEMA}
    columns |= {
        "account_id": [account_id] * len(numbers),
        "region": ["us-east-1"] * len(numbers),
        "trace_id": [f"1-6740e4a8-{n // 2:024x}" for n in numbers],
        "segment_id": [f"s{n:02d}" for n in numbers],
        "name": [f"svc-{n}" for n in numbers],
        "collected_at": [collected_at] * len(numbers),
        "envelope_id": [f"e{collected_at:%M}"] * len(numbers),
        "dt": ["2026-11-20"] * len(numbers),
        "hour": ["10"] * len(numbers),
    }
    return pa.Table.from_pydict(columns, schema=SEGMENT_SCHEMA)


def consumer_file(s3: Any, config: Config, rows: pa.Table, part: str) -> list[str]:
    """Write rows exactly as the consumer does (one file per partition, partition columns in the path)."""
    keys = []
    for piece in archive.split_by_partition(rows):
        key = archive.parquet_key(
            config.archive, "segments", piece.account_id, piece.region, piece.dt, piece.hour, part
        )
        archive.write_parquet(s3, key, config.archive.bucket, piece.table)
        keys.append(key)
    return keys


def body_of(rows: pa.Table) -> pa.Table:
    return rows.drop_columns(["account_id", "region", "dt", "hour"])


def target() -> pa.Schema:
    return SEGMENT_SCHEMA


# ----------------------------------------------------------------------------- pure


def test_pending_files_are_parsed_from_the_intake_layout() -> None:
    pending = committer.parse_pending(STORE, "segments", {"Key": KEY, "Size": 10})
    assert pending is not None and pending.partition == PARTITION and pending.name == "part-abc.parquet"
    stray = committer.parse_pending(STORE, "segments", {"Key": "parquet/segments/loose.parquet", "Size": 1})
    assert stray is not None and stray.partition == {}
    assert committer.parse_pending(STORE, "segments", {"Key": KEY.replace(".parquet", ".json")}) is None


def test_batches_respect_bytes_and_file_counts() -> None:
    files = [committer.PendingFile(f"k{i}", 40, PARTITION) for i in range(5)]
    assert [len(b) for b in committer.batches(files, max_bytes=100, max_files=10)] == [2, 2, 1]
    assert [len(b) for b in committer.batches(files, max_bytes=10_000, max_files=3)] == [3, 2]
    assert [len(b) for b in committer.batches([committer.PendingFile("big", 500, PARTITION)], 100, 10)] == [1]


def test_conform_restores_partition_columns_and_evolves_an_older_writers_file() -> None:
    rows = body_of(segment_rows("012345678901", range(3), AT)).drop_columns(["sql_url", "document"])  # older writer
    out = committer.conform("segments", rows, PARTITION, target())
    assert out.schema == SEGMENT_SCHEMA
    assert set(out.column("account_id").to_pylist()) == {"012345678901"}
    assert out.column("sql_url").null_count == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda t: t.append_column("colour", pa.array(["red"] * t.num_rows)),
            "columns not in the segments table: colour",
        ),
        (lambda t: t.drop_columns(["segment_id"]), "lacks the required column(s) segment_id"),
        (
            lambda t: t.set_column(t.schema.get_field_index("depth"), "depth", pa.array(["x"] * t.num_rows)),
            "column depth is string, the segments table has int32",
        ),
        (
            lambda t: t.set_column(t.schema.get_field_index("trace_id"), "trace_id", pa.nulls(t.num_rows, pa.string())),
            "column trace_id holds 3 null(s)",
        ),
        (
            lambda t: t.append_column("account_id", pa.array(["999999999999"] * t.num_rows)),
            "column account_id holds ['999999999999'] but its path says '012345678901'",
        ),
    ],
)
def test_conform_refuses_what_does_not_fit_naming_why(change: Any, reason: str) -> None:
    rows = change(body_of(segment_rows("012345678901", range(3), AT)))
    with pytest.raises(committer.RefusedFile) as caught:
        committer.conform("segments", rows, PARTITION, target())
    assert reason in str(caught.value)
    with pytest.raises(committer.RefusedFile, match="not in the partition layout"):
        committer.conform("segments", body_of(segment_rows("012345678901", range(1), AT)), {}, target())


# ----------------------------------------------------------------------------- sandbox


def _rows(config: Config) -> pa.Table:
    return catalog.open_table(config, "segments").scan().to_arrow()


def _pending(s3: Any, config: Config) -> list[str]:
    return [f.key for f in committer.list_pending(s3, config.archive, "segments")]


def test_commit_appends_pending_files_once_and_sets_bad_ones_aside(fresh_config: Config) -> None:
    s3 = boto3.client("s3")
    account = fresh_config.roster.accounts[0].account_id
    consumer_file(s3, fresh_config, segment_rows(account, range(0, 4), AT), "one")
    consumer_file(s3, fresh_config, segment_rows(account, range(4, 6), AT), "two")
    partition = f"parquet/segments/account_id={account}/region=us-east-1/dt=2026-11-20/hour=10"
    bucket = fresh_config.archive.bucket
    s3.put_object(Bucket=bucket, Key=f"{partition}/corrupt.parquet", Body=b"PAR1 not really")
    foreign = io.BytesIO()
    pq.write_table(pa.table({"order_id": [1, 2]}), foreign)
    s3.put_object(Bucket=bucket, Key=f"{partition}/foreign.parquet", Body=foreign.getvalue())

    tbl = catalog.open_table(fresh_config, "segments")
    result = committer.commit_table(s3, fresh_config.archive, tbl, "segments")
    assert (result.committed_files, result.committed_rows, result.snapshots) == (2, 6, 1)
    reasons = {r["key"].rsplit("/", 1)[-1]: r["reason"] for r in result.refused}
    assert reasons["corrupt.parquet"].startswith("not a readable Parquet file")
    assert "columns not in the segments table: order_id" in reasons["foreign.parquet"]
    moved = s3.head_object(Bucket=bucket, Key=f"parquet/_refused/segments/{partition.split('/', 2)[2]}/foreign.parquet")
    assert "order_id" in moved["Metadata"]["refused-reason"]
    assert _pending(s3, fresh_config) == []
    rows = _rows(fresh_config)
    assert sorted(rows.column("segment_id").to_pylist()) == [f"s{i:02d}" for i in range(6)]
    assert set(rows.column("account_id").to_pylist()) == {account}  # restored from the path
    again = committer.commit_table(s3, fresh_config.archive, tbl, "segments")
    assert (again.committed_files, again.refused) == (0, [])
    assert _rows(fresh_config).num_rows == 6


def test_a_run_interrupted_before_or_after_its_commit_is_finished_by_the_next_run(fresh_config: Config) -> None:
    s3 = boto3.client("s3")
    store = fresh_config.archive
    account = fresh_config.roster.accounts[0].account_id
    keys = consumer_file(s3, fresh_config, segment_rows(account, range(0, 4), AT), "one")
    tbl = catalog.open_table(fresh_config, "segments")

    # killed after writing its ledger, before the commit: the ledger is void, the files still pending
    void = f"{committer.ledger_prefix(store, 'segments')}deadbeef.json"
    s3.put_object(Bucket=store.bucket, Key=void, Body=orjson.dumps({"batch": "deadbeef", "keys": keys}))
    result = committer.commit_table(s3, store, tbl, "segments")
    assert (result.abandoned_batches, result.committed_files) == (1, 1)
    assert _rows(fresh_config).num_rows == 4

    # killed after the commit, before deleting its files: the ledger names a committed batch
    batch = tbl.current_snapshot().summary[committer.BATCH_PROPERTY]  # type: ignore[union-attr]
    consumer_file(s3, fresh_config, segment_rows(account, range(0, 4), AT), "one")  # the files are back
    ledger = f"{committer.ledger_prefix(store, 'segments')}{batch}.json"
    s3.put_object(Bucket=store.bucket, Key=ledger, Body=orjson.dumps({"batch": batch, "keys": keys}))
    assert _pending(s3, fresh_config) == keys
    result = committer.commit_table(s3, store, tbl, "segments")
    assert (result.recovered_batches, result.committed_files) == (1, 0)
    assert _rows(fresh_config).num_rows == 4  # not appended twice
    assert _pending(s3, fresh_config) == []
    assert list(archive.list_keys(s3, store.bucket, committer.ledger_prefix(store, "segments"))) == []


# ----------------------------------------------------------------------------- a committer process killed

REPO = Path(__file__).resolve().parents[2]
COMMITTER = (
    "import sys\n"
    "from blocks.config import load_config\n"
    "from tasks import catalog, committer\n"
    "from tasks.aws import log_client\n"
    "config = load_config(sys.argv[1])\n"
    "config.apply_environment()\n"
    "s3 = log_client('s3', config.archive.region)\n"
    "print('committer started', flush=True)\n"
    "committer.commit_table(s3, config.archive, catalog.open_table(config, 'segments'), 'segments')\n"
    "print('committer done', flush=True)\n"
)


def kill_committer_at(
    config: Config,
    proxy: FaultProxy,
    rule: FaultRule,
    tmp_path: Path,
    name: str,
    *,
    boto3_only: bool = False,
    script: str = COMMITTER,
) -> str:
    """Run the committer (or another `script` given the config path) in its own process with S3
    through `proxy` (`boto3_only`: only its boto3 calls; pyiceberg's go straight to the server),
    wait until `rule` holds a request, then SIGKILL it (no cleanup runs: a crash). Returns the
    process's output."""
    path = tmp_path / f"{name}.json"
    if boto3_only:
        routed = config.model_copy(update={"service_endpoints": {**config.service_endpoints, "s3": proxy.url}})
    else:
        routed = config.model_copy(update={"aws_endpoint_url": proxy.url})
    path.write_bytes(routed.to_json())
    log = tmp_path / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(REPO)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180  # imports and a catalog open on a loaded 2-core machine
        while rule.hits == 0:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the committer never reached the held request: {log.read_text()}"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    return log.read_text()


@pytest.mark.slow  # two committer processes (pyiceberg imports) on a loaded machine: ~40 s
def test_a_committer_killed_before_or_after_its_commit_leaves_nothing_the_next_run_does_not_finish(
    fresh_config: Config, tmp_path: Path
) -> None:
    s3 = boto3.client("s3")
    store = fresh_config.archive
    account = fresh_config.roster.accounts[0].account_id
    tbl = catalog.open_table(fresh_config, "segments")  # created before, as any run after the first finds it
    ledgers = committer.ledger_prefix(store, "segments")
    assert fresh_config.aws_endpoint_url

    # killed while its new table metadata is being written: its ledger is left, nothing committed
    first = consumer_file(s3, fresh_config, segment_rows(account, range(0, 4), AT), "one")
    with FaultProxy(fresh_config.aws_endpoint_url) as proxy:
        held = proxy.add(
            FaultRule(method="PUT|POST", path=r"/iceberg/segments/metadata/[^/?]*\.metadata\.json", delay_seconds=600)
        )
        output = kill_committer_at(fresh_config, proxy, held, tmp_path, "before-commit")
    assert "committer done" not in output
    assert len(list(archive.list_keys(s3, store.bucket, ledgers))) == 1
    tbl.refresh()
    assert tbl.metadata.current_snapshot_id is None
    assert _pending(s3, fresh_config) == first  # still pending, not lost

    result = committer.commit_table(s3, store, tbl, "segments")  # the next run
    assert (result.abandoned_batches, result.committed_files, result.committed_rows) == (1, 1, 4)

    # killed after its commit, while deleting the files it committed
    second = consumer_file(s3, fresh_config, segment_rows(account, range(4, 10), AT), "two")
    with FaultProxy(fresh_config.aws_endpoint_url) as proxy:
        held = proxy.add(FaultRule(method="POST", path=r"[?&]delete(=|&|$)", delay_seconds=600))  # DeleteObjects
        output = kill_committer_at(fresh_config, proxy, held, tmp_path, "after-commit", boto3_only=True)
    assert "committer done" not in output
    assert _pending(s3, fresh_config) == second  # the files are still there, but already in the table
    assert _rows(fresh_config).num_rows == 10

    result = committer.commit_table(s3, store, tbl, "segments")  # the next run
    assert (result.recovered_batches, result.committed_files) == (1, 0)
    rows = _rows(fresh_config)
    assert sorted(rows.column("segment_id").to_pylist()) == [f"s{i:02d}" for i in range(10)]  # each row once
    assert _pending(s3, fresh_config) == []
    assert list(archive.list_keys(s3, store.bucket, ledgers)) == []
