"""The S3 archive: raw envelopes, Parquet tables, claim-check payloads.

Key layout (deterministic, so a retried write overwrites itself):
  raw/account_id=…/region=…/dt=YYYY-MM-DD/hour=HH/<envelope_id>.json.gz   the decoded envelope
  parquet/{traces,segments}/account_id=…/region=…/dt=…/hour=…/part-<batch_id>.parquet
  payloads/account_id=…/region=…/dt=…/<envelope_id>.json.gz                claim-check objects
Parquet files omit the partition columns (they live in the path, Hive style); readers declare
the partition schema as strings so `account_id=012…` keeps its leading zero.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from blocks import ArchiveStore
from tasks.envelope import Envelope, EnvelopeError, PayloadRef, check_payload, envelope_partition, gzip_canonical
from tasks.errors import TerminalError, TransientError, classify_aws_error

if TYPE_CHECKING:
    import pyarrow.dataset as ds

PARTITION_SCHEMA = pa.schema(
    [("account_id", pa.string()), ("region", pa.string()), ("dt", pa.string()), ("hour", pa.string())]
)
PARTITION_COLUMNS = tuple(PARTITION_SCHEMA.names)


def partition_path(account_id: str, region: str, hour: datetime) -> str:
    return f"account_id={account_id}/region={region}/dt={hour:%Y-%m-%d}/hour={hour:%H}"


def raw_key(store: ArchiveStore, envelope: Envelope) -> str:
    partition = partition_path(envelope.account_id, envelope.region, envelope_partition(envelope).start)
    return f"{store.raw_prefix}/{partition}/{envelope.envelope_id}.json.gz"


def parse_raw_key(key: str) -> dict[str, str]:
    """`raw/account_id=…/…/<id>.json.gz` → {account_id, region, dt, hour, envelope_id}."""
    parts = key.split("/")
    fields = dict(p.split("=", 1) for p in parts if "=" in p)
    fields["envelope_id"] = parts[-1].removesuffix(".json.gz")
    return fields


def batch_id(envelope_ids: Iterable[str]) -> str:
    """Deterministic name of a Parquet part from the envelopes it holds."""
    digest = hashlib.sha256()
    for envelope_id in sorted(set(envelope_ids)):
        digest.update(envelope_id.encode())
    return digest.hexdigest()[:20]


def parquet_key(store: ArchiveStore, table: str, account_id: str, region: str, dt: str, hour: str, part: str) -> str:
    partition = f"account_id={account_id}/region={region}/dt={dt}/hour={hour}"
    return f"{store.parquet_prefix}/{table}/{partition}/part-{part}.parquet"


# ------------------------------------------------------------------ I/O


def _s3_call(context: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as error:
        raise classify_aws_error(error, context) from error


@dataclass(frozen=True)
class GzippedRaw:
    """Canonical envelope bytes already compressed by `gzip_canonical` (the wire's own gzip, kept
    by the consumer so the raw archive does not compress again what it just inflated)."""

    compressed: bytes
    size: int  # length of the canonical bytes


def put_raw(s3: Any, store: ArchiveStore, envelope: Envelope, raw: bytes | bytearray | GzippedRaw) -> str:
    """Archive the decoded envelope bytes (gzip, deterministic) and return the key."""
    key = raw_key(store, envelope)
    body = raw.compressed if isinstance(raw, GzippedRaw) else gzip_canonical(raw)
    _s3_call(
        f"put s3://{store.bucket}/{key}",
        s3.put_object,
        Bucket=store.bucket,
        Key=key,
        Body=body,
        ContentType="application/json",
        ContentEncoding="gzip",
        Metadata={"envelope-id": envelope.envelope_id, "source": envelope.source},
    )
    return key


def get_stored(s3: Any, bucket: str, key: str) -> bytes:
    """An object's bytes as stored; the request and the read of its body fail as classified S3 errors."""
    return _s3_call(  # type: ignore[no-any-return]
        f"get s3://{bucket}/{key}", lambda **params: s3.get_object(**params)["Body"].read(), Bucket=bucket, Key=key
    )


def get_raw(s3: Any, bucket: str, key: str) -> bytes:
    return gzip.decompress(get_stored(s3, bucket, key))


def put_claim_check(s3: Any, ref: PayloadRef, compressed: bytes) -> None:
    _s3_call(
        f"put s3://{ref.bucket}/{ref.key}",
        s3.put_object,
        Bucket=ref.bucket,
        Key=ref.key,
        Body=compressed,
        ContentType="application/gzip",
        Metadata={"sha256": ref.sha256},
    )


