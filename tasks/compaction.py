"""Parquet compaction: merge a partition's small files, drop duplicate rows, swap atomically.

Why: the consumer writes one Parquet file per batch and partition, so a busy hour holds many small
files, and a trace collected twice in different batches (sweep overlap, redelivery, repair) leaves
duplicate rows until something merges them.

What compaction does, per partition (`parquet/<table>/account_id=…/region=…/dt=…/hour=…/`):
read every *visible* file, keep one row per key — (account_id, trace_id, segment_id) for segments,
(account_id, trace_id) for traces (account_id is a partition constant) — the one with the latest
`collected_at` (ties: highest envelope_id), sort by key, and write files of about `target_bytes`.

Commit protocol (readers never see a partition with both old and new files, or with neither):

1. Outputs are written as `compacted-<id>-<nnnn>.parquet`, where `<id>` is a hash of the input
   file names and sizes. An output without its commit marker is *uncommitted*: protocol-aware
   readers ignore it, so a crash here changes nothing for them.
2. The commit point is one S3 PUT (atomic): `_compaction-<id>.json` in the same partition,
   listing `outputs` and `replaces` (the input file names). From that moment readers see the
   outputs and hide every replaced file still present.
3. Only then are the inputs deleted (and, after them, markers whose outputs were all replaced).

A reader (`visible_files`) lists the partition once and decides from that listing: files named in
a marker's `replaces` are hidden, outputs without a marker are hidden, everything else is visible.
Before step 2 it sees exactly the old files, after step 2 exactly the new ones (plus any file
the consumer wrote after the plan, which the marker does not name). Marker contents are read only
where they matter (a partition holding a marker *and* other files, or several markers), so a
steady-state compacted partition (one marker + its outputs) costs no extra request.

Readers that ignore the protocol (plain `archive.parquet_dataset`, Spark, Athena over the
prefix) never miss a row: they may see duplicate rows while a compaction is in flight, exactly as
they may between two consumer batches; dedupe-on-read by the key above (latest collected_at) is
their contract. The `_compaction-*.json` markers never break such readers: pyarrow, Spark, Hive
and Athena skip `_`-prefixed files, and `*.parquet` globs (DuckDB) do not match them.

Safety: only files that were in the plan's listing are read, replaced or deleted; files the
consumer writes meanwhile stay visible and are merged by the next run. Running again with no new
files changes nothing (the partition is one marker + its outputs). Interrupted runs are completed
by the next run: a re-plan over the same inputs yields the same id and the same bytes; a committed
marker whose inputs still exist only needs its cleanup. Uncommitted outputs of another id are
deleted once older than a grace period (a concurrent run may still be writing them). Two
compactions of the same partition should not run concurrently (run the deployment with a
concurrency limit of 1); if they do, no row is lost: a marker whose `replaces` is a subset of
another's is superseded, otherwise readers may see duplicates until the next run.

Memory: a partition (one account, region and hour) is read whole; outputs are split by size.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from blocks import ArchiveStore
from tasks import archive
from tasks.errors import TerminalError, TransientError, classify_aws_error
from tasks.retrying import reread

Table = Literal["traces", "segments"]
TABLES: tuple[Table, ...] = ("traces", "segments")
DEDUP_KEYS: dict[str, tuple[str, ...]] = {
    "traces": ("account_id", "trace_id"),
    "segments": ("account_id", "trace_id", "segment_id"),
}
ORDER_COLUMN = "collected_at"
TIEBREAK_COLUMN = "envelope_id"
DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
DEFAULT_ORPHAN_GRACE = timedelta(hours=6)
HOUR = timedelta(hours=1)
OUTPUT_PREFIX = "compacted-"
MARKER_PREFIX = "_compaction-"
MARKER_SUFFIX = ".json"
_OUTPUT_NAME = re.compile(r"^compacted-([0-9a-f]{20})-(\d{4})\.parquet$")
_MARKER_NAME = re.compile(r"^_compaction-([0-9a-f]{20})\.json$")
_DELETE_BATCH = 1000


class CompactionError(TerminalError):
    """A plan that cannot be carried out as planned (inputs changed, bad parameters)."""


class SnapshotChanged(TransientError):
    """The listing went stale while it was being read (a marker vanished): list again."""


# ============================================================================ pure: listing


@dataclass(frozen=True, order=True)
class PartitionKey:
    table: str
    account_id: str
    region: str
    dt: str
    hour: str

    def prefix(self, store: ArchiveStore) -> str:
        return (
            f"{store.parquet_prefix}/{self.table}/account_id={self.account_id}/region={self.region}"
            f"/dt={self.dt}/hour={self.hour}/"
        )

    @property
    def label(self) -> str:
        return f"{self.table}/{self.account_id}/{self.region}/{self.dt}T{self.hour}"


@dataclass(frozen=True, order=True)
class ObjectInfo:
    """One S3 object of the lake: full key, size and LastModified."""

    key: str
    size: int
    last_modified: datetime = field(default=datetime(1970, 1, 1, tzinfo=UTC), compare=False)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def output_id(name: str) -> str | None:
    match = _OUTPUT_NAME.match(name)
    return match.group(1) if match else None


def marker_id(name: str) -> str | None:
    match = _MARKER_NAME.match(name)
    return match.group(1) if match else None


def output_name(compaction_id: str, index: int) -> str:
    return f"{OUTPUT_PREFIX}{compaction_id}-{index:04d}.parquet"


def marker_name(compaction_id: str) -> str:
    return f"{MARKER_PREFIX}{compaction_id}{MARKER_SUFFIX}"


@dataclass
class PartitionListing:
    """What one listing shows in one partition, sorted into the protocol's kinds."""

    partition: PartitionKey
    parts: list[ObjectInfo] = field(default_factory=list)  # consumer/repair files
    outputs: dict[str, list[ObjectInfo]] = field(default_factory=dict)  # compaction id → its outputs
    markers: dict[str, ObjectInfo] = field(default_factory=dict)  # compaction id → marker object

    @property
    def needs_marker_contents(self) -> bool:
        """Whether visibility depends on what markers say (else names alone decide)."""
        return bool(self.markers) and (bool(self.parts) or len(self.markers) > 1)


