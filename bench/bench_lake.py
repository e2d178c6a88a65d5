"""Lake benchmark (Iceberg): commit latency at the default schedule, compaction of a partition of
100 small files vs the old marker protocol (run from a git worktree of the commit before it was
removed, in the same run), and a 1-day `GROUP BY service` through DuckDB on the table vs on the
raw Hive prefix. Runs against its own moto server process.

    .venv/bin/python bench/bench_lake.py [--quick] [--old-commit bc115bd]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import ROOT, finish, log, parse_args, percentile  # type: ignore[import-not-found]

OLD_COMMIT = "bc115bd"  # the last commit with tasks/compaction.py's marker protocol
DAY = "2026-11-20"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rows(account: str, hour: str, start: int, count: int, collected: datetime) -> Any:
    import pyarrow as pa

    from tasks.tables import SEGMENT_SCHEMA

    numbers = range(start, start + count)
    columns: dict[str, list[Any]] = {f.name: [None] * count for f in SEGMENT_SCHEMA}
    columns |= {
        "account_id": [account] * count,
        "region": ["us-east-1"] * count,
        "trace_id": [f"1-6740e4a8-{n // 4:024x}" for n in numbers],
        "segment_id": [f"{n:016x}" for n in numbers],
        "name": [f"op-{n % 7}" for n in numbers],
        "service_name": [f"svc-{n % 12}" for n in numbers],
        "duration": [0.001 * (n % 997) for n in numbers],
        "collected_at": [collected] * count,
        "envelope_id": [f"e{start}"] * count,
        "dt": [DAY] * count,
        "hour": [hour] * count,
    }
    return pa.Table.from_pydict(columns, schema=SEGMENT_SCHEMA)


def consumer_write(s3: Any, store: Any, table: Any, part: str) -> None:
    from tasks import archive

    for piece in archive.split_by_partition(table):
        key = archive.parquet_key(store, "segments", piece.account_id, piece.region, piece.dt, piece.hour, part)
        archive.write_parquet(s3, key, store.bucket, piece.table)


def config_for(endpoint: str, bucket: str) -> Any:
    import boto3

    from blocks import ArchiveStore, OpenSearchTarget, Roster, TraceQueue
    from blocks.config import Config

    boto3.client("s3").create_bucket(Bucket=bucket)
    return Config(
        log_account_id="000000000000",
        aws_endpoint_url=endpoint,
        roster=Roster(accounts=[], role_name="r", external_id="x"),  # type: ignore[arg-type]
        queue=TraceQueue(queue_url="q", dlq_url="d"),
        archive=ArchiveStore(bucket=bucket),
        opensearch=OpenSearchTarget(),
    )


OLD_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import boto3
from blocks import ArchiveStore
from tasks import compaction
s3 = boto3.client("s3")
store = ArchiveStore(bucket=sys.argv[2])
started = time.monotonic()
plans = [p for p in compaction.plan(s3, store, ["segments"]) if p.has_work]
results = [compaction.execute(s3, store, p) for p in plans]
print(json.dumps({"seconds": time.monotonic() - started, "status": [r.status for r in results],
  "rows_in": sum(r.rows_in for r in results), "rows_out": sum(r.rows_out for r in results),
  "files_before": sum(r.files_before for r in results), "files_after": sum(r.files_after for r in results)}))
"""


def old_protocol(endpoint: str, bucket: str, commit: str) -> dict[str, Any]:
    """The old compaction (plan + execute of the marker protocol) from a worktree of `commit`."""
    worktree = Path(tempfile.mkdtemp(prefix="xraylake-old-")) / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(worktree), commit], check=True)
    try:
        env = os.environ | {"AWS_ENDPOINT_URL": endpoint}
        out = subprocess.run(
            [sys.executable, "-c", OLD_SCRIPT, str(worktree), bucket],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--old-commit", default=OLD_COMMIT)
        p.add_argument("--only", choices=["compaction", "commit", "query"], action="append")

    args = parse_args(__doc__ or "", extra)
    started = time.monotonic()
    home = tempfile.mkdtemp(prefix="xraylake-bench-lake-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        XRAYLAKE_HOME=home,
    )
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        metrics = run(args, endpoint)
    finally:
        moto.terminate()
        moto.wait(10)
    finish("bench_lake", args, metrics, started)


def run(args: Any, endpoint: str) -> dict[str, Any]:
    import boto3

    s3 = boto3.client("s3")
    account = "012345678901"
    at = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)

    only = set(args.only or ["compaction", "commit", "query"])
    out: dict[str, Any] = {}
    if "compaction" in only:
        out |= compaction_section(args, endpoint, s3, account, at)
    if "commit" in only:
        out |= commit_section(args, endpoint, s3, account, at)
    if "query" in only:
        out |= query_section(args, endpoint, s3, account, at)
    return out


