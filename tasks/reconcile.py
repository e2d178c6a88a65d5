"""Reconcile: trace ids in X-Ray vs the raw archive vs Parquet vs the index, per account, region, hour.

A trace belongs to its partition hour (`tasks.tracetime`: the epoch in its id when credible,
else its earliest segment start, else its collection time): that is the archive's partition hour
and the daily index's day in every sink. Each sink reports, per trace id, the second it places the
trace at — the id epoch for credible ids (so windows stay second-precise), the start of its
partition hour otherwise — and is read by the same rule:

* X-Ray       GetTraceSummaries through the member role, windows ≤ 1 h (`TimeRangeType=TraceId` by
              default), only for hours inside the 30-day retention;
* raw         every envelope under the hour partitions (`raw/account_id=…/region=…/dt=…/hour=…/`);
* Parquet     the Iceberg `traces` table plus the consumers' files the committer has not committed yet;
* index       the `<prefix>-traces` alias: account + region terms and a range on `partition_hour`
              (documents written before that field existed: a range on `trace_id`, whose fixed
              width lowercase hex sorts like the epoch), paged with search_after.

Per (account, region, hour) the reference set is the union of every sink that was read; a sink
misses what it lacks from that set. X-Ray "missing" ids (in the archive but not in X-Ray) cannot be
repaired and usually mean the trace aged out or the sweep windows saw it differently.

Repair (`plan_repair` is pure): ids missing in the raw archive that the source still has are
re-collected and sent with source "backfill" to the org queue (the consumer writes every sink):
through BatchGetTraces when X-Ray listed them, and, for an account whose reader is `spans` or
`both`, ids found in `aws/spans` are re-read from there (`tasks.span_retrieval.read_traces`,
FilterLogEvents by trace id: whole traces, no Logs Insights) and sent as `xraylake.spans.v1`.
Ids the raw archive has but Parquet or the index lack are re-processed from the
raw envelope by `Repairer` (the consumer's transform; Parquet rows of just those traces under a
`part-repair-…` name, index documents with `op_type=create`, so an existing or newer document is
never overwritten and a deleted one comes back even inside the index's delete-tombstone window).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.dataset as ds
from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc
from pydantic import BaseModel, Field

from blocks import MemberAccount
from blocks.config import Config
from tasks import archive, lake, span_retrieval, spans_reader, tracetime, windows, xray
from tasks import collector as col
from tasks.consumer import BatchStats, Consumer
from tasks.documents import EnvelopeDocuments
from tasks.envelope import SCHEMA_SPANS_V1, parse_envelope
from tasks.errors import TransientError
from tasks.ids import is_trace_id
from tasks.index import bulk_index
from tasks.mappings import SPAN_INDEX_PREFIX
from tasks.retrying import reread
from tasks.span_records import span_trace_id
from tasks.spans import xray_trace_id
from tasks.tables import to_arrow
from tasks.tracetime import Partition

SINKS = ("xray", "raw", "parquet", "index")
ARCHIVE_SINKS = ("raw", "parquet", "index")
XRAY_RETENTION = timedelta(days=30)
HOUR = timedelta(hours=1)
INDEX_PAGE = 5000
RAW_READERS = 16

Target = tuple[str, str]  # (account_id, region)
Positions = dict[str, int]  # trace id → the epoch second a sink places it at


# ============================================================================ pure: window


def validate_window(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """Timezone-aware, non-empty, not in the future."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a time zone (e.g. 2026-11-20T00:00:00Z)")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end == start:
        raise ValueError(f"empty range: start and end are both {start.isoformat()}")
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    if end > now + timedelta(minutes=1):
        raise ValueError(f"end {end.isoformat()} is in the future")
    return start, end