def fetch_claim_check(s3: Any, ref: PayloadRef) -> bytes:
    """The compressed payload behind a pointer, checked against its sha256.

    Reads no more than the declared size plus one byte (a Range GET, and a bounded read should a
    server ignore the range): a longer object is a mismatch, not a download. The caller checks
    the pointer first (`envelope.check_pointer`, its signature)."""
    try:
        obj = s3.get_object(Bucket=ref.bucket, Key=ref.key, Range=f"bytes=0-{ref.bytes}")
    except Exception as error:
        translated = classify_aws_error(error, f"get s3://{ref.bucket}/{ref.key}")
        if isinstance(translated, TerminalError):
            raise EnvelopeError("claim-check-missing", str(translated)) from error
        raise translated from error
    body = obj["Body"]
    try:
        compressed: bytes = body.read(ref.bytes + 1)
    except Exception as error:  # the connection broke mid-body: a network matter, retry
        raise TransientError(f"read s3://{ref.bucket}/{ref.key}: {type(error).__name__}: {error}") from error
    finally:
        body.close()
    if len(compressed) > ref.bytes:
        raise EnvelopeError("claim-check-mismatch", f"s3://{ref.bucket}/{ref.key} is longer than its {ref.bytes} bytes")
    check_payload(ref, compressed)
    return compressed


def return_arrow_memory_promptly() -> None:
    """Use the system allocator for Arrow buffers in this process.

    Arrow's default pool (mimalloc in the pyarrow wheels) keeps freed pages for reuse, so a
    long-running consumer's peak RSS climbed with the volume consumed (B4: 279 MB at 10k segments,
    309 MB at 1M; side by side over one 40k backlog, 288 MB and still rising vs 256 MB flat with
    the system pool). The consumer's Arrow work is small tables per chunk, where the pool's speed
    does not show."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def write_parquet(s3: Any, key: str, bucket: str, table: pa.Table) -> int:
    """One Parquet object (zstd) from an Arrow table; returns bytes written."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, write_statistics=True)
    data = sink.getvalue()
    _s3_call(f"put s3://{bucket}/{key}", s3.put_object, Bucket=bucket, Key=key, Body=data)
    return len(data)


@dataclass(frozen=True)
class PartitionSlice:
    account_id: str
    region: str
    dt: str
    hour: str
    table: pa.Table


def split_by_partition(table: pa.Table) -> Iterator[PartitionSlice]:
    """Split a table holding partition columns into per-partition tables without them."""
    if table.num_rows == 0:
        return
    keys = table.select(list(PARTITION_COLUMNS)).to_pylist()
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for index, row in enumerate(keys):
        groups.setdefault((row["account_id"], row["region"], row["dt"], row["hour"]), []).append(index)
    body = table.drop_columns(list(PARTITION_COLUMNS))
    for (account_id, region, dt, hour), rows in groups.items():
        yield PartitionSlice(account_id, region, dt, hour, body.take(pa.array(rows, pa.int64())))


def list_keys(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])
    except Exception as error:
        raise classify_aws_error(error, f"list s3://{bucket}/{prefix}") from error


def s3_filesystem(region: str, endpoint_url: str | None) -> Any:
    """pyarrow's S3 filesystem with the same endpoint boto3 uses (sandbox or real S3)."""
    import boto3
    from pyarrow import fs

    credentials = boto3.Session(region_name=region).get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials else None
    kwargs: dict[str, Any] = {"region": region}
    if frozen:
        kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    if endpoint_url:
        scheme, _, rest = endpoint_url.partition("://")
        kwargs.update(endpoint_override=rest, scheme=scheme)
    return fs.S3FileSystem(**kwargs)


def parquet_dataset(store: ArchiveStore, table: str, endpoint_url: str | None) -> ds.Dataset:
    """The Parquet lake of `table` (traces|segments) as a pyarrow dataset with string partitions."""
    # Imported here: pyarrow.dataset loads pandas (~60 MB RSS) that the consumer never needs.
    import pyarrow.dataset as ds

    filesystem = s3_filesystem(store.region, endpoint_url)
    return ds.dataset(
        f"{store.bucket}/{store.parquet_prefix}/{table}",
        filesystem=filesystem,
        format="parquet",
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
    )
