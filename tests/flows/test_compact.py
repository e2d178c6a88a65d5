"""The compact flow on the sandbox: consumer-written Parquet committed to the Iceberg tables on the
moto S3 server, compacted under Prefect."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from prefect.states import State

from blocks.config import Config
from flows.compact import compact
from tasks import envelope as env
from tasks import lake
from tests.tasks.test_lake import HOUR_START, envelope, ingest_batches, make_trace

pytestmark = pytest.mark.usefixtures("prefect_harness")

COLLECTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


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

    dry = result_data(compact(dry_run=True, config_path=config_file, return_state=True))
    assert dry["totals"] == {"partitions_with_work": 4}
    assert len(segment_rows(fresh_config)) == len(before_rows)  # nothing changed

    state = compact(config_path=config_file, return_state=True)
    assert state.is_completed(), state.message
    totals = result_data(state)["totals"]
    assert totals["partitions_compacted"] == 4
    assert totals["duplicates_removed"] == 4 + 2  # segments + traces
    assert totals["files_after"] == 4

    after_rows = segment_rows(fresh_config)
    assert {(r["trace_id"], r["segment_id"]) for r in after_rows} == keys
    assert len(after_rows) == len(keys)
    newer = seeded["newer"]
    assert isinstance(newer, env.Envelope)
    kept = {r["trace_id"]: r["envelope_id"] for r in after_rows if r["trace_id"] in {t["Id"] for t in newer.traces}}
    assert set(kept.values()) == {newer.envelope_id}  # the newest collection won
    traces = lake.query(config_file_config(config_file), "SELECT trace_id, count(*) AS n FROM traces GROUP BY 1")
    assert set(traces["n"]) == {1}

    again = compact(config_path=config_file, return_state=True)
    assert again.is_completed()
    assert result_data(again)["totals"]["partitions_compacted"] == 0


def config_file_config(path: str) -> Config:
    from blocks.config import load_config

    return load_config(path)


def test_bad_parameters_fail_before_any_work(fresh_config: Config, config_file: str) -> None:
    with pytest.raises(ValueError, match="before start_date"):
        compact(start_date=date(2026, 11, 2), end_date=date(2026, 11, 1), config_path=config_file)
    with pytest.raises(ValueError, match="not in the roster"):
        compact(accounts=["999999999999"], config_path=config_file)
    with pytest.raises(ValueError, match="orphan_delay_minutes"):
        compact(orphan_delay_minutes=5, config_path=config_file)
    with pytest.raises(ValueError, match="'traces' or 'segments'"):  # CompactParameters.tables
        compact(tables=["spans"], config_path=config_file)  # type: ignore[list-item]
