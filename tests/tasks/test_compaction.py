"""Compaction planning and row logic, pure (no server)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from blocks import ArchiveStore
from tasks import compaction as c

STORE = ArchiveStore(bucket="lake")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PREFIX = "parquet/segments/account_id=012345678901/region=us-east-1/dt=2026-11-20/hour=10/"
PARTITION = c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-20", "10")


def obj(name: str, size: int = 100, age: timedelta = timedelta(hours=1), prefix: str = PREFIX) -> c.ObjectInfo:
    return c.ObjectInfo(prefix + name, size, NOW - age)


def marker(cid: str, outputs: list[str], replaces: list[str]) -> c.CommitMarker:
    return c.CommitMarker(
        compaction_id=cid,
        table="segments",
        account_id="012345678901",
        region="us-east-1",
        dt="2026-11-20",
        hour="10",
        outputs=outputs,
        replaces=replaces,
        created_at=NOW,
    )


def listing(*objects: c.ObjectInfo) -> c.PartitionListing:
    grouped = c.group_listing(STORE, "segments", objects)
    assert list(grouped) == [PARTITION]
    return grouped[PARTITION]


def plan(lst: c.PartitionListing, markers: dict[str, c.CommitMarker] | None = None, **kw: object) -> c.PartitionPlan:
    return c.plan_partition(lst, c.resolve(lst, markers or {}), now=NOW, **kw)  # type: ignore[arg-type]


A = "a" * 20
B = "b" * 20


# ----------------------------------------------------------------------------- listing


def test_group_listing_sorts_kinds_and_ignores_foreign_keys() -> None:
    objects = [
        obj("part-1.parquet"),
        obj(c.output_name(A, 0)),
        obj(c.marker_name(A)),
        obj("notes.txt"),
        obj("_SUCCESS"),
        c.ObjectInfo("parquet/segments/account_id=012345678901/loose.parquet", 1),
        c.ObjectInfo("raw/account_id=012345678901/region=us-east-1/dt=2026-11-20/hour=10/x.json.gz", 1),
    ]
    grouped = c.group_listing(STORE, "segments", objects)
    assert list(grouped) == [PARTITION]
    lst = grouped[PARTITION]
    assert [o.name for o in lst.parts] == ["part-1.parquet"]
    assert list(lst.outputs) == [A]
    assert list(lst.markers) == [A]
    assert PARTITION.account_id == "012345678901"  # leading zero kept
    assert PARTITION.prefix(STORE) == PREFIX


def test_marker_contents_are_needed_only_where_they_decide_visibility() -> None:
    assert not listing(obj("part-1.parquet"), obj("part-2.parquet")).needs_marker_contents
    assert not listing(obj(c.output_name(A, 0)), obj(c.marker_name(A))).needs_marker_contents
    assert listing(obj(c.output_name(A, 0)), obj(c.marker_name(A)), obj("part-9.parquet")).needs_marker_contents
    assert listing(obj(c.marker_name(A)), obj(c.marker_name(B))).needs_marker_contents
    with pytest.raises(ValueError, match="contents of markers"):
        c.resolve(listing(obj(c.marker_name(A)), obj("part-1.parquet")))


# ----------------------------------------------------------------------------- reader rule


def test_reader_sees_old_files_until_the_marker_then_only_new_ones() -> None:
    inputs = [obj("part-1.parquet"), obj("part-2.parquet")]
    outputs = [obj(c.output_name(A, 0)), obj(c.output_name(A, 1))]
    # outputs written, not committed: exactly the old files
    before = c.resolve(listing(*inputs, *outputs))
    assert [o.name for o in before.visible] == ["part-1.parquet", "part-2.parquet"]
    assert len(before.uncommitted) == 2
    # committed, inputs not yet deleted: exactly the new files
    m = marker(A, [o.name for o in outputs], ["part-1.parquet", "part-2.parquet"])
    during = c.resolve(listing(*inputs, *outputs, obj(c.marker_name(A))), {A: m})
    assert [o.name for o in during.visible] == [o.name for o in outputs]
    assert [o.name for o in during.superseded] == ["part-1.parquet", "part-2.parquet"]
    # inputs deleted
    after = c.resolve(listing(*outputs, obj(c.marker_name(A))))
    assert [o.name for o in after.visible] == [o.name for o in outputs]
    assert after.superseded == []


def test_files_written_after_the_plan_stay_visible_next_to_the_outputs() -> None:
    m = marker(A, [c.output_name(A, 0)], ["part-1.parquet"])
    view = c.resolve(
        listing(obj("part-1.parquet"), obj("part-new.parquet"), obj(c.output_name(A, 0)), obj(c.marker_name(A))),
        {A: m},
    )
    assert sorted(o.name for o in view.visible) == [c.output_name(A, 0), "part-new.parquet"]


def test_second_generation_hides_the_first_generation_outputs() -> None:
    m1 = marker(A, [c.output_name(A, 0)], ["part-1.parquet"])
    m2 = marker(B, [c.output_name(B, 0)], [c.output_name(A, 0), "part-2.parquet"])
    view = c.resolve(
        listing(
            obj(c.output_name(A, 0)),
            obj(c.marker_name(A)),
            obj("part-2.parquet"),
            obj(c.output_name(B, 0)),
            obj(c.marker_name(B)),
        ),
        {A: m1, B: m2},
    )
    assert [o.name for o in view.visible] == [c.output_name(B, 0)]
    assert sorted(o.name for o in view.superseded) == sorted([c.output_name(A, 0), "part-2.parquet"])


def test_concurrent_marker_with_a_subset_of_inputs_is_overtaken() -> None:
    m1 = marker(A, [c.output_name(A, 0)], ["part-1.parquet"])
    m2 = marker(B, [c.output_name(B, 0)], ["part-1.parquet", "part-2.parquet"])
    view = c.resolve(
        listing(obj(c.output_name(A, 0)), obj(c.marker_name(A)), obj(c.output_name(B, 0)), obj(c.marker_name(B))),
        {A: m1, B: m2},
    )
    assert [o.name for o in view.visible] == [c.output_name(B, 0)]
    assert [o.name for o in view.superseded] == [c.output_name(A, 0)]


# ----------------------------------------------------------------------------- planning


def test_small_files_are_planned_with_a_deterministic_id() -> None:
    lst = listing(obj("part-2.parquet", 300), obj("part-1.parquet", 200))
    first = plan(lst, target_bytes=1000)
    again = plan(listing(obj("part-1.parquet", 200), obj("part-2.parquet", 300)), target_bytes=1000)
    assert first.compaction_id is not None
    assert first.compaction_id == again.compaction_id
    assert first.input_bytes == 500
    assert [o.name for o in first.inputs] == ["part-1.parquet", "part-2.parquet"]
    changed = plan(listing(obj("part-1.parquet", 200), obj("part-2.parquet", 301)))
    assert changed.compaction_id != first.compaction_id


def test_compacted_partition_is_left_alone_and_a_lone_part_only_on_request() -> None:
    done = listing(obj(c.output_name(A, 0)), obj(c.output_name(A, 1)), obj(c.marker_name(A)))
    p = plan(done)
    assert not p.has_work
    assert p.reason == "already compact"
    lone = listing(obj("part-1.parquet"))
    assert not plan(lone).has_work
    assert plan(lone, rewrite_single_files=True).compaction_id is not None


def test_new_part_next_to_outputs_merges_everything_and_retires_the_old_marker() -> None:
    m = marker(A, [c.output_name(A, 0)], ["part-1.parquet"])
    lst = listing(obj(c.output_name(A, 0)), obj(c.marker_name(A)), obj("part-new.parquet"))
    p = plan(lst, {A: m})
    assert p.compaction_id is not None
    assert sorted(o.name for o in p.inputs) == sorted([c.output_name(A, 0), "part-new.parquet"])
    assert [o.name for o in p.dead_markers] == [c.marker_name(A)]


def test_interrupted_commit_is_finished_by_cleanup_only() -> None:
    m = marker(A, [c.output_name(A, 0)], ["part-1.parquet", "part-2.parquet"])
    lst = listing(obj("part-1.parquet"), obj("part-2.parquet"), obj(c.output_name(A, 0)), obj(c.marker_name(A)))
    p = plan(lst, {A: m})
    assert p.compaction_id is None
    assert p.reason == "cleanup only"
    assert sorted(o.name for o in p.cleanup) == ["part-1.parquet", "part-2.parquet"]
    assert p.dead_markers == ()


def test_orphans_are_removed_only_after_the_grace_period() -> None:
    young = obj(c.output_name(A, 0), age=timedelta(minutes=5))
    old = obj(c.output_name(B, 0), age=timedelta(hours=7))
    p = plan(listing(obj("part-1.parquet"), young, old), orphan_grace=timedelta(hours=6))
    assert [o.name for o in p.orphans] == [c.output_name(B, 0)]
    assert p.reason == "cleanup only"


def test_select_partitions_by_account_and_inclusive_dates() -> None:
    keys = [
        c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-19", "23"),
        c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-20", "00"),
        c.PartitionKey("segments", "112345678901", "us-east-1", "2026-11-20", "00"),
        c.PartitionKey("segments", "012345678901", "us-east-1", "2026-11-21", "00"),
    ]
    chosen = c.select_partitions(keys, ["012345678901"], date(2026, 11, 20), date(2026, 11, 20))
    assert chosen == [keys[1]]
    assert c.select_partitions(keys) == keys
    # hot partitions (hour not yet ended by the cut-off) wait for a later run
    settled = c.select_partitions(keys, settled_before=datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    assert settled == keys[:3]


# ----------------------------------------------------------------------------- rows


def _segments(rows: list[tuple[str, str, int, str]]) -> pa.Table:
    return pa.table(
        {
            "trace_id": [r[0] for r in rows],
            "segment_id": [r[1] for r in rows],
            "collected_at": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
            "envelope_id": [r[3] for r in rows],
        }
    )


def test_dedupe_keeps_the_latest_collected_at_per_key_sorted_by_key() -> None:
    table = _segments(
        [
            ("t2", "s1", 5, "e1"),
            ("t1", "s1", 1, "e1"),
            ("t1", "s1", 3, "e2"),  # latest of (t1, s1)
            ("t1", "s2", 1, "e1"),
            ("t2", "s1", 9, "e3"),  # latest of (t2, s1)
            ("t1", "s1", 2, "e3"),
        ]
    )
    out, removed = c.dedupe(table, c.DEDUP_KEYS["segments"])
    assert removed == 3
    assert out.select(["trace_id", "segment_id", "envelope_id"]).to_pylist() == [
        {"trace_id": "t1", "segment_id": "s1", "envelope_id": "e2"},
        {"trace_id": "t1", "segment_id": "s2", "envelope_id": "e1"},
        {"trace_id": "t2", "segment_id": "s1", "envelope_id": "e3"},
    ]


def test_dedupe_traces_key_skips_the_partition_column_and_breaks_ties_deterministically() -> None:
    table = pa.table(
        {
            "trace_id": ["t1", "t1", "t2"],
            "collected_at": pa.array([7, 7, 1], pa.timestamp("us", tz="UTC")),
            "envelope_id": ["e1", "e9", "e1"],
        }
    )
    out, removed = c.dedupe(table, c.DEDUP_KEYS["traces"])  # account_id lives in the path
    assert removed == 1
    assert out.column("envelope_id").to_pylist() == ["e9", "e1"]
    empty, none = c.dedupe(table.slice(0, 0), c.DEDUP_KEYS["traces"])
    assert (empty.num_rows, none) == (0, 0)
    with pytest.raises(ValueError, match="key columns"):
        c.dedupe(pa.table({"x": [1]}), c.DEDUP_KEYS["segments"])


def test_output_slices_cover_all_rows_with_files_near_the_target() -> None:
    # 1000 input rows in 10 MB: 10 kB per row; target 1 MB → 100 rows per file
    slices = c.output_slices(950, 1000, 10_000_000, 1_000_000)
    assert len(slices) == 10
    assert sum(length for _, length in slices) == 950
    assert [offset for offset, _ in slices] == sorted(offset for offset, _ in slices)
    assert c.output_slices(10, 10, 100, 1_000_000) == [(0, 10)]
    assert c.output_slices(0, 10, 100, 1000) == []