def hours_of(start: datetime, end: datetime) -> list[datetime]:
    """Every UTC hour overlapping [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < end:
        out.append(hour)
        hour += HOUR
    return out


def epoch_bounds(start: datetime, end: datetime) -> tuple[int, int]:
    """[low, high) in whole seconds: a trace-id epoch s is in the window iff low <= s < high."""
    return math.ceil(start.timestamp()), math.ceil(end.timestamp())


def id_bounds(start: datetime, end: datetime) -> tuple[str, str]:
    """Lexicographic [low, high) on trace ids for the window (ids are `1-<8 lowercase hex>-…`)."""
    low, high = epoch_bounds(start, end)
    return f"1-{low:08x}", f"1-{high:08x}"


def position(trace_id: str, collected_at: datetime, partition_start: datetime) -> int:
    """Where a sink places a trace: its id epoch when credible (second-precise), else the start of
    the partition hour the sink filed it under."""
    epoch = tracetime.credible_id_epoch(trace_id, collected_at)
    return epoch if epoch is not None else int(partition_start.timestamp())


def in_window(trace_id: str, start: datetime, end: datetime) -> bool:
    """Whether a trace id's own epoch lies in [start, end) (ids X-Ray lists)."""
    epoch = tracetime.id_epoch(trace_id)
    if epoch is None:
        return False
    low, high = epoch_bounds(start, end)
    return low <= epoch < high


def xray_positions(trace_ids: Iterable[str]) -> Positions:
    """X-Ray lists traces by the time in their ids."""
    out: Positions = {}
    for trace_id in trace_ids:
        epoch = tracetime.id_epoch(trace_id)
        if epoch is not None:
            out[trace_id] = epoch
    return out


def xray_checkable(hours: Iterable[datetime], now: datetime, retention: timedelta = XRAY_RETENTION) -> set[datetime]:
    """Hours X-Ray still fully holds (a margin of one hour keeps the oldest hour out)."""
    oldest = now - retention + HOUR
    return {h for h in hours if h >= oldest}


# ============================================================================ pure: comparison


@dataclass
class Observation:
    """Trace ids every sink holds in the window, per (account, region), with where it puts each."""

    start: datetime
    end: datetime
    ids: dict[str, dict[Target, Positions]] = field(default_factory=lambda: {s: {} for s in SINKS})
    raw_keys: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (account, region, id) → key
    errors: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (sink, account, region) → error
    xray_hours: set[datetime] = field(default_factory=set)
    readers: dict[Target, str] = field(default_factory=dict)  # the source's reader per target
    from_spans: dict[Target, set[str]] = field(default_factory=dict)  # source ids found in aws/spans

    def add(self, sink: str, target: Target, positions: Positions) -> None:
        low, high = epoch_bounds(self.start, self.end)
        bucket = self.ids[sink].setdefault(target, {})
        bucket.update({t: second for t, second in positions.items() if low <= second < high})

    def record(self, sink: str, target: Target, found: Any) -> None:
        """What one sink's observation of a target returned (`observe_raw`'s keyed ids for raw,
        `observe_xray`'s `SourceListing` for the source, positions for the others)."""
        if sink == "raw":
            self.add_raw(target, found)
        elif sink == "xray":
            self.add_source(target, found)
        else:
            self.add(sink, target, found)

    def add_source(self, target: Target, listing: SourceListing) -> None:
        """The source of truth's ids (the `xray` sink) with the reader and the ids from `aws/spans`."""
        self.add("xray", target, listing.positions)
        self.readers[target] = listing.reader
        self.from_spans[target] = set(listing.from_spans)

    def add_raw(self, target: Target, found: dict[str, tuple[str, int]]) -> None:
        """Raw ids with the key of the envelope holding each (repair re-reads it)."""
        self.add("raw", target, {t: second for t, (_, second) in found.items()})
        inside = self.ids["raw"][target]
        for trace_id, (key, _) in found.items():
            if trace_id in inside:
                self.raw_keys[(target[0], target[1], trace_id)] = key

    def get(self, sink: str, target: Target) -> set[str]:
        return set(self.ids[sink].get(target, {}))

    def positions(self, sink: str, target: Target) -> Positions:
        return self.ids[sink].get(target, {})


