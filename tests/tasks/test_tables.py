"""Arrow/Parquet layout of the lake: the `links` column added to the segment table keeps files
written before it readable."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tasks.tables import SEGMENT_SCHEMA, to_arrow
from tasks.transform import transform_trace
from tests.fixtures import load_fixture
from tests.tasks.test_transform import CTX

LINK = {"trace_id": "1-5f2aebcb-0123456789abcdef01234567", "id": "a1b2c3d4e5f60718"}


def _linked_trace() -> dict[str, object]:
    segment = {
        "trace_id": "1-5f2aebcc-b475d14618c51eaa28753d37",
        "id": "1111111111111111",
        "name": "worker",
        "start_time": 1596648396.4,
        "end_time": 1596648396.9,
        "links": [LINK],
    }
    return {"Id": segment["trace_id"], "Segments": [{"Id": segment["id"], "Document": orjson.dumps(segment).decode()}]}


def test_segment_files_without_the_links_column_stay_readable(tmp_path: Path) -> None:
    old_docs = transform_trace(load_fixture("xray/scorekeep_batch_get_traces")["Traces"][0], CTX)
    _, old_table = to_arrow([old_docs])
    old_table = old_table.drop_columns(["links"])  # a file written before the column existed
    pq.write_table(old_table, tmp_path / "part-old.parquet")
    _, new_table = to_arrow([transform_trace(_linked_trace(), CTX)])
    pq.write_table(new_table, tmp_path / "part-new.parquet")

    # a dataset read with today's schema: old rows read `links` as null
    table = ds.dataset(tmp_path, format="parquet", schema=SEGMENT_SCHEMA).to_table()
    assert table.num_rows == old_table.num_rows + 1
    links = [value for value in table.column("links").to_pylist() if value is not None]
    assert [orjson.loads(value) for value in links] == [[LINK]]
    assert table.column("links").null_count == old_table.num_rows

    # compaction's concat of old and new files (promote_options="default") keeps both
    combined = pa.concat_tables(
        [pq.read_table(tmp_path / "part-old.parquet"), pq.read_table(tmp_path / "part-new.parquet")],
        promote_options="default",
    )
    assert combined.num_rows == table.num_rows
    assert combined.column("links").null_count == old_table.num_rows
