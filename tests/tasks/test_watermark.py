"""Watermarks: pure range planning, and conditional writes against the moto server's S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from blocks.config import Config
from tasks import watermark

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_first_sweep_looks_back_and_ends_lag_before_now() -> None:
    start, end = watermark.sweep_range(None, NOW, timedelta(minutes=2), timedelta(minutes=5), timedelta(hours=1))  # type: ignore[misc]
    assert end == NOW - timedelta(minutes=2)
    assert start == end - timedelta(hours=1)


def test_next_sweep_overlaps_the_previous_one() -> None:
    span = watermark.sweep_range(NOW - timedelta(minutes=7), NOW, timedelta(minutes=2), timedelta(minutes=5))
    assert span == (NOW - timedelta(minutes=12), NOW - timedelta(minutes=2))


def test_nothing_to_do_when_watermark_is_ahead() -> None:
    assert watermark.sweep_range(NOW, NOW, timedelta(minutes=2), timedelta(0)) is None
    with pytest.raises(ValueError, match="negative"):
        watermark.sweep_range(None, NOW, timedelta(minutes=-1))


def test_advance_is_conditional_and_never_moves_backwards(fresh_config: Config) -> None:
    s3 = boto3.client("s3")
    store = fresh_config.archive
    first = watermark.read(s3, store, "012345678901", "us-east-1")
    assert first.high_water is None
    moved = watermark.advance(s3, store, first, NOW)
    assert watermark.read(s3, store, "012345678901", "us-east-1").high_water == NOW
    # A second sweep that read the same (empty) state before the first one wrote: its
    # If-None-Match write fails, it re-reads, sees NOW and does not move it back.
    stale = watermark.advance(s3, store, first, NOW - timedelta(minutes=30))
    assert stale.high_water == NOW
    # A concurrent writer with an outdated ETag that is ahead still wins, after a re-read.
    ahead = watermark.advance(s3, store, first, NOW + timedelta(minutes=5))
    assert ahead.high_water == NOW + timedelta(minutes=5)
    assert moved.etag != ahead.etag
    assert watermark.read(s3, store, "012345678901", "us-east-1").high_water == NOW + timedelta(minutes=5)


def test_an_idle_sweep_writes_a_recent_watermark_only_every_idle_interval() -> None:
    at = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    mark = watermark.Watermark("012345678901", "us-east-1", at, "etag", reader="xray")
    later = at + watermark.IDLE_WRITE_INTERVAL
    assert not watermark.worth_writing(mark, at + timedelta(minutes=5), sent_anything=False, reader="xray")
    assert watermark.worth_writing(mark, later, sent_anything=False, reader="xray")  # old enough
    assert watermark.worth_writing(mark, at + timedelta(minutes=5), sent_anything=True, reader="xray")
    assert watermark.worth_writing(mark, at + timedelta(minutes=5), sent_anything=False, reader="spans")
    first = watermark.Watermark("012345678901", "us-east-1", None)
    assert watermark.worth_writing(first, at, sent_anything=False, reader="xray")