@dataclass
class SourceListing:
    """What the source of truth lists for one (account, region): ids with positions, the reader
    chosen, and which of the ids (X-Ray form) were found in `aws/spans`."""

    positions: Positions
    reader: str = "xray"
    from_spans: set[str] = field(default_factory=set)


class HourRow(BaseModel):
    account_id: str
    region: str
    hour: datetime
    xray: int | None = Field(description="None: outside X-Ray retention or X-Ray could not be read")
    raw: int | None
    parquet: int | None
    index: int | None
    missing: dict[str, int] = Field(default_factory=dict)
    missing_ids: dict[str, list[str]] = Field(default_factory=dict, description="capped per sink")
    errors: list[str] = Field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return sum(self.missing.values())


class RepairSummary(BaseModel):
    reprocessed_envelopes: int = 0
    reprocessed_traces: int = 0
    parquet_files: int = 0
    parquet_rows: int = 0
    index_created: int = 0
    index_existing: int = 0
    index_failed: int = 0
    recollect_requested: int = 0
    recollected_traces: int = 0
    envelopes_sent: int = 0
    not_in_xray: int = 0
    recollected_from_spans: int = 0  # of recollected_traces: re-read from aws/spans
    not_in_spans: int = 0
    span_reads: int = 0  # FilterLogEvents passes (by trace id or over an hour)
    consumed: dict[str, Any] | None = None
    unrepairable: dict[str, int] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)


class ReconcileReport(BaseModel):
    start: datetime
    end: datetime
    generated_at: datetime
    accounts: list[str]
    regions: list[str]
    xray_checked_hours: int
    rows: list[HourRow]
    totals: dict[str, int]
    missing: dict[str, int]
    errors: list[str]
    ok: bool
    before: ReconcileReport | None = None
    repair: RepairSummary | None = None

    @property
    def mismatches(self) -> int:
        return sum(self.missing.values())

    def summary_rows(self) -> list[dict[str, Any]]:
        """Rows for tables (counts, no id lists)."""
        out = []
        for row in self.rows:
            item: dict[str, Any] = {
                "account_id": row.account_id,
                "region": row.region,
                "hour": row.hour.strftime("%Y-%m-%dT%H:00Z"),
                **{s: getattr(row, s) for s in SINKS},
            }
            item.update({f"missing_{s}": row.missing.get(s, 0) for s in SINKS})
            item["errors"] = "; ".join(row.errors)
            out.append(item)
        return out

    def message(self) -> str:
        if self.ok:
            traces = self.totals.get("raw", 0)
            return f"ok: {traces} traces agree in every sink over {len(self.rows)} account-hours"
        bad = sum(1 for r in self.rows if r.mismatches or r.errors)
        parts = [f"{n} missing in {s}" for s, n in self.missing.items() if n]
        if self.errors:
            parts.append(f"{len(self.errors)} errors")
        return f"{', '.join(parts)} ({bad} of {len(self.rows)} account-hours)"


