"""The report's SVG chart kit: horizontal (stacked) bars, columns or lines over time, latency ranges.

Each function returns one `<svg class="chart" data-chart="<name>">` element with its legend, axes and
a `<title>` tooltip per mark; text is escaped here. No script, no external font: the page stays
offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tasks.report.format import fmt_int, fmt_seconds, fmt_span
from tasks.report.model import ServiceStats, TimeSeries

PALETTE = (
    "#3f7fbf",
    "#54b399",
    "#d36086",
    "#9170b8",
    "#d6bf57",
    "#da8b45",
    "#6dccb1",
    "#aa6556",
    "#e7664c",
    "#7b8794",
    "#b9a888",
    "#5a9e6f",
)
STATUS_COLORS = {
    "SUCCEEDED": "#3a9e7a",
    "FAILED": "#d9483b",
    "TIMED_OUT": "#e8913a",
    "ABORTED": "#8e7cc3",
    "RUNNING": "#3f7fbf",
    "PENDING_REDRIVE": "#7b8794",
    "UNKNOWN": "#b8c0cc",
    "ok": "#3a9e7a",
    "error": "#e2b53e",
    "throttle": "#e8913a",
    "fault": "#d9483b",
}
_FONT = 12
_AXIS = "#8a94a6"
_GRID = "#e6e9ef"
_TEXT = "#344054"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _el(tag: str, body: str | None = None, /, **attrs: Any) -> str:
    """One SVG element; attribute names use `_` for `-` (`class_` → `class`); body is markup."""
    rendered = []
    for key, value in attrs.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        rendered.append(f'{key.rstrip("_").replace("_", "-")}="{_esc(text)}"')
    head = f"<{tag} {' '.join(rendered)}"
    return f"{head}/>" if body is None else f"{head}>{body}</{tag}>"


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


_DURATION_STEPS = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _nice_ticks(maximum: float, count: int = 5, unit: str = "") -> list[float]:
    """0 … ≥ maximum in round steps (whole minutes / hours for durations of a minute or more)."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    if unit == "s" and raw > 30:
        step: float = next((d for d in _DURATION_STEPS if d >= raw), 86400 * math.ceil(raw / 86400))
    else:
        magnitude = 10 ** math.floor(math.log10(raw))
        multipliers = (1, 2, 5, 10) if unit == "" else (1, 2, 2.5, 5, 10)  # counts: whole numbers
        step = next(m * magnitude for m in multipliers if m * magnitude >= max(raw, 1 if unit == "" else raw))
    top = math.ceil(maximum / step - 1e-9) * step
    return [round(i * step, 10) for i in range(round(top / step) + 1)]


def _tick_label(value: float, unit: str) -> str:
    if unit == "s":
        if not value:
            return "0"
        if value < 1:
            return f"{value * 1000:g} ms"
        if value < 60 or value % 60:
            return f"{value:g} s"
        if value < 7200 or value % 3600:
            return f"{value / 60:g} min"
        return f"{value / 3600:g} h"
    if unit == "%":
        return f"{value:.0f}%"
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _bar_label(value: float, unit: str) -> str:
    if unit == "s":
        return fmt_seconds(value)
    if unit == "%":
        return f"{value:.0f}%" if value >= 1 or value == 0 else "<1%"
    return fmt_int(value) if float(value).is_integer() else f"{value:.2f}"


def _text_width(text: str, size: int = _FONT) -> float:
    return len(text) * size * 0.58