def compaction_section(args: Any, endpoint: str, s3: Any, account: str, at: datetime) -> dict[str, Any]:
    from tasks import archive, catalog, compaction

    files = 30 if args.quick else 100
    per_file = 200
    # ---- compaction of one partition of `files` small files: Iceberg overwrite vs the old protocol
    old = config_for(endpoint, "bench-old")
    new = config_for(endpoint, "bench-new")
    for i in range(files):
        batch = rows(account, "10", i * per_file - (i % 10) * 20, per_file, at + timedelta(seconds=i))  # ~10 % dup
        consumer_write(s3, old.archive, batch, f"p{i:03d}")
    log(f"old layout: {files} files written; running the old protocol from {args.old_commit}")
    old_result = old_protocol(endpoint, "bench-old", args.old_commit)
    tbl = catalog.open_table(new, "segments")
    paths = []
    for i in range(files):
        batch = rows(account, "10", i * per_file - (i % 10) * 20, per_file, at + timedelta(seconds=i))
        key = f"iceberg/segments/data/small/part-{i:03d}.parquet"
        archive.write_parquet(s3, key, "bench-new", batch.cast(catalog.arrow_schema(tbl, "segments")))
        paths.append(f"s3://bench-new/{key}")
    tbl.add_files(paths)  # one snapshot holding `files` data files in one partition
    [planned] = compaction.plan(tbl, "segments")
    t0 = time.monotonic()
    new_result = compaction.compact_partition(tbl, planned)
    new_seconds = time.monotonic() - t0
    log(f"compaction: iceberg {new_seconds:.2f} s, old {old_result['seconds']:.2f} s")
    return {
        "compaction_100_files" if not args.quick else "compaction_small_files": {
            "files": files,
            "rows_in": new_result.rows_in,
            "rows_out": new_result.rows_out,
            "iceberg_seconds": round(new_seconds, 3),
            "old_protocol_seconds": round(float(old_result["seconds"]), 3),
            "old_protocol_rows_out": old_result["rows_out"],
            "ratio_old_over_iceberg": round(float(old_result["seconds"]) / new_seconds, 2),
        }
    }


def commit_section(args: Any, endpoint: str, s3: Any, account: str, at: datetime) -> dict[str, Any]:
    from tasks import catalog, committer

    # ---- commit latency at the default schedule (every 5 min): each run commits what consumers wrote
    c = config_for(endpoint, "bench-commit")
    catalog.open_table(c, "segments")  # created before the first timed run
    latencies = []
    runs = 4 if args.quick else 12
    for r in range(runs):
        for f in range(10):  # 5 minutes of 2 consumers: 10 batch files over 2 hours
            consumer_write(s3, c.archive, rows(account, f"{9 + f % 2:02d}", (r * 10 + f) * 300, 300, at), f"r{r}f{f}")
        t0 = time.monotonic()
        result = committer.commit_table(s3, c.archive, catalog.open_table(c, "segments"), "segments")
        latencies.append(time.monotonic() - t0)
        assert result.committed_files >= 10, result
    log(f"commit latencies: {[round(x, 2) for x in latencies]}")
    p95 = percentile(latencies, 95) or 0.0
    return {
        "commit": {
            "runs": runs,
            "files_per_run": 10,
            "p50_seconds": round(percentile(latencies, 50) or 0.0, 3),
            "p95_seconds": round(p95, 3),
            "schedule_seconds": 300,
            "p95_share_of_interval": round(p95 / 300, 4),
        }
    }


def query_section(args: Any, endpoint: str, s3: Any, account: str, at: datetime) -> dict[str, Any]:
    import duckdb
    import pyarrow.dataset as ds

    from tasks import archive, catalog, committer, compaction, lake

    # ---- a 1-day GROUP BY service through DuckDB: raw Hive prefix vs the (compacted) table
    q = config_for(endpoint, "bench-query")
    hours, files_per_hour, rows_per_file = (6, 3, 500) if args.quick else (24, 4, 1000)
    for h in range(hours):
        for f in range(files_per_hour):
            consumer_write(
                s3, q.archive, rows(account, f"{h:02d}", (h * 100 + f) * rows_per_file, rows_per_file, at), f"h{f}"
            )
    sql = f"SELECT service_name, count(*) AS n, avg(duration) AS d FROM segments WHERE dt = '{DAY}' GROUP BY 1"

    def duck(dataset: Any) -> tuple[float, int]:
        t0 = time.monotonic()
        connection = duckdb.connect()
        connection.register("segments", dataset)
        frame = connection.sql(sql).df()
        return time.monotonic() - t0, int(frame["n"].sum())

    def raw_dataset() -> Any:  # the raw Hive prefix, listed: what a reader without the table scans
        keys = [o["Key"] for o in archive.list_keys(s3, "bench-query", "parquet/segments/")]
        return ds.dataset(
            [f"bench-query/{k}" for k in keys],
            filesystem=archive.s3_filesystem("us-east-1", endpoint),
            format="parquet",
            partitioning=ds.partitioning(archive.PARTITION_SCHEMA, flavor="hive"),
            partition_base_dir="bench-query/parquet/segments",
        )

    t0 = time.monotonic()
    _, raw_rows = duck(raw_dataset())
    raw_total = time.monotonic() - t0
    tbl = catalog.open_table(q, "segments")
    committer.commit_table(s3, q.archive, tbl, "segments", max_files=files_per_hour * 2)
    for p in compaction.plan(tbl, "segments"):
        compaction.compact_partition(tbl, p)
    t0 = time.monotonic()
    table_dataset = lake.lake_dataset(
        q, "segments", start_date=datetime(2026, 11, 20).date(), end_date=datetime(2026, 11, 20).date()
    )
    plan_seconds = time.monotonic() - t0
    table_seconds, table_rows = duck(table_dataset)
    assert raw_rows == table_rows == hours * files_per_hour * rows_per_file, (raw_rows, table_rows)
    return {
        "query_one_day_group_by_service": {
            "rows": table_rows,
            "raw_prefix_files": hours * files_per_hour,
            "table_files": len(table_dataset.files) if hasattr(table_dataset, "files") else None,
            "raw_prefix_seconds": round(raw_total, 3),
            "table_seconds_with_planning": round(plan_seconds + table_seconds, 3),
            "table_planning_seconds": round(plan_seconds, 3),
            "ratio_raw_over_table": round(raw_total / (plan_seconds + table_seconds), 2),
        },
    }


if __name__ == "__main__":
    main()