def compare(
    observation: Observation, targets: Sequence[Target], max_ids: int = 50, now: datetime | None = None
) -> ReconcileReport:
    """Per (account, region, hour) counts and missing ids (pure)."""
    start, end = observation.start, observation.end
    rows: list[HourRow] = []
    totals = dict.fromkeys(SINKS, 0)
    missing_totals = dict.fromkeys(SINKS, 0)
    for account_id, region in targets:
        target = (account_id, region)
        errors = {s: e for (s, a, r), e in observation.errors.items() if (a, r) == target}
        by_hour: dict[str, dict[datetime, set[str]]] = {}
        for sink in SINKS:
            if sink in errors:
                continue
            hours: dict[datetime, set[str]] = {}
            for trace_id, second in observation.positions(sink, target).items():
                hours.setdefault(tracetime.Partition.of(second).start, set()).add(trace_id)
            by_hour[sink] = hours
            if sink != "xray":
                totals[sink] += len(observation.get(sink, target))
        for hour in hours_of(start, end):
            checked = [s for s in SINKS if s in by_hour and (s != "xray" or hour in observation.xray_hours)]
            seen = {s: by_hour[s].get(hour, set()) for s in checked}
            reference = set().union(*seen.values()) if seen else set()
            if "xray" in seen:
                totals["xray"] += len(seen["xray"])
            missing = {s: sorted(reference - seen[s]) for s in checked}
            row = HourRow(
                account_id=account_id,
                region=region,
                hour=hour,
                **{s: (len(seen[s]) if s in seen else None) for s in SINKS},  # type: ignore[arg-type]
                missing={s: len(ids) for s, ids in missing.items() if ids},
                missing_ids={s: ids[:max_ids] for s, ids in missing.items() if ids},
                errors=[f"{s}: {e}" for s, e in sorted(errors.items())],
            )
            for sink, count in row.missing.items():
                missing_totals[sink] += count
            rows.append(row)
    error_list = [f"{s} {a}/{r}: {e}" for (s, a, r), e in sorted(observation.errors.items())]
    return ReconcileReport(
        start=start,
        end=end,
        generated_at=now or datetime.now(UTC),
        accounts=sorted({a for a, _ in targets}),
        regions=sorted({r for _, r in targets}),
        xray_checked_hours=len(observation.xray_hours),
        rows=rows,
        totals=totals,
        missing=missing_totals,
        errors=error_list,
        ok=not any(missing_totals.values()) and not error_list,
    )


@dataclass
class RepairPlan:
    """What repair will do (pure result of an observation)."""

    reprocess: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # raw key → trace id → sinks
    recollect: dict[Target, list[str]] = field(default_factory=dict)  # through BatchGetTraces
    recollect_spans: dict[Target, list[str]] = field(default_factory=dict)  # from aws/spans
    unrepairable: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.reprocess and not self.recollect and not self.recollect_spans


def plan_repair(observation: Observation, targets: Sequence[Target]) -> RepairPlan:
    plan = RepairPlan()
    for target in targets:
        if any((s, *target) in observation.errors for s in ARCHIVE_SINKS):
            continue  # a sink we could not read: do not guess what it lacks
        got = {s: observation.get(s, target) for s in SINKS}
        xray_ok = ("xray", *target) not in observation.errors
        in_xray = got["xray"] if xray_ok else set()
        archived = got["raw"] | got["parquet"] | got["index"]
        in_spans = observation.from_spans.get(target, set()) if xray_ok else set()
        for trace_id in sorted((archived | in_xray) - got["raw"]):
            if trace_id in in_spans:  # a span account: aws/spans holds the whole trace
                plan.recollect_spans.setdefault(target, []).append(trace_id)
            elif trace_id in in_xray:
                plan.recollect.setdefault(target, []).append(trace_id)
            else:
                plan.unrepairable["raw"] = plan.unrepairable.get("raw", 0) + 1
        for sink in ("parquet", "index"):
            for trace_id in sorted(got["raw"] - got[sink]):
                key = observation.raw_keys[(target[0], target[1], trace_id)]
                plan.reprocess.setdefault(key, {}).setdefault(trace_id, set()).add(sink)
        hours = observation.xray_hours
        placed: Positions = {}
        for sink in ARCHIVE_SINKS:
            placed.update(observation.positions(sink, target))
        not_in_xray = (
            [t for t in archived if t not in in_xray and tracetime.Partition.of(placed[t]).start in hours]
            if xray_ok
            else []
        )
        if not_in_xray:
            plan.unrepairable["xray"] = plan.unrepairable.get("xray", 0) + len(not_in_xray)
    return plan


def repair_part_name(envelope_id: str, trace_ids: Iterable[str]) -> str:
    """A Parquet part name of its own for repaired rows (never a consumer or compaction name)."""
    digest = hashlib.sha256(envelope_id.encode())
    for trace_id in sorted(trace_ids):
        digest.update(b"\x00" + trace_id.encode())
    return f"repair-{digest.hexdigest()[:20]}"


