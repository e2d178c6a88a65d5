"""What a sweep already sent in its overlap: (trace id, revision) pairs, so the next sweep fetches
only what changed (pure logic; the ledger is stored inside the watermark object).

A sweep re-reads `overlap` before its watermark so late and in-progress traces are not missed.
With the default overlap of one schedule interval that lists and fetches every trace twice.
X-Ray's `TraceSummary.Revision` grows whenever a trace gains or changes segments, so a listed
trace whose revision equals the one already sent has nothing new: it is skipped. A completion, a
late segment or a new trace changes or adds a revision and is fetched as before. A summary
without `Revision` is always fetched (never skip on missing evidence).

An entry is needed only while its trace can be listed again: a trace listed in a window ending
at `e` has its event time before `e`, and the next sweep starts at `watermark - overlap`, so
entries with `e <= watermark - overlap` are dropped. `MAX_ENTRIES` bounds the state even under a
burst; dropping an entry costs at most one duplicate fetch, never a lost trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class SentLedger:
    """trace id → (revision sent, end of the window it was listed in, epoch seconds)."""

    entries: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> SentLedger:
        """The `sent` member of a watermark object; anything unreadable is an empty ledger (the
        cost is one overlap of duplicate fetches, never a missed trace)."""
        if not isinstance(data, dict):
            return cls()
        entries: dict[str, tuple[int, float]] = {}
        for trace_id, value in data.items():
            if (
                isinstance(trace_id, str)
                and isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            ):
                entries[trace_id] = (int(value[0]), float(value[1]))
        return cls(entries)

    def to_json(self) -> dict[str, list[float]]:
        return {trace_id: [revision, seen] for trace_id, (revision, seen) in self.entries.items()}

    def __len__(self) -> int:
        return len(self.entries)

    def unchanged(self, summaries: Iterable[Mapping[str, Any]]) -> set[str]:
        """Ids of the listed traces whose revision equals the one already sent."""
        same = set()
        for summary in summaries:
            trace_id, revision = summary.get("Id"), revision_of(summary)
            if isinstance(trace_id, str) and revision is not None:
                sent = self.entries.get(trace_id)
                if sent is not None and sent[0] == revision:
                    same.add(trace_id)
        return same

    def record(self, revisions: Mapping[str, int], window_end: datetime) -> SentLedger:
        """The ledger after the traces of one window were accepted by SQS."""
        if not revisions:
            return self
        seen = window_end.timestamp()
        entries = dict(self.entries)
        for trace_id, revision in revisions.items():
            entries[trace_id] = (revision, seen)
        return SentLedger(entries)

    def prune(self, next_start: datetime) -> SentLedger:
        """Keep only the entries the sweep starting at `next_start` can list again."""
        floor = next_start.timestamp()
        kept = {trace_id: entry for trace_id, entry in self.entries.items() if entry[1] > floor}
        if len(kept) > MAX_ENTRIES:  # keep the newest
            newest = sorted(kept.items(), key=lambda item: item[1][1], reverse=True)[:MAX_ENTRIES]
            kept = dict(newest)
        if len(kept) == len(self.entries):
            return self
        return SentLedger(kept)


def revision_of(summary: Mapping[str, Any]) -> int | None:
    revision = summary.get("Revision")
    if isinstance(revision, bool) or not isinstance(revision, int):
        return None
    return revision
