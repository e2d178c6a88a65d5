"""The lake catalog: the SQL catalog and the Glue Data Catalog (moto) both hold the tables with
their partition spec and identifier fields; adding a column is a catalog change; a catalog that
cannot be reached is a clear error."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import orjson
import pyarrow as pa
import pytest

from blocks.config import Config, LakeCatalog
from sandbox.faults import FaultProxy, FaultRule
from tasks import catalog, committer
from tasks.tables import SEGMENT_SCHEMA
from tests.tasks.test_committer import consumer_file, segment_rows

AT = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)


def test_missing_columns_are_named_in_order() -> None:
    wanted = SEGMENT_SCHEMA.append(pa.field("peer_service", pa.string()))
    assert catalog.missing_columns(SEGMENT_SCHEMA, wanted) == ["peer_service"]
    assert catalog.missing_columns(wanted, SEGMENT_SCHEMA) == []


def test_glue_catalog_holds_the_tables_with_spec_and_identifier_fields(fresh_config: Config) -> None:
    config = fresh_config.model_copy(
        update={"lake": LakeCatalog(kind="glue", namespace=f"x{fresh_config.archive.bucket[-10:]}")}
    )
    for table, keys in [("segments", catalog.IDENTIFIER_FIELDS["segments"])]:  # traces: the same code path
        tbl = catalog.open_table(config, table)
        assert tbl.schema().identifier_field_names() == set(keys)
        assert [f.name for f in tbl.spec().fields] == list(catalog.PARTITION_FIELDS)
        assert tbl.metadata.location == f"s3://{config.archive.bucket}/iceberg/{table}"
    glue = boto3.client("glue", region_name=config.region)
    names = {t["Name"] for t in glue.get_tables(DatabaseName=config.lake.namespace)["TableList"]}
    assert names == {"segments"}


def test_the_glue_catalog_creates_its_tables_in_the_stacks_database_without_creating_databases(
    fresh_config: Config,
) -> None:
    """The log-account stack creates the Glue database and grants the collector role no
    glue:CreateDatabase (infra/log-account.yaml, LakeCatalog): the first run must create the
    tables in that database without asking for another one."""
    namespace = f"x{fresh_config.archive.bucket[-10:]}"
    boto3.client("glue", region_name=fresh_config.region).create_database(DatabaseInput={"Name": namespace})
    assert fresh_config.aws_endpoint_url
    with FaultProxy(fresh_config.aws_endpoint_url) as proxy:
        denied = proxy.add(
            FaultRule(
                method="POST",
                request_headers={"X-Amz-Target": r"AWSGlue\.CreateDatabase$"},
                status=400,
                response=orjson.dumps(
                    {
                        "__type": "AccessDeniedException",
                        "Message": "User is not authorized to perform: glue:CreateDatabase",
                    }
                ),
                content_type="application/x-amz-json-1.1",
            )
        )
        config = fresh_config.model_copy(
            update={
                "lake": LakeCatalog(kind="glue", namespace=namespace),
                "service_endpoints": {**fresh_config.service_endpoints, "glue": proxy.url},
            }
        )
        tbl = catalog.open_table(config, "traces")
        assert tbl.schema().identifier_field_names() == set(catalog.IDENTIFIER_FIELDS["traces"])
        assert catalog.open_table(config, "traces").metadata.table_uuid == tbl.metadata.table_uuid
    assert denied.hits == 0


def test_a_new_column_is_added_in_the_catalog_without_rewriting_data(
    fresh_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3")
    account = fresh_config.roster.accounts[0].account_id
    consumer_file(s3, fresh_config, segment_rows(account, range(3), AT), "old")
    tbl = catalog.open_table(fresh_config, "segments")
    committer.commit_table(s3, fresh_config.archive, tbl, "segments")
    files_before = {t.file.file_path for t in tbl.scan().plan_files()}

    # the code's schema gains a column (a column a newer writer adds): opening the table evolves it
    evolved = SEGMENT_SCHEMA.append(pa.field("peer_service", pa.string()))
    monkeypatch.setitem(catalog.TABLE_SCHEMAS, "segments", evolved)
    tbl = catalog.open_table(fresh_config, "segments")
    assert tbl.schema().find_field("peer_service").required is False
    assert {t.file.file_path for t in tbl.scan().plan_files()} == files_before  # nothing rewritten
    rows = tbl.scan().to_arrow()
    assert rows.column("peer_service").null_count == 3  # old files read the new column as null

    # an older writer's file (without the column) is still committed; a newer one carries it
    newer = segment_rows(account, range(3, 5), AT).append_column("peer_service", pa.array(['[{"trace_id": "x"}]'] * 2))
    consumer_file(s3, fresh_config, segment_rows(account, range(5, 6), AT), "older-writer")
    consumer_file(s3, fresh_config, newer, "newer-writer")
    assert committer.commit_table(s3, fresh_config.archive, tbl, "segments").committed_files == 2
    links = dict(zip(*tbl.scan().to_arrow().select(["segment_id", "peer_service"]).to_pydict().values(), strict=True))
    assert links["s03"] == '[{"trace_id": "x"}]' and links["s05"] is None


def test_an_unreachable_catalog_is_a_clear_error(fresh_config: Config, tmp_path: object) -> None:
    config = fresh_config.model_copy(update={"lake": LakeCatalog(sql_uri="sqlite:////nonexistent/dir/catalog.db")})
    with pytest.raises(
        catalog.CatalogError, match=r"sql lake catalog: OperationalError: .*unable to open database file$"
    ):
        catalog.open_table(config, "traces")
    with pytest.raises(catalog.CatalogConfigError, match="unknown lake table 'spans'"):
        catalog.open_table(fresh_config, "spans")
