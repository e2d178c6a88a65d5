"""The overlap ledger: which listed traces a sweep may skip (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tasks.overlap import MAX_ENTRIES, SentLedger

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
