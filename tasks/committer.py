"""The committer: consumers' Parquet files → appends to the Iceberg tables (one writer, no contention).

Consumers keep writing what they always wrote — one Parquet file per batch and partition under
`parquet/<table>/account_id=…/region=…/dt=…/hour=…/part-<batch>.parquet`, durable in S3 before
the message is deleted — and never touch the catalog (no pyiceberg in the consumer process). That
prefix is the tables' *intake*: a file there is pending until a committer run appends its rows to
the table (partition columns restored from the path, schema checked) in one snapshot per batch of
files, then deletes it. The committer flow runs on a short schedule with a concurrency limit of 1,
so commits never contend with each other; compaction's overwrite validates against concurrent
appends (serializable isolation) and fails the partition instead of losing a row.

Crash safety, per batch (a *ledger* object names the batch's files before anything is committed):
1. write `state/lake-commits/<table>/<batch>.json` listing the pending keys;
2. append the rows with the snapshot property `xraylake.commit-batch = <batch>` (one atomic commit);
3. delete the committed pending files; 4. delete the ledger.
The next run first settles every ledger it finds: if a snapshot carries its batch id, the commit
landed (delete the files and the ledger); otherwise it did not (delete the ledger; the files are
still pending and are committed now). So a file written but not committed is committed by the next
run, and a file committed is never appended twice while its snapshot is retained.

Refused files (not Parquet, a foreign schema, a key column missing or null, a partition column
that contradicts its path) are moved to `parquet/_refused/<table>/…` with the reason in the
object's metadata and reported; they are never registered.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from blocks import ArchiveStore
from tasks import archive
from tasks.catalog import PARTITION_FIELDS, arrow_schema
from tasks.errors import classify_aws_error

if TYPE_CHECKING:
    from pyiceberg.table import Table

BATCH_PROPERTY = "xraylake.commit-batch"
FILES_PROPERTY = "xraylake.commit-files"
REFUSED_DIR = "_refused"
DEFAULT_BATCH_BYTES = 64 * 1024 * 1024  # compressed Parquet read per commit (~5-8x that in Arrow)
DEFAULT_BATCH_FILES = 500
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "traces": ("trace_id", "collected_at"),
    "segments": ("trace_id", "segment_id", "collected_at"),
}


class RefusedFile(ValueError):
    """A pending file the committer will not register; the message says why."""


# ============================================================================ pure


@dataclass(frozen=True)
class PendingFile:
    key: str
    size: int
    partition: dict[str, str]  # account_id, region, dt, hour from the path (empty: not in the layout)
    last_modified: datetime | None = None

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def parse_pending(store: ArchiveStore, table: str, obj: dict[str, Any]) -> PendingFile | None:
    """A listed object under the table's intake prefix → PendingFile (None: not a Parquet file)."""
    key: str = obj["Key"]
    if not key.endswith(".parquet"):
        return None
    relative = key.removeprefix(f"{store.parquet_prefix}/{table}/")
    parts = relative.split("/")
    fields = dict(p.split("=", 1) for p in parts[:-1] if "=" in p)
    partition = {name: fields[name] for name in PARTITION_FIELDS if name in fields}
    if len(partition) != len(PARTITION_FIELDS) or len(parts) != len(PARTITION_FIELDS) + 1:
        partition = {}
    return PendingFile(key, int(obj.get("Size", 0)), partition, obj.get("LastModified"))


def batches(files: Sequence[PendingFile], max_bytes: int, max_files: int) -> list[list[PendingFile]]:
    """Pending files in commit batches of at most `max_bytes` / `max_files` (a bigger file alone)."""
    out: list[list[PendingFile]] = []
    current: list[PendingFile] = []
    size = 0
    for f in sorted(files, key=lambda f: f.key):
        if current and (size + f.size > max_bytes or len(current) >= max_files):
            out.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        out.append(current)
    return out


def _types_match(have: pa.DataType, want: pa.DataType) -> bool:
    if have.equals(want):
        return True
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        return have.tz == want.tz  # units are cast (ns → us)
    if (pa.types.is_string(have) or pa.types.is_large_string(have)) and (
        pa.types.is_string(want) or pa.types.is_large_string(want)
    ):
        return True
    if (pa.types.is_list(have) or pa.types.is_large_list(have)) and (
        pa.types.is_list(want) or pa.types.is_large_list(want)
    ):
        return _types_match(have.value_type, want.value_type)
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        return want.bit_width >= have.bit_width
    return False


