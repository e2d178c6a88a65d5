"""Compaction on the sandbox: real consumer-written Parquet on the moto S3 server, flow under Prefect."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import boto3
import pytest
from prefect.states import State

from blocks.config import Config
from flows.compact import compact
from tasks import archive, compaction, lake
from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches, make_trace

pytestmark = pytest.mark.usefixtures("prefect_harness")

COLLECTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def objects(config: Config, prefix: str = "parquet/") -> dict[str, tuple[str, int]]:
    """key → (ETag, size) of every object under the prefix."""
    return {
        o["Key"]: (o["ETag"], o["Size"]) for o in archive.list_keys(boto3.client("s3"), config.archive.bucket, prefix)
    }


def result_data(state: State) -> dict[str, Any]:
    return cast(dict[str, Any], state.result())


def segment_rows(config: Config) -> list[dict[str, object]]:
    frame = lake.query(config, "SELECT account_id, trace_id, segment_id, collected_at, envelope_id FROM segments")
    return frame.to_dict("records")  # type: ignore[return-value]


def seed_duplicates(config: Config) -> dict[str, object]:
    """Two partitions of small files; traces 2 and 3 of account 0 collected twice (a newer copy)."""
    a0, a1 = (a.account_id for a in config.roster.accounts[:2])
    traces0 = [make_trace(a0, f"t{i}", HOUR_START + timedelta(minutes=i), segments=2) for i in range(8)]
    traces1 = [make_trace(a1, f"u{i}", HOUR_START + timedelta(hours=1, minutes=i)) for i in range(4)]
    first = envelope(config, traces0[0:4], 0, COLLECTED)
    newer = envelope(config, traces0[2:6], 0, COLLECTED + timedelta(minutes=5))  # re-collected 2, 3
    ingest_batches(
        config,
        [
            [first, envelope(config, traces1[0:2], 1, COLLECTED)],
            [newer],
            [envelope(config, traces0[6:8], 0, COLLECTED), envelope(config, traces1[2:4], 1, COLLECTED)],
        ],
    )
    return {"traces0": traces0, "traces1": traces1, "newer": newer}


def test_compaction_merges_small_files_drops_duplicates_and_is_idempotent(
    fresh_config: Config, config_file: str
) -> None:
    seeded = seed_duplicates(fresh_config)
    before_rows = segment_rows(fresh_config)
    keys = {(r["trace_id"], r["segment_id"]) for r in before_rows}
    assert len(before_rows) == len(keys) + 4  # traces 2 and 3: two segments each, twice
    before_files = [k for k in objects(fresh_config) if k.endswith(".parquet")]
    assert len(before_files) == 10  # 3 + 2 parts per table

    dry = result_data(compact(dry_run=True, config_path=config_file, return_state=True))
    assert dry["totals"] == {"partitions_scanned": 4, "partitions_with_work": 4}
    assert [k for k in objects(fresh_config) if k.endswith(".parquet")] == before_files  # nothing changed

    state = compact(config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    totals = result_data(state)["totals"]
    assert totals["partitions_compacted"] == 4
    assert totals["duplicates_removed"] == 4 + 2  # segments + traces
    assert (totals["files_before"], totals["files_after"]) == (10, 4)

    after_rows = segment_rows(fresh_config)
    assert {(r["trace_id"], r["segment_id"]) for r in after_rows} == keys
    assert len(after_rows) == len(keys)
    newer = seeded["newer"]
    redone = {t["Id"] for t in newer.traces} & {t["Id"] for t in seeded["traces0"][0:4]}  # type: ignore[attr-defined,index]
    for row in after_rows:
        if row["trace_id"] in redone:
            assert row["envelope_id"] == newer.envelope_id  # type: ignore[attr-defined]
            assert row["collected_at"].to_pydatetime() == newer.collected_at  # type: ignore[attr-defined]
    traces = lake.query(
        fresh_config,
        "SELECT account_id, count(*) AS n, count(DISTINCT trace_id) AS d FROM traces GROUP BY 1 ORDER BY 1",
    ).to_dict("records")
    assert [(r["n"], r["d"]) for r in traces] == [(8, 8), (4, 4)]
    assert all(r["account_id"].startswith("0") for r in traces)
    # Readers unaware of the protocol see the same rows once the inputs are gone.
    naive = archive.parquet_dataset(fresh_config.archive, "segments", fresh_config.aws_endpoint_url)
    assert naive.count_rows() == len(keys)

    snapshot = objects(fresh_config)
    assert sum(k.endswith(".parquet") for k in snapshot) == 4
    assert sum("/_compaction-" in k for k in snapshot) == 4

    again = compact(config_path=config_file, return_state=True)
    assert again.is_completed()
    assert result_data(again)["totals"]["partitions_compacted"] == 0
    assert objects(fresh_config) == snapshot  # same keys, same bytes


def test_readers_see_old_or_new_files_never_both_and_new_consumer_files_are_kept(
    fresh_config: Config,
) -> None:
    account = fresh_config.roster.accounts[0].account_id
    traces = [make_trace(account, f"r{i}", HOUR_START + timedelta(minutes=i), segments=3) for i in range(6)]
    ingest_batches(
        fresh_config,
        [
            [envelope(fresh_config, traces[0:3], 0, COLLECTED)],
            [envelope(fresh_config, traces[2:5], 0, COLLECTED + timedelta(minutes=1))],
        ],
    )
    s3 = boto3.client("s3")
    store = fresh_config.archive
    plans = [p for p in compaction.plan(s3, store, ["segments"], target_bytes=4000) if p.compaction_id]
    assert len(plans) == 1
    planned = plans[0]

    # The consumer writes a new file after the plan was made.
    ingest_batches(fresh_config, [[envelope(fresh_config, traces[5:6], 0, COLLECTED)]])
    old_rows = len(segment_rows(fresh_config))
    assert old_rows == 6 * 3 + 3  # trace 2 twice

    marker, result = compaction.write_outputs(s3, store, planned)
    assert len(result.outputs) > 1  # small target: several output files, committed together
    assert len(segment_rows(fresh_config)) == old_rows  # uncommitted outputs are invisible

    compaction.commit(s3, store, planned, marker)
    rows = segment_rows(fresh_config)
    assert len(rows) == 6 * 3  # outputs visible, replaced inputs hidden, the new file kept
    assert len({(r["trace_id"], r["segment_id"]) for r in rows}) == 6 * 3

    compaction.cleanup(s3, store, planned, committed=True)
    assert len(segment_rows(fresh_config)) == 6 * 3
    names = {k.rsplit("/", 1)[-1] for k in objects(fresh_config, "parquet/segments/")}
    assert not {o.name for o in planned.inputs} & names
    assert set(result.outputs) <= names
    assert sum(n.startswith("part-") for n in names) == 1  # the consumer's late file

    # The next run merges the late file with the outputs and retires the first marker.
    follow = [p for p in compaction.plan(s3, store, ["segments"]) if p.has_work]
    assert len(follow) == 1
    assert compaction.execute(s3, store, follow[0]).status == "compacted"
    names = {k.rsplit("/", 1)[-1] for k in objects(fresh_config, "parquet/segments/")}
    assert len([n for n in names if n.endswith(".parquet")]) == 1
    assert [n for n in names if n.startswith("_compaction-")] == [f"_compaction-{follow[0].compaction_id}.json"]
    assert len(segment_rows(fresh_config)) == 6 * 3


def test_bad_parameters_fail_before_any_work(fresh_config: Config, config_file: str) -> None:
    with pytest.raises(ValueError, match="before start_date"):
        compact(start_date=date(2026, 11, 2), end_date=date(2026, 11, 1), config_path=config_file)
    with pytest.raises(ValueError, match="not in the roster"):
        compact(accounts=["999999999999"], config_path=config_file)
    with pytest.raises(ValueError, match="target_file_mb"):
        compact(target_file_mb=0, config_path=config_file)
    with pytest.raises(ValueError, match="'traces' or 'segments'"):  # CompactParameters.tables
        compact(tables=["spans"], config_path=config_file)  # type: ignore[list-item]
    assert objects(fresh_config) == {}
