"""The one trace-time rule (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tasks import tracetime

COLLECTED = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
START = datetime(2026, 11, 30, 10, 59, 58, tzinfo=UTC).timestamp()


def trace(trace_id: Any, start: Any = START, sub_start: Any = None) -> dict[str, Any]:
    document: dict[str, Any] = {"id": "a" * 16, "trace_id": trace_id, "name": "svc", "start_time": start}
    if sub_start is not None:
        document["subsegments"] = [{"id": "b" * 16, "name": "db", "start_time": sub_start}]
    return {"Id": trace_id, "Segments": [{"Id": "a" * 16, "Document": orjson.dumps(document).decode()}]}


def xray_id(epoch: int) -> str:
    return f"1-{epoch:08x}-{'c' * 24}"


def test_id_epoch_reads_xray_and_w3c_ids_and_refuses_the_rest() -> None:
    epoch = int(START)
    assert tracetime.id_epoch(xray_id(epoch)) == epoch
    assert tracetime.id_epoch(f"{epoch:08x}{'d' * 24}") == epoch  # W3C: the same digits
    for bad in ("", "garbage", "1-zzzzzzzz-000000000000000000000000", "../../../etc", 7, None, ["x"]):
        assert tracetime.id_epoch(bad) is None
    assert tracetime.id_epoch(xray_id(0)) is None  # 1970: implausible
    assert tracetime.id_epoch(xray_id(0xFFFFFFFF)) is None  # 2106: implausible


def test_a_credible_id_wins_without_reading_a_document() -> None:
    epoch = int(START) - 3600  # an hour before the segments say: the id is still the anchor
    odd = {"Id": xray_id(epoch), "Segments": [{"Id": "x", "Document": "not json"}]}
    assert tracetime.anchor_second(odd, COLLECTED) == epoch


@pytest.mark.parametrize(
    "trace_id",
    [
        xray_id(0),  # epoch 0
        xray_id(0xF0000000),  # 2097: in the future
        "1-zzzzzzzz-000000000000000000000000",  # malformed
        "4bf92f3577b34da6a3ce929d0e0e4736",  # W3C, random: 2010 by its digits, not credible
    ],
)
def test_ids_without_a_credible_time_fall_back_to_the_earliest_segment_start(trace_id: str) -> None:
    earliest = START - 5  # a subsegment that started before its parent (clock skew)
    partition = tracetime.trace_partition(trace(trace_id, sub_start=earliest), COLLECTED)
    assert partition.start == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert (partition.dt, partition.hour, partition.day) == ("2026-11-30", "10", "2026.11.30")
    assert partition.hour_iso == "2026-11-30T10:00:00.000Z"


def test_an_old_imported_trace_keeps_its_id_time_when_its_segments_agree() -> None:
    old = datetime(2017, 7, 8, 0, 23, 31, tzinfo=UTC).timestamp()
    agreeing = trace(xray_id(int(old)), start=old + 0.4)
    assert tracetime.anchor_second(agreeing, COLLECTED) == int(old)
    timeless = trace(xray_id(int(old)), start="never")
    assert tracetime.anchor_second(timeless, COLLECTED) == int(old)  # no usable time: the id's


def test_nothing_usable_falls_back_to_the_collection_time() -> None:
    assert tracetime.anchor_second(trace("garbage", start=None), COLLECTED) == int(COLLECTED.timestamp())
    assert tracetime.anchor_second({"Id": xray_id(0)}, COLLECTED) == int(COLLECTED.timestamp())
    assert tracetime.anchor_second({}, COLLECTED) == int(COLLECTED.timestamp())


def test_times_given_as_strings_count_like_numbers() -> None:
    iso = datetime.fromtimestamp(START, UTC).isoformat()
    assert tracetime.anchor_second(trace("garbage", start=iso), COLLECTED) == int(START)
    assert tracetime.anchor_second(trace("garbage", start=str(START)), COLLECTED) == int(START)


def test_credible_span_is_thirty_one_days_back_and_an_hour_ahead() -> None:
    inside = int((COLLECTED - timedelta(days=30)).timestamp())
    ahead = int((COLLECTED + timedelta(minutes=59)).timestamp())
    too_old = int((COLLECTED - timedelta(days=32)).timestamp())
    assert tracetime.credible_id_epoch(xray_id(inside), COLLECTED) == inside
    assert tracetime.credible_id_epoch(xray_id(ahead), COLLECTED) == ahead
    assert tracetime.credible_id_epoch(xray_id(too_old), COLLECTED) is None


def test_deep_or_cyclic_looking_documents_stay_bounded() -> None:
    node: dict[str, Any] = {"id": "z", "start_time": START}
    for _ in range(500):
        node = {"id": "z", "start_time": START + 10, "subsegments": [node]}
    deep = {"Id": "garbage", "Segments": [{"Id": "z", "Document": node}]}
    # Past MAX_DEPTH the walk stops, like the transform's: the deepest start is not seen.
    assert tracetime.anchor_second(deep, COLLECTED) == int(START + 10)


def test_partition_spellings_of_many_hours() -> None:
    """Every spelling agrees with strftime, however many hours were asked before (cached)."""
    import time

    from tasks.tracetime import Partition

    for second in range(1_700_000_000, 1_700_000_000 + 5000 * 3600, 3600):
        partition = Partition.of(second + 1234)
        moment = time.gmtime(second)
        assert partition.dt == time.strftime("%Y-%m-%d", moment)
        assert partition.hour == time.strftime("%H", moment)
        assert partition.day == time.strftime("%Y.%m.%d", moment)
        assert partition.hour_iso == time.strftime("%Y-%m-%dT%H:00:00.000Z", moment)