def conform(table_name: str, data: pa.Table, partition: dict[str, str], target: pa.Schema) -> pa.Table:
    """A pending file's rows in the table's schema: partition columns from the path, columns an
    older writer did not have as nulls. `RefusedFile` names what does not fit."""
    if not partition:
        raise RefusedFile("not in the partition layout account_id=…/region=…/dt=…/hour=…/<name>.parquet")
    known = {f.name: f for f in target}
    foreign = [name for name in data.column_names if name not in known]
    if foreign:
        raise RefusedFile(f"columns not in the {table_name} table: {', '.join(foreign[:5])} (a foreign file?)")
    missing = [c for c in REQUIRED_COLUMNS[table_name] if c not in data.column_names]
    if missing:
        raise RefusedFile(f"lacks the required column(s) {', '.join(missing)}")
    columns: list[pa.Array | pa.ChunkedArray] = []
    for wanted in target:
        name = wanted.name
        if name in PARTITION_FIELDS:
            value = partition[name]
            if name in data.column_names:
                found = set(data.column(name).to_pylist())
                if found - {value}:
                    raise RefusedFile(f"column {name} holds {sorted(map(str, found))[:3]} but its path says {value!r}")
            columns.append(pa.array([value] * data.num_rows, wanted.type))
            continue
        if name not in data.column_names:
            if not wanted.nullable:
                raise RefusedFile(f"lacks the required column {name}")
            columns.append(pa.nulls(data.num_rows, wanted.type))
            continue
        column = data.column(name)
        if not _types_match(column.type, wanted.type):
            raise RefusedFile(f"column {name} is {column.type}, the {table_name} table has {wanted.type}")
        if not wanted.nullable and column.null_count:
            raise RefusedFile(f"column {name} holds {column.null_count} null(s); it is a required key column")
        columns.append(column.cast(wanted.type) if not column.type.equals(wanted.type) else column)
    return pa.Table.from_arrays(columns, schema=target)


def batch_of(snapshots: Iterable[Any]) -> set[str]:
    """Batch ids recorded in the snapshots' summaries."""
    found: set[str] = set()
    for snapshot in snapshots:
        summary = snapshot.summary
        value = summary[BATCH_PROPERTY] if summary is not None else None
        if value:
            found.add(str(value))
    return found


# ============================================================================ I/O


@dataclass
class CommitResult:
    table: str
    committed_files: int = 0
    committed_rows: int = 0
    snapshots: int = 0
    recovered_batches: int = 0
    abandoned_batches: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    pending_left: int = 0

    def as_row(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "committed_files": self.committed_files,
            "committed_rows": self.committed_rows,
            "snapshots": self.snapshots,
            "recovered_batches": self.recovered_batches,
            "abandoned_batches": self.abandoned_batches,
            "refused_files": len(self.refused),
        }


def ledger_prefix(store: ArchiveStore, table: str) -> str:
    return f"{store.state_prefix}/lake-commits/{table}/"


def list_pending(s3: Any, store: ArchiveStore, table: str) -> list[PendingFile]:
    found = []
    for obj in archive.list_keys(s3, store.bucket, f"{store.parquet_prefix}/{table}/"):
        pending = parse_pending(store, table, obj)
        if pending is not None:
            found.append(pending)
    return found


