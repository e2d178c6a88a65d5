"""The lake's Iceberg catalog and its two tables, `traces` and `segments` (pyiceberg).

The catalog is chosen in configuration (`Config.lake`): a SQL catalog in a SQLite file under
`$XRAYLAKE_HOME/lake/` for the sandbox and single-machine use, or the AWS Glue Data Catalog in
production. Either way, table data and metadata live in the archive bucket at
`s3://<bucket>/<table_prefix>/<table>/`.

Tables:
* columns: `tasks.tables.TRACE_SCHEMA` / `SEGMENT_SCHEMA` (the README's data contract);
* partition spec: identity on `account_id`, `region`, `dt`, `hour` — the trace's start hour, the
  same partitions as the consumer's Hive layout (a segment lives in its trace's hour, so the spec
  uses the trace-hour columns rather than a transform of the segment's own `start`);
* identifier fields: the document keys (`account_id, trace_id`; `account_id, trace_id, segment_id`);
* schema evolution is a catalog change: a column added to the Arrow schema in `tasks.tables` is
  added by `update_schema()` the next time a table is opened (`open_table`); no data file is
  rewritten. Old files read the new column as null.

This module imports pyiceberg; the consumer never imports it (its memory budget, bench B4).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from blocks.config import Config, xraylake_home
from tasks.errors import TerminalError, TransientError
from tasks.tables import SEGMENT_SCHEMA, TRACE_SCHEMA

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

TABLE_SCHEMAS: dict[str, pa.Schema] = {"traces": TRACE_SCHEMA, "segments": SEGMENT_SCHEMA}
IDENTIFIER_FIELDS: dict[str, tuple[str, ...]] = {
    "traces": ("account_id", "trace_id"),
    "segments": ("account_id", "trace_id", "segment_id"),
}
PARTITION_FIELDS: tuple[str, ...] = ("account_id", "region", "dt", "hour")
TABLE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.metadata.delete-after-commit.enabled": "true",  # old metadata.json files go with the commit
    "write.metadata.previous-versions-max": "50",
    "commit.retry.num-retries": "6",
    "format-version": "2",
}


class CatalogError(TransientError):
    """The catalog could not be reached or answered with an error: the committer run fails, the
    pending files stay where they are and the next run commits them."""


class CatalogConfigError(TerminalError, ValueError):
    """The catalog configuration cannot work (unknown table, bad URI)."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def sql_uri(config: Config) -> str:
    """The SQL catalog's URI: the configured one, else one SQLite file per archive bucket."""
    if config.lake.sql_uri:
        return config.lake.sql_uri
    directory = xraylake_home() / "lake"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(directory, config.archive.bucket + '.db')}"


def table_location(config: Config, table: str) -> str:
    return f"s3://{config.archive.bucket}/{config.lake.table_prefix.strip('/')}/{table}"


def io_properties(config: Config) -> dict[str, str]:
    """pyiceberg FileIO properties: the same S3 endpoint and region boto3 uses."""
    props = {"s3.region": config.archive.region}
    if config.aws_endpoint_url:
        props["s3.endpoint"] = config.aws_endpoint_url
    return props


def open_catalog(config: Config) -> Catalog:
    """The configured catalog (SQL or Glue); `CatalogError` when it cannot be reached."""
    try:
        if config.lake.kind == "glue":
            from pyiceberg.catalog.glue import GlueCatalog

            props = io_properties(config) | {"glue.region": config.region}
            endpoint = config.service_endpoints.get("glue") or config.aws_endpoint_url
            if endpoint:
                props["glue.endpoint"] = endpoint
            if config.lake.glue_catalog_id:
                props["glue.id"] = config.lake.glue_catalog_id
            return GlueCatalog("xraylake", **props)
        from pyiceberg.catalog.sql import SqlCatalog

        return SqlCatalog(
            "xraylake",
            uri=sql_uri(config),
            warehouse=f"s3://{config.archive.bucket}/{config.lake.table_prefix.strip('/')}",
            **io_properties(config),
        )
    except Exception as error:
        raise CatalogError(f"cannot open the {config.lake.kind} lake catalog: {_one_line(error)}") from error


def iceberg_schema(table: str) -> Any:
    """The Iceberg schema of a lake table: fresh field ids, identifier fields set."""
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
    from pyiceberg.schema import Schema, assign_fresh_schema_ids

    fresh = assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(TABLE_SCHEMAS[table]))
    ids = [fresh.find_field(name).field_id for name in IDENTIFIER_FIELDS[table]]
    return Schema(*fresh.fields, identifier_field_ids=ids)


def partition_spec(schema: Any) -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    return PartitionSpec(
        *(
            PartitionField(
                source_id=schema.find_field(name).field_id, field_id=1000 + n, transform=IdentityTransform(), name=name
            )
            for n, name in enumerate(PARTITION_FIELDS)
        )
    )


def missing_columns(current: pa.Schema, wanted: pa.Schema) -> list[str]:
    """Columns of `wanted` the table lacks (pure)."""
    have = set(current.names)
    return [f.name for f in wanted if f.name not in have]


def arrow_schema(tbl: Table, table: str) -> pa.Schema:
    """The table's columns (in the table's order) with the code's Arrow types where the code
    knows the column (`string`, not Iceberg's `large_string`), so rows built by the consumer's
    transform conform without a cast."""
    code = TABLE_SCHEMAS[table]
    fields = []
    for f in tbl.schema().as_arrow():
        fields.append(code.field(f.name) if f.name in code.names else f.remove_metadata())
    return pa.schema(fields)


def open_table(config: Config, table: str, catalog: Catalog | None = None) -> Table:
    """The lake table, created on first use and evolved to the code's schema (new columns are
    added in the catalog; no data is rewritten). `CatalogError` when the catalog fails."""
    if table not in TABLE_SCHEMAS:
        raise CatalogConfigError(f"unknown lake table {table!r}: expected one of {', '.join(TABLE_SCHEMAS)}")
    from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError

    catalog = catalog or open_catalog(config)
    namespace = config.lake.namespace
    identifier = (namespace, table)
    try:
        try:
            tbl = catalog.load_table(identifier)
        except NoSuchTableError:
            # only a missing namespace is created: in production the log-account stack creates the
            # Glue database and grants no glue:CreateDatabase, which AWS checks before existence
            if not catalog.namespace_exists(namespace):
                with contextlib.suppress(NamespaceAlreadyExistsError):
                    catalog.create_namespace(namespace)
            schema = iceberg_schema(table)
            try:
                tbl = catalog.create_table(
                    identifier,
                    schema=schema,
                    location=table_location(config, table),
                    partition_spec=partition_spec(schema),
                    properties=TABLE_PROPERTIES,
                )
            except TableAlreadyExistsError:  # created meanwhile by another process
                tbl = catalog.load_table(identifier)
        wanted = TABLE_SCHEMAS[table]
        if missing_columns(tbl.schema().as_arrow(), wanted):
            with tbl.update_schema() as update:
                update.union_by_name(wanted)
        return tbl
    except CatalogError:
        raise
    except Exception as error:
        raise CatalogError(
            f"lake catalog ({config.lake.kind}) failed on {namespace}.{table}: {_one_line(error)}"
        ) from error


__all__ = [
    "IDENTIFIER_FIELDS",
    "PARTITION_FIELDS",
    "TABLE_SCHEMAS",
    "CatalogConfigError",
    "CatalogError",
    "arrow_schema",
    "iceberg_schema",
    "missing_columns",
    "open_catalog",
    "open_table",
    "partition_spec",
    "sql_uri",
    "table_location",
]