# ============================================================================ I/O: observing the sinks


def observe_xray(
    collector: col.Collector,
    account: MemberAccount,
    region: str,
    start: datetime,
    end: datetime,
    hours: set[datetime],
    time_range_type: xray.TimeRangeType = "TraceId",
) -> SourceListing:
    """The source of truth for the hours in `hours`: trace ids X-Ray lists (each ≤ 1 h window
    clipped to the range) and, for an account whose reader is `spans` or `both` (CloudWatch
    Transaction Search: X-Ray lists only the indexed share), the trace ids in `aws/spans`."""
    client = collector.xray_client(account.account_id, region)
    limiter = collector.limiters.get(account.account_id, region)
    xray_call, logs_call = collector.span_callers(account.account_id, region)
    choice = spans_reader.select_reader(client, xray_call)
    found: set[str] = set()
    in_spans: set[str] = set()
    if choice.reader in ("xray", "both"):
        for window in windows.plan_windows(start, end, HOUR):
            if window.hour not in hours:
                continue
            listing = xray.list_trace_ids(
                client, window, time_range_type, account_id=account.account_id, limiter=limiter
            )
            found.update(listing.trace_ids)
    if choice.reader in ("spans", "both"):
        in_spans = observe_spans(collector, account, region, start, end, hours, logs_call)
    return SourceListing(xray_positions(found | in_spans), choice.reader, in_spans)


# A span's log event carries its end time: read this long past the window so the spans of a trace
# that started inside it are seen (spans of longer traces are out of scope, as for X-Ray's listing).
SPANS_READ_PAST = span_retrieval.SPANS_READ_PAST


def observe_spans(
    collector: col.Collector,
    account: MemberAccount,
    region: str,
    start: datetime,
    end: datetime,
    hours: set[datetime],
    call: spans_reader.Caller,
) -> set[str]:
    """Distinct trace ids (X-Ray form) in `aws/spans` whose id time lies in [start, end) and in
    one of `hours`, read with FilterLogEvents (reconcile is the one place Logs Insights would
    also fit; paging keeps it to API requests)."""
    logs = collector.logs_client(account.account_id, region)
    until = min(end + SPANS_READ_PAST, datetime.now(UTC))
    found: set[str] = set()
    if until <= start:
        return found
    for message in spans_reader.filter_events(logs, call, windows.Window(start, until)):
        trace_id, _ = span_trace_id(message)
        xray_id = xray_trace_id(trace_id) if trace_id else None
        epoch = tracetime.id_epoch(xray_id) if xray_id else None
        if xray_id and epoch is not None and Partition.of(epoch).start in hours and in_window(xray_id, start, end):
            found.add(xray_id)
    return found


def _envelope_positions(s3: Any, bucket: str, key: str) -> Positions:
    """Each trace of a raw envelope with its position by the tracetime rule (raw keys are
    partitioned by it, so a trace of a foreign, mixed-hour envelope shows where it really lies).
    Traces the consumer refuses for their id are left out, as they are from every other sink."""
    envelope = parse_envelope(archive.get_raw(s3, bucket, key))
    out: Positions = {}
    for trace in envelope.traces:
        trace_id = trace.get("Id")
        if isinstance(trace_id, str) and is_trace_id(trace_id):
            partition = tracetime.trace_partition(trace, envelope.collected_at)
            if envelope.schema_ == SCHEMA_SPANS_V1:  # the consumer files span traces in X-Ray form
                trace_id = xray_trace_id(trace_id) or trace_id
            out[trace_id] = position(trace_id, envelope.collected_at, partition.start)
    return out


