"""When a trace happened, by one rule, for every sink (pure, no I/O).

The envelope packer, the raw archive key, the claim-check key, the transform (Parquet partition
and daily index), reconcile and replay all ask this module, so a trace lands in the same hour
everywhere. The anchor second of a trace is the first that applies of:

1. the epoch in its id (`1-<8 hex epoch>-<24 hex>`, or the same digits of a W3C 32-hex id) when it
   is *credible*: within `ID_EPOCH_BEFORE` before and `ID_EPOCH_AFTER` after the collection time.
   X-Ray keeps traces 30 days, so every id an X-Ray read returns qualifies without parsing a
   document. (A W3C id from an OpenTelemetry SDK is random: its first 8 hex digits fall in that
   span by chance about once in 1,700 ids);
2. the id epoch when it agrees with the earliest segment start within `ID_AGREES_WITHIN` (an
   imported file of old traces);
3. the earliest plausible `start_time` of its (sub)segments;
4. the id epoch when it is plausible and not in the future (an old trace with no usable times);
5. the collection time.

The id epoch is preferred because it never changes between re-collections of a growing trace;
every rule is deterministic for the same trace content and collection time (a replay keeps both,
so it lands where the original did).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tasks.ids import trace_id_problem

MIN_EPOCH = 946684800  # 2000-01-01: X-Ray started in 2016
MAX_EPOCH = 4102444800  # 2100-01-01, inside OpenSearch's date_nanos range
ID_EPOCH_BEFORE = timedelta(days=31)  # X-Ray retention (30 days) plus a day
ID_EPOCH_AFTER = timedelta(hours=1)  # clock skew between a member account and the collector
ID_AGREES_WITHIN = 86400  # seconds between an id epoch and the segments' start that still agree
MAX_DEPTH = 64  # same cut as the transform's subsegment walk
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class Partition:
    """The UTC hour a trace belongs to, in the spellings each sink uses."""

    second: int  # the first second of the hour

    @classmethod
    def of(cls, second: int) -> Partition:
        """The partition holding epoch second `second`."""
        return cls(second - second % 3600)

    @property
    def start(self) -> datetime:
        """The partition hour as an aware datetime."""
        return datetime.fromtimestamp(self.second, UTC)

    @property
    def dt(self) -> str:
        """`YYYY-MM-DD`: the archive's `dt=` partition."""
        return _spellings(self.second)[0]

    @property
    def hour(self) -> str:
        """`HH`: the archive's `hour=` partition."""
        return _spellings(self.second)[1]

    @property
    def day(self) -> str:
        """`YYYY.MM.DD`: the daily index suffix (`<prefix>-traces-YYYY.MM.DD`)."""
        return _spellings(self.second)[2]

    @property
    def hour_iso(self) -> str:
        """`YYYY-MM-DDTHH:00:00.000Z`: the trace document's `partition_hour` (same form as its other dates)."""
        return _spellings(self.second)[3]


# Hour → its spellings: every trace asks for all four, and a consumer sees few distinct hours.
_SPELLINGS: dict[int, tuple[str, str, str, str]] = {}


def hour_spellings(second: int) -> tuple[str, str, str, str]:
    """(`dt`, `hour`, `day`, `hour_iso`) of the partition holding epoch second `second`, as
    `Partition.of(second)` spells them, without building the Partition (the transform's path)."""
    return _SPELLINGS.get(second - second % 3600) or _spellings(second - second % 3600)


def _spellings(second: int) -> tuple[str, str, str, str]:
    found = _SPELLINGS.get(second)
    if found is None:
        moment = time.gmtime(second)
        found = (
            time.strftime("%Y-%m-%d", moment),
            time.strftime("%H", moment),
            time.strftime("%Y.%m.%d", moment),
            time.strftime("%Y-%m-%dT%H:00:00.000Z", moment),
        )
        if len(_SPELLINGS) >= 4096:  # ~170 days of hours
            _SPELLINGS.clear()
        _SPELLINGS[second] = found
    return found


def id_epoch(trace_id: Any) -> int | None:
    """The epoch second written in an X-Ray (`1-<8 hex>-<24 hex>`) or W3C (32 hex) trace id, if
    it has that shape and the second is plausible at all (2000–2100); None otherwise."""
    if trace_id_problem(trace_id) is not None:
        return None
    epoch = int(trace_id[2:10] if len(trace_id) == 35 else trace_id[:8], 16)
    return epoch if MIN_EPOCH <= epoch < MAX_EPOCH else None


def credible_id_epoch(trace_id: Any, collected_at: datetime) -> int | None:
    """`id_epoch` when it lies within the span X-Ray could have returned it at `collected_at`."""
    return _credible(id_epoch(trace_id), collected_at.timestamp())


_BEFORE_SECONDS = ID_EPOCH_BEFORE.total_seconds()
_AFTER_SECONDS = ID_EPOCH_AFTER.total_seconds()


def _credible(epoch: int | None, collected: float) -> int | None:
    if epoch is None:
        return None
    return epoch if collected - _BEFORE_SECONDS <= epoch <= collected + _AFTER_SECONDS else None