def parse_parquet_key(store: ArchiveStore, table: str, key: str) -> tuple[PartitionKey, str] | None:
    """`parquet/<table>/account_id=…/region=…/dt=…/hour=…/<name>` → (partition, name); None otherwise."""
    prefix = f"{store.parquet_prefix}/{table}/"
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) != 5:
        return None
    fields: dict[str, str] = {}
    for part, name in zip(parts[:4], ("account_id", "region", "dt", "hour"), strict=True):
        column, _, value = part.partition("=")
        if column != name or not value:
            return None
        fields[name] = value
    return PartitionKey(table, fields["account_id"], fields["region"], fields["dt"], fields["hour"]), parts[4]


def group_listing(
    store: ArchiveStore, table: str, objects: Iterable[ObjectInfo]
) -> dict[PartitionKey, PartitionListing]:
    """Sort a table's listing into partitions and kinds (unknown objects are ignored)."""
    listings: dict[PartitionKey, PartitionListing] = {}
    for obj in objects:
        parsed = parse_parquet_key(store, table, obj.key)
        if parsed is None:
            continue
        partition, name = parsed
        listing = listings.setdefault(partition, PartitionListing(partition))
        if (cid := marker_id(name)) is not None:
            listing.markers[cid] = obj
        elif (cid := output_id(name)) is not None:
            listing.outputs.setdefault(cid, []).append(obj)
        elif name.endswith(".parquet") and not name.startswith((".", "_")):
            listing.parts.append(obj)
    for listing in listings.values():
        listing.parts.sort()
        for outputs in listing.outputs.values():
            outputs.sort()
    return dict(sorted(listings.items()))


