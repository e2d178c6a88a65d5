"""Sweep watermarks per (account, region), kept in S3 next to the archive.

A watermark only moves forward and only after every envelope of its windows was accepted by SQS.
Two sweeps at once cannot move it backwards: the update is a conditional write (If-Match on the
ETag read, If-None-Match for the first one), supported by S3 since 2024 and by the moto server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from blocks import ArchiveStore
from tasks.errors import TransientError, aws_error_code, classify_aws_error
from tasks.overlap import SentLedger

DEFAULT_LAG = timedelta(minutes=2)
DEFAULT_OVERLAP = timedelta(minutes=5)
DEFAULT_FIRST_LOOKBACK = timedelta(hours=1)
# An idle sweep (nothing sent, same reader) leaves a watermark younger than this where it is.
IDLE_WRITE_INTERVAL = timedelta(minutes=15)


@dataclass(frozen=True)
class Watermark:
    account_id: str
    region: str
    high_water: datetime | None
    etag: str | None = None
    sent: SentLedger = field(default_factory=SentLedger)  # (trace id, revision) sent in the overlap
    reader: str | None = None  # the reader that took it there (xray | spans | both)


def watermark_key(store: ArchiveStore, account_id: str, region: str) -> str:
    return f"{store.state_prefix}/watermarks/account_id={account_id}/region={region}.json"


def sweep_range(
    high_water: datetime | None,
    now: datetime,
    lag: timedelta = DEFAULT_LAG,
    overlap: timedelta = DEFAULT_OVERLAP,
    first_lookback: timedelta = DEFAULT_FIRST_LOOKBACK,
) -> tuple[datetime, datetime] | None:
    """The [start, end) a sweep covers: from the watermark minus overlap to now minus lag.

    Ending `lag` before now and overlapping the previous range picks up late and in-progress
    traces again; idempotent ids make the overlap free. None when there is nothing to do yet.
    """
    if lag < timedelta(0) or overlap < timedelta(0):
        raise ValueError("lag and overlap must not be negative")
    end = now - lag
    start = (high_water - overlap) if high_water else (end - first_lookback)
    if start >= end:
        return None
    return start, end


def worth_writing(
    current: Watermark,
    new_high_water: datetime,
    *,
    sent_anything: bool,
    reader: str | None,
    interval: timedelta = IDLE_WRITE_INTERVAL,
) -> bool:
    """Whether a sweep writes its watermark. An idle sweep (it sent nothing and kept its reader)
    moves a watermark younger than `interval` only in memory: the next sweep lists those idle
    minutes again (one longer GetTraceSummaries range, nothing to fetch), and an organization of
    1,000 mostly idle accounts saves two of every three watermark writes (S3 PUTs) per sweep."""
    if sent_anything or current.high_water is None or (reader is not None and reader != current.reader):
        return True
    return new_high_water - current.high_water >= interval


def read(s3: Any, store: ArchiveStore, account_id: str, region: str) -> Watermark:
    key = watermark_key(store, account_id, region)
    try:
        obj = s3.get_object(Bucket=store.bucket, Key=key)
    except Exception as error:
        if aws_error_code(error) in {"NoSuchKey", "404"}:
            return Watermark(account_id, region, None, None)
        raise classify_aws_error(error, f"read watermark {key}") from error
    data = orjson.loads(obj["Body"].read())
    return Watermark(
        account_id,
        region,
        datetime.fromisoformat(data["high_water"]),
        obj["ETag"],
        SentLedger.from_json(data.get("sent")),
        data.get("reader"),
    )


def advance(
    s3: Any,
    store: ArchiveStore,
    current: Watermark,
    new_high_water: datetime,
    run_id: str = "",
    attempts: int = 5,
    sent: SentLedger | None = None,
    reader: str | None = None,
) -> Watermark:
    """Move the watermark to `new_high_water` unless someone already moved it further.

    `sent`: the ledger to store with it (default: the current one). A ledger lost to a
    concurrent sweep only costs duplicate fetches of its traces."""
    key = watermark_key(store, current.account_id, current.region)
    ledger = current.sent if sent is None else sent
    chosen = reader if reader is not None else current.reader
    for _ in range(attempts):
        if current.high_water and current.high_water >= new_high_water:
            return current  # never backwards
        body = orjson.dumps(
            {
                "account_id": current.account_id,
                "region": current.region,
                "high_water": new_high_water.astimezone(UTC).isoformat(),
                "updated_at": datetime.now(UTC).isoformat(),
                "run_id": run_id,
                "sent": ledger.to_json(),
                **({"reader": chosen} if chosen else {}),
            }
        )
        condition = {"IfMatch": current.etag} if current.etag else {"IfNoneMatch": "*"}
        try:
            response = s3.put_object(
                Bucket=store.bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
        except Exception as error:
            if aws_error_code(error) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                current = read(s3, store, current.account_id, current.region)
                continue
            raise classify_aws_error(error, f"write watermark {key}") from error
        return Watermark(current.account_id, current.region, new_high_water, response["ETag"], ledger, chosen)
    raise TransientError(f"watermark {key} kept changing under us ({attempts} attempts)")
