"""Time windows (pure, no I/O): how a range is cut into X-Ray-sized, hour-aligned pieces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)


@dataclass(frozen=True, order=True)
class Window:
    """[start, end) in UTC; never crosses an hour boundary when produced by `plan_windows`."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime):
                raise TypeError(f"window {name} must be a datetime, got {type(value).__name__}")
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"window {name} must be timezone-aware (UTC), got naive {value.isoformat()}")
        if self.start >= self.end:
            raise ValueError(f"window start {self.start.isoformat()} must be before end {self.end.isoformat()}")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def hour(self) -> datetime:
        """The UTC hour the window starts in (the archive's partition hour)."""
        return self.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def plan_windows(start: datetime, end: datetime, max_window: timedelta = HOUR) -> list[Window]:
    """Windows covering [start, end) exactly: no gaps, no overlaps, each ≤ max_window and inside
    one UTC hour. Boundaries sit on the grid hour + k·max_window, so the same range always
    yields the same windows (max_window above one hour is treated as one hour).
    """
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    if not isinstance(max_window, timedelta) or max_window <= timedelta(0):
        raise ValueError(f"max_window must be a positive timedelta, got {max_window!r}")
    if start_utc >= end_utc:
        raise ValueError(f"start {start_utc.isoformat()} must be before end {end_utc.isoformat()}")
    step = min(max_window, HOUR)
    windows: list[Window] = []
    cursor = start_utc
    while cursor < end_utc:
        hour = cursor.replace(minute=0, second=0, microsecond=0)
        steps = (cursor - hour) // step  # grid cell of the cursor within its hour
        boundary = min(hour + step * (steps + 1), hour + HOUR, end_utc)
        windows.append(Window(cursor, boundary))
        cursor = boundary
    return windows
