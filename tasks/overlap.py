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

`Unsent` holds what a sweep fetched until it is sent: the traces of all its windows are packed
together (envelopes group traces by start hour), so a sweep that crosses an hour, or lists a late
revision of a trace that started in the previous hour, sends one envelope per hour touched rather
than one per (window, hour). It is sent at the end of the sweep, or earlier once it holds
`FLUSH_BYTES` (a catch-up over hours); the watermark and the ledger move only after that send.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MAX_ENTRIES = 200_000
FLUSH_BYTES = 2 * 1024 * 1024  # segment documents held per (account, region) before sending early


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


def trace_bytes(trace: Mapping[str, Any]) -> int:
    """About what a trace adds to an envelope: its segment documents (the bulk of it)."""
    segments = trace.get("Segments") or []
    return 64 + sum(len(s.get("Document") or "") + 32 for s in segments if isinstance(s, Mapping))


@dataclass
class Unsent:
    """A sweep's fetched traces, window by window, until they are sent (pure; see the module)."""

    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, int]] = field(default_factory=list)  # per window: fetched id → revision
    size: int = 0

    def add(
        self, start: datetime, end: datetime, traces: Iterable[dict[str, Any]], revisions: Mapping[str, int]
    ) -> None:
        """One window's traces (none for a window the X-Ray reader did not read)."""
        if self.windows and start != self.windows[-1][1]:
            raise ValueError(f"windows must be contiguous: {start.isoformat()} after {self.windows[-1][1].isoformat()}")
        self.windows.append((start, end))
        for trace in traces:
            self.traces.append(trace)
            self.size += trace_bytes(trace)
        self.revisions.append(dict(revisions))

    def due(self, last: bool, limit: int = FLUSH_BYTES) -> bool:
        """Send now: at the sweep's last window, once `limit` is reached, or when nothing waits
        (then only the watermark moves, window by window as before)."""
        return bool(self.windows) and (last or not self.traces or self.size >= limit)

    def span(self) -> tuple[datetime, datetime]:
        """The listing range the held traces were found in: each envelope's `window`."""
        if not self.windows:
            raise ValueError("nothing held")
        return self.windows[0][0], self.windows[-1][1]

    def ledger(self, ledger: SentLedger, sent: Iterable[str], overlap: timedelta) -> SentLedger:
        """`ledger` after the held traces with ids in `sent` were accepted by SQS (a refused id is
        never recorded), pruned for the sweep that would start at the held range's end − overlap."""
        sent_ids = set(sent)
        for (_, end), revisions in zip(self.windows, self.revisions, strict=True):
            ledger = ledger.record({i: r for i, r in revisions.items() if i in sent_ids}, end)
        return ledger.prune(self.span()[1] - overlap)
