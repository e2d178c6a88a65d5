"""SQL over the lake's Iceberg tables: DuckDB reading the snapshot's files (`FROM traces`, `FROM segments`).

Each query opens `traces` and `segments` at their current snapshot in the catalog
(`tasks.catalog`), plans the snapshot's data files with pyiceberg (partition pruning by account
and `dt`), and hands DuckDB a pyarrow dataset of exactly those files (DuckDB's httpfs extension is
downloaded at run time, and there may be no internet; pyarrow's `S3FileSystem` uses the same
endpoint boto3 uses, the sandbox or real S3). A query therefore reads one consistent snapshot per
table: a compaction committing meanwhile neither hides rows nor shows them twice, because the
files it replaces stay in S3 until their snapshots expire and orphan removal's delay has passed.
The tables hold what the committer has committed (freshness: the committer's schedule);
`include_pending=True` (reconcile) adds the consumers' files not committed yet.

Partition columns (account_id, region, dt, hour) are strings: account ids keep their leading
zeros. Timestamps are UTC. Rows are unique per document key once a partition is compacted; before
that a trace collected twice can appear twice (dedupe by the key and the latest `collected_at`
if that matters, e.g. `QUALIFY row_number() OVER (PARTITION BY trace_id, segment_id ORDER BY
collected_at DESC) = 1`).

Each query runs in its own DuckDB session with `QueryLimits`: a memory limit (nothing is spilled to
disk, so the limit holds), a thread count and a time limit (a watchdog thread calls
`connection.interrupt()`). The session cannot read or write local files, URLs or extensions
(`enable_external_access = false`) and its settings are locked (`lock_configuration`). What DuckDB
refuses becomes a one-line `QueryRefused` naming what was refused and why; a query past its limits
raises `QueryTimeout` or `QueryMemoryError`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from blocks.config import Config
from tasks import archive, catalog
from tasks.aws import log_client
from tasks.committer import list_pending
from tasks.errors import TerminalError, TransientError
from tasks.retrying import reread
from tasks.tables import SEGMENT_SCHEMA, TRACE_SCHEMA

LAKE_TABLES: dict[str, pa.Schema] = {"traces": TRACE_SCHEMA, "segments": SEGMENT_SCHEMA}
_ATTEMPTS = 3


class LakeError(TerminalError):
    """Base class of lake query errors."""


class QueryError(LakeError, ValueError):
    """DuckDB rejected the SQL (syntax, unknown column or table, type error)."""


class QueryRefused(QueryError):
    """DuckDB refused the statement: file, URL or extension access, or a locked setting."""


class QueryTimeout(LakeError):
    """The query ran past its time limit and was interrupted."""


class QueryMemoryError(LakeError):
    """The query needed more memory than its limit."""


class LakeChangedError(LakeError):
    """Files kept vanishing between listing and scan (compactions): run the query again."""


class EmptyLakeError(LakeError, LookupError):
    """The lake tables hold no rows yet."""


class LakeUnavailable(LakeError):
    """The lake catalog could not be reached."""


_MEMORY = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", re.IGNORECASE)


@dataclass(frozen=True)
class QueryLimits:
    """What one lake query may use: DuckDB's `memory_limit` (e.g. `1GB`, `512MiB`), `threads`,
    and the seconds from the call until the query is interrupted (listing included)."""

    memory_limit: str = "1GB"
    threads: int = 2
    timeout_seconds: float = 120.0

    def __post_init__(self) -> None:
        if not _MEMORY.fullmatch(self.memory_limit.strip()):
            raise ValueError(f"--memory-limit {self.memory_limit!r}: expected a size such as 512MB, 1GB or 2GiB")
        if self.threads < 1:
            raise ValueError(f"--threads {self.threads}: expected at least 1")
        if not self.timeout_seconds > 0:
            raise ValueError(f"--timeout {self.timeout_seconds:g}: expected more than 0 seconds")


def dataset_schema(table: str) -> pa.Schema:
    """The Arrow schema of a lake table as the code defines it (the catalog may hold more columns)."""
    return LAKE_TABLES[table]


def _row_filter(accounts: list[str] | None, start_date: date | None, end_date: date | None) -> Any:
    from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, GreaterThanOrEqual, In, LessThanOrEqual

    parts: list[BooleanExpression] = []
    if accounts:
        parts.append(In("account_id", set(accounts)))  # type: ignore[call-arg]
    if start_date:
        parts.append(GreaterThanOrEqual("dt", start_date.isoformat()))  # type: ignore[call-arg]
    if end_date:
        parts.append(LessThanOrEqual("dt", end_date.isoformat()))  # type: ignore[call-arg]
    if not parts:
        return AlwaysTrue()
    return parts[0] if len(parts) == 1 else And(*parts)


def _pending_keys(
    s3: Any, config: Config, table: str, accounts: list[str] | None, start_date: date | None, end_date: date | None
) -> list[str]:
    wanted = set(accounts or [])
    keys = []
    for f in list_pending(s3, config.archive, table):
        if not f.partition:
            continue  # not in the layout: the committer refuses it
        if wanted and f.partition["account_id"] not in wanted:
            continue
        if (start_date and f.partition["dt"] < start_date.isoformat()) or (
            end_date and f.partition["dt"] > end_date.isoformat()
        ):
            continue
        keys.append(f.key)
    return keys


def lake_dataset(
    config: Config,
    table: str,
    accounts: list[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    s3: Any = None,
    *,
    snapshot_id: int | None = None,
    include_pending: bool = False,
    iceberg_table: Any = None,
) -> ds.Dataset | None:
    """The data files of `table` at `snapshot_id` (default: the current snapshot) as a pyarrow
    dataset (None when there are none); `include_pending` adds the consumers' files that the
    committer has not committed yet. `LakeUnavailable` when the catalog cannot be reached."""
    if table not in LAKE_TABLES:
        raise ValueError(f"unknown lake table {table!r}: expected one of {', '.join(LAKE_TABLES)}")
    store = config.archive
    try:
        tbl = iceberg_table or catalog.open_table(config, table)
    except catalog.CatalogError as error:
        raise LakeUnavailable(str(error)) from error
    schema = catalog.arrow_schema(tbl, table)
    filesystem = archive.s3_filesystem(store.region, config.aws_endpoint_url)
    parts: list[ds.Dataset] = []
    if snapshot_id is not None or tbl.metadata.current_snapshot_id is not None:
        scan = tbl.scan(row_filter=_row_filter(accounts, start_date, end_date), snapshot_id=snapshot_id)
        tasks = list(scan.plan_files())
        if any(t.delete_files for t in tasks):  # xraylake writes none (copy-on-write); another engine might
            parts.append(ds.dataset(scan.to_arrow().cast(schema)))
        elif tasks:
            paths = [t.file.file_path.split("://", 1)[-1] for t in tasks]
            parts.append(ds.dataset(paths, schema=schema, filesystem=filesystem, format="parquet"))
    if include_pending:
        keys = _pending_keys(s3 or log_client("s3", store.region), config, table, accounts, start_date, end_date)
        if keys:
            parts.append(
                ds.dataset(
                    [f"{store.bucket}/{key}" for key in keys],
                    schema=schema,
                    filesystem=filesystem,
                    format="parquet",
                    partitioning=ds.partitioning(archive.PARTITION_SCHEMA, flavor="hive"),
                    partition_base_dir=f"{store.bucket}/{store.parquet_prefix}/{table}",
                )
            )
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


class _Vanished(TransientError):
    """A file of the listing was gone when DuckDB scanned it."""


def _vanished(error: duckdb.Error) -> bool:
    # Only pyarrow's own scan failure counts: DuckDB echoes the user's paths in other messages
    # (a refused `COPY … TO '/tmp/NoSuchKey.csv'` is not a file that vanished).
    if not isinstance(error, duckdb.InvalidInputException):
        return False
    _, scanned, detail = str(error).partition("reading the stream registered as")
    return bool(scanned) and any(m in detail for m in ("Path does not exist", "NoSuchKey", "No such file"))


_ACCESS = re.compile(r'Cannot access (?P<kind>file|directory) "(?P<path>[^"]*)"')
_LOCKED = re.compile(r'Cannot change configuration option "(?P<option>[^"]+)"')
_NO_ACCESS = (
    "a lake query cannot read or write local files, URLs or extensions (DuckDB enable_external_access is off); "
    "query the tables traces and segments, and save results by redirecting --json output"
)


def _statement_kind(sql: str) -> str:
    """The statement type DuckDB refused: the first that is not a SELECT, else SELECT."""
    kinds = [s.type.name for s in duckdb.extract_statements(sql)]
    return next((k for k in kinds if k != "SELECT"), kinds[0] if kinds else "statement")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _refusal(error: duckdb.Error, sql: str, limits: QueryLimits) -> LakeError | None:
    """DuckDB's refusals as one-line errors naming what was refused and why (None: not a refusal)."""
    text = str(error)
    if isinstance(error, duckdb.OutOfMemoryException):
        return QueryMemoryError(
            f"refused: the query needs more than its memory limit of {limits.memory_limit} "
            f"({_first_line(error)}); raise --memory-limit, or read less (fewer columns, a WHERE on dt "
            "or account_id, an aggregate instead of raw rows)"
        )
    if locked := _LOCKED.search(text):
        return QueryRefused(
            f"refused: changing the setting {locked['option']}: a lake query's settings are locked "
            "(DuckDB lock_configuration); set its limits with --memory-limit, --threads and --timeout"
        )
    if isinstance(error, duckdb.PermissionException):
        kind = _statement_kind(sql)
        if kind == "LOAD" or "extension" in text:
            what = "INSTALL or LOAD" if kind == "LOAD" else kind  # DuckDB types INSTALL as LOAD
            return QueryRefused(f"refused: {what} of a DuckDB extension: {_NO_ACCESS}")
        if access := _ACCESS.search(text):
            return QueryRefused(f'refused: {kind} accessing the {access["kind"]} "{access["path"]}": {_NO_ACCESS}')
        return QueryRefused(f"refused: {kind} ({_first_line(error)}): {_NO_ACCESS}")
    return None