def _svg_open(name: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{_esc(name)}" role="img" aria-label="{_esc(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="inherit" font-size="{_FONT}">'
    )


def _legend(items: Sequence[tuple[str, str, str]], x: float, y: float, width: float) -> tuple[str, float]:
    """(svg, height). items: (label, color, style) with style 'box' | 'line' | 'dash'."""
    parts: list[str] = ['<g class="legend">']
    cx, cy = x, y
    for label, color, style in items:
        item_width = 22 + _text_width(label) + 16
        if cx + item_width > x + width and cx > x:
            cx, cy = x, cy + 18
        if style == "box":
            parts.append(f'<rect x="{cx:.1f}" y="{cy - 9:.1f}" width="12" height="12" rx="2" fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="5 3"' if style == "dash" else ""
            parts.append(
                f'<line x1="{cx:.1f}" y1="{cy - 3:.1f}" x2="{cx + 14:.1f}" y2="{cy - 3:.1f}" '
                f'stroke="{color}" stroke-width="2.5"{dash}/>'
            )
        parts.append(f'<text x="{cx + 18:.1f}" y="{cy + 1:.1f}" fill="{_TEXT}">{_esc(label)}</text>')
        cx += item_width
    parts.append("</g>")
    return "".join(parts), (cy - y) + 22


def _empty_chart(name: str, message: str, width: int = 640, height: int = 120) -> str:
    return (
        _svg_open(name, width, height, message)
        + _el("rect", x=0.5, y=0.5, width=width - 1, height=height - 1, rx=6, fill="#fafbfc", stroke=_GRID)
        + _el("text", _esc(message), x=width / 2, y=height / 2 + 4, text_anchor="middle", fill=_AXIS)
        + "</svg>"
    )


def svg_hbar(
    name: str,
    rows: Sequence[tuple[str, dict[str, float]]],
    keys: Sequence[str],
    colors: dict[str, str],
    *,
    unit: str = "",
    x_title: str = "",
    width: int = 600,
) -> str:
    """Horizontal (stacked) bars: one row per label, one segment per key; legend when >1 key."""
    if not rows:
        return _empty_chart(name, "no data")
    label_width = min(220, max(_text_width(label) for label, _ in rows) + 14)
    totals = [sum(values.get(k, 0) for k in keys) for _, values in rows]
    ticks = _nice_ticks(max(totals) if totals else 1, unit=unit)
    total_width = max(_text_width(_bar_label(t, unit)) for t in totals) + 14
    plot_left, plot_right = label_width + 8, width - max(24, total_width)
    legend_svg, legend_height = ("", 0.0)
    if len(keys) > 1:
        legend_svg, legend_height = _legend(
            [(k, colors[k], "box") for k in keys], plot_left, 16, plot_right - plot_left
        )
    top = 10 + legend_height
    bar, gap = 22, 10
    plot_height = len(rows) * (bar + gap)
    height = int(top + plot_height + 46)
    scale = (plot_right - plot_left) / ticks[-1]
    parts = [_svg_open(name, width, height, f"{name} chart"), legend_svg]
    for tick in ticks:
        x = plot_left + tick * scale
        parts.append(_el("line", x1=x, y1=top - 4, x2=x, y2=top + plot_height, stroke=_GRID))
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_height + 16:.1f}" text-anchor="middle" fill="{_AXIS}">'
            f"{_esc(_tick_label(tick, unit))}</text>"
        )
    for i, (label, values) in enumerate(rows):
        y = top + i * (bar + gap) + gap / 2
        shown = (
            label
            if _text_width(label) <= label_width - 10
            else label[: int((label_width - 10) / (_FONT * 0.58)) - 1] + "…"
        )
        parts.append(
            f'<text x="{plot_left - 8:.1f}" y="{y + bar / 2 + 4:.1f}" text-anchor="end" fill="{_TEXT}">'
            f"<title>{_esc(label)}</title>{_esc(shown)}</text>"
        )
        x = plot_left
        for key in keys:
            value = values.get(key, 0)
            if not value:
                continue
            w = value * scale
            text_value = _bar_label(value, unit)
            tip = f"<title>{_esc(label)} · {_esc(key)}: {_esc(text_value)}</title>"
            parts.append(_el("rect", tip, class_="bar", x=x, y=y, width=max(w, 1), height=bar, fill=colors[key]))
            if len(keys) > 1 and w > _text_width(text_value, 11) + 8:
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + bar / 2 + 4:.1f}" text-anchor="middle" fill="#fff" '
                    f'font-size="11" font-weight="600">{_esc(text_value)}</text>'
                )
            x += w
        total = totals[i]
        total_text = _bar_label(total, unit)
        if total:
            parts.append(_el("text", _esc(total_text), x=x + 6, y=y + bar / 2 + 4, fill=_TEXT, font_weight=600))
    parts.append(_el("line", x1=plot_left, y1=top - 4, x2=plot_left, y2=top + plot_height, stroke=_AXIS))
    if x_title:
        middle = (plot_left + plot_right) / 2
        parts.append(_el("text", _esc(x_title), x=middle, y=height - 8, text_anchor="middle", fill=_AXIS))
    parts.append("</svg>")
    return "".join(parts)