# ============================================================================ pure: markers + visibility


class CommitMarker(BaseModel):
    """`_compaction-<id>.json`: the commit point of one compaction of one partition."""

    schema_: Literal["xraylake.compaction.v1"] = Field(default="xraylake.compaction.v1", alias="schema")
    compaction_id: str
    table: str
    account_id: str
    region: str
    dt: str
    hour: str
    outputs: list[str]
    replaces: list[str]
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    created_at: datetime

    model_config = {"populate_by_name": True}

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True), option=orjson.OPT_INDENT_2)


@dataclass
class PartitionView:
    """What a protocol-aware reader sees in one partition, and what is left over."""

    partition: PartitionKey
    visible: list[ObjectInfo]
    superseded: list[ObjectInfo]  # replaced files still present: hidden, to delete
    uncommitted: list[ObjectInfo]  # outputs without a marker: hidden (in-flight or crashed run)
    active_markers: list[str]  # committed compactions whose outputs are (partly) visible
    markers: list[str]  # every marker id in the listing

    @property
    def visible_bytes(self) -> int:
        return sum(o.size for o in self.visible)


def resolve(listing: PartitionListing, markers: Mapping[str, CommitMarker] | None = None) -> PartitionView:
    """The reader rule (pure). `markers` must hold every marker of the listing when
    `listing.needs_marker_contents`; otherwise it may be empty."""
    markers = markers or {}
    if listing.needs_marker_contents:
        missing = set(listing.markers) - set(markers)
        if missing:
            raise ValueError(f"{listing.partition.label}: contents of markers {sorted(missing)} are needed")
    committed = set(listing.markers)
    # A marker whose `replaces` is inside another's was overtaken by it (concurrent runs).
    overtaken: set[str] = set()
    loaded = {cid: set(markers[cid].replaces) for cid in committed if cid in markers}
    for cid, replaces in loaded.items():
        for other, other_replaces in loaded.items():
            if other != cid and (replaces < other_replaces or (replaces == other_replaces and other > cid)):
                overtaken.add(cid)
                break
    hidden: set[str] = set()
    for cid in committed - overtaken:
        if cid in markers:
            hidden.update(markers[cid].replaces)
    visible: list[ObjectInfo] = []
    superseded: list[ObjectInfo] = []
    uncommitted: list[ObjectInfo] = []
    active: set[str] = set()
    for part in listing.parts:
        (superseded if part.name in hidden else visible).append(part)
    for cid, outputs in sorted(listing.outputs.items()):
        for obj in outputs:
            if cid not in committed:
                uncommitted.append(obj)
            elif cid in overtaken or obj.name in hidden:
                superseded.append(obj)
            else:
                visible.append(obj)
                active.add(cid)
    return PartitionView(
        listing.partition,
        sorted(visible),
        sorted(superseded),
        sorted(uncommitted),
        sorted(active),
        sorted(listing.markers),
    )


# ============================================================================ pure: planning


def compaction_id(inputs: Iterable[ObjectInfo]) -> str:
    """Deterministic id of a compaction from its input file names and sizes."""
    digest = hashlib.sha256()
    for obj in sorted(inputs, key=lambda o: o.name):
        digest.update(f"{obj.name}\x00{obj.size}\n".encode())
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class PartitionPlan:
    """What to do in one partition. `compaction_id` is None for cleanup-only plans."""

    partition: PartitionKey
    compaction_id: str | None
    inputs: tuple[ObjectInfo, ...]
    cleanup: tuple[ObjectInfo, ...]  # superseded files still present
    orphans: tuple[ObjectInfo, ...]  # uncommitted outputs of other ids, older than the grace period
    dead_markers: tuple[ObjectInfo, ...]  # markers to delete once the files above are gone
    target_bytes: int
    reason: str

    @property
    def input_bytes(self) -> int:
        return sum(o.size for o in self.inputs)

    @property
    def has_work(self) -> bool:
        return bool(self.compaction_id or self.cleanup or self.orphans or self.dead_markers)


