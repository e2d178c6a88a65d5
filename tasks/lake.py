"""SQL over the Parquet lake: DuckDB reading pyarrow datasets (`FROM traces`, `FROM segments`).

DuckDB's httpfs extension is downloaded at run time (there may be no internet), so the lake is
scanned by pyarrow (`S3FileSystem` with the same endpoint boto3 uses: the sandbox or real S3) and
DuckDB queries the datasets with projection and filter pushdown. Same code on real S3.

The file list comes from `tasks.compaction.visible_files` (the compaction commit protocol), so
a query never sees a partition both before and after a compaction. Partition columns
(account_id, region, dt, hour) are strings: account ids keep their leading zeros. Timestamps are
UTC. Between compactions a trace collected twice can appear twice (dedupe by the key and the
latest `collected_at` if that matters, e.g. `QUALIFY row_number() OVER (PARTITION BY trace_id,
segment_id ORDER BY collected_at DESC) = 1`). The session cannot read or write local files.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from blocks.config import Config
from tasks import archive, compaction
from tasks.aws import log_client
from tasks.errors import TerminalError, TransientError
from tasks.retrying import reread
from tasks.tables import SEGMENT_SCHEMA, TRACE_SCHEMA

LAKE_TABLES: dict[str, pa.Schema] = {"traces": TRACE_SCHEMA, "segments": SEGMENT_SCHEMA}
_ATTEMPTS = 3


class LakeError(TerminalError):
    """Base class of lake query errors."""


class QueryError(LakeError, ValueError):
    """DuckDB rejected the SQL (syntax, unknown column or table, type error)."""


class EmptyLakeError(LakeError, LookupError):
    """The lake holds no Parquet files yet."""


def dataset_schema(table: str) -> pa.Schema:
    """The dataset schema of a lake table: file columns, then the string partition columns."""
    schema = LAKE_TABLES[table]
    body = [f for f in schema if f.name not in archive.PARTITION_COLUMNS]
    return pa.schema([*body, *archive.PARTITION_SCHEMA])


def lake_dataset(
    config: Config,
    table: str,
    accounts: list[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    s3: Any = None,
) -> ds.Dataset | None:
    """The visible files of `table` as a pyarrow dataset (None when there are none)."""
    if table not in LAKE_TABLES:
        raise ValueError(f"unknown lake table {table!r}: expected one of {', '.join(LAKE_TABLES)}")
    store = config.archive
    s3 = s3 or log_client("s3", store.region)
    files = compaction.visible_files(s3, store, table, accounts, start_date, end_date)
    if not files:
        return None
    filesystem = archive.s3_filesystem(store.region, config.aws_endpoint_url)
    return ds.dataset(
        [f"{store.bucket}/{obj.key}" for obj in files],
        filesystem=filesystem,
        format="parquet",
        partitioning=ds.partitioning(archive.PARTITION_SCHEMA, flavor="hive"),
        partition_base_dir=f"{store.bucket}/{store.parquet_prefix}/{table}",
    )


class _Vanished(TransientError):
    """A file of the listing was gone when DuckDB scanned it."""


def _vanished(error: duckdb.Error) -> bool:
    text = str(error)
    return "Path does not exist" in text or "NoSuchKey" in text or "No such file" in text


def query(config: Config, sql: str, *, max_rows: int | None = None) -> pd.DataFrame:
    """Run `sql` over the lake (`traces`, `segments`) and return a DataFrame.

    Raises `QueryError` (with DuckDB's message) for bad SQL and `EmptyLakeError` when the lake
    holds no Parquet files yet; both before anything is scanned.
    """
    if not sql or not sql.strip():
        raise QueryError("empty SQL: try `SELECT account_id, count(*) FROM segments GROUP BY 1`")
    if max_rows is not None and max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    try:
        duckdb.extract_statements(sql)  # syntax errors before any listing
    except duckdb.Error as error:
        raise QueryError(str(error)) from error
    s3 = log_client("s3", config.archive.region)

    def run() -> pd.DataFrame:
        datasets = {name: lake_dataset(config, name, s3=s3) for name in LAKE_TABLES}
        if all(d is None for d in datasets.values()):
            raise EmptyLakeError(
                f"the lake has no Parquet files yet under s3://{config.archive.bucket}/"
                f"{config.archive.parquet_prefix}/ (consume some traces first)"
            )
        connection = duckdb.connect(":memory:")
        try:
            connection.execute("SET TimeZone = 'UTC'")
            for name, dataset in datasets.items():
                source: Any = dataset if dataset is not None else dataset_schema(name).empty_table()
                connection.register(name, source)
            connection.execute("SET enable_external_access = false")
            connection.execute("SET lock_configuration = true")
            try:
                relation = connection.sql(sql)
                if relation is None:  # a statement without a result set
                    return pd.DataFrame()
                frame: pd.DataFrame = (relation if max_rows is None else relation.limit(max_rows)).df()
                return frame
            except duckdb.Error as error:
                if _vanished(error):  # a compaction swapped files between listing and scan: list again
                    raise _Vanished(str(error)) from error
                raise QueryError(str(error)) from error
        finally:
            connection.close()

    try:
        return reread(_Vanished, attempts=_ATTEMPTS).run("lake query", run)
    except _Vanished as changed:
        raise LakeError(f"the lake changed during the query ({changed}); run it again") from changed.__cause__


__all__ = ["EmptyLakeError", "LakeError", "QueryError", "dataset_schema", "lake_dataset", "query"]
