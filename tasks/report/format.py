"""Human-readable numbers, durations and times, shared by the HTML page, its charts and the terminal tables."""

from __future__ import annotations

from datetime import UTC, datetime

DASH = "\u2013"  # shown for a missing value


def fmt_int(value: int | float) -> str:
    return f"{int(value):,}"


def fmt_seconds(value: float | None) -> str:
    """Human duration: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f} ms" if value >= 0.001 else f"{value * 1000:.2f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds:02d} s"
    hours, rest = divmod(round(value), 3600)
    return f"{hours} h {rest // 60:02d} min"


def fmt_pct(value: float) -> str:
    if value == 0:
        return "0%"
    if value < 0.001:
        return "<0.1%"
    return f"{value * 100:.1f}%"


def fmt_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else DASH


def fmt_span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return fmt_seconds(seconds)