def plan_partition(
    listing: PartitionListing,
    view: PartitionView,
    *,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    now: datetime,
    orphan_grace: timedelta = DEFAULT_ORPHAN_GRACE,
    rewrite_single_files: bool = False,
) -> PartitionPlan:
    """Decide one partition (pure).

    Compact when the visible files are more than one, or come from more than one source
    (consumer parts next to a compaction's outputs, outputs of two compactions); with
    `rewrite_single_files` also a lone consumer file (it may hold duplicates within itself).
    A partition that is one compaction's outputs and nothing else is left alone.
    """
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    visible_parts = [o for o in view.visible if output_id(o.name) is None]
    sources = {output_id(o.name) for o in view.visible}
    compact = len(view.visible) > 1 and (bool(visible_parts) or len(sources) > 1)
    if not compact and rewrite_single_files and len(visible_parts) == 1 and len(view.visible) == 1:
        compact = True
    cid = compaction_id(view.visible) if compact else None
    orphans = tuple(o for o in view.uncommitted if output_id(o.name) != cid and now - o.last_modified >= orphan_grace)
    # Markers that protect nothing visible after this plan: every other marker when compacting
    # (all visible outputs become inputs), else those none of whose outputs are visible.
    visible_names = {o.name for o in view.visible}
    dead = []
    for mid, marker in sorted(listing.markers.items()):
        if mid == cid:
            continue
        outputs_visible = any(o.name in visible_names for o in listing.outputs.get(mid, []))
        if compact or not outputs_visible:
            dead.append(marker)
    if compact:
        reason = f"{len(view.visible)} visible files" + (f" from {len(sources)} sources" if len(sources) > 1 else "")
    elif view.superseded or orphans or dead:
        reason = "cleanup only"
    else:
        reason = "already compact" if view.visible else "empty"
    return PartitionPlan(
        partition=listing.partition,
        compaction_id=cid,
        inputs=tuple(view.visible) if compact else (),
        cleanup=tuple(view.superseded),
        orphans=orphans,
        dead_markers=tuple(dead),
        target_bytes=target_bytes,
        reason=reason,
    )


def partition_end(partition: PartitionKey) -> datetime | None:
    """When the partition's hour ends (None for a malformed dt/hour)."""
    try:
        return datetime.strptime(f"{partition.dt}T{partition.hour}", "%Y-%m-%dT%H").replace(tzinfo=UTC) + HOUR
    except ValueError:
        return None


def select_partitions(
    partitions: Iterable[PartitionKey],
    accounts: Sequence[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    settled_before: datetime | None = None,
) -> list[PartitionKey]:
    """Partitions of the given accounts whose dt lies in [start_date, end_date] (inclusive) and,
    with `settled_before`, whose hour ended by then (hot partitions are left to a later run)."""
    wanted = set(accounts or [])
    low = start_date.isoformat() if start_date else None
    high = end_date.isoformat() if end_date else None
    chosen = []
    for p in partitions:
        if wanted and p.account_id not in wanted:
            continue
        if (low is not None and p.dt < low) or (high is not None and p.dt > high):
            continue
        if settled_before is not None:
            ends = partition_end(p)
            if ends is None or ends > settled_before:
                continue
        chosen.append(p)
    return chosen


# ============================================================================ pure: rows


def dedupe(table: pa.Table, keys: Sequence[str]) -> tuple[pa.Table, int]:
    """One row per key: the latest `collected_at` (ties: highest envelope_id, then input order).

    Key columns absent from the table (partition columns kept in the path) are constant within a
    partition and skipped. The result is sorted by the key. Returns (table, rows removed).
    """
    names = set(table.column_names)
    present = [k for k in keys if k in names]
    if not present:
        raise ValueError(f"none of the key columns {list(keys)} is in the table")
    if table.num_rows == 0:
        return table, 0
    sort_keys: list[tuple[str, str]] = [(k, "ascending") for k in present]
    if ORDER_COLUMN in names:
        sort_keys.append((ORDER_COLUMN, "descending"))
    if TIEBREAK_COLUMN in names:
        sort_keys.append((TIEBREAK_COLUMN, "descending"))
    ordered = table.take(pc.sort_indices(table, sort_keys=sort_keys))  # stable sort
    rows = ordered.num_rows
    if rows == 1:
        return ordered, 0
    first = None
    for key in present:
        column = ordered.column(key).combine_chunks()
        differs = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, rows - 1)), True)
        first = differs if first is None else pc.or_(first, differs)
    assert first is not None
    mask = pa.concat_arrays([pa.array([True]), first])
    kept = ordered.filter(mask)
    return kept, rows - kept.num_rows