def _time_labels(times: Sequence[datetime], interval: int) -> list[str]:
    span_days = (times[-1] - times[0]).total_seconds() / 86400 if len(times) > 1 else 0
    labels = []
    for t in times:
        if interval >= 86400:
            labels.append(t.strftime("%m-%d"))
        elif span_days >= 1 or (t.hour == 0 and t.minute == 0):
            labels.append(t.strftime("%m-%d %H:%M"))
        else:
            labels.append(t.strftime("%H:%M"))
    return labels


def svg_time_chart(
    name: str,
    ts: TimeSeries,
    *,
    interval: int,
    kind: str = "stacked",  # stacked (columns) | lines
    labels: dict[str, str] | None = None,
    colors: dict[str, str] | None = None,
    styles: dict[str, str] | None = None,  # series → 'line' | 'dash'
    unit: str = "",
    y_title: str = "",
    width: int = 960,
    height: int = 300,
) -> str:
    """Columns (stacked) or lines over a UTC time axis, with y ticks, x labels, legend."""
    names = [n for n, values in ts.series.items() if any(v is not None for v in values)]
    if not ts.times or not names:
        return _empty_chart(name, "no data in this time range", width)
    labels = labels or {}
    colors = colors or {n: color(i) for i, n in enumerate(names)}
    styles = styles or {}
    legend_items = [(labels.get(n, n), colors[n], "box" if kind == "stacked" else styles.get(n, "line")) for n in names]
    n = len(ts.times)
    if kind == "stacked":
        peak = max(sum(ts.series[s][i] or 0 for s in names) for i in range(n))
    else:
        peak = max(v for s in names for v in ts.series[s] if v is not None)
    ticks = _nice_ticks(peak, unit=unit)
    left = int(max(_text_width(_tick_label(t, unit)) for t in ticks) + (34 if y_title else 14))
    legend_svg, legend_height = _legend(legend_items, left, 16, width - left - 16)
    top, right = 18 + legend_height, width - 16
    bottom = height + legend_height - 40
    y_scale = (bottom - top) / ticks[-1]
    slot = (right - left) / n
    total_height = int(bottom + 40)
    parts = [_svg_open(name, width, total_height, f"{name} chart"), legend_svg]
    for tick in ticks:
        y = bottom - tick * y_scale
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{_GRID}"/>')
        label = _esc(_tick_label(tick, unit))
        parts.append(_el("text", label, x=left - 6, y=y + 4, text_anchor="end", fill=_AXIS))
    if y_title:
        turn = f"translate(13 {(top + bottom) / 2:.1f}) rotate(-90)"
        parts.append(_el("text", _esc(y_title), transform=turn, text_anchor="middle", fill=_AXIS))
    tick_labels = _time_labels(ts.times, interval)
    every = max(1, math.ceil(n / max(1, int((right - left) / (_text_width(max(tick_labels, key=len)) + 14)))))
    for i, text in enumerate(tick_labels):
        x = left + slot * (i + 0.5)
        if i % every == 0:
            parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="{_AXIS}"/>')
            parts.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" fill="{_AXIS}">{_esc(text)}</text>')
    if kind == "stacked":
        bar = max(1.0, slot * 0.72)
        for i, t in enumerate(ts.times):
            y = float(bottom)
            x = left + slot * i + (slot - bar) / 2
            for s in names:
                value = ts.series[s][i] or 0
                if not value:
                    continue
                h = value * y_scale
                y -= h
                tip = (
                    f"<title>{_esc(t.strftime('%Y-%m-%d %H:%M'))} UTC · {_esc(labels.get(s, s))}: "
                    f"{_esc(_tick_label(value, unit))}</title>"
                )
                parts.append(_el("rect", tip, class_="bar", x=x, y=y, width=bar, height=max(h, 0.5), fill=colors[s]))
    else:
        for s in names:
            dash = ' stroke-dasharray="6 4"' if styles.get(s) == "dash" else ""
            # Empty buckets are skipped, not drawn as zero: the line joins the buckets with data.
            run = [(left + slot * (i + 0.5), bottom - v * y_scale) for i, v in enumerate(ts.series[s]) if v is not None]
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(
                    f'<polyline class="series" points="{points}" fill="none" stroke="{colors[s]}" '
                    f'stroke-width="2" stroke-linejoin="round" opacity="0.9"{dash}/>'
                )
            for i, point in enumerate(ts.series[s]):
                if point is None:
                    continue
                x, y = left + slot * (i + 0.5), bottom - point * y_scale
                parts.append(
                    f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colors[s]}">'
                    f"<title>{_esc(ts.times[i].strftime('%Y-%m-%d %H:%M'))} UTC · {_esc(labels.get(s, s))}: "
                    f"{_esc(_tick_label(point, unit))}</title></circle>"
                )
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_AXIS}"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{_AXIS}"/>')
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{total_height - 6}" text-anchor="middle" fill="{_AXIS}">'
        f"time (UTC, {_esc(fmt_span(interval))} buckets)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _decade(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def svg_latency(name: str, services: Sequence[ServiceStats], width: int = 960) -> str:
    """Per service: a p50→p99 range on a log axis with p50/p90/p95/p99 markers."""
    rows = [s for s in services if s.latency_p50 is not None][:20]
    if not rows:
        return _empty_chart(name, "no service latencies in this time range", width)
    markers = (("p50", "#3f7fbf"), ("p90", "#54b399"), ("p95", "#e8913a"), ("p99", "#d9483b"))
    values = [
        v for s in rows for v in (s.latency_p50, s.latency_p90, s.latency_p95, s.latency_p99) if v is not None and v > 0
    ]
    low = 10 ** math.floor(math.log10(min(values))) if values else 0.001
    high = 10 ** math.ceil(math.log10(max(values))) if values else 1.0
    if high <= low:
        high = low * 10
    label_width = min(260, max(_text_width(s.service) for s in rows) + 14)
    left, right = label_width + 8, width - 24
    legend_svg, legend_height = _legend([(m, c, "box") for m, c in markers], left, 16, right - left)
    top = 10 + legend_height
    row_h = 24
    bottom = top + row_h * len(rows)
    height = int(bottom + 44)

    def x_of(v: float) -> float:
        v = max(v, low)
        return left + (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low)) * (right - left)

    parts = [_svg_open(name, width, height, "latency percentiles per service"), legend_svg]
    decade = low
    while decade <= high * 1.0001:
        x = x_of(decade)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="{_GRID}"/>')
        parts.append(_el("text", _esc(_decade(decade)), x=x, y=bottom + 16, text_anchor="middle", fill=_AXIS))
        decade *= 10
    for i, s in enumerate(rows):
        y = top + i * row_h + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{_TEXT}">{_esc(s.service)}</text>')
        p50, p99 = s.latency_p50 or low, s.latency_p99 or s.latency_p50 or low
        parts.append(
            _el(
                "line",
                x1=x_of(p50),
                y1=y,
                x2=x_of(p99),
                y2=y,
                stroke="#c9d3e3",
                stroke_width=8,
                stroke_linecap="round",
            )
        )
        for (label, color), value in zip(
            markers, (s.latency_p50, s.latency_p90, s.latency_p95, s.latency_p99), strict=True
        ):
            if value is None:
                continue
            tip = f"<title>{_esc(s.service)} {label}: {_esc(fmt_seconds(value))}</title>"
            parts.append(
                _el(
                    "circle",
                    tip,
                    class_="point",
                    cx=x_of(value),
                    cy=y,
                    r=5,
                    fill=color,
                    stroke="#fff",
                    stroke_width=1.5,
                )
            )
    parts.append(f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{bottom}" stroke="{_AXIS}"/>')
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{height - 6}" text-anchor="middle" fill="{_AXIS}">'
        "segment duration (log scale)</text></svg>"
    )
    return "".join(parts)