def epoch_us(value: Any) -> int | None:
    """X-Ray time (float seconds; numeric string; ISO string) → epoch µs, None when invalid or
    outside 2000–2100."""
    kind = type(value)
    if kind is float or kind is int:
        seconds = float(value) if kind is float else (float(value) if -_INT64 < value < _INT64 else -1.0)
    elif kind is str:
        try:
            seconds = float(value)
        except ValueError:
            seconds = _iso_seconds(value)
    elif isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    else:
        return None
    if MIN_EPOCH <= seconds < MAX_EPOCH:  # NaN fails both comparisons
        return round(seconds * 1_000_000)
    return None


def _iso_seconds(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return -1.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def span_start_us(record: Any) -> int | None:
    """A span record's `startTimeUnixNano` (a number or a numeric string) → epoch µs, None when
    absent, invalid or outside 2000–2100."""
    raw = record.get("startTimeUnixNano") if isinstance(record, dict) else None
    if type(raw) is str and raw.isdigit():
        raw = int(raw)
    if type(raw) is not int:
        return None
    start_us = raw // 1000
    return start_us if MIN_EPOCH * 1_000_000 <= start_us < MAX_EPOCH * 1_000_000 else None


def _span_starts(spans: list[Any]) -> Iterator[int]:
    """The usable starts of a span-form trace's records (JSON strings, as `aws/spans` holds them)."""
    for record in spans:
        if isinstance(record, str):
            try:
                record = orjson.loads(record)
            except orjson.JSONDecodeError:
                continue
        start = span_start_us(record)
        if start is not None:
            yield start


def _documents(trace: dict[str, Any]) -> Iterator[dict[str, Any]]:
    segments = trace.get("Segments")
    if type(segments) is not list:
        return
    for wrapper in segments:
        if not isinstance(wrapper, dict):
            continue
        document = wrapper.get("Document")
        if isinstance(document, str):
            try:
                document = orjson.loads(document)
            except orjson.JSONDecodeError:
                continue
        if isinstance(document, dict):
            yield document


def earliest_start_us(trace: dict[str, Any], documents: Iterable[dict[str, Any]] | None = None) -> int | None:
    """The earliest plausible `start_time` among a trace's segments and subsegments (µs).

    `documents`: the trace's segment documents already parsed (the transform has them), in
    place of parsing `trace`'s Document strings again. A span-form trace (`Spans`, the records
    of `aws/spans`) counts its records' `startTimeUnixNano` instead."""
    earliest: int | None = None
    spans = trace.get("Spans")
    if documents is None and type(spans) is list:  # the span form (xraylake.spans.v1): same rule
        return min(_span_starts(spans), default=None)
    roots = _documents(trace) if documents is None else documents
    stack: list[tuple[dict[str, Any], int]] = [(d, 0) for d in roots]
    while stack:
        node, depth = stack.pop()
        start = epoch_us(node.get("start_time"))
        if start is not None and (earliest is None or start < earliest):
            earliest = start
        children = node.get("subsegments")
        if type(children) is list and depth < MAX_DEPTH:
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict))
    return earliest


_UNKNOWN = -1


def anchor_second(
    trace: dict[str, Any],
    collected_at: datetime,
    documents: Iterable[dict[str, Any]] | None = None,
    earliest_us: int | None = _UNKNOWN,
) -> int:
    """The second a trace is filed under (the rule in the module docstring); `documents` as for
    `earliest_start_us`; `earliest_us`: what `earliest_start_us` returns for this trace, when the
    caller already walked every (sub)segment (the transform does: this spares a second walk of
    every trace whose id epoch is not credible, e.g. imported or backfilled old documents)."""
    epoch = id_epoch(trace.get("Id"))
    collected_s = collected_at.timestamp()
    credible = _credible(epoch, collected_s)
    if credible is not None:
        return credible
    start_us = earliest_start_us(trace, documents) if earliest_us == _UNKNOWN else earliest_us
    return anchor_without_credible_id(epoch, start_us, collected_s)


def credible_window(collected_s: float) -> tuple[float, float]:
    """Rule 1 as bounds: an `id_epoch` is credible when `low <= epoch <= high` for the collection
    time `collected_s` (epoch seconds). For a caller filing many traces of one collection time (the
    transform: two comparisons per trace instead of a regex and a datetime call)."""
    return collected_s - _BEFORE_SECONDS, collected_s + _AFTER_SECONDS


def anchor_without_credible_id(epoch: int | None, start_us: int | None, collected_s: float) -> int:
    """Rules 2-5, for a trace whose `id_epoch` is `epoch` and not credible (`credible_epoch` is
    None), whose earliest plausible start is `start_us` (`earliest_start_us`)."""
    if start_us is not None:
        start = start_us // 1_000_000
        return epoch if epoch is not None and abs(epoch - start) <= ID_AGREES_WITHIN else start
    collected = int(collected_s)
    if epoch is not None and epoch <= collected + _AFTER_SECONDS:
        return epoch
    return collected


def trace_partition(trace: dict[str, Any], collected_at: datetime) -> Partition:
    return Partition.of(anchor_second(trace, collected_at))


def hour_of(value: datetime) -> datetime:
    """The UTC hour containing `value`."""
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