def output_slices(rows: int, input_rows: int, input_bytes: int, target_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of each output file: rows per file estimated from the inputs' bytes per row."""
    if rows <= 0:
        return []
    bytes_per_row = input_bytes / max(1, input_rows)
    per_file = max(1, int(target_bytes / bytes_per_row)) if bytes_per_row > 0 else rows
    count = math.ceil(rows / per_file)
    size = math.ceil(rows / count)  # even split
    return [(offset, min(size, rows - offset)) for offset in range(0, rows, size)]


# ============================================================================ I/O: listing + markers


def _objects(s3: Any, bucket: str, prefix: str) -> list[ObjectInfo]:
    return [
        ObjectInfo(o["Key"], int(o.get("Size", 0)), o.get("LastModified") or datetime(1970, 1, 1, tzinfo=UTC))
        for o in archive.list_keys(s3, bucket, prefix)
    ]


def list_table(
    s3: Any, store: ArchiveStore, table: str, accounts: Sequence[str] | None = None
) -> dict[PartitionKey, PartitionListing]:
    """One listing of a table (per account prefix when accounts are given)."""
    root = f"{store.parquet_prefix}/{table}/"
    prefixes = [f"{root}account_id={a}/" for a in sorted(set(accounts))] if accounts else [root]
    objects: list[ObjectInfo] = []
    for prefix in prefixes:
        objects += _objects(s3, store.bucket, prefix)
    return group_listing(store, table, objects)


def read_marker(s3: Any, bucket: str, key: str) -> CommitMarker:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        translated = classify_aws_error(error, f"get s3://{bucket}/{key}")
        if isinstance(translated, TerminalError) and "NoSuchKey" in str(translated):
            raise SnapshotChanged(f"marker s3://{bucket}/{key} vanished while reading; list again") from error
        raise translated from error
    return CommitMarker.model_validate_json(body)


def load_markers(
    s3: Any, store: ArchiveStore, listing: PartitionListing, always: bool = False
) -> dict[str, CommitMarker]:
    if not (always or listing.needs_marker_contents):
        return {}
    return {cid: read_marker(s3, store.bucket, obj.key) for cid, obj in listing.markers.items()}


def snapshot(
    s3: Any,
    store: ArchiveStore,
    table: str,
    accounts: Sequence[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    attempts: int = 3,
) -> list[PartitionView]:
    """The protocol-aware view of a table: one listing, marker contents where they matter
    (listed again, up to `attempts` listings, when a marker vanishes while it is read)."""

    def view() -> list[PartitionView]:
        listings = list_table(s3, store, table, accounts)
        chosen = select_partitions(listings, accounts, start_date, end_date)
        return [resolve(listings[p], load_markers(s3, store, listings[p])) for p in chosen]

    return reread(SnapshotChanged, attempts=attempts).run(f"snapshot of {table}", view)


def visible_files(
    s3: Any,
    store: ArchiveStore,
    table: str,
    accounts: Sequence[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
) -> list[ObjectInfo]:
    """Every file a reader of `table` should scan (see the module docstring)."""
    return [obj for view in snapshot(s3, store, table, accounts, start_date, end_date) for obj in view.visible]


def plan(
    s3: Any,
    store: ArchiveStore,
    tables: Sequence[str] = TABLES,
    accounts: Sequence[str] | None = None,
    start_date: date | None = None,
    end_date: date | None = None,
    *,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    orphan_grace: timedelta = DEFAULT_ORPHAN_GRACE,
    rewrite_single_files: bool = False,
    skip_recent: timedelta = timedelta(0),
    now: datetime | None = None,
) -> list[PartitionPlan]:
    """List, resolve and plan every selected partition. `skip_recent` leaves partitions whose
    hour ended less than that long ago (the consumer is still writing them) to a later run."""
    now = now or datetime.now(UTC)
    settled = now - skip_recent if skip_recent > timedelta(0) else None
    plans: list[PartitionPlan] = []
    for table in tables:
        if table not in DEDUP_KEYS:
            raise ValueError(f"unknown table {table!r}: expected one of {', '.join(TABLES)}")
        listings = list_table(s3, store, table, accounts)
        for partition in select_partitions(listings, accounts, start_date, end_date, settled):
            listing = listings[partition]
            view = resolve(listing, load_markers(s3, store, listing))
            plans.append(
                plan_partition(
                    listing,
                    view,
                    target_bytes=target_bytes,
                    now=now,
                    orphan_grace=orphan_grace,
                    rewrite_single_files=rewrite_single_files,
                )
            )
    return plans


# ============================================================================ I/O: execution


@dataclass
class PartitionResult:
    partition: str
    status: str = "skipped"  # compacted | cleaned | skipped | failed
    reason: str = ""
    compaction_id: str | None = None
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duplicates_removed: int = 0
    deleted: int = 0
    outputs: list[str] = field(default_factory=list)
    error: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "outputs"}


def _read_parquet(s3: Any, bucket: str, obj: ObjectInfo) -> pa.Table:
    try:
        body = s3.get_object(Bucket=bucket, Key=obj.key)["Body"].read()
    except Exception as error:
        translated = classify_aws_error(error, f"get s3://{bucket}/{obj.key}")
        if isinstance(translated, TerminalError) and "NoSuchKey" in str(translated):
            raise CompactionError(f"planned input {obj.key} is gone: the partition changed, plan again") from error
        raise translated from error
    return pq.read_table(io.BytesIO(body))


def write_outputs(s3: Any, store: ArchiveStore, plan: PartitionPlan) -> tuple[CommitMarker, PartitionResult]:
    """Step 1: read the inputs, dedupe, write the (uncommitted) outputs. Returns the marker to commit."""
    if plan.compaction_id is None:
        raise CompactionError(f"{plan.partition.label}: nothing to compact ({plan.reason})")
    partition = plan.partition
    tables = [_read_parquet(s3, store.bucket, obj) for obj in sorted(plan.inputs, key=lambda o: o.name)]
    combined = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    rows_in = combined.num_rows
    deduped, removed = dedupe(combined, DEDUP_KEYS[partition.table])
    deduped = deduped.replace_schema_metadata(
        {**(deduped.schema.metadata or {}), b"xraylake.compaction_id": plan.compaction_id.encode()}
    )
    prefix = partition.prefix(store)
    outputs: list[str] = []
    bytes_out = 0
    for index, (offset, length) in enumerate(
        output_slices(deduped.num_rows, rows_in, plan.input_bytes, plan.target_bytes)
    ):
        name = output_name(plan.compaction_id, index)
        bytes_out += archive.write_parquet(s3, prefix + name, store.bucket, deduped.slice(offset, length))
        outputs.append(name)
    marker = CommitMarker(
        compaction_id=plan.compaction_id,
        table=partition.table,
        account_id=partition.account_id,
        region=partition.region,
        dt=partition.dt,
        hour=partition.hour,
        outputs=outputs,
        replaces=sorted(o.name for o in plan.inputs),
        rows_in=rows_in,
        rows_out=deduped.num_rows,
        bytes_in=plan.input_bytes,
        bytes_out=bytes_out,
        created_at=datetime.now(UTC).replace(microsecond=0),
    )
    result = PartitionResult(
        partition=partition.label,
        status="written",
        reason=plan.reason,
        compaction_id=plan.compaction_id,
        files_before=len(plan.inputs),
        files_after=len(outputs),
        bytes_before=plan.input_bytes,
        bytes_after=bytes_out,
        rows_in=rows_in,
        rows_out=deduped.num_rows,
        duplicates_removed=removed,
        outputs=outputs,
    )
    return marker, result


def commit(s3: Any, store: ArchiveStore, plan: PartitionPlan, marker: CommitMarker) -> str:
    """Step 2: the one atomic PUT that makes the outputs visible and hides the inputs."""
    key = plan.partition.prefix(store) + marker_name(marker.compaction_id)
    try:
        s3.put_object(Bucket=store.bucket, Key=key, Body=marker.to_json(), ContentType="application/json")
    except Exception as error:
        raise classify_aws_error(error, f"put s3://{store.bucket}/{key}") from error
    return key


def _delete(s3: Any, bucket: str, keys: Sequence[str]) -> int:
    deleted = 0
    for offset in range(0, len(keys), _DELETE_BATCH):
        chunk = keys[offset : offset + _DELETE_BATCH]
        try:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        except Exception as error:
            raise classify_aws_error(error, f"delete {len(chunk)} objects in s3://{bucket}") from error
        errors = response.get("Errors") or []
        if errors:
            raise TransientError(f"could not delete {len(errors)} objects, e.g. {errors[0]}")
        deleted += len(chunk)
    return deleted


def cleanup(s3: Any, store: ArchiveStore, plan: PartitionPlan, committed: bool) -> int:
    """Step 3: delete replaced files (inputs only once committed), stale orphans, then dead markers."""
    files = [o.key for o in plan.cleanup] + [o.key for o in plan.orphans]
    if committed:
        files += [o.key for o in plan.inputs]
    deleted = _delete(s3, store.bucket, sorted(set(files)))
    # Markers last: a marker goes only when nothing it hides or shows is left.
    return deleted + _delete(s3, store.bucket, sorted(o.key for o in plan.dead_markers))


def execute(s3: Any, store: ArchiveStore, plan: PartitionPlan) -> PartitionResult:
    """Carry out one partition plan: write → commit → cleanup. Never raises (failures are data)."""
    result = PartitionResult(partition=plan.partition.label, reason=plan.reason)
    if not plan.has_work:
        return result
    try:
        committed = False
        if plan.compaction_id:
            marker, result = write_outputs(s3, store, plan)
            commit(s3, store, plan, marker)
            committed = True
            result.status = "compacted"
        else:
            result.status = "cleaned"
        result.deleted = cleanup(s3, store, plan, committed)
    except Exception as error:
        result.status = "failed"
        result.error = f"{type(error).__name__}: {error}"[:500]
    return result


__all__ = [
    "DEDUP_KEYS",
    "DEFAULT_ORPHAN_GRACE",
    "DEFAULT_TARGET_BYTES",
    "TABLES",
    "CommitMarker",
    "CompactionError",
    "ObjectInfo",
    "PartitionKey",
    "PartitionListing",
    "PartitionPlan",
    "PartitionResult",
    "PartitionView",
    "SnapshotChanged",
    "cleanup",
    "commit",
    "compaction_id",
    "dedupe",
    "execute",
    "group_listing",
    "list_table",
    "output_slices",
    "plan",
    "plan_partition",
    "resolve",
    "select_partitions",
    "snapshot",
    "visible_files",
    "write_outputs",
]
