"""The backfill's per-account horizon (pure pieces; the flow is tested in test_collect_paths)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.backfill import beyond_message, readable
from tasks.windows import Window

T0 = datetime(2026, 10, 1, 10, tzinfo=UTC)


def test_readable_clips_a_window_to_the_horizon() -> None:
    window = Window(T0, T0 + timedelta(hours=1))
    assert readable(window, None) == window
    assert readable(window, T0 - timedelta(days=1)) == window
    assert readable(window, T0 + timedelta(minutes=20)) == Window(T0 + timedelta(minutes=20), window.end)
    assert readable(window, window.end) is None


def test_beyond_message_says_which_store_stopped_where_in_one_line() -> None:
    windows = [Window(T0, T0 + timedelta(hours=1)), Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2))]
    xray = {"xray": (T0 + timedelta(days=9), "X-Ray keeps traces 30 days")}
    text = beyond_message(xray, windows, 2, nothing_read=True)
    assert text.startswith("[2026-10-01T10:00Z, 2026-10-01T12:00Z) lies before the retention")
    assert "X-Ray keeps traces 30 days, the oldest it holds is 2026-10-10T10:00Z" in text
    assert text.endswith("older traces can only be replayed from the archive (xraylake replay)")
    spans = {"spans": (T0 + timedelta(hours=1), "aws/spans keeps spans 60 days (retentionInDays)")}
    partly = beyond_message(spans, windows[:1], 2, nothing_read=False)
    assert partly.startswith("1 of 2 chunks lie before")
    assert "replay" not in partly and "\n" not in partly
