"""Replay from the raw archive: which partitions a range covers (pure) and re-sending envelopes.

The archive, not SQS (14-day retention), is the replay store. Re-sent envelopes keep their
envelope_id and collected_at, so versioned index writes never let an old replay overwrite newer data.
A replay's rate limit is `tasks.pacing.rate_limiter` (a token bucket whose batches may go into debt).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from blocks import ArchiveStore
from tasks import archive
from tasks.envelope import CHUNK_BYTES, Envelope, EnvelopeError, parse_envelope


@dataclass(frozen=True)
class RawPartition:
    account_id: str
    region: str
    hour: datetime

    @property
    def prefix(self) -> str:
        return f"{archive.partition_path(self.account_id, self.region, self.hour)}/"

    @property
    def label(self) -> str:
        return f"{self.account_id}/{self.region}/{self.hour:%Y-%m-%dT%H}"


def validate_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a time zone (e.g. 2026-11-20T00:00:00Z)")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise ValueError(f"empty range: end {end.isoformat()} is not after start {start.isoformat()}")
    return start, end


def partitions(accounts: list[tuple[str, list[str]]], start: datetime, end: datetime) -> list[RawPartition]:
    """Every (account, region, hour) partition whose hour overlaps [start, end)."""
    first = start.replace(minute=0, second=0, microsecond=0)
    hours: list[datetime] = []
    hour = first
    while hour < end:
        hours.append(hour)
        hour += timedelta(hours=1)
    return [RawPartition(a, r, h) for a, regions in accounts for r in regions for h in hours]


def list_partition(s3: Any, store: ArchiveStore, partition: RawPartition) -> list[str]:
    return [
        o["Key"]
        for o in archive.list_keys(s3, store.bucket, f"{store.raw_prefix}/{partition.prefix}")
        if o["Key"].endswith(".json.gz")
    ]


# What an archived object that cannot be read back as an envelope raises once it is read from S3:
# a corrupt or truncated gzip (gzip.BadGzipFile is an OSError, EOFError, zlib.error), not JSON or
# not an envelope (EnvelopeError). S3's own errors are classified (tasks.errors) and still raise.
UNREADABLE_ERRORS: tuple[type[BaseException], ...] = (EnvelopeError, OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Unreadable:
    """An archived object that is not a readable envelope: the key and why (one line)."""

    key: str
    error: str

    def __str__(self) -> str:
        return f"unreadable {self.key}: {self.error}"


def decode_raw(stored: bytes) -> tuple[Envelope, bytes]:
    """A raw archive object's bytes → (envelope, canonical JSON bytes)."""
    raw = gzip.decompress(stored)
    return parse_envelope(raw), raw


def iter_chunks(
    s3: Any,
    store: ArchiveStore,
    keys: list[str],
    chunk_bytes: int = CHUNK_BYTES,
    unreadable: list[Unreadable] | None = None,
) -> Iterator[list[tuple[Envelope, bytes]]]:
    """The archived envelopes under `keys`, parsed, in chunks of about `chunk_bytes` of JSON: a
    replay's memory follows the chunk, not the partition (an hour of a busy account).

    With `unreadable`, an object that is not a readable envelope is skipped and recorded there (the
    others still come); without it, it raises."""
    chunk: list[tuple[Envelope, bytes]] = []
    size = 0
    for key in keys:
        stored = archive.get_stored(s3, store.bucket, key)
        try:
            item = decode_raw(stored)
        except UNREADABLE_ERRORS as error:
            if unreadable is None:
                raise
            unreadable.append(Unreadable(key, f"{type(error).__name__}: {' '.join(str(error).split())[:100]}"))
            continue
        chunk.append(item)
        size += len(item[1])
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