@contextmanager
def _watchdog(connection: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[threading.Event]:
    """Interrupts `connection` once `seconds` have passed, and keeps interrupting until the block
    ends (DuckDB forgets an interrupt that lands between two statements). Yields the event that
    says the limit was reached."""
    done, fired = threading.Event(), threading.Event()

    def watch() -> None:
        if done.wait(seconds):
            return
        fired.set()
        while True:
            connection.interrupt()
            if done.wait(0.1):
                return

    thread = threading.Thread(target=watch, name="lake-query-timeout", daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        done.set()
        thread.join()


def _timeout(limits: QueryLimits) -> QueryTimeout:
    return QueryTimeout(
        f"stopped: the query ran past its time limit of {limits.timeout_seconds:g} s and was interrupted; "
        "raise --timeout, or read less (a WHERE on dt or account_id, fewer columns)"
    )


def query(config: Config, sql: str, *, max_rows: int | None = None, limits: QueryLimits | None = None) -> pd.DataFrame:
    """Run `sql` over the lake (`traces`, `segments`) within `limits` and return a DataFrame.

    Raises `QueryError` (with DuckDB's message) for bad SQL and `EmptyLakeError` when the lake
    holds no Parquet files yet, both before anything is scanned; `QueryRefused` for what the
    session may not do, `QueryTimeout` and `QueryMemoryError` past the limits, and
    `LakeChangedError` when files kept vanishing between listing and scan.
    """
    limits = limits or QueryLimits()
    deadline = time.monotonic() + limits.timeout_seconds
    if not sql or not sql.strip():
        raise QueryError("empty SQL: try `SELECT account_id, count(*) FROM segments GROUP BY 1`")
    if max_rows is not None and max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    try:
        duckdb.extract_statements(sql)  # syntax errors before any listing
    except duckdb.Error as error:
        raise QueryError(str(error)) from error

    def run() -> pd.DataFrame:
        tables = {}
        for name in LAKE_TABLES:
            try:
                tables[name] = catalog.open_table(config, name)
            except catalog.CatalogError as error:
                raise LakeUnavailable(str(error)) from error
        datasets = {name: lake_dataset(config, name, iceberg_table=tbl) for name, tbl in tables.items()}
        if all(d is None for d in datasets.values()):
            raise EmptyLakeError(
                f"the lake tables {config.lake.namespace}.traces and .segments hold no rows yet "
                "(consume some traces, then let the commit flow run: `xraylake lake commit`)"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(limits)
        connection = duckdb.connect(":memory:")
        try:
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute(f"SET memory_limit = '{limits.memory_limit.strip()}'")  # validated by QueryLimits
            connection.execute(f"SET threads = {int(limits.threads)}")
            connection.execute("SET temp_directory = ''")  # no spilling to local disk: the limit holds
            connection.execute("SET enable_progress_bar = false")  # it would print into --json output
            for name, dataset in datasets.items():
                source: Any = dataset if dataset is not None else catalog.arrow_schema(tables[name], name).empty_table()
                connection.register(name, source)
            connection.execute("SET enable_external_access = false")
            connection.execute("SET lock_configuration = true")
            with _watchdog(connection, remaining) as timed_out:
                try:
                    relation = connection.sql(sql)
                    if relation is None:  # a statement without a result set
                        return pd.DataFrame()
                    frame: pd.DataFrame = (relation if max_rows is None else relation.limit(max_rows)).df()
                    return frame
                except duckdb.Error as error:
                    if timed_out.is_set() and isinstance(error, duckdb.InterruptException):
                        raise _timeout(limits) from error
                    if _vanished(error):  # a compaction swapped files between listing and scan: list again
                        raise _Vanished(str(error)) from error
                    raise _refusal(error, sql, limits) or QueryError(str(error)) from error
        finally:
            connection.close()

    try:
        return reread(_Vanished, attempts=_ATTEMPTS).run("lake query", run)
    except _Vanished as changed:
        raise LakeChangedError(
            f"the lake changed during the query ({_first_line(changed)}); run it again"
        ) from changed.__cause__


__all__ = [
    "EmptyLakeError",
    "LakeChangedError",
    "LakeError",
    "LakeUnavailable",
    "QueryError",
    "QueryLimits",
    "QueryMemoryError",
    "QueryRefused",
    "QueryTimeout",
    "dataset_schema",
    "lake_dataset",
    "query",
]
