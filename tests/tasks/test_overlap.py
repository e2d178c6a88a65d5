"""The overlap ledger: which listed traces a sweep may skip, and what a sweep holds until it sends (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tasks.overlap import MAX_ENTRIES, SentLedger, Unsent, trace_bytes

T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def test_only_the_same_revision_is_skipped() -> None:
    ledger = SentLedger().record({"a": 1, "b": 2}, T0)
    listed = [
        {"Id": "a", "Revision": 1},  # unchanged
        {"Id": "b", "Revision": 3},  # gained segments since: fetch
        {"Id": "c", "Revision": 1},  # new
        {"Id": "a2"},  # no revision: never skipped on missing evidence
    ]
    assert ledger.unchanged(listed) == {"a"}


def test_a_summary_without_a_usable_revision_is_always_fetched() -> None:
    ledger = SentLedger().record({"a": 1}, T0)
    assert ledger.unchanged([{"Id": "a", "Revision": "1"}, {"Id": "a", "Revision": True}, {"Id": "a"}]) == set()


def test_prune_keeps_what_the_next_sweep_can_list_again() -> None:
    ledger = SentLedger().record({"old": 1}, T0).record({"new": 1}, T0 + timedelta(minutes=5))
    # the next sweep starts at watermark - overlap = T0: a window that ended at T0 cannot come back
    pruned = ledger.prune(T0)
    assert set(pruned.entries) == {"new"}
    assert ledger.prune(T0 - timedelta(seconds=1)) is ledger


def test_json_round_trip_and_garbage_is_an_empty_ledger() -> None:
    ledger = SentLedger().record({"a": 4}, T0)
    assert SentLedger.from_json(ledger.to_json()).entries == ledger.entries
    assert len(SentLedger.from_json(None)) == 0
    assert len(SentLedger.from_json({"a": "x", "b": [1], "c": [True, 2.0], 5: [1, 2]})) == 0


def test_the_ledger_is_bounded_and_keeps_the_newest() -> None:
    many = {f"t{i}": 1 for i in range(MAX_ENTRIES + 10)}
    ledger = SentLedger().record(many, T0).record({"latest": 1}, T0 + timedelta(minutes=1))
    pruned = ledger.prune(T0 - timedelta(hours=1))
    assert len(pruned) == MAX_ENTRIES
    assert "latest" in pruned.entries


def trace(trace_id: str, document_bytes: int = 100) -> dict[str, object]:
    return {"Id": trace_id, "Segments": [{"Id": "s", "Document": "x" * document_bytes}]}


def test_unsent_sends_at_the_last_window_past_its_limit_or_when_nothing_waits() -> None:
    unsent = Unsent()
    assert not unsent.due(last=True)  # no window yet: nothing to send or advance
    unsent.add(T0, T0 + timedelta(minutes=5), [], {})
    assert unsent.due(last=False)  # nothing held: only the watermark moves, as before
    unsent = Unsent()
    unsent.add(T0, T0 + timedelta(minutes=5), [trace("a", 1000)], {"a": 1})
    assert not unsent.due(last=False)
    assert unsent.due(last=True)
    assert unsent.due(last=False, limit=trace_bytes(trace("a", 1000)))
    assert trace_bytes(trace("a", 1000)) > 1000


def test_unsent_spans_its_windows_and_refuses_a_gap() -> None:
    unsent = Unsent()
    hour = T0 + timedelta(hours=1)
    unsent.add(hour - timedelta(minutes=5), hour, [trace("a")], {"a": 1})
    unsent.add(hour, hour + timedelta(minutes=5), [trace("b"), trace("c")], {"b": 2, "c": 1})
    assert unsent.span() == (hour - timedelta(minutes=5), hour + timedelta(minutes=5))
    assert [t["Id"] for t in unsent.traces] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="contiguous"):
        unsent.add(hour + timedelta(minutes=6), hour + timedelta(minutes=7), [], {})
    with pytest.raises(ValueError, match="nothing held"):
        Unsent().span()


def test_unsent_records_only_what_was_sent_each_with_its_own_window() -> None:
    unsent = Unsent()
    first_end = T0 + timedelta(minutes=5)
    unsent.add(T0, first_end, [trace("a"), trace("bad")], {"a": 1, "bad": 1})
    unsent.add(first_end, T0 + timedelta(minutes=10), [trace("b")], {"b": 3})
    before = SentLedger().record({"old": 1}, T0 - timedelta(minutes=20)).record({"kept": 2}, T0 + timedelta(minutes=4))
    # the next sweep starts at the held range's end − overlap = T0 + 3 min: "old" cannot come back
    ledger = unsent.ledger(before, sent=["a", "b"], overlap=timedelta(minutes=7))  # "bad" was refused
    assert ledger.entries == {
        "kept": (2, (T0 + timedelta(minutes=4)).timestamp()),
        "a": (1, first_end.timestamp()),
        "b": (3, (T0 + timedelta(minutes=10)).timestamp()),
    }
    assert set(unsent.ledger(before, sent=[], overlap=timedelta(minutes=5)).entries) == set()