def observe_raw(
    config: Config, s3: Any, account_id: str, region: str, start: datetime, end: datetime
) -> dict[str, tuple[str, int]]:
    """trace id → (raw key, position) for every envelope in the window's hour partitions."""
    store = config.archive
    keys: list[str] = []
    for hour in hours_of(start, end):
        prefix = f"{store.raw_prefix}/{archive.partition_path(account_id, region, hour)}/"
        keys += [o["Key"] for o in archive.list_keys(s3, store.bucket, prefix) if o["Key"].endswith(".json.gz")]
    found: dict[str, tuple[str, int]] = {}
    with ThreadPoolExecutor(max_workers=RAW_READERS) as pool:
        for key, ids in zip(keys, pool.map(lambda k: _envelope_positions(s3, store.bucket, k), keys), strict=True):
            for trace_id, second in ids.items():
                found.setdefault(trace_id, (key, second))
    return found


def observe_parquet(
    config: Config,
    s3: Any,
    account_ids: Sequence[str],
    regions: Sequence[str],
    start: datetime,
    end: datetime,
    attempts: int = 3,
) -> dict[Target, Positions]:
    """Trace ids (with positions) in the `traces` table per (account, region) within the window's
    dates, committed or still pending (listed again, up to `attempts` listings, when the committer
    moves a pending file into the table between listing and scan)."""
    last = end - timedelta(microseconds=1)
    dts = sorted({h.strftime("%Y-%m-%d") for h in hours_of(start, end)})

    def scan() -> dict[Target, Positions]:
        dataset = lake.lake_dataset(
            config, "traces", list(account_ids), start.date(), last.date(), s3=s3, include_pending=True
        )
        if dataset is None:
            return {}
        table = dataset.to_table(
            columns=["account_id", "region", "trace_id", "collected_at", "dt", "hour"],
            filter=ds.field("region").isin(list(regions)) & ds.field("dt").isin(dts),
        )
        out: dict[Target, Positions] = {}
        for row in table.to_pylist():
            partition_start = datetime.strptime(f"{row['dt']}T{row['hour']}", "%Y-%m-%dT%H").replace(tzinfo=UTC)
            second = position(row["trace_id"], row["collected_at"], partition_start)
            out.setdefault((row["account_id"], row["region"]), {})[row["trace_id"]] = second
        return out

    return reread(FileNotFoundError, OSError, attempts=attempts).run("reconcile Parquet scan", scan)


def observe_index(
    client: OpenSearch, alias: str, account_id: str, region: str, start: datetime, end: datetime
) -> Positions:
    """Trace ids (with positions) of the account and region in the window, from the traces alias
    (search_after). Documents indexed before `partition_hour` existed are found by id range."""
    low, high = id_bounds(start, end)
    first_hour = tracetime.hour_of(start)
    placed = {"range": {"partition_hour": {"gte": first_hour.isoformat(), "lt": end.isoformat()}}}
    legacy = {
        "bool": {
            "must_not": [{"exists": {"field": "partition_hour"}}],
            "filter": [{"range": {"trace_id": {"gte": low, "lt": high}}}],
        }
    }
    query = {
        "bool": {
            "filter": [{"term": {"account_id": account_id}}, {"term": {"region": region}}],
            "should": [placed, legacy],
            "minimum_should_match": 1,
        }
    }
    found: Positions = {}
    fields = ["trace_id", "partition_hour", "collected_at"]
    for source in _search_all(client, alias, query, fields, [{"trace_id": "asc"}]):
        placed_at = _index_position(source)
        if placed_at is not None:
            found[placed_at[0]] = placed_at[1]
    return found