def delete_keys(s3: Any, bucket: str, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        try:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        except Exception as error:
            raise classify_aws_error(error, f"delete {len(chunk)} objects in s3://{bucket}") from error
        if response.get("Errors"):
            first = response["Errors"][0]
            raise classify_aws_error(
                RuntimeError(f"{first.get('Code')}: {first.get('Message')}"), f"delete s3://{bucket}/{first.get('Key')}"
            )


def settle_ledgers(s3: Any, store: ArchiveStore, tbl: Table, table: str, result: CommitResult) -> None:
    """Finish what an interrupted run left: a ledger whose batch is in a snapshot is committed
    (delete its files), any other ledger is void (its files are still pending)."""
    ledgers = [o["Key"] for o in archive.list_keys(s3, store.bucket, ledger_prefix(store, table))]
    if not ledgers:
        return
    tbl.refresh()
    committed = batch_of(tbl.metadata.snapshots)
    for key in ledgers:
        body = orjson.loads(
            archive._s3_call(f"get s3://{store.bucket}/{key}", s3.get_object, Bucket=store.bucket, Key=key)[
                "Body"
            ].read()
        )
        if body["batch"] in committed:
            delete_keys(s3, store.bucket, body["keys"])
            result.recovered_batches += 1
        else:
            result.abandoned_batches += 1
        delete_keys(s3, store.bucket, [key])


def refuse(s3: Any, store: ArchiveStore, table: str, pending: PendingFile, reason: str) -> str:
    """Move a refused file out of the intake (to `<parquet_prefix>/_refused/<table>/…`) with its reason."""
    relative = pending.key.removeprefix(f"{store.parquet_prefix}/{table}/")
    target = f"{store.parquet_prefix}/{REFUSED_DIR}/{table}/{relative}"
    archive._s3_call(
        f"copy s3://{store.bucket}/{pending.key}",
        s3.copy_object,
        Bucket=store.bucket,
        Key=target,
        CopySource={"Bucket": store.bucket, "Key": pending.key},
        Metadata={
            "refused-reason": reason[:1000].encode("ascii", "replace").decode(),
            "refused-at": datetime.now(UTC).isoformat(),
        },
        MetadataDirective="REPLACE",
    )
    delete_keys(s3, store.bucket, [pending.key])
    return target


def read_pending(s3: Any, store: ArchiveStore, pending: PendingFile) -> pa.Table:
    obj = archive._s3_call(
        f"get s3://{store.bucket}/{pending.key}", s3.get_object, Bucket=store.bucket, Key=pending.key
    )
    body = obj["Body"].read()
    try:
        return pq.read_table(io.BytesIO(body))
    except Exception as error:
        raise RefusedFile(f"not a readable Parquet file ({type(error).__name__}: {error})") from error


def commit_table(
    s3: Any,
    store: ArchiveStore,
    tbl: Table,
    table: str,
    *,
    max_bytes: int = DEFAULT_BATCH_BYTES,
    max_files: int = DEFAULT_BATCH_FILES,
    max_batches: int | None = None,
) -> CommitResult:
    """Settle old ledgers, then append every pending file of `table` in batches (one snapshot each)."""
    result = CommitResult(table)
    settle_ledgers(s3, store, tbl, table, result)
    pending = list_pending(s3, store, table)
    target = arrow_schema(tbl, table)
    planned = batches(pending, max_bytes, max_files)
    for number, batch in enumerate(planned):
        if max_batches is not None and number >= max_batches:
            result.pending_left += sum(len(b) for b in planned[number:])
            break
        tables: list[pa.Table] = []
        keys: list[str] = []
        for f in batch:
            try:
                tables.append(conform(table, read_pending(s3, store, f), f.partition, target))
                keys.append(f.key)
            except RefusedFile as why:
                moved = refuse(s3, store, table, f, str(why))
                result.refused.append({"key": f.key, "reason": str(why), "moved_to": moved})
        if not keys:
            continue
        rows = pa.concat_tables(tables)
        batch_id = uuid.uuid4().hex
        ledger = f"{ledger_prefix(store, table)}{batch_id}.json"
        archive._s3_call(
            f"put s3://{store.bucket}/{ledger}",
            s3.put_object,
            Bucket=store.bucket,
            Key=ledger,
            Body=orjson.dumps({"batch": batch_id, "table": table, "keys": keys}),
        )
        tbl.append(rows, snapshot_properties={BATCH_PROPERTY: batch_id, FILES_PROPERTY: str(len(keys))})
        delete_keys(s3, store.bucket, keys)
        delete_keys(s3, store.bucket, [ledger])
        result.committed_files += len(keys)
        result.committed_rows += rows.num_rows
        result.snapshots += 1
    return result


__all__ = [
    "BATCH_PROPERTY",
    "CommitResult",
    "PendingFile",
    "RefusedFile",
    "batch_of",
    "batches",
    "commit_table",
    "conform",
    "delete_keys",
    "list_pending",
    "parse_pending",
    "refuse",
    "settle_ledgers",
]