def _search_all(
    client: OpenSearch, alias: str, query: dict[str, Any], fields: list[str], sort: list[dict[str, str]]
) -> Iterator[dict[str, Any]]:
    """Every hit's `_source` (only `fields`) of `query` on `alias`, paged with search_after on
    `sort` (unique per document); nothing when the alias does not exist yet."""
    after: list[Any] | None = None
    try:
        while True:
            body: dict[str, Any] = {
                "size": INDEX_PAGE,
                "_source": fields,
                "sort": sort,
                "query": query,
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            hits = client.search(index=alias, body=body)["hits"]["hits"]
            for hit in hits:
                yield hit.get("_source") or {}
            if len(hits) < INDEX_PAGE:
                return
            after = hits[-1]["sort"]
    except os_exc.NotFoundError:
        return  # no index yet: everything is missing from it
    except os_exc.TransportError as error:
        raise TransientError(f"OpenSearch search {alias}: {error}") from error


_SPAN_RESOURCE_FIELDS = {
    "legacy": (
        "resource.attributes.cloud@account@id",
        "resource.attributes.xraylake@account@name",
        "resource.attributes.cloud@region",
    ),
    "standard": (
        "resource.attributes.cloud.account.id",
        "resource.attributes.xraylake.account.name",
        "resource.attributes.cloud.region",
    ),
}


def observe_span_index(
    client: OpenSearch,
    account: MemberAccount,
    region: str,
    start: datetime,
    end: datetime,
    generation: str = "legacy",
    alias: str = SPAN_INDEX_PREFIX,
) -> Positions:
    """Trace ids (with positions) of the account and region in the window, from the span alias:
    what a `trace-analytics` profile writes instead of the traces index. OTel trace ids are the
    X-Ray id's hex digits, so the window is a `traceId` range and the position is the id's epoch.
    A span belongs to the account by `cloud.account.id` or, where a segment names another account
    (`aws.account_id`), by the roster name xraylake stamps on every span."""
    low, high = epoch_bounds(start, end)
    account_field, name_field, region_field = _SPAN_RESOURCE_FIELDS[generation]
    query = {
        "bool": {
            "filter": [
                {"term": {region_field: region}},
                {"range": {"traceId": {"gte": f"{low:08x}", "lt": f"{high:08x}"}}},
            ],
            "should": [{"term": {account_field: account.account_id}}, {"term": {name_field: account.name}}],
            "minimum_should_match": 1,
        }
    }
    found: Positions = {}
    for source in _search_all(client, alias, query, ["traceId"], [{"traceId": "asc"}, {"spanId": "asc"}]):
        otel_id = str(source.get("traceId") or "")
        trace_id = f"1-{otel_id[:8]}-{otel_id[8:]}"
        epoch = tracetime.id_epoch(trace_id)
        if epoch is not None:
            found[trace_id] = epoch
    return found


def _index_position(source: dict[str, Any]) -> tuple[str, int] | None:
    trace_id = source.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        return None
    hour, collected = source.get("partition_hour"), source.get("collected_at")
    if not hour or not collected:  # written before partition_hour: its id is all there is
        epoch = tracetime.id_epoch(trace_id)
        return None if epoch is None else (trace_id, epoch)
    collected_at = datetime.fromisoformat(str(collected).replace("Z", "+00:00"))
    partition_start = datetime.fromisoformat(str(hour).replace("Z", "+00:00"))
    return trace_id, position(trace_id, collected_at, partition_start)


def refresh(client: OpenSearch, alias: str) -> None:
    try:
        client.indices.refresh(index=alias)
    except os_exc.NotFoundError:
        pass
    except os_exc.TransportError as error:
        raise TransientError(f"OpenSearch refresh {alias}: {error}") from error


# ============================================================================ I/O: repair


class Repairer(Consumer):
    """The consumer's transform (roster names, redaction, index prefix) applied to envelopes
    re-read from the raw archive, writing only what a sink lacks."""

    def reprocess(self, raw_key: str, wanted: dict[str, set[str]], summary: RepairSummary) -> None:
        """Re-process `wanted` (trace id → sinks lacking it) from one raw envelope."""
        store = self.config.archive
        envelope = parse_envelope(archive.get_raw(self.s3, store.bucket, raw_key))
        stats = BatchStats()
        result = self._transform(envelope, stats)
        summary.reprocessed_envelopes += 1
        summary.reprocessed_traces += len(wanted)
        for sink in ("parquet", "index"):
            docs = [d for d in result.documents if sink in wanted.get(d.trace_id, set())]
            if not docs:
                continue
            if sink == "parquet":
                self._repair_parquet(envelope.envelope_id, docs, summary)
            else:
                version = envelope.collected_at_ms
                documents = EnvelopeDocuments(envelope.envelope_id, docs)
                actions = [
                    replace(action, op_type="create")
                    for action in documents.index_actions(
                        version,
                        self.index_prefix,
                        self.span_generation,
                        self.index_profile,
                        self.service_map_bucket_seconds,
                    )
                ]
                report = bulk_index(self.opensearch, actions)
                summary.index_created += report.indexed
                summary.index_existing += report.stale
                summary.index_failed += report.failed
                summary.errors += [str(e) for e in report.errors[:5]]

    def _repair_parquet(self, envelope_id: str, docs: list[Any], summary: RepairSummary) -> None:
        traces, segments = to_arrow(docs)
        part = repair_part_name(envelope_id, [d.trace_id for d in docs])
        store = self.config.archive
        for table_name, table in (("traces", traces), ("segments", segments)):
            for piece in archive.split_by_partition(table):
                key = archive.parquet_key(store, table_name, piece.account_id, piece.region, piece.dt, piece.hour, part)
                archive.write_parquet(self.s3, key, store.bucket, piece.table)
                summary.parquet_files += 1
                summary.parquet_rows += piece.table.num_rows


def recollect(
    collector: col.Collector, account_id: str, region: str, trace_ids: Sequence[str], summary: RepairSummary
) -> None:
    """BatchGetTraces for the ids → envelopes (source "backfill") → the org queue."""
    client = collector.xray_client(account_id, region)
    batch = xray.batch_get_traces(
        client, trace_ids, account_id=account_id, limiter=collector.limiters.get(account_id, region)
    )
    summary.recollect_requested += len(trace_ids)
    summary.not_in_xray += len(batch.missing) + len(batch.unprocessed)
    if not batch.traces:
        return
    envelopes = col.envelopes_for(
        batch.traces, source="backfill", account_id=account_id, region=region, redaction=collector.redaction
    )
    _, report = col.send_envelopes(collector, envelopes)
    summary.recollected_traces += len(batch.traces)
    summary.envelopes_sent += report.sent


def recollect_spans(
    collector: col.Collector,
    account_id: str,
    region: str,
    trace_ids: Sequence[str],
    summary: RepairSummary,
    now: datetime | None = None,
) -> None:
    """The ids' spans re-read from `aws/spans` (`tasks.span_retrieval.read_traces`: FilterLogEvents
    by trace id, whole traces) → `xraylake.spans.v1` envelopes (source "backfill") → the org queue."""
    account = collector.config.roster.get(account_id)
    _, logs_call = collector.span_callers(account_id, region)
    logs = collector.logs_client(account_id, region)
    read = span_retrieval.read_traces(
        logs, logs_call, trace_ids, now=now, redaction=collector.redaction, page_limit=collector.spans_page_limit
    )
    summary.recollect_requested += len(trace_ids)
    summary.span_reads += read.filtered_reads + read.hour_reads
    summary.not_in_spans += len(read.missing(trace_ids))
    result = col.send_span_groups(collector, account, region, read.groups, source="backfill")
    summary.recollected_traces += result.traces
    summary.recollected_from_spans += result.traces
    summary.envelopes_sent += result.envelopes


__all__ = [
    "SINKS",
    "HourRow",
    "Observation",
    "ReconcileReport",
    "RepairPlan",
    "RepairSummary",
    "Repairer",
    "SourceListing",
    "compare",
    "epoch_bounds",
    "hours_of",
    "id_bounds",
    "in_window",
    "observe_index",
    "observe_parquet",
    "observe_raw",
    "observe_xray",
    "plan_repair",
    "recollect",
    "recollect_spans",
    "refresh",
    "repair_part_name",
    "validate_window",
    "xray_checkable",
]
